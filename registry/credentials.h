// Registry credentials from the files docker and podman use (SPEC §6).
#pragma once

#include <memory>
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
  // Reads the first file that exists, in SPEC §6 order: `auth_file` (if not
  // empty), $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
  // ~/.config/containers/auth.json, $DOCKER_CONFIG/config.json or
  // ~/.docker/config.json, ~/.dockercfg. A missing file means anonymous; a
  // malformed one throws Error(kInvalid) naming the file (never its content).
  static std::shared_ptr<const CredentialStore> load(const std::string& auth_file);
  // An empty store (anonymous everywhere).
  CredentialStore() = default;

  // Credentials for `registry` (canonical name) and `repository`: credHelpers
  // for the host, credsStore, then auths keys (host, host/namespace: longest
  // match wins, or a URL; Docker Hub is https://index.docker.io/v1/).
  std::optional<Credential> lookup(std::string_view registry,
                                   std::string_view repository) const;
  // Canonical registry names that appear in the file.
  std::vector<std::string> registries() const;
  // The file these came from, empty if none.
  const std::string& path() const { return path_; }

 private:
  struct Entry {
    std::string key;  // normalised: "host" or "host/namespace"
    Credential credential;
  };
  std::string path_;
  std::vector<Entry> auths_;
  std::string creds_store_;
  std::vector<std::pair<std::string, std::string>> cred_helpers_;  // host, helper
};

}  // namespace regfs::registry
