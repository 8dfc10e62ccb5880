// A small TOML subset, enough for containers-registries.conf(5): comments,
// bare, quoted and dotted keys, [tables], [[arrays of tables]], basic and
// literal strings (one line or multi-line), integers, floats, booleans,
// arrays (over several lines, trailing comma) and inline tables. Dates are
// not supported. The result is a JSON object (tables are objects, arrays of
// tables are arrays of objects).
#pragma once

#include <nlohmann/json.hpp>
#include <string_view>

namespace regfs::registry {

// Throws Error(kInvalid, "line N: <reason>") on what it does not accept.
nlohmann::json parse_toml(std::string_view text);

}  // namespace regfs::registry
