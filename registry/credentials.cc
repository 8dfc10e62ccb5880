// Credentials files (docker's config.json, containers' auth.json, the legacy
// ~/.dockercfg) and docker credential helpers. Every file in SPEC §6 order
// that exists is read; a lookup takes the first file that has credentials
// for the registry, as podman does (so an auth.json for other registries does
// not hide what `regfs login` wrote to ~/.docker/config.json). Helpers run
// without a shell, with a timeout, and their output never reaches a log or an
// exception.
#include "registry/credentials.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/reference.h"

extern char** environ;

namespace regfs::registry {
namespace {

using nlohmann::json;

constexpr std::string_view kDockerHubServer = "https://index.docker.io/v1/";
constexpr auto kHelperTimeout = std::chrono::seconds(20);

class UniqueFd {
 public:
  explicit UniqueFd(int fd = -1) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

std::optional<std::string> base64_decode(std::string_view in) {
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : in) {
    int value;
    if (c >= 'A' && c <= 'Z') {
      value = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      value = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      value = c - '0' + 52;
    } else if (c == '+' || c == '-') {
      value = 62;
    } else if (c == '/' || c == '_') {
      value = 63;
    } else if (c == '=' || c == '\n' || c == '\r' || c == ' ') {
      continue;
    } else {
      return std::nullopt;
    }
    buffer = (buffer << 6) | value;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

// "https://index.docker.io/v1/" -> "docker.io"; "Host:5000/ns/" ->
// "host:5000/ns". A URL keeps only its host, as docker does.
std::string normalise_key(std::string_view key) {
  bool url = false;
  for (std::string_view scheme : {"https://", "http://"}) {
    if (key.starts_with(scheme)) {
      key.remove_prefix(scheme.size());
      url = true;
    }
  }
  while (key.ends_with('/')) key.remove_suffix(1);
  size_t slash = key.find('/');
  std::string host = canonical_registry(key.substr(0, slash));
  if (url || slash == std::string_view::npos) return host;
  std::string_view path = key.substr(slash);
  if (path == "/v1" || path == "/v2") return host;
  return host + std::string(path);
}

std::string server_for(std::string_view registry) {
  return registry == kDockerHub ? std::string(kDockerHubServer) : std::string(registry);
}

bool valid_helper_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '-' || c == '_' || c == '.';
  });
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(ErrorKind::kInvalid,
                "Cannot read credentials file " + path + ": " + std::strerror(errno));
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

bool is_file(const std::string& path) {
  struct stat st;
  return !path.empty() && ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

std::vector<std::string> candidate_files(const std::string& auth_file) {
  std::vector<std::string> files;
  if (!auth_file.empty()) files.push_back(auth_file);
  if (auto f = env("REGISTRY_AUTH_FILE"); !f.empty()) files.push_back(f);
  if (auto dir = env("XDG_RUNTIME_DIR"); !dir.empty()) {
    files.push_back(dir + "/containers/auth.json");
  }
  std::string home = env("HOME");
  if (!home.empty()) files.push_back(home + "/.config/containers/auth.json");
  if (auto dir = env("DOCKER_CONFIG"); !dir.empty()) {
    files.push_back(dir + "/config.json");
  } else if (!home.empty()) {
    files.push_back(home + "/.docker/config.json");
  }
  if (!home.empty()) files.push_back(home + "/.dockercfg");
  return files;
}

// Writes `input` to a helper's stdin; a helper that exits early must not kill
// us with SIGPIPE.
void write_input(int fd, const std::string& input) {
  sigset_t pipe_set, old_set;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
  ssize_t written = ::write(fd, input.data(), input.size());
  if (written < 0 && errno == EPIPE) {
    timespec zero{0, 0};
    sigtimedwait(&pipe_set, nullptr, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
}

// Reads a helper's stdout until EOF. False if the deadline passed first.
bool read_output(int fd, std::string* output) {
  auto deadline = std::chrono::steady_clock::now() + kHelperTimeout;
  char buffer[4096];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd pfd{fd, POLLIN, 0};
    int ready = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) return false;
    if (ready < 0) return true;
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || output->size() > (1 << 20)) return true;
    output->append(buffer, n);
  }
}

// Parses a helper's `get` answer. nullopt: unusable (logged, not shown).
std::optional<Credential> parse_helper_output(const std::string& output, const std::string& server,
                                              const std::string& program) {
  json doc = json::parse(output, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object() || !doc.contains("Secret") || !doc["Secret"].is_string()) {
    LOG(kWarning) << "Cannot get credentials for " << server << " from " << program
                  << ": unexpected output";
    return std::nullopt;
  }
  Credential credential;
  std::string username;
  if (auto it = doc.find("Username"); it != doc.end() && it->is_string()) {
    username = it->get<std::string>();
  }
  if (username == "<token>") {
    credential.identity_token = doc["Secret"].get<std::string>();
  } else {
    credential.username = username;
    credential.password = doc["Secret"].get<std::string>();
  }
  return credential;
}

// Runs `docker-credential-<helper> get` for `server`. nullopt: anonymous.
std::optional<Credential> run_helper(const std::string& helper, const std::string& server) {
  std::string output;
  if (!run_credential_helper(helper, "get", server, &output)) {
    if (valid_helper_name(helper) && output.find("credentials not found") == std::string::npos) {
      LOG(kWarning) << "Cannot get credentials for " << server << " from docker-credential-"
                    << helper << ": it failed";
    }
    return std::nullopt;
  }
  return parse_helper_output(output, server, "docker-credential-" + helper);
}

// One auths entry. Throws with the file and key (never the value).
Credential parse_entry(const json& value, const std::string& path, const std::string& key) {
  auto bad = [&](std::string_view why) {
    return Error(ErrorKind::kInvalid, "Cannot read credentials file " + path + ": entry \"" + key +
                                          "\" " + std::string(why));
  };
  if (!value.is_object()) throw bad("is not an object");
  auto field = [&](const char* name) {
    auto it = value.find(name);
    if (it == value.end() || it->is_null()) return std::string();
    if (!it->is_string()) throw bad(std::string("has a non-string ") + name);
    return it->get<std::string>();
  };
  Credential credential;
  credential.username = field("username");
  credential.password = field("password");
  credential.identity_token = field("identitytoken");
  std::string auth = field("auth");
  if (!auth.empty()) {
    auto decoded = base64_decode(auth);
    size_t colon = decoded ? decoded->find(':') : std::string::npos;
    if (colon == std::string::npos) throw bad("has a malformed \"auth\"");
    credential.username = decoded->substr(0, colon);
    credential.password = decoded->substr(colon + 1);
  }
  return credential;
}

bool is_empty(const Credential& c) {
  return c.username.empty() && c.password.empty() && c.identity_token.empty();
}

// True if `key` ("host" or "host/ns") covers registry/repository.
bool key_matches(const std::string& key, const std::string& target) {
  return target == key ||
         (target.size() > key.size() && target.starts_with(key) && target[key.size()] == '/');
}

}  // namespace

bool run_credential_helper(const std::string& helper, const std::string& verb,
                           const std::string& input, std::string* output) {
  std::string program = "docker-credential-" + helper;
  if (!valid_helper_name(helper)) {
    LOG(kWarning) << "Cannot use credential helper \"" << helper << "\": invalid name";
    return false;
  }
  int to_child[2], from_child[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0) return false;
  UniqueFd child_in(to_child[0]), parent_out(to_child[1]);
  if (::pipe2(from_child, O_CLOEXEC) != 0) return false;
  UniqueFd parent_in(from_child[0]), child_out(from_child[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, child_in.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, child_out.get(), 1);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t no_signals, default_signals;
  sigemptyset(&no_signals);
  sigemptyset(&default_signals);
  sigaddset(&default_signals, SIGPIPE);
  posix_spawnattr_setsigmask(&attr, &no_signals);
  posix_spawnattr_setsigdefault(&attr, &default_signals);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::string verb_arg = verb;
  char* argv[] = {program.data(), verb_arg.data(), nullptr};
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, program.c_str(), &actions, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    LOG(kWarning) << "Cannot run " << program << ": " << std::strerror(rc);
    return false;
  }
  child_in.reset();
  child_out.reset();

  write_input(parent_out.get(), input);
  parent_out.reset();
  bool finished = read_output(parent_in.get(), output);
  if (!finished) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!finished) {
    LOG(kWarning) << "Cannot run " << program << " " << verb << ": timed out";
    return false;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// What identifies the version of each candidate file (or its absence).
std::string CredentialStore::stamps_of(const std::string& auth_file) {
  std::string stamps;
  for (const auto& path : candidate_files(auth_file)) {
    struct stat st {};
    stamps += path;
    if (::stat(path.c_str(), &st) == 0) {
      for (auto n :
           {static_cast<int64_t>(st.st_mtim.tv_sec), static_cast<int64_t>(st.st_mtim.tv_nsec),
            static_cast<int64_t>(st.st_size), static_cast<int64_t>(st.st_ino)}) {
        stamps += " " + std::to_string(n);
      }
    }
    stamps += "\n";
  }
  return stamps;
}

CredentialStore::Sources CredentialStore::read_sources(const std::string& auth_file) {
  Sources sources;
  for (const auto& path : candidate_files(auth_file)) {
    if (!is_file(path)) {
      if (path == auth_file) {
        LOG(kWarning) << "Cannot read credentials file " << path << ": no such file";
      }
      continue;
    }
    json doc = json::parse(read_file(path), nullptr, /*allow_exceptions=*/false);
    if (!doc.is_object()) {
      throw Error(ErrorKind::kInvalid,
                  "Cannot read credentials file " + path + ": not a JSON object");
    }
    Source source;
    source.path = path;
    const json* auths = &doc;  // ~/.dockercfg is the auths object itself
    if (!path.ends_with("/.dockercfg")) {
      auto it = doc.find("auths");
      auths = (it != doc.end() && it->is_object()) ? &*it : nullptr;
      if (auto cs = doc.find("credsStore"); cs != doc.end() && cs->is_string()) {
        source.creds_store = cs->get<std::string>();
      }
      if (auto ch = doc.find("credHelpers"); ch != doc.end() && ch->is_object()) {
        for (const auto& [host, helper] : ch->items()) {
          if (helper.is_string()) {
            source.cred_helpers.emplace_back(normalise_key(host), helper.get<std::string>());
          }
        }
      }
    }
    if (auths) {
      for (const auto& [key, value] : auths->items()) {
        source.auths.push_back({normalise_key(key), parse_entry(value, path, key)});
      }
    }
    if (source.auths.empty() && source.cred_helpers.empty() && source.creds_store.empty()) {
      LOG(kDebug) << "Credentials file " << path << " names no registry";
      continue;
    }
    LOG(kDebug) << "Using credentials file " << path;
    sources.push_back(std::move(source));
  }
  return sources;
}

std::shared_ptr<const CredentialStore> CredentialStore::load(const std::string& auth_file) {
  auto store = std::make_shared<CredentialStore>();
  store->follows_files_ = true;
  store->auth_file_ = auth_file;
  store->stamps_ = stamps_of(auth_file);
  store->sources_ = std::make_shared<Sources>(read_sources(auth_file));
  store->checked_ = std::chrono::steady_clock::now();
  return store;
}

std::shared_ptr<const CredentialStore::Sources> CredentialStore::sources() const {
  constexpr auto kCheckEvery = std::chrono::seconds(1);
  std::lock_guard lock(mutex_);
  auto now = std::chrono::steady_clock::now();
  if (!follows_files_ || now - checked_ < kCheckEvery) return sources_;
  checked_ = now;
  std::string stamps = stamps_of(auth_file_);
  if (stamps == stamps_) return sources_;
  try {
    sources_ = std::make_shared<Sources>(read_sources(auth_file_));
    stamps_ = std::move(stamps);
    ++generation_;
    LOG(kInfo) << "Credentials files changed; read them again";
  } catch (const Error& e) {
    stamps_ = std::move(stamps);  // warn once per change, not at every lookup
    LOG(kWarning) << e.what() << "; keeping the credentials read before";
  }
  return sources_;
}

uint64_t CredentialStore::generation() const {
  sources();
  std::lock_guard lock(mutex_);
  return generation_;
}

std::shared_ptr<const CredentialStore> CredentialStore::single(std::string_view registry,
                                                               Credential credential) {
  auto store = std::make_shared<CredentialStore>();
  Source source;
  source.auths.push_back({canonical_registry(registry), std::move(credential)});
  store->sources_ = std::make_shared<Sources>(Sources{std::move(source)});
  return store;
}

std::string CredentialStore::path() const {
  auto sources = this->sources();
  return sources->empty() ? std::string() : sources->front().path;
}

std::optional<Credential> CredentialStore::lookup(std::string_view registry,
                                                  std::string_view repository) const {
  std::string host = canonical_registry(registry);
  for (const auto& source : *sources()) {
    if (auto found = source.lookup(host, repository)) return found;
  }
  return std::nullopt;
}

std::optional<Credential> CredentialStore::Source::lookup(const std::string& host,
                                                          std::string_view repository) const {
  for (const auto& [helper_host, helper] : cred_helpers) {
    if (helper_host == host) return run_helper(helper, server_for(host));
  }
  if (!creds_store.empty()) {
    if (auto found = run_helper(creds_store, server_for(host))) return found;
  }
  std::string target = host;
  if (!repository.empty()) target += "/" + std::string(repository);
  const Entry* best = nullptr;
  for (const auto& entry : auths) {
    if (is_empty(entry.credential) || !key_matches(entry.key, target)) continue;
    if (!best || entry.key.size() > best->key.size()) best = &entry;
  }
  if (!best) return std::nullopt;
  return best->credential;
}

std::vector<std::string> CredentialStore::registries() const {
  std::vector<std::string> out;
  auto add = [&](const std::string& key) {
    std::string host = key.substr(0, key.find('/'));
    if (!host.empty() && std::find(out.begin(), out.end(), host) == out.end()) {
      out.push_back(host);
    }
  };
  for (const auto& source : *sources()) {
    for (const auto& entry : source.auths) add(entry.key);
    for (const auto& helper : source.cred_helpers) add(helper.first);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> CredentialStore::namespaces(std::string_view registry) const {
  std::string host = canonical_registry(registry);
  std::set<std::string> out;
  for (const auto& source : *sources()) {
    for (const auto& entry : source.auths) {
      if (entry.key.size() > host.size() + 1 && entry.key.starts_with(host + "/")) {
        std::string path = entry.key.substr(host.size() + 1);
        while (!path.empty() && path.back() == '/') path.pop_back();
        if (is_valid_repository(path)) out.insert(path);
      }
    }
  }
  if (auto credential = lookup(host, ""); credential && credential->username != "<token>") {
    std::string user = credential->username;
    std::transform(user.begin(), user.end(), user.begin(),
                   [](unsigned char c) { return std::tolower(c); });
    if (is_valid_path_component(user)) out.insert(user);
  }
  return {out.begin(), out.end()};
}

std::string credential_server(std::string_view registry) {
  return server_for(canonical_registry(registry));
}

std::string normalise_credential_key(std::string_view key) { return normalise_key(key); }

}  // namespace regfs::registry
