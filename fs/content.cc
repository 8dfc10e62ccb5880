#include "fs/content.h"

#include <algorithm>

#include "registry/digest.h"
#include "registry/log.h"
#include "registry/reference.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr size_t kMaxManifestSize = 4 << 20;  // as containerd limits manifests
constexpr size_t kMaxConfigSize = 8 << 20;

// Errors that say the registry could not answer, as opposed to answers.
bool is_unreachable(const Error& e) {
  return e.kind() == ErrorKind::kUnavailable || e.kind() == ErrorKind::kTimeout ||
         e.kind() == ErrorKind::kTooManyRequests;
}

}  // namespace

RegistryContent::RegistryContent(registry::ClientOptions options, cache::BlobStore& blobs,
                                 cache::TagStore& tags, std::chrono::seconds tag_ttl)
    : client_(std::move(options)), blobs_(blobs), tags_(tags), tag_ttl_(tag_ttl) {}

bool RegistryContent::is_docker_hub() const { return name() == registry::kDockerHub; }

cache::TagRecord RegistryContent::resolve_tag(const std::string& repository,
                                              const std::string& tag) {
  auto known = tags_.get(name(), repository, tag);
  auto now = std::chrono::system_clock::now();
  if (known && now - known->fetched < tag_ttl_ && now >= known->fetched) return *known;
  try {
    auto head = client_.head_manifest(repository, tag);
    cache::TagRecord record{head.digest, head.media_type, head.size, now};
    tags_.put(name(), repository, tag, record);
    return record;
  } catch (const Error& e) {
    if (!known || !is_unreachable(e)) throw;
    LOG(kWarning) << "Cannot refresh tag " << name() << "/" << repository << ":" << tag << " ("
                  << e.what() << "); using the last known digest " << known->digest;
    return *known;
  }
}

std::string RegistryContent::manifest(const std::string& repository, const std::string& digest) {
  if (auto bytes = blobs_.read(digest, kMaxManifestSize)) return *bytes;
  auto data = client_.get_manifest(repository, digest);
  if (data.bytes.size() > kMaxManifestSize) {
    throw Error(ErrorKind::kInvalid, "Cannot use manifest " + digest + ": larger than 4 MiB");
  }
  blobs_.put(digest, data.bytes);
  return std::move(data.bytes);
}

std::string RegistryContent::small_blob(const std::string& repository, const std::string& digest,
                                        int64_t size) {
  if (size < 0 || static_cast<size_t>(size) > kMaxConfigSize) {
    throw Error(ErrorKind::kInvalid, "Cannot use config " + digest + ": size " +
                                         std::to_string(size) + " is over the 8 MiB limit");
  }
  if (auto bytes = blobs_.read(digest, kMaxConfigSize)) return *bytes;
  auto path = blob(repository, digest, size);
  if (auto bytes = blobs_.read(digest, kMaxConfigSize)) return *bytes;
  throw Error(ErrorKind::kIo, "Cannot read cached blob " + path.string());
}

std::filesystem::path RegistryContent::blob(const std::string& repository,
                                            const std::string& digest, int64_t size) {
  if (auto path = blobs_.find(digest)) return *path;
  std::shared_future<std::filesystem::path> transfer;
  std::promise<std::filesystem::path> promise;
  bool leader = false;
  {
    std::lock_guard lock(mutex_);
    auto it = downloads_.find(digest);
    if (it != downloads_.end()) {
      transfer = it->second;
    } else {
      transfer = promise.get_future().share();
      downloads_.emplace(digest, transfer);
      leader = true;
    }
  }
  if (leader) {
    try {
      promise.set_value(download(repository, digest, size));
    } catch (...) {
      promise.set_exception(std::current_exception());
    }
    std::lock_guard lock(mutex_);
    downloads_.erase(digest);
  }
  return transfer.get();
}

std::filesystem::path RegistryContent::download(const std::string& repository,
                                                const std::string& digest, int64_t size) {
  LOG(kDebug) << "Fetching blob " << name() << "/" << repository << "@" << digest;
  auto writer = blobs_.begin(digest, size);
  client_.get_blob(repository, digest, 0, 0, [&](const char* data, size_t n) {
    writer.append(data, n);
    return true;
  });
  return writer.commit();
}

template <typename Fetch>
Names RegistryContent::cached_listing(const std::string& key, Fetch fetch) {
  auto now = std::chrono::steady_clock::now();
  std::optional<Listing> known;
  {
    std::lock_guard lock(mutex_);
    auto it = listings_.find(key);
    if (it != listings_.end()) {
      if (now - it->second.fetched < tag_ttl_) {
        if (it->second.error) throw *it->second.error;
        return it->second.names;
      }
      known = it->second;
    }
  }
  Listing fresh{nullptr, now, std::nullopt};
  try {
    auto names = fetch();
    std::sort(names.begin(), names.end());
    fresh.names = std::make_shared<const std::vector<std::string>>(std::move(names));
  } catch (const Error& e) {
    if (is_unreachable(e)) {
      if (known && known->names) {
        LOG(kWarning) << "Cannot refresh " << key << " (" << e.what()
                      << "); using the last listing";
        return known->names;
      }
      throw;  // never cached as a miss
    }
    fresh.error = e;
  }
  std::lock_guard lock(mutex_);
  listings_[key] = fresh;
  if (fresh.error) throw *fresh.error;
  return fresh.names;
}

Names RegistryContent::catalog() {
  try {
    return cached_listing("catalog of " + name(), [&] { return client_.catalog(); });
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kUnsupported) return nullptr;
    throw;
  }
}

Names RegistryContent::tags(const std::string& repository) {
  return cached_listing("tags of " + name() + "/" + repository,
                        [&] { return client_.list_tags(repository); });
}

Content::Content(ContentOptions options)
    : options_(std::move(options)),
      blobs_(options_.cache_dir),
      tags_(options_.cache_dir) {}

RegistryContent& Content::registry(const std::string& name) {
  std::lock_guard lock(mutex_);
  auto& slot = registries_[name];
  if (!slot) {
    registry::ClientOptions client;
    client.registry = name;
    client.insecure = std::find(options_.insecure.begin(), options_.insecure.end(), name) !=
                      options_.insecure.end();
    client.ca_cert = options_.ca_cert;
    client.credentials = options_.credentials;
    slot = std::make_unique<RegistryContent>(std::move(client), blobs_, tags_, options_.tag_ttl);
  }
  return *slot;
}

std::vector<std::string> Content::registries_in_use() {
  std::lock_guard lock(mutex_);
  std::vector<std::string> names;
  for (auto& [name, _] : registries_) names.push_back(name);
  return names;
}

}  // namespace regfs::fs
