// The blob side of RegistryContent (fs/source/content.h): blobs read lazily
// by chunks with ranged GETs on the worker pool, foreign layers from their
// urls, BlobReader's readahead, and the transfers `regfs status` shows.
#include <algorithm>

#include "fs/source/content.h"
#include "registry/core/digest.h"
#include "registry/core/log.h"
#include "registry/foreign_blob.h"
#include "registry/reference.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;

void RegistryContent::fetch_foreign(const std::string& digest, uint64_t offset, uint64_t length,
                                    const uint64_t& delivered, const registry::BodySink& sink,
                                    const Error& missing) {
  std::vector<std::string> urls;
  {
    std::lock_guard lock(mutex_);
    if (auto it = foreign_urls_.find(digest); it != foreign_urls_.end()) urls = it->second;
  }
  if (urls.empty()) throw missing;
  if (!follow_urls_) {
    throw Error(ErrorKind::kBlobUnknown,
                std::string(missing.what()) + "; it is a foreign layer, and --no-urls is set");
  }
  std::string why;
  for (const auto& url : urls) {
    std::string origin = registry::url_origin(url);  // the log never shows a URL's query
    if (!registry::is_fetchable_url(url)) {
      why += "; " + origin + ": not an http or https URL";
      continue;
    }
    LOG(kInfo) << "Fetching foreign layer " << digest << " from " << origin;
    try {
      client_.get_foreign_blob(url, offset + delivered, length - delivered, sink);
      return;
    } catch (const Error& e) {
      LOG(kWarning) << e.what();
      why += std::string("; ") + e.what();
    }
  }
  throw Error(ErrorKind::kBlobUnknown,
              "Cannot fetch foreign layer " + digest + ": the registry lacks it" + why);
}

std::shared_ptr<BlobReader> RegistryContent::open_blob(const std::string& repository,
                                                       const std::string& digest, int64_t size) {
  if (size < 0) throw Error(ErrorKind::kInvalid, "Cannot read blob " + digest + ": negative size");
  return std::make_shared<BlobReader>(*this, repository,
                                      cache_.open(digest, static_cast<uint64_t>(size)));
}

std::filesystem::path RegistryContent::blob(
    const std::string& repository, const std::string& digest, int64_t size,
    const std::function<void(const std::shared_ptr<BlobReader>&)>& opened) {
  auto reader = open_blob(repository, digest, size);
  if (opened) opened(reader);
  reader->read_all();
  if (auto path = cache_.store().find(digest)) return *path;
  throw Error(ErrorKind::kNoSpace, "Cannot keep blob " + digest + " (" +
                                       cache::human_size(static_cast<uint64_t>(size)) +
                                       ") whole: larger than what --cache-size leaves free");
}

void RegistryContent::fetch(const std::string& repository, std::shared_ptr<cache::CachedBlob> blob,
                            size_t first, size_t last) {
  constexpr size_t kChunksPerRequest = 8;
  for (size_t start = first; start <= last; start += kChunksPerRequest) {
    size_t end = std::min(last, start + kChunksPerRequest - 1);
    auto& pool = blob->chunk_count() <= 1 ? small_pool_ : pool_;
    pool.submit([this, repository, blob, start, end] { fetch_run(repository, blob, start, end); });
  }
}

// Streams chunks [first, last] with one ranged GET, storing each chunk as
// soon as its last byte arrives.
void RegistryContent::fetch_run(const std::string& repository,
                                const std::shared_ptr<cache::CachedBlob>& blob, size_t first,
                                size_t last) {
  uint64_t offset = first * blob->chunk_size();
  uint64_t end = std::min(blob->size(), (last + 1) * blob->chunk_size());
  size_t current = first;
  auto id = transfers_.begin(name() + "/" + repository + "@" + blob->digest(), end - offset);
  try {
    // One chunk buffer per fetch thread, kept: fresh memory for every
    // request would cost a page fault per page.
    thread_local std::string buffer;
    buffer.clear();
    buffer.reserve(blob->chunk_size());
    uint64_t delivered = 0;
    registry::BodySink sink = [&](const char* data, size_t size) {
      transfers_.progress(id, size);
      delivered += size;
      while (size > 0) {
        if (current > last) return false;
        size_t want = blob->chunk_length(current) - buffer.size();
        size_t take = std::min(want, size);
        buffer.append(data, take);
        data += take;
        size -= take;
        if (buffer.size() == blob->chunk_length(current)) {
          blob->store_chunk(current, buffer);
          buffer.clear();
          ++current;
        }
      }
      return true;
    };
    try {
      client_.get_blob(repository, blob->digest(), offset, end - offset, sink);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kBlobUnknown) throw;
      fetch_foreign(blob->digest(), offset, end - offset, delivered, sink, e);
    }
    if (current <= last) {
      throw Error(ErrorKind::kIntegrity, "Cannot read blob " + blob->digest() +
                                             ": the registry sent fewer bytes than its size");
    }
  } catch (...) {
    blob->abandon(current, last, std::current_exception());
  }
  transfers_.end(id);
}

BlobReader::BlobReader(ChunkFetcher& fetcher, std::string repository,
                       std::shared_ptr<cache::CachedBlob> blob)
    : fetcher_(fetcher), repository_(std::move(repository)), blob_(std::move(blob)) {}

std::pair<size_t, size_t> BlobReader::claim_range(uint64_t offset, size_t length, size_t first,
                                                  size_t last) {
  constexpr size_t kExtent = 8;     // chunks: 16 MiB of 2 MiB chunks, one request
  constexpr size_t kMaxWindow = 4;  // extents: 64 MiB of readahead
  std::lock_guard lock(mutex_);
  // The kernel's own readahead makes one read look like a short sequence, so
  // a reader counts as sequential only once it has streamed a whole chunk.
  streamed_ = offset == next_offset_ ? streamed_ + length : length;
  next_offset_ = offset + length;
  // A read from offset 0 starts a stream (cat, sha256sum, cp): mark it at
  // once so concurrent readers claim whole extents from the first chunk.
  if (streamed_ >= blob_->chunk_size() || offset == 0) blob_->mark_streamed();
  if (!blob_->streamed()) {
    window_ = 0;
    return {first, last};
  }
  // Whole extents once anyone streams the blob; readahead for this reader
  // only while its own reads are sequential.
  window_ =
      streamed_ < blob_->chunk_size() ? 0 : std::min(kMaxWindow, window_ == 0 ? 1 : window_ * 2);
  size_t begin = first / kExtent * kExtent;
  size_t end = (last / kExtent + 1 + window_) * kExtent;
  return {begin, std::min(end, blob_->chunk_count()) - 1};
}

// A streamed blob's cache file pages more than two chunks behind the reader
// are not needed any more: the kernel keeps what it read in the FUSE file's
// page cache.
void BlobReader::drop_behind(size_t first) {
  if (!blob_->streamed() || first < 3) return;
  std::lock_guard lock(mutex_);  // one drop at a time per reader
  if (first - 2 > dropped_) dropped_ = blob_->drop_pages(dropped_, first - 3);
}

cache::ReadLease BlobReader::read(uint64_t offset, size_t length) {
  if (length == 0 || offset >= blob_->size() || blob_->complete()) {
    if (auto lease = blob_->lease(offset, length)) return std::move(*lease);
  }
  length = static_cast<size_t>(std::min<uint64_t>(length, blob_->size() - offset));
  size_t first = blob_->chunk_of(offset);
  size_t last = blob_->chunk_of(offset + length - 1);
  {
    constexpr auto kRepeat = std::chrono::seconds(1);
    std::lock_guard lock(mutex_);
    if (gave_up_chunk_ == first && std::chrono::steady_clock::now() - gave_up_at_ < kRepeat &&
        !blob_->present(first, last)) {
      throw Error(ErrorKind::kTimeout, "Cannot read blob " + blob_->digest() +
                                           ": it is still on its way (the read before gave up at "
                                           "its deadline)");
    }
  }
  try {
    return read_chunks(offset, length, first, last);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kTimeout) {
      std::lock_guard lock(mutex_);
      gave_up_at_ = std::chrono::steady_clock::now();
      gave_up_chunk_ = first;
    }
    throw;
  }
}

cache::ReadLease BlobReader::read_chunks(uint64_t offset, size_t length, size_t first,
                                         size_t last) {
  auto [claim_first, claim_last] = claim_range(offset, length, first, last);
  drop_behind(first);
  // The chunks of this read stay out of eviction until the lease holds them
  // (its OFD lock then keeps them): other readers' fetches in a small cache
  // would otherwise punch them between their arrival and this read.
  auto pin = fetcher_.cache().pin_chunks(blob_->digest(), first, last);
  for (int attempt = 0; attempt < 8; ++attempt) {
    for (auto [a, b] : blob_->claim(claim_first, claim_last)) {
      fetcher_.fetch(repository_, blob_, a, b);
    }
    claim_first = first;
    claim_last = last;
    if (!blob_->wait(first, last)) continue;
    // A read of the end of a blob that is all here waits for the digest
    // check, so a reader going to the end (cat, cp) gets EIO rather than
    // a wrong file if the registry sent other bytes than its digest says.
    if (last + 1 == blob_->chunk_count() && !blob_->complete() && blob_->all_present()) {
      blob_->await_verified();
    }
    if (auto lease = blob_->lease(offset, length)) return std::move(*lease);
  }
  throw Error(ErrorKind::kIo, "Cannot read blob " + blob_->digest() +
                                  ": its chunks keep being evicted (is --cache-size too small?)");
}

void BlobReader::read_all() {
  if (blob_->size() == 0) {
    blob_->wait(0, 0);
    return;
  }
  size_t last = blob_->chunk_count() - 1;
  // Wanted whole (to index a layer): its chunks stay out of eviction until
  // it is complete, even past --cache-size, or a blob larger than the bound
  // would never be whole; the complete blob is held while it is open.
  auto pin = fetcher_.cache().pin_chunks(blob_->digest(), 0, last);
  for (int attempt = 0; attempt < 8; ++attempt) {
    for (auto [a, b] : blob_->claim(0, last)) fetcher_.fetch(repository_, blob_, a, b);
    if (blob_->wait(0, last) && blob_->await_complete()) return;
  }
  throw Error(ErrorKind::kIo, "Cannot read blob " + blob_->digest() + " whole");
}

uint64_t Transfers::begin(std::string what, uint64_t total) {
  std::lock_guard lock(mutex_);
  active_[next_id_] = Info{std::move(what), 0, total, std::chrono::steady_clock::now()};
  return next_id_++;
}

void Transfers::progress(uint64_t id, uint64_t bytes) {
  std::lock_guard lock(mutex_);
  if (auto it = active_.find(id); it != active_.end()) it->second.done += bytes;
}

void Transfers::end(uint64_t id) {
  std::lock_guard lock(mutex_);
  active_.erase(id);
}

std::vector<Transfers::Info> Transfers::snapshot() {
  std::lock_guard lock(mutex_);
  std::vector<Info> infos;
  for (auto& [_, info] : active_) infos.push_back(info);
  return infos;
}

}  // namespace regfs::fs
