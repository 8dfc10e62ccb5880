#include "fs/tree/merged_tree.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <set>

#include "cache/tar_reader.h"

namespace regfs::fs {
namespace {

using cache::EntryType;
using cache::TarEntry;

TarEntry entry(std::string path, EntryType type = EntryType::kFile, std::string link = {}) {
  TarEntry e;
  e.path = cache::clean_path(path);
  e.type = type;
  e.mode = type == EntryType::kDir ? 0755 : 0644;
  e.link = type == EntryType::kHardlink ? cache::clean_path(link) : link;
  return e;
}
TarEntry dir(std::string path) { return entry(std::move(path), EntryType::kDir); }
TarEntry file(std::string path, uint64_t size = 1) {
  auto e = entry(std::move(path));
  e.size = size;
  return e;
}
TarEntry symlink(std::string path, std::string target) {
  return entry(std::move(path), EntryType::kSymlink, std::move(target));
}
TarEntry hardlink(std::string path, std::string target) {
  return entry(std::move(path), EntryType::kHardlink, std::move(target));
}
TarEntry whiteout(std::string path) { return file(std::move(path)); }

std::shared_ptr<const cache::LayerIndex> layer(std::vector<TarEntry> entries) {
  auto index = std::make_shared<cache::LayerIndex>();
  index->diff_id = "sha256:" + std::string(64, '0');
  index->entries = std::move(entries);
  return index;
}

// Every reachable path, "dir/" for directories, sorted.
std::set<std::string> paths(const MergedTree& tree, uint32_t at = MergedTree::kRoot,
                            const std::string& prefix = "") {
  std::set<std::string> out;
  for (const auto& [name, child] : tree.node(at).children) {
    std::string path = prefix + name;
    if (tree.node(child).is_dir()) {
      out.insert(path + "/");
      auto sub = paths(tree, child, path + "/");
      out.insert(sub.begin(), sub.end());
    } else {
      out.insert(path);
    }
  }
  return out;
}

using Paths = std::set<std::string>;

TEST(MergedTree, LaterLayersWinAndDirectoriesMerge) {
  auto base = layer({dir("etc"), file("etc/a", 1), file("etc/b", 1), dir("x"), file("x/in", 1)});
  auto top = layer({dir("etc"), file("etc/a", 2), file("x", 3)});
  MergedTree tree({base, top});
  EXPECT_EQ(paths(tree), (Paths{"etc/", "etc/a", "etc/b", "x"}));
  EXPECT_EQ(tree.node(*tree.find("etc/a")).entry->size, 2u);
  EXPECT_EQ(tree.node(*tree.find("etc/a")).layer, 1u);
  EXPECT_EQ(tree.node(*tree.find("etc")).entry, &top->entries[0]);  // metadata of the later dir
}

TEST(MergedTree, WhiteoutsHideLowerEntries) {
  auto base = layer({dir("etc"), file("etc/motd"), dir("usr"), dir("usr/share"),
                     file("usr/share/f"), file("keep")});
  auto top = layer({whiteout("etc/.wh.motd"), whiteout("usr/.wh.share"), whiteout(".wh.missing"),
                    whiteout("nodir/.wh.x")});
  MergedTree tree({base, top});
  EXPECT_EQ(paths(tree), (Paths{"etc/", "usr/", "keep"}));
}

TEST(MergedTree, OpaqueDirectoriesKeepWhatTheSameLayerWrote) {
  auto base = layer({dir("d"), file("d/old"), dir("d/sub"), file("d/sub/old")});
  auto top =
      layer({dir("d"), file("d/early"), dir("d/sub"), whiteout("d/.wh..wh..opq"), file("d/late")});
  MergedTree tree({base, top});
  EXPECT_EQ(paths(tree), (Paths{"d/", "d/early", "d/sub/", "d/late"}));
}

TEST(MergedTree, AWhiteoutDoesNotRemoveWhatItsLayerWrote) {
  auto base = layer({dir("d"), file("d/lower")});
  auto top = layer({file("d/new"), whiteout(".wh.d"), whiteout("d/.wh.new")});
  MergedTree tree({base, top});
  EXPECT_EQ(paths(tree), (Paths{"d/", "d/new"}));
}

TEST(MergedTree, HardlinksShareAnInodeAcrossLayers) {
  auto base = layer({dir("bin"), file("bin/busybox", 10), hardlink("bin/ls", "bin/busybox")});
  auto top = layer({hardlink("bin/cat", "/bin/busybox"), file("bin/busybox", 20)});
  MergedTree tree({base, top});
  const auto& ls = tree.node(*tree.find("bin/ls"));
  const auto& cat = tree.node(*tree.find("bin/cat"));
  const auto& busybox = tree.node(*tree.find("bin/busybox"));
  EXPECT_EQ(ls.inode, cat.inode);
  EXPECT_EQ(ls.nlink, 2u);  // busybox itself was replaced by a new file
  EXPECT_NE(busybox.inode, ls.inode);
  EXPECT_EQ(busybox.nlink, 1u);
  EXPECT_EQ(cat.entry->size, 10u);
  EXPECT_EQ(cat.layer, 0u);
}

TEST(MergedTree, HardlinksToMissingTargetsOrDirectoriesAreSkipped) {
  auto base = layer({dir("d"), hardlink("l1", "nothing"), hardlink("l2", "d")});
  MergedTree tree({base});
  EXPECT_EQ(paths(tree), (Paths{"d/"}));
}

TEST(MergedTree, ASkippedEntryNeverRemovesThePathItNames) {
  // Tar writes a file, then a link of the file to itself; or a link to what
  // is not there over a file that is.
  auto base =
      layer({dir("bin"), file("bin/tool", 5), hardlink("bin/tool", "bin/tool"), file("kept", 7),
             hardlink("kept", "missing"), dir("d"), file("d/in"), hardlink("d", "nothing")});
  MergedTree tree({base});
  EXPECT_EQ(paths(tree), (Paths{"bin/", "bin/tool", "kept", "d/", "d/in"}));
  EXPECT_EQ(tree.node(*tree.find("bin/tool")).entry, &base->entries[1]);
  EXPECT_EQ(tree.node(*tree.find("bin/tool")).nlink, 1u);
  EXPECT_EQ(tree.node(*tree.find("kept")).entry->size, 7u);
}

TEST(MergedTree, PathsThroughSymlinksAndDotDotAreLexical) {
  // As SecureJoin: `missing/../etc` is `etc`, and makes no `missing`.
  auto base = layer({dir("etc"), file("etc/passwd", 3), symlink("a", "missing/../etc"),
                     hardlink("b", "a/passwd"), file("a/new"), symlink("deep/s", "../../../x/.."),
                     file("deep/s/y")});
  MergedTree tree({base});
  EXPECT_EQ(paths(tree),
            (Paths{"etc/", "etc/passwd", "etc/new", "a", "b", "deep/", "deep/s", "y"}));
  EXPECT_EQ(tree.node(*tree.find("b")).inode, tree.node(*tree.find("etc/passwd")).inode);
  EXPECT_EQ(tree.node(*tree.find("b")).nlink, 2u);
}

TEST(MergedTree, WhiteoutsNamingNothingOrAboveAreRefused) {
  auto base = layer({dir("d"), file("d/f"), dir("d/sub"), file("top")});
  auto top = layer({whiteout("d/.wh."), whiteout("d/.wh.."), whiteout("d/.wh..."),
                    whiteout("d/sub/.wh.."), whiteout(".wh..")});
  MergedTree tree({base, top});
  EXPECT_EQ(paths(tree), (Paths{"d/", "d/f", "d/sub/", "top"}));
}

TEST(MergedTree, ParentsResolveThroughSymlinksInsideTheRoot) {
  auto base = layer({dir("usr"), dir("usr/lib"), symlink("lib", "usr/lib"), symlink("abs", "/usr"),
                     symlink("up", "../../../usr/lib"), symlink("dangling", "opt/new")});
  auto top = layer({file("lib/a"), file("abs/b"), file("up/c"), file("dangling/d")});
  MergedTree tree({base, top});
  EXPECT_EQ(paths(tree), (Paths{"usr/", "usr/lib/", "usr/lib/a", "usr/b", "usr/lib/c", "lib", "abs",
                                "up", "dangling", "opt/", "opt/new/", "opt/new/d"}));
  EXPECT_EQ(tree.node(*tree.find("lib")).entry->link, "usr/lib");  // readlink unchanged
}

TEST(MergedTree, SymlinkLoopsAndPathsThroughFilesAreSkipped) {
  auto base = layer({symlink("a", "b"), symlink("b", "a"), file("f"), file("a/x"), file("f/y")});
  MergedTree tree({base});
  EXPECT_EQ(paths(tree), (Paths{"a", "b", "f"}));
}

TEST(MergedTree, ResolutionWorkIsBounded) {
  // Two symlinks of 40000 components each: past what one resolution may walk.
  std::string dots;
  for (int i = 0; i < 40000; ++i) dots += "./";
  auto base = layer({dir("d"), symlink("s1", dots + "d"), symlink("s0", dots + "s1"),
                     file("s1/near"), file("s0/far")});
  MergedTree tree({base});
  EXPECT_EQ(paths(tree), (Paths{"d/", "d/near", "s0", "s1"}));
}

TEST(MergedTree, EscapingNamesAreConfined) {
  auto base = layer({file("../../etc/passwd"), file("/abs"), dir("./d/../e")});
  MergedTree tree({base});
  EXPECT_EQ(paths(tree), (Paths{"etc/", "etc/passwd", "abs", "e/"}));
}

TEST(MergedTree, TheRootTakesItsEntrysMetadataButStaysADirectory) {
  auto root = dir(".");
  root.mode = 0700;
  auto base = layer({root, file("f")});
  auto top = layer({file("./")});
  MergedTree tree({base, top});
  EXPECT_EQ(tree.node(MergedTree::kRoot).entry->mode, 0700u);
  EXPECT_TRUE(tree.node(MergedTree::kRoot).is_dir());
  EXPECT_EQ(paths(tree), (Paths{"f"}));
}

TEST(MergedTree, ImplicitDirectoriesAndLinkCounts) {
  auto base = layer({file("a/b/c"), dir("a/d"), entry("a/fifo", EntryType::kFifo)});
  MergedTree tree({base});
  const auto& a = tree.node(*tree.find("a"));
  EXPECT_EQ(a.entry, nullptr);
  EXPECT_EQ(a.type_bits(), static_cast<mode_t>(S_IFDIR));
  EXPECT_EQ(a.nlink, 4u);  // 2 + b + d
  EXPECT_EQ(tree.node(*tree.find("a/fifo")).type_bits(), static_cast<mode_t>(S_IFIFO));
  EXPECT_EQ(tree.size(), 6u);
}

TEST(MergedTree, ADirectoryReplacesAFileAndAFileADirectory) {
  auto base = layer({file("x"), dir("y"), file("y/z")});
  auto top = layer({dir("x"), file("x/in"), file("y")});
  MergedTree tree({base, top});
  EXPECT_EQ(paths(tree), (Paths{"x/", "x/in", "y"}));
}

}  // namespace
}  // namespace regfs::fs
