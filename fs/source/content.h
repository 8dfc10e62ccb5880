// Content of one registry as the tree needs it (the RegistrySource of
// fs/source/source.h), with the caches in front of the network: tag answers, catalog and tag lists
// (trusted for --tag-ttl; past it the last answer is given at once while one refresh per key runs
// on a background worker, so a changed answer shows at the next lookup or
// listing; --tag-ttl 0 asks every time), manifests and configs kept whole,
// blobs read lazily by chunks (HTTP ranges on a worker pool, with readahead
// that grows while a reader goes forward; one transfer per chunk however
// many readers wait). The registry's health (registry/health.h) is probed
// from here while it is down: GET /v2/ on a background worker, 1 s to 30 s
// apart; meanwhile nothing waits on it and cached answers are served.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cache/blob_cache.h"
#include "cache/tag_store.h"
#include "fs/source/merge_progress.h"
#include "fs/source/source.h"
#include "fs/source/worker_pool.h"
#include "registry/client.h"
#include "registry/core/error.h"
#include "registry/core/single_flight.h"

namespace regfs::fs {

// Transfers in flight, for `regfs status`.
class Transfers {
 public:
  struct Info {
    std::string what;
    uint64_t done = 0;
    uint64_t total = 0;
    std::chrono::steady_clock::time_point started;
  };
  uint64_t begin(std::string what, uint64_t total);
  void progress(uint64_t id, uint64_t bytes);
  void end(uint64_t id);
  std::vector<Info> snapshot();

 private:
  std::mutex mutex_;  // guards the members below
  uint64_t next_id_ = 1;
  std::map<uint64_t, Info> active_;
};

class RegistryContent final : public RegistrySource, public ChunkFetcher {
 public:
  // `pool` fetches blobs, `small_pool` blobs of one chunk (configs, small
  // layers), so that they never queue behind a large blob's fetches that
  // hang; `background` runs refreshes and health probes (so that they never
  // queue behind bulk transfers). `follow_urls`: a foreign layer the
  // registry lacks is fetched from its descriptor's urls (false: --no-urls).
  RegistryContent(registry::ClientOptions options, cache::BlobCache& cache, cache::TagStore& tags,
                  std::chrono::seconds tag_ttl, WorkerPool& pool, WorkerPool& small_pool,
                  WorkerPool& background, Transfers& transfers, bool follow_urls = true);
  ~RegistryContent() override;

  // RegistrySource (fs/source/source.h says what each takes, gives, throws).
  const std::string& name() const override { return client_.registry(); }
  bool is_docker_hub() const override;

  const std::shared_ptr<registry::Health>& health() const { return health_; }

  // The manifest digest a tag points at (within the TTL; past it, the last
  // answer while a refresh runs behind).
  cache::TagRecord resolve_tag(const std::string& repository, const std::string& tag) override;
  // Manifest bytes, verified against `digest`.
  std::string manifest(const std::string& repository, const std::string& digest) override;
  // A small blob (a config) in memory, verified.
  std::string small_blob(const std::string& repository, const std::string& digest,
                         int64_t size) override;
  // A reader of the blob; nothing is fetched until it reads.
  std::shared_ptr<BlobReader> open_blob(const std::string& repository, const std::string& digest,
                                        int64_t size) override;
  // The path of the complete, verified blob in the cache, fetched if needed;
  // `opened` sees its reader first (to follow the fetch's progress).
  // Throws Error(kNoSpace) if the blob cannot fit in the cache bound.
  std::filesystem::path blob(
      const std::string& repository, const std::string& digest, int64_t size,
      const std::function<void(const std::shared_ptr<BlobReader>&)>& opened = {}) override;
  // Bytes [offset, offset+length) of blob `digest`, fetched now by one HTTP
  // range into memory, not cached and not verified (a lazy layer's table and
  // chunks, which the caller checks against their own digests).
  std::string read_range(const std::string& repository, const std::string& digest, uint64_t offset,
                         uint64_t length) override;
  // Every repository, sorted; nullptr if the registry serves no catalog to us.
  Names catalog() override;
  // Every tag of `repository`, sorted. Throws Error(kNotFound) if no such.
  Names tags(const std::string& repository) override;
  // After a push or delete of `tag`: records what it points at now (a
  // default record: unknown, asked again) and adds it to (or removes it
  // from) the repository's tag list and the catalog as they are known, so
  // listings show the change at once; they are refreshed behind it.
  void tag_changed(const std::string& repository, const std::string& tag,
                   const cache::TagRecord& record);

  // Repositories the cache recorded answers for in earlier mounts.
  std::vector<std::string> cached_repositories() const override {
    return tags_.repositories(name());
  }
  // Where blob `digest` (a foreign layer) may be fetched if the registry
  // lacks it: its descriptor's urls, as a manifest lists them.
  void add_foreign_urls(const std::string& digest, const std::vector<std::string>& urls) override;

  // ChunkFetcher, for BlobReader: the claimed chunks [first, last] fetched
  // by ranged GETs on the worker pool, in the background.
  cache::BlobCache& cache() override { return cache_; }
  void submit(std::function<void()> task) override { pool_.submit(std::move(task)); }
  void fetch(const std::string& repository, std::shared_ptr<cache::CachedBlob> blob, size_t first,
             size_t last) override;

 private:
  struct Listing {
    Names names;
    std::chrono::steady_clock::time_point fetched;
    std::optional<registry::Error> error;  // a cached negative answer
    uint64_t credentials = 0;              // generation of the credentials it was asked with
  };
  // The generation of the credentials files (0 without any): an answer got
  // with other credentials is not reused (a `regfs login` while mounted).
  uint64_t credentials_generation() const;
  // A listing (a repository's tags, or the catalog when `repository` is
  // empty) kept --tag-ttl in memory and on disk for offline use.
  template <typename Fetch>
  Names cached_listing(const std::string& repository, Fetch fetch);
  // Background refreshes of a stale answer, one per key at a time, not
  // while the registry is down. An answer that changed meanwhile
  // (tag_changed) is not overwritten by an older one.
  void refresh_tag_later(const std::string& repository, const std::string& tag);
  template <typename Fetch>
  void refresh_listing_later(const std::string& key, const std::string& repository, Fetch fetch);
  // The next health probe of a registry that went down for the `epoch`th time.
  void probe_later(uint64_t epoch, int attempt);
  void probe(uint64_t epoch, int attempt);
  static registry::ClientOptions with_health(registry::ClientOptions options);
  void fetch_run(const std::string& repository, const std::shared_ptr<cache::CachedBlob>& blob,
                 size_t first, size_t last);
  // After the registry answered BLOB_UNKNOWN (`missing`): [offset + delivered,
  // offset + length) of `digest` from its foreign urls, into `sink`.
  void fetch_foreign(const std::string& digest, uint64_t offset, uint64_t length,
                     const uint64_t& delivered, const registry::BodySink& sink,
                     const registry::Error& missing);

  const std::shared_ptr<const registry::CredentialStore> credentials_;  // before client_
  const std::shared_ptr<registry::Health> health_;
  registry::Client client_;
  cache::BlobCache& cache_;
  cache::TagStore& tags_;
  const std::chrono::seconds tag_ttl_;
  WorkerPool& pool_;
  WorkerPool& small_pool_;
  WorkerPool& background_;
  Transfers& transfers_;
  registry::SingleFlight refreshes_;
  std::atomic<bool> stopping_{false};  // no probe is scheduled once set

  const bool follow_urls_;

  std::mutex mutex_;  // guards listings_, foreign_urls_ and changes_
  std::map<std::string, Listing> listings_;
  std::map<std::string, std::vector<std::string>> foreign_urls_;  // by blob digest
  uint64_t changes_ = 0;                                          // tag_changed calls so far
};

struct ContentOptions {
  std::filesystem::path cache_dir;
  uint64_t cache_size = 10ull << 30;
  std::chrono::seconds tag_ttl{30};
  std::vector<std::string> insecure;  // canonical registry names
  std::string ca_cert;
  std::shared_ptr<const registry::CredentialStore> credentials;
  // --mirror REGISTRY=MIRROR, and registries.conf (see registry/mirrors.h).
  std::vector<std::pair<std::string, std::string>> mirrors;
  std::shared_ptr<const registry::RegistriesConf> registries_conf;
  size_t fetch_threads = 6;
  // Request deadline and transfer stall limit; zero: the client's defaults.
  std::chrono::milliseconds request_timeout{0};
  // Size of one upload part (and the largest blob pushed in one request);
  // zero: the client's defaults.
  uint64_t upload_chunk_size = 0;
  bool follow_urls = true;  // foreign layers from their urls (--no-urls: false)
};

// What a registry client is for: reads go through the registry's mirrors,
// pushes only to the registry itself.
enum class ClientUse { kRead, kPush };

// The one place that makes registry client options from the mount's: the
// registry `name` insecure if --insecure or registries.conf says so, the CA,
// credentials, --request-timeout (request deadline, stall limit, connect
// timeout) and upload part size alike for reads and pushes; mirrors for
// kRead only. The health is left null for the caller to share.
registry::ClientOptions client_options(const ContentOptions& options, const std::string& name,
                                       ClientUse use);

// Every registry the mount has touched, made on first use: the Source of
// fs/source/source.h, and what the push side needs besides (health, options).
class Content final : public Source {
 public:
  explicit Content(ContentOptions options);
  RegistryContent& registry(const std::string& name) override;
  // Registries made so far, sorted.
  std::vector<std::string> registries_in_use() override;
  // The health of `registry`, shared by every client of it (Pusher's too).
  std::shared_ptr<registry::Health> health(const std::string& registry);
  // Each registry in use and its health, sorted by name.
  std::vector<std::pair<std::string, registry::Health::State>> health_states();
  // Runs `listener(registry)` each time a registry comes back up (on the
  // thread that saw it; it must return quickly). Replacing it (by nullptr
  // too) waits for a call in progress, so its owner may then go.
  void on_registry_up(std::function<void(const std::string&)> listener);
  const ContentOptions& options() const { return options_; }
  // Who the mount is to `registry`, for messages: "user NAME (from FILE)",
  // "an identity token (from FILE)" or "anonymous". Never a secret.
  std::string account(const std::string& registry) const override;
  // The namespaces of `registry` that the credentials name.
  std::vector<std::string> credential_namespaces(const std::string& registry) const override;

  // Where blob `digest` (a foreign layer) may be fetched if the registry
  // lacks it: its descriptor's urls, as a manifest lists them.
  void add_foreign_urls(const std::string& digest, const std::vector<std::string>& urls);

  cache::BlobCache& cache() override { return cache_; }
  Transfers& transfers() { return transfers_; }
  // The rootfs merges running (fs/tree/rootfs.h), for `regfs status`.
  MergeProgress& merges() override { return merges_; }
  // status_json (fs/source/status.h) of this content.
  std::string status(const std::string& what,
                     const std::vector<std::pair<std::string, std::string>>& staged,
                     bool read_only) override;

 private:
  ContentOptions options_;
  cache::BlobCache cache_;
  cache::TagStore tags_;
  Transfers transfers_;
  MergeProgress merges_;
  std::mutex on_up_mutex_;  // guards on_up_, held while it runs; taken before mutex_
  std::function<void(const std::string&)> on_up_;
  std::mutex mutex_;  // guards registries_
  std::map<std::string, std::unique_ptr<RegistryContent>> registries_;
  // Joined in reverse order, each before what its tasks use: small_pool_
  // and pool_ (blob fetches, whose failures may schedule a probe) before
  // background_ (refreshes and probes).
  WorkerPool background_;
  WorkerPool pool_;
  WorkerPool small_pool_;
};

}  // namespace regfs::fs
