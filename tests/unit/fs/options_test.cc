#include "fs/options.h"

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

TEST(ParseMountArgs, HiddenRequestTimeout) {
  EXPECT_EQ(parse_mount_args({"/m"}).request_timeout.count(), 0);
  EXPECT_EQ(parse_mount_args({"-o", "request_timeout=2.5", "/m"}).request_timeout.count(), 2500);
  EXPECT_THROW(parse_mount_args({"-o", "request_timeout=0", "/m"}), UsageError);
  EXPECT_THROW(parse_mount_args({"-o", "request_timeout=soon", "/m"}), UsageError);
}

}  // namespace
}  // namespace regfs::fs
