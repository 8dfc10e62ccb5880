// The two narrow interfaces between the tree (fs/tree) and the staged tree
// (fs/push), so that neither holds the other and the targets link one way
// (regfs_tree <- regfs_push):
//
//   RemoteNames   what the staged tree asks of the tree: the names the mount
//                 shows, which repositories a registry has proven, and the
//                 merged rootfs/ of a remote image (the base of a staged
//                 copy's rootfs/). Tree implements it.
//   StagedNames   what the tree asks of the staged side: the staged
//                 namespaces and tags among a namespace's names, and the read
//                 side of kStaged nodes. StagingTree implements it; a Tree
//                 given none (unit tests) shows no staged names.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace regfs::fs {

struct Node;  // fs/tree/tree.h
struct Attr;
class MergedTree;
using NodePtr = std::shared_ptr<const Node>;

class RemoteNames {
 public:
  virtual ~RemoteNames() = default;
  // The child `name` of `dir` as the mount shows it (staged names included),
  // or nullptr if there is none. Throws Error.
  virtual NodePtr lookup(const Node& dir, std::string_view name) = 0;
  // The children of `dir` in listing order. Throws Error.
  virtual std::vector<NodePtr> list(const Node& dir) = 0;
  virtual Attr attr(const Node& node) = 0;
  // Whether the registry has shown `path` to be a repository.
  virtual bool is_known_repository(const std::string& registry, const std::string& path) = 0;
  // The merged tree of image `digest` of registry/repository for the
  // --platform image of an index; nullptr if there is no image for the
  // platform. Throws Error.
  virtual std::shared_ptr<const MergedTree> image_rootfs(const std::string& registry,
                                                         const std::string& repository,
                                                         const std::string& digest) = 0;
};

class StagedNames {
 public:
  virtual ~StagedNames() = default;
  // A staged tag or namespace `name` of the namespace `dir`, or nullptr.
  virtual NodePtr lookup_in_namespace(const Node& dir, std::string_view name) = 0;
  // Adds the staged entries of the namespace `dir` to `entries`.
  virtual void add_to_listing(const Node& dir, std::vector<NodePtr>* entries) = 0;
  // A namespace made by mkdir (or holding staged repositories) that is not
  // itself a repository with staged tags.
  virtual bool is_staged_namespace(const std::string& registry, const std::string& path) const = 0;
  // The read side of kStaged nodes; throws Error or std::system_error.
  virtual NodePtr lookup(const Node& dir, std::string_view name) = 0;
  virtual std::vector<NodePtr> list(const Node& dir) = 0;
  virtual Attr attr(const Node& node) = 0;
  virtual std::optional<std::string> xattr(const Node& node, std::string_view name) = 0;
  virtual std::vector<std::string> xattr_names(const Node& node) = 0;
  virtual std::string readlink(const Node& node) = 0;
  // Every staged tag ("registry/repository:tag") with its state, for status.
  virtual std::vector<std::pair<std::string, std::string>> states() = 0;
};

}  // namespace regfs::fs
