// BoundedMap (registry/core/bounded_map.h): at most `capacity` entries, the least
// recently used forgotten first.
#include "registry/core/bounded_map.h"

#include <gtest/gtest.h>

#include <string>

namespace regfs::registry {
namespace {

TEST(BoundedMapTest, ForgetsTheLeastRecentlyUsedWhenFull) {
  BoundedMap<std::string, int> map(2);
  map.put("a", 1);
  map.put("b", 2);
  ASSERT_NE(map.find("a"), nullptr);  // a is now the most recent
  map.put("c", 3);
  EXPECT_EQ(map.size(), 2u);
  EXPECT_TRUE(map.contains("a"));
  EXPECT_FALSE(map.contains("b"));
  EXPECT_EQ(*map.find("c"), 3);
}

TEST(BoundedMapTest, PutReplacesAndEraseForgets) {
  BoundedMap<std::string, int> map(3);
  map.put("a", 1);
  map.put("a", 5);
  EXPECT_EQ(map.size(), 1u);
  EXPECT_EQ(*map.find("a"), 5);
  map.erase("a");
  map.erase("missing");
  EXPECT_EQ(map.find("a"), nullptr);
  EXPECT_EQ(map.size(), 0u);
}

TEST(BoundedMapTest, AZeroCapacityKeepsOne) {
  BoundedMap<int, int> map(0);
  map.put(1, 1);
  map.put(2, 2);
  EXPECT_EQ(map.size(), 1u);
  EXPECT_TRUE(map.contains(2));
}

}  // namespace
}  // namespace regfs::registry
