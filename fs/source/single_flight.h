// At most one task per key in flight: the background refreshes of tag
// answers and listings (fs/source/content.h) run one per key, however many lookups
// find the same answer stale meanwhile. The one single-flight helper of fs/.
#pragma once

#include <functional>
#include <mutex>
#include <set>
#include <string>

#include "fs/source/worker_pool.h"

namespace regfs::fs {

class SingleFlight {
 public:
  // Runs `task` on `pool` unless a task for `key` is queued or running
  // there; returns whether it was submitted. The SingleFlight must outlive
  // the pool's tasks.
  bool submit(WorkerPool& pool, const std::string& key, std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      if (!running_.insert(key).second) return false;
    }
    pool.submit([this, key, task = std::move(task)] {
      struct Done {
        SingleFlight* self;
        const std::string& key;
        ~Done() {
          std::lock_guard lock(self->mutex_);
          self->running_.erase(key);
        }
      } done{this, key};
      task();
    });
    return true;
  }

 private:
  std::mutex mutex_;  // guards running_
  std::set<std::string> running_;
};

}  // namespace regfs::fs
