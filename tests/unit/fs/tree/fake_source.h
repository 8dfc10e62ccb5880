// Fakes of the tree's two neighbours, for unit tests of fs/tree without a
// network or a staged tree:
//
//   FakeSource    the Source of fs/source/source.h: in-memory registries
//                 (FakeRegistry) whose repositories, tags, manifests,
//                 configs and layers a test builds, in front of a real
//                 BlobCache in a temporary directory (blob reads go through
//                 the real BlobReader and CachedBlob, rootfs/ merges through
//                 the real LayerStore). A registry answers as the
//                 distribution API would: 404 (kNotFound) for what it lacks,
//                 or 401 (kUnauthorized) for private repositories and, Docker
//                 Hub style, for unknown ones; `down` makes it unreachable.
//   FakeStaged    the StagedNames of fs/tree/names.h: staged tags and
//                 namespaces, shadowing remote names as StagingTree does.
//
// Calls are counted by what they asked ("tags app", "blob sha256:...") so a
// test can say what the tree did not fetch.
#pragma once

#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cache/blob_cache.h"
#include "fs/source/source.h"
#include "fs/source/worker_pool.h"
#include "fs/tree/names.h"
#include "fs/tree/path.h"
#include "fs/tree/tree.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/manifest.h"
#include "registry/reference.h"

namespace regfs::fs::testing {

using registry::Error;
using registry::ErrorKind;
namespace media_type = registry::media_type;

inline const registry::Platform kAmd64{"linux", "amd64", ""};
inline const registry::Platform kArm64{"linux", "arm64", "v8"};

class FakeRegistry final : public RegistrySource, public ChunkFetcher {
 public:
  FakeRegistry(std::string name, cache::BlobCache& cache) : name_(std::move(name)), cache_(cache) {}

  // What the registry is like (set before the tree asks).
  bool serves_catalog = true;       // false: Docker Hub, GHCR, a token without catalog scope
  bool refuses_unknown = false;     // an unknown repository answers 401, not 404 (Docker Hub)
  std::optional<ErrorKind> down;    // every request fails with this kind (kUnavailable, ...)
  std::set<std::string> refused;    // private repositories: 401 to this account
  std::vector<std::string> cached;  // cached_repositories(): answered in an earlier mount

  // Blob `bytes` of `type`; returns its descriptor.
  registry::Descriptor put_blob(const std::string& bytes, std::string type) {
    std::lock_guard lock(mutex_);
    auto digest = registry::sha256_digest(bytes);
    blobs_[digest] = bytes;
    return {std::move(type), digest, static_cast<int64_t>(bytes.size()), {}, {}, {}};
  }
  // An image of uncompressed tar layers `tars` (base first) for `platform`:
  // the layers, a config listing their diff_ids, its manifest. Returns the
  // manifest's descriptor (with the platform, for an index).
  registry::Descriptor put_image(const std::vector<std::string>& tars,
                                 const registry::Platform& platform = kAmd64) {
    std::vector<registry::Descriptor> layers;
    for (const auto& tar : tars) {
      layers.push_back(put_blob(tar, std::string(media_type::kOciLayerTar)));
    }
    return put_manifest(layers, platform);
  }
  // A manifest of `layers` (already put) and a config with their digests as
  // diff_ids (right for uncompressed layers), of config type `config_type`.
  registry::Descriptor put_manifest(const std::vector<registry::Descriptor>& layers,
                                    const registry::Platform& platform = kAmd64,
                                    std::string config_type = std::string(media_type::kOciConfig),
                                    std::optional<std::vector<std::string>> diff_ids = {}) {
    nlohmann::ordered_json ids = nlohmann::ordered_json::array();
    if (diff_ids) {
      for (const auto& id : *diff_ids) ids.push_back(id);
    } else {
      for (const auto& layer : layers) ids.push_back(layer.digest);
    }
    nlohmann::ordered_json config = {{"architecture", platform.architecture},
                                     {"os", platform.os},
                                     {"rootfs", {{"type", "layers"}, {"diff_ids", ids}}}};
    auto config_desc = put_blob(config.dump(), std::move(config_type));
    nlohmann::ordered_json json = {{"schemaVersion", 2},
                                   {"mediaType", media_type::kOciManifest},
                                   {"config", descriptor_json(config_desc)},
                                   {"layers", nlohmann::ordered_json::array()}};
    for (const auto& layer : layers) json["layers"].push_back(descriptor_json(layer));
    auto manifest = put_blob(json.dump(), std::string(media_type::kOciManifest));
    manifest.platform = platform;
    return manifest;
  }
  // An index of `manifests` (each with its platform).
  registry::Descriptor put_index(const std::vector<registry::Descriptor>& manifests) {
    nlohmann::ordered_json json = {{"schemaVersion", 2},
                                   {"mediaType", media_type::kOciIndex},
                                   {"manifests", nlohmann::ordered_json::array()}};
    for (const auto& m : manifests) json["manifests"].push_back(descriptor_json(m));
    return put_blob(json.dump(), std::string(media_type::kOciIndex));
  }
  // Repository `repository` with `tag` pointing at manifest `digest`.
  void put_tag(const std::string& repository, const std::string& tag, const std::string& digest) {
    std::lock_guard lock(mutex_);
    repositories_[repository][tag] = digest;
  }
  // Repository `repository` without tags (yet).
  void put_repository(const std::string& repository) {
    std::lock_guard lock(mutex_);
    repositories_[repository];
  }
  // How many requests asked `what` ("tags app", "resolve app:v1", "manifest
  // sha256:..", "blob sha256:..", "range sha256:..", "catalog").
  int calls(const std::string& what) {
    std::lock_guard lock(mutex_);
    return calls_[what];
  }

  // RegistrySource.
  const std::string& name() const override { return name_; }
  bool is_docker_hub() const override { return name_ == registry::kDockerHub; }
  cache::TagRecord resolve_tag(const std::string& repository, const std::string& tag) override {
    auto& tags = repository_for(repository, "resolve " + repository + ":" + tag);
    std::lock_guard lock(mutex_);
    auto it = tags.find(tag);
    if (it == tags.end()) throw Error(ErrorKind::kNotFound, "MANIFEST_UNKNOWN: " + tag, 404);
    auto bytes = blobs_.find(it->second);  // none: a tag whose manifest the test left out
    if (bytes == blobs_.end()) return {it->second, "", 0, std::chrono::system_clock::now()};
    return {it->second, registry::detect_media_type(bytes->second, ""),
            static_cast<int64_t>(bytes->second.size()), std::chrono::system_clock::now()};
  }
  std::string manifest(const std::string& repository, const std::string& digest) override {
    repository_for(repository, "manifest " + digest);
    return bytes_of(digest, ErrorKind::kNotFound);
  }
  std::string small_blob(const std::string& repository, const std::string& digest,
                         int64_t size) override {
    repository_for(repository, "small " + digest);
    auto bytes = bytes_of(digest, ErrorKind::kBlobUnknown);
    if (static_cast<int64_t>(bytes.size()) != size) {
      throw Error(ErrorKind::kIntegrity, "Blob " + digest + " is not of its size");
    }
    return bytes;
  }
  std::shared_ptr<BlobReader> open_blob(const std::string& repository, const std::string& digest,
                                        int64_t size) override {
    if (size < 0) throw Error(ErrorKind::kInvalid, "Cannot read blob " + digest);
    return std::make_shared<BlobReader>(*this, repository,
                                        cache_.open(digest, static_cast<uint64_t>(size)));
  }
  std::filesystem::path blob(
      const std::string& repository, const std::string& digest, int64_t size,
      const std::function<void(const std::shared_ptr<BlobReader>&)>& opened = {}) override {
    count("blob " + digest);
    auto reader = open_blob(repository, digest, size);
    if (opened) opened(reader);
    reader->read_all();
    if (auto path = cache_.store().find(digest)) return *path;
    throw Error(ErrorKind::kNoSpace, "Cannot keep blob " + digest);
  }
  void submit(std::function<void()> task) override { pool_.submit(std::move(task)); }
  std::string read_range(const std::string& repository, const std::string& digest, uint64_t offset,
                         uint64_t length) override {
    repository_for(repository, "range " + digest);
    auto bytes = bytes_of(digest, ErrorKind::kBlobUnknown);
    if (offset + length > bytes.size()) throw Error(ErrorKind::kIo, "Short range of " + digest);
    return bytes.substr(offset, length);
  }
  Names catalog() override {
    answer("catalog");
    if (!serves_catalog) return nullptr;
    std::lock_guard lock(mutex_);
    std::vector<std::string> names;
    for (const auto& [name, _] : repositories_) names.push_back(name);
    return std::make_shared<const std::vector<std::string>>(std::move(names));
  }
  Names tags(const std::string& repository) override {
    auto& tags = repository_for(repository, "tags " + repository);
    std::lock_guard lock(mutex_);
    std::vector<std::string> names;
    for (const auto& [tag, _] : tags) names.push_back(tag);
    return std::make_shared<const std::vector<std::string>>(std::move(names));
  }
  std::vector<std::string> cached_repositories() const override { return cached; }
  void add_foreign_urls(const std::string&, const std::vector<std::string>&) override {}

  // ChunkFetcher: the chunks stored before returning, from memory.
  cache::BlobCache& cache() override { return cache_; }
  void fetch(const std::string& repository, std::shared_ptr<cache::CachedBlob> blob, size_t first,
             size_t last) override {
    try {
      repository_for(repository, "fetch " + blob->digest());
      auto bytes = bytes_of(blob->digest(), ErrorKind::kBlobUnknown);
      for (size_t i = first; i <= last; ++i) {
        blob->store_chunk(
            i, std::string_view(bytes).substr(i * blob->chunk_size(), blob->chunk_length(i)));
        first = i + 1;
      }
    } catch (...) {
      if (first <= last) blob->abandon(first, last, std::current_exception());
    }
  }

 private:
  static nlohmann::ordered_json descriptor_json(const registry::Descriptor& d) {
    nlohmann::ordered_json json = {
        {"mediaType", d.media_type}, {"digest", d.digest}, {"size", d.size}};
    if (d.platform) {
      json["platform"] = {{"architecture", d.platform->architecture}, {"os", d.platform->os}};
      if (!d.platform->variant.empty()) json["platform"]["variant"] = d.platform->variant;
    }
    if (!d.annotations.empty()) json["annotations"] = d.annotations;
    return json;
  }
  void count(const std::string& what) {
    std::lock_guard lock(mutex_);
    ++calls_[what];
  }
  // Counts a request, then fails it if the registry is down.
  void answer(const std::string& what) {
    count(what);
    if (down) throw Error(*down, "Cannot reach " + name_ + " (fake)");
  }
  // The tags of `repository` for a request `what`, or its refusal.
  std::map<std::string, std::string>& repository_for(const std::string& repository,
                                                     const std::string& what) {
    answer(what);
    std::lock_guard lock(mutex_);
    auto it = repositories_.find(repository);
    if (refused.count(repository) || (it == repositories_.end() && refuses_unknown)) {
      throw Error(ErrorKind::kUnauthorized,
                  "UNAUTHORIZED: authentication required (it may not exist)", 401);
    }
    if (it == repositories_.end()) {
      throw Error(ErrorKind::kNotFound, "NAME_UNKNOWN: " + repository, 404);
    }
    return it->second;
  }
  std::string bytes_of(const std::string& digest, ErrorKind missing) {
    std::lock_guard lock(mutex_);
    auto it = blobs_.find(digest);
    if (it == blobs_.end()) throw Error(missing, "No blob " + digest + " (fake)", 404);
    return it->second;
  }

  const std::string name_;
  cache::BlobCache& cache_;
  std::mutex mutex_;  // guards the members below (the rootfs/ merges read on pool threads)
  std::map<std::string, std::map<std::string, std::string>> repositories_;  // tag -> digest
  std::map<std::string, std::string> blobs_;                                // by digest
  std::map<std::string, int> calls_;
  WorkerPool pool_{2};  // lazy layers' chunk fetches
};

class FakeSource final : public Source {
 public:
  FakeSource() : dir_(make_dir()), cache_(dir_.path, 1ull << 30) {}

  // Registry `name` as the test sets it up; a name never added answers
  // like a host with no registry (kUnavailable).
  FakeRegistry& add(const std::string& name) {
    std::lock_guard lock(mutex_);
    auto& slot = registries_[name];
    if (!slot) slot = std::make_unique<FakeRegistry>(name, cache_);
    return *slot;
  }
  // Namespaces of `registry` the credentials name (credential_namespaces()).
  std::map<std::string, std::vector<std::string>> named;
  // The last status() call's arguments.
  std::string status_what;
  std::vector<std::pair<std::string, std::string>> status_staged;

  RegistrySource& registry(const std::string& name) override {
    {
      std::lock_guard lock(mutex_);
      if (auto it = registries_.find(name); it != registries_.end()) return *it->second;
    }
    auto& reg = add(name);
    reg.down = ErrorKind::kUnavailable;
    return reg;
  }
  std::vector<std::string> registries_in_use() override {
    std::lock_guard lock(mutex_);
    std::vector<std::string> names;
    for (const auto& [name, _] : registries_) names.push_back(name);
    return names;
  }
  std::string account(const std::string&) const override { return "anonymous"; }
  std::vector<std::string> credential_namespaces(const std::string& registry) const override {
    auto it = named.find(registry);
    return it == named.end() ? std::vector<std::string>{} : it->second;
  }
  cache::BlobCache& cache() override { return cache_; }
  MergeProgress& merges() override { return merges_; }
  std::string status(const std::string& what,
                     const std::vector<std::pair<std::string, std::string>>& staged,
                     bool /*read_only*/) override {
    status_what = what;
    status_staged = staged;
    return "{\"what\":\"" + what + "\"}";
  }

 private:
  // A temporary directory, removed last (after the cache in it is closed).
  struct TempDir {
    std::filesystem::path path;
    ~TempDir() { std::filesystem::remove_all(path); }
  };
  static TempDir make_dir() {
    char tmpl[] = "/tmp/regfs-fake-source-XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    return TempDir{tmpl};
  }

  TempDir dir_;
  cache::BlobCache cache_;
  MergeProgress merges_;
  std::mutex mutex_;  // guards registries_
  std::map<std::string, std::unique_ptr<FakeRegistry>> registries_;
};

// Staged tags and namespaces, as fs/push/staging_tree.cc shows them to the
// tree: a staged name is found first and shadows a remote entry of the
// same name in a listing.
class FakeStaged final : public StagedNames {
 public:
  std::set<std::pair<std::string, std::string>> tags;        // (registry, "repository:tag")
  std::set<std::pair<std::string, std::string>> namespaces;  // (registry, path) made by mkdir
  std::vector<std::pair<std::string, std::string>> tag_states;

  NodePtr lookup_in_namespace(const Node& dir, std::string_view name) override {
    std::string sname(name);
    if (!dir.path.empty() && tags.count({dir.registry, dir.path + ":" + sname})) {
      return tag_node(dir, sname);
    }
    if (namespaces.count({dir.registry, join(dir.path, sname)})) return namespace_node(dir, sname);
    return nullptr;
  }
  void add_to_listing(const Node& dir, std::vector<NodePtr>* entries) override {
    auto add = [&](NodePtr node) {
      for (auto& e : *entries) {
        if (e->name == node->name) {
          if (node->kind == NodeKind::kStaged) e = node;
          return;
        }
      }
      entries->push_back(node);
    };
    for (const auto& [registry, name] : tags) {
      auto colon = name.rfind(':');
      if (registry == dir.registry && name.substr(0, colon) == dir.path) {
        add(tag_node(dir, name.substr(colon + 1)));
      }
    }
    for (const auto& [registry, path] : namespaces) {
      if (registry != dir.registry) continue;
      auto slash = path.rfind('/');
      std::string parent = slash == std::string::npos ? "" : path.substr(0, slash);
      if (parent == dir.path) add(namespace_node(dir, path.substr(parent.empty() ? 0 : slash + 1)));
    }
  }
  bool is_staged_namespace(const std::string& registry, const std::string& path) const override {
    return namespaces.count({registry, path}) > 0;
  }
  NodePtr lookup(const Node&, std::string_view) override { return nullptr; }
  std::vector<NodePtr> list(const Node&) override { return {}; }
  Attr attr(const Node&) override { return Attr{S_IFDIR | 0755}; }
  std::optional<std::string> xattr(const Node&, std::string_view) override { return {}; }
  std::vector<std::string> xattr_names(const Node&) override { return {}; }
  std::string readlink(const Node&) override { return {}; }
  std::vector<std::pair<std::string, std::string>> states() override { return tag_states; }

 private:
  static NodePtr tag_node(const Node& dir, const std::string& name) {
    auto node = std::make_shared<Node>();
    node->kind = NodeKind::kStaged;
    node->name = name;
    node->key = join(dir.key == "/" ? "" : dir.key, name);
    node->registry = dir.registry;
    node->path = dir.path;
    node->reference = name;
    node->at = Node::StagedAt{"", S_IFDIR};
    return node;
  }
  static NodePtr namespace_node(const Node& dir, const std::string& name) {
    auto node = std::make_shared<Node>();
    node->kind = NodeKind::kNamespace;
    node->name = name;
    node->key = join(dir.key == "/" ? "" : dir.key, name);
    node->registry = dir.registry;
    node->path = join(dir.path, name);
    return node;
  }
};

// A Tree over a FakeSource and a FakeStaged: of one registry (`registry`
// set) or of every registry (empty), showing images for `platform`.
class FakeTree {
 public:
  explicit FakeTree(std::string registry, registry::Platform platform = kAmd64,
                    std::vector<std::string> listed = {}) {
    TreeOptions options;
    options.registry = std::move(registry);
    options.platform = std::move(platform);
    options.listed_registries = std::move(listed);
    tree = std::make_unique<Tree>(options, source);
    tree->set_staged(staged);
  }
  ~FakeTree() { tree.reset(); }  // before the source it reads

  // The node at `path` ("a/b/c" from the root), or nullptr. Throws Error.
  NodePtr at(const std::string& path) {
    NodePtr node = tree->root();
    size_t start = 0;
    while (node && start < path.size()) {
      size_t end = path.find('/', start);
      if (end == std::string::npos) end = path.size();
      node = tree->lookup(*node, path.substr(start, end - start));
      start = end + 1;
    }
    return node;
  }
  // The names `dir` lists, in listing order.
  std::vector<std::string> listing(const Node& dir) {
    std::vector<std::string> out;
    for (const auto& node : tree->list(dir)) out.push_back(node->name);
    return out;
  }
  std::set<std::string> names(const Node& dir) {
    auto out = listing(dir);
    return {out.begin(), out.end()};
  }
  // The node at `path`; throws (failing the test, not crashing it) if none.
  NodePtr must(const std::string& path) {
    auto node = at(path);
    if (!node) throw std::runtime_error("No " + path + " in the tree");
    return node;
  }
  std::set<std::string> names(const std::string& path) { return names(*must(path)); }
  // The error kind `f` throws; a test fails if it throws none.
  template <typename F>
  static std::optional<ErrorKind> kind_thrown(F f) {
    try {
      f();
    } catch (const Error& e) {
      return e.kind();
    }
    return std::nullopt;
  }

  FakeSource source;
  FakeStaged staged;
  std::unique_ptr<Tree> tree;
};

}  // namespace regfs::fs::testing
