// TOML (v1.0, read by toml++) for containers-registries.conf(5), as JSON:
// tables are objects, arrays of tables arrays of objects; strings, integers,
// floats and booleans as themselves. Dates and times are refused (the file
// has none).
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

namespace regfs::registry {

// Throws Error(kInvalid, "line N: <reason>") on what it does not accept.
nlohmann::json parse_toml(std::string_view text);

}  // namespace regfs::registry
