#include "registry/www_authenticate.h"

#include <gtest/gtest.h>

namespace regfs::registry {
namespace {

TEST(WwwAuthenticateTest, BearerChallenge) {
  auto c = parse_www_authenticate(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull")");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].scheme, "bearer");
  EXPECT_EQ(c[0].params.at("realm"), "https://auth.docker.io/token");
  EXPECT_EQ(c[0].params.at("service"), "registry.docker.io");
  EXPECT_EQ(c[0].params.at("scope"), "repository:library/nginx:pull");
}

TEST(WwwAuthenticateTest, CaseSpacesTokensAndEscapes) {
  auto c =
      parse_www_authenticate(R"(BASIC  Realm = "a \"quoted\" realm, with comma" , charset=UTF-8)");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].scheme, "basic");
  EXPECT_EQ(c[0].params.at("realm"), R"(a "quoted" realm, with comma)");
  EXPECT_EQ(c[0].params.at("charset"), "UTF-8");
}

TEST(WwwAuthenticateTest, SeveralChallenges) {
  auto c = parse_www_authenticate(
      R"(Bearer realm="https://r/token",scope="repository:a:pull,push", Basic realm="reg", Negotiate)");
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].scheme, "bearer");
  EXPECT_EQ(c[0].params.at("scope"), "repository:a:pull,push");
  EXPECT_EQ(c[1].scheme, "basic");
  EXPECT_EQ(c[1].params.at("realm"), "reg");
  EXPECT_EQ(c[2].scheme, "negotiate");
  EXPECT_TRUE(c[2].params.empty());
}

TEST(WwwAuthenticateTest, Malformed) {
  EXPECT_TRUE(parse_www_authenticate("").empty());
  EXPECT_TRUE(parse_www_authenticate(" , ,").empty());
  auto c = parse_www_authenticate(R"(Bearer realm="unterminated)");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].params.at("realm"), "unterminated");
  c = parse_www_authenticate(R"(=x, Basic realm=r)");
  ASSERT_FALSE(c.empty());
  EXPECT_EQ(c.back().scheme, "basic");
  EXPECT_EQ(c.back().params.at("realm"), "r");
}

}  // namespace
}  // namespace regfs::registry
