// parse_toml on toml++ (libtomlplusplus-dev): TOML 1.0 as the library reads
// it, turned into JSON for registries.conf's reader (registry/mirrors.cc).
#include "registry/toml.h"

#include <toml++/toml.h>

#include <string>

#include "registry/core/error.h"

namespace regfs::registry {
namespace {

[[noreturn]] void refuse(const toml::source_region& where, const std::string& reason) {
  throw Error(ErrorKind::kInvalid, "line " + std::to_string(where.begin.line) + ": " + reason);
}

nlohmann::json to_json(const toml::node& node) {
  if (const auto* table = node.as_table()) {
    auto object = nlohmann::json::object();
    for (const auto& [key, value] : *table) object[std::string(key.str())] = to_json(value);
    return object;
  }
  if (const auto* array = node.as_array()) {
    auto list = nlohmann::json::array();
    for (const auto& value : *array) list.push_back(to_json(value));
    return list;
  }
  if (const auto* text = node.as_string()) return text->get();
  if (const auto* integer = node.as_integer()) return integer->get();
  if (const auto* number = node.as_floating_point()) return number->get();
  if (const auto* boolean = node.as_boolean()) return boolean->get();
  // registries.conf has no dates; a date where a name belongs is a mistake.
  refuse(node.source(), "dates and times are not supported");
}

}  // namespace

nlohmann::json parse_toml(std::string_view text) {
  try {
    return to_json(toml::parse(text));
  } catch (const toml::parse_error& e) {
    refuse(e.source(), std::string(e.description()));
  }
}

}  // namespace regfs::registry
