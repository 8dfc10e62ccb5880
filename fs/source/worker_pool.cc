#include "fs/source/worker_pool.h"

#include "registry/core/log.h"

namespace regfs::fs {

WorkerPool::WorkerPool(size_t threads) {
  for (size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    delayed_.clear();
  }
  ready_.notify_all();
  for (auto& thread : threads_) thread.join();
}

void WorkerPool::submit(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    queue_.push_back(std::move(task));
  }
  ready_.notify_one();
}

void WorkerPool::submit_after(std::chrono::milliseconds delay, std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    delayed_.emplace(std::chrono::steady_clock::now() + delay, std::move(task));
  }
  // Every idle thread re-reads the earliest due time.
  ready_.notify_all();
}

void WorkerPool::run() {
  while (true) {
    std::function<void()> task;
    {
      std::unique_lock lock(mutex_);
      while (true) {
        auto now = std::chrono::steady_clock::now();
        while (!delayed_.empty() && delayed_.begin()->first <= now) {
          queue_.push_back(std::move(delayed_.begin()->second));
          delayed_.erase(delayed_.begin());
        }
        if (!queue_.empty() || stopping_) break;
        if (delayed_.empty()) {
          ready_.wait(lock);
        } else {
          // A copy: wait_until reads its deadline again after waking, and
          // another thread may have taken (freed) the element meanwhile.
          const auto due = delayed_.begin()->first;
          ready_.wait_until(lock, due);
        }
      }
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      task();
    } catch (const std::exception& e) {
      LOG(kError) << "Background task failed: " << e.what();
    }
  }
}

}  // namespace regfs::fs
