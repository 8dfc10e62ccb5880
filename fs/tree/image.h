// What an image directory shows, derived from manifests only (never layers):
// the blobs every manifest reaches, the config of the chosen platform, and the
// OCI layout files. Built once per manifest digest and shared.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "fs/source/source.h"
#include "registry/manifest.h"

namespace regfs::fs {

struct BlobEntry {
  std::string media_type;
  int64_t size = 0;
};

struct Image {
  std::string repository;
  std::string digest;      // of the top manifest (an index for multi-platform tags)
  std::string media_type;  // of the top manifest
  std::string manifest;    // the top manifest's bytes, exactly as served
  // The image config of the selected platform; empty when no platform of a
  // multi-platform index matches.
  std::optional<registry::Descriptor> config;
  // The layers of the selected platform's manifest, base first (rootfs/).
  std::vector<registry::Descriptor> layers;
  // Every blob the image reaches, by digest: the manifest itself, for an index
  // every child manifest, and every config and layer.
  std::map<std::string, BlobEntry> blobs;
};

// Loads the image `digest` of `repository`: fetches the manifest and, for an
// index, every child manifest (not configs, not layers).
std::shared_ptr<const Image> load_image(RegistrySource& content, const std::string& repository,
                                        const std::string& digest,
                                        const registry::Platform& platform);

// The OCI layout's index.json for an image directory: one descriptor, the
// top manifest, annotated with `tag` when the directory is a tag.
std::string layout_index_json(const Image& image, const std::string& tag);

inline constexpr std::string_view kOciLayoutFile = "{\"imageLayoutVersion\":\"1.0.0\"}";

}  // namespace regfs::fs
