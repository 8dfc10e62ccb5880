#include "cache/lru_index.h"

#include <gtest/gtest.h>

namespace regfs::cache {
namespace {

TEST(LruIndex, EvictsLeastRecentlyUsedFirst) {
  LruIndex lru(100);
  lru.put("a", 40);
  lru.put("b", 40);
  lru.touch("a");
  lru.put("c", 40);  // 120 > 100: b is the oldest
  EXPECT_EQ(lru.take_victims(), std::vector<std::string>{"b"});
  EXPECT_EQ(lru.total(), 80u);
  EXPECT_TRUE(lru.contains("a"));
  EXPECT_FALSE(lru.contains("b"));
}

TEST(LruIndex, PinnedKeysAreNeverVictims) {
  LruIndex lru(50);
  lru.put("open", 40);
  lru.put("other", 40);
  lru.pin("open");
  EXPECT_EQ(lru.take_victims(), std::vector<std::string>{"other"});
  lru.put("third", 40);
  EXPECT_EQ(lru.take_victims(), std::vector<std::string>{"third"});
  lru.unpin("open");
  lru.put("fourth", 40);
  EXPECT_EQ(lru.take_victims(), std::vector<std::string>{"open"});
}

TEST(LruIndex, PutUpdatesSizeAndEraseForgets) {
  LruIndex lru(1000);
  lru.put("a", 10);
  lru.put("a", 30);
  EXPECT_EQ(lru.total(), 30u);
  EXPECT_EQ(lru.size(), 1u);
  lru.erase("a");
  EXPECT_EQ(lru.total(), 0u);
  lru.erase("missing");
  EXPECT_TRUE(lru.take_victims().empty());
}

TEST(LruIndex, AllPinnedMeansOverBoundButNoVictims) {
  LruIndex lru(10);
  lru.pin("a");
  lru.put("a", 20);
  EXPECT_TRUE(lru.take_victims().empty());
  EXPECT_EQ(lru.total(), 20u);
}

}  // namespace
}  // namespace regfs::cache
