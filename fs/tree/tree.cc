#include "fs/tree/tree.h"

#include <sys/stat.h>

#include <algorithm>
#include <stdexcept>

#include "cache/layout.h"
#include "fs/tree/image_dirs.h"
#include "fs/tree/known_names.h"
#include "fs/tree/path.h"
#include "fs/tree/rootfs.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/reference.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;

namespace {

// The staged side of a tree given none (set_staged): no staged names.
class NoStagedNames final : public StagedNames {
 public:
  NodePtr lookup_in_namespace(const Node&, std::string_view) override { return nullptr; }
  void add_to_listing(const Node&, std::vector<NodePtr>*) override {}
  bool is_staged_namespace(const std::string&, const std::string&) const override { return false; }
  NodePtr lookup(const Node&, std::string_view) override { return nullptr; }
  std::vector<NodePtr> list(const Node&) override { return {}; }
  Attr attr(const Node& node) override {
    throw Error(ErrorKind::kNotFound, "No staged " + node.key);
  }
  std::optional<std::string> xattr(const Node&, std::string_view) override { return {}; }
  std::vector<std::string> xattr_names(const Node&) override { return {}; }
  std::string readlink(const Node& node) override {
    throw Error(ErrorKind::kNotFound, "No staged " + node.key);
  }
  std::vector<std::pair<std::string, std::string>> states() override { return {}; }
};
NoStagedNames no_staged_names;

}  // namespace

bool Node::is_dir() const {
  switch (kind) {
    case NodeKind::kRoot:
    case NodeKind::kNamespace:
    case NodeKind::kImage:
    case NodeKind::kBlobsDir:
    case NodeKind::kBlobsAlgDir:
    case NodeKind::kControlDir:
      return true;
    case NodeKind::kRootfs:
    case NodeKind::kStaged:
      return S_ISDIR(type_bits());
    default:
      return false;
  }
}

bool Node::immutable() const {
  // Inside rootfs/ nodes are pinned to an image digest; rootfs/ under a tag is not.
  if (kind == NodeKind::kRootfs) return !rootfs().path.empty() || !is_tag_image();
  return kind == NodeKind::kBlob || kind == NodeKind::kLayoutFile ||
         (!reference.empty() && !is_tag_image());
}

mode_t Node::type_bits() const {
  if (kind == NodeKind::kRootfs) return rootfs().type;
  if (kind == NodeKind::kStaged) return staged().type;
  return is_dir() ? S_IFDIR : S_IFREG;
}

void Node::throw_wrong_kind(NodeKind want) const {
  throw std::logic_error("node " + key + " is of kind " + std::to_string(static_cast<int>(kind)) +
                         ", not " + std::to_string(static_cast<int>(want)));
}

Tree::Tree(TreeOptions options, Source& source)
    : options_(std::move(options)),
      content_(source),
      images_(std::make_unique<ImageDirs>(source, options_.platform)),
      staging_(&no_staged_names) {
  auto root = std::make_shared<Node>();
  root->key = "/";
  if (!options_.registry.empty()) {
    root->kind = NodeKind::kNamespace;
    root->registry = options_.registry;
  }
  root_ = root;
}

Tree::~Tree() = default;

NodePtr Tree::make_namespace(const std::string& registry, const std::string& path,
                             std::string_view name, const std::string& parent_key) {
  auto node = std::make_shared<Node>();
  node->kind = NodeKind::kNamespace;
  node->name = name;
  node->key = join(parent_key == "/" ? "" : parent_key, name);
  node->registry = registry;
  node->path = path;
  return node;
}

// The part of the tree that answers for a node of `kind`.
Tree::Part Tree::part_of(NodeKind kind) {
  switch (kind) {
    case NodeKind::kRoot:
    case NodeKind::kNamespace:
      return Part::kNamespaces;
    case NodeKind::kRootfs:
      return Part::kRootfs;
    case NodeKind::kStaged:
      return Part::kStaged;
    case NodeKind::kControlDir:
    case NodeKind::kStatusFile:
      return Part::kControl;
    default:
      return Part::kImages;
  }
}

NodePtr Tree::lookup(const Node& dir, std::string_view name) {
  if (name.empty() || name == "." || name == "..") return nullptr;
  if (dir.key == "/" && name == kControlDirName) return control_node(dir, name);
  switch (part_of(dir.kind)) {
    case Part::kNamespaces:
      return dir.kind == NodeKind::kRoot ? lookup_root(name) : lookup_namespace(dir, name);
    case Part::kImages:
      return images_->lookup(dir, name);
    case Part::kRootfs:
      return RootfsView::lookup(dir, *images_->rootfs_of(dir), name);
    case Part::kStaged:
      return staging_->lookup(dir, name);
    case Part::kControl:
      return dir.kind == NodeKind::kControlDir && name == "status" ? control_node(dir, name)
                                                                   : nullptr;
  }
  return nullptr;
}

std::vector<NodePtr> Tree::list(const Node& dir) {
  switch (part_of(dir.kind)) {
    case Part::kNamespaces: {
      if (dir.kind == NodeKind::kRoot) return list_root();
      auto entries = list_namespace(dir);
      staging_->add_to_listing(dir, &entries);
      return entries;
    }
    case Part::kImages:
      return images_->list(dir);
    case Part::kRootfs:
      return RootfsView::list(dir, *images_->rootfs_of(dir));
    case Part::kStaged:
      return staging_->list(dir);
    case Part::kControl:
      if (dir.kind == NodeKind::kControlDir) return {control_node(dir, "status")};
      break;
  }
  throw Error(ErrorKind::kInvalid, "Cannot list " + dir.key + ": not a directory");
}

Attr Tree::attr(const Node& node) {
  switch (part_of(node.kind)) {
    case Part::kImages:
      return images_->attr(node);
    case Part::kRootfs:
      return RootfsView::attr(node, *images_->rootfs_of(node));
    case Part::kStaged:
      return staging_->attr(node);
    case Part::kNamespaces:
    case Part::kControl:
      break;
  }
  Attr attr;
  attr.mode = node.is_dir() ? S_IFDIR | 0555 : S_IFREG | 0444;
  attr.nlink = node.is_dir() ? 2 : 1;
  return attr;
}

OpenedFile Tree::open(const Node& node) {
  switch (part_of(node.kind)) {
    case Part::kImages:
      return images_->open(node);
    case Part::kRootfs:
      return RootfsView::open(node, *images_->rootfs_of(node));
    case Part::kControl:
      if (node.kind != NodeKind::kStatusFile) break;
      return OpenedFile{std::make_shared<const std::string>(content_.status(
                            options_.registry.empty() ? "all registries" : options_.registry,
                            staging_->states(), options_.read_only)),
                        {}};
    case Part::kNamespaces:
    case Part::kStaged:  // opened by the staged tree (fs/push/staging_tree.h)
      break;
  }
  throw Error(ErrorKind::kInvalid, "Cannot open " + node.key + ": not a file");
}

std::optional<std::string> Tree::xattr(const Node& node, std::string_view name) {
  switch (part_of(node.kind)) {
    case Part::kImages:
      return images_->xattr(node, name);
    case Part::kRootfs:
      return RootfsView::xattr(node, *images_->rootfs_of(node), name);
    case Part::kStaged:
      return staging_->xattr(node, name);
    case Part::kNamespaces:
    case Part::kControl:
      break;
  }
  return std::nullopt;
}

std::vector<std::string> Tree::xattr_names(const Node& node) {
  switch (part_of(node.kind)) {
    case Part::kImages:
      return images_->xattr_names(node);
    case Part::kRootfs:
      return RootfsView::xattr_names(node, *images_->rootfs_of(node));
    case Part::kStaged:
      return staging_->xattr_names(node);
    case Part::kNamespaces:
    case Part::kControl:
      break;
  }
  return {};
}

std::string Tree::readlink(const Node& node) {
  switch (part_of(node.kind)) {
    case Part::kRootfs:
      return RootfsView::readlink(node, *images_->rootfs_of(node));
    case Part::kStaged:
      return staging_->readlink(node);
    case Part::kNamespaces:
    case Part::kImages:
    case Part::kControl:
      break;
  }
  throw Error(ErrorKind::kInvalid, "Cannot read link " + node.key + ": not a symlink");
}

std::shared_ptr<const MergedTree> Tree::image_rootfs(const std::string& registry,
                                                     const std::string& repository,
                                                     const std::string& digest) {
  return images_->image_rootfs(registry, repository, digest);
}

NodePtr Tree::control_node(const Node& dir, std::string_view name) {
  auto node = std::make_shared<Node>();
  node->kind = dir.kind == NodeKind::kControlDir ? NodeKind::kStatusFile : NodeKind::kControlDir;
  node->name = name;
  node->key = (dir.key == "/" ? "" : dir.key) + "/" + std::string(name);
  return node;
}

}  // namespace regfs::fs
