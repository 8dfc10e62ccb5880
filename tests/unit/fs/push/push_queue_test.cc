// The push queue (fs/push/push_queue.h): work of one tag in order and one at
// a time, tags side by side, results and errors delivered to every waiter,
// waits bounded by the request deadline, and a shutdown that drains.
#include "fs/push/push_queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "registry/core/deadline.h"
#include "registry/core/error.h"

namespace regfs::fs {
namespace {

using namespace std::chrono_literals;
using registry::Error;
using registry::ErrorKind;

// A gate work waits at until the test opens it.
class Gate {
 public:
  void open() { promise_.set_value(); }
  void wait() const { future_.wait(); }

 private:
  std::promise<void> promise_;
  std::shared_future<void> future_ = promise_.get_future().share();
};

TEST(PushQueueTest, RunsTheWorkOfOneTagInOrderAndOneAtATime) {
  PushQueue queue(4);
  std::mutex mutex;
  std::vector<int> order;
  std::atomic<int> running{0}, most{0};
  std::vector<PushTicket> tickets;
  for (int i = 0; i < 50; ++i) {
    tickets.push_back(queue.submit("r/app:v1", [&, i] {
      int now = ++running;
      most = std::max(most.load(), now);
      std::this_thread::sleep_for(1ms);
      {
        std::lock_guard lock(mutex);
        order.push_back(i);
      }
      --running;
    }));
  }
  for (auto& ticket : tickets) PushQueue::wait(ticket, "push");
  ASSERT_EQ(order.size(), 50u);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(order[i], i);
  EXPECT_EQ(most, 1);
  EXPECT_EQ(queue.busy_keys(), 0u);
}

TEST(PushQueueTest, RunsDifferentTagsSideBySideAndNeverOnTheCaller) {
  PushQueue queue(2);
  Gate a_started, b_started;
  std::thread::id a_thread;
  // Each waits for the other to start: only possible side by side.
  auto a = queue.submit("r/app:a", [&] {
    a_thread = std::this_thread::get_id();
    a_started.open();
    b_started.wait();
  });
  auto b = queue.submit("r/app:b", [&] {
    b_started.open();
    a_started.wait();
  });
  ASSERT_EQ(a.wait_for(10s), std::future_status::ready);
  ASSERT_EQ(b.wait_for(10s), std::future_status::ready);
  EXPECT_NE(a_thread, std::this_thread::get_id());
}

TEST(PushQueueTest, DeliversTheResultAndTheErrorToEveryWaiter) {
  PushQueue queue(2);
  Gate go;
  auto failed = queue.submit("r/app:v1", [&] {
    go.wait();
    throw Error(ErrorKind::kUnauthorized, "denied");
  });
  auto next = queue.submit("r/app:v1", [] {});  // runs after a failure too
  std::vector<std::future<ErrorKind>> waiters;
  for (int i = 0; i < 3; ++i) {
    waiters.push_back(std::async(std::launch::async, [failed] {
      try {
        PushQueue::wait(failed, "push r/app:v1");
      } catch (const Error& e) {
        return e.kind();
      }
      return ErrorKind::kInvalid;
    }));
  }
  go.open();
  for (auto& waiter : waiters) EXPECT_EQ(waiter.get(), ErrorKind::kUnauthorized);
  EXPECT_NO_THROW(PushQueue::wait(next, "push r/app:v1"));
}

TEST(PushQueueTest, AWaitGivesUpAtTheRequestDeadlineAndThePushGoesOn) {
  PushQueue queue(1);
  Gate go;
  std::atomic<bool> finished{false};
  auto ticket = queue.submit("r/app:v1", [&] {
    go.wait();
    finished = true;
  });
  {
    registry::ScopedDeadline deadline(50ms);
    auto start = std::chrono::steady_clock::now();
    try {
      PushQueue::wait(ticket, "push r/app:v1");
      FAIL() << "waited past the deadline";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kTimeout);
      EXPECT_NE(std::string(e.what()).find("push r/app:v1"), std::string::npos) << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  }
  EXPECT_FALSE(finished);
  go.open();
  // Without a deadline (a close()), the wait is for the push's end.
  PushQueue::wait(ticket, "push r/app:v1");
  EXPECT_TRUE(finished);
}

TEST(PushQueueTest, ShutdownRunsEverythingQueuedAndRefusesNewWork) {
  std::atomic<int> ran{0};
  std::vector<PushTicket> tickets;
  {
    PushQueue queue(1);
    for (int i = 0; i < 10; ++i) {
      tickets.push_back(queue.submit(i % 2 ? "r/app:odd" : "r/app:even", [&] {
        std::this_thread::sleep_for(5ms);
        ++ran;
      }));
    }
    queue.drain();
    EXPECT_EQ(ran, 10);
    auto late = queue.submit("r/app:v1", [&] { ++ran; });
    try {
      PushQueue::wait(late, "push");
      FAIL() << "work queued after shutdown ran";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUnavailable);
    }
  }
  EXPECT_EQ(ran, 10);
  for (auto& ticket : tickets) EXPECT_NO_THROW(ticket.get());
}

TEST(PushQueueTest, TheDestructorWaitsForWorkStillRunning) {
  std::atomic<bool> finished{false};
  Gate started;
  {
    PushQueue queue(2);
    queue.submit("r/app:v1", [&] {
      started.open();
      std::this_thread::sleep_for(100ms);
      finished = true;
    });
    started.wait();
  }
  EXPECT_TRUE(finished);
}

}  // namespace
}  // namespace regfs::fs
