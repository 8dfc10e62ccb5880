// CachedBlob (cache/cached_blob.h), its file under readers and eviction:
// read leases (OFD read locks over the chunks a read covers), dropping the
// pages a streaming reader is past, and punching chunks out (OFD write locks).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "cache/cached_blob.h"
#include "cache/cached_blob_files.h"
#include "cache/layout.h"
#include "registry/core/log.h"

namespace regfs::cache {

using namespace blob_files;  // NOLINT: cache/cached_blob_files.h
using registry::Error;
using registry::ErrorKind;

ReadLease::~ReadLease() {
  if (lender_) lender_->take_back_fd(fd_, lock_start_, lock_length_);
}

int CachedBlob::lend_fd() {
  {
    std::lock_guard lock(mutex_);
    if (!spare_fds_.empty()) {
      UniqueFd spare = std::move(spare_fds_.back());
      spare_fds_.pop_back();
      return spare.release();
    }
  }
  return reopen_own_file(O_RDONLY);
}

void CachedBlob::take_back_fd(int fd, uint64_t start, uint64_t length) {
  constexpr size_t kMaxSpare = 4;  // READs served at once, commonly
  UniqueFd owned(fd);
  if (!ofd_lock(fd, F_UNLCK, start, length)) return;  // closed: its locks go with it
  std::lock_guard lock(mutex_);
  if (!complete_ && !failed_ && spare_fds_.size() < kMaxSpare)
    spare_fds_.push_back(std::move(owned));
}

std::optional<ReadLease> CachedBlob::lease(uint64_t offset, size_t length) {
  {
    std::lock_guard lock(mutex_);
    if (failed_) std::rethrow_exception(failed_);
    if (complete_) return ReadLease(fd_.get(), offset, length);
  }
  if (length == 0 || offset >= size_) return ReadLease(fd_.get(), offset, 0);
  length = static_cast<size_t>(std::min<uint64_t>(length, size_ - offset));
  size_t first = chunk_of(offset);
  size_t last = chunk_of(offset + length - 1);
  // The file this instance writes, whatever its name now (another instance
  // may have completed or dropped the partial file), as an open file
  // description of the lease's own for its OFD lock.
  int fd = lend_fd();
  if (fd < 0) throw io_error("open cache file " + partial_path_.string(), errno);
  const uint64_t start = first * chunk_size_;
  const uint64_t lock_length = (last + 1) * chunk_size_ - start;
  if (!ofd_lock(fd, F_RDLCK, start, lock_length)) {
    int error = errno;
    ::close(fd);
    throw io_error("lock cache file " + partial_path_.string(), error);
  }
  ReadLease lease(fd, offset, length);
  lease.lender_ = this;
  lease.lock_start_ = start;
  lease.lock_length_ = lock_length;
  std::lock_guard lock(mutex_);
  bool intact = true;
  for (size_t i = first; i <= last; ++i) {
    if (states_[i] != State::kPresent || !chunk_intact_locked(fd, i)) {
      mark_absent_locked(i);
      intact = false;
    }
  }
  if (!intact) return std::nullopt;
  return lease;
}

size_t CachedBlob::drop_pages(size_t first, size_t last) {
  {
    // Not the pages the whole-blob hash has yet to read.
    std::lock_guard lock(mutex_);
    if (!complete_) {
      if (hashed_upto_ <= first) return first;
      last = std::min(last, hashed_upto_ - 1);
    }
  }
  if (first > last || first >= states_.size()) return first;
  last = std::min(last, states_.size() - 1);
  uint64_t start = first * chunk_size_;
  uint64_t end = last * chunk_size_ + chunk_length(last);
  // Pages still dirty or under writeback stay; the kernel drops them later.
  ::posix_fadvise(fd_.get(), static_cast<off_t>(start), static_cast<off_t>(end - start),
                  POSIX_FADV_DONTNEED);
  return last + 1;
}

void CachedBlob::evict_chunk(size_t index) {
  if (index >= states_.size()) return;
  UniqueFd fd(reopen_own_file(O_RDWR));
  if (!fd) return;
  uint64_t start = index * chunk_size_;
  if (ofd_lock(fd.get(), F_WRLCK, start, chunk_length(index))) {
    std::lock_guard lock(mutex_);
    if (!complete_ && states_[index] == State::kPresent &&
        ::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(start),
                    static_cast<off_t>(chunk_length(index))) == 0) {
      mark_absent_locked(index);
    }
  }
}

void CachedBlob::evict_closed_chunk(const CacheLayout& layout, const std::string& digest,
                                    uint64_t size, uint64_t chunk_size, size_t index) {
  const uint64_t start = index * chunk_size;
  if (start >= size) return;
  const uint64_t length = std::min(chunk_size, size - start);
  UniqueFd fd(::open(layout.partial(digest).c_str(), O_RDWR | O_CLOEXEC));
  if (!fd || !ofd_lock(fd.get(), F_WRLCK, start, length)) return;
  if (::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(start),
                  static_cast<off_t>(length)) != 0) {
    return;
  }
  UniqueFd log(::open(layout.chunk_log(digest).c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  std::string line = "-" + std::to_string(index) + "\n";
  if (!log || ::write(log.get(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
    LOG(kWarning) << "Cannot record chunk in " << layout.chunk_log(digest) << ": "
                  << std::strerror(errno);
  }
}

}  // namespace regfs::cache
