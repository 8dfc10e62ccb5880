#include "fs/tree/known_names.h"

namespace regfs::fs {

namespace {

std::string key_of(const std::string& registry, const std::string& path) {
  return registry + "/" + path;
}

}  // namespace

void KnownNames::add_with_ancestors(std::set<std::string>& set, const std::string& key) {
  // `key` is "registry/path": stop at the registry.
  auto root = key.find('/');
  for (std::string k = key; k.size() > root + 1;) {
    if (!set.insert(k).second) break;  // its ancestors are in already
    auto slash = k.rfind('/');
    if (slash <= root) break;
    k.resize(slash);
  }
}

void KnownNames::proven(const std::string& registry, const std::string& repository) {
  if (repository.empty()) return;
  std::lock_guard lock(mutex_);
  repositories_.insert(key_of(registry, repository));
  add_with_ancestors(proven_, key_of(registry, repository));
}

void KnownNames::named(const std::string& registry, const std::string& path) {
  if (path.empty()) return;
  std::lock_guard lock(mutex_);
  add_with_ancestors(named_, key_of(registry, path));
}

bool KnownNames::is_proven(const std::string& registry, const std::string& path) const {
  std::lock_guard lock(mutex_);
  return proven_.count(key_of(registry, path)) > 0;
}

bool KnownNames::is_proven_repository(const std::string& registry, const std::string& path) const {
  std::lock_guard lock(mutex_);
  return repositories_.count(key_of(registry, path)) > 0;
}

bool KnownNames::is_named(const std::string& registry, const std::string& path) const {
  std::lock_guard lock(mutex_);
  return named_.count(key_of(registry, path)) > 0;
}

std::set<std::string> KnownNames::children(const std::string& registry,
                                           const std::string& path) const {
  std::string prefix = path.empty() ? registry + "/" : key_of(registry, path) + "/";
  std::set<std::string> names;
  std::lock_guard lock(mutex_);
  for (const auto* set : {&proven_, &named_}) {
    for (auto it = set->lower_bound(prefix); it != set->end() && it->starts_with(prefix); ++it) {
      std::string rest = it->substr(prefix.size());
      if (!rest.empty() && rest.find('/') == std::string::npos) names.insert(rest);
    }
  }
  return names;
}

bool KnownNames::first_hint(const std::string& registry, const std::string& path) {
  std::lock_guard lock(mutex_);
  auto key = key_of(registry, path);
  if (hinted_.contains(key)) return false;
  hinted_.put(key, true);
  return true;
}

}  // namespace regfs::fs
