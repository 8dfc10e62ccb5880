#include "registry/foreign_blob.h"

#include <algorithm>
#include <string>

#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/ranged_body.h"
#include "registry/transport.h"

namespace regfs::registry {

namespace {

bool starts_with_nocase(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    char c = text[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
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

void fetch_foreign_blob(Transport& transport, HttpClient& http, std::string_view url,
                        uint64_t offset, uint64_t length, std::chrono::milliseconds stall_timeout,
                        const std::function<bool(const char*, size_t)>& sink) {
  const std::string what = "fetch foreign blob from " + url_origin(url);
  if (!is_fetchable_url(url)) {
    throw Error(ErrorKind::kInvalid, "Cannot " + what + ": only http and https URLs are used");
  }
  RangedBody body(offset, length, sink);
  uint64_t before = 0;
  Transport::Stream stream;
  stream.foreign = &http;  // never authorized: this host is not the registry
  stream.prepare = [&](HttpRequest* request) {
    before = body.delivered();
    body.prepare(request, /*check_content_range=*/false);
  };
  stream.finished = [&](const HttpResponse&) { return body.stopped() || body.complete(); };
  stream.progressed = [&] { return body.delivered() > before; };
  stream.follow_redirects = true;
  stream.check_redirect = [&](const std::string& to) {
    if (!is_fetchable_url(to)) {
      throw Error(ErrorKind::kInvalid, "Cannot " + what + ": redirected to a non-http URL");
    }
  };
  HttpRequest request;
  request.stall_timeout = stall_timeout;
  request.max_body = 64 << 10;
  HttpResponse response = transport.send(what, AuthScope{}, url, request, false, &stream);
  if (body.stopped() || body.complete()) return;
  const int status = response.status;
  if (status == 200 || status == 206 || status == 416) return;  // the whole rest arrived
  throw Error(status == 404 ? ErrorKind::kNotFound : ErrorKind::kIo,
              "Cannot " + what + ": HTTP " + std::to_string(status), status);
}

}  // namespace regfs::registry
