// Pull-through mirrors (SPEC §1 --mirror, containers-registries.conf(5)):
// which mirrors serve a registry's reads, from `--mirror REGISTRY=MIRROR`
// and from registries.conf's [[registry]] tables (prefix, location,
// insecure, blocked, [[registry.mirror]] location/insecure, mirror-by-digest-
// only). The Client reads through them (see client.h); this file only
// decides which they are.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace regfs::registry {

// A mirror of a registry, or of a namespace in it.
struct Mirror {
  std::string registry;  // canonical host[:port] of the mirror
  std::string from;      // repository prefix it serves ("" for all)
  std::string to;        // what `from` becomes on the mirror
  bool insecure = false;
  bool digest_only = false;  // not for tags (mirror-by-digest-only)
  // The repository's name on the mirror; nullopt if this mirror does not
  // serve it.
  std::optional<std::string> map(std::string_view repository) const;
};

// One [[registry]] table.
struct RegistryEntry {
  std::string prefix;  // "host", "host/namespace"
  std::string location;
  bool insecure = false;
  bool blocked = false;
  std::vector<Mirror> mirrors;
};

class RegistriesConf {
 public:
  // Parses registries.conf text: v2 [[registry]] tables, and v1's
  // [registries.insecure] registries = [...]. Other keys are ignored. Throws
  // Error(kInvalid, "line N: ...").
  static RegistriesConf parse(std::string_view text);
  // Reads what podman reads: $XDG_CONFIG_HOME (or ~/.config)
  // /containers/registries.conf if it exists, else
  // /etc/containers/registries.conf, then the registries.conf.d/*.conf
  // drop-ins (a later prefix replaces an earlier one). A file that cannot be
  // parsed is skipped with a warning.
  static RegistriesConf load();

  const std::vector<RegistryEntry>& entries() const { return entries_; }
  // Whether an entry for the registry (its host, any namespace) is insecure.
  bool insecure(std::string_view registry) const;
  // The entries' mirrors for the registry, longest prefix first.
  std::vector<Mirror> mirrors(std::string_view registry) const;
  // Adds `other`'s entries; an entry with a prefix already here replaces it.
  void merge(RegistriesConf other);

 private:
  void merge_entry(RegistryEntry entry);
  std::vector<RegistryEntry> entries_;
};

// The mirrors of `registry`: --mirror flags (REGISTRY=MIRROR, in order)
// first, then registries.conf's. A flag's mirror is insecure if named in
// `insecure` (loopback mirrors may use plain HTTP anyway).
std::vector<Mirror> mirrors_for(std::string_view registry,
                                const std::vector<std::pair<std::string, std::string>>& flags,
                                const std::vector<std::string>& insecure,
                                const RegistriesConf& conf);

}  // namespace regfs::registry
