// See upload.h. The upload session's URL comes from each response's
// Location (relative or absolute, possibly carrying state in its query), so
// it is resolved against the URL the request went to. Chunks are sent as
// PATCH with Content-Range "<first>-<last>" (inclusive), as docker-registry
// and the OCI distribution spec expect; the closing PUT carries ?digest=.
// Streams read the source by offset, so a request the Transport repeats
// (after a 5xx or a reset) resends its bytes from the start of the request.
#include "registry/upload.h"

#include "registry/digest.h"
#include "registry/error.h"
#include "registry/log.h"
#include "registry/reference.h"
#include "registry/transport.h"

namespace regfs::registry::upload {
namespace {

constexpr size_t kMaxErrorBody = 64 << 10;

void check_names(std::string_view repository, std::string_view digest) {
  if (!is_valid_repository(repository)) {
    throw Error(ErrorKind::kInvalid,
                "Cannot push to \"" + std::string(repository) + "\": not a valid repository name");
  }
  if (!digest.empty() && !is_valid_digest(digest)) {
    throw Error(ErrorKind::kInvalid,
                "Cannot push blob \"" + std::string(digest) + "\": not a valid digest");
  }
}

std::string describe(const Transport& transport, std::string_view repository,
                     std::string_view digest) {
  return transport.options().registry + "/" + std::string(repository) + "@" + std::string(digest);
}

HttpRequest request_for(const Transport& transport, const char* method) {
  HttpRequest request;
  request.method = method;
  request.timeout = transport.options().request_timeout;
  request.max_body = kMaxErrorBody;
  return request;
}

// A streamed request has no overall deadline, only a stall limit.
HttpRequest stream_request(const Transport& transport, const char* method, uint64_t size,
                           BlobSource source) {
  HttpRequest request;
  request.method = method;
  request.stall_timeout = transport.options().stall_timeout;
  request.max_body = kMaxErrorBody;
  request.headers.push_back("Content-Type: application/octet-stream");
  request.body_source = std::move(source);
  request.body_size = size;
  return request;
}

[[noreturn]] void fail(const Transport& transport, const HttpResponse& response,
                       const std::string& what) {
  throw error_from_response(response.status, response.body, what, transport.options().registry);
}

// The upload session URL a 202 names, resolved against the request's URL.
std::string next_location(const Transport& transport, const HttpResponse& response,
                          std::string_view target, const std::string& what) {
  auto location = response.headers.get("Location");
  if (!location || location->empty()) {
    throw Error(ErrorKind::kIo, "Cannot " + what + ": the registry sent no upload location");
  }
  return resolve_url(transport.full_url(target), *location);
}

std::string start_upload(Transport& transport, std::string_view repository,
                         const std::string& what) {
  const AuthScope scope = AuthScope::push(repository);
  std::string target = "/v2/" + std::string(repository) + "/blobs/uploads/";
  HttpResponse response = transport.send(what, scope, target, request_for(transport, "POST"));
  if (response.status != 202) fail(transport, response, what);
  return next_location(transport, response, target, what);
}

void expect_created(const Transport& transport, const HttpResponse& response,
                    std::string_view digest, const std::string& what) {
  if (response.status != 201) fail(transport, response, what);
  auto stored = response.headers.get("Docker-Content-Digest");
  if (stored && is_valid_digest(*stored) && *stored != digest) {
    throw Error(ErrorKind::kIntegrity, "Cannot " + what + ": the registry stored " + *stored);
  }
}

}  // namespace

std::string with_digest(std::string_view location, std::string_view digest) {
  std::string url(location);
  url += location.find('?') == std::string_view::npos ? '?' : '&';
  return url + "digest=" + url_encode(digest);
}

bool blob_exists(Transport& transport, std::string_view repository, std::string_view digest) {
  check_names(repository, digest);
  std::string what = "check blob " + describe(transport, repository, digest);
  HttpResponse response =
      transport.send(what, AuthScope::push(repository),
                     "/v2/" + std::string(repository) + "/blobs/" + std::string(digest),
                     request_for(transport, "HEAD"));
  if (response.status == 200) return true;
  if (response.status == 404) return false;
  fail(transport, response, what);
}

bool mount_blob(Transport& transport, std::string_view repository, std::string_view digest,
                std::string_view from) {
  check_names(repository, digest);
  check_names(from, {});
  std::string what =
      "mount blob " + describe(transport, repository, digest) + " from " + std::string(from);
  std::string target = "/v2/" + std::string(repository) +
                       "/blobs/uploads/?mount=" + url_encode(digest) + "&from=" + url_encode(from);
  HttpResponse response = transport.send(what, AuthScope::push(repository, from), target,
                                         request_for(transport, "POST"));
  if (response.status == 201) return true;
  if (response.status != 202) fail(transport, response, what);
  // Not mounted: the registry opened an upload session; close it.
  try {
    std::string session = next_location(transport, response, target, what);
    transport.send(what, AuthScope::push(repository), session, request_for(transport, "DELETE"));
  } catch (const Error& e) {
    LOG(kDebug) << "Cannot cancel an upload session: " << e.what();
  }
  return false;
}

void upload_blob(Transport& transport, std::string_view repository, std::string_view digest,
                 uint64_t size, const BlobSource& source) {
  check_names(repository, digest);
  const AuthScope scope = AuthScope::push(repository);
  const ClientOptions& options = transport.options();
  std::string what = "upload blob " + describe(transport, repository, digest);
  std::string url = start_upload(transport, repository, what);
  if (size <= options.monolithic_upload_limit) {
    HttpResponse response = transport.send(what, scope, with_digest(url, digest),
                                           stream_request(transport, "PUT", size, source));
    expect_created(transport, response, digest, what);
    return;
  }
  const uint64_t chunk = std::max<uint64_t>(options.upload_chunk_size, 1);
  for (uint64_t offset = 0; offset < size; offset += chunk) {
    uint64_t length = std::min(chunk, size - offset);
    HttpRequest patch = stream_request(transport, "PATCH", length,
                                       [&source, offset](uint64_t at, char* buffer, size_t max) {
                                         return source(offset + at, buffer, max);
                                       });
    patch.headers.push_back("Content-Range: " + std::to_string(offset) + "-" +
                            std::to_string(offset + length - 1));
    HttpResponse response = transport.send(what, scope, url, patch);
    if (response.status != 202) fail(transport, response, what);
    url = next_location(transport, response, url, what);
  }
  HttpRequest close = request_for(transport, "PUT");
  close.headers.push_back("Content-Type: application/octet-stream");
  HttpResponse response = transport.send(what, scope, with_digest(url, digest), close);
  expect_created(transport, response, digest, what);
}

std::string put_manifest(Transport& transport, std::string_view repository,
                         std::string_view reference, std::string_view bytes,
                         std::string_view media_type) {
  check_names(repository, {});
  if (!is_valid_tag(reference) && !is_valid_digest(reference)) {
    throw Error(ErrorKind::kInvalid, "Cannot push manifest as \"" + std::string(reference) +
                                         "\": not a valid tag or digest");
  }
  std::string digest = sha256_digest(bytes);
  std::string what = "push manifest " + transport.options().registry + "/" +
                     std::string(repository) + (is_valid_digest(reference) ? "@" : ":") +
                     std::string(reference);
  if (is_valid_digest(reference) && reference != digest) {
    throw Error(ErrorKind::kIntegrity, "Cannot " + what + ": the bytes are " + digest);
  }
  HttpRequest request = request_for(transport, "PUT");
  request.headers.push_back("Content-Type: " + std::string(media_type));
  request.body = std::string(bytes);
  HttpResponse response = transport.send(
      what, AuthScope::push(repository),
      "/v2/" + std::string(repository) + "/manifests/" + std::string(reference), request);
  expect_created(transport, response, digest, what);
  return digest;
}

void delete_manifest(Transport& transport, std::string_view repository,
                     std::string_view reference) {
  check_names(repository, {});
  std::string what = "delete " + transport.options().registry + "/" + std::string(repository) +
                     (is_valid_digest(reference) ? "@" : ":") + std::string(reference);
  HttpResponse response =
      transport.send(what, AuthScope::push(repository),
                     "/v2/" + std::string(repository) + "/manifests/" + std::string(reference),
                     request_for(transport, "DELETE"));
  if (response.status != 202 && response.status != 200) {
    fail(transport, response, what);
  }
}

}  // namespace regfs::registry::upload
