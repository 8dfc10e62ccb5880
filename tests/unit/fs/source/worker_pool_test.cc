// WorkerPool's delayed tasks, and the single-flight helpers
// (registry/core/single_flight.h) on a WorkerPool.
#include "fs/source/worker_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "registry/core/single_flight.h"

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

TEST(WorkerPoolTest, IsAnExecutorOfTheSingleFlightHelpers) {
  registry::SharedFlight<int> shared;  // both outlive the pool's tasks
  registry::SingleFlight single;
  std::atomic<int> runs{0};
  {
    WorkerPool pool(2);
    EXPECT_EQ(shared.run(pool, "a", [] { return 3; }).get(), 3);
    EXPECT_TRUE(single.submit(pool, "a", [&] { ++runs; }));
  }  // joined
  EXPECT_EQ(runs, 1);
}

}  // namespace
}  // namespace regfs::fs
