// Content of one registry as the tree needs it, with the caches in front of
// the network: tag answers (trusted for --tag-ttl, used past it while the
// registry is unreachable), manifests and blobs from the content-addressed
// BlobStore (fetched, verified and stored on first use, one transfer per
// blob however many readers wait), catalog and tag lists (kept --tag-ttl).
#pragma once

#include <chrono>
#include <filesystem>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cache/blob_store.h"
#include "cache/tag_store.h"
#include "registry/client.h"
#include "registry/error.h"

namespace regfs::fs {

using Names = std::shared_ptr<const std::vector<std::string>>;

class RegistryContent {
 public:
  RegistryContent(registry::ClientOptions options, cache::BlobStore& blobs,
                  cache::TagStore& tags, std::chrono::seconds tag_ttl);

  const std::string& name() const { return client_.registry(); }
  bool is_docker_hub() const;

  // The manifest digest a tag points at now (within the TTL).
  cache::TagRecord resolve_tag(const std::string& repository, const std::string& tag);
  // Manifest bytes, verified against `digest`.
  std::string manifest(const std::string& repository, const std::string& digest);
  // A small blob (a config) in memory, verified.
  std::string small_blob(const std::string& repository, const std::string& digest, int64_t size);
  // The path of the complete, verified blob in the cache, fetched if needed.
  std::filesystem::path blob(const std::string& repository, const std::string& digest,
                             int64_t size);
  // Every repository, sorted; nullptr if the registry serves no catalog to us.
  Names catalog();
  // Every tag of `repository`, sorted. Throws Error(kNotFound) if no such.
  Names tags(const std::string& repository);

 private:
  struct Listing {
    Names names;
    std::chrono::steady_clock::time_point fetched;
    std::optional<registry::Error> error;  // a cached negative answer
  };
  template <typename Fetch>
  Names cached_listing(const std::string& key, Fetch fetch);
  std::filesystem::path download(const std::string& repository, const std::string& digest,
                                 int64_t size);

  registry::Client client_;
  cache::BlobStore& blobs_;
  cache::TagStore& tags_;
  const std::chrono::seconds tag_ttl_;

  std::mutex mutex_;  // guards listings_ and downloads_
  std::map<std::string, Listing> listings_;
  std::map<std::string, std::shared_future<std::filesystem::path>> downloads_;
};

struct ContentOptions {
  std::filesystem::path cache_dir;
  std::chrono::seconds tag_ttl{30};
  std::vector<std::string> insecure;  // canonical registry names
  std::string ca_cert;
  std::shared_ptr<const registry::CredentialStore> credentials;
};

// Every registry the mount has touched, made on first use.
class Content {
 public:
  explicit Content(ContentOptions options);
  RegistryContent& registry(const std::string& name);
  // Registries made so far, sorted.
  std::vector<std::string> registries_in_use();
  const ContentOptions& options() const { return options_; }

 private:
  ContentOptions options_;
  cache::BlobStore blobs_;
  cache::TagStore tags_;
  std::mutex mutex_;  // guards registries_
  std::map<std::string, std::unique_ptr<RegistryContent>> registries_;
};

}  // namespace regfs::fs
