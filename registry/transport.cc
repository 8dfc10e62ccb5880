// See transport.h. Backoff: attempt n waits a random time in [c/2, c] where
// c = min(4 s, 200 ms * 2^n); a Retry-After in seconds raises the wait, and
// one longer than the request deadline ends the retries at once.
#include "registry/transport.h"

#include <filesystem>
#include <random>
#include <thread>

#include "registry/core/deadline.h"
#include "registry/core/log.h"
#include "registry/reference.h"

namespace regfs::registry {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kBackoffBase{200};
constexpr milliseconds kBackoffCap{4000};
constexpr int kMaxRedirects = 5;

bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// Extra CAs: --ca-cert plus docker's and containers' per-host directories.
std::vector<std::string> ca_files(const ClientOptions& options, const std::string& host) {
  std::vector<std::string> files;
  if (!options.ca_cert.empty()) files.push_back(options.ca_cert);
  std::vector<std::string> names = {options.registry};
  if (host != options.registry) names.push_back(host);
  for (const char* root : {"/etc/docker/certs.d/", "/etc/containers/certs.d/"}) {
    for (const auto& name : names) {
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator(root + name, ec)) {
        if (entry.path().extension() == ".crt") files.push_back(entry.path());
      }
    }
  }
  return files;
}

// A client certificate from the per-host directories, as docker reads them:
// NAME.cert with NAME.key beside it. {"", ""} if none.
std::pair<std::string, std::string> client_cert(const ClientOptions& options,
                                                const std::string& host) {
  std::vector<std::string> names = {options.registry};
  if (host != options.registry) names.push_back(host);
  for (const char* root : {"/etc/docker/certs.d/", "/etc/containers/certs.d/"}) {
    for (const auto& name : names) {
      std::error_code ec;
      for (const auto& entry : std::filesystem::directory_iterator(root + name, ec)) {
        if (entry.path().extension() != ".cert") continue;
        auto key = entry.path();
        key.replace_extension(".key");
        if (std::filesystem::exists(key, ec)) return {entry.path(), key};
        LOG(kWarning) << "Cannot use client certificate " << entry.path().string() << ": no "
                      << key.filename().string() << " beside it";
      }
    }
  }
  return {};
}

HttpOptions http_options(const ClientOptions& options, const std::string& host, bool insecure) {
  auto [cert, key] = client_cert(options, host);
  return HttpOptions{.verify_tls = !insecure,
                     .ca_files = ca_files(options, host),
                     .client_cert = cert,
                     .client_key = key,
                     .connect_timeout = options.connect_timeout,
                     .user_agent = "regfs/0.1"};
}

milliseconds backoff(int retry) {
  thread_local std::mt19937 rng{std::random_device{}()};
  auto ceiling = std::min(kBackoffCap, kBackoffBase * (1 << std::min(retry, 10)));
  std::uniform_int_distribution<int64_t> jitter(ceiling.count() / 2, ceiling.count());
  return milliseconds(jitter(rng));
}

// Seconds of a Retry-After header (the HTTP-date form is ignored).
std::optional<milliseconds> retry_after(const HttpResponse& response) {
  auto value = response.headers.get("Retry-After");
  if (!value || value->empty() || value->size() > 6 ||
      value->find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  return milliseconds(std::stoll(*value) * 1000);
}

}  // namespace

bool retryable_status(int status) {
  return status == 408 || status == 429 || (status >= 500 && status != 501 && status != 505);
}

bool retryable_failure(HttpFailure failure) {
  return failure == HttpFailure::kConnect || failure == HttpFailure::kReset;
}

Transport::Transport(const ClientOptions& options)
    : options_(options),
      host_(api_host(options.registry)),
      insecure_(options.insecure || is_loopback(options.registry)),
      http_(http_options(options, host_, insecure_)),
      auth_(http_, AuthOptions{.registry = options.registry,
                               .insecure = insecure_,
                               .timeout = options.request_timeout,
                               .credentials = options.credentials}) {}

std::string Transport::origin() const {
  return (use_http_.load() ? "http://" : "https://") + host_;
}

std::string Transport::full_url(std::string_view target) const {
  return target.starts_with('/') ? origin() + std::string(target) : std::string(target);
}

bool Transport::on_registry(std::string_view url) const { return url_origin(url) == origin(); }

bool Transport::fall_back(const HttpResponse& response, std::string_view url) {
  if (!insecure_) return false;
  if (!url.starts_with("https://")) {
    // Plain HTTP failed before either scheme ever worked (the registry may be
    // down): try HTTPS first again next time.
    if (!scheme_confirmed_.load()) use_http_ = false;
    return false;
  }
  if (use_http_.load()) return true;  // another request switched already
  if (scheme_confirmed_.load()) return false;
  if (response.failure != HttpFailure::kTls && response.failure != HttpFailure::kConnect &&
      response.failure != HttpFailure::kReset) {
    return false;
  }
  LOG(kDebug) << "Using plain HTTP for " << options_.registry
              << " (HTTPS failed: " << response.error << ")";
  use_http_ = true;
  return true;
}

Error Transport::transport_error(const HttpResponse& response, std::string_view what) const {
  ErrorKind kind = ErrorKind::kUnavailable;
  std::string reason = response.error;
  if (response.failure == HttpFailure::kTimeout) kind = ErrorKind::kTimeout;
  if (response.failure == HttpFailure::kSource) kind = ErrorKind::kIo;
  if (response.failure == HttpFailure::kTooLarge) {
    kind = ErrorKind::kInvalid;
    reason = "the response is too large";
  }
  return Error(kind, "Cannot " + std::string(what) + ": " + reason);
}

void Transport::check_health(std::string_view what) const {
  if (options_.health) options_.health->check(what);
}

void Transport::record(const HttpResponse& response, std::string_view what) {
  const auto& health = options_.health;
  if (!health) return;
  if (!response.ok()) {
    bool unreachable = response.failure == HttpFailure::kConnect ||
                       response.failure == HttpFailure::kReset ||
                       response.failure == HttpFailure::kTimeout;
    if (response.attempted && unreachable) health->failed(transport_error(response, what));
    return;
  }
  if (response.status != 429 && retryable_status(response.status)) {
    health->failed(Error(ErrorKind::kUnavailable, "Cannot " + std::string(what) + ": HTTP " +
                                                      std::to_string(response.status)));
    return;
  }
  health->answered();
}

void Transport::authorize(HttpRequest* request, const AuthScope& scope) {
  if (!on_registry(request->url)) return;  // never to another host
  if (auto header = auth_.authorization(scope, request->url)) {
    request->headers.push_back(*header);
  }
}

bool Transport::reauthorize(const AuthScope& scope, const HttpResponse& response,
                            std::string_view url) {
  auto challenge = response.headers.get("WWW-Authenticate");
  return challenge && on_registry(url) && auth_.on_unauthorized(scope, *challenge, url);
}

bool Transport::authorized(HttpRequest* sent, const AuthScope& scope, int* attempt) {
  try {
    authorize(sent, scope);
    return true;
  } catch (const Error& e) {
    bool again = e.kind() == ErrorKind::kUnavailable || e.kind() == ErrorKind::kTooManyRequests;
    if (!again || *attempt >= options_.max_attempts) throw;
    wait_to_retry((*attempt)++, nullptr);
    return false;
  }
}

bool Transport::wait_to_retry(int retry, const HttpResponse* response) {
  milliseconds delay = backoff(retry - 1);
  if (response) {
    if (auto after = retry_after(*response)) {
      if (*after > options_.request_timeout) return false;
      delay = std::max(delay, *after);
    }
  }
  // No backoff past the operation's deadline: the retry could not be made.
  if (auto left = time_left(); left && *left <= delay) {
    if (left->count() > 0) std::this_thread::sleep_for(*left);
    return false;
  }
  LOG(kDebug) << "Retrying a request to " << options_.registry << " in " << delay.count() << " ms";
  std::this_thread::sleep_for(delay);
  return true;
}

HttpResponse Transport::send(std::string_view what, const AuthScope& scope, std::string_view target,
                             const HttpRequest& request, bool probe, const Stream* stream) {
  const bool foreign = stream && stream->foreign;
  if (!probe && !foreign) check_health(what);
  HttpClient& http = foreign ? *stream->foreign : http_;
  int attempt = 1;
  int redirects = 0;
  bool auth_tried = false;
  std::string url = full_url(target);
  while (true) {
    HttpRequest sent = request;
    sent.url = url;
    if (stream && stream->prepare) stream->prepare(&sent);
    // Authorization is added on the registry's own host only.
    if (!foreign && !authorized(&sent, scope, &attempt)) continue;
    HttpResponse response = http.perform(sent);
    if (stream && stream->finished && stream->finished(response)) return response;
    if (stream && stream->progressed && stream->progressed()) {
      attempt = 1;
      auth_tried = false;
    }
    const bool here = !foreign && on_registry(url);
    if (!response.ok()) {
      if (!foreign && url_authority(url) == url_authority(origin()) && fall_back(response, url)) {
        url = full_url(target);
        redirects = 0;
        continue;
      }
      if (retryable_failure(response.failure) && attempt < options_.max_attempts) {
        wait_to_retry(attempt++, nullptr);
        url = full_url(target);
        redirects = 0;
        continue;
      }
      if (here) record(response, what);
      throw transport_error(response, what);
    }
    if (here) confirm_scheme();
    if (response.status == 401 && here && !auth_tried) {
      auth_tried = true;
      if (reauthorize(scope, response, url)) continue;
    }
    if (stream && stream->follow_redirects && is_redirect(response.status)) {
      auto location = response.headers.get("Location");
      if (!location || ++redirects > kMaxRedirects) {
        throw Error(ErrorKind::kUnavailable,
                    "Cannot " + std::string(what) + ": bad or too many redirects", response.status);
      }
      url = resolve_url(url, *location);
      if (stream->check_redirect) stream->check_redirect(url);
      continue;
    }
    if (retryable_status(response.status) && attempt < options_.max_attempts &&
        wait_to_retry(attempt, &response)) {
      ++attempt;
      url = full_url(target);
      redirects = 0;
      continue;
    }
    if (here) record(response, what);
    return response;
  }
}

HttpResponse Transport::send_step(std::string_view what, const AuthScope& scope,
                                  std::string_view target, const HttpRequest& request,
                                  std::string* answered) {
  check_health(what);
  std::string url = full_url(target);
  bool auth_tried = false;
  int redirects = 0;
  int attempt = 1;
  while (true) {
    HttpRequest sent = request;
    sent.url = url;
    if (!authorized(&sent, scope, &attempt)) continue;  // adds nothing for another host
    HttpResponse response = http_.perform(sent);
    *answered = url;
    const bool here = on_registry(url);
    if (!response.ok()) {
      if (here && fall_back(response, url)) {
        url = full_url(target);
        continue;
      }
      // Nothing reached the registry: sending again is safe.
      if (response.failure == HttpFailure::kConnect && attempt < options_.max_attempts) {
        wait_to_retry(attempt++, nullptr);
        continue;
      }
      // Not recorded: the caller asks the registry where it stands, and
      // records the failure if it gives up (registry/upload.cc).
      return response;
    }
    if (here && !retryable_status(response.status)) record(response, what);
    if (here) confirm_scheme();
    if (response.status == 401 && here && !auth_tried) {
      auth_tried = true;
      if (reauthorize(scope, response, url)) continue;
    }
    if (response.status == 307 || response.status == 308) {
      auto location = response.headers.get("Location");
      if (!location || location->empty() || ++redirects > kMaxRedirects) {
        throw Error(ErrorKind::kIo, "Cannot " + std::string(what) + ": bad or too many redirects",
                    response.status);
      }
      url = resolve_url(url, *location);
      LOG(kDebug) << "Following a " << response.status << " of an upload step to "
                  << url_origin(url);
      continue;
    }
    return response;
  }
}

}  // namespace regfs::registry
