#include "registry/login.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "registry/credentials.h"

namespace regfs::registry {
namespace {

namespace fs = std::filesystem;

class LoginFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regfs-login-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    fs::create_directories(dir_ / "bin");
    old_path_ = std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin";
    setenv("PATH", ((dir_ / "bin").string() + ":" + old_path_).c_str(), 1);
  }
  void TearDown() override {
    setenv("PATH", old_path_.c_str(), 1);
    fs::remove_all(dir_);
  }
  nlohmann::json read(const fs::path& path) {
    std::ifstream in(path);
    return nlohmann::json::parse(in);
  }
  fs::path dir_;
  std::string old_path_;
};

TEST_F(LoginFileTest, DefaultFileIsDockers) {
  std::string home = std::getenv("HOME") ? std::getenv("HOME") : "";
  std::string docker = std::getenv("DOCKER_CONFIG") ? std::getenv("DOCKER_CONFIG") : "";
  setenv("HOME", "/home/u", 1);
  unsetenv("DOCKER_CONFIG");
  EXPECT_EQ(login_file(""), "/home/u/.docker/config.json");
  setenv("DOCKER_CONFIG", "/etc/dc", 1);
  EXPECT_EQ(login_file(""), "/etc/dc/config.json");
  EXPECT_EQ(login_file("/x/auth.json"), "/x/auth.json");
  setenv("HOME", home.c_str(), 1);
  if (docker.empty()) {
    unsetenv("DOCKER_CONFIG");
  } else {
    setenv("DOCKER_CONFIG", docker.c_str(), 1);
  }
}

TEST_F(LoginFileTest, SaveKeepsOtherKeysAndIsPrivate) {
  fs::path file = dir_ / "new/config.json";
  EXPECT_EQ(save_login(file, "Localhost:5000", {"alice", "pw:1", ""}), file.string());
  struct stat st;
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(read(file)["auths"]["localhost:5000"]["auth"], "YWxpY2U6cHc6MQ==");

  std::ofstream(file) << R"({"psFormat": "table", "auths": {
      "http://localhost:5000/": {"auth": "b2xkOm9sZA=="},
      "other.io": {"auth": "eDp5"}}, "proxies": {"default": {}}})";
  save_login(file, "localhost:5000", {"bob", "secret", ""});
  save_login(file, "docker.io", {"hub", "hubpw", ""});
  auto doc = read(file);
  EXPECT_EQ(doc["psFormat"], "table");
  EXPECT_TRUE(doc["proxies"].is_object());
  EXPECT_FALSE(doc["auths"].contains("http://localhost:5000/"));  // replaced
  EXPECT_EQ(doc["auths"]["other.io"]["auth"], "eDp5");
  EXPECT_TRUE(doc["auths"].contains("https://index.docker.io/v1/"));

  // What was saved is what a mount reads.
  auto store = CredentialStore::load(file.string());
  EXPECT_EQ(store->lookup("localhost:5000", "a")->password, "secret");
  EXPECT_EQ(store->lookup("docker.io", "library/x")->username, "hub");

  EXPECT_TRUE(remove_login(file, "localhost:5000"));
  EXPECT_FALSE(remove_login(file, "localhost:5000"));
  doc = read(file);
  EXPECT_FALSE(doc["auths"].contains("localhost:5000"));
  EXPECT_EQ(doc["psFormat"], "table");
  EXPECT_FALSE(remove_login(dir_ / "missing.json", "x.io"));
}

TEST_F(LoginFileTest, HelperNamedByTheFileGetsTheSecret) {
  fs::path log = dir_ / "helper.log";
  fs::path helper = dir_ / "bin/docker-credential-unit";
  std::ofstream(helper) << "#!/bin/sh\necho \"$1 $(cat)\" >> " << log.string() << "\n";
  fs::permissions(helper, fs::perms::owner_all);
  fs::path file = dir_ / "config.json";
  std::ofstream(file) << R"({"credHelpers": {"reg.example": "unit"}})";
  EXPECT_EQ(save_login(file, "reg.example", {"u", "s3cret", ""}), "docker-credential-unit");
  auto doc = read(file);
  EXPECT_EQ(doc["auths"]["reg.example"], nlohmann::json::object());  // no secret in the file
  EXPECT_TRUE(remove_login(file, "reg.example"));
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_NE(text.find(R"(store {"ServerURL":"reg.example","Username":"u","Secret":"s3cret"})"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("erase reg.example"), std::string::npos) << text;
}

}  // namespace
}  // namespace regfs::registry
