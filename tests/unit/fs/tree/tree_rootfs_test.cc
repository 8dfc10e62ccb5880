// rootfs/ (SPEC §5) on a fake source (fake_source.h): an image of two
// uncompressed layers built in memory, merged by the real LayerStore and
// MergedTree (whiteouts, an opaque directory, a symlink, a hardlink), its
// lookups, listings, attrs and reads, and the errors a merge gives.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cache/estargz_writer.h"
#include "fake_source.h"
#include "fs/tree/merged_tree.h"
#include "fs/tree/tree.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "tests/unit/cache/tar_builder.h"

namespace regfs::fs {
namespace {

using cache::testing::Header;
using cache::testing::TarBuilder;
using registry::ErrorKind;
using testing::FakeRegistry;
using testing::FakeTree;
using Set = std::set<std::string>;

constexpr const char* kRegistry = "reg.test:5000";

Header entry(std::string name, char type, uint32_t mode = 0644, std::string link = {}) {
  Header h;
  h.name = std::move(name);
  h.type = type;
  h.mode = mode;
  h.link = std::move(link);
  h.uid = 1000;
  h.gid = 100;
  return h;
}

// The base: /etc (hosts, localtime -> /usr/share/zoneinfo/UTC), /usr/bin
// (tool and its hardlink tool-link), /var/cache (a, b), /tmp/gone.
std::string base_layer() {
  TarBuilder tar;
  tar.add(entry("etc/", '5', 0755))
      .add(entry("etc/hosts", '0'), "127.0.0.1 localhost\n")
      .add(entry("etc/localtime", '2', 0777, "/usr/share/zoneinfo/UTC"))
      .add(entry("usr/", '5', 0755))
      .add(entry("usr/bin/", '5', 0755))
      .add(entry("usr/bin/tool", '0', 0755), "#!/bin/sh\necho tool\n")
      .add(entry("usr/bin/tool-link", '1', 0755, "usr/bin/tool"))
      .add(entry("var/cache/", '5', 0755))
      .add(entry("var/cache/a", '0'), "a")
      .add(entry("var/cache/b", '0'), "b")
      .add(entry("tmp/gone", '0'), "gone");
  return tar.end().str();
}

// On top: /etc/hosts replaced, /tmp/gone whited out, /var/cache made
// opaque with a new c, and /opt added.
std::string upper_layer() {
  TarBuilder tar;
  tar.add(entry("etc/hosts", '0', 0600), "10.0.0.1 upper\n")
      .add(entry("tmp/.wh.gone", '0'))
      .add(entry("var/cache/.wh..wh..opq", '0'))
      .add(entry("var/cache/c", '0'), "c")
      .add(entry("opt/new", '0'), "new");
  return tar.end().str();
}

std::string read_file(const OpenedFile& file, uint64_t size) {
  if (file.bytes) return *file.bytes;
  std::string out(size, '\0');
  out.resize(file.layer->read_entry(*file.entry, 0, out.data(), out.size()));
  return out;
}

class RootfsTest : public ::testing::Test {
 protected:
  RootfsTest() : fake_(kRegistry), reg_(fake_.source.add(kRegistry)) {
    image_ = reg_.put_image({base_layer(), upper_layer()});
    reg_.put_tag("app", "v1", image_.digest);
  }
  NodePtr at(const std::string& path) { return fake_.at("app/v1/rootfs" + path); }
  NodePtr must(const std::string& path) { return fake_.must("app/v1/rootfs" + path); }
  Tree& tree() { return *fake_.tree; }
  Set names(const std::string& path) { return fake_.names(*must(path)); }
  std::string read(const std::string& path) {
    auto node = must(path);
    return read_file(tree().open(*node), tree().attr(*node).size);
  }
  // An image of `layers` with config type `config` under app:bad.
  NodePtr bad_rootfs(const std::vector<registry::Descriptor>& layers,
                     std::string config = std::string(registry::media_type::kOciConfig),
                     std::optional<std::vector<std::string>> diff_ids = {}) {
    reg_.put_tag("app", "bad",
                 reg_.put_manifest(layers, testing::kAmd64, std::move(config), diff_ids).digest);
    return fake_.at("app/bad/rootfs");
  }
  registry::Descriptor tar_layer(const std::string& tar) {
    return reg_.put_blob(tar, std::string(registry::media_type::kOciLayerTar));
  }

  FakeTree fake_;
  FakeRegistry& reg_;
  registry::Descriptor image_;
};

TEST_F(RootfsTest, TheLayersAreMergedWithTheirWhiteouts) {
  auto root = at("");
  ASSERT_NE(root, nullptr);
  EXPECT_EQ(root->kind, NodeKind::kRootfs);
  EXPECT_EQ(fake_.names("app/v1").count("rootfs"), 0u) << "unlisted";
  EXPECT_EQ(names(""), (Set{"etc", "opt", "tmp", "usr", "var"}));
  EXPECT_EQ(names("/tmp"), Set{}) << "its only file whited out";
  EXPECT_EQ(at("/tmp/gone"), nullptr);
  EXPECT_EQ(names("/var/cache"), Set{"c"}) << "opaque: the base's a and b are gone";
  EXPECT_EQ(names("/etc"), (Set{"hosts", "localtime"}));
  EXPECT_EQ(at("/etc/nothing"), nullptr);
  EXPECT_EQ(at("/tmp/.wh.gone"), nullptr) << "whiteouts are not entries";
}

TEST_F(RootfsTest, FilesCarryTheirLayersMetadataAndBytes) {
  auto hosts = tree().attr(*must("/etc/hosts"));
  EXPECT_TRUE(hosts.own_metadata);
  EXPECT_EQ(hosts.mode, S_IFREG | 0600) << "the upper layer's";
  EXPECT_EQ(hosts.uid, 1000u);
  EXPECT_EQ(hosts.gid, 100u);
  EXPECT_EQ(hosts.mtime, 1704067200);
  EXPECT_EQ(hosts.size, 15u);
  EXPECT_EQ(read("/etc/hosts"), "10.0.0.1 upper\n");
  EXPECT_EQ(read("/opt/new"), "new");
  EXPECT_EQ(tree().attr(*must("/usr")).mode, S_IFDIR | 0755);
}

TEST_F(RootfsTest, SymlinksAndHardlinks) {
  auto link = must("/etc/localtime");
  EXPECT_EQ(tree().attr(*link).mode, S_IFLNK | 0777);
  EXPECT_EQ(tree().readlink(*link), "/usr/share/zoneinfo/UTC");
  EXPECT_EQ(tree().attr(*link).size, std::string("/usr/share/zoneinfo/UTC").size());
  auto tool = must("/usr/bin/tool");
  auto hardlink = must("/usr/bin/tool-link");
  EXPECT_EQ(tool->key, hardlink->key) << "one inode for the paths of a hardlink";
  EXPECT_EQ(tree().attr(*tool).nlink, 2u);
  EXPECT_EQ(tree().attr(*hardlink).mode, S_IFREG | 0755);
  EXPECT_EQ(read("/usr/bin/tool-link"), "#!/bin/sh\necho tool\n");
  EXPECT_EQ(FakeTree::kind_thrown([&] { tree().readlink(*tool); }), ErrorKind::kInvalid);
  EXPECT_EQ(FakeTree::kind_thrown([&] { tree().open(*must("/etc")); }), ErrorKind::kInvalid);
}

TEST_F(RootfsTest, NodesArePinnedToTheImageDigest) {
  auto file = must("/etc/hosts");
  EXPECT_TRUE(file->immutable());
  auto pinned = fake_.at("app/" + image_.digest + "/rootfs/etc/hosts");
  ASSERT_NE(pinned, nullptr);
  EXPECT_EQ(read_file(tree().open(*pinned), 15), "10.0.0.1 upper\n");
  EXPECT_FALSE(must("")->immutable()) << "rootfs/ under a tag follows the tag";
}

TEST_F(RootfsTest, EachLayerIsFetchedOnce) {
  names("");
  auto base = reg_.put_blob(base_layer(), "");  // the same bytes: its descriptor
  EXPECT_EQ(reg_.calls("fetch " + base.digest), 1);
  // A second tree over the same cache finds the layer there.
  Tree again(TreeOptions{kRegistry, testing::kAmd64, {}}, fake_.source);
  auto rootfs = again.lookup(*again.lookup(*again.lookup(*again.root(), "app"), "v1"), "rootfs");
  ASSERT_NE(rootfs, nullptr);
  EXPECT_EQ(again.list(*rootfs).size(), 5u);
  EXPECT_EQ(reg_.calls("fetch " + base.digest), 1) << "in the cache: not fetched again";
}

TEST_F(RootfsTest, TheBaseImageOfAStagedCopyIsTheMergedTree) {
  auto merged = tree().image_rootfs(kRegistry, "app", image_.digest);
  ASSERT_NE(merged, nullptr);
  EXPECT_TRUE(merged->find("usr/bin/tool").has_value());
  EXPECT_FALSE(merged->find("tmp/gone").has_value());
}

TEST_F(RootfsTest, AMergeThatCannotBeMadeIsAnError) {
  auto zip = reg_.put_blob("PK", "application/zip");
  EXPECT_EQ(FakeTree::kind_thrown([&] { bad_rootfs({zip}); }), ErrorKind::kUnsupported);
  auto layer = tar_layer(base_layer());
  EXPECT_EQ(FakeTree::kind_thrown([&] { bad_rootfs({layer}, "application/vnd.cncf.helm.config"); }),
            ErrorKind::kUnsupported)
      << "not a container image";
  EXPECT_EQ(FakeTree::kind_thrown([&] {
              bad_rootfs({layer}, std::string(registry::media_type::kOciConfig),
                         std::vector<std::string>{});
            }),
            ErrorKind::kIntegrity)
      << "a diff_id per layer";
  auto other = tar_layer(upper_layer());
  EXPECT_EQ(FakeTree::kind_thrown([&] {
              bad_rootfs({other}, std::string(registry::media_type::kOciConfig),
                         std::vector<std::string>{registry::sha256_digest("other")});
            }),
            ErrorKind::kIntegrity)
      << "a layer that is not its diff_id";
}

TEST_F(RootfsTest, ALayerTheRegistryLacksFailsTheMerge) {
  registry::Descriptor missing{std::string(registry::media_type::kOciLayerTar),
                               registry::sha256_digest("never put"),
                               9,
                               {},
                               {},
                               {}};
  EXPECT_EQ(FakeTree::kind_thrown([&] { bad_rootfs({missing}); }), ErrorKind::kBlobUnknown);
}

TEST_F(RootfsTest, AnUnreachableRegistryFailsTheMerge) {
  auto image_dir = fake_.must("app/" + image_.digest);
  fake_.names(*image_dir);  // the image is loaded: the merge is what asks next
  reg_.down = ErrorKind::kUnavailable;
  EXPECT_EQ(FakeTree::kind_thrown([&] { tree().lookup(*image_dir, "rootfs"); }),
            ErrorKind::kUnavailable);
}

TEST_F(RootfsTest, AnEstargzLayerIsReadByRangesNeverWhole) {
  // The layer written as regfs pushes it (cache/estargz_writer.h), from a file.
  auto dir = std::filesystem::temp_directory_path() / ("regfs-estargz-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "hello.txt") << "hello, lazily\n";
  cache::LayerEntry file{"hello.txt", S_IFREG, 0644};
  file.source = dir / "hello.txt";
  auto written = cache::write_estargz_layer({file}, dir / "layer");
  std::stringstream bytes;
  bytes << std::ifstream(dir / "layer", std::ios::binary).rdbuf();
  std::filesystem::remove_all(dir);
  auto layer = reg_.put_blob(bytes.str(), written.media_type);
  layer.annotations = written.annotations;
  ASSERT_FALSE(layer.annotations.empty());
  reg_.put_tag(
      "app", "lazy",
      reg_.put_manifest({layer}, testing::kAmd64, std::string(registry::media_type::kOciConfig),
                        std::vector<std::string>{written.diff_id})
          .digest);
  auto hello = fake_.must("app/lazy/rootfs/hello.txt");
  EXPECT_EQ(read_file(tree().open(*hello), tree().attr(*hello).size), "hello, lazily\n");
  EXPECT_EQ(reg_.calls("blob " + layer.digest), 0) << "never fetched whole";
  EXPECT_GE(reg_.calls("range " + layer.digest), 2) << "its footer and table, then the file";
}

}  // namespace
}  // namespace regfs::fs
