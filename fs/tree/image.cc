#include "fs/tree/image.h"

#include <nlohmann/json.hpp>
#include <set>

#include "registry/core/error.h"
#include "registry/core/log.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr int kMaxIndexDepth = 4;

void add_blob(Image& image, const registry::Descriptor& d) {
  image.blobs[d.digest] = BlobEntry{d.media_type, d.size};
}

// Adds a manifest's config and layers (and where its foreign layers may be
// fetched from); returns the parsed manifest.
registry::Manifest add_manifest(RegistrySource& content, Image& image, const std::string& bytes) {
  auto manifest = registry::parse_manifest(bytes);
  add_blob(image, manifest.config);
  for (const auto& layer : manifest.layers) {
    add_blob(image, layer);
    content.add_foreign_urls(layer.digest, layer.urls);
  }
  return manifest;
}

// Walks an index and the indexes nested in it (the image spec allows them;
// containerd follows them): every blob reached is added, and the manifest
// of `platform` is chosen: the child whose platform matches (a manifest, or
// an index searched in turn), else the first index without a platform that
// holds one. Nesting deeper than kMaxIndexDepth is refused, and an index met
// twice is followed once.
class IndexWalk {
 public:
  IndexWalk(RegistrySource& content, Image& image, const registry::Platform& platform)
      : content_(content), image_(image), platform_(platform) {}

  // Adds what index `digest` (`bytes`) reaches; with `choose`, picks the
  // platform's manifest from it. Returns whether it did.
  bool add(const std::string& digest, const std::string& bytes, bool choose, int depth) {
    if (depth > kMaxIndexDepth) {
      throw Error(ErrorKind::kInvalid, "Cannot load " + image_.repository + "@" + image_.digest +
                                           ": indexes nested more than " +
                                           std::to_string(kMaxIndexDepth) + " deep");
    }
    if (!visited_.insert(digest).second) {
      LOG(kWarning) << "Index " << digest << " is reached twice from " << image_.repository << "@"
                    << image_.digest << "; followed once";
      return false;
    }
    auto index = registry::parse_index(bytes);
    const registry::Descriptor* chosen =
        choose ? registry::select_platform(index, platform_) : nullptr;
    bool found = false;
    for (const auto& child : index.manifests) {
      add_blob(image_, child);
      bool is_index = registry::is_index_media_type(child.media_type);
      if (!is_index && !registry::is_manifest_media_type(child.media_type)) continue;
      auto child_bytes = content_.manifest(image_.repository, child.digest);
      if (is_index) {
        bool pick = choose && !found && registry::searched_for_platform(child, chosen);
        if (add(child.digest, child_bytes, pick, depth + 1) && pick) found = true;
        continue;
      }
      auto manifest = add_manifest(content_, image_, child_bytes);
      if (&child == chosen) {
        image_.config = manifest.config;
        image_.layers = manifest.layers;
        found = true;
      }
    }
    return found;
  }

 private:
  RegistrySource& content_;
  Image& image_;
  const registry::Platform& platform_;
  std::set<std::string> visited_;
};

}  // namespace

std::shared_ptr<const Image> load_image(RegistrySource& content, const std::string& repository,
                                        const std::string& digest,
                                        const registry::Platform& platform) {
  auto image = std::make_shared<Image>();
  image->repository = repository;
  image->digest = digest;
  image->manifest = content.manifest(repository, digest);
  image->media_type = registry::detect_media_type(image->manifest, "");
  image->blobs[digest] = BlobEntry{image->media_type, static_cast<int64_t>(image->manifest.size())};
  if (registry::is_index_media_type(image->media_type)) {
    if (!IndexWalk(content, *image, platform).add(digest, image->manifest, true, 0)) {
      LOG(kInfo) << "No manifest for platform " << platform.to_string() << " in " << content.name()
                 << "/" << repository << "@" << digest;
    }
  } else {
    auto manifest = add_manifest(content, *image, image->manifest);
    image->config = manifest.config;
    image->layers = manifest.layers;
  }
  return image;
}

std::string layout_index_json(const Image& image, const std::string& tag) {
  nlohmann::ordered_json descriptor = {
      {"mediaType", image.media_type}, {"digest", image.digest}, {"size", image.manifest.size()}};
  if (!tag.empty()) {
    descriptor["annotations"] = {{"org.opencontainers.image.ref.name", tag}};
  }
  nlohmann::ordered_json index = {{"schemaVersion", 2},
                                  {"mediaType", registry::media_type::kOciIndex},
                                  {"manifests", nlohmann::ordered_json::array({descriptor})}};
  return index.dump() + "\n";
}

}  // namespace regfs::fs
