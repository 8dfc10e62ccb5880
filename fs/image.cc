#include "fs/image.h"

#include <nlohmann/json.hpp>

#include "registry/error.h"
#include "registry/log.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr int kMaxIndexDepth = 4;

void add_blob(Image& image, const registry::Descriptor& d) {
  image.blobs[d.digest] = BlobEntry{d.media_type, d.size};
}

// Adds a manifest's config and layers; returns the parsed manifest.
registry::Manifest add_manifest(Image& image, const std::string& bytes) {
  auto manifest = registry::parse_manifest(bytes);
  add_blob(image, manifest.config);
  for (const auto& layer : manifest.layers) add_blob(image, layer);
  return manifest;
}

void add_index(RegistryContent& content, Image& image, const std::string& bytes,
               const registry::Platform& platform, bool choose_config, int depth) {
  if (depth > kMaxIndexDepth) {
    throw Error(ErrorKind::kInvalid, "Cannot load " + image.repository + "@" + image.digest +
                                         ": indexes nested too deep");
  }
  auto index = registry::parse_index(bytes);
  const registry::Descriptor* chosen =
      choose_config ? registry::select_platform(index, platform) : nullptr;
  for (const auto& child : index.manifests) {
    add_blob(image, child);
    bool is_index = registry::is_index_media_type(child.media_type);
    if (!is_index && !registry::is_manifest_media_type(child.media_type)) continue;
    auto child_bytes = content.manifest(image.repository, child.digest);
    if (is_index) {
      add_index(content, image, child_bytes, platform, false, depth + 1);
      continue;
    }
    auto manifest = add_manifest(image, child_bytes);
    if (&child == chosen) {
      image.config = manifest.config;
      image.layers = manifest.layers;
    }
  }
  if (choose_config && !chosen) {
    LOG(kInfo) << "No manifest for platform " << platform.to_string() << " in " << content.name()
               << "/" << image.repository << "@" << image.digest;
  }
}

}  // namespace

std::shared_ptr<const Image> load_image(RegistryContent& content, const std::string& repository,
                                        const std::string& digest,
                                        const registry::Platform& platform) {
  auto image = std::make_shared<Image>();
  image->repository = repository;
  image->digest = digest;
  image->manifest = content.manifest(repository, digest);
  image->media_type = registry::detect_media_type(image->manifest, "");
  image->blobs[digest] = BlobEntry{image->media_type, static_cast<int64_t>(image->manifest.size())};
  if (registry::is_index_media_type(image->media_type)) {
    add_index(content, *image, image->manifest, platform, true, 0);
  } else {
    auto manifest = add_manifest(*image, image->manifest);
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
