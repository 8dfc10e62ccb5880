#include <gtest/gtest.h>

#include "registry/core/error.h"
#include "registry/mirrors.h"
#include "registry/toml.h"

namespace regfs::registry {
namespace {

TEST(TomlTest, TablesArraysAndValues) {
  auto doc = parse_toml(R"(# a comment
unqualified-search-registries = ["docker.io", 'quay.io',]  # trailing comma
short-name-mode = "enforcing"
n = 1_000
f = 1.5
yes = true

[aliases]
  "almalinux" = "docker.io/library/almalinux"
  "a.b" = 'x'

[[registry]]
prefix = "example.com"
mirror = [{ location = "m1.local", insecure = true }, {location="m2.local"}]

[[registry]]
location = "other.io"
[[registry.mirror]]
location = "m3.local"
[[registry.mirror]]
location = "m4.local"
insecure = false
[x.y]
z = """
two
lines"""
esc = "tab\there \u00e9"
list = [
  1,
  2, # two
]
)");
  EXPECT_EQ(doc["unqualified-search-registries"], nlohmann::json({"docker.io", "quay.io"}));
  EXPECT_EQ(doc["n"], 1000);
  EXPECT_EQ(doc["f"], 1.5);
  EXPECT_EQ(doc["yes"], true);
  EXPECT_EQ(doc["aliases"]["almalinux"], "docker.io/library/almalinux");
  EXPECT_EQ(doc["aliases"]["a.b"], "x");
  ASSERT_EQ(doc["registry"].size(), 2u);
  EXPECT_EQ(doc["registry"][0]["mirror"][0]["location"], "m1.local");
  EXPECT_EQ(doc["registry"][0]["mirror"][0]["insecure"], true);
  EXPECT_EQ(doc["registry"][1]["mirror"].size(), 2u);
  EXPECT_EQ(doc["registry"][1]["mirror"][1]["insecure"], false);
  EXPECT_EQ(doc["x"]["y"]["z"], "two\nlines");
  EXPECT_EQ(doc["x"]["y"]["esc"], "tab\there \xc3\xa9");
  EXPECT_EQ(doc["x"]["y"]["list"], nlohmann::json({1, 2}));
}

TEST(TomlTest, ErrorsNameTheLine) {
  for (const char* bad : {"a = ", "a = \"open\nb = 1", "[t\n", "a = 1\na = 2", "a = 1 b",
                          "a = [1 2]", "a = 2021-01-01"}) {
    try {
      parse_toml(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kInvalid);
      EXPECT_EQ(std::string(e.what()).rfind("line ", 0), 0u) << e.what();
    }
  }
}

TEST(RegistriesConfTest, RegistriesMirrorsAndInsecure) {
  auto conf = RegistriesConf::parse(R"(
unqualified-search-registries = ["docker.io"]
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.local:5000"
insecure = true
[[registry.mirror]]
location = "cache.example/hub"

[[registry]]
prefix = "docker.io/library"
location = "docker.io/library"
mirror-by-digest-only = true
mirror = [{location = "lib.example/official"}]

[[registry]]
location = "Plain.Example:5000"
insecure = true
)");
  ASSERT_EQ(conf.entries().size(), 3u);
  EXPECT_EQ(conf.entries()[2].prefix, "plain.example:5000");
  EXPECT_TRUE(conf.insecure("plain.example:5000"));
  EXPECT_FALSE(conf.insecure("docker.io"));

  auto mirrors = conf.mirrors("docker.io");
  ASSERT_EQ(mirrors.size(), 3u);
  // Longest prefix first.
  EXPECT_EQ(mirrors[0].registry, "lib.example");
  EXPECT_TRUE(mirrors[0].digest_only);
  EXPECT_EQ(mirrors[0].map("library/alpine"), "official/alpine");
  EXPECT_EQ(mirrors[0].map("other/app"), std::nullopt);
  EXPECT_EQ(mirrors[1].registry, "mirror.local:5000");
  EXPECT_TRUE(mirrors[1].insecure);
  EXPECT_FALSE(mirrors[1].digest_only);
  EXPECT_EQ(mirrors[1].map("other/app"), "other/app");
  EXPECT_EQ(mirrors[2].map("other/app"), "hub/other/app");
  EXPECT_TRUE(conf.mirrors("quay.io").empty());
}

TEST(RegistriesConfTest, VersionOneAndMerging) {
  auto conf = RegistriesConf::parse(R"(
[registries.search]
registries = ['docker.io']
[registries.insecure]
registries = ['old.example:5000']
)");
  EXPECT_TRUE(conf.insecure("old.example:5000"));
  conf.merge(RegistriesConf::parse("[[registry]]\nlocation = \"old.example:5000\"\n"));
  EXPECT_FALSE(conf.insecure("old.example:5000"));  // replaced by the later file
}

TEST(RegistriesConfTest, BadTablesAreErrors) {
  EXPECT_THROW(RegistriesConf::parse("[[registry]]\ninsecure = true\n"), Error);
  EXPECT_THROW(RegistriesConf::parse("[[registry]]\nlocation = 5\n"), Error);
  EXPECT_THROW(RegistriesConf::parse("[[registry]]\nlocation = \"a\"\nmirror = \"m\"\n"), Error);
}

TEST(MirrorsTest, FlagsFirstThenConf) {
  auto conf = RegistriesConf::parse(
      "[[registry]]\nlocation = \"up.example\"\n[[registry.mirror]]\nlocation = \"conf.example\"\n"
      "[[registry]]\nlocation = \"flag.example\"\ninsecure = true\n");
  auto mirrors =
      mirrors_for("up.example", {{"up.example", "flag.example"}, {"x.io", "y.io"}}, {}, conf);
  ASSERT_EQ(mirrors.size(), 2u);
  EXPECT_EQ(mirrors[0].registry, "flag.example");
  EXPECT_TRUE(mirrors[0].insecure);  // registries.conf says so
  EXPECT_EQ(mirrors[1].registry, "conf.example");
  EXPECT_FALSE(mirrors[1].insecure);
  auto plain = mirrors_for("x.io", {{"x.io", "y.io"}}, {"y.io"}, conf);
  ASSERT_EQ(plain.size(), 1u);
  EXPECT_TRUE(plain[0].insecure);
}

}  // namespace
}  // namespace regfs::registry
