// Inode numbers for tree nodes, as passthrough_hp.cc keeps them: every
// positive entry reply counts one lookup, forget() gives them back, and an
// inode is erased when its count reaches zero (the root never is). A node's
// key (its path) maps to one inode while the kernel holds it. Numbers are
// never reused for another node, so the generation is always 0. Immutable
// nodes (digest directories, blobs, rootfs entries) keep their number for the
// whole mount even after the kernel forgets them, so that tools comparing
// st_ino across a long walk (hardlinks under rootfs/) see stable numbers.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "fs/tree/tree.h"

namespace regfs::fs {

class InodeTable {
 public:
  static constexpr uint64_t kRootIno = 1;

  explicit InodeTable(NodePtr root);

  // The inode of `node` (by key), added if new; counts one lookup.
  uint64_t add_lookup(const NodePtr& node);
  // The node of `ino`, or nullptr if the kernel forgot it.
  NodePtr get(uint64_t ino) const;
  // The inode `key` has now (or keeps, an immutable node's), counting no
  // lookup; 0 if none (a plain READDIR's d_ino).
  uint64_t known(const std::string& key) const;
  // After a rename: the inode of `old_key`, and those under it, now stand
  // for `node` and its entries (their key and staged path follow), so the
  // kernel's inode of a moved entry keeps working. A replaced target's
  // inode keeps its node, with no key, until forgotten.
  void moved(const std::string& old_key, const NodePtr& node);
  // Gives back `count` lookups; aborts on underflow, as a bug it is.
  void forget(uint64_t ino, uint64_t count);
  size_t size() const;

 private:
  struct Entry {
    NodePtr node;
    uint64_t nlookup = 0;
  };
  mutable std::mutex mutex_;  // guards everything below; taken after no other lock
  std::unordered_map<uint64_t, Entry> by_ino_;
  std::unordered_map<std::string, uint64_t> by_key_;
  std::unordered_map<std::string, uint64_t> stable_;  // immutable nodes' numbers, kept
  uint64_t next_ino_ = kRootIno + 1;
};

}  // namespace regfs::fs
