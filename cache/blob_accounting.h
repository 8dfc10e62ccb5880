// What a CachedBlob needs of the cache it lives in, and nothing more: where
// its files are, the chunk size, the LRU's accounting of its chunks and of
// the whole blob, and what this process remembers of a blob between two
// instances of it. BlobCache implements it; CachedBlob depends on this
// interface only, so the two do not call each other's insides.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cache/layout.h"

namespace regfs::cache {

class BlobAccounting {
 public:
  virtual ~BlobAccounting() = default;

  // The cache directory's layout (blob, partial file and chunk log paths).
  virtual CacheLayout layout() const = 0;
  // Bytes in one chunk of a partial blob (the last one may be shorter).
  virtual uint64_t chunk_size() const = 0;

  // Charges: chunk `index` of `digest` (`bytes` long) was stored; counted in
  // the LRU, which may then evict other entries.
  virtual void chunk_added(const std::string& digest, size_t index, uint64_t bytes) = 0;
  // The same for a chunk found on disk: tracked if new, no eviction.
  virtual void chunk_known(const std::string& digest, size_t index, uint64_t bytes) = 0;
  // The blob (`chunks` chunks) became complete: its chunks become one entry of `size` bytes.
  virtual void blob_completed(const std::string& digest, uint64_t size, size_t chunks) = 0;
  // The blob failed its digest: its `chunks` chunk entries go.
  virtual void blob_dropped(const std::string& digest, size_t chunks) = 0;

  // Pins: a complete blob open here is not evicted until released.
  virtual void hold_complete(const std::string& digest) = 0;
  virtual void release_complete(const std::string& digest) = 0;
  // A complete blob found corrupt and removed: its entry goes.
  virtual void forget_complete(const std::string& digest) = 0;

  // Chunks stored without a hash by an instance now closed (blob `size`
  // bytes): trusted by the next instance in this process, hashed at the end.
  virtual void note_unhashed(const std::string& digest, uint64_t size,
                             const std::vector<size_t>& chunks) = 0;
  virtual std::vector<size_t> take_unhashed(const std::string& digest) = 0;
  // Whether this process already checked the complete blob's digest.
  virtual bool is_verified(const std::string& digest) = 0;
  virtual void set_verified(const std::string& digest) = 0;
};

}  // namespace regfs::cache
