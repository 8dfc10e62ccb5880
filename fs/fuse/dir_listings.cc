#include "fs/fuse/dir_listings.h"

#include <functional>

namespace regfs::fs {

DirListings::DirListings(Lister lister, size_t max_entries)
    : lister_(std::move(lister)), stamps_(max_entries), passes_(max_entries) {}

bool DirListings::can_change(const Node& dir) {
  if (!dir.is_dir() || dir.immutable()) return false;
  switch (dir.kind) {
    case NodeKind::kRoot:
    case NodeKind::kNamespace:
    case NodeKind::kBlobsAlgDir:
    case NodeKind::kStaged:
      return true;
    default:
      return false;
  }
}

size_t DirListings::hash_of(const std::vector<NodePtr>& entries) {
  size_t hash = entries.size();
  for (const auto& entry : entries) {
    size_t h = std::hash<std::string>{}(entry->name) ^ static_cast<size_t>(entry->type_bits());
    hash ^= h + 0x9e3779b97f4a7c15ULL + (hash << 6) + (hash >> 2);
  }
  return hash;
}

// A time later than every one given before: the wall clock, or one
// nanosecond past the last when the clock has not moved (or went back).
timespec DirListings::fresh_time_locked() {
  timespec now{};
  clock_gettime(CLOCK_REALTIME, &now);
  if (now.tv_sec < last_time_.tv_sec ||
      (now.tv_sec == last_time_.tv_sec && now.tv_nsec <= last_time_.tv_nsec)) {
    now = last_time_;
    if (++now.tv_nsec == 1000000000L) {
      now.tv_nsec = 0;
      ++now.tv_sec;
    }
  }
  last_time_ = now;
  return now;
}

void DirListings::record(const Node& dir, const std::vector<NodePtr>& entries) {
  if (!can_change(dir)) return;
  size_t hash = hash_of(entries);
  std::lock_guard lock(mutex_);
  auto* stamp = stamps_.find(dir.key);
  if (stamp && stamp->hash == hash) return;
  stamps_.put(dir.key, Stamp{hash, fresh_time_locked()});
}

timespec DirListings::mtime(const Node& dir) {
  {
    std::lock_guard lock(mutex_);
    if (!stamps_.contains(dir.key)) return fresh_time_locked();
  }
  try {
    record(dir, lister_(dir));
  } catch (...) {
    // Unreachable registry, say: the listing the kernel holds stays, as the
    // daemon's own does; the next answer tries again.
  }
  std::lock_guard lock(mutex_);
  auto* stamp = stamps_.find(dir.key);
  return stamp ? stamp->mtime : fresh_time_locked();
}

timespec DirListings::last_mtime(const Node& dir) {
  std::lock_guard lock(mutex_);
  auto* stamp = stamps_.find(dir.key);
  return stamp ? stamp->mtime : fresh_time_locked();
}

DirListings::Listing DirListings::list(uint64_t ino, const Node& dir, long offset) {
  if (offset > 0) {
    std::lock_guard lock(mutex_);
    if (auto* listing = passes_.find(ino)) return *listing;
  }
  auto listing = std::make_shared<const std::vector<NodePtr>>(lister_(dir));
  record(dir, *listing);
  return listing;
}

void DirListings::served(uint64_t ino, const Listing& listing, bool reached_end) {
  std::lock_guard lock(mutex_);
  if (reached_end) {
    passes_.erase(ino);
    return;
  }
  passes_.put(ino, listing);
}

}  // namespace regfs::fs
