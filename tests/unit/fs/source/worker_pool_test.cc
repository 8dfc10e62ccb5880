// WorkerPool's delayed tasks, SingleFlight (one task per key in flight) and
// SharedFlight (one run per key, its result shared).
#include "fs/source/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include "fs/source/single_flight.h"

namespace regfs::fs {
namespace {

using namespace std::chrono_literals;

TEST(WorkerPoolTest, DelayedTasksRunWhenDueWithoutHoldingAThread) {
  WorkerPool pool(1);
  std::atomic<int> order{0};
  std::atomic<int> late_at{0}, soon_at{0};
  auto start = std::chrono::steady_clock::now();
  std::atomic<int64_t> late_ms{0};
  pool.submit_after(300ms, [&] {
    late_at = ++order;
    late_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
  });
  pool.submit([&] { soon_at = ++order; });  // not behind the delayed one
  for (int i = 0; i < 200 && late_at == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(soon_at, 1);
  EXPECT_EQ(late_at, 2);
  EXPECT_GE(late_ms, 290);
}

TEST(WorkerPoolTest, StoppingDropsDelayedTasks) {
  std::atomic<bool> ran{false};
  {
    WorkerPool pool(2);
    pool.submit_after(10s, [&] { ran = true; });
  }  // returns at once
  EXPECT_FALSE(ran);
}

TEST(SingleFlightTest, OneTaskPerKeyInFlight) {
  SingleFlight flight;  // outlives the pool's tasks, as SingleFlight requires
  WorkerPool pool(4);
  std::atomic<bool> release{false};
  std::atomic<int> runs{0};
  auto task = [&] {
    ++runs;
    while (!release) std::this_thread::sleep_for(1ms);
  };
  EXPECT_TRUE(flight.submit(pool, "a", task));
  EXPECT_FALSE(flight.submit(pool, "a", task));
  EXPECT_TRUE(flight.submit(pool, "b", task));
  release = true;
  for (int i = 0; i < 200 && runs < 2; ++i) std::this_thread::sleep_for(5ms);
  for (int i = 0; i < 200 && !flight.submit(pool, "a", [] {}); ++i) {
    std::this_thread::sleep_for(5ms);  // "a" ends, then a new one may start
  }
  EXPECT_EQ(runs, 2);
}

TEST(SharedFlightTest, CallersMeanwhileShareOneRunAndItsError) {
  SharedFlight<int> flight;  // outlives the pool's tasks
  WorkerPool pool(2);
  std::atomic<bool> release{false};
  std::atomic<int> runs{0};
  auto task = [&] {
    ++runs;
    while (!release) std::this_thread::sleep_for(1ms);
    return 7;
  };
  auto first = flight.run(pool, "a", task);
  auto second = flight.run(pool, "a", task);
  EXPECT_EQ(first.wait_for(20ms), std::future_status::timeout);
  release = true;
  EXPECT_EQ(first.get(), 7);
  EXPECT_EQ(second.get(), 7);
  EXPECT_EQ(runs, 1);
  auto failed = flight.run(pool, "b", []() -> int { throw std::runtime_error("no"); });
  EXPECT_THROW(failed.get(), std::runtime_error);
  // Once a run is over, the key runs again.
  int again = 0;
  for (int i = 0; i < 200 && again != 8; ++i) {
    again = flight.run(pool, "a", [] { return 8; }).get();
  }
  EXPECT_EQ(again, 8);
}

}  // namespace
}  // namespace regfs::fs
