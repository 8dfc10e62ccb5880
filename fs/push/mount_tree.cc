#include "fs/push/mount_tree.h"

#include <fcntl.h>

#include <utility>

#include "registry/core/error.h"

namespace regfs::fs {

MountTree::MountTree(TreeOptions tree, Content& content, StagingOptions staging)
    : tree_(std::make_unique<Tree>(std::move(tree), content)),
      staging_(std::make_unique<StagingTree>(*tree_, content, std::move(staging))) {
  tree_->set_staged(*staging_);
}

MountTree::~MountTree() { staging_.reset(); }

MountFile MountTree::open(const Node& file, int flags) {
  if (file.kind == NodeKind::kStaged) return MountFile{{}, staging_->open(file, flags)};
  if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) {
    throw registry::Error(registry::ErrorKind::kReadOnly,
                          "Cannot open " + file.key + " for writing: remote content");
  }
  return MountFile{tree_->open(file), nullptr};
}

std::optional<uint64_t> MountTree::copy_reference(const Node& source, uint64_t offset_in,
                                                  StagedFile& out, uint64_t offset_out,
                                                  uint64_t length) {
  if (source.kind != NodeKind::kBlob) return std::nullopt;
  return staging_->copy_reference(source, tree_->attr(source).size, offset_in, out, offset_out,
                                  length);
}

}  // namespace regfs::fs
