#include "cache/lru_index.h"

namespace regfs::cache {

void LruIndex::put(const std::string& key, uint64_t bytes) {
  auto it = items_.find(key);
  if (it != items_.end()) {
    total_ -= it->second->bytes;
    order_.erase(it->second);
    items_.erase(it);
  }
  order_.push_front(Item{key, bytes});
  items_.emplace(key, order_.begin());
  total_ += bytes;
}

void LruIndex::touch(const std::string& key) {
  auto it = items_.find(key);
  if (it == items_.end()) return;
  order_.splice(order_.begin(), order_, it->second);
}

void LruIndex::erase(const std::string& key) {
  auto it = items_.find(key);
  if (it == items_.end()) return;
  total_ -= it->second->bytes;
  order_.erase(it->second);
  items_.erase(it);
}

void LruIndex::pin(const std::string& key) { ++pins_[key]; }

void LruIndex::unpin(const std::string& key) {
  auto it = pins_.find(key);
  if (it == pins_.end()) return;
  if (--it.value() <= 0) pins_.erase(it);
}

bool LruIndex::pinned(const std::string& key) const { return pins_.count(key) != 0; }

std::vector<std::string> LruIndex::take_victims() {
  std::vector<std::string> victims;
  auto it = order_.end();
  while (total_ > capacity_ && it != order_.begin()) {
    --it;
    if (pinned(it->key)) continue;
    victims.push_back(it->key);
    total_ -= it->bytes;
    items_.erase(it->key);
    it = order_.erase(it);
  }
  return victims;
}

}  // namespace regfs::cache
