// `regfs login` and `regfs logout` without the terminal: checking credentials
// against a registry, and saving them where docker keeps them (its
// config.json format: base64 "auth" under "auths", or the credential helper
// the file names for the registry, as `docker login` does).
#pragma once

#include <string>
#include <string_view>

#include "registry/client.h"
#include "registry/credentials.h"

namespace regfs::registry {

// The file `regfs login` writes: `auth_file` if not empty, else
// $DOCKER_CONFIG/config.json, else ~/.docker/config.json.
std::string login_file(const std::string& auth_file);

// Checks `credential` against the registry of `options` (GET /v2/ through the
// auth flow, so a token endpoint sees them too). Throws Error(kUnauthorized)
// if the registry refuses them, Error(kUnavailable/kTimeout) if unreachable.
void verify_login(ClientOptions options, const Credential& credential);

// Saves `credential` for `registry` in the config file at `path`: through
// the helper its credHelpers (for the registry) or credsStore names, else
// in "auths". Other keys are kept; the file is replaced atomically, mode
// 0600. Returns where the secret went: `path` or "docker-credential-NAME".
// Throws Error(kIo) naming the file or helper, never the secret.
std::string save_login(const std::string& path, std::string_view registry,
                       const Credential& credential);

// Removes what `save_login` saved for `registry` (every auths key that
// names it, and the helper's copy). False if there was nothing to remove.
bool remove_login(const std::string& path, std::string_view registry);

}  // namespace regfs::registry
