// The seam between the tree (fs/tree) and the source (fs/source): what the
// tree asks of registries' content, and nothing else. `Content` and
// `RegistryContent` (fs/source/content.h) implement it over the network and
// the cache; the tree's unit tests implement it in memory
// (tests/unit/fs/tree/fake_source.h).
//
//   Source          every registry the mount touches, the local cache the
//                   rootfs/ merges keep their layer indexes in, and the
//                   status document
//   RegistrySource  one registry: tag answers, tags/list, the catalog,
//                   manifests, configs and blobs
//
// Errors are registry::Error kinds (registry/core/error.h): kNotFound (no
// such repository, tag or manifest), kUnauthorized (401/403: a private or a
// missing repository), kUnavailable / kTimeout / kTooManyRequests (the
// registry did not answer and nothing it said before is kept), kIntegrity
// (bytes that do not match their digest), kInvalid (malformed or oversized
// content). The tree decides what a kind means for a name (fs/tree/tree.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "cache/blob_cache.h"
#include "cache/tag_store.h"
#include "fs/source/blob_reader.h"
#include "fs/source/merge_progress.h"

namespace regfs::fs {

// A sorted list of names (tags, or repositories of a catalog), shared.
using Names = std::shared_ptr<const std::vector<std::string>>;

class RegistrySource {
 public:
  virtual ~RegistrySource() = default;

  // The canonical registry name ("docker.io", "localhost:5000").
  virtual const std::string& name() const = 0;
  // Docker Hub: names are `namespace/name`, and it serves no catalog.
  virtual bool is_docker_hub() const = 0;

  // The manifest digest, media type and size `tag` of `repository` points
  // at now (HEAD of the manifest; maybe an answer kept for --tag-ttl).
  // Throws kNotFound (no such tag or repository), kUnauthorized, or the
  // registry's unreachability when no earlier answer is kept.
  virtual cache::TagRecord resolve_tag(const std::string& repository, const std::string& tag) = 0;
  // The bytes of manifest or index `digest` of `repository`, exactly as
  // served and verified against `digest`. Throws kNotFound, kUnauthorized,
  // kIntegrity, kInvalid (over 4 MiB), unreachability.
  virtual std::string manifest(const std::string& repository, const std::string& digest) = 0;
  // Blob `digest` of `size` bytes (a config) in memory, verified. Throws
  // kInvalid (over 8 MiB or a negative size) and what a blob read throws.
  virtual std::string small_blob(const std::string& repository, const std::string& digest,
                                 int64_t size) = 0;
  // A reader of blob `digest` of `size` bytes; nothing is fetched until it
  // reads (reads throw what fetching throws). Throws kInvalid for a
  // negative size.
  virtual std::shared_ptr<BlobReader> open_blob(const std::string& repository,
                                                const std::string& digest, int64_t size) = 0;
  // The path of the complete, verified blob in the cache, fetched whole if
  // needed (a layer to index), even past --cache-size; `opened` sees its
  // reader first, to follow the fetch's progress: the blob stays in the
  // cache while that reader is kept. Throws kNoSpace (the disk is full) and
  // what fetching throws.
  virtual std::filesystem::path blob(
      const std::string& repository, const std::string& digest, int64_t size,
      const std::function<void(const std::shared_ptr<BlobReader>&)>& opened = {}) = 0;
  // Runs `task` on the pool that fetches this registry's blobs (a lazy
  // layer's chunk fetches, so no FUSE thread does them).
  virtual void submit(std::function<void()> task) = 0;
  // Bytes [offset, offset+length) of blob `digest`, fetched now, not cached
  // and not verified (a lazy layer's footer, table and chunks, which the
  // caller checks against their own digests). Throws kIo if fewer came.
  virtual std::string read_range(const std::string& repository, const std::string& digest,
                                 uint64_t offset, uint64_t length) = 0;
  // Every repository of the registry, sorted; nullptr if it serves no
  // catalog to us (Docker Hub, a token without catalog scope). Throws
  // unreachability when no earlier listing is kept.
  virtual Names catalog() = 0;
  // Every tag of `repository`, sorted (tags/list). Throws kNotFound (no such
  // repository), kUnauthorized (refused: private, or missing on registries
  // that answer 401 alike), unreachability when no earlier listing is kept.
  virtual Names tags(const std::string& repository) = 0;
  // Repositories the cache kept answers for in earlier mounts (no request).
  virtual std::vector<std::string> cached_repositories() const = 0;
  // Where blob `digest` (a foreign layer) may be fetched if the registry
  // lacks it: its descriptor's urls, as a manifest lists them.
  virtual void add_foreign_urls(const std::string& digest,
                                const std::vector<std::string>& urls) = 0;
};

class Source {
 public:
  virtual ~Source() = default;

  // The content of registry `name` (canonical), made on first use and kept
  // as long as the source. Never throws for a name: an unreachable registry
  // answers its requests with errors.
  virtual RegistrySource& registry(const std::string& name) = 0;
  // The registries made so far, sorted.
  virtual std::vector<std::string> registries_in_use() = 0;
  // Who the mount is to `registry`, for messages: "user NAME (from FILE)",
  // "an identity token (from FILE)" or "anonymous". Never a secret.
  virtual std::string account(const std::string& registry) const = 0;
  // The namespaces of `registry` the credentials file names (its
  // `host/namespace` keys, the account's user name; fs/tree/known_names.h).
  virtual std::vector<std::string> credential_namespaces(const std::string& registry) const = 0;
  // The local cache: blobs, small blobs (a lazy layer's chunks) and the
  // derived files under its root (rootfs/ layer indexes, cache/layout.h).
  virtual cache::BlobCache& cache() = 0;
  // The rootfs/ merges running (fs/tree/rootfs.h), for `regfs status`.
  virtual MergeProgress& merges() = 0;
  // The status document (fs/source/status.h) of a mount serving `what`,
  // with each staged tag ("registry/repository:tag") and its state.
  virtual std::string status(const std::string& what,
                             const std::vector<std::pair<std::string, std::string>>& staged,
                             bool read_only) = 0;
};

}  // namespace regfs::fs
