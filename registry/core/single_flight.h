// At most one run per key in flight: the one single-flight helper of regfs.
// The background refreshes of tag answers and listings (fs/source/content.h)
// run one per key, however many lookups find the same answer stale meanwhile
// (SingleFlight); the merges of an image's rootfs (fs/tree/rootfs.h) and the
// indexing of a layer (cache/layer_store.h) run one per key, and every caller
// meanwhile waits for the same result (SharedFlight). The work runs on the
// executor the caller names: anything with submit(std::function<void()>)
// (fs/source/worker_pool.h's WorkerPool), or the calling thread
// (SharedFlight::run_here), or the caller's own (SharedFlight::claim: a lazy
// layer's chunks, several fetched in one range, cache/lazy_layer.h).
// Header-only, no I/O.
#pragma once

#include <exception>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>

namespace regfs::registry {

class SingleFlight {
 public:
  // Runs `task` on `executor` (its submit(std::function<void()>)) unless a
  // task for `key` is queued or running there; returns whether it was
  // submitted. The SingleFlight must outlive the executor's tasks.
  template <typename Executor>
  bool submit(Executor& executor, const std::string& key, std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      if (!running_.insert(key).second) return false;
    }
    executor.submit([this, key, task = std::move(task)] {
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
  // on `executor` now. The future holds what `task` returns or throws; the
  // key is free again once it is set. The SharedFlight must outlive the
  // executor's tasks.
  template <typename Executor>
  std::shared_future<T> run(Executor& executor, const std::string& key, std::function<T()> task) {
    return start(key, std::move(task),
                 [&executor](std::function<void()> job) { executor.submit(std::move(job)); });
  }
  // The same, but a `task` started now runs on the calling thread: the
  // future is ready when this returns, unless another caller's run was
  // joined (then wait for it).
  std::shared_future<T> run_here(const std::string& key, std::function<T()> task) {
    return start(key, std::move(task), [](std::function<void()> job) { job(); });
  }

  // A key claimed by claim(), whose run the caller does itself: it sets the
  // result once (set_value or set_exception), which frees the key. One left
  // unset frees it with a broken_promise error when it goes.
  class Claim {
   public:
    Claim(SharedFlight& owner, std::string key, std::shared_ptr<std::promise<T>> promise)
        : owner_(owner), key_(std::move(key)), promise_(std::move(promise)) {}
    Claim(const Claim&) = delete;
    Claim& operator=(const Claim&) = delete;
    ~Claim() {
      if (promise_)
        set_exception(std::make_exception_ptr(std::future_error(std::future_errc::broken_promise)));
    }
    void set_value(T value) {
      promise_->set_value(std::move(value));
      release();
    }
    void set_exception(std::exception_ptr error) {
      promise_->set_exception(std::move(error));
      release();
    }

   private:
    void release() {
      promise_.reset();
      std::lock_guard lock(owner_.mutex_);
      owner_.running_.erase(key_);
    }
    SharedFlight& owner_;
    std::string key_;
    std::shared_ptr<std::promise<T>> promise_;
  };

  // The result to come of `key`, and no claim if a run is in flight (joined);
  // else the key is claimed for the caller, who runs the work as it likes
  // (several keys in one task, say) and settles the claim. The SharedFlight
  // must outlive its claims.
  std::pair<std::shared_future<T>, std::unique_ptr<Claim>> claim(const std::string& key) {
    auto promise = std::make_shared<std::promise<T>>();
    std::lock_guard lock(mutex_);
    if (auto it = running_.find(key); it != running_.end()) return {it->second, nullptr};
    auto result = promise->get_future().share();
    running_.emplace(key, result);
    return {result, std::make_unique<Claim>(*this, key, std::move(promise))};
  }

 private:
  template <typename Start>
  std::shared_future<T> start(const std::string& key, std::function<T()> task, Start&& begin) {
    auto [result, claimed] = claim(key);
    if (!claimed) return result;
    begin([claimed = std::shared_ptr<Claim>(std::move(claimed)), task = std::move(task)] {
      try {
        claimed->set_value(task());
      } catch (...) {
        claimed->set_exception(std::current_exception());
      }
    });
    return result;
  }

  std::mutex mutex_;  // guards running_
  std::map<std::string, std::shared_future<T>> running_;
};

}  // namespace regfs::registry
