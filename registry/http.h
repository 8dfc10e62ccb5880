// A small HTTP client over libcurl that knows nothing of registries: one
// request in, one response out, transport failures returned as a typed value
// rather than thrown. Connections are reused (a pool of easy handles; DNS and
// TLS sessions shared); redirects are never followed here. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace regfs::registry {

// Response headers in arrival order; lookup ignores case.
class HttpHeaders {
 public:
  void add(std::string name, std::string value);
  void clear() { fields_.clear(); }
  // The first value of `name`, if any.
  std::optional<std::string> get(std::string_view name) const;
  const std::vector<std::pair<std::string, std::string>>& fields() const { return fields_; }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

struct HttpRequest {
  std::string method = "GET";  // HEAD is sent without reading a body
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;                  // sent for methods other than GET/HEAD
  // Or a body streamed from a source (uploads of large blobs from disk or
  // from another registry): body_size bytes, asked for by offset from 0, so
  // that a repeated request sends them again and libcurl can rewind them
  // (it resends a request whose kept-alive connection turned out closed). The source returns how
  // many bytes it wrote to `buffer` (0 before body_size is an error) and may throw.
  std::function<size_t(uint64_t offset, char* buffer, size_t max)> body_source;
  uint64_t body_size = 0;
  // Deadline of the whole exchange; zero for none (streams use stall_timeout).
  std::chrono::milliseconds timeout{0};
  // Fail if less than one byte a second arrives for this long; zero for none.
  std::chrono::milliseconds stall_timeout{0};
  // Receives the body of a 2xx response as it arrives; false aborts the
  // transfer. Without it (and for other statuses) the body is collected in
  // HttpResponse::body, up to max_body bytes.
  std::function<bool(const char* data, size_t size)> on_body;
  // Called once with the status and headers when the body starts to arrive.
  std::function<void(int status, const HttpHeaders& headers)> on_headers;
  size_t max_body = 8 << 20;
};

enum class HttpFailure {
  kNone,
  kConnect,   // cannot resolve or connect
  kTls,       // TLS handshake or certificate failure
  kReset,     // connection reset or closed mid-transfer
  kTimeout,   // deadline or stall limit passed
  kAborted,   // on_body returned false
  kTooLarge,  // a collected body passed max_body
  kSource,    // HttpRequest::body_source failed or ended early
  kOther,
};

struct HttpResponse {
  HttpFailure failure = HttpFailure::kNone;
  std::string error;  // transport error text when failure != kNone
  int status = 0;     // 0 when no response arrived
  HttpHeaders headers;
  std::string body;       // collected body (see HttpRequest::on_body)
  uint64_t streamed = 0;  // bytes passed to on_body
  // False when nothing was sent: the operation's deadline had passed.
  bool attempted = true;

  bool ok() const { return failure == HttpFailure::kNone; }
};

struct HttpOptions {
  bool verify_tls = true;
  // Extra CA bundles trusted in addition to the system store.
  std::vector<std::string> ca_files;
  // A client certificate (PEM) and its key, presented when a server asks.
  std::string client_cert;
  std::string client_key;
  std::chrono::milliseconds connect_timeout{10'000};
  std::string user_agent = "regfs";
};

class HttpClient {
 public:
  explicit HttpClient(HttpOptions options);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  HttpResponse perform(const HttpRequest& request);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Resolves `reference` (absolute URL, absolute path or relative path) against
// the absolute URL `base`.
std::string resolve_url(std::string_view base, std::string_view reference);
// "scheme://host[:port]" of an absolute URL, lowercased; empty if none.
std::string url_origin(std::string_view url);
// The host[:port] of an absolute URL, lowercased.
std::string url_authority(std::string_view url);
// `text` escaped for a query string (RFC 3986 unreserved kept).
std::string url_encode(std::string_view text);

}  // namespace regfs::registry
