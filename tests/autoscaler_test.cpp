// Autoscaler decisions replayed on load traces, one sample a second.
#include "pool/autoscaler.h"

#include <gtest/gtest.h>

#include <vector>

namespace nimbus {
namespace {

using namespace std::chrono_literals;

struct Replay {
  explicit Replay(AutoscalerConfig config) : scaler(config) {}
  Autoscaler scaler;
  TimePoint now{};
  int instances = 0;
  std::vector<int> decisions;
  // Feeds one sample per second and applies each decision at once.
  void run(const std::vector<double>& trace) {
    for (double in_flight : trace) {
      now += 1s;
      scaler.record(now, in_flight);
      instances = scaler.desired(now, instances);
      decisions.push_back(instances);
    }
  }
  void hold(double in_flight, int seconds) { run(std::vector<double>(static_cast<size_t>(seconds), in_flight)); }
};

AutoscalerConfig config(double target = 1.0, int max = 100) {
  AutoscalerConfig c;
  c.target_per_instance = target;
  c.max_instances = max;
  return c;
}

TEST(AutoscalerTest, SteadyLoadGetsLoadOverTargetInstances) {
  Replay r(config(/*target=*/2.0));
  r.hold(10, 90);
  EXPECT_EQ(r.instances, 5);
}

TEST(AutoscalerTest, ASpikePanicsUpFastAndHoldsUntilAStableWindowPasses) {
  Replay r(config());
  r.hold(1, 60);
  ASSERT_EQ(r.instances, 1);
  r.hold(20, 3);  // a burst: the 6 s window sees it at once, the 60 s average barely moves
  EXPECT_TRUE(r.scaler.panicking());
  EXPECT_GE(r.instances, 10);
  int peak = r.instances;
  r.hold(1, 30);  // the burst is over, but panic mode does not scale down
  EXPECT_GE(r.instances, peak);
  r.hold(1, 90);  // a whole stable window later it settles back
  EXPECT_FALSE(r.scaler.panicking());
  EXPECT_LE(r.instances, 2);
}

TEST(AutoscalerTest, LoadWobblingAroundABoundaryDoesNotFlap) {
  Replay r(config());
  std::vector<double> wobble;
  for (int i = 0; i < 240; ++i) wobble.push_back(i % 2 ? 4.6 : 5.4);
  r.run(wobble);
  // After the first window, the decision never changes.
  std::vector<int> settled(r.decisions.begin() + 60, r.decisions.end());
  for (int d : settled) EXPECT_EQ(d, settled.front());
  EXPECT_EQ(settled.front(), 5);
}

TEST(AutoscalerTest, ScalesDownGraduallyAndToZeroOnlyAfterAQuietStableWindow) {
  Replay r(config());
  r.hold(16, 90);
  ASSERT_EQ(r.instances, 16);
  r.run({0});
  EXPECT_GE(r.instances, 8) << "never more than halves in one decision";
  r.hold(0, 30);
  EXPECT_GE(r.instances, 1) << "work in the stable window keeps an instance";
  r.hold(0, 61);
  EXPECT_EQ(r.instances, 0);
}

TEST(AutoscalerTest, MinAndMaxBoundEveryDecision) {
  AutoscalerConfig c = config(1.0, /*max=*/3);
  c.min_instances = 1;
  Replay r(c);
  r.hold(0, 120);
  EXPECT_EQ(r.instances, 1);
  r.hold(50, 10);
  EXPECT_EQ(r.instances, 3);
}

}  // namespace
}  // namespace nimbus
