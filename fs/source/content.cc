#include "fs/source/content.h"

#include <algorithm>

#include "fs/source/status.h"
#include "registry/core/digest.h"
#include "registry/core/log.h"
#include "registry/foreign_blob.h"
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

registry::ClientOptions RegistryContent::with_health(registry::ClientOptions options) {
  if (!options.health) options.health = std::make_shared<registry::Health>(options.registry);
  return options;
}

RegistryContent::RegistryContent(registry::ClientOptions options, cache::BlobCache& cache,
                                 cache::TagStore& tags, std::chrono::seconds tag_ttl,
                                 WorkerPool& pool, WorkerPool& small_pool, WorkerPool& background,
                                 Transfers& transfers, bool follow_urls)
    : credentials_(options.credentials),
      health_(with_health(options).health),
      client_([&] {
        options.health = health_;
        return std::move(options);
      }()),
      cache_(cache),
      tags_(tags),
      tag_ttl_(tag_ttl),
      pool_(pool),
      small_pool_(small_pool),
      background_(background),
      transfers_(transfers),
      follow_urls_(follow_urls) {
  health_->add_listener([this](const registry::Health::State& state) {
    if (!state.up) probe_later(state.epoch, 0);
  });
}

RegistryContent::~RegistryContent() { stopping_ = true; }

void RegistryContent::add_foreign_urls(const std::string& digest,
                                       const std::vector<std::string>& urls) {
  if (urls.empty()) return;
  std::lock_guard lock(mutex_);
  foreign_urls_[digest] = urls;
}

bool RegistryContent::is_docker_hub() const { return name() == registry::kDockerHub; }

void RegistryContent::probe_later(uint64_t epoch, int attempt) {
  if (stopping_) return;
  background_.submit_after(registry::Health::probe_delay(attempt),
                           [this, epoch, attempt] { probe(epoch, attempt); });
}

// One probe of a registry that is down: an answer marks it up (the
// transport records it); else the next probe, later. A probe of an older
// outage (it came back, then went down again) stops.
void RegistryContent::probe(uint64_t epoch, int attempt) {
  auto state = health_->state();
  if (stopping_ || state.up || state.epoch != epoch) return;
  try {
    client_.probe();
  } catch (const Error& e) {
    LOG(kDebug) << "Probe of " << name() << " failed: " << e.what();
  }
  state = health_->state();
  if (!state.up && state.epoch == epoch) probe_later(epoch, attempt + 1);
}

cache::TagRecord RegistryContent::resolve_tag(const std::string& repository,
                                              const std::string& tag) {
  auto known = tags_.get(name(), repository, tag);
  if (known && known->digest.empty()) known.reset();  // asked again (tag_changed, a refresh)
  auto now = std::chrono::system_clock::now();
  if (known && now - known->fetched < tag_ttl_ && now >= known->fetched) return *known;
  if (known && tag_ttl_.count() > 0) {
    // Stale: the last answer at once, a refresh behind it.
    refresh_tag_later(repository, tag);
    return *known;
  }
  try {
    auto head = client_.head_manifest(repository, tag);
    cache::TagRecord record{head.digest, head.media_type, head.size, now};
    tags_.put(name(), repository, tag, record);
    return record;
  } catch (const Error& e) {
    if (!known || !is_unreachable(e)) throw;
    LOG_AT(health_->down() ? log::kDebug : log::kWarning)
        << "Cannot refresh tag " << name() << "/" << repository << ":" << tag << " (" << e.what()
        << "); using the last known digest " << known->digest;
    return *known;
  }
}

void RegistryContent::refresh_tag_later(const std::string& repository, const std::string& tag) {
  if (health_->down()) return;  // the first lookup once it is back refreshes it
  uint64_t changes;
  {
    std::lock_guard lock(mutex_);
    changes = changes_;
  }
  refreshes_.submit(background_, "tag " + repository + ":" + tag, [=, this] {
    cache::TagRecord record;
    try {
      auto head = client_.head_manifest(repository, tag);
      record = {head.digest, head.media_type, head.size, std::chrono::system_clock::now()};
    } catch (const Error& e) {
      LOG(kDebug) << "Cannot refresh tag " << name() << "/" << repository << ":" << tag << ": "
                  << e.what();
      // Gone: the next lookup asks (and answers ENOENT); unreachable: kept.
      if (e.kind() != ErrorKind::kNotFound) return;
    }
    std::lock_guard lock(mutex_);
    if (changes_ != changes) return;  // pushed or deleted meanwhile: that answer stands
    tags_.put(name(), repository, tag, record);
  });
}

std::string RegistryContent::manifest(const std::string& repository, const std::string& digest) {
  if (auto bytes = cache_.read_small(digest, kMaxManifestSize)) return *bytes;
  auto data = client_.get_manifest(repository, digest);
  if (data.bytes.size() > kMaxManifestSize) {
    throw Error(ErrorKind::kInvalid, "Cannot use manifest " + digest + ": larger than 4 MiB");
  }
  cache_.put_small(digest, data.bytes);
  return std::move(data.bytes);
}

std::string RegistryContent::small_blob(const std::string& repository, const std::string& digest,
                                        int64_t size) {
  if (size < 0 || static_cast<size_t>(size) > kMaxConfigSize) {
    throw Error(ErrorKind::kInvalid, "Cannot use config " + digest + ": size " +
                                         std::to_string(size) + " is over the 8 MiB limit");
  }
  if (auto bytes = cache_.read_small(digest, kMaxConfigSize)) return *bytes;
  auto path = blob(repository, digest, size);
  if (auto bytes = cache_.read_small(digest, kMaxConfigSize)) return *bytes;
  throw Error(ErrorKind::kIo, "Cannot read cached blob " + path.string());
}

uint64_t RegistryContent::credentials_generation() const {
  return credentials_ ? credentials_->generation() : 0;
}

template <typename Fetch>
Names RegistryContent::cached_listing(const std::string& repository, Fetch fetch) {
  const std::string key =
      repository.empty() ? "catalog of " + name() : "tags of " + name() + "/" + repository;
  auto now = std::chrono::steady_clock::now();
  const uint64_t credentials = credentials_generation();
  std::optional<Listing> known;
  {
    std::lock_guard lock(mutex_);
    auto it = listings_.find(key);
    if (it != listings_.end()) {
      if (now - it->second.fetched < tag_ttl_ && it->second.credentials == credentials) {
        if (it->second.error) throw *it->second.error;
        return it->second.names;
      }
      known = it->second;
    }
  }
  if (known && known->names && tag_ttl_.count() > 0 && known->credentials == credentials) {
    // Stale: the last listing at once, a refresh behind it.
    refresh_listing_later(key, repository, fetch);
    return known->names;
  }
  Listing fresh{nullptr, now, std::nullopt, credentials};
  try {
    auto names = fetch();
    std::sort(names.begin(), names.end());
    tags_.put_listing(name(), repository, names);
    fresh.names = std::make_shared<const std::vector<std::string>>(std::move(names));
  } catch (const Error& e) {
    if (is_unreachable(e)) {
      auto level = health_->down() ? log::kDebug : log::kWarning;
      if (known && known->names) {
        LOG_AT(level) << "Cannot refresh " << key << " (" << e.what()
                      << "); using the last listing";
        return known->names;
      }
      if (auto saved = tags_.get_listing(name(), repository)) {
        LOG_AT(level) << "Cannot list " << key << " (" << e.what()
                      << "); using the listing saved in the cache";
        return std::make_shared<const std::vector<std::string>>(std::move(*saved));
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

template <typename Fetch>
void RegistryContent::refresh_listing_later(const std::string& key, const std::string& repository,
                                            Fetch fetch) {
  if (health_->down()) return;  // the first listing once it is back refreshes it
  uint64_t changes;
  {
    std::lock_guard lock(mutex_);
    changes = changes_;
  }
  refreshes_.submit(background_, key, [=, this] {
    Listing fresh{nullptr, std::chrono::steady_clock::now(), std::nullopt};
    try {
      auto names = fetch();
      std::sort(names.begin(), names.end());
      fresh.names = std::make_shared<const std::vector<std::string>>(std::move(names));
    } catch (const Error& e) {
      LOG(kDebug) << "Cannot refresh " << key << ": " << e.what();
      if (is_unreachable(e)) return;  // the last listing stays, still stale
      fresh.error = e;
    }
    std::lock_guard lock(mutex_);
    if (changes_ != changes) return;  // a push or delete dropped it meanwhile
    if (fresh.names) tags_.put_listing(name(), repository, *fresh.names);
    listings_[key] = fresh;
  });
}

Names RegistryContent::catalog() {
  try {
    return cached_listing("", [this] { return client_.catalog(); });
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kUnsupported) return nullptr;
    // Down, and no catalog kept (a registry without one keeps none): names
    // follow what is known (fs/tree/known_names.h), as on a registry
    // without a catalog, so what is cached stays reachable.
    if (e.kind() == ErrorKind::kUnavailable) return nullptr;
    throw;
  }
}

Names RegistryContent::tags(const std::string& repository) {
  return cached_listing(repository, [this, repository] { return client_.list_tags(repository); });
}

void RegistryContent::tag_changed(const std::string& repository, const std::string& tag,
                                  const cache::TagRecord& record) {
  std::lock_guard lock(mutex_);
  ++changes_;
  tags_.put(name(), repository, tag, record);
  // The listings show the change at once and are refreshed behind it (made
  // stale), so that no listing waits for the registry to list them again.
  const bool exists = !record.digest.empty();
  auto edit = [&](const std::string& key, const std::string& entry, bool removable) {
    auto it = listings_.find(key);
    if (it == listings_.end()) return;
    Listing& listing = it->second;
    if (listing.error || !listing.names) {  // a miss (or a refusal) until now: ask again
      listings_.erase(it);
      return;
    }
    std::vector<std::string> names = *listing.names;
    auto at = std::lower_bound(names.begin(), names.end(), entry);
    bool present = at != names.end() && *at == entry;
    if (exists && !present) names.insert(at, entry);
    if (!exists && present && removable) names.erase(at);
    listing.names = std::make_shared<const std::vector<std::string>>(std::move(names));
    listing.fetched = {};  // stale
  };
  edit("catalog of " + name(), repository, false);
  edit("tags of " + name() + "/" + repository, tag, true);
}

registry::ClientOptions client_options(const ContentOptions& options, const std::string& name,
                                       ClientUse use) {
  registry::ClientOptions client;
  client.registry = name;
  client.insecure =
      std::find(options.insecure.begin(), options.insecure.end(), name) != options.insecure.end();
  client.ca_cert = options.ca_cert;
  client.credentials = options.credentials;
  if (options.registries_conf) {
    client.insecure = client.insecure || options.registries_conf->insecure(name);
    if (use == ClientUse::kRead) {
      client.mirrors =
          registry::mirrors_for(name, options.mirrors, options.insecure, *options.registries_conf);
    }
  }
  if (options.request_timeout.count() > 0) {
    client.request_timeout = client.stall_timeout = options.request_timeout;
    client.connect_timeout = std::min(client.connect_timeout, options.request_timeout);
  }
  if (options.upload_chunk_size > 0) {
    client.upload_chunk_size = client.monolithic_upload_limit = options.upload_chunk_size;
  }
  return client;
}

Content::Content(ContentOptions options)
    : options_(std::move(options)),
      cache_(options_.cache_dir, options_.cache_size),
      tags_(options_.cache_dir),
      background_(4),
      pool_(options_.fetch_threads),
      small_pool_(2) {}

RegistryContent& Content::registry(const std::string& name) {
  std::lock_guard lock(mutex_);
  auto& slot = registries_[name];
  if (!slot) {
    auto client = client_options(options_, name, ClientUse::kRead);
    client.health = std::make_shared<registry::Health>(name);
    client.health->add_listener([this, name](const registry::Health::State& state) {
      if (!state.up) return;
      std::lock_guard lock(on_up_mutex_);  // held while it runs: see on_registry_up
      if (on_up_) on_up_(name);
    });
    slot = std::make_unique<RegistryContent>(std::move(client), cache_, tags_, options_.tag_ttl,
                                             pool_, small_pool_, background_, transfers_,
                                             options_.follow_urls);
  }
  return *slot;
}

std::shared_ptr<registry::Health> Content::health(const std::string& name) {
  return registry(name).health();
}

std::vector<std::pair<std::string, registry::Health::State>> Content::health_states() {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::string, registry::Health::State>> states;
  for (auto& [name, reg] : registries_) states.emplace_back(name, reg->health()->state());
  return states;
}

void Content::on_registry_up(std::function<void(const std::string&)> listener) {
  std::lock_guard lock(on_up_mutex_);
  on_up_ = std::move(listener);
}

std::string Content::account(const std::string& registry) const {
  if (!options_.credentials) return "anonymous";
  auto credential = options_.credentials->lookup(registry, "");
  if (!credential) return "anonymous";
  std::string from = options_.credentials->path().empty()
                         ? std::string()
                         : " (from " + options_.credentials->path() + ")";
  if (credential->username == "<token>" || credential->username.empty()) {
    return "an identity token" + from;
  }
  return "user " + credential->username + from;
}

std::vector<std::string> Content::credential_namespaces(const std::string& registry) const {
  if (!options_.credentials) return {};
  return options_.credentials->namespaces(registry);
}

std::string Content::status(const std::string& what,
                            const std::vector<std::pair<std::string, std::string>>& staged,
                            bool read_only) {
  return status_json(*this, what, staged, read_only);
}

std::vector<std::string> Content::registries_in_use() {
  std::lock_guard lock(mutex_);
  std::vector<std::string> names;
  for (auto& [name, _] : registries_) names.push_back(name);
  return names;
}

std::string RegistryContent::read_range(const std::string& repository, const std::string& digest,
                                        uint64_t offset, uint64_t length) {
  std::string out;
  out.reserve(length);
  auto id = transfers_.begin(name() + "/" + repository + "@" + digest + " (range)", length);
  try {
    client_.get_blob(repository, digest, offset, length, [&](const char* data, size_t size) {
      out.append(data, std::min<size_t>(size, length - out.size()));
      transfers_.progress(id, size);
      return true;
    });
  } catch (...) {
    transfers_.end(id);
    throw;
  }
  transfers_.end(id);
  if (out.size() != length) {
    throw Error(ErrorKind::kIo, "Cannot read bytes " + std::to_string(offset) + "+" +
                                    std::to_string(length) + " of blob " + digest + ": got " +
                                    std::to_string(out.size()));
  }
  return out;
}

}  // namespace regfs::fs
