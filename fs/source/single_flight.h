// At most one task per key in flight: the background refreshes of tag
// answers and listings (fs/source/content.h) run one per key, however many lookups
// find the same answer stale meanwhile (SingleFlight); the merges of an
// image's rootfs (fs/tree/rootfs.h) run one per image, and every request that
// needs one meanwhile waits for the same result (SharedFlight). The one
// single-flight helper of fs/.
#pragma once

#include <exception>
#include <functional>
#include <future>
#include <map>
#include <memory>
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

// At most one run per key in flight, whose result every caller shares.
template <typename T>
class SharedFlight {
 public:
  // The result to come of `key`'s run: the one in flight, or `task` submitted
  // on `pool` now. The future holds what `task` returns or throws; the key is
  // free again once it is set. The SharedFlight must outlive the pool's tasks.
  std::shared_future<T> run(WorkerPool& pool, const std::string& key, std::function<T()> task) {
    auto promise = std::make_shared<std::promise<T>>();
    std::shared_future<T> result;
    {
      std::lock_guard lock(mutex_);
      if (auto it = running_.find(key); it != running_.end()) return it->second;
      result = promise->get_future().share();
      running_.emplace(key, result);
    }
    pool.submit([this, key, promise, task = std::move(task)] {
      try {
        promise->set_value(task());
      } catch (...) {
        promise->set_exception(std::current_exception());
      }
      std::lock_guard lock(mutex_);
      running_.erase(key);
    });
    return result;
  }

 private:
  std::mutex mutex_;  // guards running_
  std::map<std::string, std::shared_future<T>> running_;
};

}  // namespace regfs::fs
