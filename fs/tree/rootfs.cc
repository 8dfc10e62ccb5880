#include "fs/tree/rootfs.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>

#include "fs/tree/path.h"
#include "registry/deadline.h"
#include "registry/digest.h"
#include "registry/error.h"
#include "registry/log.h"
#include "registry/manifest.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;
namespace media_type = registry::media_type;

namespace {

// Layers indexed at once for one image: downloads overlap, and decompression
// uses the cores there are without starving the FUSE threads.
constexpr size_t kMaxParallelLayers = 3;
// Merged trees kept in memory (they are cheap to rebuild from the indexes).
constexpr size_t kMaxTrees = 16;

cache::Compression compression_of(const std::string& type) {
  static const std::map<std::string_view, cache::Compression> kTypes = {
      {media_type::kOciLayerTar, cache::Compression::kNone},
      {media_type::kOciLayerGzip, cache::Compression::kGzip},
      {media_type::kOciLayerZstd, cache::Compression::kZstd},
      {media_type::kDockerLayerGzip, cache::Compression::kGzip},
      {"application/vnd.docker.image.rootfs.diff.tar", cache::Compression::kNone},
      {"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", cache::Compression::kGzip},
      {"application/vnd.oci.image.layer.nondistributable.v1.tar", cache::Compression::kNone},
      {"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", cache::Compression::kGzip},
      {"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", cache::Compression::kZstd},
  };
  auto it = kTypes.find(type);
  if (it == kTypes.end()) {
    throw Error(ErrorKind::kUnsupported, "Cannot unpack layer media type " + type);
  }
  return it->second;
}

std::vector<std::string> read_diff_ids(RegistryContent& content, const Image& image) {
  const auto& config = *image.config;
  auto bytes = content.small_blob(image.repository, config.digest, config.size);
  std::vector<std::string> diff_ids;
  try {
    auto json = nlohmann::json::parse(bytes);
    for (const auto& id : json.at("rootfs").at("diff_ids")) {
      diff_ids.push_back(id.get<std::string>());
      if (!registry::is_valid_digest(diff_ids.back())) throw std::runtime_error("bad diff_id");
    }
  } catch (const std::exception& e) {
    throw Error(ErrorKind::kIo,
                "Cannot read diff_ids of config " + config.digest + ": " + e.what());
  }
  if (diff_ids.size() != image.layers.size()) {
    throw Error(ErrorKind::kIntegrity, "Cannot use config " + config.digest + ": " +
                                           std::to_string(diff_ids.size()) + " diff_ids for " +
                                           std::to_string(image.layers.size()) + " layers");
  }
  return diff_ids;
}

uint32_t index_of(const Node& node, const MergedTree& tree) {
  auto index = tree.find(node.rootfs_path);
  if (!index) throw Error(ErrorKind::kNotFound, "No " + node.rootfs_path + " in the rootfs");
  return *index;
}

NodePtr make_node(const Node& like, const MergedTree& tree, uint32_t index, std::string_view name,
                  std::string rootfs_path) {
  auto node = std::make_shared<Node>();
  node->kind = NodeKind::kRootfs;
  node->name = name;
  node->registry = like.registry;
  node->path = like.path;
  node->reference = like.reference;
  node->blob = like.blob;
  node->rootfs_path = std::move(rootfs_path);
  node->rootfs_type = tree.node(index).type_bits();
  node->key = "rootfs:" + like.registry + "/" + like.path + "@" + like.blob + "#" +
              std::to_string(tree.node(index).inode);
  return node;
}

const MergedNode& node_of(const Node& node, const MergedTree& tree) {
  return tree.node(index_of(node, tree));
}

}  // namespace

RootfsView::RootfsView(Content& content)
    : layers_(content.options().cache_dir / "layers",
              cache::FileHooks{[&content](const auto& p) { content.cache().track_file(p); },
                               [&content](const auto& p) { content.cache().pin_file(p); },
                               [&content](const auto& p) { content.cache().unpin_file(p); }}) {}

std::shared_ptr<const MergedTree> RootfsView::tree(RegistryContent& content, const Image& image) {
  std::string key = content.name() + "/" + image.repository + "@" + image.digest;
  std::promise<std::shared_ptr<const MergedTree>> promise;
  std::shared_future<std::shared_ptr<const MergedTree>> work;
  bool leader = false;
  {
    std::lock_guard lock(mutex_);
    if (auto it = trees_.find(key); it != trees_.end()) return it->second;
    if (auto it = building_.find(key); it != building_.end()) {
      work = it->second;
    } else {
      work = promise.get_future().share();
      building_.emplace(key, work);
      leader = true;
    }
  }
  if (leader) {
    std::shared_ptr<const MergedTree> built;
    try {
      built = build(content, image);
      promise.set_value(built);
    } catch (const std::exception& e) {
      LOG(kError) << "Cannot show the rootfs of " << key << ": " << e.what();
      promise.set_exception(std::current_exception());
    } catch (...) {
      promise.set_exception(std::current_exception());
    }
    std::lock_guard lock(mutex_);
    building_.erase(key);
    if (built) {
      trees_[key] = built;
      order_.push_back(key);
      while (order_.size() > kMaxTrees) {
        trees_.erase(order_.front());
        order_.pop_front();
      }
    }
  }
  registry::wait_within_deadline(work, "show the rootfs of " + key + " (it is being built)");
  return work.get();
}

std::shared_ptr<const MergedTree> RootfsView::build(RegistryContent& content, const Image& image) {
  std::string where = content.name() + "/" + image.repository + "@" + image.digest;
  if (!image.config) throw Error(ErrorKind::kNotFound, "No image for this platform in " + where);
  const auto& config_type = image.config->media_type;
  if (config_type != media_type::kOciConfig && config_type != media_type::kDockerConfig) {
    throw Error(ErrorKind::kUnsupported, "Cannot show the rootfs of " + where + ": config type " +
                                             config_type + " is not a container image's");
  }
  auto diff_ids = read_diff_ids(content, image);
  std::vector<cache::Compression> compressions;
  for (const auto& layer : image.layers) compressions.push_back(compression_of(layer.media_type));

  size_t count = image.layers.size();
  std::vector<std::shared_ptr<const cache::LayerIndex>> indexes(count);
  std::atomic<size_t> next{0};
  // The helper threads wait for blobs within the operation's deadline.
  const auto deadline = registry::current_deadline();
  auto work = [&] {
    registry::ScopedDeadline within(deadline);
    for (size_t i; (i = next++) < count;) {
      const auto& layer = image.layers[i];
      try {
        indexes[i] = layers_.get(diff_ids[i], compressions[i], [&] {
          return content.blob(image.repository, layer.digest, layer.size);
        });
      } catch (const Error& e) {
        next = count;  // stop the other workers
        if (e.kind() != ErrorKind::kInvalid) throw;
        throw Error(ErrorKind::kIo, "Cannot index layer " + layer.digest + ": " + e.what());
      }
    }
  };
  std::vector<std::future<void>> workers;
  for (size_t w = 0; w < std::min(count, kMaxParallelLayers); ++w) {
    workers.push_back(std::async(std::launch::async, work));
  }
  std::exception_ptr error;
  for (auto& worker : workers) {
    try {
      worker.get();
    } catch (...) {
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
  auto tree = std::make_shared<const MergedTree>(std::move(indexes));
  LOG(kInfo) << "Merged the rootfs of " << where << ": " << count << " layers, " << tree->size()
             << " entries";
  return tree;
}

NodePtr RootfsView::root_node(const Node& image_dir, const std::string& digest,
                              const MergedTree& tree) {
  Node like = image_dir;
  like.blob = digest;
  auto node = make_node(like, tree, MergedTree::kRoot, "rootfs", "");
  // Under a tag the rootfs is the tag's image now: its own inode per image dir.
  std::const_pointer_cast<Node>(node)->key = image_dir.key + "/rootfs@" + digest;
  return node;
}

NodePtr RootfsView::lookup(const Node& dir, const MergedTree& tree, std::string_view name) {
  auto child = tree.child(index_of(dir, tree), name);
  if (!child) return nullptr;
  return make_node(dir, tree, *child, name, join(dir.rootfs_path, name));
}

std::vector<NodePtr> RootfsView::list(const Node& dir, const MergedTree& tree) {
  const auto& node = node_of(dir, tree);
  if (!node.is_dir()) throw Error(ErrorKind::kInvalid, "Cannot list " + dir.rootfs_path);
  std::vector<NodePtr> entries;
  entries.reserve(node.children.size());
  for (const auto& [name, child] : node.children) {
    entries.push_back(make_node(dir, tree, child, name, join(dir.rootfs_path, name)));
  }
  return entries;
}

Attr RootfsView::attr(const Node& node, const MergedTree& tree) {
  const auto& n = node_of(node, tree);
  Attr attr;
  attr.own_metadata = true;
  attr.nlink = n.nlink;
  attr.mode = n.type_bits() | (n.entry ? n.entry->mode : 0755);
  // A symlink is 0777 on disk whatever its header says (umoci, containerd).
  if (n.entry && n.entry->type == cache::EntryType::kSymlink) attr.mode = S_IFLNK | 0777;
  if (!n.entry) return attr;  // a directory only implied by paths: root's, time 0
  const auto& e = *n.entry;
  attr.uid = e.uid;
  attr.gid = e.gid;
  attr.mtime = e.mtime;
  attr.mtime_nsec = e.mtime_nsec;
  if (e.type == cache::EntryType::kFile) attr.size = e.size;
  if (e.type == cache::EntryType::kSymlink) attr.size = e.link.size();
  if (e.type == cache::EntryType::kChar || e.type == cache::EntryType::kBlock) {
    attr.rdev = makedev(e.dev_major, e.dev_minor);
  }
  return attr;
}

OpenedFile RootfsView::open(const Node& node, const MergedTree& tree) {
  const auto& n = node_of(node, tree);
  if (!n.entry || n.entry->type != cache::EntryType::kFile) {
    throw Error(ErrorKind::kInvalid, "Cannot open " + node.rootfs_path + ": not a regular file");
  }
  OpenedFile file;
  file.file = tree.layer(n.layer).tar;
  file.offset = n.entry->offset;
  file.length = n.entry->size;
  if (n.entry->sparse) file.sparse = std::make_shared<const cache::TarEntry>(*n.entry);
  return file;
}

std::string RootfsView::readlink(const Node& node, const MergedTree& tree) {
  const auto& n = node_of(node, tree);
  if (!n.entry || n.entry->type != cache::EntryType::kSymlink) {
    throw Error(ErrorKind::kInvalid, "Cannot read link " + node.rootfs_path + ": not a symlink");
  }
  return n.entry->link;
}

std::optional<std::string> RootfsView::xattr(const Node& node, const MergedTree& tree,
                                             std::string_view name) {
  const auto& n = node_of(node, tree);
  if (!n.entry) return std::nullopt;
  for (const auto& [key, value] : n.entry->xattrs) {
    if (key == name) return value;
  }
  return std::nullopt;
}

std::vector<std::string> RootfsView::xattr_names(const Node& node, const MergedTree& tree) {
  const auto& n = node_of(node, tree);
  std::vector<std::string> names;
  if (n.entry) {
    for (const auto& [key, _] : n.entry->xattrs) names.push_back(key);
  }
  return names;
}

}  // namespace regfs::fs
