// CachedBlob (cache/cached_blob.h), its checks: the whole-blob hash that
// advances as chunks arrive and completes or drops the blob, the check of a
// chunk against the hash its log recorded, and the recording of those hashes.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "cache/cached_blob.h"
#include "cache/cached_blob_files.h"
#include "registry/core/deadline.h"
#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::cache {

using namespace blob_files;  // NOLINT: cache/cached_blob_files.h
using registry::Error;
using registry::ErrorKind;

void CachedBlob::report(HashResult result) {
  if (result == HashResult::kCompleted) {
    cache_.blob_completed(digest_, size_, states_.size());
  } else if (result == HashResult::kFailed) {
    cache_.blob_dropped(digest_, states_.size());
  }
}

bool CachedBlob::await_complete() { return await_hash(true); }

bool CachedBlob::await_verified() { return await_hash(false); }

// Waits for the whole-blob hash to reach the end (and, with `complete`, for
// the file to be renamed complete), hashing it here if nobody is.
bool CachedBlob::await_hash(bool complete) {
  auto done = [&] { return complete_ || (!complete && digest_ok_); };
  while (true) {
    {
      std::unique_lock lock(mutex_);
      auto ready = [&] { return !hashing_ || failed_ || done(); };
      if (auto deadline = registry::current_deadline()) {
        if (!changed_.wait_until(lock, *deadline, ready)) throw_deadline_passed();
      } else {
        changed_.wait(lock, ready);
      }
      if (failed_) std::rethrow_exception(failed_);
      if (done()) return true;
    }
    report(advance_hash(states_.size(), {}));  // every chunk from the file
    std::lock_guard lock(mutex_);
    if (failed_) std::rethrow_exception(failed_);
    if (done()) return true;
    if (!hashing_) return false;  // a chunk is missing
  }
}

// A storing thread becomes the hasher (hashing_) when the chunk the
// whole-blob hash needs next is present and nobody is hashing: it feeds that
// chunk (from memory if it is the one just stored, else from the file) and
// the chunks present after it, all outside mutex_. A thread storing the next
// chunk meanwhile leaves it to the hasher, which looks for it under mutex_
// before giving up the role.
CachedBlob::HashResult CachedBlob::advance_hash(size_t index, std::string_view bytes) {
  size_t next;
  {
    std::lock_guard lock(mutex_);
    if (hashing_ || failed_ || complete_ || hashed_upto_ >= states_.size() ||
        states_[hashed_upto_] != State::kPresent) {
      return HashResult::kPending;
    }
    hashing_ = true;
    next = hashed_upto_;
  }
  while (true) {
    bool hashed = true;
    try {
      if (next == index) {
        hasher_.update(bytes);
      } else {
        hashed = hash_chunk_from_file(next);
      }
    } catch (...) {
      std::lock_guard lock(mutex_);
      hasher_ = registry::Sha256();  // part of a chunk may be in it: start over
      hashed_upto_ = 0;
      stop_hashing_locked();
      throw;
    }
    std::lock_guard lock(mutex_);
    if (!hashed) {  // evicted or corrupt: hashed when stored again
      stop_hashing_locked();
      return HashResult::kPending;
    }
    hashed_upto_ = ++next;
    if (next == states_.size()) break;
    if (states_[next] != State::kPresent) {
      stop_hashing_locked();
      return HashResult::kPending;
    }
  }
  return finish_hash();
}

bool CachedBlob::hash_chunk_from_file(size_t index) {
  const uint64_t start = index * chunk_size_;
  const uint64_t length = chunk_length(index);
  if (!ofd_lock(hash_fd_.get(), F_RDLCK, start, length)) {
    throw io_error("lock cache file " + partial_path_.string(), errno);
  }
  struct Unlock {
    int fd;
    uint64_t start, length;
    ~Unlock() { ofd_lock(fd, F_UNLCK, start, length); }
  } unlock{hash_fd_.get(), start, length};
  {
    std::lock_guard lock(mutex_);
    if (states_[index] != State::kPresent || !chunk_intact_locked(hash_fd_.get(), index)) {
      mark_absent_locked(index);
      return false;
    }
  }
  read_chunk(hash_fd_.get(), index,
             [&](const char* data, size_t size) { hasher_.update(data, size); });
  return true;
}

// With every chunk fed to hasher_ (and hashing_ held): checks the digest and
// makes the blob complete, or drops it.
CachedBlob::HashResult CachedBlob::finish_hash() {
  std::string actual = hasher_.digest();
  if (actual != digest_) {
    std::lock_guard lock(mutex_);
    stop_hashing_locked();
    fail_integrity_locked(actual);
    return HashResult::kFailed;
  }
  {
    std::lock_guard lock(mutex_);
    digest_ok_ = true;
    changed_.notify_all();  // await_verified
  }
  ::fsync(fd_.get());  // outside the lock: readers go on meanwhile
  std::lock_guard lock(mutex_);
  stop_hashing_locked();
  if (!all_present_locked())
    return HashResult::kPending;  // verified as streamed, but chunks were evicted
  if (::rename(partial_path_.c_str(), complete_path_.c_str()) != 0) {
    int error = errno;
    // Another instance completed (or dropped) the same file first: the
    // bytes in this one's file are checked all the same, so it is complete
    // if no chunk of it was punched meanwhile.
    if (error != ENOENT || ::lseek(fd_.get(), 0, SEEK_HOLE) < static_cast<off_t>(size_)) {
      LOG(kWarning) << "Cannot complete cached blob " << digest_ << ": " << std::strerror(error);
      return HashResult::kPending;
    }
    LOG(kDebug) << "Cached blob " << digest_ << " was renamed by another instance";
  }
  ::unlink(log_path_.c_str());
  log_fd_.reset();
  complete_ = true;
  cache_.set_verified(digest_);
  return HashResult::kCompleted;
}

void CachedBlob::stop_hashing_locked() {
  hashing_ = false;
  changed_.notify_all();  // await_complete waits for it
}

void CachedBlob::fail_integrity_locked(const std::string& actual) {
  LOG(kError) << "Blob " << digest_ << " from the registry has digest " << actual
              << "; dropped, readers get EIO";
  failed_ = std::make_exception_ptr(Error(
      ErrorKind::kIntegrity, "Cannot read blob " + digest_ + ": content does not match digest"));
  ::unlink(partial_path_.c_str());
  ::unlink(log_path_.c_str());
}

// True if chunk `index` has no hole on disk and, the first time this process
// reads it, its bytes match the hash recorded when it was fetched.
bool CachedBlob::chunk_intact_locked(int fd, size_t index) {
  uint64_t start = index * chunk_size_;
  uint64_t end = start + chunk_length(index);
  off_t hole = ::lseek(fd, static_cast<off_t>(start), SEEK_HOLE);
  if (hole >= 0 && static_cast<uint64_t>(hole) < end) return false;
  if (verified_[index]) return true;
  if (hashes_[index].empty()) return false;  // stored by another process without a hash
  registry::Sha256 hash;
  read_chunk(fd, index, [&](const char* data, size_t size) { hash.update(data, size); });
  if (registry::digest_hex(hash.digest()) != hashes_[index]) {
    LOG(kWarning) << "Cached chunk " << index << " of " << digest_
                  << " is corrupt; fetching it again";
    return false;
  }
  verified_[index] = true;
  return true;
}

// Hands chunk `index` of the local file to sink(data, size) in pieces.
template <typename Sink>
void CachedBlob::read_chunk(int fd, size_t index, Sink&& sink) const {
  std::string& buffer = scratch();
  const uint64_t length = chunk_length(index);
  uint64_t done = 0;
  while (done < length) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), length - done));
    ssize_t n = ::pread(fd, buffer.data(), want, static_cast<off_t>(index * chunk_size_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw io_error("read cache file " + partial_path_.string(), n < 0 ? errno : EIO);
    sink(buffer.data(), static_cast<size_t>(n));
    done += static_cast<uint64_t>(n);
  }
}

size_t CachedBlob::record_hashes() {
  size_t logged = 0;
  for (size_t i = 0; i < states_.size(); ++i) {
    const uint64_t start = i * chunk_size_;
    if (!ofd_lock(hash_fd_.get(), F_RDLCK, start, chunk_length(i))) break;
    {
      std::lock_guard lock(mutex_);
      if (complete_ || failed_) break;
      bool unhashed = states_[i] == State::kPresent && verified_[i] && hashes_[i].empty();
      if (unhashed && chunk_intact_locked(hash_fd_.get(), i)) {
        registry::Sha256 hash;
        read_chunk(hash_fd_.get(), i,
                   [&](const char* data, size_t size) { hash.update(data, size); });
        hashes_[i] = registry::digest_hex(hash.digest());
        append_log("+" + std::to_string(i) + " " + hashes_[i] + "\n");
        ++logged;
      }
    }
    ofd_lock(hash_fd_.get(), F_UNLCK, start, chunk_length(i));
  }
  return logged;
}

}  // namespace regfs::cache
