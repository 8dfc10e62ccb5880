// <image>/rootfs/ (SPEC §5): the merged root filesystem of an image's layers.
//
// The first lookup of an image's rootfs starts building its MergedTree on
// the view's own worker pool, one build per image however many requests
// need it (registry::SharedFlight): the config's diff_ids are read, and
// every layer not indexed yet is fetched whole (RegistrySource::blob) and
// indexed by the LayerStore (decompressed once, diff_id checked, entry
// index and access points kept in the cache, see cache/layer_store.h), up to
// kMaxParallelLayers layers of an image at once; the tree is then merged in
// memory from the indexes and kept per image digest. A FUSE request waits for
// it within its deadline (--request-timeout) and fails with ETIMEDOUT when
// that passes, while the build goes on: a later request gets its result.
// Source::merges() shows each layer's progress to `regfs status`. A file is
// read through its layer's LayerData (cache/layer_data.h): a pread of an
// uncompressed layer, or decompression from the nearest access point of a
// compressed one (a sparse file's: one read per data run it covers, holes as
// zeros). An eStargz or zstd:chunked layer not indexed yet is read through
// its table of contents instead (fs/tree/lazy_layers.h): no download at the
// merge, its files' chunks fetched and verified when opened.
//
// Nodes of the view carry the image's manifest digest (Node::blob), pinned
// when `rootfs` was looked up, and their path inside the rootfs, so they never
// change under the kernel and can be cached for long. Their key is the
// hardlink group (image digest + inode identity), not the path, so the paths
// of one hardlink share one inode number.
#pragma once

#include <atomic>
#include <cstddef>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cache/layer_store.h"
#include "fs/source/source.h"
#include "fs/source/worker_pool.h"
#include "fs/tree/image.h"
#include "fs/tree/lazy_layers.h"
#include "fs/tree/merged_tree.h"
#include "fs/tree/tree.h"
#include "registry/core/bounded_map.h"
#include "registry/core/single_flight.h"

namespace regfs::fs {

class RootfsView {
 public:
  // Layer indexes are kept under `source`'s cache, which must outlive the view.
  explicit RootfsView(Source& source);
  // Stops the builds (a layer being fetched or indexed is finished first).
  ~RootfsView();

  // The merged tree of `image` (its selected platform), built on first use
  // in the background and waited for within the thread's deadline.
  // Throws Error: kTimeout (the deadline passed; the build goes on),
  // kNotFound (no config for this platform), kUnsupported (not a container
  // image, or a layer media type regfs cannot read), kIntegrity (a layer
  // does not match its diff_id), and what fetching throws.
  std::shared_ptr<const MergedTree> tree(RegistrySource& content, const Image& image);

  // The `rootfs` directory of `image_dir`, whose image has manifest `digest`.
  static NodePtr root_node(const Node& image_dir, const std::string& digest,
                           const MergedTree& tree);
  // Tree operations on rootfs nodes; `tree` is the merged tree of the node's image.
  static NodePtr lookup(const Node& dir, const MergedTree& tree, std::string_view name);
  static std::vector<NodePtr> list(const Node& dir, const MergedTree& tree);
  static Attr attr(const Node& node, const MergedTree& tree);
  static OpenedFile open(const Node& node, const MergedTree& tree);
  static std::string readlink(const Node& node, const MergedTree& tree);
  static std::optional<std::string> xattr(const Node& node, const MergedTree& tree,
                                          std::string_view name);
  static std::vector<std::string> xattr_names(const Node& node, const MergedTree& tree);

 private:
  class LayerJobs;
  // Builds the tree of `image` (on a pool thread) and keeps it.
  std::shared_ptr<const MergedTree> build(RegistrySource& content, const Image& image,
                                          const std::string& key);
  // Indexes every layer of `image`: this thread and helpers on pool_.
  std::vector<std::shared_ptr<const cache::LayerIndex>> index_layers(RegistrySource& content,
                                                                     const Image& image,
                                                                     const std::string& where);

  Source& content_;
  cache::LayerStore layers_;
  LazyLayers lazy_;                    // eStargz and zstd:chunked layers, read through their tables
  std::atomic<bool> stopping_{false};  // set at unmount: no layer is started any more
  std::mutex mutex_;                   // guards trees_; taken before builds_' own
  // Merged trees kept, by registry/repo@digest, the least recently used
  // forgotten first (they are cheap to rebuild from the indexes).
  registry::BoundedMap<std::string, std::shared_ptr<const MergedTree>> trees_;
  registry::SharedFlight<std::shared_ptr<const MergedTree>> builds_;  // by the same keys
  WorkerPool pool_;  // builds and their layers; last, so joined first
};

}  // namespace regfs::fs
