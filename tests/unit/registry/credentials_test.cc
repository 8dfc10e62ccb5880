#include "registry/credentials.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "registry/core/error.h"

namespace regfs::registry {
namespace {

namespace fs = std::filesystem;

// A temporary HOME with no credentials variables set, and a bin directory
// first on PATH for credential helpers.
class CredentialsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regfs-credentials-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ / "bin");
    for (const char* name :
         {"HOME", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG", "PATH"}) {
      const char* value = std::getenv(name);
      if (value) saved_[name] = value;
      unsetenv(name);
    }
    setenv("HOME", dir_.c_str(), 1);
    std::string path =
        (dir_ / "bin").string() + ":" + (saved_.count("PATH") ? saved_["PATH"] : "/usr/bin:/bin");
    setenv("PATH", path.c_str(), 1);
  }

  void TearDown() override {
    for (const char* name :
         {"HOME", "REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG", "PATH"}) {
      unsetenv(name);
    }
    for (const auto& [name, value] : saved_) setenv(name.c_str(), value.c_str(), 1);
    fs::remove_all(dir_);
  }

  fs::path write(const fs::path& relative, const std::string& content) {
    fs::path path = dir_ / relative;
    fs::create_directories(path.parent_path());
    std::ofstream(path) << content;
    return path;
  }

  // docker-credential-<name>: answers for `server` only, like the real ones.
  void write_helper(const std::string& name, const std::string& server, const std::string& username,
                    const std::string& secret) {
    fs::path path = write("bin/docker-credential-" + name,
                          "#!/bin/sh\n"
                          "[ \"$1\" = get ] || exit 2\n"
                          "server=$(cat)\n"
                          "echo \"$server\" >> \"" +
                              (dir_ / "helper.log").string() +
                              "\"\n"
                              "if [ \"$server\" = '" +
                              server +
                              "' ]; then\n"
                              "  printf '{\"ServerURL\":\"%s\",\"Username\":\"" +
                              username + "\",\"Secret\":\"" + secret +
                              "\"}' \"$server\"\n"
                              "else\n"
                              "  echo 'credentials not found in native keychain'\n"
                              "  exit 1\n"
                              "fi\n");
    fs::permissions(path, fs::perms::owner_all);
  }

  std::string helper_log() {
    std::ifstream in(dir_ / "helper.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  fs::path dir_;
  std::map<std::string, std::string> saved_;
};

TEST_F(CredentialsTest, NoFileMeansAnonymous) {
  auto store = CredentialStore::load("");
  EXPECT_EQ(store->path(), "");
  EXPECT_FALSE(store->lookup("docker.io", "library/nginx"));
  EXPECT_TRUE(store->registries().empty());
}

TEST_F(CredentialsTest, AuthsEntriesAndKeys) {
  // "alice:pw:with:colons" and "bob:s3cret" in base64.
  fs::path file = write("auth.json", R"({"auths":{
    "https://index.docker.io/v1/": {"auth": "YWxpY2U6cHc6d2l0aDpjb2xvbnM="},
    "Registry.Example:5000": {"username": "carol", "password": "p1"},
    "registry.example:5000/team": {"auth": "Ym9iOnMzY3JldA=="},
    "registry.example:5000/team/special": {"identitytoken": "refresh-xyz"},
    "http://old.example/v1/": {"username": "dave", "password": "p2"},
    "ghcr.io": {}
  }})");
  auto store = CredentialStore::load(file);
  EXPECT_EQ(store->path(), file);

  auto hub = store->lookup("docker.io", "library/nginx");
  ASSERT_TRUE(hub);
  EXPECT_EQ(hub->username, "alice");
  EXPECT_EQ(hub->password, "pw:with:colons");

  // Longest prefix on registry/repository wins, at component boundaries.
  EXPECT_EQ(store->lookup("registry.example:5000", "other/app")->username, "carol");
  EXPECT_EQ(store->lookup("registry.example:5000", "team/app")->username, "bob");
  EXPECT_EQ(store->lookup("registry.example:5000", "team")->username, "bob");
  EXPECT_EQ(store->lookup("registry.example:5000", "teams/app")->username, "carol");
  auto token = store->lookup("registry.example:5000", "team/special/x");
  ASSERT_TRUE(token);
  EXPECT_EQ(token->identity_token, "refresh-xyz");

  EXPECT_EQ(store->lookup("old.example", "a")->username, "dave");
  EXPECT_FALSE(store->lookup("ghcr.io", "a"));  // empty entry
  EXPECT_FALSE(store->lookup("quay.io", "a"));
  EXPECT_EQ(store->registries(), (std::vector<std::string>{"docker.io", "ghcr.io", "old.example",
                                                           "registry.example:5000"}));
}

TEST_F(CredentialsTest, HubKeysAllMeanDockerIo) {
  for (const char* key : {"index.docker.io", "docker.io", "registry-1.docker.io",
                          "https://registry-1.docker.io/v2/"}) {
    fs::path file = write(
        "c.json", std::string(R"({"auths":{")") + key + R"(":{"username":"u","password":"p"}}})");
    EXPECT_TRUE(CredentialStore::load(file)->lookup("docker.io", "library/x")) << key;
  }
}

TEST_F(CredentialsTest, FileOrder) {
  write(".dockercfg", R"({"legacy.example": {"auth": "bGVnOmFjeQ=="}})");
  EXPECT_EQ(CredentialStore::load("")->lookup("legacy.example", "a")->username, "leg");

  write(".docker/config.json", R"({"auths":{"docker.example":{"auth":"ZDpw"}}})");
  EXPECT_EQ(CredentialStore::load("")->path(), dir_ / ".docker/config.json");

  write("dc/config.json", R"({"auths":{"dc.example":{"auth":"ZDpw"}}})");
  setenv("DOCKER_CONFIG", (dir_ / "dc").c_str(), 1);
  EXPECT_EQ(CredentialStore::load("")->path(), dir_ / "dc/config.json");

  write(".config/containers/auth.json", R"({"auths":{"p.example":{"auth":"ZDpw"}}})");
  EXPECT_EQ(CredentialStore::load("")->path(), dir_ / ".config/containers/auth.json");

  // An auth.json that names no registry does not hide the files after it.
  write("run/containers/auth.json", R"({"auths":{}})");
  setenv("XDG_RUNTIME_DIR", (dir_ / "run").c_str(), 1);
  EXPECT_EQ(CredentialStore::load("")->path(), dir_ / ".config/containers/auth.json");
  write("run/containers/auth.json", R"({"auths":{"x.example":{"auth":"ZDpw"}}})");
  EXPECT_EQ(CredentialStore::load("")->path(), dir_ / "run/containers/auth.json");

  fs::path env_file = write("env.json", R"({"auths":{"e.example":{"auth":"ZDpw"}}})");
  setenv("REGISTRY_AUTH_FILE", env_file.c_str(), 1);
  EXPECT_EQ(CredentialStore::load("")->path(), env_file);

  fs::path explicit_file = write("explicit.json", R"({"auths":{"f.example":{"auth":"ZDpw"}}})");
  EXPECT_EQ(CredentialStore::load(explicit_file)->path(), explicit_file);
  // A missing --auth-file is skipped.
  EXPECT_EQ(CredentialStore::load((dir_ / "missing.json").string())->path(), env_file);
}

TEST_F(CredentialsTest, FirstFileWithARegistryWins) {
  // podman's auth.json names other registries: ~/.docker/config.json (where
  // `regfs login` writes) still answers for its own.
  write(".config/containers/auth.json",
        R"({"auths":{"p.example":{"auth":"cDpw"}, "both.example":{"auth":"Zmlyc3Q6MQ=="}}})");
  write(".docker/config.json",
        R"({"auths":{"d.example":{"auth":"ZDpw"}, "both.example":{"auth":"c2Vjb25kOjI="}}})");
  auto store = CredentialStore::load("");
  EXPECT_EQ(store->lookup("p.example", "a")->username, "p");
  EXPECT_EQ(store->lookup("d.example", "a")->username, "d");
  EXPECT_EQ(store->lookup("both.example", "a")->username, "first");
  EXPECT_EQ(store->registries(),
            (std::vector<std::string>{"both.example", "d.example", "p.example"}));
}

TEST_F(CredentialsTest, MalformedFileNamesTheFileNotTheSecret) {
  fs::path file = write("bad.json", R"({"auths":{"h.example":{"auth":"!!notbase64-SECRET"}}})");
  try {
    CredentialStore::load(file);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
    std::string message = e.what();
    EXPECT_NE(message.find(file.string()), std::string::npos);
    EXPECT_EQ(message.find("SECRET"), std::string::npos);
  }
  fs::path broken = write("broken.json", "{\"auths\": {");
  EXPECT_THROW(CredentialStore::load(broken), Error);
}

TEST_F(CredentialsTest, CredHelpersThenCredsStoreThenAuths) {
  write_helper("hubhelper", "https://index.docker.io/v1/", "hubuser", "hubpass");
  write_helper("store", "store.example", "<token>", "refresh-from-store");
  fs::path file = write("config.json", R"({
    "credHelpers": {"docker.io": "hubhelper", "nothing.example": "hubhelper"},
    "credsStore": "store",
    "auths": {"fallback.example": {"auth": "ZmI6cHc="}, "store.example": {}}
  })");
  auto store = CredentialStore::load(file);

  auto hub = store->lookup("docker.io", "library/nginx");
  ASSERT_TRUE(hub);
  EXPECT_EQ(hub->username, "hubuser");
  EXPECT_EQ(hub->password, "hubpass");

  auto token = store->lookup("store.example", "a");
  ASSERT_TRUE(token);
  EXPECT_EQ(token->identity_token, "refresh-from-store");
  EXPECT_EQ(token->username, "");

  // The store has nothing: auths are next.
  EXPECT_EQ(store->lookup("fallback.example", "a")->username, "fb");
  // A host with a credHelper uses only that helper: "not found" is anonymous.
  EXPECT_FALSE(store->lookup("nothing.example", "a"));
  EXPECT_NE(helper_log().find("https://index.docker.io/v1/"), std::string::npos);
  EXPECT_EQ(store->registries(), (std::vector<std::string>{"docker.io", "fallback.example",
                                                           "nothing.example", "store.example"}));
}

TEST_F(CredentialsTest, MissingOrBrokenHelperIsAnonymous) {
  fs::path bad =
      write("bin/docker-credential-garbage", "#!/bin/sh\ncat >/dev/null\necho not-json\n");
  fs::permissions(bad, fs::perms::owner_all);
  fs::path file = write("config.json", R"({"credHelpers":
      {"a.example": "does-not-exist", "b.example": "garbage", "c.example": "../evil"}})");
  auto store = CredentialStore::load(file);
  EXPECT_FALSE(store->lookup("a.example", "x"));
  EXPECT_FALSE(store->lookup("b.example", "x"));
  EXPECT_FALSE(store->lookup("c.example", "x"));
}

}  // namespace
}  // namespace regfs::registry
