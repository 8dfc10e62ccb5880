#include "cache/temp_file.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>
#include <string>

namespace regfs::cache {
namespace {

namespace fs = std::filesystem;

class TempFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("regfs-temp-file-test-" + unique_suffix());
    make_private_dir(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
};

TEST_F(TempFileTest, CommitRenamesIntoPlace) {
  TempFile tmp(dir_ / "a.tmp");
  tmp.write("hello", 5);
  tmp.commit(dir_ / "a");
  EXPECT_FALSE(tmp.is_open());
  EXPECT_FALSE(fs::exists(dir_ / "a.tmp"));
  EXPECT_EQ(read_small_file(dir_ / "a", 100), "hello");
  EXPECT_EQ(read_small_file(dir_ / "a", 4), std::nullopt);
}

TEST_F(TempFileTest, RemovedUnlessCommitted) {
  {
    TempFile tmp(dir_ / "b.tmp");
    tmp.write("x", 1);
    TempFile moved(std::move(tmp));
    EXPECT_TRUE(fs::exists(dir_ / "b.tmp"));
  }
  EXPECT_FALSE(fs::exists(dir_ / "b.tmp"));
}

TEST_F(TempFileTest, FailedRenameRemovesTheFile) {
  TempFile tmp(dir_ / "c.tmp");
  EXPECT_THROW(tmp.commit(dir_ / "missing" / "c"), registry::Error);
  EXPECT_FALSE(fs::exists(dir_ / "c.tmp"));
}

TEST(WriteErrorTest, DiskFullIsNoSpace) {
  EXPECT_EQ(write_error("/x", ENOSPC).kind(), registry::ErrorKind::kNoSpace);
  EXPECT_EQ(write_error("/x", EDQUOT).kind(), registry::ErrorKind::kNoSpace);
  EXPECT_EQ(write_error("/x", EIO).kind(), registry::ErrorKind::kIo);
}

}  // namespace
}  // namespace regfs::cache
