#include "fs/push/build_plan.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "registry/core/digest.h"

namespace regfs::fs {
namespace {

namespace fsys = std::filesystem;

class BuildPlanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regfs-build-test.XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    root_ = dir_ / "root";
    fsys::create_directories(root_ / "bin");
    std::ofstream(root_ / "bin/tool") << "#!/bin/sh\n";
    std::ofstream(root_ / "README") << "hello\n";
    fsys::create_symlink("tool", root_ / "bin/alias");
    fsys::create_hard_link(root_ / "README", root_ / "README.again");
    for (auto& p : fsys::recursive_directory_iterator(root_)) {
      timespec times[2] = {{1700000000, 0}, {1700000000, 0}};
      ::utimensat(AT_FDCWD, p.path().c_str(), times, AT_SYMLINK_NOFOLLOW);
    }
  }
  void TearDown() override { fsys::remove_all(dir_); }

  BuildOptions options(const std::string& work, cache::LayerCompression c) {
    BuildOptions o;
    o.platform = {"linux", "arm64", "v8"};
    o.compression = c;
    o.work_dir = dir_ / work;
    return o;
  }

  fsys::path dir_;
  fsys::path root_;
};

TEST_F(BuildPlanTest, APlainDirectoryIsABuildALayoutIsNot) {
  EXPECT_TRUE(is_build(root_));
  fsys::create_directories(dir_ / "empty");
  EXPECT_FALSE(is_build(dir_ / "empty"));
  for (const char* name : {"oci-layout", "index.json", "manifest.json"}) {
    fsys::create_directories(dir_ / name / "tag");
    std::ofstream(dir_ / name / "tag" / name) << "{}";
    EXPECT_FALSE(is_build(dir_ / name / "tag")) << name;
  }
  fsys::create_directories(dir_ / "withblobs/blobs");
  EXPECT_FALSE(is_build(dir_ / "withblobs"));
}

TEST_F(BuildPlanTest, OneLayerAConfigForThePlatformAndTheSameDigestTwice) {
  auto plan =
      plan_build(root_, {{"bin/tool", 04755}}, options("w1", cache::LayerCompression::kGzip));
  ASSERT_EQ(plan.blobs.size(), 2u);
  ASSERT_EQ(plan.manifests.size(), 1u);
  auto manifest = nlohmann::json::parse(plan.manifests[0].bytes);
  EXPECT_EQ(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
  for (const auto& blob : plan.blobs) {
    std::ifstream in(blob.file, std::ios::binary);
    std::string bytes(std::istreambuf_iterator<char>(in), {});
    EXPECT_EQ(registry::sha256_digest(bytes), blob.digest);
    EXPECT_EQ(static_cast<int64_t>(bytes.size()), blob.size);
  }
  std::ifstream in(plan.blobs[0].file);
  auto config = nlohmann::json::parse(in);
  EXPECT_EQ(config["architecture"], "arm64");
  EXPECT_EQ(config["variant"], "v8");
  EXPECT_EQ(config["created"], "2023-11-14T22:13:20Z") << "the newest mtime";
  EXPECT_EQ(config["rootfs"]["diff_ids"].size(), 1u);
  auto again =
      plan_build(root_, {{"bin/tool", 04755}}, options("w2", cache::LayerCompression::kGzip));
  EXPECT_EQ(again.digest(), plan.digest()) << "the same files give the same image";
  auto other = plan_build(root_, {}, options("w3", cache::LayerCompression::kGzip));
  EXPECT_NE(other.digest(), plan.digest()) << "modes are part of it";
  auto zstd = plan_build(root_, {}, options("w4", cache::LayerCompression::kZstd));
  EXPECT_EQ(nlohmann::json::parse(zstd.manifests[0].bytes)["layers"][0]["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd");
  std::ifstream zin(zstd.blobs[0].file);
  EXPECT_EQ(nlohmann::json::parse(zin)["rootfs"],
            nlohmann::json::parse(std::ifstream(other.blobs[0].file))["rootfs"])
      << "one diff_id whatever the compression";
}

}  // namespace
}  // namespace regfs::fs
