#include "fs/push/push_plan.h"

#include <functional>
#include <nlohmann/json.hpp>
#include <set>

#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/manifest.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;
namespace media_type = registry::media_type;

namespace {

constexpr std::string_view kRefName = "org.opencontainers.image.ref.name";

[[noreturn]] void invalid(const std::string& message) { throw Error(ErrorKind::kInvalid, message); }

// Walks manifests depth first, children before their index.
class Planner {
 public:
  explicit Planner(StagedLayout& layout) : layout_(layout) {}

  bool add_manifest(const std::string& digest) {
    if (manifests_.count(digest)) return true;
    std::optional<std::string> bytes;
    if (auto blob = layout_.staged_blob(digest)) {
      check_manifest_size("manifest " + digest, blob->size);
      bytes = layout_.manifest_bytes(*blob);
    } else {
      bytes = layout_.target_manifest(digest);
    }
    if (!bytes) missing_ = "manifest " + digest;
    return bytes && add_manifest_bytes(*bytes, digest);
  }

  bool add_manifest_bytes(const std::string& bytes, const std::string& digest) {
    check_manifest_size("manifest " + digest, static_cast<int64_t>(bytes.size()));
    std::string type = registry::detect_media_type(bytes, "");
    if (registry::is_index_media_type(type)) {
      for (auto& child : registry::parse_index(bytes).manifests) {
        bool manifest = registry::is_manifest_media_type(child.media_type) ||
                        registry::is_index_media_type(child.media_type);
        if (!(manifest ? add_manifest(child.digest) : add_blob(child))) {
          return false;
        }
      }
    } else if (registry::is_manifest_media_type(type)) {
      auto manifest = registry::parse_manifest(bytes);
      check_manifest_size("config " + manifest.config.digest, manifest.config.size);
      if (!add_blob(manifest.config)) return false;
      for (auto& layer : manifest.layers) {
        if (!add_blob(layer)) return false;
      }
    } else {
      invalid("Cannot push " + digest + ": not an image manifest or index (" +
              (type.empty() ? "unknown type" : type) + ")");
    }
    manifests_.insert(digest);
    plan_.manifests.push_back({digest, type, bytes});
    return true;
  }

  bool add_blob(const registry::Descriptor& descriptor) {
    if (blobs_.count(descriptor.digest)) return true;
    if (auto blob = layout_.staged_blob(descriptor.digest)) {
      if (blob->size != descriptor.size) {
        invalid("Cannot push blob " + descriptor.digest + ": it has " + std::to_string(blob->size) +
                " bytes, its descriptor says " + std::to_string(descriptor.size));
      }
      plan_.blobs.push_back(*blob);
    } else if (layout_.in_target(descriptor.digest)) {
      plan_.blobs.push_back({descriptor.digest, descriptor.size, PlanBlob::Source::kTarget});
    } else {
      missing_ = "blob " + descriptor.digest;
      return false;
    }
    blobs_.insert(descriptor.digest);
    return true;
  }

  PushPlan take() { return std::move(plan_); }
  // What the last add that returned false was missing.
  const std::string& missing() const { return missing_; }

 private:
  StagedLayout& layout_;
  PushPlan plan_;
  std::set<std::string> manifests_;
  std::set<std::string> blobs_;
  std::string missing_;
};

// The index.json descriptor to push as `tag` (SPEC §4).
const registry::Descriptor& choose(const registry::Index& index, const std::string& tag) {
  for (auto& d : index.manifests) {
    auto name = d.annotations.find(std::string(kRefName));
    if (name != d.annotations.end() && name->second == tag) return d;
  }
  if (index.manifests.size() == 1) return index.manifests.front();
  invalid("Cannot push index.json as tag " + tag + ": it has " +
          std::to_string(index.manifests.size()) + " manifests and none is named \"" + tag +
          "\" (" + std::string(kRefName) + ")");
}

bool escapes(const std::string& path) {
  return path.empty() || path[0] == '/' || path == ".." || path.rfind("../", 0) == 0 ||
         path.find("/../") != std::string::npos;
}

}  // namespace

void check_manifest_size(const std::string& what, int64_t size) {
  if (size <= kMaxManifestBytes) return;
  invalid("Cannot push " + what + ": it is " + std::to_string(size) +
          " bytes; registries take manifests and configs up to 4 MiB (" +
          std::to_string(kMaxManifestBytes) + " bytes)");
}

std::optional<PushPlan> plan_push(StagedLayout& layout, const std::string& tag,
                                  std::string* waiting_for) {
  std::string unused;
  std::string& missing = waiting_for ? *waiting_for : unused;
  if (auto index_json = layout.read_file("index.json")) {
    registry::Index index;
    try {
      index = registry::parse_index(*index_json);
    } catch (const Error& e) {
      // Bad staged content (SPEC §7): a directory with index.json at its top
      // is an image layout, so it must be an OCI image index.
      invalid(std::string("Cannot push: index.json is not an OCI image index (") + e.what() +
              "); a plain directory to build must not have index.json at its top");
    }
    const auto& chosen = choose(index, tag);
    Planner planner(layout);
    if (!planner.add_manifest(chosen.digest)) {
      missing = planner.missing();
      return std::nullopt;
    }
    return planner.take();
  }
  auto manifest_json = layout.read_file("manifest.json");
  if (!manifest_json) {
    missing = "no index.json or manifest.json";
    return std::nullopt;
  }
  auto doc = nlohmann::json::parse(*manifest_json, nullptr, false);
  if (doc.is_array()) return plan_docker_save(layout, *manifest_json, tag, waiting_for);
  if (!doc.is_object()) invalid("Cannot push manifest.json: not JSON");
  Planner planner(layout);
  if (!planner.add_manifest_bytes(*manifest_json, registry::sha256_digest(*manifest_json))) {
    missing = planner.missing();
    return std::nullopt;
  }
  return planner.take();
}

std::optional<PushPlan> plan_docker_save(StagedLayout& layout, const std::string& manifest_json,
                                         const std::string& tag, std::string* waiting_for) {
  auto doc = nlohmann::json::parse(manifest_json, nullptr, false);
  if (!doc.is_array() || doc.empty()) {
    invalid("Cannot push docker save manifest.json: not a non-empty array");
  }
  const nlohmann::json* entry = nullptr;
  for (auto& e : doc) {
    if (!e.is_object()) continue;
    for (auto& repo_tag : e.value("RepoTags", nlohmann::json::array())) {
      if (!repo_tag.is_string()) continue;
      auto text = repo_tag.get<std::string>();
      if (text.size() > tag.size() && text.ends_with(":" + tag)) entry = &e;
    }
  }
  if (!entry && doc.size() == 1) entry = &doc[0];
  if (!entry || !entry->is_object()) {
    invalid("Cannot push docker save manifest.json as tag " + tag + ": it has " +
            std::to_string(doc.size()) + " images and none is tagged " + tag);
  }
  auto config = entry->value("Config", "");
  auto layers = entry->value("Layers", nlohmann::json::array());
  if (escapes(config) || !layers.is_array()) {
    invalid("Cannot push docker save manifest.json: bad Config or Layers");
  }
  PushPlan plan;
  auto add = [&](const std::string& path) -> std::optional<PlanBlob> {
    if (escapes(path)) invalid("Cannot push docker save layer \"" + path + "\"");
    auto info = layout.file_info(path);
    if (!info) {
      if (waiting_for) *waiting_for = path;
      return std::nullopt;
    }
    PlanBlob blob{info->digest, info->size, PlanBlob::Source::kStaged, info->path};
    bool seen = false;
    for (auto& b : plan.blobs) seen = seen || b.digest == blob.digest;
    if (!seen) plan.blobs.push_back(blob);
    return blob;
  };
  auto config_blob = add(config);
  if (!config_blob) return std::nullopt;
  check_manifest_size("config " + config, config_blob->size);
  nlohmann::json manifest = {{"schemaVersion", 2},
                             {"mediaType", media_type::kOciManifest},
                             {"config",
                              {{"mediaType", media_type::kOciConfig},
                               {"digest", config_blob->digest},
                               {"size", config_blob->size}}},
                             {"layers", nlohmann::json::array()}};
  for (auto& layer : layers) {
    if (!layer.is_string()) invalid("Cannot push docker save manifest.json: bad Layers");
    auto blob = add(layer.get<std::string>());
    if (!blob) return std::nullopt;
    manifest["layers"].push_back(
        {{"mediaType", media_type::kOciLayerTar}, {"digest", blob->digest}, {"size", blob->size}});
  }
  std::string bytes = manifest.dump();
  plan.manifests.push_back(
      {registry::sha256_digest(bytes), std::string(media_type::kOciManifest), bytes});
  return plan;
}

std::string narrow_to_platform(PushPlan& plan, const registry::Platform& platform) {
  if (plan.manifests.empty() || !registry::is_index_media_type(plan.manifests.back().media_type)) {
    return "";
  }
  auto bytes_of = [&](const std::string& digest) -> const PlanManifest* {
    for (const auto& m : plan.manifests) {
      if (m.digest == digest) return &m;
    }
    return nullptr;
  };
  // The same choice as the mount's: the matching child, else the first
  // nested index without a platform that holds one.
  std::set<std::string> visited;
  std::function<const PlanManifest*(const PlanManifest&)> choose =
      [&](const PlanManifest& index_manifest) -> const PlanManifest* {
    if (!visited.insert(index_manifest.digest).second) return nullptr;
    auto index = registry::parse_index(index_manifest.bytes);
    const auto* chosen = registry::select_platform(index, platform);
    if (chosen && registry::is_manifest_media_type(chosen->media_type)) {
      return bytes_of(chosen->digest);
    }
    for (const auto& child : index.manifests) {
      if (!registry::is_index_media_type(child.media_type)) continue;
      if (!registry::searched_for_platform(child, chosen)) continue;
      if (const auto* nested = bytes_of(child.digest)) {
        if (const auto* found = choose(*nested)) return found;
      }
    }
    return nullptr;
  };
  const PlanManifest* image = choose(plan.manifests.back());
  std::string name = platform.to_string();
  if (!image) {
    throw Error(ErrorKind::kInvalid, "Cannot change the image of " + name +
                                         ": the multi-platform tag has none (see --platform)");
  }
  PlanManifest kept = *image;
  auto manifest = registry::parse_manifest(kept.bytes);
  std::set<std::string> reached = {manifest.config.digest};
  for (const auto& layer : manifest.layers) reached.insert(layer.digest);
  std::erase_if(plan.blobs, [&](const PlanBlob& blob) { return !reached.count(blob.digest); });
  plan.manifests = {std::move(kept)};
  return name;
}

}  // namespace regfs::fs
