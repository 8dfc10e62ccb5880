// See login.h. The config file is read as ordered JSON so that what docker
// or other tools keep in it (credsStore, proxies, plugins...) survives; it is
// rewritten through a temporary file in the same directory, fsynced, then
// renamed over the old one, so a crash leaves the old file or the new one.
#include "registry/login.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/reference.h"
#include "registry/transport.h"

namespace regfs::registry {
namespace {

using Json = nlohmann::ordered_json;

std::string base64_encode(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (unsigned char c : in) {
    buffer = (buffer << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(buffer >> bits) & 63]);
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(buffer << (6 - bits)) & 63]);
  while (out.size() % 4 != 0) out.push_back('=');
  return out;
}

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

Error file_error(const std::string& path, const std::string& why) {
  return Error(ErrorKind::kIo, "Cannot write credentials file " + path + ": " + why);
}

// The file's JSON object; an empty object if the file does not exist.
Json read_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return Json::object();
    throw Error(ErrorKind::kIo,
                "Cannot read credentials file " + path + ": " + std::strerror(errno));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().find_first_not_of(" \t\r\n") == std::string::npos) {
    return Json::object();
  }
  Json doc = Json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) {
    throw Error(ErrorKind::kInvalid,
                "Cannot read credentials file " + path + ": not a JSON object");
  }
  return doc;
}

void write_all(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw file_error(path, std::strerror(errno));
    done += static_cast<size_t>(n);
  }
}

// Replaces `path` (a symlink's target, if it is one) with `doc`, mode 0600.
void write_config(const std::string& path, const Json& doc) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path target = path;
  if (fs::is_symlink(target, ec)) {
    target = fs::canonical(target, ec);
    if (ec) throw file_error(path, ec.message());
  }
  fs::path dir = target.parent_path().empty() ? "." : target.parent_path();
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) throw file_error(path, ec.message());
    ::chmod(dir.c_str(), 0700);
  }
  std::string temp = (dir / ("." + target.filename().string() + ".XXXXXX")).string();
  int fd = ::mkostemp(temp.data(), O_CLOEXEC);
  if (fd < 0) throw file_error(path, std::strerror(errno));
  try {
    if (::fchmod(fd, 0600) != 0) throw file_error(path, std::strerror(errno));
    write_all(fd, doc.dump(1, '\t') + "\n", path);
    if (::fsync(fd) != 0) throw file_error(path, std::strerror(errno));
    if (::close(fd) != 0) {
      fd = -1;
      throw file_error(path, std::strerror(errno));
    }
    fd = -1;
    if (::rename(temp.c_str(), target.c_str()) != 0) {
      throw file_error(path, std::strerror(errno));
    }
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(temp.c_str());
    throw;
  }
}

// The helper the file names for `host` (credHelpers, then credsStore).
std::string helper_for(const Json& doc, const std::string& host) {
  if (auto helpers = doc.find("credHelpers"); helpers != doc.end() && helpers->is_object()) {
    for (const auto& [key, helper] : helpers->items()) {
      if (helper.is_string() && normalise_credential_key(key) == host) {
        return helper.get<std::string>();
      }
    }
  }
  if (auto store = doc.find("credsStore"); store != doc.end() && store->is_string()) {
    return store->get<std::string>();
  }
  return "";
}

// Removes every auths key naming exactly `host`; true if there was one.
bool erase_auths(Json& doc, const std::string& host) {
  auto auths = doc.find("auths");
  if (auths == doc.end() || !auths->is_object()) return false;
  std::vector<std::string> keys;
  for (const auto& [key, value] : auths->items()) {
    if (normalise_credential_key(key) == host) keys.push_back(key);
  }
  for (const auto& key : keys) auths->erase(key);
  return !keys.empty();
}

Json& auths_of(Json& doc) {
  if (!doc.contains("auths") || !doc["auths"].is_object()) doc["auths"] = Json::object();
  return doc["auths"];
}

}  // namespace

std::string login_file(const std::string& auth_file) {
  if (!auth_file.empty()) return auth_file;
  if (auto dir = env("DOCKER_CONFIG"); !dir.empty()) return dir + "/config.json";
  std::string home = env("HOME");
  if (home.empty()) {
    throw Error(ErrorKind::kInvalid, "Cannot find ~/.docker/config.json: HOME is not set");
  }
  return home + "/.docker/config.json";
}

void verify_login(ClientOptions options, const Credential& credential) {
  options.credentials = CredentialStore::single(options.registry, credential);
  Transport transport(options);
  HttpRequest request;
  request.timeout = options.request_timeout;
  std::string what = "log in to " + options.registry;
  HttpResponse response;
  try {
    response = transport.send(what, AuthScope{}, "/v2/", request);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kUnauthorized) throw;
    throw Error(ErrorKind::kUnauthorized,
                "Cannot " + what + ": the registry refused the username or password",
                e.http_status(), e.oci_code());
  }
  if (response.status == 401 || response.status == 403) {
    throw Error(ErrorKind::kUnauthorized,
                "Cannot " + what + ": the registry refused the username or password",
                response.status);
  }
  if (response.status != 200) {
    throw error_from_response(response.status, response.body, what, options.registry);
  }
}

std::string save_login(const std::string& path, std::string_view registry,
                       const Credential& credential) {
  std::string host = canonical_registry(registry);
  std::string server = credential_server(host);
  Json doc = read_config(path);
  std::string helper = helper_for(doc, host);
  erase_auths(doc, host);
  Json entry = Json::object();
  std::string where = path;
  if (!helper.empty()) {
    Json input = {{"ServerURL", server},
                  {"Username", credential.identity_token.empty() ? credential.username
                                                                 : std::string("<token>")},
                  {"Secret", credential.identity_token.empty() ? credential.password
                                                               : credential.identity_token}};
    std::string output;
    if (!run_credential_helper(helper, "store", input.dump(), &output)) {
      throw Error(ErrorKind::kIo, "Cannot store credentials for " + host +
                                      " with docker-credential-" + helper + ": it failed");
    }
    where = "docker-credential-" + helper;
  } else if (!credential.identity_token.empty()) {
    entry["identitytoken"] = credential.identity_token;
  } else {
    entry["auth"] = base64_encode(credential.username + ":" + credential.password);
  }
  auths_of(doc)[server] = entry;  // with a helper: an empty entry, as docker
  write_config(path, doc);
  LOG(kDebug) << "Saved credentials for " << host << " in " << where;
  return where;
}

bool remove_login(const std::string& path, std::string_view registry) {
  std::string host = canonical_registry(registry);
  Json doc = read_config(path);
  bool removed = false;
  if (std::string helper = helper_for(doc, host); !helper.empty()) {
    std::string output;
    removed = run_credential_helper(helper, "erase", credential_server(host), &output);
  }
  if (erase_auths(doc, host)) {
    write_config(path, doc);
    removed = true;
  }
  return removed;
}

}  // namespace regfs::registry
