// Directory listings as the kernel caches them, FUSE-free so it is
// unit-tested.
//
// The mount answers no OPENDIR (FUSE_CAP_NO_OPENDIR_SUPPORT), so the kernel
// keeps every directory's listing and rereads it only when the directory's
// mtime or its own change counter moves (changes made through the mount move
// the counter). Most directories always list the same names. One whose
// listing can change (`can_change`) has an attribute timeout of 0, so the
// kernel asks for its attributes before each listing; its mtime is then
//   - once it has been listed: when its listing last changed, found by
//     listing it again (through the Tree's own caches, so the network is
//     asked no more often than --tag-ttl says);
//   - before that, or once forgotten: a new time at every answer, so no
//     listing the kernel holds can match it.
// Two different listings never share an mtime, so the kernel never serves
// a listing the daemon would not.
//
// Readdir has no handle either: a listing too long for one reply is kept
// from offset 0 until a reply reaches its end, so the offsets of one pass
// stay consistent.
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "fs/tree/tree.h"
#include "registry/core/bounded_map.h"

namespace regfs::fs {

class DirListings {
 public:
  using Lister = std::function<std::vector<NodePtr>(const Node&)>;
  using Listing = std::shared_ptr<const std::vector<NodePtr>>;

  explicit DirListings(Lister lister, size_t max_entries = 4096);

  // Whether `dir`'s listing can change between two answers: a registry's,
  // a namespace's or repository's, a tag's blobs/sha256/, a staged tree's.
  // (A tag's directory always lists the same names; rootfs/ is named by
  // its image's digest.)
  static bool can_change(const Node& dir);

  // The mtime of mutable directory `dir` (see above). Never throws: a
  // listing that fails keeps the last stamp.
  timespec mtime(const Node& dir);
  // The same without listing `dir` again (for entries, whose attributes
  // expire at once: the kernel asks `mtime` before it lists them).
  timespec last_mtime(const Node& dir);

  // The listing of `dir` for a readdir at `offset` of inode `ino`: listed
  // anew at offset 0 (recording a mutable directory's stamp), else the
  // listing of the same pass when one is kept. Throws what listing throws.
  Listing list(uint64_t ino, const Node& dir, long offset);
  // The reply at `offset` ended the pass (or did not): drop, or keep, the
  // listing for the next offsets.
  void served(uint64_t ino, const Listing& listing, bool reached_end);

 private:
  struct Stamp {
    size_t hash = 0;
    timespec mtime{};
  };
  static size_t hash_of(const std::vector<NodePtr>& entries);
  timespec fresh_time_locked();
  void record(const Node& dir, const std::vector<NodePtr>& entries);

  Lister lister_;
  std::mutex mutex_;  // guards all below; never held while listing
  // Forgetting either is always safe (see above): bounded, least recently
  // used forgotten first.
  registry::BoundedMap<std::string, Stamp> stamps_;  // by Node::key, mutable directories only
  registry::BoundedMap<uint64_t, Listing> passes_;   // by inode, listings mid-pass
  timespec last_time_{};
};

}  // namespace regfs::fs
