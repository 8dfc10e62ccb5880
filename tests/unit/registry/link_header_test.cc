#include "registry/link_header.h"

#include <gtest/gtest.h>

namespace regfs::registry {
namespace {

TEST(LinkHeaderTest, DistributionStyle) {
  EXPECT_EQ(parse_next_link(R"(</v2/_catalog?last=a%2Fb&n=2>; rel="next")"),
            "/v2/_catalog?last=a%2Fb&n=2");
  EXPECT_EQ(parse_next_link("</v2/x/tags/list?last=b&n=2>; rel=next"),
            "/v2/x/tags/list?last=b&n=2");
  EXPECT_EQ(parse_next_link("<https://h/v2/_catalog?n=1>;REL=\"NEXT\""),
            "https://h/v2/_catalog?n=1");
}

TEST(LinkHeaderTest, SeveralLinksAndRels) {
  EXPECT_EQ(parse_next_link(R"(</first>; rel="prev", </second>; title="a, b; c"; rel="last next")"),
            "/second");
  EXPECT_EQ(parse_next_link(R"(</a>; rel="prev", </b>; rel="nextish")"), std::nullopt);
  EXPECT_EQ(parse_next_link(R"(</a,b>; rel=next)"), "/a,b");
}

TEST(LinkHeaderTest, Malformed) {
  EXPECT_EQ(parse_next_link(""), std::nullopt);
  EXPECT_EQ(parse_next_link("garbage"), std::nullopt);
  EXPECT_EQ(parse_next_link("</unterminated; rel=next"), std::nullopt);
  EXPECT_EQ(parse_next_link(R"(junk; rel="x, y", </ok>; rel=next)"), "/ok");
  EXPECT_EQ(parse_next_link("</no-rel>"), std::nullopt);
}

}  // namespace
}  // namespace regfs::registry
