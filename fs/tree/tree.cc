#include "fs/tree/tree.h"

#include <sys/stat.h>

#include <algorithm>

#include "cache/layout.h"
#include "fs/tree/known_names.h"
#include "fs/tree/path.h"
#include "fs/tree/rootfs.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/reference.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr std::string_view kDigestPrefix = "sha256:";

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
      return S_ISDIR(rootfs_type);
    default:
      return false;
  }
}

bool Node::immutable() const {
  // Inside rootfs/ nodes are pinned to an image digest; rootfs/ under a tag is not.
  if (kind == NodeKind::kRootfs) return !rootfs_path.empty() || !is_tag_image();
  return kind == NodeKind::kBlob || kind == NodeKind::kLayoutFile ||
         (!reference.empty() && !is_tag_image());
}

mode_t Node::type_bits() const {
  if (kind == NodeKind::kRootfs || kind == NodeKind::kStaged) return rootfs_type;
  return is_dir() ? S_IFDIR : S_IFREG;
}

Tree::Tree(TreeOptions options, Source& source)
    : options_(std::move(options)),
      content_(source),
      rootfs_(std::make_shared<RootfsView>(source)),
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

NodePtr Tree::make_child(const Node& parent, NodeKind kind, std::string_view name,
                         std::string blob) {
  auto node = std::make_shared<Node>();
  node->kind = kind;
  node->name = name;
  node->key = parent.key + "/" + std::string(name);
  node->registry = parent.registry;
  node->path = parent.path;
  node->reference = kind == NodeKind::kImage ? std::string(name) : parent.reference;
  node->blob = std::move(blob);
  return node;
}

NodePtr Tree::lookup(const Node& dir, std::string_view name) {
  if (name.empty() || name == "." || name == "..") return nullptr;
  if (dir.key == "/" && name == kControlDirName) {
    auto node = std::make_shared<Node>();
    node->kind = NodeKind::kControlDir;
    node->name = name;
    node->key = "/" + std::string(name);
    return node;
  }
  if (dir.kind == NodeKind::kControlDir) {
    if (name != "status") return nullptr;
    auto node = std::make_shared<Node>();
    node->kind = NodeKind::kStatusFile;
    node->name = name;
    node->key = dir.key + "/status";
    return node;
  }
  switch (dir.kind) {
    case NodeKind::kRoot:
      return lookup_root(name);
    case NodeKind::kNamespace:
      return lookup_namespace(dir, name);
    case NodeKind::kStaged:
      return staging_->lookup(dir, name);
    case NodeKind::kRootfs:
      return RootfsView::lookup(dir, *rootfs_of(dir), name);
    default:
      return lookup_image_entry(dir, name);
  }
}

NodePtr Tree::lookup_root(std::string_view name) {
  if (!registry::looks_like_registry(name)) return nullptr;
  std::string canonical = registry::canonical_registry(name);
  return make_namespace(canonical, "", name, "/");
}

NodePtr Tree::lookup_image_entry(const Node& dir, std::string_view name) {
  switch (dir.kind) {
    case NodeKind::kImage:
      if (name == "oci-layout") return make_child(dir, NodeKind::kLayoutFile, name);
      if (name == "index.json") return make_child(dir, NodeKind::kIndexFile, name);
      if (name == "manifest.json") return make_child(dir, NodeKind::kManifestFile, name);
      if (name == "blobs") return make_child(dir, NodeKind::kBlobsDir, name);
      if (name == "config.json" && image_of(dir)->config) {
        return make_child(dir, NodeKind::kConfigFile, name);
      }
      if (name == "rootfs") {
        auto image = image_of(dir);
        if (!image->config) return nullptr;
        auto merged = rootfs_->tree(content_.registry(dir.registry), *image);
        return RootfsView::root_node(dir, image->digest, *merged);
      }
      return nullptr;
    case NodeKind::kBlobsDir:
      return name == "sha256" ? make_child(dir, NodeKind::kBlobsAlgDir, name) : nullptr;
    case NodeKind::kBlobsAlgDir: {
      std::string digest = std::string(kDigestPrefix) + std::string(name);
      if (!registry::is_valid_digest(digest) || !image_of(dir)->blobs.count(digest)) return nullptr;
      return make_child(dir, NodeKind::kBlob, name, digest);
    }
    default:
      return nullptr;
  }
}

std::vector<NodePtr> Tree::list(const Node& dir) {
  std::vector<NodePtr> entries;
  switch (dir.kind) {
    case NodeKind::kRoot: {
      std::set<std::string> names(options_.listed_registries.begin(),
                                  options_.listed_registries.end());
      names.insert(std::string(registry::kDockerHub));
      for (auto& name : content_.registries_in_use()) names.insert(name);
      for (auto& name : names) entries.push_back(make_namespace(name, "", name, "/"));
      return entries;
    }
    case NodeKind::kNamespace:
      entries = list_namespace(dir);
      staging_->add_to_listing(dir, &entries);
      return entries;
    case NodeKind::kStaged:
      return staging_->list(dir);
    case NodeKind::kImage:
      for (std::string_view name :
           {"blobs", "config.json", "index.json", "manifest.json", "oci-layout"}) {
        if (auto node = lookup_image_entry(dir, name)) entries.push_back(node);
      }
      return entries;
    case NodeKind::kBlobsDir:
      entries.push_back(make_child(dir, NodeKind::kBlobsAlgDir, "sha256"));
      return entries;
    case NodeKind::kControlDir:
      entries.push_back(lookup(dir, "status"));
      return entries;
    case NodeKind::kBlobsAlgDir:
      for (auto& [digest, _] : image_of(dir)->blobs) {
        entries.push_back(make_child(dir, NodeKind::kBlob, registry::digest_hex(digest), digest));
      }
      return entries;
    case NodeKind::kRootfs:
      return RootfsView::list(dir, *rootfs_of(dir));
    default:
      throw Error(ErrorKind::kInvalid, "Cannot list " + dir.key + ": not a directory");
  }
}

std::string Tree::digest_of(const Node& node) {
  if (!node.is_tag_image()) return node.reference;
  return content_.registry(node.registry).resolve_tag(node.path, node.reference).digest;
}

std::shared_ptr<const Image> Tree::image_of(const Node& node) {
  return image_at(node, digest_of(node));
}

std::shared_ptr<const MergedTree> Tree::rootfs_of(const Node& node) {
  return rootfs_->tree(content_.registry(node.registry), *image_at(node, node.blob));
}

std::shared_ptr<const MergedTree> Tree::image_rootfs(const std::string& registry,
                                                     const std::string& repository,
                                                     const std::string& digest) {
  Node node;
  node.registry = registry;
  node.path = repository;
  auto image = image_at(node, digest);
  if (!image->config) return nullptr;
  return rootfs_->tree(content_.registry(registry), *image);
}

std::shared_ptr<const Image> Tree::image_at(const Node& node, const std::string& digest) {
  std::string key = node.registry + "/" + node.path + "@" + digest;
  {
    std::lock_guard lock(mutex_);
    auto it = images_.find(key);
    if (it != images_.end()) {
      image_order_.touch(key);
      return it->second;
    }
  }
  auto image = load_image(content_.registry(node.registry), node.path, digest, options_.platform);
  std::lock_guard lock(mutex_);
  auto [it, added] = images_.emplace(key, image);
  if (added) {
    image_order_.put(key, 1);
    for (const auto& victim : image_order_.take_victims()) images_.erase(victim);
  }
  return it->second;
}

Attr Tree::attr(const Node& node) {
  if (node.kind == NodeKind::kStaged) return staging_->attr(node);
  if (node.kind == NodeKind::kRootfs) return RootfsView::attr(node, *rootfs_of(node));
  Attr attr;
  if (node.is_dir()) {
    attr.mode = S_IFDIR | 0555;
    attr.nlink = 2;
    return attr;
  }
  attr.mode = S_IFREG | 0444;
  switch (node.kind) {
    case NodeKind::kLayoutFile:
      attr.size = kOciLayoutFile.size();
      break;
    case NodeKind::kIndexFile:
      attr.size =
          layout_index_json(*image_of(node), node.is_tag_image() ? node.reference : "").size();
      break;
    case NodeKind::kManifestFile:
      attr.size = image_of(node)->manifest.size();
      break;
    case NodeKind::kConfigFile: {
      auto image = image_of(node);
      if (!image->config) throw Error(ErrorKind::kNotFound, "No config for this platform");
      attr.size = static_cast<uint64_t>(image->config->size);
      break;
    }
    case NodeKind::kBlob: {
      auto image = image_of(node);
      auto it = image->blobs.find(node.blob);
      if (it == image->blobs.end()) throw Error(ErrorKind::kNotFound, "No blob " + node.blob);
      attr.size = static_cast<uint64_t>(it->second.size);
      break;
    }
    default:
      break;
  }
  return attr;
}

OpenedFile Tree::open(const Node& node) {
  auto bytes = [](std::string s) {
    return OpenedFile{std::make_shared<const std::string>(std::move(s)), {}};
  };
  if (node.kind == NodeKind::kStatusFile) {
    return bytes(content_.status(options_.registry.empty() ? "all registries" : options_.registry,
                                 staging_->states()));
  }
  auto& reg = content_.registry(node.registry);
  switch (node.kind) {
    case NodeKind::kRootfs:
      return RootfsView::open(node, *rootfs_of(node));
    case NodeKind::kLayoutFile:
      return bytes(std::string(kOciLayoutFile));
    case NodeKind::kIndexFile:
      return bytes(layout_index_json(*image_of(node), node.is_tag_image() ? node.reference : ""));
    case NodeKind::kManifestFile:
      return bytes(image_of(node)->manifest);
    case NodeKind::kConfigFile: {
      auto image = image_of(node);
      if (!image->config) throw Error(ErrorKind::kNotFound, "No config for this platform");
      return OpenedFile{nullptr,
                        reg.open_blob(node.path, image->config->digest, image->config->size)};
    }
    case NodeKind::kBlob: {
      auto image = image_of(node);
      auto it = image->blobs.find(node.blob);
      if (it == image->blobs.end()) throw Error(ErrorKind::kNotFound, "No blob " + node.blob);
      // Manifests come from the manifests endpoint (not every registry serves
      // them as blobs), verified and kept whole: served from memory, so an
      // eviction of the cached copy cannot send the read to the blob endpoint.
      if (registry::is_index_media_type(it->second.media_type) ||
          registry::is_manifest_media_type(it->second.media_type)) {
        return bytes(reg.manifest(node.path, node.blob));
      }
      return OpenedFile{nullptr, reg.open_blob(node.path, node.blob, it->second.size)};
    }
    default:
      throw Error(ErrorKind::kInvalid, "Cannot open " + node.key + ": not a file");
  }
}

std::optional<std::string> Tree::xattr(const Node& node, std::string_view name) {
  if (node.kind == NodeKind::kStaged) return staging_->xattr(node, name);
  if (node.kind == NodeKind::kRootfs) return RootfsView::xattr(node, *rootfs_of(node), name);
  if (node.kind != NodeKind::kImage && node.kind != NodeKind::kManifestFile) return std::nullopt;
  if (name == "user.regfs.digest") return image_of(node)->digest;
  if (name == "user.regfs.mediaType") return image_of(node)->media_type;
  return std::nullopt;
}

std::vector<std::string> Tree::xattr_names(const Node& node) {
  if (node.kind == NodeKind::kStaged) return staging_->xattr_names(node);
  if (node.kind == NodeKind::kRootfs) return RootfsView::xattr_names(node, *rootfs_of(node));
  if (node.kind != NodeKind::kImage && node.kind != NodeKind::kManifestFile) return {};
  return {"user.regfs.digest", "user.regfs.mediaType"};
}

std::string Tree::readlink(const Node& node) {
  if (node.kind == NodeKind::kStaged) return staging_->readlink(node);
  if (node.kind != NodeKind::kRootfs) {
    throw Error(ErrorKind::kInvalid, "Cannot read link " + node.key + ": not a symlink");
  }
  return RootfsView::readlink(node, *rootfs_of(node));
}

}  // namespace regfs::fs
