// The LRU index of the cache: which units of content (complete blobs, chunks
// of partial blobs, derived files) are kept, their sizes, and the order they
// were last used in. A tsl::robin_map finds a key's place in the recency
// list in O(1). Pinned keys (content open or staged) are never chosen as
// victims. Not thread-safe: BlobCache guards it.
#pragma once

#include <tsl/robin_map.h>

#include <cstdint>
#include <list>
#include <string>
#include <vector>

namespace regfs::cache {

class LruIndex {
 public:
  explicit LruIndex(uint64_t capacity) : capacity_(capacity) {}

  // Adds `key` (or updates its size) as the most recently used.
  void put(const std::string& key, uint64_t bytes);
  // Marks `key` used now; no-op if absent.
  void touch(const std::string& key);
  void erase(const std::string& key);
  bool contains(const std::string& key) const { return items_.count(key) != 0; }

  void pin(const std::string& key);
  void unpin(const std::string& key);
  bool pinned(const std::string& key) const;

  // Removes and returns least recently used, unpinned keys until the total is
  // within capacity (or nothing unpinned is left).
  std::vector<std::string> take_victims();

  // Calls fn(key, bytes) for every item, most recent first.
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (const auto& item : order_) fn(item.key, item.bytes);
  }

  uint64_t total() const { return total_; }
  uint64_t capacity() const { return capacity_; }
  size_t size() const { return items_.size(); }

 private:
  struct Item {
    std::string key;
    uint64_t bytes;
  };
  uint64_t capacity_;
  uint64_t total_ = 0;
  std::list<Item> order_;  // front: most recent
  tsl::robin_map<std::string, std::list<Item>::iterator> items_;
  tsl::robin_map<std::string, int> pins_;
};

}  // namespace regfs::cache
