// One deadline per file operation (SPEC §1 --request-timeout, §7): the FUSE
// glue opens a ScopedDeadline for each operation, and everything the
// operation chains on its thread (token fetches, manifest and list requests,
// retries and their backoff, waits for chunks that workers fetch) takes
// what is left of it, so the operation waits at most that long in total.
// Background work (workers, probes, pushes) runs without one and uses the
// per-request timeouts of registry::ClientOptions. Thread-local, so nothing
// has to pass it down; no I/O here (the curl side is registry/http.cc).
#pragma once

#include <chrono>
#include <future>
#include <optional>
#include <string_view>

namespace regfs::registry {

using DeadlineClock = std::chrono::steady_clock;

// The deadline of the operation running on this thread, if any.
std::optional<DeadlineClock::time_point> current_deadline();

// Time left before the current deadline (zero or less: passed); nullopt
// without one.
std::optional<std::chrono::milliseconds> time_left();

// `timeout` shortened to what the current deadline leaves (at least 1 ms,
// so that a zero never means "no limit" to curl); zero `timeout` means none.
std::chrono::milliseconds bounded_timeout(std::chrono::milliseconds timeout);

// Throws Error(kTimeout) naming `what` if the current deadline has passed.
void check_deadline(std::string_view what);

// Waits for `future` until the current deadline, if any; throws
// Error(kTimeout) naming `what` if it passes first (the work goes on).
template <typename Future>
void wait_within_deadline(const Future& future, std::string_view what) {
  if (auto deadline = current_deadline()) {
    if (future.wait_until(*deadline) != std::future_status::ready) {
      check_deadline(what);
      future.wait();  // (a spurious early return)
    }
  }
}

// Sets this thread's deadline to now + `budget` for its lifetime (an
// enclosing, earlier deadline is kept), and restores the previous one.
class ScopedDeadline {
 public:
  explicit ScopedDeadline(std::chrono::milliseconds budget);
  // The deadline `at` (another thread's, carried to a helper thread); none
  // if nullopt.
  explicit ScopedDeadline(std::optional<DeadlineClock::time_point> at);
  ~ScopedDeadline();
  ScopedDeadline(const ScopedDeadline&) = delete;
  ScopedDeadline& operator=(const ScopedDeadline&) = delete;

 private:
  std::optional<DeadlineClock::time_point> previous_;
};

// Runs the code in its scope without the thread's deadline (work that a
// FUSE operation starts but that must not be cut short by it).
class NoDeadline {
 public:
  NoDeadline();
  ~NoDeadline();
  NoDeadline(const NoDeadline&) = delete;
  NoDeadline& operator=(const NoDeadline&) = delete;

 private:
  std::optional<DeadlineClock::time_point> previous_;
};

}  // namespace regfs::registry
