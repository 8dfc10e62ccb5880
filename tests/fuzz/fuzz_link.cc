// libFuzzer target: Link headers (RFC 8288) of paginated lists, and the URL
// helpers that resolve the next page against the current one.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "registry/http.h"
#include "registry/link_header.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace registry = regfs::registry;
  std::string_view header(reinterpret_cast<const char*>(data), size);
  if (auto next = registry::parse_next_link(header)) {
    for (const char* base :
         {"http://127.0.0.1:5000/v2/_catalog?n=2", "https://registry.example/v2/a/b/tags/list"}) {
      std::string url = registry::resolve_url(base, *next);
      registry::url_origin(url);
      registry::url_authority(url);
    }
  }
  registry::url_origin(header);
  registry::url_authority(header);
  registry::resolve_url("https://registry.example/v2/x", header);
  return 0;
}
