// Derived content of layers, kept next to the blob store:
//   <cache_dir>/layers/sha256/<diff_id hex>.tar    the uncompressed layer
//   <cache_dir>/layers/sha256/<diff_id hex>.index  its LayerIndex
//   <cache_dir>/layers/tmp/<hex>.*.tmp              both, while being written
// The files are reported to the cache's size bound (FileHooks): tracked when
// written, pinned while a LayerIndex using them is alive, so they are never
// evicted under a reader; one evicted later is simply indexed again.
//
// Why keep the uncompressed tar rather than gzip/zstd access points (as
// ratarmount and SOCI do): a read of any byte range is then one pread at a
// known offset, for every compression alike (zstd frames and gzip windows
// need a different checkpoint scheme each, and a 32 KiB window per
// checkpoint), the kernel page cache and splice work on it directly, and
// indexing is a single streaming pass. It costs the layer's uncompressed
// size on disk.
//
// Indexing streams the compressed blob once through its decompressor,
// hashing the uncompressed bytes (the diff_id) while the tar is written to a
// temporary file and its entries recorded. Both are committed (renamed into
// place, tar first, index last, so a present index means a complete tar)
// only if the hash equals the config's diff_id; otherwise nothing is kept
// and Error(kIntegrity) is thrown. Entries are keyed by diff_id, so every
// image with the layer shares them, and they outlive the mount: a remount
// only reads the index. Concurrent requests for one layer index it once.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "cache/decompress.h"
#include "cache/layer_index.h"

namespace regfs::cache {

// How the cache's size bound learns of the files the store keeps (BlobCache's
// track_file, pin_file and unpin_file); unset hooks do nothing.
struct FileHooks {
  std::function<void(const std::filesystem::path&)> track;
  std::function<void(const std::filesystem::path&)> pin;
  std::function<void(const std::filesystem::path&)> unpin;
};

class LayerStore {
 public:
  // `root` is <cache_dir>/layers; created (mode 0700) if needed.
  explicit LayerStore(std::filesystem::path root, FileHooks hooks = {});

  // The index of the layer whose uncompressed digest is `diff_id`, if it was
  // indexed before (by this process or an earlier one).
  std::shared_ptr<const LayerIndex> find(const std::string& diff_id);
  // The index of `diff_id`: found, or made from the compressed blob that
  // `blob()` returns (called only when needed, a complete verified file).
  // Throws Error(kIntegrity) if the blob does not decompress to `diff_id`,
  // kInvalid for a malformed tar or compressed stream, kNoSpace, kIo.
  // `entries`, if set, counts the tar entries as this call indexes them.
  std::shared_ptr<const LayerIndex> get(const std::string& diff_id, Compression compression,
                                        const std::function<std::filesystem::path()>& blob,
                                        std::atomic<uint64_t>* entries = nullptr);
  // Indexes the compressed `blob` as `diff_id` now (what get() does on a miss).
  std::shared_ptr<const LayerIndex> index(const std::filesystem::path& blob,
                                          Compression compression, const std::string& diff_id,
                                          std::atomic<uint64_t>* entries = nullptr);

 private:
  std::filesystem::path tar_path(const std::string& diff_id) const;
  std::filesystem::path index_path(const std::string& diff_id) const;
  std::shared_ptr<const LayerIndex> load(const std::string& diff_id) const;
  // Shares `index`, its files pinned until the last owner goes.
  std::shared_ptr<const LayerIndex> pinned(LayerIndex index) const;
  void hook(const std::function<void(const std::filesystem::path&)>& f,
            const std::filesystem::path& path) const;

  std::filesystem::path root_;
  FileHooks hooks_;
  std::mutex mutex_;  // guards loaded_ and in_flight_
  std::map<std::string, std::weak_ptr<const LayerIndex>> loaded_;
  std::map<std::string, std::shared_future<std::shared_ptr<const LayerIndex>>> in_flight_;
};

}  // namespace regfs::cache
