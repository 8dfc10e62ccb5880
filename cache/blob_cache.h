// The bounded local cache: every blob (CachedBlob, complete or partial), the
// small blobs kept whole (manifests, configs: BlobStore), and derived files
// (rootfs layer indexes) under one LRU bound (--cache-size). Units of the LRU
// are complete blobs ("b:<hex>"), chunks of partial blobs ("c:<hex>:<i>")
// and derived files ("f:<path under root>"). Open complete blobs and pinned
// files are never evicted; chunks are, even of an open blob, so the bound
// holds while reading a blob larger than the bound. At start the index is
// rebuilt from the directory (least recently modified first), so the cache
// survives unmount, crash and remount, and two mounts may share it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cache/blob_accounting.h"
#include "cache/blob_store.h"
#include "cache/cached_blob.h"
#include "cache/lru_index.h"

namespace regfs::cache {

inline constexpr uint64_t kDefaultChunkSize = 2 << 20;

struct CacheUsage {
  uint64_t capacity = 0;
  uint64_t complete_bytes = 0;  // whole, verified blobs
  uint64_t partial_bytes = 0;   // chunks of blobs read in part
  uint64_t derived_bytes = 0;   // layer indexes and unpacked layers
  size_t complete_blobs = 0;
  size_t partial_blobs = 0;
  uint64_t total() const { return complete_bytes + partial_bytes + derived_bytes; }
};

class BlobCache : public BlobAccounting {
 public:
  BlobCache(std::filesystem::path root, uint64_t capacity, uint64_t chunk_size = kDefaultChunkSize);
  // Logs the hashes of the chunks of partial blobs stored without one.
  ~BlobCache() override;
  BlobCache(const BlobCache&) = delete;
  BlobCache& operator=(const BlobCache&) = delete;

  const std::filesystem::path& root() const { return store_.root(); }
  uint64_t chunk_size() const override { return chunk_size_; }
  CacheLayout layout() const override { return CacheLayout(root()); }
  // The complete blobs (kept whole and verified).
  const BlobStore& store() const { return store_; }

  // The blob's local state, shared by every reader in this process.
  std::shared_ptr<CachedBlob> open(const std::string& digest, uint64_t size);
  // Small blobs kept whole (manifests, configs), verified on put.
  std::optional<std::string> read_small(const std::string& digest, size_t max_size);
  void put_small(const std::string& digest, std::string_view bytes);

  // Derived files under root(): tracked in the LRU, evicted by unlinking; a
  // tracked path no longer there is forgotten.
  void track_file(const std::filesystem::path& path);
  void pin_file(const std::filesystem::path& path);
  void unpin_file(const std::filesystem::path& path);

  CacheUsage usage();
  // Evicts until within the bound.
  void evict();

  // Keeps chunks [first, last] of a blob from eviction (present or not yet)
  // while a reader waits for them and takes its lease, until the result
  // goes; counted, like pins.
  class ChunkPin {
   public:
    ChunkPin(BlobCache& cache, std::string digest, size_t first, size_t last);
    ChunkPin(const ChunkPin&) = delete;
    ChunkPin& operator=(const ChunkPin&) = delete;
    ~ChunkPin();

   private:
    BlobCache& cache_;
    const std::string digest_;
    const size_t first_, last_;
  };
  ChunkPin pin_chunks(const std::string& digest, size_t first, size_t last);

  // BlobAccounting (see cache/blob_accounting.h): what a CachedBlob tells and asks.
  void chunk_added(const std::string& digest, size_t index, uint64_t bytes) override;
  void chunk_known(const std::string& digest, size_t index, uint64_t bytes) override;
  void blob_completed(const std::string& digest, uint64_t size, size_t chunks) override;
  void blob_dropped(const std::string& digest, size_t chunks) override;
  void hold_complete(const std::string& digest) override;
  void release_complete(const std::string& digest) override;
  void forget_complete(const std::string& digest) override;
  void note_unhashed(const std::string& digest, uint64_t size,
                     const std::vector<size_t>& chunks) override;
  std::vector<size_t> take_unhashed(const std::string& digest) override;
  bool is_verified(const std::string& digest) override;
  void set_verified(const std::string& digest) override;

 private:
  void scan();
  void evict_key(const std::string& key);
  std::string file_key(const std::filesystem::path& path) const;

  BlobStore store_;
  const uint64_t chunk_size_;
  std::mutex mutex_;  // guards the members below; taken after any CachedBlob lock
  LruIndex lru_;
  std::map<std::string, std::weak_ptr<CachedBlob>> live_;
  // One instance is made at a time per digest: two racing opens once made
  // two, and the second could recreate a partial file the first had just
  // completed. Taken before mutex_, never while a CachedBlob lock is held.
  std::map<std::string, std::shared_ptr<std::mutex>> opening_;
  std::set<std::string> verified_;
  std::map<std::string, std::pair<uint64_t, std::vector<size_t>>> unhashed_;  // size, chunks
};

// Human sizes: 1536 -> "1.5K", 10 GiB -> "10.0G".
std::string human_size(uint64_t bytes);

}  // namespace regfs::cache
