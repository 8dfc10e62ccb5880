// The push queue (SPEC §4): every push of a staged tag runs here, on the
// queue's own executor (a WorkerPool), never on a FUSE thread. Work for one
// key (a staged tag, "registry/repository:tag") runs in the order it was
// queued and one at a time; work for different keys runs side by side, as
// many at once as the executor has threads. The caller gets a PushTicket:
// the close() that completes a tag waits on it for the push's result (its
// errno), a FUSE operation with a request deadline gives up waiting when the
// deadline passes (the push goes on), and background callers (builds,
// resumed pushes) need not wait at all.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "fs/source/worker_pool.h"

namespace regfs::fs {

// The result of one queued piece of work: ready when it has run; get()
// rethrows what it threw.
using PushTicket = std::shared_future<void>;

class PushQueue {
 public:
  // `threads`: how many keys push at once.
  explicit PushQueue(size_t threads);
  // Drains: runs everything queued (drain()), then joins the executor.
  ~PushQueue();
  PushQueue(const PushQueue&) = delete;
  PushQueue& operator=(const PushQueue&) = delete;

  // Queues `work` for `key`, after the work queued for it before. Never
  // runs `work` on the calling thread. After shutdown began: runs nothing,
  // the ticket holds Error(kUnavailable).
  PushTicket submit(const std::string& key, std::function<void()> work);

  // Waits for `ticket` and rethrows its error. Within the calling thread's
  // request deadline if it has one (registry/deadline.h): when it passes
  // first, throws Error(kTimeout) naming `what` and the work goes on.
  static void wait(const PushTicket& ticket, std::string_view what);

  // Refuses new work, then waits until everything queued has run.
  void drain();

  // Keys with work queued or running (for tests and status).
  size_t busy_keys();

 private:
  struct Job {
    std::function<void()> work;
    std::promise<void> done;
  };
  struct Lane {
    std::deque<std::unique_ptr<Job>> jobs;  // front: the one running
  };
  void run_front(const std::string& key);

  std::mutex mutex_;  // guards lanes_, delivering_ and closed_; never held while work runs
  std::condition_variable idle_;
  std::map<std::string, Lane> lanes_;  // keys with work queued or running
  size_t delivering_ = 0;              // jobs off their lane whose result is being set
  bool closed_ = false;
  WorkerPool executor_;  // last: joined first, while the lanes still exist
};

}  // namespace regfs::fs
