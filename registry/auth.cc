// The distribution token flow (docs/spec/auth/token.md): after a 401 with
// `Bearer realm,service`, GET realm?service=&scope= (with Basic credentials
// when there are some) or, for an identity token, POST the OAuth2
// refresh_token grant. Tokens are cached per scope until shortly before
// `expires_in` (default 60 s) runs out. Secrets stay in headers: never in a
// log line or an exception message.
#include "registry/auth.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/reference.h"
#include "registry/www_authenticate.h"

namespace regfs::registry {
namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kFreshToken = std::chrono::seconds(2);

std::string base64_encode(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string basic_value(const Credential& credential) {
  return "Basic " + base64_encode(credential.username + ":" + credential.password);
}

const Challenge* find_challenge(const std::vector<Challenge>& challenges, std::string_view scheme) {
  for (const auto& challenge : challenges) {
    if (challenge.scheme == scheme) return &challenge;
  }
  return nullptr;
}

std::string param(const Challenge& challenge, const char* name) {
  auto it = challenge.params.find(name);
  return it == challenge.params.end() ? "" : it->second;
}

}  // namespace

AuthScope AuthScope::pull(std::string_view repository) {
  return {std::string(repository), "repository:" + std::string(repository) + ":pull"};
}

AuthScope AuthScope::push(std::string_view repository, std::string_view mount_from) {
  std::string scope = "repository:" + std::string(repository) + ":pull,push";
  if (!mount_from.empty() && mount_from != repository) {
    scope += " repository:" + std::string(mount_from) + ":pull";
  }
  return {std::string(repository), scope};
}

AuthScope AuthScope::catalog() { return {"", "registry:catalog:*"}; }

Authenticator::Authenticator(HttpClient& http, AuthOptions options)
    : http_(http), options_(std::move(options)) {}

std::optional<Credential> Authenticator::credential_for(const AuthScope& scope) {
  if (!options_.credentials) return std::nullopt;
  auto credential = options_.credentials->lookup(options_.registry, scope.repository);
  if (credential && credential->username.empty() && credential->password.empty() &&
      credential->identity_token.empty()) {
    return std::nullopt;
  }
  return credential;
}

bool Authenticator::may_send_credentials(std::string_view url) const {
  if (url.starts_with("https://")) return true;
  return options_.insecure || is_loopback(url_authority(url));
}

std::optional<std::string> Authenticator::basic_header(const AuthScope& scope,
                                                       std::string_view url) {
  {
    std::lock_guard lock(mutex_);
    if (auto it = basic_.find(scope.repository); it != basic_.end()) {
      return it->second;
    }
  }
  std::optional<std::string> header;
  auto credential = credential_for(scope);
  if (credential && !credential->username.empty()) {
    if (may_send_credentials(url)) {
      header = "Authorization: " + basic_value(*credential);
    } else {
      LOG(kWarning) << "Cannot send credentials for " << options_.registry
                    << " over plain HTTP: the registry is not --insecure";
    }
  }
  std::lock_guard lock(mutex_);
  basic_[scope.repository] = header;
  return header;
}

void Authenticator::follow_credentials() {
  if (!options_.credentials) return;
  uint64_t generation = options_.credentials->generation();
  std::lock_guard lock(mutex_);
  if (generation == credentials_generation_) return;
  credentials_generation_ = generation;
  tokens_.clear();
  basic_.clear();
}

std::optional<std::string> Authenticator::authorization(const AuthScope& scope,
                                                        std::string_view url) {
  follow_credentials();
  if (auto token = cached_token(scope.scope)) return token;
  Scheme scheme;
  std::string realm, service;
  {
    std::lock_guard lock(mutex_);
    scheme = scheme_;
    realm = realm_;
    service = service_;
  }
  switch (scheme) {
    case Scheme::kBearer:
      if (scope.scope.empty()) return std::nullopt;
      return fetch_token(scope, realm, service, scope.scope, /*force=*/false);
    case Scheme::kBasic:
      return basic_header(scope, url);
    case Scheme::kNone:
      break;
  }
  return std::nullopt;
}

bool Authenticator::on_unauthorized(const AuthScope& scope, std::string_view challenge_text,
                                    std::string_view url) {
  follow_credentials();
  auto challenges = parse_www_authenticate(challenge_text);
  const Challenge* bearer = find_challenge(challenges, "bearer");
  if (bearer && !param(*bearer, "realm").empty()) {
    std::string realm = param(*bearer, "realm");
    std::string service = param(*bearer, "service");
    {
      std::lock_guard lock(mutex_);
      scheme_ = Scheme::kBearer;
      realm_ = realm;
      service_ = service;
    }
    std::string scope_text = scope.scope.empty() ? param(*bearer, "scope") : scope.scope;
    fetch_token(scope, realm, service, scope_text, /*force=*/true);
    return true;
  }
  if (find_challenge(challenges, "basic")) {
    {
      std::lock_guard lock(mutex_);
      scheme_ = Scheme::kBasic;
    }
    return basic_header(scope, url).has_value();
  }
  LOG(kDebug) << "No usable challenge from " << options_.registry;
  return false;
}

std::optional<std::string> Authenticator::cached_token(const std::string& scope,
                                                       Clock::duration max_age) {
  std::lock_guard lock(mutex_);
  auto it = tokens_.find(scope);
  auto now = Clock::now();
  if (it != tokens_.end() && now < it->second.refresh_at &&
      now - it->second.obtained_at <= max_age) {
    return it->second.header;
  }
  return std::nullopt;
}

std::string Authenticator::fetch_token(const AuthScope& scope, const std::string& realm,
                                       const std::string& service, const std::string& scope_text,
                                       bool force) {
  std::lock_guard fetch_lock(fetch_mutex_);
  // After a 401, only a token another thread fetched just now is worth a try.
  auto max_age = force ? kFreshToken : Clock::duration::max();
  if (auto token = cached_token(scope.scope, max_age)) return *token;
  return request_token(scope, realm, service, scope_text);
}

std::string Authenticator::request_token(const AuthScope& scope, const std::string& realm,
                                         const std::string& service,
                                         const std::string& scope_text) {
  std::string realm_host = url_authority(realm);
  std::string what = "get a token for " + options_.registry + " from " + realm_host;
  if (!realm.starts_with("https://") && !realm.starts_with("http://")) {
    throw Error(ErrorKind::kUnavailable, "Cannot " + what + ": realm is not an HTTP URL");
  }
  auto credential = credential_for(scope);
  if (credential && !may_send_credentials(realm)) {
    LOG(kWarning) << "Not sending credentials for " << options_.registry << " to " << realm_host
                  << " over plain HTTP";
    credential.reset();
  }

  std::string query;
  auto add = [&](std::string_view key, std::string_view value) {
    if (value.empty()) return;
    if (!query.empty()) query += '&';
    query += std::string(key) + "=" + url_encode(value);
  };
  add("service", service);
  // Several scopes (push plus a mount source) go as repeated parameters.
  for (size_t start = 0; start < scope_text.size();) {
    size_t end = scope_text.find(' ', start);
    if (end == std::string::npos) end = scope_text.size();
    add("scope", std::string_view(scope_text).substr(start, end - start));
    start = end + 1;
  }

  HttpRequest request;
  request.timeout = options_.timeout;
  request.max_body = 1 << 20;
  if (credential && !credential->identity_token.empty()) {
    request.method = "POST";
    request.url = realm;
    request.headers.push_back("Content-Type: application/x-www-form-urlencoded");
    add("grant_type", "refresh_token");
    add("client_id", "regfs");
    add("refresh_token", credential->identity_token);
    request.body = query;
  } else {
    if (credential && !credential->username.empty()) {
      add("account", credential->username);
      request.headers.push_back("Authorization: " + basic_value(*credential));
    }
    request.url = realm;
    if (!query.empty()) request.url += (realm.find('?') == std::string::npos ? "?" : "&") + query;
  }

  HttpResponse response = http_.perform(request);
  if (!response.ok()) {
    throw Error(
        response.failure == HttpFailure::kTimeout ? ErrorKind::kTimeout : ErrorKind::kUnavailable,
        "Cannot " + what + ": " + response.error);
  }
  if (response.status != 200) {
    throw error_from_response(response.status, response.body, what, options_.registry);
  }
  auto doc = nlohmann::json::parse(response.body, nullptr, /*allow_exceptions=*/false);
  std::string token;
  int64_t expires_in = 60;
  if (doc.is_object()) {
    for (const char* key : {"token", "access_token"}) {
      auto it = doc.find(key);
      if (it != doc.end() && it->is_string() && !it->get_ref<const std::string&>().empty()) {
        token = it->get<std::string>();
        break;
      }
    }
    if (auto it = doc.find("expires_in");
        it != doc.end() && it->is_number() && it->get<double>() > 0) {
      expires_in = static_cast<int64_t>(it->get<double>());
    }
  }
  if (token.empty()) {
    throw Error(ErrorKind::kUnavailable, "Cannot " + what + ": the response has no token");
  }
  auto lifetime = std::chrono::seconds(expires_in);
  auto margin = std::min<std::chrono::seconds>(std::chrono::seconds(30), lifetime / 4);
  std::string header = "Authorization: Bearer " + token;
  LOG(kDebug) << "Got a token for " << options_.registry << " scope \"" << scope_text << "\" from "
              << realm_host << ", valid " << expires_in << " s"
              << (credential ? " (with credentials)" : " (anonymous)");
  std::lock_guard lock(mutex_);
  auto now = Clock::now();
  tokens_[scope.scope] = Token{header, now, now + lifetime - margin};
  return header;
}

}  // namespace regfs::registry
