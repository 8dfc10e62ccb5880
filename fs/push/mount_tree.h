// The one tree the FUSE glue sees: what the mount shows (fs/tree/tree.h) and
// what is staged in it (fs/push/staging_tree.h) behind one object, for reads
// and changes alike. A thin facade: each call goes to the Tree or to the
// StagingTree, which keep their own rules and errors (SPEC §7).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fs/push/staging_tree.h"
#include "fs/source/content.h"
#include "fs/tree/tree.h"

namespace regfs::fs {

// An opened file of the mount: a staged file (`staged`), or what Tree::open
// gives for remote content (`remote`).
struct MountFile {
  OpenedFile remote;
  std::shared_ptr<StagedFile> staged;
};

class MountTree {
 public:
  // The tree of `tree` over `content`, with its staged tree set up by
  // `staging`; `content` must outlive this.
  MountTree(TreeOptions tree, Content& content, StagingOptions staging);
  // The staged tree stops first (it pushes pending builds), then the tree.
  ~MountTree();
  MountTree(const MountTree&) = delete;
  MountTree& operator=(const MountTree&) = delete;

  // Reads (Tree): the root; the child `name` of `dir` (nullptr if none); the
  // children of `dir` in listing order; attributes; a symlink's target;
  // user.* extended attributes (nullopt if none). Throw Error.
  NodePtr root() const { return tree_->root(); }
  NodePtr lookup(const Node& dir, std::string_view name) { return tree_->lookup(dir, name); }
  std::vector<NodePtr> list(const Node& dir) { return tree_->list(dir); }
  Attr attr(const Node& node) { return tree_->attr(node); }
  std::string readlink(const Node& node) { return tree_->readlink(node); }
  std::optional<std::string> xattr(const Node& node, std::string_view name) {
    return tree_->xattr(node, name);
  }
  std::vector<std::string> xattr_names(const Node& node) { return tree_->xattr_names(node); }
  // Opens `file` with open(2) `flags`: a staged file for reading or writing,
  // remote content read only (else Error(kReadOnly)). Throws Error.
  MountFile open(const Node& file, int flags);
  // Bytes of a staged file opened by open() or create(); `offset` in bytes.
  size_t read(StagedFile& file, char* buffer, size_t size, uint64_t offset) {
    return staging_->read(file, buffer, size, offset);
  }

  // Changes (StagingTree, SPEC §4): remote content answers Error(kReadOnly).
  NodePtr mkdir(const Node& parent, std::string_view name, mode_t mode, bool by_copy = false) {
    return staging_->mkdir(parent, name, mode, by_copy);
  }
  std::shared_ptr<StagedFile> create(const Node& parent, std::string_view name, mode_t mode,
                                     int flags, NodePtr* node) {
    return staging_->create(parent, name, mode, flags, node);
  }
  void write(StagedFile& file, const char* data, size_t size, uint64_t offset) {
    staging_->write(file, data, size, offset);
  }
  void flush(StagedFile& file) { staging_->flush(file); }
  Attr setattr(const Node& node, StagedFile* file, const SetAttr& change) {
    return staging_->setattr(node, file, change);
  }
  NodePtr symlink(const Node& parent, std::string_view name, const std::string& target) {
    return staging_->symlink(parent, name, target);
  }
  NodePtr mknod(const Node& parent, std::string_view name, mode_t mode, dev_t rdev) {
    return staging_->mknod(parent, name, mode, rdev);
  }
  NodePtr link(const Node& node, const Node& new_parent, std::string_view new_name) {
    return staging_->link(node, new_parent, new_name);
  }
  void unlink(const Node& parent, std::string_view name) { staging_->unlink(parent, name); }
  void rmdir(const Node& parent, std::string_view name) { staging_->rmdir(parent, name); }
  void rename(const Node& parent, std::string_view name, const Node& new_parent,
              std::string_view new_name) {
    staging_->rename(parent, name, new_parent, new_name);
  }
  void setxattr(const Node& node, const std::string& name, const std::string& value, int flags) {
    staging_->setxattr(node, name, value, flags);
  }
  void removexattr(const Node& node, const std::string& name) { staging_->removexattr(node, name); }
  // See StagingTree::push_now, copy_reference and resume_pushes.
  void push_now(const Node& dir) { staging_->push_now(dir); }
  std::optional<uint64_t> copy_reference(const Node& source, uint64_t offset_in, StagedFile& out,
                                         uint64_t offset_out, uint64_t length);
  void resume_pushes(const std::string& registry) { staging_->resume_pushes(registry); }

 private:
  std::unique_ptr<Tree> tree_;
  std::unique_ptr<StagingTree> staging_;  // declared last: destroyed first
};

}  // namespace regfs::fs
