#include "registry/health.h"

#include <ctime>
#include <random>

#include "registry/core/log.h"

namespace regfs::registry {
namespace {

// "10:52:07 UTC", for messages.
std::string clock_time(std::chrono::system_clock::time_point at) {
  return log::utc_text(std::chrono::system_clock::to_time_t(at), "%H:%M:%S UTC");
}

}  // namespace

Health::Health(std::string registry) : registry_(std::move(registry)) {
  state_.since = std::chrono::system_clock::now();
}

void Health::check(std::string_view what) const {
  std::lock_guard lock(mutex_);
  if (state_.up) return;
  throw RegistryDown(kind_, "Cannot " + std::string(what) + ": " + registry_ + " is down since " +
                                clock_time(state_.since) + " (" + state_.last_error +
                                "); waiting for a probe to see it back");
}

bool Health::down() const {
  std::lock_guard lock(mutex_);
  return !state_.up;
}

Health::State Health::state() const {
  std::lock_guard lock(mutex_);
  return state_;
}

void Health::answered() {
  State changed;
  {
    std::lock_guard lock(mutex_);
    if (state_.up) return;
    auto now = std::chrono::system_clock::now();
    auto seconds = std::chrono::duration_cast<std::chrono::seconds>(now - state_.since).count();
    state_.up = true;
    state_.since = now;
    changed = state_;
    LOG(kInfo) << "Registry " << registry_ << " is back up (down for " << seconds << " s)";
  }
  notify(changed);
}

void Health::failed(const Error& error) {
  State changed;
  {
    std::lock_guard lock(mutex_);
    state_.last_error = error.what();
    if (!state_.up) return;
    state_.up = false;
    state_.since = std::chrono::system_clock::now();
    ++state_.epoch;
    kind_ = error.kind() == ErrorKind::kTimeout ? ErrorKind::kTimeout : ErrorKind::kUnavailable;
    changed = state_;
    LOG(kWarning) << "Registry " << registry_ << " is down (" << error.what()
                  << "); serving what is cached, failing the rest at once until it answers again";
  }
  notify(changed);
}

void Health::add_listener(Listener listener) {
  std::lock_guard lock(mutex_);
  listeners_.push_back(std::move(listener));
}

void Health::notify(const State& state) {
  std::vector<Listener> listeners;
  {
    std::lock_guard lock(mutex_);
    listeners = listeners_;
  }
  for (const auto& listener : listeners) listener(state);
}

std::chrono::milliseconds Health::probe_delay(int attempt) {
  constexpr std::chrono::milliseconds kFirst{1000};
  constexpr std::chrono::milliseconds kMax{30'000};
  thread_local std::mt19937 rng{std::random_device{}()};
  auto ceiling = std::min(kMax, kFirst * (int64_t{1} << std::min(attempt, 5)));
  std::uniform_int_distribution<int64_t> jitter(ceiling.count() * 3 / 4, ceiling.count());
  return std::chrono::milliseconds(jitter(rng));
}

}  // namespace regfs::registry
