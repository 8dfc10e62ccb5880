// libFuzzer target: image references, registry names, repository names,
// tags, digests and platforms as a user (or a path under the mount) gives
// them. Only registry::Error may be thrown; what parses must be valid.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/manifest.h"
#include "registry/reference.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace registry = regfs::registry;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    auto ref = registry::parse_reference(text);
    if (!registry::is_valid_repository(ref.repository)) std::abort();
    if (!ref.digest.empty() && !registry::is_valid_digest(ref.digest)) std::abort();
    if (!ref.tag.empty() && !registry::is_valid_tag(ref.tag)) std::abort();
    ref.to_string();
  } catch (const registry::Error&) {
  }
  registry::canonical_registry(text);
  registry::looks_like_registry(text);
  registry::is_loopback(text);
  registry::api_host(text);
  registry::is_valid_path_component(text);
  registry::is_valid_tag(text);
  if (registry::is_valid_digest(text)) registry::digest_hex(text);
  try {
    registry::parse_platform(text).to_string();
  } catch (const registry::Error&) {
  }
  return 0;
}
