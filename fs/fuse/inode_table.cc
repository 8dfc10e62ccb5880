#include "fs/fuse/inode_table.h"

#include <cstdlib>
#include <vector>

#include "registry/core/log.h"

namespace regfs::fs {

InodeTable::InodeTable(NodePtr root) { by_ino_[kRootIno] = Entry{std::move(root), 1}; }

uint64_t InodeTable::add_lookup(const NodePtr& node) {
  std::lock_guard lock(mutex_);
  if (node->key == "/") return kRootIno;
  uint64_t fresh = next_ino_;
  if (node->immutable()) {
    fresh = stable_.try_emplace(node->key, next_ino_).first->second;
  }
  auto same = [&node](const NodePtr& known) {
    return known->kind == node->kind && known->type_bits() == node->type_bits() &&
           known->reference == node->reference;
  };
  auto [it, added] = by_key_.try_emplace(node->key, fresh);
  if (added) {
    if (auto live = by_ino_.find(fresh); live == by_ino_.end()) {
      by_ino_[fresh] = Entry{node, 0};
      if (fresh == next_ino_) ++next_ino_;
    } else if (!same(live->second.node)) {
      // The stable number is still the kernel's for what the key named
      // before (something else took the key meanwhile, then was forgotten):
      // a new one, never that entry reset under the kernel's lookups.
      it->second = next_ino_++;
      by_ino_[it->second] = Entry{node, 0};
    }
  } else if (!same(by_ino_[it->second].node)) {
    // The path names something else now (a tag where a namespace stood, a
    // staged tag pushed): a new inode; the old one lives until forgotten.
    it->second = next_ino_++;
    by_ino_[it->second] = Entry{node, 0};
  }
  auto& entry = by_ino_[it->second];
  ++entry.nlookup;
  return it->second;
}

NodePtr InodeTable::get(uint64_t ino) const {
  std::lock_guard lock(mutex_);
  auto it = by_ino_.find(ino);
  return it == by_ino_.end() ? nullptr : it->second.node;
}

uint64_t InodeTable::known(const std::string& key) const {
  std::lock_guard lock(mutex_);
  if (key == "/") return kRootIno;
  if (auto it = by_key_.find(key); it != by_key_.end()) return it->second;
  if (auto it = stable_.find(key); it != stable_.end()) return it->second;
  return 0;
}

void InodeTable::forget(uint64_t ino, uint64_t count) {
  if (ino == kRootIno) return;
  std::lock_guard lock(mutex_);
  auto it = by_ino_.find(ino);
  if (it == by_ino_.end()) return;
  if (it->second.nlookup < count) {
    LOG(kError) << "Inode " << ino << " forgotten more often than looked up";
    std::abort();
  }
  it->second.nlookup -= count;
  if (it->second.nlookup == 0) {
    auto key = by_key_.find(it->second.node->key);
    if (key != by_key_.end() && key->second == ino) by_key_.erase(key);
    by_ino_.erase(it);
  }
}

void InodeTable::moved(const std::string& old_key, const NodePtr& node) {
  std::lock_guard lock(mutex_);
  auto top = by_key_.find(old_key);
  if (top == by_key_.end() || node->key == old_key) return;
  const Node& old_top = *by_ino_[top->second].node;
  const std::string old_staged = old_top.kind == NodeKind::kStaged ? old_top.staged().path : "";
  std::vector<std::pair<std::string, uint64_t>> moving;
  for (const auto& [key, ino] : by_key_) {
    if (key == old_key || key.starts_with(old_key + "/")) moving.emplace_back(key, ino);
  }
  for (const auto& [key, _] : moving) by_key_.erase(key);
  for (const auto& [key, ino] : moving) {
    auto& entry = by_ino_[ino];
    std::string new_key = node->key + key.substr(old_key.size());
    if (key == old_key) {
      entry.node = node;
    } else {
      auto copy = std::make_shared<Node>(*entry.node);
      copy->key = new_key;
      if (copy->kind == NodeKind::kStaged && node->kind == NodeKind::kStaged &&
          copy->staged().path.starts_with(old_staged + "/")) {
        copy->staged().path = node->staged().path + copy->staged().path.substr(old_staged.size());
      }
      entry.node = copy;
    }
    by_key_[new_key] = ino;
  }
}

size_t InodeTable::size() const {
  std::lock_guard lock(mutex_);
  return by_ino_.size();
}

}  // namespace regfs::fs
