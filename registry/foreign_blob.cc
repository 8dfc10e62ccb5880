#include "registry/foreign_blob.h"

#include <algorithm>
#include <string>
#include <thread>

#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/ranged_body.h"
#include "registry/transport.h"

namespace regfs::registry {

namespace {

constexpr int kMaxRedirects = 10;
constexpr int kMaxAttempts = 4;

bool starts_with_nocase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
}

bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

}  // namespace

bool is_fetchable_url(std::string_view url) {
  for (std::string_view scheme : {"http://", "https://"}) {
    if (starts_with_nocase(url, scheme) && url.size() > scheme.size() &&
        url.find_first_of(" \r\n") == std::string_view::npos) {
      return true;
    }
  }
  return false;
}

void fetch_foreign_blob(HttpClient& http, std::string_view first_url, uint64_t offset,
                        uint64_t length, std::chrono::milliseconds stall_timeout,
                        const std::function<bool(const char*, size_t)>& sink) {
  const std::string what = "fetch foreign blob from " + url_origin(first_url);
  if (!is_fetchable_url(first_url)) {
    throw Error(ErrorKind::kInvalid, "Cannot " + what + ": only http and https URLs are used");
  }
  std::string url(first_url);
  RangedBody body(offset, length, sink);
  int attempt = 1, redirects = 0;
  while (!body.done()) {
    HttpRequest request;  // never authorized: this host is not the registry
    request.url = url;
    request.stall_timeout = stall_timeout;
    request.max_body = 64 << 10;
    body.prepare(&request, /*check_content_range=*/false);
    const uint64_t before = body.delivered();
    HttpResponse response = http.perform(request);
    if (body.stopped() || body.complete()) return;
    if (body.delivered() > before) attempt = 1;
    if (!response.ok()) {
      if (retryable_failure(response.failure) && attempt++ < kMaxAttempts) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200 * attempt));
        continue;
      }
      throw Error(
          response.failure == HttpFailure::kTimeout ? ErrorKind::kTimeout : ErrorKind::kUnavailable,
          "Cannot " + what + ": " + response.error);
    }
    int status = response.status;
    if (status == 200 || status == 206) return;  // the whole rest arrived
    if (status == 416) return;
    if (is_redirect(status)) {
      auto location = response.headers.get("Location");
      if (!location || ++redirects > kMaxRedirects) {
        throw Error(ErrorKind::kUnavailable, "Cannot " + what + ": bad or too many redirects",
                    status);
      }
      url = resolve_url(url, *location);
      if (!is_fetchable_url(url)) {
        throw Error(ErrorKind::kInvalid, "Cannot " + what + ": redirected to a non-http URL");
      }
      continue;
    }
    if (retryable_status(status) && attempt++ < kMaxAttempts) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200 * attempt));
      continue;
    }
    throw Error(status == 404 ? ErrorKind::kNotFound : ErrorKind::kIo,
                "Cannot " + what + ": HTTP " + std::to_string(status), status);
  }
}

}  // namespace regfs::registry
