// HttpClient over libcurl, the only file that includes curl. Each request
// takes an easy handle from a pool (keeping its live connections), resets and
// configures it, runs it to the end and returns it; a CURLSH shares the DNS
// cache and TLS sessions between handles (not connections: libcurl does not
// support sharing those across threads). Redirects are left to the caller,
// signals are never used, and every transfer has a connect timeout plus a
// deadline or a stall limit.
#include "registry/http.h"

#include <curl/curl.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <exception>
#include <mutex>

#include "registry/core/deadline.h"
#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::registry {
namespace {

constexpr size_t kMaxPooledHandles = 16;

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
      throw Error(ErrorKind::kIo, "Cannot initialise libcurl");
    }
  });
}

struct EasyDeleter {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
using EasyHandle = std::unique_ptr<CURL, EasyDeleter>;

struct ShareDeleter {
  void operator()(CURLSH* share) const { curl_share_cleanup(share); }
};

struct SlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

std::string trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) {
    text.remove_prefix(1);
  }
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) {
    text.remove_suffix(1);
  }
  return std::string(text);
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  return out;
}

// State of one transfer, shared with curl's callbacks.
struct Transfer {
  const HttpRequest* request;
  HttpResponse* response;
  bool decided = false;  // whether the body streams is known
  bool stream = false;
  bool aborted = false;
  bool too_large = false;
  uint64_t sent = 0;  // bytes of a streamed request body read so far
  bool source_failed = false;
  std::string source_error{};
  // What on_headers or on_body threw: kept here, since an exception must not
  // unwind through libcurl (it would leak the transfer's state), and rethrown
  // by perform() once the handle is back in the pool.
  std::exception_ptr sink_error{};
};

size_t on_read(char* buffer, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  const HttpRequest& request = *transfer->request;
  uint64_t left = request.body_size - transfer->sent;
  if (left == 0) return 0;
  size_t max = static_cast<size_t>(std::min<uint64_t>(left, size * count));
  size_t n = 0;
  try {
    n = request.body_source(transfer->sent, buffer, max);
  } catch (const std::exception& e) {
    transfer->source_error = e.what();
  }
  if (n == 0 || n > max) {
    transfer->source_failed = true;
    if (transfer->source_error.empty()) {
      transfer->source_error = "the request body ended early";
    }
    return CURL_READFUNC_ABORT;
  }
  transfer->sent += n;
  return n;
}

// libcurl rewinds a request body to resend it (a kept-alive connection that
// turned out closed, a redirect, an auth round): the source is read by
// offset, so any position is a seek.
int on_seek(void* user, curl_off_t offset, int origin) {
  auto* transfer = static_cast<Transfer*>(user);
  if (origin != SEEK_SET || offset < 0 ||
      static_cast<uint64_t>(offset) > transfer->request->body_size) {
    return CURL_SEEKFUNC_CANTSEEK;
  }
  transfer->sent = static_cast<uint64_t>(offset);
  return CURL_SEEKFUNC_OK;
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  std::string_view line(data, size * count);
  if (line.starts_with("HTTP/")) {
    // A new response (after 100 Continue, say): forget earlier headers.
    transfer->response->headers.clear();
    size_t space = line.find(' ');
    if (space != std::string_view::npos) {
      transfer->response->status = std::atoi(std::string(line.substr(space + 1, 3)).c_str());
    }
    return size * count;
  }
  size_t colon = line.find(':');
  if (colon != std::string_view::npos) {
    transfer->response->headers.add(trim(line.substr(0, colon)), trim(line.substr(colon + 1)));
  }
  return size * count;
}

size_t on_write(char* data, size_t size, size_t count, void* user) {
  auto* transfer = static_cast<Transfer*>(user);
  size_t n = size * count;
  HttpResponse& response = *transfer->response;
  try {
    if (!transfer->decided) {
      transfer->decided = true;
      if (transfer->request->on_headers) {
        transfer->request->on_headers(response.status, response.headers);
      }
      transfer->stream =
          transfer->request->on_body && response.status >= 200 && response.status < 300;
    }
    if (transfer->stream) {
      if (!transfer->request->on_body(data, n)) {
        transfer->aborted = true;
        return 0;
      }
      response.streamed += n;
      return n;
    }
  } catch (...) {
    transfer->sink_error = std::current_exception();
    transfer->aborted = true;
    return 0;
  }
  if (response.body.size() + n > transfer->request->max_body) {
    transfer->too_large = true;
    return 0;
  }
  response.body.append(data, n);
  return n;
}

CURLcode on_ssl_ctx(CURL*, void* ssl_ctx, void* user) {
  auto* files = static_cast<const std::vector<std::string>*>(user);
  X509_STORE* store = SSL_CTX_get_cert_store(static_cast<SSL_CTX*>(ssl_ctx));
  for (const auto& file : *files) {
    if (X509_STORE_load_file(store, file.c_str()) != 1) {
      return CURLE_SSL_CACERT_BADFILE;
    }
  }
  return CURLE_OK;
}

HttpFailure classify(CURLcode code, const Transfer& transfer) {
  switch (code) {
    case CURLE_OK:
      return HttpFailure::kNone;
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_READ_ERROR:
      if (transfer.source_failed) return HttpFailure::kSource;
      return HttpFailure::kOther;
    case CURLE_WRITE_ERROR:
      if (transfer.aborted) return HttpFailure::kAborted;
      if (transfer.too_large) return HttpFailure::kTooLarge;
      return HttpFailure::kOther;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
      return HttpFailure::kConnect;
    case CURLE_OPERATION_TIMEDOUT:
      return HttpFailure::kTimeout;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED:
      return HttpFailure::kTls;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return HttpFailure::kReset;
    default:
      return HttpFailure::kOther;
  }
}

}  // namespace

void HttpHeaders::add(std::string name, std::string value) {
  fields_.emplace_back(std::move(name), std::move(value));
}

std::optional<std::string> HttpHeaders::get(std::string_view name) const {
  for (const auto& [key, value] : fields_) {
    if (iequals(key, name)) return value;
  }
  return std::nullopt;
}

struct HttpClient::Impl {
  explicit Impl(HttpOptions opts) : options(std::move(opts)) {
    init_curl_once();
    share.reset(curl_share_init());
    if (!share) throw Error(ErrorKind::kIo, "Cannot create a curl share");
    curl_share_setopt(share.get(), CURLSHOPT_LOCKFUNC, &Impl::lock);
    curl_share_setopt(share.get(), CURLSHOPT_UNLOCKFUNC, &Impl::unlock);
    curl_share_setopt(share.get(), CURLSHOPT_USERDATA, this);
    curl_share_setopt(share.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(share.get(), CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  }

  static void lock(CURL*, curl_lock_data data, curl_lock_access, void* user) {
    static_cast<Impl*>(user)->share_mutexes[data % kLocks].lock();
  }
  static void unlock(CURL*, curl_lock_data data, void* user) {
    static_cast<Impl*>(user)->share_mutexes[data % kLocks].unlock();
  }

  EasyHandle acquire() {
    {
      std::lock_guard lock(pool_mutex);
      if (!pool.empty()) {
        EasyHandle easy = std::move(pool.back());
        pool.pop_back();
        return easy;
      }
    }
    EasyHandle easy(curl_easy_init());
    if (!easy) throw Error(ErrorKind::kIo, "Cannot create a curl handle");
    return easy;
  }

  void release(EasyHandle easy) {
    std::lock_guard lock(pool_mutex);
    if (pool.size() < kMaxPooledHandles) pool.push_back(std::move(easy));
  }

  Slist make_headers(const HttpRequest& request) {
    Slist list;
    auto append = [&](const std::string& header) {
      curl_slist* next = curl_slist_append(list.get(), header.c_str());
      if (!next) throw Error(ErrorKind::kIo, "Cannot build request headers");
      static_cast<void>(list.release());
      list.reset(next);
    };
    for (const auto& header : request.headers) append(header);
    append("Expect:");  // no 100-continue round trip
    return list;
  }

  void configure(CURL* easy, const HttpRequest& request, Transfer* transfer, curl_slist* headers,
                 char* error_buffer) {
    curl_easy_setopt(easy, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_SHARE, share.get());
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, error_buffer);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, options.user_agent.c_str());
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    // Blob bodies arrive in reads of up to 1 MiB, not curl's default 16 KiB:
    // fewer recv and poll calls, and fewer window updates to send, per GiB
    // (BENCHMARKS.md, "a cheaper cold read"; 2 MiB saved no more CPU and
    // took 10 MiB more memory while streaming).
    curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, 1L << 20);
    // The operation's deadline (registry/core/deadline.h) bounds every phase.
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
                     static_cast<long>(bounded_timeout(options.connect_timeout).count()));
    if (auto timeout = bounded_timeout(request.timeout); timeout.count() > 0) {
      curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    }
    if (request.stall_timeout.count() > 0) {
      long seconds = std::max<long>(1, request.stall_timeout.count() / 1000);
      curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
      curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, seconds);
    }
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, options.verify_tls ? 1L : 0L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, options.verify_tls ? 2L : 0L);
    if (!options.client_cert.empty()) {
      curl_easy_setopt(easy, CURLOPT_SSLCERT, options.client_cert.c_str());
      curl_easy_setopt(easy, CURLOPT_SSLKEY, options.client_key.c_str());
    }
    if (!options.ca_files.empty()) {
      curl_easy_setopt(easy, CURLOPT_SSL_CTX_FUNCTION, &on_ssl_ctx);
      curl_easy_setopt(easy, CURLOPT_SSL_CTX_DATA, &options.ca_files);
    }
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &on_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, transfer);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &on_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, transfer);
    if (request.method == "HEAD") {
      curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else if (request.body_source) {
      curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
      curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, request.method.c_str());
      curl_easy_setopt(easy, CURLOPT_READFUNCTION, &on_read);
      curl_easy_setopt(easy, CURLOPT_READDATA, transfer);
      curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, &on_seek);
      curl_easy_setopt(easy, CURLOPT_SEEKDATA, transfer);
      curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body_size));
    } else if (request.method != "GET") {
      curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, request.method.c_str());
      if (!request.body.empty() || request.method != "DELETE") {
        curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                         static_cast<curl_off_t>(request.body.size()));
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.data());
      }
    }
  }

  static constexpr size_t kLocks = 8;
  HttpOptions options;
  std::unique_ptr<CURLSH, ShareDeleter> share;
  std::array<std::mutex, kLocks> share_mutexes;
  std::mutex pool_mutex;  // guards pool
  std::vector<EasyHandle> pool;
};

HttpClient::HttpClient(HttpOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

HttpClient::~HttpClient() = default;

namespace {

// `url` for a log line: query values that may be credentials (signed CDN
// URLs, tokens) are replaced by "...".
std::string loggable_url(std::string_view url) {
  size_t query = url.find('?');
  if (query == std::string_view::npos) return std::string(url);
  std::string out(url.substr(0, query + 1));
  std::string_view rest = url.substr(query + 1);
  bool first = true;
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? "" : rest.substr(amp + 1);
    std::string key = lowercase(pair.substr(0, pair.find('=')));
    bool safe = key == "service" || key == "scope" || key == "n" || key == "last" ||
                key == "digest" || key == "mount" || key == "from" || key == "account";
    if (!first) out += '&';
    first = false;
    out += safe ? std::string(pair) : std::string(pair.substr(0, pair.find('='))) + "=...";
  }
  return out;
}

}  // namespace

HttpResponse HttpClient::perform(const HttpRequest& request) {
  const auto started = std::chrono::steady_clock::now();
  HttpResponse response;
  if (auto left = time_left(); left && left->count() <= 0) {
    response.failure = HttpFailure::kTimeout;
    response.error = "the operation's deadline (--request-timeout) passed";
    response.attempted = false;
    return response;
  }
  Transfer transfer{&request, &response};
  EasyHandle easy = impl_->acquire();
  curl_easy_reset(easy.get());
  Slist headers = impl_->make_headers(request);
  char error_buffer[CURL_ERROR_SIZE] = "";
  impl_->configure(easy.get(), request, &transfer, headers.get(), error_buffer);
  CURLcode code = curl_easy_perform(easy.get());
  long status = 0;
  if (curl_easy_getinfo(easy.get(), CURLINFO_RESPONSE_CODE, &status) == CURLE_OK && status != 0) {
    response.status = static_cast<int>(status);
  }
  // The handle must not keep pointers into this frame.
  curl_easy_setopt(easy.get(), CURLOPT_ERRORBUFFER, nullptr);
  curl_easy_setopt(easy.get(), CURLOPT_HTTPHEADER, nullptr);
  impl_->release(std::move(easy));
  if (transfer.sink_error) std::rethrow_exception(transfer.sink_error);
  response.failure = classify(code, transfer);
  if (log::level() <= log::kDebug) {
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::steady_clock::now() - started)
                  .count();
    LOG(kDebug) << "HTTP " << request.method << " " << loggable_url(request.url) << " -> "
                << (code == CURLE_OK
                        ? std::to_string(response.status)
                        : "failed: " + std::string(error_buffer[0] ? error_buffer
                                                                   : curl_easy_strerror(code)))
                << " (" << ms << " ms)";
  }
  if (code != CURLE_OK) {
    response.error = error_buffer[0] ? error_buffer : curl_easy_strerror(code);
    if (transfer.source_failed) {
      response.error = "cannot read the body: " + transfer.source_error;
    }
  }
  return response;
}

std::string url_origin(std::string_view url) {
  size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return "";
  size_t end = url.find_first_of("/?#", scheme_end + 3);
  return lowercase(url.substr(0, end));
}

std::string url_authority(std::string_view url) {
  std::string origin = url_origin(url);
  size_t scheme_end = origin.find("://");
  return scheme_end == std::string::npos ? "" : origin.substr(scheme_end + 3);
}

std::string resolve_url(std::string_view base, std::string_view reference) {
  size_t colon = reference.find(':');
  size_t slash = reference.find('/');
  if (colon != std::string_view::npos && colon > 0 &&
      (slash == std::string_view::npos || colon < slash)) {
    return std::string(reference);  // absolute URL
  }
  if (reference.starts_with("//")) {
    return std::string(base.substr(0, base.find("://") + 1)) + std::string(reference);
  }
  std::string origin = url_origin(base);
  if (reference.starts_with('/')) return origin + std::string(reference);
  std::string_view path = base.substr(origin.size());
  path = path.substr(0, path.find_first_of("?#"));
  if (reference.empty()) return origin + std::string(path);
  if (reference.starts_with('?')) return origin + std::string(path) + std::string(reference);
  size_t last = path.rfind('/');
  std::string dir = last == std::string_view::npos ? "/" : std::string(path.substr(0, last + 1));
  return origin + dir + std::string(reference);
}

std::string url_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

}  // namespace regfs::registry
