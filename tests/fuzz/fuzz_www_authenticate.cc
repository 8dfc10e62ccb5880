// libFuzzer target: WWW-Authenticate challenges (RFC 7235) as a hostile
// registry may send them. Malformed parts are skipped, never a crash.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "registry/www_authenticate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view header(reinterpret_cast<const char*>(data), size);
  for (const auto& challenge : regfs::registry::parse_www_authenticate(header)) {
    for (char c : challenge.scheme) {
      if (c >= 'A' && c <= 'Z') std::abort();  // schemes are lowercased
    }
  }
  return 0;
}
