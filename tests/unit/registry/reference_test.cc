#include "registry/reference.h"

#include <gtest/gtest.h>

#include "registry/core/error.h"

namespace regfs::registry {
namespace {

const std::string kDigest =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

TEST(ReferenceTest, DockerHubNames) {
  Reference r = parse_reference("nginx");
  EXPECT_EQ(r.registry, "docker.io");
  EXPECT_EQ(r.repository, "library/nginx");
  EXPECT_EQ(r.tag, "latest");
  EXPECT_EQ(r.digest, "");
  EXPECT_EQ(r.identifier(), "latest");
  EXPECT_EQ(r.to_string(), "docker.io/library/nginx:latest");

  EXPECT_EQ(parse_reference("bitnami/redis:7").repository, "bitnami/redis");
  EXPECT_EQ(parse_reference("docker.io/nginx:1.25").repository, "library/nginx");
  EXPECT_EQ(parse_reference("index.docker.io/library/nginx").registry, "docker.io");
  EXPECT_EQ(parse_reference("registry-1.docker.io/x/y").registry, "docker.io");
}

TEST(ReferenceTest, HostsPortsTagsDigests) {
  Reference r = parse_reference("localhost:5000/a/b/c:v1.2-x");
  EXPECT_EQ(r.registry, "localhost:5000");
  EXPECT_EQ(r.repository, "a/b/c");
  EXPECT_EQ(r.tag, "v1.2-x");

  r = parse_reference("localhost/app");
  EXPECT_EQ(r.registry, "localhost");
  EXPECT_EQ(r.repository, "app");

  r = parse_reference("GHCR.io/o/app@" + kDigest);
  EXPECT_EQ(r.registry, "ghcr.io");
  EXPECT_EQ(r.tag, "");
  EXPECT_EQ(r.digest, kDigest);
  EXPECT_EQ(r.identifier(), kDigest);
  EXPECT_EQ(r.to_string(), "ghcr.io/o/app@" + kDigest);

  r = parse_reference("127.0.0.1:5000/app:v1@" + kDigest);
  EXPECT_EQ(r.tag, "v1");
  EXPECT_EQ(r.digest, kDigest);
  EXPECT_EQ(r.identifier(), kDigest);

  // A port-like suffix of the last component is a tag, not a port.
  r = parse_reference("myhost:5000/app");
  EXPECT_EQ(r.registry, "myhost:5000");
  EXPECT_EQ(r.tag, "latest");
  // A one-component name with a dot-less, port-less host is a Hub name.
  EXPECT_EQ(parse_reference("team/app").registry, "docker.io");
}

TEST(ReferenceTest, Invalid) {
  for (const char* text :
       {"", "a/UPPER", "a//b", "a/b:", "a/b:-tag", "a/b@sha256:abc", "a/b@md5:0123", "-a/b",
        "a/b_/c", "a/b:" /* empty tag */, "localhost:5000/", "a b"}) {
    EXPECT_THROW(parse_reference(text), Error) << text;
  }
  try {
    parse_reference("docker.io/Nginx");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
    EXPECT_NE(std::string(e.what()).find("lowercase"), std::string::npos);
  }
}

TEST(ReferenceTest, RegistryHelpers) {
  EXPECT_EQ(api_host("docker.io"), "registry-1.docker.io");
  EXPECT_EQ(api_host("index.docker.io"), "registry-1.docker.io");
  EXPECT_EQ(api_host("localhost:5000"), "localhost:5000");
  EXPECT_EQ(canonical_registry("Index.Docker.IO"), "docker.io");
  EXPECT_EQ(canonical_registry("GHCR.io"), "ghcr.io");

  EXPECT_TRUE(looks_like_registry("ghcr.io"));
  EXPECT_TRUE(looks_like_registry("host:5000"));
  EXPECT_TRUE(looks_like_registry("localhost"));
  EXPECT_FALSE(looks_like_registry("library"));

  EXPECT_TRUE(is_loopback("localhost"));
  EXPECT_TRUE(is_loopback("localhost:5000"));
  EXPECT_TRUE(is_loopback("127.0.0.1:5000"));
  EXPECT_TRUE(is_loopback("127.1.2.3"));
  EXPECT_TRUE(is_loopback("[::1]:5000"));
  EXPECT_TRUE(is_loopback("::1"));
  EXPECT_FALSE(is_loopback("128.0.0.1"));
  EXPECT_FALSE(is_loopback("127.0.0.1.example.com"));
  EXPECT_FALSE(is_loopback("localhost.example.com:5000"));
  EXPECT_FALSE(is_loopback("docker.io"));
}

TEST(ReferenceTest, NameGrammar) {
  for (const char* ok :
       {"a", "a0", "a.b", "a_b", "a__b", "a-b", "a---b", "library/nginx", "a/b/c/d"}) {
    EXPECT_TRUE(is_valid_repository(ok)) << ok;
  }
  for (const char* bad :
       {"", "A", "a.", ".a", "a..b", "a___b", "a-", "a/", "/a", "a//b", "a_-b", "a:b"}) {
    EXPECT_FALSE(is_valid_repository(bad)) << bad;
  }
  EXPECT_TRUE(is_valid_repository(std::string(255, 'a')));
  EXPECT_FALSE(is_valid_repository(std::string(256, 'a')));
  EXPECT_TRUE(is_valid_path_component("nginx"));
  EXPECT_FALSE(is_valid_path_component("a/b"));

  for (const char* ok : {"latest", "v1.2.3", "_x", "A-b_c.D", "1"}) {
    EXPECT_TRUE(is_valid_tag(ok)) << ok;
  }
  for (const char* bad : {"", ".x", "-x", "a/b", "a:b", "a+b"}) {
    EXPECT_FALSE(is_valid_tag(bad)) << bad;
  }
  EXPECT_TRUE(is_valid_tag(std::string(128, 'a')));
  EXPECT_FALSE(is_valid_tag(std::string(129, 'a')));
}

}  // namespace
}  // namespace regfs::registry
