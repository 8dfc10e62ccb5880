// Registry health (registry/health.h): down after a failure, failing at once
// with the kind that marked it, up at any answer; listeners see each change
// once; probes back off from 1 s to 30 s with jitter.
#include "registry/health.h"

#include <gtest/gtest.h>

#include <vector>

namespace regfs::registry {
namespace {

TEST(HealthTest, DownUntilAnsweredFailingAtOnceWithItsKind) {
  Health health("r.example");
  std::vector<Health::State> changes;
  health.add_listener([&](const Health::State& s) { changes.push_back(s); });
  EXPECT_NO_THROW(health.check("fetch x"));
  health.answered();  // up already: no change
  EXPECT_TRUE(changes.empty());

  health.failed(Error(ErrorKind::kTimeout, "Cannot fetch x: timed out"));
  health.failed(Error(ErrorKind::kUnavailable, "Cannot fetch y: refused"));  // still down
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_FALSE(changes[0].up);
  EXPECT_EQ(changes[0].epoch, 1u);
  EXPECT_TRUE(health.down());
  EXPECT_EQ(health.state().last_error, "Cannot fetch y: refused");
  try {
    health.check("fetch z");
    FAIL() << "check passed while down";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kTimeout);  // what marked it down
    EXPECT_NE(std::string(e.what()).find("Cannot fetch z: r.example is down"), std::string::npos);
  }

  health.answered();
  ASSERT_EQ(changes.size(), 2u);
  EXPECT_TRUE(changes[1].up);
  EXPECT_NO_THROW(health.check("fetch z"));
  health.failed(Error(ErrorKind::kUnavailable, "Cannot fetch x: reset"));
  EXPECT_EQ(health.state().epoch, 2u);
  EXPECT_THROW(
      {
        try {
          health.check("x");
        } catch (const Error& e) {
          EXPECT_EQ(e.kind(), ErrorKind::kUnavailable);
          throw;
        }
      },
      Error);
}

TEST(HealthTest, ProbesBackOffFromOneToThirtySeconds) {
  using std::chrono::milliseconds;
  for (int round = 0; round < 50; ++round) {
    auto first = Health::probe_delay(0);
    EXPECT_GE(first, milliseconds(750));
    EXPECT_LE(first, milliseconds(1000));
    auto second = Health::probe_delay(1);
    EXPECT_GE(second, milliseconds(1500));
    EXPECT_LE(second, milliseconds(2000));
    auto late = Health::probe_delay(40);
    EXPECT_GE(late, milliseconds(22'500));
    EXPECT_LE(late, milliseconds(30'000));
  }
}

}  // namespace
}  // namespace regfs::registry
