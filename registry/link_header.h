// Parser for RFC 8288 Link headers as registries send them for pagination:
//   Link: </v2/_catalog?last=b&n=2>; rel="next"
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace regfs::registry {

// The target of the rel="next" link, as written (often a path without host).
std::optional<std::string> parse_next_link(std::string_view header);

}  // namespace regfs::registry
