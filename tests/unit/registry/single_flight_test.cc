// SingleFlight (one task per key in flight) and SharedFlight (one run per
// key, its result shared), registry/core/single_flight.h, on an executor of
// their own (a thread per task) and on the calling thread.
#include "registry/core/single_flight.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace regfs::registry {
namespace {

using namespace std::chrono_literals;

// An executor: a thread per task, joined when it goes.
class Threads {
 public:
  ~Threads() {
    std::lock_guard lock(mutex_);
    for (auto& t : threads_) t.join();
  }
  void submit(std::function<void()> task) {
    std::lock_guard lock(mutex_);
    threads_.emplace_back(std::move(task));
  }

 private:
  std::mutex mutex_;
  std::vector<std::thread> threads_;
};

TEST(SingleFlightTest, OneTaskPerKeyInFlight) {
  SingleFlight flight;  // outlives the executor's tasks, as SingleFlight requires
  Threads threads;
  std::atomic<bool> release{false};
  std::atomic<int> runs{0};
  auto task = [&] {
    ++runs;
    while (!release) std::this_thread::sleep_for(1ms);
  };
  EXPECT_TRUE(flight.submit(threads, "a", task));
  EXPECT_FALSE(flight.submit(threads, "a", task));
  EXPECT_TRUE(flight.submit(threads, "b", task));
  release = true;
  for (int i = 0; i < 200 && runs < 2; ++i) std::this_thread::sleep_for(5ms);
  for (int i = 0; i < 200 && !flight.submit(threads, "a", [] {}); ++i) {
    std::this_thread::sleep_for(5ms);  // "a" ends, then a new one may start
  }
  EXPECT_EQ(runs, 2);
}

TEST(SharedFlightTest, CallersMeanwhileShareOneRunAndItsError) {
  SharedFlight<int> flight;  // outlives the executor's tasks
  Threads threads;
  std::atomic<bool> release{false};
  std::atomic<int> runs{0};
  auto task = [&] {
    ++runs;
    while (!release) std::this_thread::sleep_for(1ms);
    return 7;
  };
  auto first = flight.run(threads, "a", task);
  auto second = flight.run(threads, "a", task);
  EXPECT_EQ(first.wait_for(20ms), std::future_status::timeout);
  release = true;
  EXPECT_EQ(first.get(), 7);
  EXPECT_EQ(second.get(), 7);
  EXPECT_EQ(runs, 1);
  auto failed = flight.run(threads, "b", []() -> int { throw std::runtime_error("no"); });
  EXPECT_THROW(failed.get(), std::runtime_error);
  // Once a run is over, the key runs again.
  int again = 0;
  for (int i = 0; i < 200 && again != 8; ++i) {
    again = flight.run(threads, "a", [] { return 8; }).get();
  }
  EXPECT_EQ(again, 8);
}

TEST(SharedFlightTest, RunHereRunsOnTheCallerAndOthersJoinIt) {
  SharedFlight<int> flight;
  std::atomic<bool> started{false}, release{false};
  std::atomic<int> runs{0};
  std::thread::id ran_on;
  std::shared_future<int> first;
  std::thread leader([&] {
    first = flight.run_here("k", [&] {
      ran_on = std::this_thread::get_id();
      ++runs;
      started = true;
      while (!release) std::this_thread::sleep_for(1ms);
      return 5;
    });
  });
  while (!started) std::this_thread::sleep_for(1ms);
  // Joins the leader's run: neither runs its own task nor waits here.
  auto joined = flight.run_here("k", [&] { return ++runs, 6; });
  EXPECT_EQ(joined.wait_for(0ms), std::future_status::timeout);
  auto leader_id = leader.get_id();
  release = true;
  EXPECT_EQ(joined.get(), 5);
  leader.join();
  EXPECT_EQ(ran_on, leader_id);
  EXPECT_EQ(first.wait_for(0ms), std::future_status::ready);  // done when run_here returned
  EXPECT_EQ(runs, 1);
  // An error reaches every caller, and the key is free again afterwards.
  EXPECT_THROW(flight.run_here("k", []() -> int { throw std::runtime_error("no"); }).get(),
               std::runtime_error);
  EXPECT_EQ(flight.run_here("k", [] { return 9; }).get(), 9);
}

}  // namespace
}  // namespace regfs::registry

// claim(): the caller runs the work; others join until it settles; a claim
// dropped unsettled frees the key with an error rather than hanging.
TEST(SharedFlightClaimTest, JoinedUntilSettledAndFreedWhenDropped) {
  regfs::registry::SharedFlight<int> flight;
  auto [first, claim] = flight.claim("chunk");
  ASSERT_TRUE(claim);
  auto [joined, none] = flight.claim("chunk");
  EXPECT_FALSE(none) << "in flight: joined, not claimed again";
  claim->set_value(7);
  EXPECT_EQ(first.get(), 7);
  EXPECT_EQ(joined.get(), 7);
  auto [again, reclaimed] = flight.claim("chunk");
  ASSERT_TRUE(reclaimed) << "settled: the key is free";
  reclaimed.reset();
  EXPECT_THROW(again.get(), std::future_error);
  auto [after, free_again] = flight.claim("chunk");
  EXPECT_TRUE(free_again) << "a dropped claim frees its key";
}
