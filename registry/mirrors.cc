// See mirrors.h. registries.conf goes through the small TOML parser; only the
// keys regfs uses are read. A [[registry]] whose location differs from its
// prefix (a rewrite to another registry) is not followed: the prefix is read
// from itself, with a warning.
#include "registry/mirrors.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/reference.h"
#include "registry/toml.h"

namespace regfs::registry {
namespace {

using nlohmann::json;

// "Docker.IO/library/" -> "docker.io/library"; "host" -> "host".
std::string normalise_prefix(std::string_view text) {
  for (std::string_view scheme : {"https://", "http://"}) {
    if (text.starts_with(scheme)) text.remove_prefix(scheme.size());
  }
  while (text.ends_with('/')) text.remove_suffix(1);
  size_t slash = text.find('/');
  std::string host = canonical_registry(text.substr(0, slash));
  if (slash == std::string_view::npos) return host;
  return host + std::string(text.substr(slash));
}

std::string host_of(const std::string& prefix) { return prefix.substr(0, prefix.find('/')); }

std::string path_of(const std::string& prefix) {
  size_t slash = prefix.find('/');
  return slash == std::string::npos ? "" : prefix.substr(slash + 1);
}

std::string string_field(const json& table, const char* key) {
  auto it = table.find(key);
  if (it == table.end()) return "";
  if (!it->is_string()) throw Error(ErrorKind::kInvalid, std::string(key) + " must be a string");
  return it->get<std::string>();
}

bool bool_field(const json& table, const char* key) {
  auto it = table.find(key);
  if (it == table.end()) return false;
  if (!it->is_boolean())
    throw Error(ErrorKind::kInvalid, std::string(key) + " must be true or false");
  return it->get<bool>();
}

RegistryEntry parse_entry(const json& table) {
  if (!table.is_object()) throw Error(ErrorKind::kInvalid, "[[registry]] must be a table");
  RegistryEntry entry;
  entry.location = normalise_prefix(string_field(table, "location"));
  std::string prefix = string_field(table, "prefix");
  entry.prefix = prefix.empty() ? entry.location : normalise_prefix(prefix);
  if (entry.prefix.empty())
    throw Error(ErrorKind::kInvalid, "[[registry]] needs a prefix or a location");
  entry.insecure = bool_field(table, "insecure");
  entry.blocked = bool_field(table, "blocked");
  bool digest_only = bool_field(table, "mirror-by-digest-only") ||
                     string_field(table, "pull-from-mirror") == "digest-only";
  auto mirrors = table.find("mirror");
  if (mirrors == table.end()) return entry;
  if (!mirrors->is_array()) throw Error(ErrorKind::kInvalid, "mirror must be an array of tables");
  for (const auto& m : *mirrors) {
    if (!m.is_object()) throw Error(ErrorKind::kInvalid, "mirror must be an array of tables");
    std::string location = normalise_prefix(string_field(m, "location"));
    if (location.empty()) throw Error(ErrorKind::kInvalid, "a mirror needs a location");
    Mirror mirror;
    mirror.registry = host_of(location);
    mirror.from = path_of(entry.prefix);
    mirror.to = path_of(location);
    mirror.insecure = bool_field(m, "insecure");
    mirror.digest_only = digest_only || string_field(m, "pull-from-mirror") == "digest-only";
    entry.mirrors.push_back(std::move(mirror));
  }
  return entry;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

// registries.conf.d/*.conf in name order.
std::vector<std::filesystem::path> drop_ins(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".conf") out.push_back(entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

std::optional<std::string> Mirror::map(std::string_view repository) const {
  if (from.empty())
    return to.empty() ? std::string(repository) : to + "/" + std::string(repository);
  if (repository == from) return to;
  if (repository.size() > from.size() && repository.starts_with(from) &&
      repository[from.size()] == '/') {
    std::string rest(repository.substr(from.size() + 1));
    return to.empty() ? rest : to + "/" + rest;
  }
  return std::nullopt;
}

RegistriesConf RegistriesConf::parse(std::string_view text) {
  json doc = parse_toml(text);
  RegistriesConf conf;
  if (auto registries = doc.find("registry"); registries != doc.end()) {
    if (!registries->is_array())
      throw Error(ErrorKind::kInvalid, "registry must be [[registry]] tables");
    for (const auto& table : *registries) conf.merge_entry(parse_entry(table));
  }
  // Version 1: [registries.insecure] registries = ["host", ...], and .block.
  if (auto v1 = doc.find("registries"); v1 != doc.end() && v1->is_object()) {
    for (const char* kind : {"insecure", "block"}) {
      auto table = v1->find(kind);
      if (table == v1->end() || !table->is_object()) continue;
      auto list = table->find("registries");
      if (list == table->end() || !list->is_array()) continue;
      for (const auto& name : *list) {
        if (!name.is_string()) continue;
        RegistryEntry entry;
        entry.prefix = entry.location = normalise_prefix(name.get<std::string>());
        entry.insecure = std::string_view(kind) == "insecure";
        entry.blocked = !entry.insecure;
        conf.merge_entry(std::move(entry));
      }
    }
  }
  return conf;
}

void RegistriesConf::merge_entry(RegistryEntry entry) {
  auto same = std::find_if(entries_.begin(), entries_.end(),
                           [&](const RegistryEntry& e) { return e.prefix == entry.prefix; });
  if (same != entries_.end()) {
    *same = std::move(entry);
  } else {
    entries_.push_back(std::move(entry));
  }
}

void RegistriesConf::merge(RegistriesConf other) {
  for (auto& entry : other.entries_) merge_entry(std::move(entry));
}

RegistriesConf RegistriesConf::load() {
  namespace fs = std::filesystem;
  std::string config_home = env("XDG_CONFIG_HOME");
  if (config_home.empty() && !env("HOME").empty()) config_home = env("HOME") + "/.config";
  std::vector<fs::path> files;
  fs::path user = config_home.empty() ? fs::path() : fs::path(config_home) / "containers";
  std::error_code ec;
  if (!user.empty() && fs::is_regular_file(user / "registries.conf", ec)) {
    files.push_back(user / "registries.conf");
  } else {
    files.push_back("/etc/containers/registries.conf");
    for (auto& f : drop_ins("/etc/containers/registries.conf.d")) files.push_back(f);
  }
  if (!user.empty()) {
    for (auto& f : drop_ins(user / "registries.conf.d")) files.push_back(f);
  }
  RegistriesConf conf;
  for (const auto& file : files) {
    if (!fs::is_regular_file(file, ec)) continue;
    try {
      conf.merge(parse(read_text(file)));
    } catch (const Error& e) {
      LOG(kWarning) << "Cannot read " << file.string() << ": " << e.what() << " (ignored)";
      continue;
    }
    LOG(kDebug) << "Read registries configuration " << file.string();
  }
  for (const auto& entry : conf.entries_) {
    if (entry.location != entry.prefix && !entry.location.empty()) {
      LOG(kWarning) << "registries.conf: reading " << entry.prefix << " from " << entry.prefix
                    << ", not from its location " << entry.location << " (not supported)";
    }
  }
  return conf;
}

bool RegistriesConf::insecure(std::string_view registry) const {
  std::string host = canonical_registry(registry);
  return std::any_of(entries_.begin(), entries_.end(), [&](const RegistryEntry& e) {
    return e.insecure && host_of(e.prefix) == host;
  });
}

std::vector<Mirror> RegistriesConf::mirrors(std::string_view registry) const {
  std::string host = canonical_registry(registry);
  std::vector<const RegistryEntry*> matching;
  for (const auto& entry : entries_) {
    if (host_of(entry.prefix) == host) matching.push_back(&entry);
  }
  std::stable_sort(matching.begin(), matching.end(),
                   [](auto* a, auto* b) { return a->prefix.size() > b->prefix.size(); });
  std::vector<Mirror> out;
  for (const auto* entry : matching) {
    out.insert(out.end(), entry->mirrors.begin(), entry->mirrors.end());
  }
  return out;
}

std::vector<Mirror> mirrors_for(std::string_view registry,
                                const std::vector<std::pair<std::string, std::string>>& flags,
                                const std::vector<std::string>& insecure,
                                const RegistriesConf& conf) {
  std::string host = canonical_registry(registry);
  std::vector<Mirror> out;
  for (const auto& [from, to] : flags) {
    if (canonical_registry(from) != host) continue;
    Mirror mirror;
    mirror.registry = canonical_registry(to);
    mirror.insecure =
        std::find(insecure.begin(), insecure.end(), mirror.registry) != insecure.end() ||
        conf.insecure(mirror.registry);
    out.push_back(std::move(mirror));
  }
  for (auto& mirror : conf.mirrors(host)) out.push_back(std::move(mirror));
  return out;
}

}  // namespace regfs::registry
