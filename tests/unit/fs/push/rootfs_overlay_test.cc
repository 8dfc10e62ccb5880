// rootfs/ of a staged copy of an image without FUSE: the merged view of a
// base (a MergedTree of layer indexes) and an upper directory, and the
// layer entries the changes make (whiteouts, opaque markers, metadata),
// as the OCI image spec's changeset rules say; the state survives a new
// StagingArea (a remount); a directory of the base cannot be renamed.
#include "fs/push/rootfs_overlay.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fstream>
#include <map>

#include "cache/tar_reader.h"
#include "registry/core/error.h"

namespace regfs::fs {
namespace {

namespace fsys = std::filesystem;
using cache::EntryType;
using cache::TarEntry;

TarEntry entry(std::string path, EntryType type, uint32_t mode) {
  TarEntry e;
  e.path = cache::clean_path(path);
  e.type = type;
  e.mode = mode;
  e.uid = 7;
  e.gid = 8;
  e.mtime = 1600000000;
  return e;
}

std::shared_ptr<const MergedTree> base() {
  auto index = std::make_shared<cache::LayerIndex>();
  index->diff_id = "sha256:" + std::string(64, '0');
  index->entries = {
      entry("etc", EntryType::kDir, 0750),
      entry("etc/a", EntryType::kFile, 0600),
      entry("etc/b", EntryType::kFile, 0644),
      entry("usr", EntryType::kDir, 0755),
      entry("usr/share", EntryType::kDir, 0755),
      entry("usr/share/doc", EntryType::kDir, 0755),
      entry("usr/share/doc/y", EntryType::kFile, 0644),
  };
  return std::make_shared<const MergedTree>(
      std::vector<std::shared_ptr<const cache::LayerIndex>>{index});
}

class RootfsOverlayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regfs-overlay-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    area_ = std::make_unique<cache::StagingArea>(dir_ / "staging");
    area_->make_tag(tag_);
  }
  void TearDown() override { fsys::remove_all(dir_); }

  std::map<std::string, cache::LayerEntry> layer(const RootfsOverlay& overlay) {
    std::map<std::string, cache::LayerEntry> out;
    for (auto& e : overlay.layer_entries()) out[e.path] = e;
    return out;
  }
  std::vector<std::string> names(const RootfsOverlay& overlay, const std::string& dir) {
    std::vector<std::string> out;
    for (auto& [name, _] : overlay.list(dir)) out.push_back(name);
    return out;
  }

  fsys::path dir_;
  std::unique_ptr<cache::StagingArea> area_;
  cache::StagedTag tag_{"localhost:5000", "edits/app", "v1"};
};

TEST_F(RootfsOverlayTest, UnchangedShowsTheBase) {
  RootfsOverlay overlay(*area_, tag_, base());
  EXPECT_FALSE(overlay.has_changes());
  EXPECT_EQ(names(overlay, ""), (std::vector<std::string>{"etc", "usr"}));
  EXPECT_EQ(overlay.attr("etc/a").mode, S_IFREG | 0600u);
  EXPECT_EQ(overlay.attr("etc/a").uid, 7u);
  EXPECT_TRUE(overlay.layer_entries().empty());
}

TEST_F(RootfsOverlayTest, RemovalsAreWhiteoutsAndANewDirectoryOverARemovedOneIsOpaque) {
  RootfsOverlay overlay(*area_, tag_, base());
  overlay.unlink("etc/a");
  EXPECT_FALSE(overlay.type("etc/a"));
  EXPECT_EQ(names(overlay, "etc"), (std::vector<std::string>{"b"}));
  // rm -r usr/share: the children, then the directories.
  overlay.unlink("usr/share/doc/y");
  try {
    overlay.rmdir("usr/share");
    FAIL() << "a directory that is not empty was removed";
  } catch (const registry::Error& e) {
    EXPECT_EQ(e.kind(), registry::ErrorKind::kNotEmpty);
  }
  overlay.rmdir("usr/share/doc");
  overlay.rmdir("usr/share");
  EXPECT_FALSE(overlay.type("usr/share"));
  EXPECT_TRUE(overlay.has_changes());
  auto entries = layer(overlay);
  EXPECT_TRUE(entries.count("etc/.wh.a"));
  EXPECT_TRUE(entries.count("usr/.wh.share"));
  // One whiteout stands for the directory: none for what it held.
  EXPECT_FALSE(entries.count("usr/share/doc/.wh.y"));
  EXPECT_FALSE(entries.count("usr/share/.wh.doc"));
  // The directories of whiteouts keep the base's metadata.
  ASSERT_TRUE(entries.count("etc"));
  EXPECT_EQ(entries["etc"].type, static_cast<mode_t>(S_IFDIR));
  EXPECT_EQ(entries["etc"].mode, 0750u);
  EXPECT_EQ(entries["etc"].uid, 7u);
  EXPECT_EQ(entries["etc"].gid, 8u);

  overlay.mkdir("usr/share", 0700);
  EXPECT_TRUE(names(overlay, "usr/share").empty());  // the base's doc stays hidden
  entries = layer(overlay);
  EXPECT_FALSE(entries.count("usr/.wh.share"));
  EXPECT_TRUE(entries.count("usr/share/.wh..wh..opq"));
  EXPECT_EQ(entries["usr/share"].mode, 0700u);
  EXPECT_EQ(entries["usr/share"].uid, 0u);
}

TEST_F(RootfsOverlayTest, NewFilesLinksAndMetadataGoInTheLayer) {
  RootfsOverlay overlay(*area_, tag_, base());
  auto file = overlay.create("etc/new", 0640);
  std::ofstream(file) << "new\n";
  overlay.symlink("etc/link", "/etc/new");
  overlay.link("etc/new", "etc/same");
  overlay.mkdir("opt", 0755);
  overlay.chmod("etc/new", 04755);
  overlay.chown("etc/new", 1000, 1001);
  overlay.setxattr("etc/new", "user.note", "hi", 0);
  EXPECT_EQ(overlay.attr("etc/new").mode, S_IFREG | 04755u);
  EXPECT_EQ(overlay.attr("etc/new").size, 4u);
  EXPECT_EQ(overlay.xattr("etc/new", "user.note"), "hi");
  EXPECT_EQ(overlay.readlink("etc/link"), "/etc/new");
  EXPECT_EQ(names(overlay, "etc"), (std::vector<std::string>{"a", "b", "link", "new", "same"}));
  auto entries = layer(overlay);
  EXPECT_EQ(entries["etc/new"].mode, 04755u);
  EXPECT_EQ(entries["etc/new"].uid, 1000u);
  EXPECT_EQ(entries["etc/new"].gid, 1001u);
  EXPECT_EQ(entries["etc/new"].xattrs.at("user.note"), "hi");
  EXPECT_EQ(entries["etc/link"].type, static_cast<mode_t>(S_IFLNK));
  EXPECT_EQ(entries["etc/link"].link_target, "/etc/new");
  EXPECT_EQ(entries["etc/same"].hardlink_to, "etc/new");
  EXPECT_EQ(entries["opt"].type, static_cast<mode_t>(S_IFDIR));
  EXPECT_FALSE(entries.count("etc/a"));  // untouched base entries are not in the layer
  // Parents come before their children.
  auto list = overlay.layer_entries();
  for (size_t i = 1; i < list.size(); ++i) EXPECT_LT(list[i - 1].path, list[i].path);
}

TEST_F(RootfsOverlayTest, ChangesSurviveARemountAndRenamesFollowTheRules) {
  {
    RootfsOverlay overlay(*area_, tag_, base());
    overlay.chmod("etc", 0700);  // copies the directory up, with the base's owner
    std::ofstream(overlay.create("etc/c", 0644)) << "c";
    overlay.rename("etc/c", "etc/d");
    overlay.unlink("etc/b");
    overlay.truncate("etc/a", 0);  // copied up without its bytes
    try {
      overlay.rename("usr/share", "usr/other");
      FAIL() << "a directory of the base was renamed";
    } catch (const registry::Error& e) {
      EXPECT_EQ(e.kind(), registry::ErrorKind::kCrossDevice);
    }
  }
  cache::StagingArea again(dir_ / "staging");
  RootfsOverlay overlay(again, tag_, base());
  EXPECT_EQ(names(overlay, "etc"), (std::vector<std::string>{"a", "d"}));
  EXPECT_EQ(overlay.attr("etc").mode, S_IFDIR | 0700u);
  EXPECT_EQ(overlay.attr("etc").uid, 7u);
  EXPECT_EQ(overlay.attr("etc/a").mode, S_IFREG | 0600u);
  EXPECT_EQ(overlay.attr("etc/a").size, 0u);
  auto entries = layer(overlay);
  EXPECT_TRUE(entries.count("etc/.wh.b"));
  EXPECT_FALSE(entries.count("etc/.wh.c"));  // never in the base
  EXPECT_TRUE(entries.count("etc/d"));
  // Discarding the tag removes its upper directory too.
  again.discard_tag(tag_);
  EXPECT_FALSE(fsys::exists(again.upper_dir(tag_)));
}

}  // namespace
}  // namespace regfs::fs
