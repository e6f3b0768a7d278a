// ManualClock, TimerQueue and TimerThread: time is driven by hand, never slept on.
#include "core/clock.h"

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

namespace nimbus {
namespace {

using namespace std::chrono_literals;

TEST(ManualClockTest, AdvanceMovesMonotonicAndWallTimeTogether) {
  ManualClock clock;
  TimePoint t0 = clock.now();
  WallTime w0 = clock.wall();
  EXPECT_EQ(clock.now(), t0) << "a manual clock must not move by itself";
  EXPECT_EQ(clock.wall(), w0);

  clock.advance(1500ms);
  EXPECT_EQ(clock.now() - t0, Duration(1500ms));
  EXPECT_EQ(std::chrono::duration_cast<Duration>(clock.wall() - w0), Duration(1500ms));

  clock.advance(3s);
  EXPECT_EQ(clock.now() - t0, Duration(4500ms));
  EXPECT_EQ(std::chrono::duration_cast<Duration>(clock.wall() - w0), Duration(4500ms));
}

TEST(ManualClockTest, ListenersHearEveryAdvance) {
  ManualClock clock;
  int heard = 0;
  clock.on_advance([&] { ++heard; });
  clock.advance(1ms);
  clock.advance(2ms);
  EXPECT_EQ(heard, 2);
}

TEST(TimerQueueTest, TakeDueReturnsOnlyDueCallbacksInDueOrder) {
  ManualClock clock;
  TimerQueue q;
  std::vector<std::string> fired;
  TimePoint t0 = clock.now();
  // Scheduled out of order on purpose.
  q.schedule(t0 + 30ms, [&] { fired.push_back("c"); });
  q.schedule(t0 + 10ms, [&] { fired.push_back("a"); });
  q.schedule(t0 + 20ms, [&] { fired.push_back("b"); });
  EXPECT_EQ(q.size(), 3u);

  TimePoint next;
  ASSERT_TRUE(q.next_due(&next));
  EXPECT_EQ(next, t0 + 10ms);

  EXPECT_TRUE(q.take_due(t0 + 9ms).empty());
  for (auto& fn : q.take_due(t0 + 20ms)) fn();  // due exactly at 20ms counts
  EXPECT_EQ(fired, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(q.size(), 1u);

  for (auto& fn : q.take_due(t0 + 1h)) fn();
  EXPECT_EQ(fired, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(q.size(), 0u);
  EXPECT_FALSE(q.next_due(&next));
}

TEST(TimerQueueTest, SameDueTimeKeepsScheduleOrder) {
  ManualClock clock;
  TimerQueue q;
  std::vector<int> fired;
  TimePoint due = clock.now() + 5ms;
  for (int i = 0; i < 5; ++i) q.schedule(due, [&fired, i] { fired.push_back(i); });
  for (auto& fn : q.take_due(due)) fn();
  EXPECT_EQ(fired, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(TimerQueueTest, CancelRemovesOnlyThatTimer) {
  ManualClock clock;
  TimerQueue q;
  std::vector<int> fired;
  TimePoint due = clock.now() + 5ms;
  auto a = q.schedule(due, [&] { fired.push_back(1); });
  auto b = q.schedule(due, [&] { fired.push_back(2); });
  auto c = q.schedule(due + 1ms, [&] { fired.push_back(3); });
  EXPECT_NE(a, b);
  EXPECT_NE(b, c);

  EXPECT_TRUE(q.cancel(b));
  EXPECT_FALSE(q.cancel(b)) << "cancelling twice reports the timer is gone";
  EXPECT_FALSE(q.cancel(12345));
  EXPECT_EQ(q.size(), 2u);

  for (auto& fn : q.take_due(due + 1h)) fn();
  EXPECT_EQ(fired, (std::vector<int>{1, 3}));
  EXPECT_FALSE(q.cancel(a)) << "a fired timer can no longer be cancelled";
}

// Waits (with a generous real-time bound) until `pred` holds under `mu`.
template <class Pred>
bool wait_for(std::mutex& mu, std::condition_variable& cv, Pred pred) {
  std::unique_lock lock(mu);
  return cv.wait_for(lock, 10s, pred);
}

TEST(TimerThreadTest, FiresAfterManualAdvanceAndWake) {
  ManualClock clock;
  TimerQueue q;
  std::mutex mu;
  std::condition_variable cv;
  int fired = 0;
  TimerThread thread(clock, q);

  q.schedule(clock.now() + 100ms, [&] {
    std::lock_guard lock(mu);
    ++fired;
    cv.notify_all();
  });
  thread.wake();
  EXPECT_EQ(q.size(), 1u);

  clock.advance(100ms);
  thread.wake();
  ASSERT_TRUE(wait_for(mu, cv, [&] { return fired == 1; })) << "timer did not fire";
  EXPECT_EQ(q.size(), 0u);
}

TEST(TimerThreadTest, FiresEachTimerOnceInOrderAsTimeAdvances) {
  ManualClock clock;
  TimerQueue q;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<int> fired;
  TimerThread thread(clock, q);
  clock.on_advance([&] { thread.wake(); });

  for (int i = 1; i <= 3; ++i) {
    q.schedule(clock.now() + i * 10ms, [&, i] {
      std::lock_guard lock(mu);
      fired.push_back(i);
      cv.notify_all();
    });
  }
  thread.wake();

  clock.advance(10ms);
  ASSERT_TRUE(wait_for(mu, cv, [&] { return fired.size() == 1; }));
  clock.advance(20ms);
  ASSERT_TRUE(wait_for(mu, cv, [&] { return fired.size() == 3; }));
  std::lock_guard lock(mu);
  EXPECT_EQ(fired, (std::vector<int>{1, 2, 3}));
}

TEST(TimerThreadTest, CancelledTimerNeverFires) {
  ManualClock clock;
  TimerQueue q;
  std::mutex mu;
  std::condition_variable cv;
  bool cancelled_fired = false;
  bool marker_fired = false;
  TimerThread thread(clock, q);

  auto id = q.schedule(clock.now() + 10ms, [&] {
    std::lock_guard lock(mu);
    cancelled_fired = true;
  });
  ASSERT_TRUE(q.cancel(id));
  // A later timer proves the thread has processed everything up to it.
  q.schedule(clock.now() + 20ms, [&] {
    std::lock_guard lock(mu);
    marker_fired = true;
    cv.notify_all();
  });
  clock.advance(20ms);
  thread.wake();
  ASSERT_TRUE(wait_for(mu, cv, [&] { return marker_fired; }));
  std::lock_guard lock(mu);
  EXPECT_FALSE(cancelled_fired);
}

}  // namespace
}  // namespace nimbus
