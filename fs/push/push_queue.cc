#include "fs/push/push_queue.h"

#include "registry/deadline.h"
#include "registry/error.h"

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
  try {
    job->work();
    job->done.set_value();
  } catch (...) {
    job->done.set_exception(std::current_exception());
  }
  bool more = false;
  {
    std::lock_guard lock(mutex_);
    auto it = lanes_.find(key);
    it->second.jobs.pop_front();
    if (it->second.jobs.empty()) {
      lanes_.erase(it);
    } else {
      more = true;
    }
    if (lanes_.empty()) idle_.notify_all();
  }
  // The next one of this key goes to the back of the executor's queue, so a
  // key with many pushes does not starve the others.
  if (more) executor_.submit([this, key] { run_front(key); });
}

void PushQueue::wait(const PushTicket& ticket, std::string_view what) {
  registry::wait_within_deadline(ticket, what);
  ticket.get();
}

void PushQueue::drain() {
  std::unique_lock lock(mutex_);
  closed_ = true;
  idle_.wait(lock, [&] { return lanes_.empty(); });
}

size_t PushQueue::busy_keys() {
  std::lock_guard lock(mutex_);
  return lanes_.size();
}

}  // namespace regfs::fs
