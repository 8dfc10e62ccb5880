// Registry credentials from the files docker and podman use (SPEC §6).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace regfs::registry {

struct Credential {
  std::string username;
  std::string password;
  std::string identity_token;  // an OAuth refresh token ("<token>" user)
};

class CredentialStore {
 public:
  // Reads the files that exist, in SPEC §6 order: `auth_file` (if not
  // empty), $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
  // ~/.config/containers/auth.json, $DOCKER_CONFIG/config.json or
  // ~/.docker/config.json, ~/.dockercfg. No file means anonymous; a
  // malformed one throws Error(kInvalid) naming the file (never its content).
  // The store follows the files: a file written, created or removed later
  // (`regfs login` while mounted) is read again at the next lookup, checked
  // at most once a second; a file that has become malformed is ignored
  // with a warning and the last good reading kept.
  static std::shared_ptr<const CredentialStore> load(const std::string& auth_file);
  // An empty store (anonymous everywhere).
  CredentialStore() = default;
  // A store that holds only `credential`, for `registry` (`regfs login`
  // checks credentials with it before saving them).
  static std::shared_ptr<const CredentialStore> single(std::string_view registry,
                                                       Credential credential);

  // Credentials for `registry` (canonical name) and `repository` from the
  // first file that has some (first match wins). In a file: credHelpers for
  // the host, credsStore, then auths keys (host, host/namespace: longest
  // match wins, or a URL; Docker Hub is https://index.docker.io/v1/).
  std::optional<Credential> lookup(std::string_view registry, std::string_view repository) const;
  // Canonical registry names that appear in the files.
  std::vector<std::string> registries() const;
  // Namespace paths the files name for `registry` (canonical): the paths of
  // `host/namespace[/...]` auths keys, and the user name of the registry's
  // credentials where it is a valid namespace (Docker Hub, GHCR and quay
  // name a user's namespace after the account). Sorted, unique.
  std::vector<std::string> namespaces(std::string_view registry) const;
  // The first file that names credentials, empty if none.
  std::string path() const;
  // Counts the readings that changed what the files say (starts at 0).
  uint64_t generation() const;

 private:
  struct Entry {
    std::string key;  // normalised: "host" or "host/namespace"
    Credential credential;
  };
  // One credentials file.
  struct Source {
    std::string path;
    std::vector<Entry> auths;
    std::string creds_store;
    std::vector<std::pair<std::string, std::string>> cred_helpers;  // host, helper
    std::optional<Credential> lookup(const std::string& host, std::string_view repository) const;
  };
  using Sources = std::vector<Source>;
  static Sources read_sources(const std::string& auth_file);
  static std::string stamps_of(const std::string& auth_file);
  // The current sources, read again first if a file changed.
  std::shared_ptr<const Sources> sources() const;

  bool follows_files_ = false;  // made by load()
  std::string auth_file_;
  mutable std::mutex mutex_;  // guards the members below
  mutable std::shared_ptr<const Sources> sources_ = std::make_shared<Sources>();
  mutable std::string stamps_;  // of the files when last read
  mutable std::chrono::steady_clock::time_point checked_{};
  mutable uint64_t generation_ = 0;
};

// The server name docker's helpers and config files use for `registry`:
// "https://index.docker.io/v1/" for Docker Hub, else the registry itself.
std::string credential_server(std::string_view registry);
// The registry (canonical) an auths key or credHelpers key names, with the
// namespace if it has one: "https://index.docker.io/v1/" -> "docker.io".
std::string normalise_credential_key(std::string_view key);
// Runs `docker-credential-<helper> <verb>` (no shell, with a timeout) with
// `input` on its stdin. True if it exited 0; its stdout goes to `output`.
// Neither input nor output is ever logged.
bool run_credential_helper(const std::string& helper, const std::string& verb,
                           const std::string& input, std::string* output);

}  // namespace regfs::registry
