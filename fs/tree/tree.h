// The tree users see (SPEC §2, §3), FUSE-free so it is unit-tested:
//
//   [registry/]namespace/.../repo/          namespaces and repositories
//   repo/<tag>/ and repo/sha256:<hex>/      image directories
//     oci-layout index.json manifest.json config.json blobs/sha256/<hex>
//     rootfs/ (unlisted)                    the merged layers (fs/tree/rootfs.h)
//
// A Node is a value naming what an entry is (its kind and coordinates); the
// Tree answers lookup/list/attr/open for it, each node kind by one part
// (namespaces, image directories, the rootfs view, the staged tree), through
// a Source (the narrow interface of fs/source/source.h, which Content
// implements, so unit tests run the tree on a fake source); the FUSE glue
// sees it through MountTree (fs/push/mount_tree.h). Directories of a
// repository list tags from tags/list and child namespaces from the catalog;
// where a registry serves no catalog (Docker Hub, or a token without catalog
// scope) a name exists only when something proves it, as
// fs/tree/known_names.h says, and directories list what is known.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "cache/layer_data.h"
#include "cache/layer_writer.h"
#include "cache/lru_index.h"
#include "cache/tar_reader.h"
#include "fs/source/source.h"
#include "fs/tree/image.h"
#include "fs/tree/known_names.h"
#include "fs/tree/names.h"
#include "registry/manifest.h"

namespace regfs::fs {

class ImageDirs;
class MergedTree;

enum class NodeKind {
  kRoot,          // multi-registry root
  kNamespace,     // a registry's root (path "") or a namespace/repository
  kImage,         // repo/<tag> or repo/sha256:<hex>
  kBlobsDir,      // <image>/blobs
  kBlobsAlgDir,   // <image>/blobs/sha256
  kLayoutFile,    // <image>/oci-layout
  kIndexFile,     // <image>/index.json
  kManifestFile,  // <image>/manifest.json
  kConfigFile,    // <image>/config.json
  kBlob,          // <image>/blobs/sha256/<hex>
  kRootfs,        // <image>/rootfs and everything under it (fs/tree/rootfs.h)
  kStaged,        // a staged tag and everything under it (StagedNames, fs/tree/names.h)
  kControlDir,    // MOUNT/.regfs: unlisted, the daemon's control interface
  kStatusFile,    // MOUNT/.regfs/status: JSON made at open (fs/source/status.h)
};

// The unlisted control directory at the mount root (`regfs status` reads it).
inline constexpr std::string_view kControlDirName = ".regfs";

// A node is a value naming what an entry is: its kind, its place (name,
// key), the coordinates every kind but the root and the control files has
// (registry, path, reference), and what only some kinds have, typed by kind
// (`at`): a blob's digest, a rootfs entry's image and path, a staged entry's
// path. The accessors of the typed part throw std::logic_error on a node of
// another kind, so no field is read in a meaning it does not have.
struct Node {
  // kBlob: <image>/blobs/sha256/<hex>.
  struct BlobAt {
    std::string digest;  // the blob's
  };
  // kRootfs: rootfs/ of an image and everything under it (fs/tree/rootfs.h).
  struct RootfsAt {
    std::string image_digest;  // the manifest digest the entry is pinned to
    std::string path;          // inside the rootfs ("" for rootfs/ itself)
    mode_t type = 0;           // S_IFMT bits of the entry
  };
  // kStaged: a staged tag and everything under it (StagedNames, fs/tree/names.h).
  struct StagedAt {
    std::string path;  // inside the tag ("" for the tag directory)
    mode_t type = 0;   // S_IFMT bits of the entry
    // Under the writable rootfs/ of a staged copy of an image
    // (fs/push/rootfs_overlay.h); `path` is then "rootfs" or "rootfs/<path>".
    bool overlay = false;
  };

  NodeKind kind = NodeKind::kRoot;
  std::string name;       // the entry's name in its parent ("" for the root)
  std::string key;        // unique path from the mount root; kRootfs: the inode's identity
  std::string registry;   // canonical registry name (all but kRoot and the control files)
  std::string path;       // namespace path, or the repository of image-level and staged nodes
  std::string reference;  // image-level, kRootfs: the tag or digest naming the image
                          // directory; kStaged: the staged tag
  std::variant<std::monostate, BlobAt, RootfsAt, StagedAt> at;

  const BlobAt& blob() const { return typed<BlobAt>(NodeKind::kBlob); }
  const RootfsAt& rootfs() const { return typed<RootfsAt>(NodeKind::kRootfs); }
  const StagedAt& staged() const { return typed<StagedAt>(NodeKind::kStaged); }
  StagedAt& staged() { return const_cast<StagedAt&>(std::as_const(*this).staged()); }
  // A staged entry under the writable rootfs/ of a staged copy of an image.
  bool is_overlay() const { return kind == NodeKind::kStaged && staged().overlay; }

  bool is_dir() const;
  // Under a digest directory, or a blob: content can never change.
  bool immutable() const;
  bool is_tag_image() const { return !reference.empty() && reference.rfind("sha256:", 0) != 0; }
  // S_IFMT bits of the entry (directory or regular file but in rootfs/).
  mode_t type_bits() const;

 private:
  template <typename At>
  const At& typed(NodeKind want) const {
    const At* at_kind = std::get_if<At>(&at);
    if (kind != want || !at_kind) throw_wrong_kind(want);
    return *at_kind;
  }
  [[noreturn]] void throw_wrong_kind(NodeKind want) const;
};
using NodePtr = std::shared_ptr<const Node>;

struct Attr {
  mode_t mode = 0;  // type and permission bits
  uint64_t size = 0;
  uint32_t nlink = 1;
  // rootfs entries carry their own owner, time and device (set: true);
  // other nodes show the mount's owner and time.
  bool own_metadata = false;
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime = 0;
  uint32_t mtime_nsec = 0;
  uint64_t rdev = 0;
  // A generated file that follows a tag (index.json, manifest.json and
  // config.json of a tag directory): nonzero, from the digest the tag names,
  // shown as the nanoseconds of its mtime, so a moved tag changes the mtime
  // and the kernel drops the pages it kept (FUSE_CAP_AUTO_INVAL_DATA).
  uint32_t version_nsec = 0;
};

// An opened file: small generated content in memory, or a blob read lazily.
struct OpenedFile {
  std::shared_ptr<const std::string> bytes;
  std::shared_ptr<BlobReader> reader;
  // Or a rootfs file: `entry` (a regular file) of a layer read through `layer`.
  std::shared_ptr<const cache::LayerData> layer = {};
  std::shared_ptr<const cache::TarEntry> entry = {};
};

struct TreeOptions {
  std::string registry;  // single-registry mode if set
  registry::Platform platform;
  std::vector<std::string> listed_registries;  // multi-registry root entries
  bool read_only = false;                      // --read-only: said in the status document
};

class Tree : public RemoteNames {
 public:
  // `source` must outlive the tree.
  Tree(TreeOptions options, Source& source);
  ~Tree() override;

  NodePtr root() const { return root_; }
  // The child `name` of `dir`, or nullptr if there is none. Throws Error.
  NodePtr lookup(const Node& dir, std::string_view name) override;
  // The children of `dir` in listing order (unlisted entries excluded).
  std::vector<NodePtr> list(const Node& dir) override;
  Attr attr(const Node& node) override;
  OpenedFile open(const Node& file);
  // Extended attributes (user.regfs.*); nullopt if `node` has no such one.
  std::optional<std::string> xattr(const Node& node, std::string_view name);
  std::vector<std::string> xattr_names(const Node& node);
  // A symlink's target, unchanged. Throws Error(kInvalid) for other nodes.
  std::string readlink(const Node& node);
  // Whether the registry has shown `path` to be a repository (its catalog, or
  // tags/list answered); asks nothing new of a registry without a catalog.
  bool is_known_repository(const std::string& registry, const std::string& path) override;
  // The merged tree of image `digest` of registry/repository, for the
  // --platform image of an index; nullptr if there is no image for the
  // platform. Throws Error.
  std::shared_ptr<const MergedTree> image_rootfs(const std::string& registry,
                                                 const std::string& repository,
                                                 const std::string& digest) override;
  // Namespaces, tags and files made through the mount (SPEC §4) among the
  // names this tree shows: `staged` (fs/push/staging_tree.h) must outlive
  // the tree's use. Without it the tree shows no staged names.
  void set_staged(StagedNames& staged) { staging_ = &staged; }

 private:
  // The parts of the tree, each answering for its nodes: the remote tree of
  // registries and namespaces (fs/tree/namespaces.cc), image directories
  // (fs/tree/image_dirs.h), the rootfs view (fs/tree/rootfs.h), the staged
  // tree (StagedNames) and the control directory.
  enum class Part { kNamespaces, kImages, kRootfs, kStaged, kControl };
  static Part part_of(NodeKind kind);

  // The remote tree (fs/tree/namespaces.cc).
  NodePtr lookup_root(std::string_view name);
  std::vector<NodePtr> list_root();
  NodePtr lookup_namespace(const Node& dir, std::string_view name);
  std::vector<NodePtr> list_namespace(const Node& dir);
  NodePtr lookup_in_catalog(const Node& dir, RegistrySource& reg,
                            const std::vector<std::string>& catalog, const std::string& name);
  bool has_tag(RegistrySource& reg, const std::string& repo, const Names& tags,
               const std::string& tag);
  // The tags of `path` if the registry proves it a repository (tags/list
  // answers); nullptr if it answers 401/403/404 (not proven: the name may
  // not exist, or not for this account; `refused` gets a 401/403). Other
  // errors throw.
  Names probe_repository(RegistrySource& reg, const std::string& path,
                         std::optional<registry::Error>* refused = nullptr);
  void hint(RegistrySource& reg, const std::string& path, const registry::Error& refused);
  // Once per registry: what the cache and the credentials name (known_).
  void learn_registry(RegistrySource& reg);
  // Whether an unproven name may stand as a namespace under `path`
  // (fs/tree/known_names.h); `proven_repository`: `path` answered tags/list.
  bool is_anchor(RegistrySource& reg, const std::string& path, bool proven_repository);

  NodePtr make_namespace(const std::string& registry, const std::string& path,
                         std::string_view name, const std::string& parent_key);
  // MOUNT/.regfs (`dir` the root) or MOUNT/.regfs/status (`dir` .regfs).
  static NodePtr control_node(const Node& dir, std::string_view name);

  const TreeOptions options_;
  Source& content_;
  NodePtr root_;
  std::unique_ptr<ImageDirs> images_;
  StagedNames* staging_;  // never null: a StagedNames without names until set_staged

  KnownNames known_;

  std::mutex mutex_;               // guards learned_
  std::set<std::string> learned_;  // registries learn_registry() has read
};

}  // namespace regfs::fs
