#include "registry/core/deadline.h"

#include <algorithm>
#include <string>

#include "registry/core/error.h"

namespace regfs::registry {
namespace {

thread_local std::optional<DeadlineClock::time_point> deadline;

}  // namespace

std::optional<DeadlineClock::time_point> current_deadline() { return deadline; }

std::optional<std::chrono::milliseconds> time_left() {
  if (!deadline) return std::nullopt;
  return std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - DeadlineClock::now());
}

std::chrono::milliseconds bounded_timeout(std::chrono::milliseconds timeout) {
  auto left = time_left();
  if (!left) return timeout;
  auto bounded = std::max(*left, std::chrono::milliseconds(1));
  return timeout.count() > 0 ? std::min(timeout, bounded) : bounded;
}

void check_deadline(std::string_view what) {
  auto left = time_left();
  if (left && left->count() <= 0) {
    throw Error(ErrorKind::kTimeout, "Cannot " + std::string(what) +
                                         ": the operation's deadline (--request-timeout) passed");
  }
}

ScopedDeadline::ScopedDeadline(std::chrono::milliseconds budget) : previous_(deadline) {
  auto mine = DeadlineClock::now() + budget;
  if (!deadline || mine < *deadline) deadline = mine;
}

ScopedDeadline::ScopedDeadline(std::optional<DeadlineClock::time_point> at) : previous_(deadline) {
  if (at && (!deadline || *at < *deadline)) deadline = at;
}

ScopedDeadline::~ScopedDeadline() { deadline = previous_; }

NoDeadline::NoDeadline() : previous_(deadline) { deadline.reset(); }

NoDeadline::~NoDeadline() { deadline = previous_; }

}  // namespace regfs::registry
