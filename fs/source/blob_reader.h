// A blob read for one open file (BlobReader, written in
// fs/source/blob_source.cc), and where the chunks it lacks come from
// (ChunkFetcher): RegistryContent fetches them with HTTP ranges on its worker
// pool; the tree's unit tests from memory (tests/unit/fs/tree/fake_source.h).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "cache/blob_cache.h"
#include "cache/cached_blob.h"

namespace regfs::fs {

class ChunkFetcher {
 public:
  virtual ~ChunkFetcher() = default;
  // The cache the chunks are kept in (a read pins the chunks it waits for).
  virtual cache::BlobCache& cache() = 0;
  // Fetches the claimed chunks [first, last] of `blob` (of `repository`),
  // in the background or before returning: each is stored in the blob
  // (CachedBlob::store_chunk), or given back with the error
  // (CachedBlob::abandon) that the waiting reads then throw.
  virtual void fetch(const std::string& repository, std::shared_ptr<cache::CachedBlob> blob,
                     size_t first, size_t last) = 0;
};

// Reads one blob for one open file: waits for the chunks a read covers and
// keeps a readahead window that doubles while reads are sequential.
class BlobReader {
 public:
  // Reads `blob` of `repository`; `fetcher` fetches the chunks it lacks.
  BlobReader(ChunkFetcher& fetcher, std::string repository,
             std::shared_ptr<cache::CachedBlob> blob);
  uint64_t size() const { return blob_->size(); }
  const std::string& digest() const { return blob_->digest(); }
  // Its digest checked: what was read of it is right.
  bool verified() const { return blob_->verified(); }
  // [offset, offset+length) is local for as long as the lease lives.
  cache::ReadLease read(uint64_t offset, size_t length);
  // Fetches every chunk and waits (rootfs indexing reads whole layers).
  void read_all();
  // Bytes of the blob here now (fetched or cached before).
  uint64_t present_bytes() const { return blob_->present_bytes(); }

 private:
  // The chunks to claim for a read of chunks [first, last]. Random reads
  // take just those; sequential ones whole aligned extents, the one read and
  // a readahead window of extents that doubles while reads stay sequential.
  // Aligned extents make concurrent readers of a blob claim the same ranges,
  // so they share requests instead of splitting them.
  std::pair<size_t, size_t> claim_range(uint64_t offset, size_t length, size_t first, size_t last);
  void drop_behind(size_t first);
  cache::ReadLease read_chunks(uint64_t offset, size_t length, size_t first, size_t last);

  ChunkFetcher& fetcher_;
  const std::string repository_;
  const std::shared_ptr<cache::CachedBlob> blob_;
  std::mutex mutex_;  // guards the readahead state
  uint64_t next_offset_ = 0;
  size_t window_ = 0;      // extents of readahead
  uint64_t streamed_ = 0;  // bytes read in sequence up to next_offset_
  size_t dropped_ = 0;     // chunks [0, dropped_) were given to drop_pages
  // The last read that gave up at its deadline waiting for chunk
  // gave_up_chunk_: the kernel repeats a failed read at once, and that
  // repeat fails at once rather than waiting a second deadline.
  std::chrono::steady_clock::time_point gave_up_at_{};
  size_t gave_up_chunk_ = 0;
};

}  // namespace regfs::fs
