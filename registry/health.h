// Whether a registry answers, as every request to it found out (SPEC §7):
// a request that failed after its retries (a timeout, a refused or reset
// connection, 408/5xx) marks the registry down; while it is down, requests
// fail at once with that error (kTimeout after a timeout, else
// kUnavailable) instead of waiting for it again, so that callers serve what
// they have cached at once; any answer (a probe's, or a request that was in
// flight) marks it up. The probe itself is the fs layer's (a GET /v2/ on a
// worker after probe_delay()); this is only the state, shared by every
// Client of one registry (ClientOptions::health). One log line when it goes
// down, one when it is back. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "registry/core/error.h"

namespace regfs::registry {

// The error of a request not made because its registry is down (kind
// kTimeout or kUnavailable): the "is down" log line said it once, so the
// operations that fail with it log it quietly.
class RegistryDown : public Error {
 public:
  using Error::Error;
};

class Health {
 public:
  struct State {
    bool up = true;
    std::string last_error;                       // the failure that marked it down (kept once up)
    std::chrono::system_clock::time_point since;  // of the current state
    uint64_t epoch = 0;                           // counts the times it went down
  };
  // Called outside the lock with the new state at each change.
  using Listener = std::function<void(const State&)>;

  explicit Health(std::string registry);

  const std::string& registry() const { return registry_; }
  // Throws, while the registry is down, the RegistryDown that says so for
  // `what`.
  void check(std::string_view what) const;
  bool down() const;
  State state() const;
  // A request got an answer from the registry.
  void answered();
  // A request failed after its retries with `error` (kTimeout or
  // kUnavailable: the registry did not answer, or answered 408/5xx).
  void failed(const Error& error);
  void add_listener(Listener listener);

  // The wait before probe number `attempt` (0, 1, ...) of a registry that is
  // down: 1 s doubling up to 30 s, each jittered to [75%, 100%].
  static std::chrono::milliseconds probe_delay(int attempt);

 private:
  void notify(const State& state);

  const std::string registry_;
  mutable std::mutex mutex_;  // guards the members below; never held while notifying
  State state_;
  ErrorKind kind_ = ErrorKind::kUnavailable;  // of the failure that marked it down
  std::vector<Listener> listeners_;
};

}  // namespace regfs::registry
