// One blob in the local cache, complete or partial. A partial blob is a
// sparse file the size of the blob, filled chunk by chunk as reads need them
// (HTTP ranges fetched by the fs layer), with an append-only log of the
// chunks present and each chunk's SHA-256:
//   <root>/partial/sha256/<hex>          the sparse file
//   <root>/partial/sha256/<hex>.chunks   "regfs-chunks 1 <size> <chunk>" then
//                                        "+<i> <sha256>" / "-<i>" lines
// A running SHA-256 of the whole blob advances as chunks arrive in order
// (one storing thread at a time does it, outside the blob's lock, so readers
// and the other fetchers never wait for it); when it reaches the end the
// digest is checked: a match with every chunk present renames the file to
// blobs/sha256/<hex> (complete); a mismatch drops the blob and every reader
// gets EIO from then on. A reader of the last chunk of a blob whose chunks
// are all here waits for that check (fs/source/content.cc), so a whole read never
// ends in wrong bytes. After a remount a
// logged chunk is re-hashed before its first read, and a complete blob before
// its first open, so corrupt cache files are refetched, not served.
//
// Chunks may be evicted (hole punched) by the LRU of this or another mount
// sharing the cache dir. Readers hold OFD read locks on the chunk ranges they
// read and check for holes under the lock; eviction takes a write lock.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cache/blob_accounting.h"
#include "cache/unique_fd.h"
#include "registry/core/digest.h"

namespace regfs::cache {

class CachedBlob;

// Read access to [offset, offset+length) of a blob's local file. For a
// partial blob it holds a descriptor of its own open file description, lent
// by the blob and given back unlocked when the lease goes, with OFD read
// locks on the range, so no eviction punches it while the bytes are copied
// out. It must not outlive its blob.
class ReadLease {
 public:
  // `fd` is the blob's own (no locks): a complete blob, or nothing to read.
  ReadLease(int fd, uint64_t offset, size_t length) : fd_(fd), offset_(offset), length_(length) {}
  ReadLease(ReadLease&& other) noexcept
      : fd_(other.fd_),
        offset_(other.offset_),
        length_(other.length_),
        lender_(std::exchange(other.lender_, nullptr)),
        lock_start_(other.lock_start_),
        lock_length_(other.lock_length_) {}
  ReadLease& operator=(ReadLease&&) = delete;
  ~ReadLease();
  int fd() const { return fd_; }
  uint64_t offset() const { return offset_; }
  size_t length() const { return length_; }

 private:
  friend class CachedBlob;
  int fd_;
  uint64_t offset_;
  size_t length_;
  // A descriptor lent by `lender_`, locked on [lock_start_, +lock_length_).
  CachedBlob* lender_ = nullptr;
  uint64_t lock_start_ = 0;
  uint64_t lock_length_ = 0;
};

class CachedBlob {
 public:
  using Run = std::pair<size_t, size_t>;  // first and last chunk, inclusive

  // Opens the blob's local state, creating an empty partial file if needed.
  // Verifies a complete file not yet verified by this process.
  CachedBlob(BlobAccounting& cache, std::string digest, uint64_t size);
  ~CachedBlob();
  CachedBlob(const CachedBlob&) = delete;
  CachedBlob& operator=(const CachedBlob&) = delete;

  const std::string& digest() const { return digest_; }
  uint64_t size() const { return size_; }
  uint64_t chunk_size() const { return chunk_size_; }
  size_t chunk_count() const { return states_.size(); }
  size_t chunk_of(uint64_t offset) const { return static_cast<size_t>(offset / chunk_size_); }
  uint64_t chunk_length(size_t index) const;
  bool complete() const;
  // The whole-blob digest matched (the blob may not be renamed complete yet).
  bool verified() const;
  bool all_present() const;
  // Whether chunks [first, last] are all here (as far as this process knows).
  bool present(size_t first, size_t last) const;
  uint64_t present_bytes() const;

  // Marks the chunks of [first, last] that are neither present nor being
  // fetched as being fetched by the caller, and returns them as runs.
  std::vector<Run> claim(size_t first, size_t last);
  // Stores a fetched chunk (its whole bytes). Throws Error(kNoSpace/kIo).
  // The storing thread may go on to advance the whole-blob hash over the
  // chunks present after it.
  void store_chunk(size_t index, std::string_view bytes);
  // Waits for the whole-blob hash once every chunk is present (hashing what
  // nobody is hashing): true if the blob is complete, false if a chunk is
  // missing (evicted: fetch it again). Throws the blob's integrity error.
  bool await_complete();
  // The same, up to the digest check only (not the rename that follows).
  bool await_verified();
  // Gives back claimed chunks that could not be fetched; waiters get `error`.
  void abandon(size_t first, size_t last, std::exception_ptr error);
  // Blocks until every chunk of [first, last] is present (true), or one is
  // absent with nobody fetching it (false: claim it). Throws the error a
  // fetch of one of them failed with, or the blob's integrity error, or
  // Error(kTimeout) once the thread's deadline (registry/core/deadline.h) passes.
  bool wait(size_t first, size_t last);
  // A lease on [offset, offset+length), or nullopt if a chunk turned out to
  // be missing (evicted, or corrupt on disk): claim and fetch again.
  std::optional<ReadLease> lease(uint64_t offset, size_t length);
  // Punches chunk `index` out (LRU eviction).
  void evict_chunk(size_t index);
  // The same for a blob of `size` bytes that no instance in this process has
  // open: punched under an OFD write lock and logged gone, without loading
  // the blob's state (readers of other mounts see the hole under their lock).
  static void evict_closed_chunk(const CacheLayout& layout, const std::string& digest,
                                 uint64_t size, uint64_t chunk_size, size_t index);
  // Logs the hash of every chunk this process stored without one, so the
  // next mount can verify them. Returns how many it logged.
  size_t record_hashes();
  // Lets the kernel drop the local file's pages of chunks [first, last]
  // once a streaming reader is past them: the reader's own page cache (the
  // FUSE file's) holds what it read, so the copy of the cache file is not
  // needed, and reusing its pages for the next chunks is cheaper than
  // growing the page cache by the size of the blob. Keeps the pages the
  // whole-blob hash has yet to read; returns the first chunk not dropped.
  size_t drop_pages(size_t first, size_t last);

  // A hint shared by every reader of the blob in this process: someone reads
  // it from end to end, so fetches should cover whole extents. (Readers that
  // share the page cache see gaps in their own offsets and cannot tell.)
  void mark_streamed() { streamed_ = true; }
  bool streamed() const { return streamed_; }

 private:
  enum class State : uint8_t { kAbsent, kFetching, kPresent };

  void open_complete_or_partial();
  void open_partial();
  void load_log();
  void append_log(const std::string& line);
  void mark_absent_locked(size_t index);
  int reopen_own_file(int flags) const;
  // A descriptor of the file for a lease: a spare one, or opened anew (an
  // open file description of its own, for its OFD locks); -1 with errno.
  int lend_fd();
  // Takes back a lent descriptor, dropping its locks on [start, +length).
  void take_back_fd(int fd, uint64_t start, uint64_t length);
  friend class ReadLease;
  bool all_present_locked() const;
  bool chunk_intact_locked(int fd, size_t index);
  enum class HashResult { kPending, kCompleted, kFailed };
  // Advances the whole-blob hash from chunk `index` (its bytes in memory)
  // over the chunks present after it, unless another thread is doing so.
  HashResult advance_hash(size_t index, std::string_view bytes);
  // Feeds chunk `index` from the local file to the whole-blob hash, under an
  // OFD read lock so no eviction punches it meanwhile; false if it is gone.
  bool hash_chunk_from_file(size_t index);
  HashResult finish_hash();
  bool await_hash(bool complete);
  void stop_hashing_locked();
  // Tells the cache what a hash advance did.
  void report(HashResult result);
  void fail_integrity_locked(const std::string& actual);
  // Throws Error(kTimeout): the operation's deadline passed while waiting.
  [[noreturn]] void throw_deadline_passed() const;
  template <typename Sink>
  void read_chunk(int fd, size_t index, Sink&& sink) const;

  BlobAccounting& cache_;
  const std::string digest_;
  const uint64_t size_;
  const uint64_t chunk_size_;
  const std::filesystem::path complete_path_;
  const std::filesystem::path partial_path_;
  const std::filesystem::path log_path_;

  mutable std::mutex mutex_;  // guards everything below; taken after OFD locks
  std::condition_variable changed_;
  UniqueFd fd_;       // the complete file, or the partial file
  UniqueFd log_fd_;   // partial only
  UniqueFd hash_fd_;  // partial only: the hashing thread's own descriptor (OFD locks)
  // Descriptors leases gave back, unlocked: one open per reader, not per READ.
  std::vector<UniqueFd> spare_fds_;
  bool complete_ = false;
  std::exception_ptr failed_;  // whole-blob integrity failure
  std::vector<State> states_;
  std::vector<std::string> hashes_;  // per chunk, hex; empty if unknown
  std::vector<bool> verified_;       // hash checked by this process
  std::vector<std::exception_ptr> errors_;
  registry::Sha256 hasher_;  // used only by the thread that set hashing_
  bool hashing_ = false;     // a thread is advancing hasher_
  bool digest_ok_ = false;   // the whole-blob digest matched
  size_t hashed_upto_ = 0;   // chunks [0, hashed_upto_) are in hasher_
  std::atomic<bool> streamed_{false};
};

}  // namespace regfs::cache
