// Typed nodes (fs/tree/tree.h): what only some kinds have is read through
// an accessor of that kind, which throws on a node of another kind.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <stdexcept>

#include "fs/tree/tree.h"

namespace regfs::fs {
namespace {

Node node_of(NodeKind kind) {
  Node node;
  node.kind = kind;
  node.key = "/r/app/v1/x";
  node.registry = "r";
  node.path = "app";
  node.reference = "v1";
  return node;
}

TEST(NodeTest, EachKindReadsItsOwnCoordinates) {
  Node blob = node_of(NodeKind::kBlob);
  blob.at = Node::BlobAt{"sha256:abc"};
  EXPECT_EQ(blob.blob().digest, "sha256:abc");
  EXPECT_TRUE(blob.immutable());
  EXPECT_EQ(blob.type_bits(), static_cast<mode_t>(S_IFREG));

  Node rootfs = node_of(NodeKind::kRootfs);
  rootfs.at = Node::RootfsAt{"sha256:def", "etc", S_IFDIR};
  EXPECT_EQ(rootfs.rootfs().image_digest, "sha256:def");
  EXPECT_EQ(rootfs.rootfs().path, "etc");
  EXPECT_TRUE(rootfs.is_dir());
  EXPECT_TRUE(rootfs.immutable()) << "below rootfs/, pinned to the image digest";

  Node staged = node_of(NodeKind::kStaged);
  staged.at = Node::StagedAt{"rootfs/etc/hosts", S_IFREG, true};
  EXPECT_EQ(staged.staged().path, "rootfs/etc/hosts");
  EXPECT_TRUE(staged.is_overlay());
  EXPECT_FALSE(staged.is_dir());
}

TEST(NodeTest, AnotherKindsCoordinatesThrow) {
  Node blob = node_of(NodeKind::kBlob);
  blob.at = Node::BlobAt{"sha256:abc"};
  EXPECT_THROW(blob.rootfs(), std::logic_error);
  EXPECT_THROW(blob.staged(), std::logic_error);
  EXPECT_FALSE(blob.is_overlay());

  Node ns = node_of(NodeKind::kNamespace);
  EXPECT_THROW(ns.blob(), std::logic_error);
  EXPECT_THROW(ns.staged(), std::logic_error) << "a staged namespace is no staged entry";
  EXPECT_FALSE(ns.is_overlay());

  Node unset = node_of(NodeKind::kRootfs);  // the kind without its coordinates
  EXPECT_THROW(unset.rootfs(), std::logic_error);
}

}  // namespace
}  // namespace regfs::fs
