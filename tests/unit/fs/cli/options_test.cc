#include "fs/cli/options.h"

#include <gtest/gtest.h>

namespace regfs::fs {
namespace {

TEST(ParseSize, Units) {
  EXPECT_EQ(parse_size("4096"), 4096u);
  EXPECT_EQ(parse_size("512M"), 512ull << 20);
  EXPECT_EQ(parse_size("20G"), 20ull << 30);
  EXPECT_EQ(parse_size("1.5T"), 3ull << 39);
  EXPECT_THROW(parse_size("12X"), UsageError);
  EXPECT_THROW(parse_size(""), UsageError);
  EXPECT_THROW(parse_size("-1G"), UsageError);
}

TEST(ParseMountArgs, SingleRegistryWithLongOptions) {
  auto o = parse_mount_args({"--cache-dir", "/c", "--cache-size=2G", "--insecure",
                             "example.com:5000", "--tag-ttl", "5", "-f", "localhost:5000", "/mnt"});
  EXPECT_EQ(o.registry, "localhost:5000");
  EXPECT_EQ(o.mountpoint, "/mnt");
  EXPECT_EQ(o.cache_dir, "/c");
  EXPECT_EQ(o.cache_size, 2ull << 30);
  ASSERT_EQ(o.insecure.size(), 1u);
  EXPECT_EQ(o.insecure[0], "example.com:5000");
  EXPECT_EQ(o.tag_ttl, std::chrono::seconds(5));
  EXPECT_TRUE(o.foreground);
}

TEST(ParseMountArgs, NoUrlsAsAFlagAndAsDashO) {
  EXPECT_FALSE(parse_mount_args({"r.io", "/mnt"}).no_urls);
  EXPECT_TRUE(parse_mount_args({"--no-urls", "r.io", "/mnt"}).no_urls);
  EXPECT_TRUE(parse_mount_args({"r.io", "/mnt", "-o", "no_urls"}).no_urls);
}

TEST(ParseMountArgs, MultiRegistryMode) {
  auto o = parse_mount_args({"/mnt"});
  EXPECT_TRUE(o.registry.empty());
  EXPECT_EQ(o.mountpoint, "/mnt");
  EXPECT_FALSE(o.cache_dir.empty());
}

TEST(ParseMountArgs, FstabFormWithDashO) {
  auto o = parse_mount_args(
      {"ghcr.io", "/mnt", "-o", "rw,cache_size=20G,allow_other,tag_ttl=60,auth_file=/a.json"});
  EXPECT_EQ(o.registry, "ghcr.io");
  EXPECT_EQ(o.cache_size, 20ull << 30);
  EXPECT_EQ(o.tag_ttl, std::chrono::seconds(60));
  EXPECT_EQ(o.auth_file, "/a.json");
  EXPECT_EQ(o.fuse_options, (std::vector<std::string>{"rw", "allow_other"}));
}

TEST(ParseMountArgs, DockerHubNamesAreCanonical) {
  EXPECT_EQ(parse_mount_args({"index.docker.io", "/m"}).registry, "docker.io");
}

TEST(ParseMountArgs, BadArgumentsAreUsageErrors) {
  EXPECT_THROW(parse_mount_args({}), UsageError);
  EXPECT_THROW(parse_mount_args({"a", "b", "c"}), UsageError);
  EXPECT_THROW(parse_mount_args({"--no-such-option", "/m"}), UsageError);
  EXPECT_THROW(parse_mount_args({"--cache-size"}), UsageError);
  EXPECT_THROW(parse_mount_args({"--tag-ttl", "soon", "/m"}), UsageError);
  EXPECT_THROW(parse_mount_args({"--platform", "linux", "/m"}), UsageError);
  EXPECT_THROW(parse_mount_args({"--mirror", "docker.io", "/m"}), UsageError);
  EXPECT_THROW(parse_mount_args({"-o", "cache_size", "/m"}), UsageError);
}

TEST(ParseMountArgs, LayerCompressionLevel) {
  EXPECT_EQ(parse_mount_args({"/m"}).layer_compression_level, 0);
  EXPECT_EQ(parse_mount_args({"--layer-compression-level", "9", "/m"}).layer_compression_level, 9);
  auto zstd = parse_mount_args({"-o", "layer_compression=zstd,layer_compression_level=19", "/m"});
  EXPECT_EQ(zstd.layer_compression_level, 19);
  EXPECT_THROW(parse_mount_args({"--layer-compression-level", "12", "/m"}), UsageError);
  EXPECT_THROW(parse_mount_args({"--layer-compression-level", "0", "/m"}), UsageError);
  EXPECT_THROW(parse_mount_args({"--layer-compression-level", "fast", "/m"}), UsageError);
}

TEST(ParseMountArgs, HiddenRequestTimeout) {
  EXPECT_EQ(parse_mount_args({"/m"}).request_timeout.count(), 0);
  EXPECT_EQ(parse_mount_args({"-o", "request_timeout=2.5", "/m"}).request_timeout.count(), 2500);
  EXPECT_THROW(parse_mount_args({"-o", "request_timeout=0", "/m"}), UsageError);
  EXPECT_THROW(parse_mount_args({"-o", "request_timeout=soon", "/m"}), UsageError);
  EXPECT_EQ(parse_mount_args({"--request-timeout", "7", "/m"}).request_timeout.count(), 7000);
}

TEST(ParseMountArgs, UploadChunkSize) {
  EXPECT_EQ(parse_mount_args({"/m"}).upload_chunk_size, 0u);
  EXPECT_EQ(parse_mount_args({"--upload-chunk-size", "5M", "/m"}).upload_chunk_size, 5u << 20);
  EXPECT_EQ(parse_mount_args({"-o", "upload_chunk_size=64M", "/m"}).upload_chunk_size, 64u << 20);
  // Parts under 5 MiB are refused by ECR and S3: not accepted here either.
  try {
    parse_mount_args({"--upload-chunk-size=4M", "/m"});
    ADD_FAILURE() << "4M was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("5M"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_mount_args({"--upload-chunk-size", "5T", "/m"}), UsageError);
  EXPECT_THROW(parse_mount_args({"--upload-chunk-size", "big", "/m"}), UsageError);
}

}  // namespace
}  // namespace regfs::fs
