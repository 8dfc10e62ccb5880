#include "fs/fuse/inode_table.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

namespace regfs::fs {
namespace {

NodePtr node(const std::string& key) {
  auto n = std::make_shared<Node>();
  n->kind = NodeKind::kNamespace;
  n->key = key;
  return n;
}

TEST(InodeTable, SameKeySameInodeUntilForgotten) {
  InodeTable table(node("/"));
  auto a = table.add_lookup(node("/a"));
  EXPECT_NE(a, InodeTable::kRootIno);
  EXPECT_EQ(table.add_lookup(node("/a")), a);
  auto b = table.add_lookup(node("/b"));
  EXPECT_NE(a, b);
  table.forget(a, 1);
  EXPECT_TRUE(table.get(a)) << "one lookup is still held";
  table.forget(a, 1);
  EXPECT_FALSE(table.get(a));
  EXPECT_NE(table.add_lookup(node("/a")), a) << "numbers are not reused";
}

TEST(InodeTable, ImmutableNodesKeepTheirNumberAfterBeingForgotten) {
  InodeTable table(node("/"));
  auto blob = std::make_shared<Node>();
  blob->kind = NodeKind::kBlob;
  blob->key = "/r/app/v1/blobs/sha256/x";
  auto a = table.add_lookup(blob);
  table.forget(a, 1);
  EXPECT_FALSE(table.get(a));
  auto other = table.add_lookup(node("/other"));
  EXPECT_NE(other, a);
  EXPECT_EQ(table.add_lookup(blob), a) << "the same immutable node, the same number";
  EXPECT_EQ(table.get(a), blob);
  table.forget(a, 1);
  EXPECT_EQ(table.size(), 2u);
}

TEST(InodeTable, RootIsPermanent) {
  InodeTable table(node("/"));
  EXPECT_EQ(table.add_lookup(node("/")), InodeTable::kRootIno);
  table.forget(InodeTable::kRootIno, 5);
  EXPECT_TRUE(table.get(InodeTable::kRootIno));
}

TEST(InodeTableDeathTest, ForgetUnderflowAborts) {
  InodeTable table(node("/"));
  auto a = table.add_lookup(node("/a"));
  EXPECT_DEATH(table.forget(a, 2), "forgotten more often");
}

NodePtr staged(const std::string& key, const std::string& path) {
  auto n = std::make_shared<Node>();
  n->kind = NodeKind::kStaged;
  n->reference = "v1";
  n->key = key;
  n->at = Node::StagedAt{path, S_IFDIR};
  return n;
}

TEST(InodeTable, AMovedEntryAndWhatIsUnderItFollowTheRename) {
  InodeTable table(node("/"));
  auto dir = table.add_lookup(staged("/r/app/v1/d", "d"));
  auto file = table.add_lookup(staged("/r/app/v1/d/f", "d/f"));
  auto target = table.add_lookup(staged("/r/app/v1/e", "e"));  // replaced by the rename
  table.moved("/r/app/v1/d", staged("/r/app/v1/e", "e"));
  EXPECT_EQ(table.get(dir)->staged().path, "e");
  EXPECT_EQ(table.get(file)->key, "/r/app/v1/e/f");
  EXPECT_EQ(table.get(file)->staged().path, "e/f");
  EXPECT_EQ(table.add_lookup(staged("/r/app/v1/e", "e")), dir);
  EXPECT_NE(table.add_lookup(staged("/r/app/v1/d", "d")), dir);  // a new entry
  // The replaced inode lives on until forgotten, and forgetting it leaves
  // the key to the moved one.
  ASSERT_TRUE(table.get(target));
  table.forget(target, 1);
  EXPECT_FALSE(table.get(target));
  EXPECT_EQ(table.add_lookup(staged("/r/app/v1/e", "e")), dir);
}

}  // namespace
}  // namespace regfs::fs

namespace regfs::fs {
namespace {

TEST(InodeTable, APathThatNamesSomethingElseGetsANewInode) {
  InodeTable table(node("/"));
  auto ns = node("/r/app/v2");
  auto a = table.add_lookup(ns);
  auto image = std::make_shared<Node>(*ns);
  image->kind = NodeKind::kImage;
  image->reference = "v2";
  auto b = table.add_lookup(image);
  EXPECT_NE(a, b) << "a namespace turned into a tag is not the same inode";
  EXPECT_EQ(table.get(b)->kind, NodeKind::kImage);
  EXPECT_EQ(table.get(a)->kind, NodeKind::kNamespace) << "the old one lives until forgotten";
  table.forget(a, 1);
  EXPECT_FALSE(table.get(a));
  EXPECT_EQ(table.add_lookup(image), b) << "forgetting the old one keeps the new mapping";
}

TEST(InodeTable, AStableNumberStillHeldIsNotResetWhenItsKeyComesBack) {
  // A blob of a tag that moved: the same key names a node of another
  // reference for a while, which is forgotten first; the key's stable
  // number, still looked up by the kernel, came back with its count reset
  // and the next FORGET aborted the daemon (drop_caches while a tag moved).
  InodeTable table(node("/"));
  auto blob = std::make_shared<Node>();
  blob->kind = NodeKind::kBlob;
  blob->key = "/r/app/latest/blobs/sha256/x";
  blob->reference = "sha256:old";
  auto a = table.add_lookup(blob);
  auto moved = std::make_shared<Node>(*blob);
  moved->reference = "sha256:new";
  auto b = table.add_lookup(moved);
  EXPECT_NE(a, b);
  table.forget(b, 1);
  EXPECT_EQ(table.add_lookup(blob), a) << "the live entry, counted on";
  table.forget(a, 2);  // aborted before
  EXPECT_FALSE(table.get(a));
  // And a third node under the key while the stable number is held: a new number.
  a = table.add_lookup(blob);
  auto c = table.add_lookup(moved);
  table.forget(c, 1);
  auto third = std::make_shared<Node>(*blob);
  third->reference = "sha256:third";
  auto d = table.add_lookup(third);
  EXPECT_NE(d, a);
  EXPECT_EQ(table.get(a)->reference, "sha256:old");
  EXPECT_EQ(table.get(d)->reference, "sha256:third");
  table.forget(a, 1);
  table.forget(d, 1);
}

}  // namespace
}  // namespace regfs::fs
