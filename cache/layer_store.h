// Derived content of layers, kept next to the blob store:
//   <cache_dir>/layers/sha256/<diff_id hex>.index  its LayerIndex: entries
//                                                  and the blob's access points
//   <cache_dir>/layers/sha256/<diff_id hex>.tar    a decompressed copy, only
//                                                  where access points cannot
//                                                  be close enough (below)
//   <cache_dir>/layers/tmp/<hex>.*.tmp              both, while being written
// The compressed blob itself stays in the blob store; a layer's files are
// read from it through its LayerData (cache/layer_data.h): an uncompressed
// blob with pread, a gzip or zstd one by decompressing from the nearest
// access point. So the cache holds about the compressed size of an image
// (plus ~1-3% of access points and entries), not its uncompressed size too.
//
// Access points are recorded every `spacing` (1 MiB) of uncompressed output
// where the format allows: gzip at any deflate block boundary (with a 32 KiB
// window each, deflate-compressed), zstd only at frame starts. A layer whose
// points end up further apart than `max_span` (8 MiB) — a single-frame zstd
// stream, as most zstd layers are, or freak deflate blocks — cannot be read
// at random cheaply (libzstd cannot resume inside a frame), so for it a
// decompressed copy is kept as before (made by a second pass).
//
// The files are reported to the cache's size bound (FileHooks): tracked when
// written, pinned while a LayerIndex using them is alive, and the compressed
// blob held (never evicted) as long too, so they are never evicted under a
// reader; one evicted later is simply fetched or indexed again.
//
// Indexing streams the compressed blob once through its decompressor,
// hashing the uncompressed bytes (the diff_id) while its entries and access
// points are recorded. The index is committed (renamed into place; a copy's
// tar before it, so a present index means a complete copy) only if the hash
// equals the config's diff_id; otherwise nothing is kept and
// Error(kIntegrity) is thrown. Entries are keyed by diff_id, so every image
// with the layer shares them, and they outlive the mount: a remount only
// reads the index (and the blob, found in the blob store). An index made for
// another blob of the same diff_id (other compression) is made again, and
// one of an older version is removed, with its uncompressed copy, when its
// layer is first asked for (nothing is read at start-up; the ones never
// asked for again go as the cache's bound evicts them).
// Concurrent requests for one layer index it once (registry::SharedFlight).
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "cache/decompress.h"
#include "cache/layer_index.h"
#include "registry/core/single_flight.h"

namespace regfs::cache {

// How the cache's size bound learns of the files the store keeps (BlobCache's
// track_file, pin_file and unpin_file for derived files; hold_blob and
// release_blob get the path of a complete blob in the blob store, whose file
// name is its digest's hex); unset hooks do nothing.
struct FileHooks {
  std::function<void(const std::filesystem::path&)> track;
  std::function<void(const std::filesystem::path&)> pin;
  std::function<void(const std::filesystem::path&)> unpin;
  std::function<void(const std::filesystem::path&)> hold_blob;
  std::function<void(const std::filesystem::path&)> release_blob;
};

inline constexpr uint64_t kAccessPointSpacing = 1 << 20;
inline constexpr uint64_t kMaxSpan = 8 << 20;

class LayerStore {
 public:
  // `root` is <cache_dir>/layers; created (mode 0700) if needed. `spacing`
  // and `max_span` in uncompressed bytes (see above).
  explicit LayerStore(std::filesystem::path root, FileHooks hooks = {},
                      uint64_t spacing = kAccessPointSpacing, uint64_t max_span = kMaxSpan);

  // The index of the layer whose uncompressed digest is `diff_id`, if this
  // process has it loaded.
  std::shared_ptr<const LayerIndex> find(const std::string& diff_id);
  // The index of `diff_id`, read through the compressed blob that `blob()`
  // returns (a complete verified file): loaded from the cache, or made.
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
  // The stored index of `diff_id` for `blob`, or nullptr (absent, damaged,
  // of another version or another blob).
  std::shared_ptr<const LayerIndex> load(const std::string& diff_id, Compression compression,
                                         const std::filesystem::path& blob) const;
  // Gives `index` its LayerData (`blob` open, or its copy) and shares it,
  // its files pinned and its blob held until the last owner goes.
  std::shared_ptr<const LayerIndex> opened(LayerIndex index,
                                           const std::filesystem::path& blob) const;
  // Decompresses `blob` once more into a committed copy at tar_path().
  void write_copy(const std::filesystem::path& blob, Compression compression,
                  const std::string& diff_id, const std::string& suffix) const;
  // Removes the index of `diff_id`, of an older version, and the
  // uncompressed copy those all had (version 2 kept every layer's tar).
  void remove_older_version(const std::string& diff_id) const;
  void hook(const std::function<void(const std::filesystem::path&)>& f,
            const std::filesystem::path& path) const;

  std::filesystem::path root_;
  FileHooks hooks_;
  uint64_t spacing_;
  uint64_t max_span_;
  std::mutex mutex_;  // guards loaded_
  std::map<std::string, std::weak_ptr<const LayerIndex>> loaded_;
  registry::SharedFlight<std::shared_ptr<const LayerIndex>> indexing_;  // by diff_id
};

}  // namespace regfs::cache
