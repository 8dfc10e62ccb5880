// A client for one registry over the OCI distribution API. Thread-safe: the
// FUSE threads share one Client per registry. Handles authentication (anonymous,
// Basic, bearer tokens cached per scope), retries of 429/5xx/resets with
// jittered backoff honouring Retry-After, a deadline on every request, plain
// HTTP fallback for loopback registries, and blob redirects (no Authorization
// is ever sent to another host). Content is verified: manifests against the
// digest asked for or Docker-Content-Digest.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "registry/credentials.h"
#include "registry/health.h"
#include "registry/mirrors.h"

namespace regfs::registry {

struct ClientOptions {
  std::string registry;  // canonical name: "localhost:5000", "docker.io"
  // Allow plain HTTP and unverified TLS. Loopback registries may always fall
  // back to plain HTTP.
  bool insecure = false;
  std::string ca_cert;  // extra CA bundle file, empty for none
  std::chrono::milliseconds connect_timeout{10'000};
  // Deadline of a request with no body stream (ping, manifests, lists).
  std::chrono::milliseconds request_timeout{30'000};
  // A streaming blob transfer fails if no byte arrives for this long.
  std::chrono::milliseconds stall_timeout{30'000};
  int max_attempts = 4;  // tries of a retryable request, the first included
  // Uploads: blobs up to this size go in one PUT, larger ones in PATCH
  // chunks of upload_chunk_size bytes (or the registry's
  // OCI-Chunk-Min-Length, if larger), all but the last of that size.
  uint64_t monolithic_upload_limit = 8 << 20;
  uint64_t upload_chunk_size = 16 << 20;
  std::shared_ptr<const CredentialStore> credentials;  // null: anonymous
  // Pull-through mirrors, tried in order for manifests, tag HEADs and blobs
  // before the registry itself, which answers when they fail.
  std::vector<Mirror> mirrors;
  // Whether the registry answers, shared by its clients (registry/health.h):
  // while it is down, requests fail at once. Null: not tracked (mirrors).
  std::shared_ptr<Health> health;
};

struct ManifestHead {
  std::string digest;  // from Docker-Content-Digest (or the digest asked for)
  std::string media_type;
  int64_t size = 0;
};

struct ManifestData {
  std::string bytes;  // exactly as served
  std::string media_type;
  std::string digest;  // verified sha256 of bytes
};

// Receives blob bytes in order; returns false to stop the transfer.
using BodySink = std::function<bool(const char* data, size_t size)>;

// Gives the bytes of a blob being uploaded: up to `max` bytes from `offset`
// into `buffer`; returns how many (0 before the end is an error) or throws.
// Asked by offset so that a chunk or a retried request can be re-read.
using BlobSource = std::function<size_t(uint64_t offset, char* buffer, size_t max)>;

// Where a chunked blob upload stands: the session URL for its next step
// and the bytes the registry holds.
struct UploadProgress {
  std::string url;
  uint64_t offset = 0;
};

// Lets a chunked upload outlive its process: `resume` is a session an
// earlier one left (tried first: GET of its URL, then on from the Range the
// registry holds; a new session if it kept none), `record` is told where the
// upload stands after each step, and nullopt once it is done.
struct UploadJournal {
  std::optional<UploadProgress> resume;
  std::function<void(const std::optional<UploadProgress>&)> record;
};

class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const std::string& registry() const;

  // GET /v2/. Throws Error(kUnavailable/kTimeout) when unreachable. A 401
  // that the auth flow cannot pass is not an error here (the registry is up).
  void ping();
  // The same request even while the registry is marked down (the health
  // probe): an answer marks it up, a failure keeps it down. Throws as ping.
  void probe();

  // HEAD /v2/<repo>/manifests/<reference>. Resolves a tag without a GET
  // (Docker Hub counts GETs against pull limits).
  ManifestHead head_manifest(std::string_view repository, std::string_view reference);
  // GET of a manifest or index, verified: against `reference` if it is a
  // digest, else against Docker-Content-Digest when the registry sends it.
  ManifestData get_manifest(std::string_view repository, std::string_view reference);

  // GET /v2/<repo>/blobs/<digest>, bytes [offset, offset+length) to `sink`
  // (length 0: to the end). Uses HTTP Range when offset or length is set;
  // follows redirects without credentials. A transfer interrupted by a reset
  // resumes from the last byte delivered. The caller verifies the digest.
  void get_blob(std::string_view repository, std::string_view digest, uint64_t offset,
                uint64_t length, const BodySink& sink);
  // A foreign layer's bytes from one of its descriptor's `urls`: none of the
  // registry's credentials, tokens or client certificates go there, and TLS
  // is verified against the system store (registry/foreign_blob.h).
  void get_foreign_blob(std::string_view url, uint64_t offset, uint64_t length,
                        const BodySink& sink);

  // GET /v2/_catalog, every page. Throws Error(kUnsupported) if the registry
  // does not serve a catalog (404, or 401/403 for this client).
  std::vector<std::string> catalog();
  // GET /v2/<repo>/tags/list, every page. Error(kNotFound) if no repository.
  std::vector<std::string> list_tags(std::string_view repository);

  // Push (registry/upload.cc). Tokens are asked for "pull,push" on the
  // target repository. Errors: DENIED/401/403 are kUnauthorized, 405 and
  // UNSUPPORTED kUnsupported.

  // HEAD /v2/<repo>/blobs/<digest>: whether the repository has the blob.
  bool blob_exists(std::string_view repository, std::string_view digest);
  // POST /v2/<repo>/blobs/uploads/?mount=<digest>&from=<from>: true if the
  // registry linked the blob (201); false if it opened an upload instead
  // (202; the session is cancelled, upload the blob instead).
  bool mount_blob(std::string_view repository, std::string_view digest, std::string_view from);
  // Uploads `size` bytes from `source` as `digest`: POST then one PUT up to
  // monolithic_upload_limit, else PATCH chunks with Content-Range and a
  // closing PUT ?digest= (one PUT for a registry that refused a PATCH with
  // 405). A step whose answer is lost is checked, not resent blindly. The
  // registry verifies the digest.
  void upload_blob(std::string_view repository, std::string_view digest, uint64_t size,
                   const BlobSource& source, const UploadJournal* journal = nullptr);
  // PUT /v2/<repo>/manifests/<reference> with `media_type` as Content-Type.
  // Returns the digest; throws Error(kIntegrity) if the registry's
  // Docker-Content-Digest differs from the bytes' sha256.
  std::string put_manifest(std::string_view repository, std::string_view reference,
                           std::string_view bytes, std::string_view media_type);
  // DELETE /v2/<repo>/manifests/<reference> (a tag or a digest).
  void delete_manifest(std::string_view repository, std::string_view reference);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace regfs::registry
