// Who uses a cache directory. Each mount holds a shared flock(2) on
// CacheLayout::lock_file() for its whole life (several mounts may share a
// cache) and names itself in mounts/<pid> (its mount point); `regfs cache
// clear` takes the lock exclusively without waiting and refuses while any
// mount holds it, since emptying a cache under a live mount breaks its reads.
// A flock goes with the last descriptor of its open file, so a mount killed
// (kill -9, a crash) never keeps the cache refused; a mounts/<pid> entry
// whose process is gone is stale, ignored and removed by the next clear.
// The lock's descriptor survives fork() (the daemon's), not exec().
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "cache/layout.h"
#include "cache/unique_fd.h"

namespace regfs::cache {

// A mount named in a cache's mounts/: its process and mount point.
struct CacheUser {
  pid_t pid = 0;
  std::string mountpoint;
};

// The live mounts named in the cache's mounts/ (stale entries skipped).
std::vector<CacheUser> cache_users(const CacheLayout& layout);

// A mount's use of a cache: the shared lock, held until destroyed.
class CacheUse {
 public:
  // Takes the shared lock, waiting while a `regfs cache clear` holds it.
  // Throws registry::Error (kIo) if the lock file cannot be opened or locked.
  explicit CacheUse(const CacheLayout& layout);
  // True if no other process held the lock when this one took it: no other
  // mount used the cache (fs/push/staging_tree.h then drops pushed staged
  // tags and resumes pushes; a mount joining a cache in use does not).
  bool alone() const { return alone_; }
  // Removes the mounts/ entry written by announce() in this process.
  ~CacheUse();
  CacheUse(const CacheUse&) = delete;
  CacheUse& operator=(const CacheUse&) = delete;

  // Names the mount at `mountpoint` in mounts/<getpid()>: call it in the
  // process that serves (after the daemon's fork). Best effort: a failure is
  // logged, the lock alone keeps clear away.
  void announce(const std::string& mountpoint);

 private:
  CacheLayout layout_;
  UniqueFd fd_;
  bool alone_ = false;
  pid_t announced_ = 0;
};

// The cache taken whole for a change no mount may see (`regfs cache clear`):
// the exclusive lock, held until destroyed.
class CacheExclusive {
 public:
  // The lock if no mount holds the cache (without waiting), else nullopt.
  // Throws registry::Error (kIo) if the lock file cannot be opened or locked.
  static std::optional<CacheExclusive> try_take(const CacheLayout& layout);

 private:
  explicit CacheExclusive(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace regfs::cache
