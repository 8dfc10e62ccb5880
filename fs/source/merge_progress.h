// The merges of rootfs/ running now, for `regfs status`: for each image
// whose merged tree is being built (fs/rootfs.h), each layer's state, bytes
// of its blob fetched of its size, and tar entries indexed so far. The
// builder updates a Merge as it goes (atomics and one short lock, nothing
// slow); status reads a snapshot. A Merge leaves the status when the builder
// ends it, or when its last owner drops it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace regfs::fs {

class MergeProgress {
 public:
  enum class LayerState { kQueued, kFetching, kIndexing, kDone, kFailed };

  struct LayerInfo {
    std::string digest;  // the layer blob's (compressed) digest
    uint64_t size = 0;   // its size in bytes, as the manifest says
    uint64_t fetched = 0;
    uint64_t entries = 0;  // tar entries indexed so far
    LayerState state = LayerState::kQueued;
  };
  struct ImageInfo {
    std::string image;  // registry/repository@digest
    std::chrono::steady_clock::time_point started;
    std::vector<LayerInfo> layers;
  };

  // One image's merge, updated by the threads that build it.
  class Merge {
   public:
    Merge(std::string image, const std::vector<std::pair<std::string, uint64_t>>& layers);
    // Layer `i`'s blob is being fetched; `fetched_bytes()` says how much is
    // here (called by status, under a lock: it must be quick).
    void fetching(size_t i, std::function<uint64_t()> fetched_bytes);
    void indexing(size_t i);
    void done(size_t i, uint64_t entries);
    void failed(size_t i);
    // Counter of layer `i`'s entries, bumped by the indexer.
    std::atomic<uint64_t>* entries(size_t i) { return &entries_[i]; }
    ImageInfo snapshot() const;

   private:
    const std::string image_;
    const std::chrono::steady_clock::time_point started_;
    std::unique_ptr<std::atomic<uint64_t>[]> entries_;
    mutable std::mutex mutex_;  // guards layers_ and fetched_
    std::vector<LayerInfo> layers_;
    std::vector<std::function<uint64_t()>> fetched_;
  };

  // Starts showing a merge of `image` (registry/repository@digest) whose
  // layers are (digest, size) pairs; shown until end() or while it lives.
  std::shared_ptr<Merge> begin(std::string image,
                               const std::vector<std::pair<std::string, uint64_t>>& layers);
  // Stops showing `merge` (its builder is done, though helpers may hold it).
  void end(const Merge* merge);
  // The merges in progress, oldest first.
  std::vector<ImageInfo> snapshot();

 private:
  std::mutex mutex_;  // guards merges_
  std::list<std::weak_ptr<Merge>> merges_;
};

// "queued", "fetching", "indexing", "done", "failed".
const char* to_string(MergeProgress::LayerState state);

}  // namespace regfs::fs
