#include "cache/cache_use.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <optional>

namespace regfs::cache {
namespace {

namespace fsys = std::filesystem;

class CacheUseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/regfs-cache-use-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fsys::remove_all(dir_); }
  fsys::path dir_;
};

TEST_F(CacheUseTest, AMountKeepsTheCacheFromBeingTakenWholeUntilItGoes) {
  CacheLayout layout(dir_);
  {
    CacheUse first(layout);
    CacheUse second(layout);  // mounts share a cache
    first.announce("/mnt/a");
    EXPECT_FALSE(CacheExclusive::try_take(layout));
    auto users = cache_users(layout);
    ASSERT_EQ(users.size(), 1u);
    EXPECT_EQ(users[0].pid, ::getpid());
    EXPECT_EQ(users[0].mountpoint, "/mnt/a");
  }
  EXPECT_TRUE(cache_users(layout).empty()) << "the entry goes with its mount";
  auto exclusive = CacheExclusive::try_take(layout);
  ASSERT_TRUE(exclusive);
}

TEST_F(CacheUseTest, OnlyAMountWithNoOtherOnTheCacheIsAlone) {
  CacheLayout layout(dir_);
  auto first = std::make_unique<CacheUse>(layout);
  EXPECT_TRUE(first->alone());
  {
    CacheUse second(layout);
    EXPECT_FALSE(second.alone()) << "the first still uses the cache";
    first.reset();
    CacheUse third(layout);
    EXPECT_FALSE(third.alone()) << "the second still uses the cache";
  }
  CacheUse fourth(layout);
  EXPECT_TRUE(fourth.alone());
  EXPECT_FALSE(CacheExclusive::try_take(layout)) << "alone, the lock is still shared-held";
}

TEST_F(CacheUseTest, TheLockOfAKilledProcessGoesWithIt) {
  CacheLayout layout(dir_);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    CacheUse use(layout);
    use.announce("/mnt/killed");
    ::pause();
    ::_exit(0);
  }
  // The child names itself, then is killed without a word.
  for (int i = 0; i < 200 && cache_users(layout).empty(); ++i) ::usleep(10000);
  ASSERT_EQ(cache_users(layout).size(), 1u);
  EXPECT_FALSE(CacheExclusive::try_take(layout));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_TRUE(cache_users(layout).empty()) << "a dead pid's entry is stale";
  EXPECT_TRUE(CacheExclusive::try_take(layout));
  EXPECT_TRUE(fsys::is_empty(layout.mounts())) << "stale entries are removed";
}

}  // namespace
}  // namespace regfs::cache
