#include "cache/layout.h"

#include <string>

#include "registry/core/digest.h"

namespace regfs::cache {

CacheLayout::path CacheLayout::blob(std::string_view digest) const {
  return blobs() / std::string(registry::digest_hex(digest));
}

CacheLayout::path CacheLayout::partial(std::string_view digest) const {
  return partials() / std::string(registry::digest_hex(digest));
}

CacheLayout::path CacheLayout::chunk_log(std::string_view digest) const {
  return partials() / (std::string(registry::digest_hex(digest)) + std::string(kChunkLogExtension));
}

CacheLayout::path CacheLayout::layer_tar(const path& layers, std::string_view diff_id) {
  return layer_digests(layers) / (std::string(registry::digest_hex(diff_id)) + ".tar");
}

CacheLayout::path CacheLayout::layer_index(const path& layers, std::string_view diff_id) {
  return layer_digests(layers) / (std::string(registry::digest_hex(diff_id)) + ".index");
}

std::vector<CacheLayout::path> CacheLayout::content_dirs() const {
  return {root_ / "blobs", root_ / "partial", layers(), refs(), tmp()};
}

}  // namespace regfs::cache
