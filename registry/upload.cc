// See upload.h. The upload session's URL comes from each response's
// Location (relative or absolute, possibly carrying state in its query), so
// it is resolved against the URL that answered; a step answered without one
// keeps the URL it went to. Chunks are sent as PATCH with Content-Range
// "<first>-<last>" (inclusive), as docker-registry and the OCI distribution
// spec expect; the closing PUT carries ?digest=. Streams read the source by
// offset, so a step can be sent again from any byte.
//
// Steps succeed on what the spec's clients accept: PATCH 202/201/204, PUT
// 201/200/202/204, POST 202 (any 2xx naming a session), mount 201. A step
// with no answer, a 5xx, or an answer saying the session is elsewhere (416,
// an unknown or invalid session: a step done twice) is never resent as it
// was: the registry is asked where it stands -- HEAD of the blob (the lost
// step may have been the last), GET of the session for its Range -- and the
// upload goes on from there, or in a new session when the old one is gone
// (distribution cancels a session replayed with stale state). A manifest
// PUT whose answer was lost is checked with a HEAD before it is sent again.
// A 405 on PATCH makes the registry's blobs go up in one PUT from then on.
//
// A chunked upload tells its UploadJournal where it stands after each step,
// so that a process that died mid-push (kill -9) leaves a session the next
// one resumes: GET of its URL gives the Range the registry holds (and a
// fresh Location), and the upload goes on from there; a session the
// registry no longer keeps (distribution cancels one whose state is stale,
// as after a PATCH cut off midway) means a new one from byte 0.
#include "registry/upload.h"

#include <algorithm>
#include <cstdlib>
#include <initializer_list>
#include <optional>

#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/manifest.h"
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

// Gives up on a step: a failure to get an answer (or a 5xx) counts
// against the registry's health (registry/health.h).
[[noreturn]] void fail(Transport& transport, const HttpResponse& response,
                       const std::string& what) {
  transport.record(response, what);
  if (!response.ok()) throw transport.transport_error(response, what);
  throw error_from_response(response.status, response.body, what, transport.options().registry);
}

bool one_of(int status, std::initializer_list<int> codes) {
  for (int code : codes) {
    if (status == code) return true;
  }
  return false;
}

constexpr std::initializer_list<int> kPatchDone = {202, 201, 204};
constexpr std::initializer_list<int> kPutDone = {201, 200, 202, 204};

// No answer, or one that says nothing of what the registry did.
bool lost(const HttpResponse& response) {
  if (response.ok()) return retryable_status(response.status);
  return response.failure == HttpFailure::kReset || response.failure == HttpFailure::kTimeout ||
         response.failure == HttpFailure::kConnect || response.failure == HttpFailure::kOther;
}

// The session is not where the client thought: a step done twice, or a
// session the registry dropped.
bool out_of_step(const HttpResponse& response) {
  if (!response.ok()) return false;
  if (response.status == 404 || response.status == 416) return true;
  if (response.status != 400) return false;
  std::string code = error_from_response(400, response.body, "").oci_code();
  return code == "BLOB_UPLOAD_INVALID" || code == "BLOB_UPLOAD_UNKNOWN" || code == "RANGE_INVALID";
}

void check_stored(const HttpResponse& response, std::string_view digest, const std::string& what) {
  auto stored = response.headers.get("Docker-Content-Digest");
  if (stored && is_valid_digest(*stored) && *stored != digest) {
    throw Error(ErrorKind::kIntegrity, "Cannot " + what + ": the registry stored " + *stored);
  }
}

// One blob upload: a session, its steps, and what to do when one is lost.
class BlobUpload {
 public:
  BlobUpload(Transport& transport, Habits& habits, std::string_view repository,
             std::string_view digest, uint64_t size, const BlobSource& source,
             const UploadJournal* journal)
      : journal_(journal),
        transport_(transport),
        habits_(habits),
        repository_(repository),
        digest_(digest),
        size_(size),
        source_(source),
        scope_(AuthScope::push(repository)),
        what_("upload blob " + describe(transport, repository, digest)),
        chunk_(std::max<uint64_t>(transport.options().upload_chunk_size, 1)) {
    chunked_ =
        size_ > transport.options().monolithic_upload_limit && !habits_.whole_blobs_only.load();
  }

  void run() {
    if (!resume()) start();
    int failures = 0;
    while (true) {
      Outcome outcome = !chunked_ ? put_whole() : offset_ < size_ ? patch() : close();
      if (outcome == Outcome::kDone) {
        record(true);
        return;
      }
      if (outcome == Outcome::kProgress) {
        // Only bytes never held before are progress: a new session that
        // gets as far as the last one did and is lost again counts as a
        // failure, so a push that cannot get further ends (EIO).
        if (offset_ > furthest_) {
          furthest_ = offset_;
          failures = 0;
        }
        record(false);
        continue;
      }
      if (outcome == Outcome::kNoChunks) {
        LOG(kInfo) << "Cannot " << what_ << " in chunks: " << transport_.options().registry
                   << " refuses them (HTTP 405); sending its blobs in one request from now on";
        habits_.whole_blobs_only = true;
        chunked_ = false;
        start();
        continue;
      }
      if (++failures >= transport_.options().max_attempts ||
          !transport_.wait_to_retry(failures, last_.ok() ? &last_ : nullptr)) {
        fail(transport_, last_, what_);
      }
      if (recover()) {
        record(true);
        return;
      }
      record(false);
    }
  }

 private:
  enum class Outcome { kDone, kProgress, kOutOfStep, kNoChunks };

  // Tells the journal where the upload stands (`done`: nowhere any more).
  void record(bool done) {
    if (!journal_ || !journal_->record || (!chunked_ && !done)) return;
    if (done) {
      journal_->record(std::nullopt);
    } else {
      journal_->record(UploadProgress{url_, offset_});
    }
  }

  // Goes on with the session an earlier process left, if the registry
  // still keeps it: true, with url_ and offset_ where it stands.
  bool resume() {
    if (!journal_ || !journal_->resume || !chunked_ || journal_->resume->url.empty()) return false;
    const UploadProgress& left = *journal_->resume;
    std::string answered;
    HttpResponse response;
    try {
      response =
          transport_.send_step(what_, scope_, left.url, request_for(transport_, "GET"), &answered);
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kUnavailable || e.kind() == ErrorKind::kTimeout) throw;
      response = HttpResponse{};
    }
    if (!response.ok() && lost(response)) fail(transport_, response, what_);
    uint64_t held = 0;
    bool kept = response.ok() && (response.status == 204 || response.status == 200);
    if (auto range = response.headers.get("Range"); kept && range) {
      auto received = received_bytes(*range);
      kept = received && *received <= size_;
      held = received.value_or(0);
    } else {
      kept = false;
    }
    if (!kept) {
      LOG(kInfo) << "Cannot resume the upload of blob " << digest_ << " to " << repository_
                 << ": the registry kept no session (HTTP " << response.status
                 << "); starting it again";
      return false;
    }
    url_ = left.url;
    follow(response, answered);
    offset_ = held;
    LOG(kInfo) << "Resuming the upload of blob " << digest_ << " to " << repository_ << " at byte "
               << offset_ << " of " << size_;
    return true;
  }

  // Opens a new session at byte 0.
  void start() {
    std::string target = "/v2/" + repository_ + "/blobs/uploads/";
    HttpResponse response = transport_.send(what_, scope_, target, request_for(transport_, "POST"));
    auto location = response.headers.get("Location");
    if (response.status < 200 || response.status > 299) fail(transport_, response, what_);
    if (!location || location->empty()) {
      throw Error(ErrorKind::kIo, "Cannot " + what_ + ": the registry sent no upload location");
    }
    url_ = resolve_url(transport_.full_url(target), *location);
    offset_ = 0;
    record(false);
    // The registry's smallest part, when it says it (OCI distribution 1.1).
    if (auto min = response.headers.get("OCI-Chunk-Min-Length")) {
      char* end = nullptr;
      uint64_t bytes = std::strtoull(min->c_str(), &end, 10);
      if (!min->empty() && *end == '\0' && bytes > chunk_ && bytes < (uint64_t{1} << 34)) {
        chunk_ = bytes;
      }
    }
  }

  // The verdict on a step's answer; `done` are its success statuses.
  Outcome judge(const HttpResponse& response, std::initializer_list<int> done) {
    if (response.ok() && one_of(response.status, done)) return Outcome::kProgress;
    if (lost(response) || out_of_step(response)) {
      last_ = response;
      return Outcome::kOutOfStep;
    }
    fail(transport_, response, what_);
  }

  void follow(const HttpResponse& response, const std::string& answered) {
    auto location = response.headers.get("Location");
    if (location && !location->empty()) url_ = resolve_url(answered, *location);
  }

  Outcome put_whole() {
    std::string answered;
    HttpResponse response =
        transport_.send_step(what_, scope_, with_digest(url_, digest_),
                             stream_request(transport_, "PUT", size_, source_), &answered);
    Outcome outcome = judge(response, kPutDone);
    if (outcome != Outcome::kProgress) return outcome;
    check_stored(response, digest_, what_);
    return Outcome::kDone;
  }

  Outcome patch() {
    const uint64_t first = offset_;
    const uint64_t length = std::min(chunk_, size_ - first);
    const BlobSource& source = source_;
    HttpRequest request = stream_request(transport_, "PATCH", length,
                                         [&source, first](uint64_t at, char* buffer, size_t max) {
                                           return source(first + at, buffer, max);
                                         });
    request.headers.push_back("Content-Range: " + std::to_string(first) + "-" +
                              std::to_string(first + length - 1));
    std::string answered;
    HttpResponse response = transport_.send_step(what_, scope_, url_, request, &answered);
    if (response.ok() && response.status == 405) return Outcome::kNoChunks;
    Outcome outcome = judge(response, kPatchDone);
    if (outcome != Outcome::kProgress) return outcome;
    offset_ = first + length;
    follow(response, answered);
    return Outcome::kProgress;
  }

  Outcome close() {
    HttpRequest request = request_for(transport_, "PUT");
    request.headers.push_back("Content-Type: application/octet-stream");
    std::string answered;
    HttpResponse response =
        transport_.send_step(what_, scope_, with_digest(url_, digest_), request, &answered);
    Outcome outcome = judge(response, kPutDone);
    if (outcome != Outcome::kProgress) return outcome;
    check_stored(response, digest_, what_);
    return Outcome::kDone;
  }

  // After a lost or out-of-step answer: true if the blob is in the
  // repository now; else the upload goes on where the session stands, or
  // in a new one.
  bool recover() {
    if (blob_exists(transport_, repository_, digest_)) {
      LOG(kDebug) << "Blob " << digest_ << " is in " << repository_
                  << ": the answer lost was the upload's last";
      return true;
    }
    if (chunked_) {
      std::string answered;
      HttpResponse response =
          transport_.send_step(what_, scope_, url_, request_for(transport_, "GET"), &answered);
      auto range = response.headers.get("Range");
      auto received = range ? received_bytes(*range) : std::nullopt;
      if (response.ok() && (response.status == 204 || response.status == 200) && received &&
          *received <= size_) {
        offset_ = *received;
        follow(response, answered);
        LOG(kDebug) << "Cannot tell whether a step of " << what_ << " was done; the session has "
                    << offset_ << " bytes, going on from there";
        return false;
      }
    }
    LOG(kDebug) << "Cannot tell whether a step of " << what_ << " was done; starting again";
    start();
    return false;
  }

  const UploadJournal* journal_;  // null: nothing outlives this process
  Transport& transport_;
  Habits& habits_;
  const std::string repository_;
  const std::string digest_;
  const uint64_t size_;
  const BlobSource& source_;
  const AuthScope scope_;
  const std::string what_;
  uint64_t chunk_;
  bool chunked_ = false;
  std::string url_;        // the session's URL for its next step
  uint64_t offset_ = 0;    // bytes the session holds
  uint64_t furthest_ = 0;  // the most bytes any session of this upload held
  HttpResponse last_;      // the answer that put the upload out of step
};

// Whether `reference` names the manifest `digest` now.
bool manifest_there(Transport& transport, std::string_view repository, std::string_view reference,
                    std::string_view digest, std::string_view media_type) {
  HttpRequest request = request_for(transport, "HEAD");
  request.headers.push_back("Accept: " + std::string(media_type) + ", " + manifest_accept_header());
  try {
    HttpResponse response = transport.send(
        "check manifest", AuthScope::push(repository),
        "/v2/" + std::string(repository) + "/manifests/" + std::string(reference), request);
    if (response.status != 200) return false;
    if (is_valid_digest(reference)) return true;
    return response.headers.get("Docker-Content-Digest") == std::string(digest);
  } catch (const Error& e) {
    LOG(kDebug) << "Cannot check a manifest: " << e.what();
    return false;
  }
}

}  // namespace

std::optional<uint64_t> received_bytes(std::string_view range) {
  if (range.starts_with("bytes=")) range.remove_prefix(6);
  if (!range.starts_with("0-") || range.size() < 3 || range.size() > 22) return std::nullopt;
  std::string_view last = range.substr(2);
  if (last.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
  uint64_t value = std::stoull(std::string(last));
  return value == 0 ? 0 : value + 1;
}

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
  auto location = response.headers.get("Location");
  if (response.status < 200 || response.status > 299) fail(transport, response, what);
  if (!location || location->empty()) {
    // A 2xx that opened no session: believe it only if the blob is there.
    return blob_exists(transport, repository, digest);
  }
  // Not mounted: the registry opened an upload session; close it.
  try {
    transport.send(what, AuthScope::push(repository),
                   resolve_url(transport.full_url(target), *location),
                   request_for(transport, "DELETE"));
  } catch (const Error& e) {
    LOG(kDebug) << "Cannot cancel an upload session: " << e.what();
  }
  return false;
}

void upload_blob(Transport& transport, Habits& habits, std::string_view repository,
                 std::string_view digest, uint64_t size, const BlobSource& source,
                 const UploadJournal* journal) {
  check_names(repository, digest);
  BlobUpload(transport, habits, repository, digest, size, source, journal).run();
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
  const std::string target =
      "/v2/" + std::string(repository) + "/manifests/" + std::string(reference);
  for (int attempt = 1;; ++attempt) {
    std::string answered;
    HttpResponse response =
        transport.send_step(what, AuthScope::push(repository), target, request, &answered);
    if (response.ok() && one_of(response.status, kPutDone)) {
      check_stored(response, digest, what);
      return digest;
    }
    if (!lost(response) || attempt >= transport.options().max_attempts ||
        !transport.wait_to_retry(attempt, response.ok() ? &response : nullptr)) {
      fail(transport, response, what);
    }
    // The answer may be all that was lost: ask before sending it again.
    if (manifest_there(transport, repository, reference, digest, media_type)) {
      LOG(kDebug) << "Manifest " << digest << " is in " << repository
                  << " already: only the answer was lost";
      return digest;
    }
  }
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
  if (!one_of(response.status, {202, 200, 204})) fail(transport, response, what);
}

}  // namespace regfs::registry::upload
