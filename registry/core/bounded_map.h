// A map that keeps at most `capacity` entries, forgetting the least
// recently used one to make room: the one bounded-cache helper of regfs
// for what is safe to forget (listing stamps and passes, name hints,
// loaded images, merged rootfs trees). Not thread-safe: its owner's mutex
// guards it. The cache's blobs and files are bounded by bytes instead
// (cache/lru_index.h).
#pragma once

#include <cstddef>
#include <list>
#include <unordered_map>
#include <utility>

namespace regfs::registry {

template <typename Key, typename Value>
class BoundedMap {
 public:
  // `capacity`: entries kept, at least 1.
  explicit BoundedMap(size_t capacity) : capacity_(capacity ? capacity : 1) {}

  // The value of `key` (now the most recently used), or nullptr.
  Value* find(const Key& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);
    return &it->second->second;
  }
  bool contains(const Key& key) const { return index_.count(key) > 0; }

  // Sets `key` to `value` (most recently used), forgetting the least
  // recently used entry if full; returns the stored value.
  Value& put(const Key& key, Value value) {
    if (auto* found = find(key)) return *found = std::move(value);
    if (index_.size() >= capacity_) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
    order_.emplace_front(key, std::move(value));
    index_.emplace(key, order_.begin());
    return order_.front().second;
  }

  void erase(const Key& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    order_.erase(it->second);
    index_.erase(it);
  }
  size_t size() const { return index_.size(); }

 private:
  using Entry = std::pair<Key, Value>;
  const size_t capacity_;
  std::list<Entry> order_;  // most recently used first
  std::unordered_map<Key, typename std::list<Entry>::iterator> index_;
};

}  // namespace regfs::registry
