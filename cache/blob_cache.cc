#include "cache/blob_cache.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <tuple>
#include <vector>

#include "cache/layout.h"
#include "registry/core/digest.h"
#include "registry/core/log.h"

namespace regfs::cache {

namespace fsys = std::filesystem;

namespace {

std::string blob_key(std::string_view hex) { return "b:" + std::string(hex); }
std::string chunk_key(std::string_view hex, size_t index) {
  return "c:" + std::string(hex) + ":" + std::to_string(index);
}

// Parses "c:<hex>:<i>".
bool parse_chunk_key(const std::string& key, std::string& hex, size_t& index) {
  auto colon = key.rfind(':');
  if (key.rfind("c:", 0) != 0 || colon <= 2) return false;
  hex = key.substr(2, colon - 2);
  index = std::stoul(key.substr(colon + 1));
  return true;
}

int64_t mtime_of(const fsys::path& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec
                                        : 0;
}

}  // namespace

BlobCache::BlobCache(fsys::path root, uint64_t capacity, uint64_t chunk_size)
    : store_(std::move(root)), chunk_size_(chunk_size), lru_(capacity) {
  std::error_code ec;
  fsys::create_directories(CacheLayout(store_.root()).partials(), ec);
  fsys::create_directories(CacheLayout(store_.root()).layers(), ec);
  scan();
  evict();
}

BlobCache::~BlobCache() {
  std::map<std::string, std::pair<uint64_t, std::vector<size_t>>> pending;
  {
    std::lock_guard lock(mutex_);
    pending = unhashed_;  // each CachedBlob below takes its own entry
  }
  size_t logged = 0;
  for (auto& [digest, entry] : pending) {
    std::error_code ec;
    if (!fsys::exists(CacheLayout(root()).chunk_log(digest), ec)) continue;
    try {
      CachedBlob blob(*this, digest, entry.first);
      logged += blob.record_hashes();
    } catch (const std::exception& e) {
      LOG(kWarning) << "Cannot record the chunk hashes of " << digest << ": " << e.what();
    }
  }
  if (logged) {
    LOG(kInfo) << "Logged the hashes of " << logged << " chunks of partial blobs";
  }
}

void BlobCache::note_unhashed(const std::string& digest, uint64_t size,
                              const std::vector<size_t>& chunks) {
  std::lock_guard lock(mutex_);
  auto& entry = unhashed_[digest];
  entry.first = size;
  entry.second.insert(entry.second.end(), chunks.begin(), chunks.end());
}

std::vector<size_t> BlobCache::take_unhashed(const std::string& digest) {
  std::lock_guard lock(mutex_);
  auto it = unhashed_.find(digest);
  if (it == unhashed_.end()) return {};
  auto chunks = std::move(it->second.second);
  unhashed_.erase(it);
  return chunks;
}

// Rebuilds the LRU from the directory, oldest first so the newest are kept.
void BlobCache::scan() {
  std::vector<std::tuple<int64_t, std::string, uint64_t>> found;
  std::error_code ec;
  for (auto& entry : fsys::directory_iterator(CacheLayout(root()).blobs(), ec)) {
    if (!entry.is_regular_file(ec)) continue;
    found.emplace_back(mtime_of(entry.path()), blob_key(entry.path().filename().string()),
                       entry.file_size(ec));
  }
  for (auto& entry : fsys::directory_iterator(CacheLayout(root()).partials(), ec)) {
    if (entry.path().extension() != CacheLayout::kChunkLogExtension) continue;
    std::ifstream in(entry.path());
    std::string magic, version;
    uint64_t size = 0, chunk = 0;
    if (!(in >> magic >> version >> size >> chunk) || chunk != chunk_size_) continue;
    std::map<size_t, bool> present;
    std::string op;
    while (in >> op) {
      if (op.size() < 2) continue;
      size_t index = std::strtoul(op.c_str() + 1, nullptr, 10);
      if (op[0] == '+') {
        std::string hash;
        in >> hash;
        present[index] = true;
      } else if (op[0] == '-') {
        present.erase(index);
      }
    }
    std::string hex = entry.path().stem().string();
    int64_t mtime = mtime_of(entry.path());
    for (auto& [index, _] : present) {
      uint64_t start = index * chunk_size_;
      if (start >= size) continue;
      found.emplace_back(mtime, chunk_key(hex, index), std::min(chunk_size_, size - start));
    }
  }
  for (auto& entry : fsys::recursive_directory_iterator(CacheLayout(root()).layers(), ec)) {
    if (!entry.is_regular_file(ec) || entry.path().string().find(".tmp") != std::string::npos) {
      continue;
    }
    found.emplace_back(mtime_of(entry.path()), file_key(entry.path()), entry.file_size(ec));
  }
  auto stale = std::chrono::system_clock::now() - std::chrono::hours(1);
  for (auto& entry : fsys::directory_iterator(CacheLayout(root()).tmp(), ec)) {
    auto age = mtime_of(entry.path());
    if (age <
        std::chrono::duration_cast<std::chrono::nanoseconds>(stale.time_since_epoch()).count()) {
      fsys::remove(entry.path(), ec);
    }
  }
  std::sort(found.begin(), found.end());
  std::lock_guard lock(mutex_);
  for (auto& [_, key, bytes] : found) lru_.put(key, bytes);
}

std::shared_ptr<CachedBlob> BlobCache::open(const std::string& digest, uint64_t size) {
  auto live = [&]() -> std::shared_ptr<CachedBlob> {
    auto it = live_.find(digest);
    if (it == live_.end()) return nullptr;
    auto blob = it->second.lock();
    if (!blob || blob->size() != size) return nullptr;
    lru_.touch(blob_key(registry::digest_hex(digest)));
    return blob;
  };
  std::shared_ptr<std::mutex> gate;
  {
    std::lock_guard lock(mutex_);
    if (auto blob = live()) return blob;
    auto& slot = opening_[digest];
    if (!slot) slot = std::make_shared<std::mutex>();
    gate = slot;
  }
  struct Leave {  // drops the gate when nobody else waits on it, even on a throw
    BlobCache& cache;
    const std::string& digest;
    ~Leave() {
      std::lock_guard lock(cache.mutex_);
      auto it = cache.opening_.find(digest);
      if (it != cache.opening_.end() && it->second.use_count() == 2) cache.opening_.erase(it);
    }
  } leave{*this, digest};
  std::shared_ptr<CachedBlob> blob;
  {
    std::lock_guard opening(*gate);
    {
      std::lock_guard lock(mutex_);
      blob = live();  // made by the open this one waited for
    }
    // Made outside mutex_: it may hash a whole complete file.
    if (!blob) {
      blob = std::make_shared<CachedBlob>(*this, digest, size);
      std::lock_guard lock(mutex_);
      live_[digest] = blob;
      lru_.touch(blob_key(registry::digest_hex(digest)));
    }
  }
  return blob;
}

std::optional<std::string> BlobCache::read_small(const std::string& digest, size_t max_size) {
  auto bytes = store_.read(digest, max_size);
  if (bytes) {
    std::lock_guard lock(mutex_);
    lru_.touch(blob_key(registry::digest_hex(digest)));
  }
  return bytes;
}

void BlobCache::put_small(const std::string& digest, std::string_view bytes) {
  store_.put(digest, bytes);
  {
    std::lock_guard lock(mutex_);
    lru_.put(blob_key(registry::digest_hex(digest)), bytes.size());
    verified_.insert(digest);
  }
  evict();
}

std::string BlobCache::file_key(const fsys::path& path) const {
  return "f:" + path.lexically_relative(root()).string();
}

void BlobCache::track_file(const fsys::path& path) {
  std::error_code ec;
  auto size = fsys::file_size(path, ec);
  if (ec) {  // gone: forgotten
    std::lock_guard lock(mutex_);
    lru_.erase(file_key(path));
    return;
  }
  {
    std::lock_guard lock(mutex_);
    lru_.put(file_key(path), size);
  }
  evict();
}

void BlobCache::pin_file(const fsys::path& path) {
  std::lock_guard lock(mutex_);
  lru_.pin(file_key(path));
  lru_.touch(file_key(path));
}

void BlobCache::unpin_file(const fsys::path& path) {
  std::lock_guard lock(mutex_);
  lru_.unpin(file_key(path));
}

BlobCache::ChunkPin::ChunkPin(BlobCache& cache, std::string digest, size_t first, size_t last)
    : cache_(cache), digest_(std::move(digest)), first_(first), last_(last) {
  std::lock_guard lock(cache_.mutex_);
  auto hex = registry::digest_hex(digest_);
  for (size_t i = first_; i <= last_; ++i) cache_.lru_.pin(chunk_key(hex, i));
}

BlobCache::ChunkPin::~ChunkPin() {
  std::lock_guard lock(cache_.mutex_);
  auto hex = registry::digest_hex(digest_);
  for (size_t i = first_; i <= last_; ++i) cache_.lru_.unpin(chunk_key(hex, i));
}

BlobCache::ChunkPin BlobCache::pin_chunks(const std::string& digest, size_t first, size_t last) {
  return ChunkPin(*this, digest, first, last);
}

void BlobCache::chunk_added(const std::string& digest, size_t index, uint64_t bytes) {
  {
    std::lock_guard lock(mutex_);
    auto hex = registry::digest_hex(digest);
    // Completed meanwhile by another fetcher: blob_completed accounted it.
    if (lru_.contains(blob_key(hex))) return;
    lru_.put(chunk_key(hex, index), bytes);
  }
  evict();
}

void BlobCache::chunk_known(const std::string& digest, size_t index, uint64_t bytes) {
  std::lock_guard lock(mutex_);
  auto key = chunk_key(registry::digest_hex(digest), index);
  if (!lru_.contains(key)) lru_.put(key, bytes);
}

void BlobCache::blob_completed(const std::string& digest, uint64_t size, size_t chunks) {
  {
    std::lock_guard lock(mutex_);
    auto hex = registry::digest_hex(digest);
    for (size_t i = 0; i < chunks; ++i) lru_.erase(chunk_key(hex, i));
    lru_.put(blob_key(hex), size);
    lru_.pin(blob_key(hex));  // open: released by ~CachedBlob
  }
  evict();
}

void BlobCache::blob_dropped(const std::string& digest, size_t chunks) {
  std::lock_guard lock(mutex_);
  auto hex = registry::digest_hex(digest);
  for (size_t i = 0; i < chunks; ++i) lru_.erase(chunk_key(hex, i));
  live_.erase(digest);  // the next open starts afresh
}

void BlobCache::hold_complete(const std::string& digest) {
  std::lock_guard lock(mutex_);
  lru_.pin(blob_key(registry::digest_hex(digest)));
}

void BlobCache::release_complete(const std::string& digest) {
  std::lock_guard lock(mutex_);
  lru_.unpin(blob_key(registry::digest_hex(digest)));
}

void BlobCache::forget_complete(const std::string& digest) {
  std::lock_guard lock(mutex_);
  lru_.erase(blob_key(registry::digest_hex(digest)));
  verified_.erase(digest);
}

bool BlobCache::is_verified(const std::string& digest) {
  std::lock_guard lock(mutex_);
  return verified_.count(digest) != 0;
}

void BlobCache::set_verified(const std::string& digest) {
  std::lock_guard lock(mutex_);
  verified_.insert(digest);
}

void BlobCache::evict() {
  std::vector<std::string> victims;
  {
    std::lock_guard lock(mutex_);
    victims = lru_.take_victims();
  }
  for (auto& key : victims) evict_key(key);
}

void BlobCache::evict_key(const std::string& key) {
  std::error_code ec;
  if (key.rfind("b:", 0) == 0) {
    fsys::remove(CacheLayout(root()).blobs() / key.substr(2), ec);
    std::lock_guard lock(mutex_);
    verified_.erase("sha256:" + key.substr(2));
  } else if (key.rfind("f:", 0) == 0) {
    fsys::remove(root() / key.substr(2), ec);
  } else {
    std::string hex;
    size_t index = 0;
    if (!parse_chunk_key(key, hex, index)) return;
    std::shared_ptr<CachedBlob> blob;
    {
      std::lock_guard lock(mutex_);
      auto it = live_.find("sha256:" + hex);
      if (it != live_.end()) blob = it->second.lock();
    }
    if (blob) {
      blob->evict_chunk(index);
      return;
    }
    // Not open here: punched without making a CachedBlob (no state to load).
    std::ifstream in(CacheLayout(root()).chunk_log("sha256:" + hex));
    std::string magic, version;
    uint64_t size = 0;
    if (!(in >> magic >> version >> size)) return;
    CachedBlob::evict_closed_chunk(layout(), "sha256:" + hex, size, chunk_size_, index);
  }
  LOG(kDebug) << "Evicted " << key;
}

CacheUsage BlobCache::usage() {
  CacheUsage usage;
  std::set<std::string> partial;
  std::lock_guard lock(mutex_);
  usage.capacity = lru_.capacity();
  lru_.for_each([&](const std::string& key, uint64_t bytes) {
    if (key.rfind("b:", 0) == 0) {
      usage.complete_bytes += bytes;
      ++usage.complete_blobs;
    } else if (key.rfind("c:", 0) == 0) {
      usage.partial_bytes += bytes;
      partial.insert(key.substr(2, key.rfind(':') - 2));
    } else {
      usage.derived_bytes += bytes;
    }
  });
  usage.partial_blobs = partial.size();
  return usage;
}

std::string human_size(uint64_t bytes) {
  const char* units = "BKMGTP";
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 5) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof text, "%lluB", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(text, sizeof text, "%.1f%c", value, units[unit]);
  }
  return text;
}

}  // namespace regfs::cache
