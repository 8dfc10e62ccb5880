// CachedBlob (cache/cached_blob.h), its state: opening the complete or
// partial file, the chunk log, claims, stores and waits. The whole-blob hash
// and the chunk checks are in cached_blob_hash.cc, read leases and eviction
// in cached_blob_leases.cc.
#include "cache/cached_blob.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "cache/cached_blob_files.h"
#include "cache/layout.h"
#include "registry/core/deadline.h"
#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::cache {

using namespace blob_files;  // NOLINT: cache/cached_blob_files.h
using registry::Error;
using registry::ErrorKind;

namespace {

constexpr std::string_view kLogMagic = "regfs-chunks 1";

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

}  // namespace regfs::cache
