#include "fs/tree/rootfs.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <nlohmann/json.hpp>

#include "cache/layout.h"
#include "cache/lazy_layer.h"
#include "fs/tree/path.h"
#include "registry/core/deadline.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/manifest.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;
namespace media_type = registry::media_type;

namespace {

// Layers indexed at once for one image: downloads overlap, and decompression
// uses the cores there are without starving the FUSE threads.
constexpr size_t kMaxParallelLayers = 3;
// Threads of the builds' pool: a build's own and its helpers, and room for a
// second image's build to go on meanwhile.
constexpr size_t kBuildThreads = 4;
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

std::vector<std::string> read_diff_ids(RegistrySource& content, const Image& image) {
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
  auto index = tree.find(node.rootfs().path);
  if (!index) throw Error(ErrorKind::kNotFound, "No " + node.rootfs().path + " in the rootfs");
  return *index;
}

NodePtr make_node(const Node& like, const std::string& image_digest, const MergedTree& tree,
                  uint32_t index, std::string_view name, std::string rootfs_path) {
  auto node = std::make_shared<Node>();
  node->kind = NodeKind::kRootfs;
  node->name = name;
  node->registry = like.registry;
  node->path = like.path;
  node->reference = like.reference;
  node->at = Node::RootfsAt{image_digest, std::move(rootfs_path), tree.node(index).type_bits()};
  node->key = "rootfs:" + like.registry + "/" + like.path + "@" + image_digest + "#" +
              std::to_string(tree.node(index).inode);
  return node;
}

// The digest of a complete blob from its path in the blob store.
std::string blob_digest(const std::filesystem::path& blob) {
  return "sha256:" + blob.filename().string();
}

const MergedNode& node_of(const Node& node, const MergedTree& tree) {
  return tree.node(index_of(node, tree));
}

}  // namespace

RootfsView::RootfsView(Source& content)
    : content_(content),
      layers_(content.cache().layout().layers(),
              cache::FileHooks{
                  [&content](const auto& p) { content.cache().track_file(p); },
                  [&content](const auto& p) { content.cache().pin_file(p); },
                  [&content](const auto& p) { content.cache().unpin_file(p); },
                  [&content](const auto& p) { content.cache().hold_complete(blob_digest(p)); },
                  [&content](const auto& p) { content.cache().release_complete(blob_digest(p)); }}),
      lazy_(content.cache()),
      trees_(kMaxTrees),
      pool_(kBuildThreads) {}

RootfsView::~RootfsView() { stopping_ = true; }

std::shared_ptr<const MergedTree> RootfsView::tree(RegistrySource& content, const Image& image) {
  std::string key = content.name() + "/" + image.repository + "@" + image.digest;
  std::shared_future<std::shared_ptr<const MergedTree>> work;
  {
    // Held while joining or starting a build, so that a build that just
    // kept its tree is found here, never started again.
    std::lock_guard lock(mutex_);
    if (auto* tree = trees_.find(key)) return *tree;
    auto copy = std::make_shared<const Image>(image);
    work =
        builds_.run(pool_, key, [this, &content, copy, key] { return build(content, *copy, key); });
  }
  registry::wait_within_deadline(
      work, "show the rootfs of " + key + ": its layers are still being fetched and merged");
  return work.get();
}

// The layers of one build still to index, taken in order by the build's
// thread and its helpers; shared with the helpers, which may start after
// the build is over (and then find nothing left).
class RootfsView::LayerJobs {
 public:
  explicit LayerJobs(size_t count) : count_(count), indexes_(count) {}

  // Layer `i` to index next, or nullopt: none left, or a layer failed.
  std::optional<size_t> claim() {
    std::lock_guard lock(mutex_);
    if (stopped_ || next_ >= count_) return std::nullopt;
    ++running_;
    return next_++;
  }
  void finish(size_t i, std::shared_ptr<const cache::LayerIndex> index, std::exception_ptr error) {
    std::lock_guard lock(mutex_);
    --running_;
    indexes_[i] = std::move(index);
    if (error && !error_) error_ = error;
    if (error) stopped_ = true;
    done_.notify_all();
  }
  // Waits for the layers being indexed; throws the first error.
  std::vector<std::shared_ptr<const cache::LayerIndex>> wait() {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return (stopped_ || next_ >= count_) && running_ == 0; });
    if (error_) std::rethrow_exception(error_);
    return indexes_;
  }

 private:
  const size_t count_;
  std::mutex mutex_;  // guards the members below
  std::condition_variable done_;
  size_t next_ = 0;
  size_t running_ = 0;
  bool stopped_ = false;
  std::exception_ptr error_;
  std::vector<std::shared_ptr<const cache::LayerIndex>> indexes_;
};

std::shared_ptr<const MergedTree> RootfsView::build(RegistrySource& content, const Image& image,
                                                    const std::string& key) {
  std::shared_ptr<const MergedTree> tree;
  try {
    if (stopping_) throw Error(ErrorKind::kInterrupted, "Cannot merge layers: unmounting");
    if (!image.config) throw Error(ErrorKind::kNotFound, "No image for this platform in " + key);
    const auto& config_type = image.config->media_type;
    if (config_type != media_type::kOciConfig && config_type != media_type::kDockerConfig) {
      throw Error(ErrorKind::kUnsupported, "Cannot show the rootfs of " + key + ": config type " +
                                               config_type + " is not a container image's");
    }
    tree = std::make_shared<const MergedTree>(index_layers(content, image, key));
  } catch (const std::exception& e) {
    LOG(kError) << "Cannot show the rootfs of " << key << ": " << e.what();
    throw;
  }
  LOG(kInfo) << "Merged the rootfs of " << key << ": " << image.layers.size() << " layers, "
             << tree->size() << " entries";
  std::lock_guard lock(mutex_);
  trees_.put(key, tree);
  return tree;
}

std::vector<std::shared_ptr<const cache::LayerIndex>> RootfsView::index_layers(
    RegistrySource& content, const Image& image, const std::string& where) {
  auto diff_ids = read_diff_ids(content, image);
  std::vector<cache::Compression> compressions;
  std::vector<std::pair<std::string, uint64_t>> blobs;
  for (const auto& layer : image.layers) {
    compressions.push_back(compression_of(layer.media_type));
    blobs.emplace_back(layer.digest, static_cast<uint64_t>(layer.size));
  }
  size_t count = image.layers.size();
  auto merge = content_.merges().begin(where, blobs);
  struct EndMerge {
    MergeProgress& merges;
    const MergeProgress::Merge* merge;
    ~EndMerge() { merges.end(merge); }
  } end_merge{content_.merges(), merge.get()};
  auto jobs = std::make_shared<LayerJobs>(count);
  // What a helper needs outlives this call: the helper may start after it.
  auto shared_image = std::make_shared<const Image>(image);
  auto work = [this, &content, jobs, merge, shared_image, diff_ids, compressions] {
    while (auto i = jobs->claim()) {
      const auto& layer = shared_image->layers[*i];
      std::shared_ptr<const cache::LayerIndex> index;
      std::exception_ptr error;
      try {
        if (stopping_) throw Error(ErrorKind::kInterrupted, "Cannot index layers: unmounting");
        index = layers_.find(diff_ids[*i]);
        if (!index) index = lazy_.open(content, shared_image->repository, layer, diff_ids[*i]);
        if (!index) {
          // Open (so held in the cache, whatever --cache-size says) until indexed.
          std::shared_ptr<BlobReader> whole;
          index = layers_.get(
              diff_ids[*i], compressions[*i],
              [&] {
                auto path = content.blob(
                    shared_image->repository, layer.digest, layer.size, [&](const auto& reader) {
                      whole = reader;
                      merge->fetching(*i, [reader] { return reader->present_bytes(); });
                    });
                merge->indexing(*i);
                return path;
              },
              merge->entries(*i));
        }
        merge->done(*i, index->entries.size());
      } catch (const Error& e) {
        merge->failed(*i);
        error = e.kind() == ErrorKind::kInvalid
                    ? std::make_exception_ptr(Error(
                          ErrorKind::kIo, "Cannot index layer " + layer.digest + ": " + e.what()))
                    : std::current_exception();
      } catch (...) {
        merge->failed(*i);
        error = std::current_exception();
      }
      jobs->finish(*i, std::move(index), error);
    }
  };
  for (size_t w = 1; w < std::min(count, kMaxParallelLayers); ++w) pool_.submit(work);
  work();
  return jobs->wait();
}

NodePtr RootfsView::root_node(const Node& image_dir, const std::string& digest,
                              const MergedTree& tree) {
  auto node = make_node(image_dir, digest, tree, MergedTree::kRoot, "rootfs", "");
  // Under a tag the rootfs is the tag's image now: its own inode per image dir.
  std::const_pointer_cast<Node>(node)->key = image_dir.key + "/rootfs@" + digest;
  return node;
}

NodePtr RootfsView::lookup(const Node& dir, const MergedTree& tree, std::string_view name) {
  auto child = tree.child(index_of(dir, tree), name);
  if (!child) return nullptr;
  const auto& at = dir.rootfs();
  return make_node(dir, at.image_digest, tree, *child, name, join(at.path, name));
}

std::vector<NodePtr> RootfsView::list(const Node& dir, const MergedTree& tree) {
  const auto& node = node_of(dir, tree);
  const auto& at = dir.rootfs();
  if (!node.is_dir()) throw Error(ErrorKind::kInvalid, "Cannot list " + at.path);
  std::vector<NodePtr> entries;
  entries.reserve(node.children.size());
  for (const auto& [name, child] : node.children) {
    entries.push_back(make_node(dir, at.image_digest, tree, child, name, join(at.path, name)));
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
    throw Error(ErrorKind::kInvalid, "Cannot open " + node.rootfs().path + ": not a regular file");
  }
  OpenedFile file;
  if (const auto& lazy = tree.layer(n.layer).lazy) {
    // Its chunks are fetched and verified as READs need them.
    auto index = static_cast<size_t>(n.entry - tree.layer(n.layer).entries.data());
    file.layer = lazy->open_file(index, n.entry->size);
    file.entry = std::make_shared<const cache::TarEntry>(*n.entry);
    return file;
  }
  file.layer = tree.layer(n.layer).data;
  file.entry = std::make_shared<const cache::TarEntry>(*n.entry);
  return file;
}

std::string RootfsView::readlink(const Node& node, const MergedTree& tree) {
  const auto& n = node_of(node, tree);
  if (!n.entry || n.entry->type != cache::EntryType::kSymlink) {
    throw Error(ErrorKind::kInvalid, "Cannot read link " + node.rootfs().path + ": not a symlink");
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
