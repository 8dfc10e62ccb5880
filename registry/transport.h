// The request path shared by every Client call: credentials only for the
// registry's own origin, one pass through the auth flow on a 401, https with
// a remembered fall-back to http for loopback/--insecure registries, and
// retries of 408/429/5xx, failed connects and resets with jittered
// exponential backoff honouring Retry-After. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>

#include "registry/auth.h"
#include "registry/client.h"
#include "registry/core/error.h"
#include "registry/http.h"

namespace regfs::registry {

class Transport {
 public:
  explicit Transport(const ClientOptions& options);

  const ClientOptions& options() const { return options_; }
  HttpClient& http() { return http_; }
  // "https://host" or, after a fall-back, "http://host".
  std::string origin() const;
  // `target` made absolute: a path from the registry root, or already a URL.
  std::string full_url(std::string_view target) const;
  bool on_registry(std::string_view url) const;

  // How a request with a body stream (a blob GET) shapes send()'s attempts.
  struct Stream {
    // Before each attempt: sets up the request to send (Range, callbacks).
    std::function<void(HttpRequest*)> prepare;
    // After each attempt: true to return its response as it is (the stream
    // ended or was stopped, whatever became of the transfer).
    std::function<bool(const HttpResponse&)> finished;
    // After each attempt: true if it delivered bytes (the tries start over).
    std::function<bool()> progressed;
    // Follow 301/302/303/307/308 (credentials only on the registry's host).
    bool follow_redirects = false;
    // Throws to refuse where a redirect leads, before it is followed.
    std::function<void(const std::string& url)> check_redirect;
    // A host that is not the registry (a foreign layer's URL), sent with this
    // client: never authorized, no scheme fall-back, nothing recorded in the
    // registry's health. Null: the registry.
    HttpClient* foreign = nullptr;
  };

  // One logical request with auth, scheme fall-back and retries: the one
  // retry loop of every request but upload steps (send_step). Returns the
  // final response, whatever its status; throws Error on transport failure.
  // While the registry is marked down (registry/health.h) it throws at once,
  // unless `probe`: the request that finds out whether it is back. A retry
  // goes back to the registry (not to where it redirected).
  HttpResponse send(std::string_view what, const AuthScope& scope, std::string_view target,
                    const HttpRequest& request, bool probe = false, const Stream* stream = nullptr);

  // One step of an upload, which must not be resent blindly (the registry
  // may have done it and lost only the answer): the auth flow and 307/308
  // redirects are followed (credentials only to the registry's own host),
  // the scheme falls back while nothing reached the registry, and any other
  // failure is returned as it is (ok() false, or the status), for the caller
  // to ask the registry where it stands. `*answered` is set to the URL that
  // answered, to resolve its Location against. Only answers are recorded in
  // the registry's health here; the caller records a failure it gives up on.
  HttpResponse send_step(std::string_view what, const AuthScope& scope, std::string_view target,
                         const HttpRequest& request, std::string* answered);

  // Pieces for callers with their own loop (blob streams).
  // Adds Authorization when `request->url` is on the registry.
  void authorize(HttpRequest* request, const AuthScope& scope);
  // authorize(); when the token endpoint is down or busy, waits (attempt
  // counts the tries) and returns false to try again, or throws past
  // max_attempts.
  bool authorized(HttpRequest* request, const AuthScope& scope, int* attempt);
  // After a failed attempt at `url`: true if it should be repeated over plain
  // HTTP (switching to it now, when allowed, or already switched by another
  // thread).
  bool fall_back(const HttpResponse& response, std::string_view url);
  // Notes that the current scheme works.
  void confirm_scheme() { scheme_confirmed_ = true; }
  // After a 401 from the registry: true if a repeat may succeed.
  bool reauthorize(const AuthScope& scope, const HttpResponse& response, std::string_view url);
  // Sleeps before retry number `retry` (1, 2, ...); false, without sleeping,
  // if the response's Retry-After is longer than the request deadline.
  bool wait_to_retry(int retry, const HttpResponse* response);
  Error transport_error(const HttpResponse& response, std::string_view what) const;
  // Throws while the registry is marked down (see registry/health.h).
  void check_health(std::string_view what) const;
  // Tells the registry's health how a request to it ended, after its
  // retries: an answer (up; a 408/5xx is down) or a failure to get one.
  void record(const HttpResponse& response, std::string_view what);

 private:
  ClientOptions options_;
  std::string host_;  // API host, e.g. registry-1.docker.io
  bool insecure_;     // plain HTTP and unverified TLS allowed
  HttpClient http_;
  Authenticator auth_;
  std::atomic<bool> use_http_{false};
  std::atomic<bool> scheme_confirmed_{false};
};

bool retryable_status(int status);
bool retryable_failure(HttpFailure failure);

}  // namespace regfs::registry
