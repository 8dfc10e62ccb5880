// Parser for WWW-Authenticate challenges (RFC 7235):
//   Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace regfs::registry {

struct Challenge {
  std::string scheme;                         // lowercased: "bearer", "basic"
  std::map<std::string, std::string> params;  // keys lowercased, values unquoted
};

// All challenges in one header value; malformed parts are skipped.
std::vector<Challenge> parse_www_authenticate(std::string_view header);

}  // namespace regfs::registry
