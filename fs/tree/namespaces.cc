// The names of a registry's namespaces and repositories (fs/tree/tree.h):
// from its catalog where it serves one, else as fs/tree/known_names.h says
// (tags/list proves a repository; the cache, the credentials and names
// made through the mount name others), with staged names first.
#include <sys/stat.h>

#include <algorithm>
#include <set>

#include "fs/tree/image_dirs.h"
#include "fs/tree/known_names.h"
#include "fs/tree/path.h"
#include "fs/tree/tree.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/reference.h"

namespace regfs::fs {

using registry::Error;
using registry::ErrorKind;

namespace {

constexpr std::string_view kDigestPrefix = "sha256:";

size_t depth(const std::string& path) {
  return path.empty() ? 0 : 1 + std::count(path.begin(), path.end(), '/');
}

// The distinct next components of catalog entries under `path`, and whether
// `path` itself is a repository.
std::set<std::string> children_in_catalog(const std::vector<std::string>& catalog,
                                          const std::string& path) {
  std::string prefix = path.empty() ? "" : path + "/";
  std::set<std::string> names;
  auto it = std::lower_bound(catalog.begin(), catalog.end(), prefix);
  for (; it != catalog.end() && it->compare(0, prefix.size(), prefix) == 0; ++it) {
    std::string rest = it->substr(prefix.size());
    if (rest.empty()) continue;
    names.insert(rest.substr(0, rest.find('/')));
  }
  return names;
}

bool catalog_has_prefix(const std::vector<std::string>& catalog, const std::string& path) {
  auto it = std::lower_bound(catalog.begin(), catalog.end(), path);
  if (it == catalog.end()) return false;
  return *it == path || it->compare(0, path.size() + 1, path + "/") == 0;
}

bool is_unauthorized(const Error& e) { return e.kind() == ErrorKind::kUnauthorized; }

}  // namespace

// True if `tag` names an image of `repo`: in the tag list, or (the list may
// be older than the tag) found by a HEAD of the manifest. A repository known
// to exist that refuses the read is EACCES, not a missing tag.
bool Tree::has_tag(RegistrySource& reg, const std::string& repo, const Names& tags,
                   const std::string& tag) {
  if (tags && std::binary_search(tags->begin(), tags->end(), tag)) return true;
  try {
    reg.resolve_tag(repo, tag);
    return true;
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kNotFound) return false;
    // The registry is down and keeps no answer for this tag: a tag its kept
    // list lacks is taken for none, so what is cached below a namespace of
    // the same name (repository `a` beside repository `a/b`) stays readable.
    if (e.kind() == ErrorKind::kUnavailable) return false;
    throw;
  }
}

Names Tree::probe_repository(RegistrySource& reg, const std::string& path,
                             std::optional<Error>* refused) {
  try {
    auto tags = reg.tags(path);
    known_.proven(reg.name(), path);
    return tags;
  } catch (const Error& e) {
    // Down, with no tag list kept: not proven now. What is cached below
    // it is still found through the names known (kept listings, the cache).
    if (e.kind() == ErrorKind::kUnavailable) return nullptr;
    if (e.kind() != ErrorKind::kNotFound && !is_unauthorized(e)) throw;
    if (refused && is_unauthorized(e)) *refused = e;
    return nullptr;
  }
}

// Once per name: why a name a 401/403 left unproven does not exist.
void Tree::hint(RegistrySource& reg, const std::string& path, const Error& refused) {
  if (!known_.first_hint(reg.name(), path)) return;
  // refused.what() carries docker's hint: it may not exist, or may need a login.
  LOG(kWarning) << "No repository " << reg.name() << "/" << path << " for "
                << content_.account(reg.name()) << ": " << refused.what();
}

bool Tree::is_known_repository(const std::string& registry, const std::string& path) {
  if (known_.is_proven_repository(registry, path)) return true;
  auto catalog = content_.registry(registry).catalog();
  return catalog && std::binary_search(catalog->begin(), catalog->end(), path);
}

void Tree::learn_registry(RegistrySource& reg) {
  {
    std::lock_guard lock(mutex_);
    if (!learned_.insert(reg.name()).second) return;
  }
  // Repositories answered in earlier mounts: proven then (listed, and no
  // anchor for invented names even while this account cannot read them).
  for (auto& repository : reg.cached_repositories()) known_.proven(reg.name(), repository);
  for (auto& path : content_.credential_namespaces(reg.name())) known_.named(reg.name(), path);
}

bool Tree::is_anchor(RegistrySource& reg, const std::string& path, bool proven_repository) {
  if (path.empty()) return true;
  // A new name in a repository is a tag to be, also in one proven before.
  if (proven_repository || known_.is_proven_repository(reg.name(), path)) return false;
  if (known_.is_named(reg.name(), path) || staging_->is_staged_namespace(reg.name(), path)) {
    return true;
  }
  return !reg.is_docker_hub() && known_.is_proven(reg.name(), path);
}

NodePtr Tree::lookup_root(std::string_view name) {
  if (!registry::looks_like_registry(name)) return nullptr;
  std::string canonical = registry::canonical_registry(name);
  return make_namespace(canonical, "", name, "/");
}

std::vector<NodePtr> Tree::list_root() {
  std::set<std::string> names(options_.listed_registries.begin(), options_.listed_registries.end());
  names.insert(std::string(registry::kDockerHub));
  for (auto& name : content_.registries_in_use()) names.insert(name);
  std::vector<NodePtr> entries;
  for (auto& name : names) entries.push_back(make_namespace(name, "", name, "/"));
  return entries;
}

NodePtr Tree::lookup_namespace(const Node& dir, std::string_view name) {
  if (auto staged = staging_->lookup_in_namespace(dir, name)) return staged;
  auto& reg = content_.registry(dir.registry);
  std::string sname(name);
  if (!dir.path.empty() && sname.rfind(kDigestPrefix, 0) == 0) {
    if (!registry::is_valid_digest(sname)) return nullptr;
    auto node = ImageDirs::image_node(dir, name);
    images_->image_of(*node);  // throws kNotFound if the manifest is not there
    return node;
  }
  if (auto catalog = reg.catalog()) return lookup_in_catalog(dir, reg, *catalog, sname);
  learn_registry(reg);
  // Without a catalog (fs/tree/known_names.h has the rule). Docker Hub's names are
  // `namespace/name`: tags at depth 2, nothing deeper.
  bool hub = reg.is_docker_hub();
  Names dir_tags;
  if (!dir.path.empty() && (!hub || depth(dir.path) == 2)) {
    dir_tags = probe_repository(reg, dir.path);
    if (dir_tags && registry::is_valid_tag(sname) && has_tag(reg, dir.path, dir_tags, sname)) {
      return ImageDirs::image_node(dir, name);
    }
  }
  std::string child = join(dir.path, sname);
  if (!registry::is_valid_path_component(sname) || (hub && depth(child) > 2)) return nullptr;
  std::optional<Error> refused;
  bool proven = !(hub && depth(child) == 1) && probe_repository(reg, child, &refused);
  if (!proven && !is_anchor(reg, dir.path, dir_tags != nullptr)) {
    if (refused) hint(reg, child, *refused);
    return nullptr;
  }
  return make_namespace(dir.registry, child, name, dir.key);
}

NodePtr Tree::lookup_in_catalog(const Node& dir, RegistrySource& reg,
                                const std::vector<std::string>& catalog, const std::string& name) {
  if (!dir.path.empty() && registry::is_valid_tag(name) &&
      std::binary_search(catalog.begin(), catalog.end(), dir.path)) {
    Names tags;
    try {
      tags = reg.tags(dir.path);
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::kNotFound && !is_unauthorized(e)) throw;
    }
    if (has_tag(reg, dir.path, tags, name)) return ImageDirs::image_node(dir, name);
  }
  if (!registry::is_valid_path_component(name)) return nullptr;
  std::string child = join(dir.path, name);
  if (!catalog_has_prefix(catalog, child)) return nullptr;
  return make_namespace(dir.registry, child, name, dir.key);
}

std::vector<NodePtr> Tree::list_namespace(const Node& dir) {
  auto& reg = content_.registry(dir.registry);
  std::set<std::string> namespaces;
  std::vector<NodePtr> entries;
  Names tags;
  if (auto catalog = reg.catalog()) {
    namespaces = children_in_catalog(*catalog, dir.path);
    if (std::binary_search(catalog->begin(), catalog->end(), dir.path)) tags = reg.tags(dir.path);
  } else {
    // What is known: proven, named, used before (staged names are added by
    // the caller); tags where the registry proves a repository.
    learn_registry(reg);
    namespaces = known_.children(reg.name(), dir.path);
    if (reg.is_docker_hub() && dir.path.empty()) namespaces.insert("library");
    if (!dir.path.empty() && (!reg.is_docker_hub() || depth(dir.path) == 2)) {
      tags = probe_repository(reg, dir.path);
    }
  }
  if (tags) {
    for (auto& tag : *tags) {
      if (registry::is_valid_tag(tag)) entries.push_back(ImageDirs::image_node(dir, tag));
    }
  }
  for (auto& name : namespaces) {
    if (tags && std::binary_search(tags->begin(), tags->end(), name)) {
      LOG(kInfo) << "Namespace " << join(dir.path, name) << " hidden by the tag of the same name";
      continue;
    }
    entries.push_back(make_namespace(dir.registry, join(dir.path, name), name, dir.key));
  }
  return entries;
}

}  // namespace regfs::fs
