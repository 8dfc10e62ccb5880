// What the tree knows of names on registries that serve no catalog (Docker
// Hub, GHCR, quay, and any registry whose token grants no catalog scope).
// Such a registry cannot list, and answers 401 alike for a private and for a
// missing repository, so a name exists only when something proves it
// (SPEC §2, README "Names on registries without a catalog"):
//
//   repository  the registry proves it: tags/list answers;
//   tag         its repository is one and the manifest answers;
//   namespace   it leads to a proven or staged repository, the user or the
//               credentials file named it (a `host/namespace` key, the
//               account's user name), the registry's convention (docker.io:
//               every `namespace` of `namespace/name`), or it stands where
//               an unproven name may: directly under the registry's root, or
//               under a proven, named or staged namespace (an "anchor";
//               docker.io anchors only named and staged ones, since its
//               second level is repositories, which need proof);
//   otherwise   nothing (ENOENT), so mkdir and cp -r can make it.
//
// KnownNames holds the proven and named paths of each registry; the tree
// (fs/tree/tree.cc) applies the rule. Thread-safe.
#pragma once

#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "registry/core/bounded_map.h"

namespace regfs::fs {

class KnownNames {
 public:
  // `repository` answered tags/list: it and its ancestors are known.
  void proven(const std::string& registry, const std::string& repository);
  // A namespace the user or the credentials named: it and its ancestors.
  void named(const std::string& registry, const std::string& path);
  // A proven repository, or the ancestor of one.
  bool is_proven(const std::string& registry, const std::string& path) const;
  // A proven repository itself.
  bool is_proven_repository(const std::string& registry, const std::string& path) const;
  // Named (or the ancestor of a named one).
  bool is_named(const std::string& registry, const std::string& path) const;
  // The known names directly under `path` ("" for the registry's root).
  std::set<std::string> children(const std::string& registry, const std::string& path) const;
  // True the first time a hint about registry/path is to be logged: each
  // unproven name is explained once, however often it is looked up.
  bool first_hint(const std::string& registry, const std::string& path);

 private:
  static void add_with_ancestors(std::set<std::string>& set, const std::string& path);
  static constexpr size_t kMaxHints = 10000;

  mutable std::mutex mutex_;  // guards the members below
  // Keys are "registry/path".
  std::set<std::string> proven_;        // proven repositories and their ancestors
  std::set<std::string> repositories_;  // proven repositories
  std::set<std::string> named_;         // named namespaces and their ancestors
  registry::BoundedMap<std::string, bool> hinted_{kMaxHints};  // names explained once
};

}  // namespace regfs::fs
