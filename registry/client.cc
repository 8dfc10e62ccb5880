// Client: the distribution API for one registry. Requests go through
// Transport (auth, retries, scheme fall-back); this file builds the API paths,
// verifies manifests, paginates lists, and streams blobs: following redirects
// without credentials to other hosts, resuming from the last byte delivered
// after a reset, and skipping the prefix when a server ignores Range.
#include "registry/client.h"

#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>

#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/foreign_blob.h"
#include "registry/link_header.h"
#include "registry/manifest.h"
#include "registry/ranged_body.h"
#include "registry/reference.h"
#include "registry/transport.h"
#include "registry/upload.h"

namespace regfs::registry {
namespace {

constexpr size_t kMaxManifestBytes = 4 << 20;
constexpr int kMaxPages = 100000;

std::string strip_params(std::string_view content_type) {
  std::string_view type = content_type.substr(0, content_type.find(';'));
  while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
  return std::string(type);
}

void check_repository(std::string_view repository) {
  if (!is_valid_repository(repository)) {
    throw Error(ErrorKind::kInvalid,
                "Cannot use repository name \"" + std::string(repository) + "\": not a valid name");
  }
}

void check_reference(std::string_view reference) {
  if (!is_valid_tag(reference) && !is_valid_digest(reference)) {
    throw Error(ErrorKind::kInvalid, "Cannot use reference \"" + std::string(reference) +
                                         "\": not a valid tag or digest");
  }
}

}  // namespace

struct Client::Impl {
  explicit Impl(const ClientOptions& options) : options(options), transport(options) {
    for (const auto& mirror : options.mirrors) {
      ClientOptions through = options;
      through.registry = mirror.registry;
      through.insecure = mirror.insecure;
      through.max_attempts = 2;  // the registry itself is the fall-back
      through.mirrors.clear();
      through.health = nullptr;  // a mirror's failures are not the registry's
      mirrors.push_back(std::make_unique<MirrorClient>(mirror, through));
    }
  }

  // Runs `read(client, repository-on-the-mirror)` on each mirror that serves
  // `repository` until one answers. nullopt: the registry must answer. A
  // mirror that cannot be reached is skipped for a while.
  template <typename Read>
  auto through_mirrors(std::string_view repository, bool by_digest, std::string_view what,
                       Read read)
      -> std::optional<decltype(read(std::declval<Client&>(), std::string()))>;

  std::string describe(std::string_view repository, std::string_view reference) const {
    std::string out = options.registry + "/" + std::string(repository);
    out += is_valid_digest(reference) ? "@" : ":";
    out += reference;
    return out;
  }

  HttpRequest manifest_request(const char* method) const {
    HttpRequest request;
    request.method = method;
    request.headers.push_back("Accept: " + manifest_accept_header());
    request.timeout = options.request_timeout;
    request.max_body = kMaxManifestBytes;
    return request;
  }

  // Pages of a list endpoint, following Link rel="next" on the registry.
  template <typename OnPage>
  void paginate(std::string_view what, const AuthScope& scope, std::string target, OnPage on_page) {
    std::vector<std::string> seen;
    for (int page = 0; page < kMaxPages; ++page) {
      HttpRequest request;
      request.timeout = options.request_timeout;
      std::string url = transport.full_url(target);
      HttpResponse response = transport.send(what, scope, target, request);
      on_page(response);
      auto link = response.headers.get("Link");
      auto next = link ? parse_next_link(*link) : std::nullopt;
      if (!next) return;
      std::string next_url = resolve_url(url, *next);
      if (url_authority(next_url) != url_authority(url)) {
        LOG(kWarning) << "Cannot " << what << ": next page is on another host";
        return;
      }
      if (std::find(seen.begin(), seen.end(), next_url) != seen.end()) return;
      seen.push_back(next_url);
      target = next_url.substr(url_origin(next_url).size());
    }
  }

  void fetch_blob(std::string_view repository, std::string_view digest, uint64_t offset,
                  uint64_t length, const BodySink& sink);
  // GET /v2/ (see Client::ping and Client::probe).
  void ping(bool probe);

  struct MirrorClient {
    MirrorClient(Mirror m, const ClientOptions& o) : mirror(std::move(m)), client(o) {}
    Mirror mirror;
    Client client;
    std::atomic<int64_t> down_until{0};  // steady_clock ticks
  };

  // Whether the registry refused HEAD (405/501) or answered it without
  // what a HEAD is for: then GET is used, for manifests and for blobs.
  // Remembered for the life of the client (one per registry).
  bool refuses_head(std::atomic<bool>& flag, int status, std::string_view what) {
    if (status != 405 && status != 501) return false;
    if (!flag.exchange(true)) {
      LOG(kInfo) << options.registry << " refuses HEAD (HTTP " << status << ") to " << what
                 << "; using GET instead";
    }
    return true;
  }

  // For foreign layers' urls: TLS verified against the system store, and
  // none of the registry's client certificates (made on first use).
  HttpClient& foreign_http() {
    std::call_once(foreign_once, [this] {
      HttpOptions http;  // verify_tls, no ca_files or client certificate
      http.connect_timeout = options.connect_timeout;
      http.user_agent = "regfs";
      foreign = std::make_unique<HttpClient>(http);
    });
    return *foreign;
  }

  ClientOptions options;
  Transport transport;
  upload::Habits upload_habits;
  std::vector<std::unique_ptr<MirrorClient>> mirrors;
  std::atomic<bool> manifest_head_refused{false};
  std::atomic<bool> blob_head_refused{false};
  std::once_flag foreign_once;
  std::unique_ptr<HttpClient> foreign;
};

template <typename Read>
auto Client::Impl::through_mirrors(std::string_view repository, bool by_digest,
                                   std::string_view what, Read read)
    -> std::optional<decltype(read(std::declval<Client&>(), std::string()))> {
  constexpr auto kMirrorPause = std::chrono::seconds(30);
  for (auto& m : mirrors) {
    auto mapped = m->mirror.map(repository);
    if (!mapped || (m->mirror.digest_only && !by_digest)) continue;
    auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    if (now < m->down_until.load()) continue;
    try {
      auto result = read(m->client, *mapped);
      LOG(kDebug) << "Read " << what << " through mirror " << m->mirror.registry;
      return result;
    } catch (const Error& e) {
      bool unreachable = e.kind() == ErrorKind::kUnavailable || e.kind() == ErrorKind::kTimeout;
      if (unreachable) {
        m->down_until =
            (std::chrono::steady_clock::now() + kMirrorPause).time_since_epoch().count();
      }
      LOG_AT(unreachable ? log::kWarning : log::kDebug)
          << "Cannot read " << what << " through mirror " << m->mirror.registry << " (" << e.what()
          << "); reading from " << options.registry;
    }
  }
  return std::nullopt;
}

void Client::Impl::fetch_blob(std::string_view repository, std::string_view digest, uint64_t offset,
                              uint64_t length, const BodySink& sink) {
  const std::string what =
      "fetch blob " + options.registry + "/" + std::string(repository) + "@" + std::string(digest);
  const std::string target = "/v2/" + std::string(repository) + "/blobs/" + std::string(digest);
  RangedBody body(offset, length, sink);
  uint64_t before = 0;
  Transport::Stream stream;
  stream.prepare = [&](HttpRequest* request) {
    before = body.delivered();
    body.prepare(request, /*check_content_range=*/true);
  };
  // Nothing at or after the start is a 416 (Go's registry may then send a
  // wrong Content-Length, so the transfer "fails"): the blob has ended.
  stream.finished = [&](const HttpResponse& response) {
    return body.stopped() || body.complete() || body.bad_range() || response.status == 416;
  };
  stream.progressed = [&] { return body.delivered() > before; };
  stream.follow_redirects = true;
  HttpRequest request;
  request.stall_timeout = options.stall_timeout;
  request.max_body = 64 << 10;  // error bodies
  HttpResponse response =
      transport.send(what, AuthScope::pull(repository), target, request, false, &stream);
  if (body.bad_range()) {
    throw Error(ErrorKind::kIo, "Cannot " + what + ": the server sent another byte range");
  }
  if (body.stopped() || body.complete() || response.status == 416) return;
  if (response.status == 200 || response.status == 206) return;  // the whole rest arrived
  Error error = error_from_response(response.status, response.body, what, options.registry);
  if (error.kind() == ErrorKind::kNotFound) {
    throw Error(ErrorKind::kBlobUnknown, error.what(), response.status, error.oci_code());
  }
  throw error;
}

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Client::~Client() = default;

const std::string& Client::registry() const { return impl_->options.registry; }

void Client::ping() { impl_->ping(false); }

void Client::probe() { impl_->ping(true); }

void Client::Impl::ping(bool probe) {
  HttpRequest request;
  request.timeout = options.request_timeout;
  std::string what = "reach " + options.registry;
  HttpResponse response;
  try {
    response = transport.send(what, AuthScope{}, "/v2/", request, probe);
  } catch (const Error& e) {
    // The token endpoint refused the credentials: the registry is up, and
    // reads will say EACCES (the log names the cause).
    if (e.kind() != ErrorKind::kUnauthorized) throw;
    LOG(kWarning) << e.what();
    return;
  }
  if (response.status == 429 || response.status >= 500) {
    throw error_from_response(response.status, response.body, what, options.registry);
  }
}

ManifestHead Client::head_manifest(std::string_view repository, std::string_view reference) {
  check_repository(repository);
  check_reference(reference);
  std::string what = "resolve " + impl_->describe(repository, reference);
  if (auto head = impl_->through_mirrors(repository, is_valid_digest(reference), what,
                                         [&](Client& mirror, const std::string& name) {
                                           return mirror.head_manifest(name, reference);
                                         })) {
    return *head;
  }
  auto by_get = [&] {
    ManifestData data = get_manifest(repository, reference);
    return ManifestHead{data.digest, data.media_type, static_cast<int64_t>(data.bytes.size())};
  };
  if (impl_->manifest_head_refused) return by_get();
  std::string target = "/v2/" + std::string(repository) + "/manifests/" + std::string(reference);
  HttpResponse response = impl_->transport.send(what, AuthScope::pull(repository), target,
                                                impl_->manifest_request("HEAD"));
  if (impl_->refuses_head(impl_->manifest_head_refused, response.status, "manifests")) {
    return by_get();
  }
  if (response.status != 200) {
    throw error_from_response(response.status, response.body, what, impl_->options.registry);
  }
  auto digest = response.headers.get("Docker-Content-Digest");
  std::string type = strip_params(response.headers.get("Content-Type").value_or(""));
  auto length = response.headers.get("Content-Length");
  bool known_type = is_manifest_media_type(type) || is_index_media_type(type);
  bool numeric = length && !length->empty() && length->size() < 16 &&
                 length->find_first_not_of("0123456789") == std::string::npos;
  if (!digest || !is_valid_digest(*digest) || !known_type || !numeric) {
    // Not enough in the headers: fetch and hash the manifest, from now on.
    if (!impl_->manifest_head_refused.exchange(true)) {
      LOG(kInfo) << impl_->options.registry
                 << " answers HEAD of manifests without a digest; using GET instead";
    }
    return by_get();
  }
  if (is_valid_digest(reference) && *digest != reference) {
    throw Error(ErrorKind::kIntegrity,
                "Cannot " + what + ": the registry answered with " + *digest);
  }
  return ManifestHead{*digest, type, std::stoll(*length)};
}

ManifestData Client::get_manifest(std::string_view repository, std::string_view reference) {
  check_repository(repository);
  check_reference(reference);
  std::string what = "fetch manifest " + impl_->describe(repository, reference);
  if (auto data = impl_->through_mirrors(repository, is_valid_digest(reference), what,
                                         [&](Client& mirror, const std::string& name) {
                                           return mirror.get_manifest(name, reference);
                                         })) {
    return std::move(*data);
  }
  std::string target = "/v2/" + std::string(repository) + "/manifests/" + std::string(reference);
  HttpResponse response = impl_->transport.send(what, AuthScope::pull(repository), target,
                                                impl_->manifest_request("GET"));
  if (response.status != 200) {
    throw error_from_response(response.status, response.body, what, impl_->options.registry);
  }
  ManifestData data;
  data.bytes = std::move(response.body);
  data.digest = sha256_digest(data.bytes);
  std::string expected;
  if (is_valid_digest(reference)) {
    expected = reference;
  } else if (auto header = response.headers.get("Docker-Content-Digest");
             header && header->starts_with("sha256:")) {
    expected = *header;
  }
  if (!expected.empty() && expected != data.digest) {
    throw Error(ErrorKind::kIntegrity,
                "Cannot " + what + ": content is " + data.digest + ", expected " + expected);
  }
  data.media_type =
      detect_media_type(data.bytes, response.headers.get("Content-Type").value_or(""));
  return data;
}

void Client::get_blob(std::string_view repository, std::string_view digest, uint64_t offset,
                      uint64_t length, const BodySink& sink) {
  check_repository(repository);
  if (!is_valid_digest(digest)) {
    throw Error(ErrorKind::kInvalid,
                "Cannot fetch blob \"" + std::string(digest) + "\": not a valid digest");
  }
  // A mirror that fails midway leaves the rest to the registry.
  uint64_t delivered = 0;
  auto counted = [&](const char* data, size_t size) {
    if (!sink(data, size)) return false;
    delivered += size;
    return true;
  };
  bool done =
      impl_
          ->through_mirrors(repository, true, "blob " + std::string(digest),
                            [&](Client& mirror, const std::string& name) {
                              mirror.get_blob(name, digest, offset + delivered,
                                              length == 0 ? 0 : length - delivered, counted);
                              return true;
                            })
          .has_value();
  if (done) return;
  if (length != 0 && delivered >= length) return;
  impl_->fetch_blob(repository, digest, offset + delivered, length == 0 ? 0 : length - delivered,
                    sink);
}

void Client::get_foreign_blob(std::string_view url, uint64_t offset, uint64_t length,
                              const BodySink& sink) {
  fetch_foreign_blob(impl_->transport, impl_->foreign_http(), url, offset, length,
                     impl_->options.stall_timeout, sink);
}

namespace {

// Parses a JSON list response: {"<key>": [names...]} (null or absent: none).
void append_names(const HttpResponse& response, const char* key, std::string_view what,
                  std::vector<std::string>* out) {
  auto doc = nlohmann::json::parse(response.body, nullptr, false);
  if (!doc.is_object()) {
    throw Error(ErrorKind::kInvalid, "Cannot " + std::string(what) + ": malformed response");
  }
  auto list = doc.find(key);
  if (list == doc.end() || list->is_null()) return;
  if (!list->is_array()) {
    throw Error(ErrorKind::kInvalid, "Cannot " + std::string(what) + ": malformed response");
  }
  for (const auto& name : *list) {
    if (name.is_string()) out->push_back(name.get<std::string>());
  }
}

}  // namespace

std::vector<std::string> Client::catalog() {
  std::string what = "list repositories of " + impl_->options.registry;
  std::vector<std::string> names;
  impl_->paginate(what, AuthScope::catalog(), "/v2/_catalog", [&](const HttpResponse& response) {
    int status = response.status;
    if (status == 404 || status == 401 || status == 403 || status == 405) {
      throw Error(ErrorKind::kUnsupported,
                  "Cannot " + what + ": the registry serves no catalog (HTTP " +
                      std::to_string(status) + ")",
                  status);
    }
    if (status != 200) {
      throw error_from_response(status, response.body, what, impl_->options.registry);
    }
    append_names(response, "repositories", what, &names);
  });
  return names;
}

std::vector<std::string> Client::list_tags(std::string_view repository) {
  check_repository(repository);
  std::string what = "list tags of " + impl_->options.registry + "/" + std::string(repository);
  std::vector<std::string> tags;
  impl_->paginate(
      what, AuthScope::pull(repository), "/v2/" + std::string(repository) + "/tags/list",
      [&](const HttpResponse& response) {
        if (response.status != 200) {
          throw error_from_response(response.status, response.body, what, impl_->options.registry);
        }
        append_names(response, "tags", what, &tags);
      });
  return tags;
}

bool Client::blob_exists(std::string_view repository, std::string_view digest) {
  if (!impl_->blob_head_refused) {
    try {
      return upload::blob_exists(impl_->transport, repository, digest);
    } catch (const Error& e) {
      if (!impl_->refuses_head(impl_->blob_head_refused, e.http_status(), "blobs")) throw;
    }
  }
  // A one-byte ranged GET: 200/206 (or a redirect to where the bytes are)
  // says the repository has it; 416 is an empty blob it has.
  check_repository(repository);
  std::string what = "check blob " + impl_->options.registry + "/" + std::string(repository) + "@" +
                     std::string(digest);
  HttpRequest request;
  request.headers.push_back("Range: bytes=0-0");
  request.timeout = impl_->options.request_timeout;
  request.max_body = 64 << 10;
  HttpResponse response = impl_->transport.send(
      what, AuthScope::push(repository),
      "/v2/" + std::string(repository) + "/blobs/" + std::string(digest), request);
  int status = response.status;
  if (status == 200 || status == 206 || status == 416 || (status >= 301 && status <= 308)) {
    return true;
  }
  if (status == 404) return false;
  throw error_from_response(status, response.body, what, impl_->options.registry);
}

bool Client::mount_blob(std::string_view repository, std::string_view digest,
                        std::string_view from) {
  return upload::mount_blob(impl_->transport, repository, digest, from);
}

void Client::upload_blob(std::string_view repository, std::string_view digest, uint64_t size,
                         const BlobSource& source, const UploadJournal* journal) {
  upload::upload_blob(impl_->transport, impl_->upload_habits, repository, digest, size, source,
                      journal);
}

std::string Client::put_manifest(std::string_view repository, std::string_view reference,
                                 std::string_view bytes, std::string_view media_type) {
  return upload::put_manifest(impl_->transport, repository, reference, bytes, media_type);
}

void Client::delete_manifest(std::string_view repository, std::string_view reference) {
  upload::delete_manifest(impl_->transport, repository, reference);
}

}  // namespace regfs::registry
