#include "cache/staged_state.h"

#include <utility>

#include "registry/core/digest.h"

namespace regfs::cache {

namespace {

constexpr const char* kGenerationKey = "generation";

std::string to_hex(const std::string& bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

std::string from_hex(const std::string& text) {
  auto nibble = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
  std::string out;
  for (size_t i = 0; i + 1 < text.size(); i += 2) {
    out.push_back(static_cast<char>(nibble(text[i]) << 4 | nibble(text[i + 1])));
  }
  return out;
}

nlohmann::json to_json(const StagedTagState& state) {
  nlohmann::json doc = nlohmann::json::object();
  doc["modes"] = state.modes;
  auto& refs = doc["references"] = nlohmann::json::object();
  for (auto& [path, ref] : state.references) {
    refs[path] = {{"registry", ref.registry},
                  {"repository", ref.repository},
                  {"digest", ref.digest},
                  {"size", ref.size}};
  }
  auto& xattrs = doc["xattrs"] = nlohmann::json::object();
  for (auto& [path, names] : state.xattrs) {
    auto& entry = xattrs[path] = nlohmann::json::object();
    for (auto& [name, value] : names) entry[name] = to_hex(value);  // values may be binary
  }
  doc["error"] = state.error;
  doc["pushed"] = state.pushed_digest;
  doc["pushing"] = state.pushing;
  if (state.made_by_copy) doc["made_by_copy"] = true;
  const auto& changes = state.rootfs;
  if (!changes.whiteouts.empty() || !changes.opaque.empty() || !changes.entries.empty()) {
    auto& rootfs = doc["rootfs"] = nlohmann::json::object();
    rootfs["whiteouts"] = changes.whiteouts;
    rootfs["opaque"] = changes.opaque;
    auto& entries = rootfs["entries"] = nlohmann::json::object();
    for (auto& [path, meta] : changes.entries) {
      auto& entry = entries[path] = {{"mode", meta.mode}, {"uid", meta.uid}, {"gid", meta.gid}};
      auto& xattrs = entry["xattrs"] = nlohmann::json::object();
      for (auto& [name, value] : meta.xattrs) xattrs[name] = to_hex(value);
    }
  }
  auto& uploads = doc["uploads"] = nlohmann::json::object();
  for (auto& [digest, u] : state.uploads) {
    uploads[digest] = {{"url", u.url}, {"offset", u.offset}, {"size", u.size}};
  }
  return doc;
}

StagedTagState from_json(const nlohmann::json& doc) {
  StagedTagState state;
  if (!doc.is_object()) return state;
  if (auto it = doc.find("modes"); it != doc.end() && it->is_object()) {
    for (auto& [path, mode] : it->items()) {
      if (mode.is_number_unsigned()) state.modes[path] = mode.get<uint32_t>();
    }
  }
  if (auto it = doc.find("references"); it != doc.end() && it->is_object()) {
    for (auto& [path, ref] : it->items()) {
      BlobReference r;
      r.registry = ref.value("registry", "");
      r.repository = ref.value("repository", "");
      r.digest = ref.value("digest", "");
      r.size = ref.value("size", int64_t{0});
      if (registry::is_valid_digest(r.digest)) state.references[path] = r;
    }
  }
  if (auto it = doc.find("xattrs"); it != doc.end() && it->is_object()) {
    for (auto& [path, names] : it->items()) {
      if (!names.is_object()) continue;
      for (auto& [name, value] : names.items()) {
        if (value.is_string()) state.xattrs[path][name] = from_hex(value.get<std::string>());
      }
    }
  }
  state.error = doc.value("error", "");
  state.pushed_digest = doc.value("pushed", "");
  state.pushing = doc.value("pushing", "");
  state.made_by_copy = doc.value("made_by_copy", false);
  if (auto it = doc.find("rootfs"); it != doc.end() && it->is_object()) {
    for (const char* key : {"whiteouts", "opaque"}) {
      auto& set = std::string_view(key) == "opaque" ? state.rootfs.opaque : state.rootfs.whiteouts;
      if (auto list = it->find(key); list != it->end() && list->is_array()) {
        for (auto& path : *list) {
          if (path.is_string()) set.insert(path.get<std::string>());
        }
      }
    }
    if (auto entries = it->find("entries"); entries != it->end() && entries->is_object()) {
      for (auto& [path, entry] : entries->items()) {
        if (!entry.is_object()) continue;
        RootfsEntryMeta meta;
        meta.mode = entry.value("mode", uint32_t{0});
        meta.uid = entry.value("uid", uint32_t{0});
        meta.gid = entry.value("gid", uint32_t{0});
        if (auto x = entry.find("xattrs"); x != entry.end() && x->is_object()) {
          for (auto& [name, value] : x->items()) {
            if (value.is_string()) meta.xattrs[name] = from_hex(value.get<std::string>());
          }
        }
        state.rootfs.entries[path] = meta;
      }
    }
  }
  if (auto uploads = doc.find("uploads"); uploads != doc.end() && uploads->is_object()) {
    for (auto& [digest, u] : uploads->items()) {
      if (!registry::is_valid_digest(digest) || !u.is_object()) continue;
      UploadSession session{u.value("url", ""), u.value("offset", uint64_t{0}),
                            u.value("size", uint64_t{0})};
      if (!session.url.empty()) state.uploads[digest] = session;
    }
  }
  return state;
}

// Walks two sorted maps: `changed(key, value)` for entries new or different
// in `after`, `removed(key)` for entries only in `before`.
template <typename Map, typename Changed, typename Removed>
void map_changes(const Map& before, const Map& after, Changed changed, Removed removed) {
  auto b = before.begin();
  auto a = after.begin();
  while (b != before.end() || a != after.end()) {
    if (a == after.end() || (b != before.end() && b->first < a->first)) {
      removed(b->first);
      ++b;
    } else if (b == before.end() || a->first < b->first) {
      changed(a->first, a->second);
      ++a;
    } else {
      if (!(a->second == b->second)) changed(a->first, a->second);
      ++a;
      ++b;
    }
  }
}

// Section names of a journal line, and where each lives in a state document.
constexpr const char* kModes = "modes";
constexpr const char* kReferences = "references";
constexpr const char* kXattrs = "xattrs";
constexpr const char* kRootfsEntries = "rootfs_entries";

}  // namespace

nlohmann::json state_to_json(const StagedTagState& state, uint64_t generation) {
  nlohmann::json doc = to_json(state);
  doc[kGenerationKey] = generation;
  return doc;
}

StagedTagState state_from_json(const nlohmann::json& doc, uint64_t* generation) {
  *generation = doc.is_object() ? doc.value(kGenerationKey, uint64_t{0}) : 0;
  return from_json(doc);
}

std::optional<nlohmann::json> state_change(const StagedTagState& before,
                                           const StagedTagState& after, uint64_t generation) {
  if (before.error != after.error || before.pushed_digest != after.pushed_digest ||
      before.pushing != after.pushing || before.made_by_copy != after.made_by_copy ||
      before.rootfs.whiteouts != after.rootfs.whiteouts ||
      before.rootfs.opaque != after.rootfs.opaque || before.uploads != after.uploads) {
    return std::nullopt;
  }
  StagedTagState set;  // the entries set, in the document's own encoding
  std::map<std::string, std::set<std::string>> removed;
  auto removal_of = [&](const char* section) {
    return [&removed, section](const std::string& key) { removed[section].insert(key); };
  };
  map_changes(
      before.modes, after.modes, [&](auto& k, auto& v) { set.modes[k] = v; }, removal_of(kModes));
  map_changes(
      before.references, after.references, [&](auto& k, auto& v) { set.references[k] = v; },
      removal_of(kReferences));
  map_changes(
      before.xattrs, after.xattrs, [&](auto& k, auto& v) { set.xattrs[k] = v; },
      removal_of(kXattrs));
  map_changes(
      before.rootfs.entries, after.rootfs.entries,
      [&](auto& k, auto& v) { set.rootfs.entries[k] = v; }, removal_of(kRootfsEntries));
  nlohmann::json doc = to_json(set);
  nlohmann::json line = nlohmann::json::object();
  for (const char* section : {kModes, kReferences, kXattrs}) {
    if (!doc[section].empty()) line[section] = doc[section];
  }
  if (!set.rootfs.entries.empty()) line[kRootfsEntries] = doc["rootfs"]["entries"];
  for (auto& [section, keys] : removed) {
    for (auto& key : keys) line[section][key] = nullptr;
  }
  if (!line.empty()) line[kGenerationKey] = generation;
  return line;
}

bool apply_state_change(StagedTagState& state, const nlohmann::json& line, uint64_t generation) {
  if (!line.is_object() || line.value(kGenerationKey, uint64_t{0}) != generation) return false;
  // The entries set read as a document would be; the removals apart.
  nlohmann::json doc = nlohmann::json::object();
  std::map<std::string, std::set<std::string>> removed;
  for (const char* section : {kModes, kReferences, kXattrs, kRootfsEntries}) {
    auto it = line.find(section);
    if (it == line.end()) continue;
    if (!it->is_object()) return false;
    nlohmann::json& into =
        section == std::string_view(kRootfsEntries) ? doc["rootfs"]["entries"] : doc[section];
    into = nlohmann::json::object();
    for (auto& [key, value] : it->items()) {
      if (value.is_null()) {
        removed[section].insert(key);
      } else {
        into[key] = value;
      }
    }
  }
  StagedTagState set = from_json(doc);
  for (auto& key : removed[kModes]) state.modes.erase(key);
  for (auto& key : removed[kReferences]) state.references.erase(key);
  for (auto& key : removed[kXattrs]) state.xattrs.erase(key);
  for (auto& key : removed[kRootfsEntries]) state.rootfs.entries.erase(key);
  for (auto& [k, v] : set.modes) state.modes[k] = v;
  for (auto& [k, v] : set.references) state.references[k] = v;
  for (auto& [k, v] : set.xattrs) state.xattrs[k] = std::move(v);
  for (auto& [k, v] : set.rootfs.entries) state.rootfs.entries[k] = std::move(v);
  return true;
}

}  // namespace regfs::cache
