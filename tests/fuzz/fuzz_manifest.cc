// libFuzzer target: manifest, index and error-body JSON as a hostile registry
// may serve it. The parsers may only throw registry::Error; whatever they
// accept must hold what they promise (valid digests, non-negative sizes).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/manifest.h"

namespace {

using regfs::registry::Descriptor;

void check(const Descriptor& d) {
  if (!regfs::registry::is_valid_digest(d.digest) || d.size < 0) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace registry = regfs::registry;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  registry::detect_media_type(bytes, "");
  registry::detect_media_type(bytes, registry::media_type::kOciManifest);
  try {
    auto manifest = registry::parse_manifest(bytes);
    check(manifest.config);
    for (const auto& layer : manifest.layers) check(layer);
  } catch (const registry::Error&) {
  }
  try {
    auto index = registry::parse_index(bytes);
    for (const auto& m : index.manifests) check(m);
    registry::select_platform(index, {"linux", "amd64", ""});
    registry::select_platform(index, {"linux", "arm64", "v8"});
  } catch (const registry::Error&) {
  }
  for (int status : {400, 401, 403, 404, 429, 500}) {
    registry::error_from_response(status, bytes, "fuzz", "registry.example");
  }
  return 0;
}
