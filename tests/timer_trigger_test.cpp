// Timer triggers on a ManualClock against a real (SQLite) store: due times fire with their
// scheduled time, a host that was down runs a missed schedule once (past due), two hosts on
// one store run each due time once, run_on_startup, and runs never overlap.
#include "triggers/kind.h"
#include "triggers/timer/timer_trigger.h"

#include <gtest/gtest.h>

#include <thread>

#include <boost/json.hpp>

#include "trigger_test_env.h"

namespace nimbus {
namespace {

using namespace std::chrono_literals;

// Every payload; runs can be held until released.
struct Runs : Recorded<boost::json::object> {
  bool hold = false;
  int holding = 0;

  void release() {
    std::lock_guard l(mu);
    hold = false;
    cv.notify_all();
  }
};

class Recorder final : public Executor {
 public:
  explicit Recorder(Runs& runs) : runs_(runs) {}
  Mode mode() const override { return Mode::synchronous; }
  Result call(const Invocation& inv) override {
    std::unique_lock l(runs_.mu);
    runs_.list.push_back(boost::json::parse(inv.payload).as_object());
    runs_.cv.notify_all();
    ++runs_.holding;
    runs_.cv.wait(l, [&] { return !runs_.hold; });
    --runs_.holding;
    runs_.cv.notify_all();
    Result r;
    r.http = HttpReply{200, {}, ""};
    return r;
  }

 private:
  Runs& runs_;
};

class TimerTriggerTest : public TriggerTest {
 protected:
  void SetUp() override {
    set_up("nimbus-timer-");
    FunctionSpec fn;
    fn.name = "job";
    fn.timeout = 5s;
    TimerTriggerSpec t;
    t.schedule = "*/10 * * * * *";
    fn.triggers.push_back(make_trigger("timer", t));
    app_.functions.push_back(fn);
  }
  std::unique_ptr<HostParts<TimerTrigger>> host() { return host_of<TimerTrigger>(std::make_unique<Recorder>(runs_)); }
  // Moves the clock to `s` seconds past the next multiple of 10 seconds (a due time).
  // Changes the first function's timer settings before its trigger is built.
  template <class Change>
  void set_timer(Change change) {
    TimerTriggerSpec t = *app_.functions[0].triggers[0].as<TimerTriggerSpec>();
    change(t);
    app_.functions[0].triggers[0] = make_trigger("timer", t);
  }
  void advance_past_due(int s = 1) {
    auto now = std::chrono::duration_cast<std::chrono::seconds>(clock_.wall().time_since_epoch()).count();
    advance(std::chrono::seconds(10 - now % 10 + s));
  }

  // Waits (bounded, in real time) until no run holds the schedule in the store: a run's end
  // releases it on the timer thread, after the function has returned.
  bool released() {
    for (int i = 0; i < 2000; ++i) {
      auto got = store_->get("_timers", "job#0");
      if (got && got->has_value() &&
          boost::json::parse((*got)->value).as_object().at("running_until").to_number<int64_t>() == 0)
        return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }

  Runs runs_;
};

TEST_F(TimerTriggerTest, FiresEachDueTimeWithItsScheduledTime) {
  auto h = host();
  ASSERT_TRUE(h->trigger->start().ok());
  EXPECT_EQ(runs_.count(), 0u);
  advance_past_due(0);
  ASSERT_TRUE(runs_.wait_for(1));
  auto first = runs_.list[0];
  EXPECT_EQ(first["schedule"].as_string(), "*/10 * * * * *");
  EXPECT_FALSE(first["is_past_due"].as_bool());
  EXPECT_EQ(first["scheduled_time"].as_string().size(), 20u);  // 2026-11-21T09:00:10Z
  advance(10s);
  ASSERT_TRUE(runs_.wait_for(2));
  EXPECT_NE(runs_.list[1]["scheduled_time"], first["scheduled_time"]);
  EXPECT_EQ(runs_.list[1]["last"], first["scheduled_time"]);
  auto status = h->trigger->status();
  ASSERT_EQ(status.size(), 1u);
  EXPECT_GT(status[0].next_s, status[0].last_s);
}

TEST_F(TimerTriggerTest, AHostThatWasDownRunsAMissedScheduleOnceMarkedPastDue) {
  {
    auto h = host();
    ASSERT_TRUE(h->trigger->start().ok());
  }  // the host goes away before its first due time
  advance(35s);  // three due times pass with no host
  auto h = host();
  ASSERT_TRUE(h->trigger->start().ok());
  ASSERT_TRUE(runs_.wait_for(1));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(runs_.count(), 1u) << "missed runs are not replayed one by one";
  EXPECT_TRUE(runs_.list[0]["is_past_due"].as_bool());
  ASSERT_TRUE(released());  // else the next due time could find the schedule still held
  advance_past_due();
  ASSERT_TRUE(runs_.wait_for(2));
  EXPECT_FALSE(runs_.list[1]["is_past_due"].as_bool());
}

TEST_F(TimerTriggerTest, TwoHostsOnOneStoreRunEachDueTimeOnce) {
  auto a = host();
  auto b = host();
  ASSERT_TRUE(a->trigger->start().ok());
  ASSERT_TRUE(b->trigger->start().ok());
  for (int i = 0; i < 3; ++i) {
    advance_past_due(0);
    ASSERT_TRUE(runs_.wait_for(static_cast<std::size_t>(i + 1)));
    std::this_thread::sleep_for(50ms);  // room for a wrong second run to show
    EXPECT_EQ(runs_.count(), static_cast<std::size_t>(i + 1));
  }
}

TEST_F(TimerTriggerTest, RunOnStartupRunsOnceAtStart) {
  set_timer([](TimerTriggerSpec& t) { t.run_on_startup = true; });
  auto h = host();
  ASSERT_TRUE(h->trigger->start().ok());
  ASSERT_TRUE(runs_.wait_for(1));
  EXPECT_FALSE(runs_.list[0]["is_past_due"].as_bool());
}

TEST_F(TimerTriggerTest, RunsNeverOverlap) {
  app_.functions[0].timeout = 60s;  // a run holds its schedule until it ends or times out
  runs_.hold = true;
  auto h = host();
  ASSERT_TRUE(h->trigger->start().ok());
  advance_past_due(0);
  ASSERT_TRUE(runs_.wait_for(1));  // running, held
  advance(10s);                    // the next due time finds it still running: skipped
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(runs_.count(), 1u);
  runs_.release();
  {
    std::unique_lock l(runs_.mu);
    ASSERT_TRUE(runs_.cv.wait_for(l, 5s, [&] { return runs_.holding == 0; }));
  }
  ASSERT_TRUE(released()) << "the run's release of the schedule is committed";
  advance(10s);
  ASSERT_TRUE(runs_.wait_for(2));
}

TEST_F(TimerTriggerTest, AnUnknownTimeZoneIsAStartError) {
  set_timer([](TimerTriggerSpec& t) { t.time_zone = "Atlantis/Capital"; });
  auto h = host();
  auto st = h->trigger->start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("function 'job'"), std::string::npos);
  EXPECT_NE(st.error().message.find("Atlantis/Capital"), std::string::npos);
}

}  // namespace
}  // namespace nimbus
