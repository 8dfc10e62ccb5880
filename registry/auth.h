// Registry authentication: anonymous, HTTP Basic and the distribution token
// flow. The client asks for an Authorization header before each request and
// reports each 401; the Authenticator remembers the registry's challenge,
// fetches bearer tokens (cached per scope, refreshed before they expire) and
// refuses to send credentials over plain HTTP to a host that is neither
// loopback nor --insecure. Thread-safe.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "registry/credentials.h"
#include "registry/http.h"

namespace regfs::registry {

// What a request needs access to.
struct AuthScope {
  std::string repository;  // for credential lookup; empty for the registry
  // "repository:a/b:pull", "registry:catalog:*", "" ; several scopes are
  // separated by spaces and requested as repeated scope= parameters.
  std::string scope;

  static AuthScope pull(std::string_view repository);
  // Push to `repository` ("pull,push"); with `mount_from`, also pull from
  // that repository (a cross-repository blob mount needs both in one token).
  static AuthScope push(std::string_view repository, std::string_view mount_from = {});
  static AuthScope catalog();
};

struct AuthOptions {
  std::string registry;                                // canonical name, for credential lookup
  bool insecure = false;                               // credentials may go over plain HTTP
  std::chrono::milliseconds timeout{30'000};           // token requests
  std::shared_ptr<const CredentialStore> credentials;  // null: anonymous
};

class Authenticator {
 public:
  Authenticator(HttpClient& http, AuthOptions options);

  // The "Authorization: ..." header for a request to the registry at `url`
  // in `scope`, if one is known: a cached token, a new one when the
  // registry's bearer challenge is already known, or Basic credentials.
  // Throws Error if a token endpoint fails.
  std::optional<std::string> authorization(const AuthScope& scope, std::string_view url);
  // Learns from a 401 (its WWW-Authenticate value) and prepares credentials
  // for `scope`. True if repeating the request may now succeed.
  bool on_unauthorized(const AuthScope& scope, std::string_view challenge, std::string_view url);

 private:
  enum class Scheme { kNone, kBasic, kBearer };
  struct Token {
    std::string header;
    std::chrono::steady_clock::time_point obtained_at;
    std::chrono::steady_clock::time_point refresh_at;
  };

  std::optional<Credential> credential_for(const AuthScope& scope);
  // After the credentials files changed (`regfs login` while mounted), drops
  // the tokens and Basic headers made from the old ones.
  void follow_credentials();
  bool may_send_credentials(std::string_view url) const;
  std::optional<std::string> basic_header(const AuthScope& scope, std::string_view url);
  // A token for `scope`. Fetches run one at a time, so that threads whose
  // token expired together make one request; unless `force`, a token
  // another thread just fetched is taken instead.
  std::string fetch_token(const AuthScope& scope, const std::string& realm,
                          const std::string& service, const std::string& scope_text, bool force);
  // A cached token for `scope`, still fresh and at most `max_age` old.
  std::optional<std::string> cached_token(
      const std::string& scope,
      std::chrono::steady_clock::duration max_age = std::chrono::steady_clock::duration::max());
  std::string request_token(const AuthScope& scope, const std::string& realm,
                            const std::string& service, const std::string& scope_text);

  HttpClient& http_;
  AuthOptions options_;
  std::mutex fetch_mutex_;  // held over a token request; taken before mutex_
  std::mutex mutex_;        // guards the members below; never held over the network
  Scheme scheme_ = Scheme::kNone;
  std::string realm_;
  std::string service_;
  std::map<std::string, Token> tokens_;                      // by scope
  std::map<std::string, std::optional<std::string>> basic_;  // by repository
  uint64_t credentials_generation_ = 0;                      // of what tokens_, basic_ use
};

}  // namespace regfs::registry
