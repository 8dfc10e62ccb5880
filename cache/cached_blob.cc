#include "cache/cached_blob.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cache/layout.h"
#include "registry/core/deadline.h"
#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::cache {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr std::string_view kLogMagic = "regfs-chunks 1";

Error io_error(const std::string& what, int err) {
  return Error(err == ENOSPC || err == EDQUOT ? ErrorKind::kNoSpace : ErrorKind::kIo,
               "Cannot " + what + ": " + std::strerror(err));
}

// Takes (or, with F_UNLCK, drops) an OFD lock on [start, start+length).
bool ofd_lock(int fd, short type, uint64_t start, uint64_t length) {
  struct flock lock {};
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  lock.l_start = static_cast<off_t>(start);
  lock.l_len = static_cast<off_t>(length);
  while (::fcntl(fd, F_OFD_SETLKW, &lock) != 0) {
    if (errno != EINTR) return false;
  }
  return true;
}

void write_all(int fd, const char* data, size_t size, uint64_t offset, const std::string& what) {
  while (size > 0) {
    ssize_t n = ::pwrite(fd, data, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw io_error(what, errno);
    }
    data += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
}

// A buffer for reading the local file, one per thread and kept: fresh
// memory for every chunk read would cost a page fault per page.
std::string& scratch() {
  thread_local std::string buffer(256 << 10, '\0');
  return buffer;
}

std::string hash_file(int fd, uint64_t size) {
  registry::Sha256 hash;
  std::string& buffer = scratch();
  uint64_t offset = 0;
  while (offset < size) {
    ssize_t n = ::pread(fd, buffer.data(), buffer.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    hash.update(buffer.data(), static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return offset == size ? hash.digest() : std::string();
}

}  // namespace

ReadLease::~ReadLease() {
  if (lender_) lender_->take_back_fd(fd_, lock_start_, lock_length_);
}

CachedBlob::CachedBlob(BlobAccounting& cache, std::string digest, uint64_t size)
    : cache_(cache),
      digest_(std::move(digest)),
      size_(size),
      chunk_size_(cache.chunk_size()),
      complete_path_(cache.layout().blob(digest_)),
      partial_path_(cache.layout().partial(digest_)),
      log_path_(cache.layout().chunk_log(digest_)) {
  size_t chunks = static_cast<size_t>((size_ + chunk_size_ - 1) / chunk_size_);
  states_.assign(chunks, State::kAbsent);
  hashes_.assign(chunks, std::string());
  verified_.assign(chunks, false);
  errors_.assign(chunks, nullptr);
  open_complete_or_partial();
}

CachedBlob::~CachedBlob() {
  if (!complete_ && !failed_) {
    std::vector<size_t> unhashed;
    for (size_t i = 0; i < states_.size(); ++i) {
      if (states_[i] == State::kPresent && verified_[i] && hashes_[i].empty())
        unhashed.push_back(i);
    }
    if (!unhashed.empty()) cache_.note_unhashed(digest_, size_, unhashed);
  }
  spare_fds_.clear();
  fd_.reset();
  log_fd_.reset();
  hash_fd_.reset();
  if (complete_) cache_.release_complete(digest_);
}

void CachedBlob::open_complete_or_partial() {
  UniqueFd fd(::open(complete_path_.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd) {
    struct stat st;
    bool ok = ::fstat(fd.get(), &st) == 0 && static_cast<uint64_t>(st.st_size) == size_;
    if (ok && !cache_.is_verified(digest_)) {
      ok = hash_file(fd.get(), size_) == digest_;
      if (ok) cache_.set_verified(digest_);
    }
    if (ok) {
      fd_ = std::move(fd);
      complete_ = true;
      std::fill(states_.begin(), states_.end(), State::kPresent);
      hashed_upto_ = states_.size();
      cache_.hold_complete(digest_);
      return;
    }
    fd.reset();
    LOG(kWarning) << "Cached blob " << digest_ << " does not match its digest; fetching it again";
    ::unlink(complete_path_.c_str());
    cache_.forget_complete(digest_);
  }
  open_partial();
}

void CachedBlob::open_partial() {
  fd_.reset(::open(partial_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd_) throw io_error("open cache file " + partial_path_.string(), errno);
  load_log();
  struct stat st;
  if (::fstat(fd_.get(), &st) != 0) throw io_error("stat " + partial_path_.string(), errno);
  if (static_cast<uint64_t>(st.st_size) != size_ &&
      ::ftruncate(fd_.get(), static_cast<off_t>(size_))) {
    throw io_error("size cache file " + partial_path_.string(), errno);
  }
  log_fd_.reset(::open(log_path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (!log_fd_) throw io_error("open cache file " + log_path_.string(), errno);
  struct stat log_st;
  if (::fstat(log_fd_.get(), &log_st) == 0 && log_st.st_size == 0) {
    append_log(std::string(kLogMagic) + " " + std::to_string(size_) + " " +
               std::to_string(chunk_size_) + "\n");
  }
  // The same file however it is renamed or unlinked meanwhile (a concurrent
  // instance may complete it), as a description of its own for OFD locks.
  hash_fd_.reset(reopen_own_file(O_RDONLY));
  if (!hash_fd_) throw io_error("open cache file " + partial_path_.string(), errno);
  if (size_ == 0) {
    {
      std::lock_guard lock(mutex_);
      hashing_ = true;
    }
    finish_hash();
  }
}

// Reads the chunk log; a log of another size or chunk size starts over.
void CachedBlob::load_log() {
  std::ifstream in(log_path_);
  std::string header;
  if (!in || !std::getline(in, header)) return;
  std::string expected =
      std::string(kLogMagic) + " " + std::to_string(size_) + " " + std::to_string(chunk_size_);
  if (header != expected) {
    LOG(kInfo) << "Discarding partial blob " << digest_ << ": made with other settings";
    ::unlink(log_path_.c_str());
    if (::ftruncate(fd_.get(), 0) != 0) throw io_error("reset " + partial_path_.string(), errno);
    return;
  }
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() < 2) continue;
    std::istringstream fields(line.substr(1));
    size_t index;
    std::string hash;
    if (!(fields >> index) || index >= states_.size()) continue;
    if (line[0] == '+') {
      states_[index] = State::kPresent;
      hashes_[index] = (fields >> hash) && hash.size() == 64 ? hash : std::string();
      verified_[index] = false;
    } else if (line[0] == '-') {
      states_[index] = State::kAbsent;
      hashes_[index].clear();
    }
  }
  // Chunks this process stored without a hash, in an earlier instance.
  for (size_t i : cache_.take_unhashed(digest_)) {
    if (i < states_.size() && states_[i] == State::kPresent && hashes_[i].empty()) {
      verified_[i] = true;
    }
  }
  for (size_t i = 0; i < states_.size(); ++i) {
    if (states_[i] == State::kPresent) cache_.chunk_known(digest_, i, chunk_length(i));
  }
}

void CachedBlob::append_log(const std::string& line) {
  if (!log_fd_) return;
  ssize_t n = ::write(log_fd_.get(), line.data(), line.size());
  if (n != static_cast<ssize_t>(line.size())) {
    LOG(kWarning) << "Cannot record chunk in " << log_path_ << ": " << std::strerror(errno);
  }
}

uint64_t CachedBlob::chunk_length(size_t index) const {
  uint64_t start = index * chunk_size_;
  return std::min(chunk_size_, size_ - start);
}

bool CachedBlob::complete() const {
  std::lock_guard lock(mutex_);
  return complete_;
}

bool CachedBlob::verified() const {
  std::lock_guard lock(mutex_);
  return complete_ || (digest_ok_ && !failed_);
}

bool CachedBlob::all_present() const {
  std::lock_guard lock(mutex_);
  return complete_ || all_present_locked();
}

bool CachedBlob::present(size_t first, size_t last) const {
  std::lock_guard lock(mutex_);
  if (complete_) return true;
  last = std::min(last, states_.size() - 1);
  for (size_t i = first; i <= last; ++i) {
    if (states_[i] != State::kPresent) return false;
  }
  return true;
}

bool CachedBlob::all_present_locked() const {
  return std::all_of(states_.begin(), states_.end(), [](State s) { return s == State::kPresent; });
}

uint64_t CachedBlob::present_bytes() const {
  std::lock_guard lock(mutex_);
  uint64_t bytes = 0;
  for (size_t i = 0; i < states_.size(); ++i) {
    if (states_[i] == State::kPresent) bytes += chunk_length(i);
  }
  return bytes;
}

std::vector<CachedBlob::Run> CachedBlob::claim(size_t first, size_t last) {
  std::vector<Run> runs;
  std::lock_guard lock(mutex_);
  if (failed_ || complete_) return runs;
  last = std::min(last, states_.size() - 1);
  for (size_t i = first; i <= last && i < states_.size(); ++i) {
    if (states_[i] != State::kAbsent) continue;
    states_[i] = State::kFetching;
    errors_[i] = nullptr;
    if (!runs.empty() && runs.back().second + 1 == i) {
      runs.back().second = i;
    } else {
      runs.emplace_back(i, i);
    }
  }
  return runs;
}

void CachedBlob::store_chunk(size_t index, std::string_view bytes) {
  if (index >= states_.size() || bytes.size() != chunk_length(index)) {
    throw Error(ErrorKind::kIntegrity, "Cannot store chunk " + std::to_string(index) + " of " +
                                           digest_ + ": wrong length");
  }
  const uint64_t start = index * chunk_size_;
  write_all(fd_.get(), bytes.data(), bytes.size(), start,
            "write cache file " + partial_path_.string());
  // Start writing it back now, so that by the time a streaming reader is past
  // it its pages are clean and drop_pages can free them.
  ::sync_file_range(fd_.get(), static_cast<off_t>(start), static_cast<off_t>(bytes.size()),
                    SYNC_FILE_RANGE_WRITE);
  {
    std::lock_guard lock(mutex_);
    states_[index] = State::kPresent;
    hashes_[index].clear();  // vouched for by this process; see record_hashes
    verified_[index] = true;
    errors_[index] = nullptr;
    append_log("+" + std::to_string(index) + "\n");
  }
  changed_.notify_all();
  // Hashed first: a chunk that completes the blob is accounted with it, as
  // an open complete blob, so a full cache cannot evict it before its
  // reader gets it (chunk_added evicts).
  auto result = advance_hash(index, bytes);
  if (result == HashResult::kPending) cache_.chunk_added(digest_, index, bytes.size());
  report(result);
}

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

void CachedBlob::abandon(size_t first, size_t last, std::exception_ptr error) {
  {
    std::lock_guard lock(mutex_);
    for (size_t i = first; i <= last && i < states_.size(); ++i) {
      if (states_[i] != State::kFetching) continue;
      states_[i] = State::kAbsent;
      errors_[i] = error;
    }
  }
  changed_.notify_all();
}

void CachedBlob::throw_deadline_passed() const {
  throw registry::Error(registry::ErrorKind::kTimeout,
                        "Cannot read blob " + digest_ +
                            ": it did not arrive within the operation's deadline "
                            "(--request-timeout); its fetch goes on in the background");
}

bool CachedBlob::wait(size_t first, size_t last) {
  std::unique_lock lock(mutex_);
  last = std::min(last, states_.size() - 1);
  while (true) {
    if (failed_) std::rethrow_exception(failed_);
    if (complete_) return true;
    bool fetching = false;
    for (size_t i = first; i <= last; ++i) {
      if (states_[i] == State::kPresent) continue;
      if (errors_[i]) std::rethrow_exception(errors_[i]);
      if (states_[i] == State::kAbsent) return false;
      fetching = true;
    }
    if (!fetching) return true;
    // A FUSE operation waits for the fetch only until its deadline; the
    // fetch goes on for the next reader.
    if (auto deadline = registry::current_deadline()) {
      if (changed_.wait_until(lock, *deadline) == std::cv_status::timeout &&
          registry::DeadlineClock::now() >= *deadline) {
        throw_deadline_passed();
      }
    } else {
      changed_.wait(lock);
    }
  }
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

void CachedBlob::mark_absent_locked(size_t index) {
  if (states_[index] != State::kPresent) return;
  states_[index] = State::kAbsent;
  verified_[index] = false;
  hashes_[index].clear();
  append_log("-" + std::to_string(index) + "\n");
}

// A new open file description of this instance's own cache file, found
// through /proc so that renames and unlinks of its path do not matter.
int CachedBlob::reopen_own_file(int flags) const {
  return ::open(("/proc/self/fd/" + std::to_string(fd_.get())).c_str(), flags | O_CLOEXEC);
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
