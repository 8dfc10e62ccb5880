#include "fs/tree/known_names.h"

#include <gtest/gtest.h>

namespace regfs::fs {
namespace {

using Set = std::set<std::string>;

TEST(KnownNames, AProvenRepositoryMakesItsAncestorsKnown) {
  KnownNames known;
  known.proven("r:5000", "team/project/app");
  EXPECT_TRUE(known.is_proven("r:5000", "team"));
  EXPECT_TRUE(known.is_proven("r:5000", "team/project"));
  EXPECT_TRUE(known.is_proven("r:5000", "team/project/app"));
  EXPECT_FALSE(known.is_proven("r:5000", "team/other"));
  EXPECT_FALSE(known.is_proven("other:5000", "team")) << "per registry";
  EXPECT_TRUE(known.is_proven_repository("r:5000", "team/project/app"));
  EXPECT_FALSE(known.is_proven_repository("r:5000", "team/project"));
  EXPECT_FALSE(known.is_named("r:5000", "team"));
}

TEST(KnownNames, ChildrenListProvenAndNamedNamesOnce) {
  KnownNames known;
  known.proven("r", "team/project/app");
  known.proven("r", "team/tools");
  known.named("r", "carol/ci");
  known.named("r", "team");
  EXPECT_EQ(known.children("r", ""), (Set{"carol", "team"}));
  EXPECT_EQ(known.children("r", "team"), (Set{"project", "tools"}));
  EXPECT_EQ(known.children("r", "carol"), (Set{"ci"}));
  EXPECT_EQ(known.children("r", "team/project/app"), Set{});
  EXPECT_EQ(known.children("r2", ""), Set{});
  EXPECT_TRUE(known.is_named("r", "carol"));
  EXPECT_TRUE(known.is_named("r", "carol/ci"));
}

TEST(KnownNames, ChildrenOfANameDoNotIncludeItsPrefixSiblings) {
  KnownNames known;
  known.proven("r", "team/app");
  known.proven("r", "teamwork/app");
  known.proven("r", "team-b/app");
  EXPECT_EQ(known.children("r", "team"), (Set{"app"}));
  EXPECT_EQ(known.children("r", ""), (Set{"team", "team-b", "teamwork"}));
}

TEST(KnownNames, EachNameIsHintedOnce) {
  KnownNames known;
  EXPECT_TRUE(known.first_hint("r", "dave/private"));
  EXPECT_FALSE(known.first_hint("r", "dave/private"));
  EXPECT_TRUE(known.first_hint("r", "dave/other"));
  EXPECT_TRUE(known.first_hint("r2", "dave/private"));
}

}  // namespace
}  // namespace regfs::fs
