// A fixed pool of threads for slow work (HTTP transfers, hashing, tag
// refreshes, health probes), so that the FUSE threads only wait for what
// they need and readahead runs behind. Tasks may be delayed (submit_after):
// a waiting task holds no thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace regfs::fs {

class WorkerPool {
 public:
  explicit WorkerPool(size_t threads);
  // Finishes queued work, drops delayed tasks not due yet, then joins.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  void submit(std::function<void()> task);
  // Runs `task` once `delay` has passed.
  void submit_after(std::chrono::milliseconds delay, std::function<void()> task);

 private:
  void run();

  std::mutex mutex_;  // guards queue_, delayed_ and stopping_
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> delayed_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace regfs::fs
