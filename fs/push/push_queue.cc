#include "fs/push/push_queue.h"

#include "registry/core/deadline.h"
#include "registry/core/error.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;

PushQueue::PushQueue(size_t threads) : executor_(threads) {}

PushQueue::~PushQueue() { drain(); }

PushTicket PushQueue::submit(const std::string& key, std::function<void()> work) {
  auto job = std::make_unique<Job>();
  job->work = std::move(work);
  PushTicket ticket = job->done.get_future().share();
  bool first = false;
  {
    std::lock_guard lock(mutex_);
    if (closed_) {
      job->done.set_exception(std::make_exception_ptr(
          Error(ErrorKind::kUnavailable, "Cannot push " + key + ": the mount is shutting down")));
      return ticket;
    }
    auto& lane = lanes_[key];
    first = lane.jobs.empty();
    lane.jobs.push_back(std::move(job));
  }
  // A lane with work already has a task on the executor; it runs this after.
  if (first) executor_.submit([this, key] { run_front(key); });
  return ticket;
}

void PushQueue::run_front(const std::string& key) {
  Job* job;
  {
    std::lock_guard lock(mutex_);
    job = lanes_.at(key).jobs.front().get();
  }
  std::exception_ptr error;
  try {
    job->work();
  } catch (...) {
    error = std::current_exception();
  }
  // Off the lane first, so that a waiter woken by the result finds the key
  // free (busy_keys, a next submit), then the result; drain() waits for both.
  std::unique_ptr<Job> ended;
  bool more = false;
  {
    std::lock_guard lock(mutex_);
    auto it = lanes_.find(key);
    ended = std::move(it->second.jobs.front());
    it->second.jobs.pop_front();
    if (it->second.jobs.empty()) {
      lanes_.erase(it);
    } else {
      more = true;
    }
    ++delivering_;
  }
  // The next one of this key goes to the back of the executor's queue, so a
  // key with many pushes does not starve the others.
  if (more) executor_.submit([this, key] { run_front(key); });
  if (error) {
    ended->done.set_exception(error);
  } else {
    ended->done.set_value();
  }
  std::lock_guard lock(mutex_);
  if (--delivering_ == 0 && lanes_.empty()) idle_.notify_all();
}

void PushQueue::wait(const PushTicket& ticket, std::string_view what) {
  registry::wait_within_deadline(ticket, what);
  ticket.get();
}

void PushQueue::drain() {
  std::unique_lock lock(mutex_);
  closed_ = true;
  idle_.wait(lock, [&] { return lanes_.empty() && delivering_ == 0; });
}

size_t PushQueue::busy_keys() {
  std::lock_guard lock(mutex_);
  return lanes_.size();
}

}  // namespace regfs::fs
