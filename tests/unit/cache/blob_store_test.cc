#include "cache/blob_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "cache/tag_store.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"

namespace regfs::cache {
namespace {

using registry::Error;
using registry::ErrorKind;

class BlobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = std::filesystem::temp_directory_path() /
            ("regfs-blobstore-" + std::to_string(::getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(root_);
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::filesystem::path root_;
};

TEST_F(BlobStoreTest, PutThenFindAndRead) {
  BlobStore store(root_);
  std::string bytes = "hello, registry";
  std::string digest = registry::sha256_digest(bytes);
  EXPECT_FALSE(store.find(digest));
  auto path = store.put(digest, bytes);
  EXPECT_EQ(store.find(digest), path);
  EXPECT_EQ(store.read(digest, 1024), bytes);
  EXPECT_FALSE(store.read(digest, 3)) << "larger than max_size";
}

TEST_F(BlobStoreTest, CacheDirIsPrivate) {
  BlobStore store(root_);
  struct stat st;
  ASSERT_EQ(::stat(root_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700);
}

TEST_F(BlobStoreTest, MismatchedContentIsNeverStored) {
  BlobStore store(root_);
  std::string digest = registry::sha256_digest("the real bytes");
  try {
    store.put(digest, "other bytes");
    FAIL() << "expected an integrity error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIntegrity);
  }
  EXPECT_FALSE(store.find(digest));
  EXPECT_TRUE(std::filesystem::is_empty(root_ / "tmp")) << "temporary file left behind";
}

TEST_F(BlobStoreTest, WriterChecksSize) {
  BlobStore store(root_);
  std::string bytes = "abcdef";
  auto writer = store.begin(registry::sha256_digest(bytes), 3);
  EXPECT_THROW(writer.append(bytes.data(), bytes.size()), Error);
}

TEST_F(BlobStoreTest, AbandonedWriterLeavesNothing) {
  BlobStore store(root_);
  std::string bytes = "partial";
  {
    auto writer = store.begin(registry::sha256_digest(bytes));
    writer.append(bytes.data(), 3);
  }
  EXPECT_FALSE(store.find(registry::sha256_digest(bytes)));
  EXPECT_TRUE(std::filesystem::is_empty(root_ / "tmp"));
}

TEST_F(BlobStoreTest, RejectsInvalidDigest) {
  BlobStore store(root_);
  EXPECT_THROW(store.find("sha256:../../etc/passwd"), Error);
  EXPECT_THROW(store.find("md5:abc"), Error);
}

TEST_F(BlobStoreTest, TagRecordsRoundTripAndPersist) {
  std::string digest = registry::sha256_digest("m");
  auto now = std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000));
  {
    TagStore tags(root_);
    EXPECT_FALSE(tags.get("localhost:5000", "a/b", "v1"));
    tags.put("localhost:5000", "a/b", "v1", TagRecord{digest, "application/x", 42, now});
  }
  TagStore again(root_);
  auto record = again.get("localhost:5000", "a/b", "v1");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->digest, digest);
  EXPECT_EQ(record->media_type, "application/x");
  EXPECT_EQ(record->size, 42);
  EXPECT_EQ(record->fetched, now);
  EXPECT_FALSE(again.get("localhost:5000", "a/b", "v2"));
  EXPECT_FALSE(again.get("localhost:5000", "a", "b")) << "namespaces and tags must not collide";
}

}  // namespace
}  // namespace regfs::cache
