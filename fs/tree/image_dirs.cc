#include "fs/tree/image_dirs.h"

#include <sys/stat.h>

#include <cstdlib>
#include <string>
#include <utility>

#include "fs/tree/rootfs.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;

namespace {
constexpr std::string_view kDigestPrefix = "sha256:";

// 1..999999999 from the first hex digits of `digest` (sha256:<hex>): the
// same for the same image, almost surely different for another one.
uint32_t version_nsec_of(const std::string& digest) {
  auto hex = registry::digest_hex(digest);
  uint64_t value = std::strtoull(std::string(hex.substr(0, 12)).c_str(), nullptr, 16);
  return static_cast<uint32_t>(value % 999'999'999) + 1;
}
}  // namespace

ImageDirs::ImageDirs(Source& content, registry::Platform platform)
    : content_(content),
      platform_(std::move(platform)),
      rootfs_(std::make_shared<RootfsView>(content)) {}

ImageDirs::~ImageDirs() = default;

NodePtr ImageDirs::image_node(const Node& repository_dir, std::string_view reference) {
  return make_child(repository_dir, NodeKind::kImage, reference);
}

NodePtr ImageDirs::make_child(const Node& parent, NodeKind kind, std::string_view name,
                              std::string blob) {
  auto node = std::make_shared<Node>();
  node->kind = kind;
  node->name = name;
  node->key = parent.key + "/" + std::string(name);
  node->registry = parent.registry;
  node->path = parent.path;
  node->reference = kind == NodeKind::kImage ? std::string(name) : parent.reference;
  if (kind == NodeKind::kBlob) node->at = Node::BlobAt{std::move(blob)};
  return node;
}

std::string ImageDirs::digest_of(const Node& node) {
  if (!node.is_tag_image()) return node.reference;
  return content_.registry(node.registry).resolve_tag(node.path, node.reference).digest;
}

std::shared_ptr<const Image> ImageDirs::image_of(const Node& node) {
  return image_at(node.registry, node.path, digest_of(node));
}

std::shared_ptr<const MergedTree> ImageDirs::rootfs_of(const Node& node) {
  return rootfs_->tree(content_.registry(node.registry),
                       *image_at(node.registry, node.path, node.rootfs().image_digest));
}

std::shared_ptr<const MergedTree> ImageDirs::image_rootfs(const std::string& registry,
                                                          const std::string& repository,
                                                          const std::string& digest) {
  auto image = image_at(registry, repository, digest);
  if (!image->config) return nullptr;
  return rootfs_->tree(content_.registry(registry), *image);
}

std::shared_ptr<const Image> ImageDirs::image_at(const std::string& registry,
                                                 const std::string& repository,
                                                 const std::string& digest) {
  std::string key = registry + "/" + repository + "@" + digest;
  {
    std::lock_guard lock(mutex_);
    if (auto* kept = images_.find(key)) return *kept;
  }
  auto image = load_image(content_.registry(registry), repository, digest, platform_);
  std::lock_guard lock(mutex_);
  if (auto* kept = images_.find(key)) return *kept;  // loaded meanwhile by another caller
  return images_.put(key, std::move(image));
}

NodePtr ImageDirs::lookup(const Node& dir, std::string_view name) {
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

std::vector<NodePtr> ImageDirs::list(const Node& dir) {
  std::vector<NodePtr> entries;
  switch (dir.kind) {
    case NodeKind::kImage:
      for (std::string_view name :
           {"blobs", "config.json", "index.json", "manifest.json", "oci-layout"}) {
        if (auto node = lookup(dir, name)) entries.push_back(node);
      }
      return entries;
    case NodeKind::kBlobsDir:
      entries.push_back(make_child(dir, NodeKind::kBlobsAlgDir, "sha256"));
      return entries;
    case NodeKind::kBlobsAlgDir:
      for (auto& [digest, _] : image_of(dir)->blobs) {
        entries.push_back(make_child(dir, NodeKind::kBlob, registry::digest_hex(digest), digest));
      }
      return entries;
    default:
      throw Error(ErrorKind::kInvalid, "Cannot list " + dir.key + ": not a directory");
  }
}

Attr ImageDirs::attr(const Node& node) {
  Attr attr;
  if (node.is_dir()) {
    attr.mode = S_IFDIR | 0555;
    attr.nlink = 2;
    return attr;
  }
  attr.mode = S_IFREG | 0444;
  if (node.is_tag_image() &&
      (node.kind == NodeKind::kIndexFile || node.kind == NodeKind::kManifestFile ||
       node.kind == NodeKind::kConfigFile)) {
    attr.version_nsec = version_nsec_of(image_of(node)->digest);
  }
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
      auto it = image->blobs.find(node.blob().digest);
      if (it == image->blobs.end()) {
        throw Error(ErrorKind::kNotFound, "No blob " + node.blob().digest);
      }
      attr.size = static_cast<uint64_t>(it->second.size);
      break;
    }
    default:
      break;
  }
  return attr;
}

OpenedFile ImageDirs::open(const Node& node) {
  auto bytes = [](std::string s) {
    return OpenedFile{std::make_shared<const std::string>(std::move(s)), {}};
  };
  auto& reg = content_.registry(node.registry);
  switch (node.kind) {
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
      const auto& digest = node.blob().digest;
      auto it = image->blobs.find(digest);
      if (it == image->blobs.end()) throw Error(ErrorKind::kNotFound, "No blob " + digest);
      // Manifests come from the manifests endpoint (not every registry serves
      // them as blobs), verified and kept whole: served from memory, so an
      // eviction of the cached copy cannot send the read to the blob endpoint.
      if (registry::is_index_media_type(it->second.media_type) ||
          registry::is_manifest_media_type(it->second.media_type)) {
        return bytes(reg.manifest(node.path, digest));
      }
      return OpenedFile{nullptr, reg.open_blob(node.path, digest, it->second.size)};
    }
    default:
      throw Error(ErrorKind::kInvalid, "Cannot open " + node.key + ": not a file");
  }
}

std::optional<std::string> ImageDirs::xattr(const Node& node, std::string_view name) {
  if (node.kind != NodeKind::kImage && node.kind != NodeKind::kManifestFile) return std::nullopt;
  if (name == "user.regfs.digest") return image_of(node)->digest;
  if (name == "user.regfs.mediaType") return image_of(node)->media_type;
  return std::nullopt;
}

std::vector<std::string> ImageDirs::xattr_names(const Node& node) {
  if (node.kind != NodeKind::kImage && node.kind != NodeKind::kManifestFile) return {};
  return {"user.regfs.digest", "user.regfs.mediaType"};
}

}  // namespace regfs::fs
