// Client against a real docker-registry on loopback: anonymous access,
// htpasswd Basic auth and the bearer-token flow (with a small Python token
// issuer). Skipped when docker-registry (or, for tokens, python3 with PyJWT
// and openssl) is not installed. Content is pushed with the private
// HttpClient, since Client only reads.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "registry/client.h"
#include "registry/core/digest.h"
#include "registry/core/error.h"
#include "registry/core/log.h"
#include "registry/http.h"
#include "registry/manifest.h"

extern char** environ;

namespace regfs::registry {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

bool on_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t colon = dirs.find(':', start);
    if (colon == std::string::npos) colon = dirs.size();
    if (access((dirs.substr(start, colon - start) + "/" + program).c_str(), X_OK) == 0) {
      return true;
    }
    start = colon + 1;
  }
  return false;
}

pid_t spawn(std::vector<std::string> args, const fs::path& log) {
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

int run(std::vector<std::string> args, const fs::path& log) {
  pid_t pid = spawn(std::move(args), log);
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// A process killed when the test ends.
class Process {
 public:
  Process() = default;
  explicit Process(pid_t pid) : pid_(pid) {}
  Process(Process&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}
  Process& operator=(Process&& other) noexcept {
    stop();
    pid_ = std::exchange(other.pid_, -1);
    return *this;
  }
  ~Process() { stop(); }
  bool running() const { return pid_ > 0; }

 private:
  void stop() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  pid_t pid_ = -1;
};

bool wait_until_up(const std::string& url) {
  HttpClient http(HttpOptions{});
  for (int i = 0; i < 100; ++i) {
    HttpRequest request;
    request.url = url;
    request.timeout = milliseconds(1000);
    if (http.perform(request).status != 0) return true;
    std::this_thread::sleep_for(milliseconds(100));
  }
  return false;
}

// Pushes images over plain HTTP with optional Authorization.
class Pusher {
 public:
  Pusher(std::string origin, std::string authorization = "")
      : origin_(std::move(origin)),
        authorization_(std::move(authorization)),
        http_(HttpOptions{}) {}

  HttpResponse send(const std::string& method, const std::string& url, std::string body = "",
                    std::string content_type = "") {
    HttpRequest request;
    request.method = method;
    request.url = resolve_url(origin_ + "/", url);
    request.body = std::move(body);
    request.timeout = milliseconds(10000);
    if (!authorization_.empty()) request.headers.push_back(authorization_);
    if (!content_type.empty()) {
      request.headers.push_back("Content-Type: " + content_type);
    }
    return http_.perform(request);
  }

  std::string push_blob(const std::string& repo, const std::string& data) {
    std::string digest = sha256_digest(data);
    auto start = send("POST", "/v2/" + repo + "/blobs/uploads/");
    EXPECT_EQ(start.status, 202);
    std::string location = start.headers.get("Location").value_or("");
    location += (location.find('?') == std::string::npos ? "?" : "&");
    auto done =
        send("PUT", location + "digest=" + url_encode(digest), data, "application/octet-stream");
    EXPECT_EQ(done.status, 201);
    return digest;
  }

  // An image with one config and one layer; returns the manifest digest.
  std::string push_image(const std::string& repo, const std::string& tag,
                         const std::string& layer) {
    std::string config = R"({"architecture":"amd64","os":"linux"})";
    std::string config_digest = push_blob(repo, config);
    std::string layer_digest = push_blob(repo, layer);
    std::string manifest =
        R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
        R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
        config_digest + R"(","size":)" + std::to_string(config.size()) +
        R"(},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" +
        layer_digest + R"(","size":)" + std::to_string(layer.size()) + "}]}";
    auto put = send("PUT", "/v2/" + repo + "/manifests/" + tag, manifest,
                    std::string(media_type::kOciManifest));
    EXPECT_EQ(put.status, 201);
    last_manifest_ = manifest;
    return sha256_digest(manifest);
  }
  const std::string& last_manifest() const { return last_manifest_; }

 private:
  std::string last_manifest_;
  std::string origin_;
  std::string authorization_;
  HttpClient http_;
};

// A docker-registry in a temporary directory.
class RegistryFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!on_path("docker-registry")) GTEST_SKIP() << "docker-registry missing";
    log::set_level(log::kWarning);
    char tmpl[] = "/tmp/regfs-registry-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    registry_ = Process();
    token_server_ = Process();
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Starts the registry with `auth` as the config's auth section.
  void start_registry(const std::string& auth = "") {
    port_ = free_port();
    std::ofstream(dir_ / "config.yml")
        << "version: 0.1\nlog: {level: error}\n"
        << "storage: {filesystem: {rootdirectory: " << (dir_ / "data").string()
        << "}}\nhttp: {addr: 127.0.0.1:" << port_ << "}\n"
        << auth;
    registry_ = Process(
        spawn({"docker-registry", "serve", (dir_ / "config.yml").string()}, dir_ / "registry.log"));
    ASSERT_TRUE(registry_.running());
    ASSERT_TRUE(wait_until_up(origin() + "/v2/"));
  }

  std::string name() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string origin() const { return "http://" + name(); }

  Client client(std::shared_ptr<const CredentialStore> credentials = nullptr) {
    ClientOptions options;
    options.registry = name();
    options.request_timeout = milliseconds(10000);
    options.credentials = std::move(credentials);
    return Client(options);
  }

  std::shared_ptr<const CredentialStore> credentials(const std::string& json) {
    fs::path file = dir_ / "auth.json";
    std::ofstream(file) << json;
    return CredentialStore::load(file);
  }

  fs::path dir_;
  int port_ = 0;
  Process registry_;
  Process token_server_;
};

std::string slurp(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string nlohmann_token(const std::string& body) {
  return nlohmann::json::parse(body).at("token").get<std::string>();
}

ErrorKind kind_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.kind();
  }
  ADD_FAILURE() << "no Error thrown";
  return ErrorKind::kIo;
}

std::string read_blob(Client& client, const std::string& repo, const std::string& digest,
                      uint64_t offset, uint64_t length) {
  std::string out;
  client.get_blob(repo, digest, offset, length, [&](const char* data, size_t n) {
    out.append(data, n);
    return true;
  });
  return out;
}

TEST_F(RegistryFixture, AnonymousReads) {
  start_registry();
  Pusher pusher(origin());
  std::string layer(300000, '\0');
  for (size_t i = 0; i < layer.size(); ++i) layer[i] = static_cast<char>(i * 7);
  std::string digest = pusher.push_image("ns/app", "v1", layer);
  pusher.push_image("ns/app", "v2", "other");
  Client c = client();

  c.ping();
  auto tags = c.list_tags("ns/app");
  std::sort(tags.begin(), tags.end());
  EXPECT_EQ(tags, (std::vector<std::string>{"v1", "v2"}));

  ManifestHead head = c.head_manifest("ns/app", "v1");
  EXPECT_EQ(head.digest, digest);
  EXPECT_EQ(head.media_type, media_type::kOciManifest);
  ManifestData data = c.get_manifest("ns/app", "v1");
  EXPECT_EQ(data.digest, digest);
  EXPECT_EQ(sha256_digest(data.bytes), digest);
  EXPECT_EQ(head.size, static_cast<int64_t>(data.bytes.size()));
  EXPECT_EQ(c.get_manifest("ns/app", digest).bytes, data.bytes);

  Manifest manifest = parse_manifest(data.bytes);
  std::string layer_digest = manifest.layers[0].digest;
  EXPECT_EQ(read_blob(c, "ns/app", layer_digest, 0, 0), layer);
  EXPECT_EQ(read_blob(c, "ns/app", layer_digest, 1000, 5000), layer.substr(1000, 5000));
  EXPECT_EQ(read_blob(c, "ns/app", layer_digest, 299000, 0), layer.substr(299000));
  EXPECT_EQ(read_blob(c, "ns/app", layer_digest, 299990, 100), layer.substr(299990));
  EXPECT_EQ(read_blob(c, "ns/app", layer_digest, 300000, 0), "");
  // A sink that stops early ends the transfer quietly.
  size_t seen = 0;
  c.get_blob("ns/app", layer_digest, 0, 0, [&](const char*, size_t n) {
    seen += n;
    return false;
  });
  EXPECT_GT(seen, 0u);

  EXPECT_EQ(kind_of([&] { c.list_tags("no/such"); }), ErrorKind::kNotFound);
  EXPECT_EQ(kind_of([&] { c.get_manifest("ns/app", "nope"); }), ErrorKind::kNotFound);
  EXPECT_EQ(kind_of([&] { c.head_manifest("ns/app", "nope"); }), ErrorKind::kNotFound);
  EXPECT_EQ(kind_of([&] { read_blob(c, "ns/app", sha256_digest("missing"), 0, 0); }),
            ErrorKind::kBlobUnknown);
  EXPECT_EQ(kind_of([&] { c.list_tags("Bad//Name"); }), ErrorKind::kInvalid);
}

TEST_F(RegistryFixture, CatalogFollowsLinks) {
  start_registry();
  Pusher pusher(origin());
  std::vector<std::string> expected;
  pusher.push_image("r/base", "v1", "layer");
  expected.push_back("r/base");
  std::string manifest = pusher.last_manifest();
  Manifest parsed = parse_manifest(manifest);
  for (int i = 0; i < 104; ++i) {  // > 100: two pages
    std::string repo = "r/m" + std::to_string(i);
    for (const auto& d : {parsed.config.digest, parsed.layers[0].digest}) {
      pusher.send("POST", "/v2/" + repo + "/blobs/uploads/?mount=" + d + "&from=r/base");
    }
    ASSERT_EQ(pusher
                  .send("PUT", "/v2/" + repo + "/manifests/v1", manifest,
                        std::string(media_type::kOciManifest))
                  .status,
              201);
    expected.push_back(repo);
  }
  Client c = client();
  auto names = c.catalog();
  std::sort(names.begin(), names.end());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(names, expected);
}

TEST_F(RegistryFixture, BasicAuth) {
  if (!on_path("htpasswd")) GTEST_SKIP() << "htpasswd missing";
  ASSERT_EQ(run({"htpasswd", "-Bbc", (dir_ / "htpasswd").string(), "alice", "s3cret"},
                dir_ / "htpasswd.log"),
            0);
  start_registry("auth: {htpasswd: {realm: basic, path: " + (dir_ / "htpasswd").string() + "}}\n");
  Pusher pusher(origin(), "Authorization: Basic YWxpY2U6czNjcmV0");
  pusher.push_image("secret/app", "v1", "layer");

  Client anonymous = client();
  anonymous.ping();  // a 401 is not an error for ping
  EXPECT_EQ(kind_of([&] { anonymous.list_tags("secret/app"); }), ErrorKind::kUnauthorized);
  EXPECT_EQ(kind_of([&] { anonymous.catalog(); }), ErrorKind::kUnsupported);

  Client wrong =
      client(credentials(R"({"auths":{")" + name() + R"(":{"username":"alice","password":"x"}}})"));
  EXPECT_EQ(kind_of([&] { wrong.list_tags("secret/app"); }), ErrorKind::kUnauthorized);

  Client alice = client(
      credentials(R"({"auths":{"http://)" + name() + R"(/v1/":{"auth":"YWxpY2U6czNjcmV0"}}})"));
  EXPECT_EQ(alice.list_tags("secret/app"), std::vector<std::string>{"v1"});
  EXPECT_EQ(alice.catalog(), std::vector<std::string>{"secret/app"});
  auto manifest = parse_manifest(alice.get_manifest("secret/app", "v1").bytes);
  EXPECT_EQ(read_blob(alice, "secret/app", manifest.layers[0].digest, 0, 0), "layer");
}

// A token issuer: anonymous users may pull "public/*", alice everything.
constexpr const char* kTokenServer = R"PY(
import base64, json, sys, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
d = sys.argv[2]
key = open(d + '/token.key', 'rb').read()
cert = x509.load_pem_x509_certificate(open(d + '/token.pem', 'rb').read())
x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
ttl = int(sys.argv[3])
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        auth = self.headers.get('Authorization', '')
        user = None
        if auth:
            if auth != 'Basic ' + base64.b64encode(b'alice:s3cret').decode():
                self.send_response(401); self.send_header('Content-Length', '0'); self.end_headers(); return
            user = 'alice'
        access = []
        for s in q.get('scope', []):
            typ, rest = s.split(':', 1)
            name, actions = rest.rsplit(':', 1)
            if user or name.startswith('public/'):
                access.append({'type': typ, 'name': name, 'actions': actions.split(',')})
        now = int(time.time())
        claims = {'iss': 'regfs-test', 'sub': user or '', 'aud': q.get('service', [''])[0],
                  'exp': now + ttl, 'nbf': now - 5, 'iat': now, 'jti': str(uuid.uuid4()), 'access': access}
        token = jwt.encode(claims, key, algorithm='RS256', headers={'x5c': [x5c]})
        body = json.dumps({'token': token, 'expires_in': ttl}).encode()
        with open(d + '/tokens.log', 'a') as log: log.write((user or 'anonymous') + '\n')
        self.send_response(200); self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
)PY";

TEST_F(RegistryFixture, BearerTokens) {
  if (!on_path("openssl") ||
      run({"/usr/bin/python3", "-c", "import jwt, cryptography"}, dir_ / "python.log") != 0) {
    GTEST_SKIP() << "openssl or python3 with PyJWT missing";
  }
  ASSERT_EQ(run({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                 (dir_ / "token.key").string(), "-out", (dir_ / "token.pem").string(), "-days", "1",
                 "-subj", "/CN=regfs-test"},
                dir_ / "openssl.log"),
            0);
  std::ofstream(dir_ / "token_issuer.py") << kTokenServer;
  int token_port = free_port();
  token_server_ = Process(spawn({"/usr/bin/python3", (dir_ / "token_issuer.py").string(),
                                 std::to_string(token_port), dir_.string(), "3"},
                                dir_ / "token.log"));
  std::string realm = "http://127.0.0.1:" + std::to_string(token_port) + "/token";
  ASSERT_TRUE(wait_until_up(realm)) << slurp(dir_ / "token.log");
  start_registry("auth: {token: {realm: \"" + realm +
                 "\", service: regfs-test-registry, issuer: regfs-test, "
                 "rootcertbundle: " +
                 (dir_ / "token.pem").string() + "}}\n");
  Client alice =
      client(credentials(R"({"auths":{")" + name() + R"(":{"auth":"YWxpY2U6czNjcmV0"}}})"));
  alice.ping();
  EXPECT_THROW(alice.list_tags("public/app"), Error);  // no such repository
  // Push with a token obtained like the Client does.
  HttpClient http(HttpOptions{});
  HttpRequest token_request;
  token_request.url =
      realm + "?service=regfs-test-registry&scope=" + url_encode("repository:public/app:pull,push");
  token_request.headers.push_back("Authorization: Basic YWxpY2U6czNjcmV0");
  auto token_response = http.perform(token_request);
  ASSERT_EQ(token_response.status, 200);
  std::string token = nlohmann_token(token_response.body);
  Pusher pusher(origin(), "Authorization: Bearer " + token);
  pusher.push_image("public/app", "v1", "public layer");

  Client anonymous = client();
  EXPECT_EQ(anonymous.list_tags("public/app"), std::vector<std::string>{"v1"});
  EXPECT_EQ(kind_of([&] { anonymous.catalog(); }), ErrorKind::kUnsupported);
  EXPECT_EQ(alice.list_tags("public/app"), std::vector<std::string>{"v1"});
  EXPECT_EQ(alice.catalog(), std::vector<std::string>{"public/app"});
  // Tokens live 3 s: a later request gets a new one first.
  auto count_alice = [&] {
    std::string log = slurp(dir_ / "tokens.log");
    size_t count = 0;
    for (size_t at = log.find("alice"); at != std::string::npos; at = log.find("alice", at + 1)) {
      ++count;
    }
    return count;
  };
  size_t before = count_alice();
  EXPECT_EQ(alice.list_tags("public/app"), std::vector<std::string>{"v1"});
  EXPECT_EQ(count_alice(), before);  // cached
  std::this_thread::sleep_for(milliseconds(3200));
  EXPECT_EQ(alice.list_tags("public/app"), std::vector<std::string>{"v1"});
  EXPECT_EQ(count_alice(), before + 1);
  auto manifest = parse_manifest(alice.get_manifest("public/app", "v1").bytes);
  EXPECT_EQ(read_blob(alice, "public/app", manifest.layers[0].digest, 7, 0), "layer");
}

// The push API: HEAD, monolithic and chunked uploads (read by offset from a
// source), cross-repository mounts, manifest PUT, a refused DELETE.
TEST_F(RegistryFixture, PushBlobsAndManifests) {
  start_registry();
  ClientOptions options;
  options.registry = name();
  options.request_timeout = milliseconds(10000);
  options.monolithic_upload_limit = 1000;
  options.upload_chunk_size = 4096;
  Client client(options);
  std::string small = "config bytes";
  std::string large(10000, 'x');
  for (size_t i = 0; i < large.size(); ++i) large[i] = static_cast<char>('a' + i % 26);
  auto source_of = [](const std::string& data) {
    return [&data](uint64_t offset, char* buffer, size_t max) {
      size_t n = std::min<size_t>(max, data.size() - offset);
      std::memcpy(buffer, data.data() + offset, n);
      return n;
    };
  };
  std::string small_digest = sha256_digest(small);
  std::string large_digest = sha256_digest(large);
  EXPECT_FALSE(client.blob_exists("push/a", small_digest));
  client.upload_blob("push/a", small_digest, small.size(), source_of(small));
  client.upload_blob("push/a", large_digest, large.size(), source_of(large));
  EXPECT_TRUE(client.blob_exists("push/a", small_digest));
  EXPECT_EQ(read_blob(client, "push/a", large_digest, 0, 0), large);
  // A wrong digest is refused by the registry.
  EXPECT_EQ(kind_of([&] {
              client.upload_blob("push/a", sha256_digest("other"), small.size(), source_of(small));
            }),
            ErrorKind::kIntegrity);
  // A source that fails ends the upload with an error.
  EXPECT_EQ(kind_of([&] {
              client.upload_blob("push/a", small_digest, small.size(),
                                 [](uint64_t, char*, size_t) -> size_t {
                                   throw Error(ErrorKind::kIo, "disk gone");
                                 });
            }),
            ErrorKind::kIo);
  EXPECT_TRUE(client.mount_blob("push/b", large_digest, "push/a"));
  EXPECT_TRUE(client.blob_exists("push/b", large_digest));
  EXPECT_FALSE(client.mount_blob("push/b", sha256_digest("nowhere"), "push/a"));

  std::string manifest =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
      R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
      small_digest + R"(","size":)" + std::to_string(small.size()) +
      R"(},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" +
      large_digest + R"(","size":)" + std::to_string(large.size()) + "}]}";
  std::string digest = client.put_manifest("push/a", "v1", manifest, media_type::kOciManifest);
  EXPECT_EQ(digest, sha256_digest(manifest));
  EXPECT_EQ(client.head_manifest("push/a", "v1").digest, digest);
  // push/b lacks the config blob: the registry refuses the manifest.
  EXPECT_EQ(
      kind_of([&] { client.put_manifest("push/b", "v1", manifest, media_type::kOciManifest); }),
      ErrorKind::kBlobUnknown);
  // Deletes are disabled in this registry: it refuses (405 UNSUPPORTED).
  EXPECT_EQ(kind_of([&] { client.delete_manifest("push/a", digest); }), ErrorKind::kUnsupported);
}

}  // namespace
}  // namespace regfs::registry
