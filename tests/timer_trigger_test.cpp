// Timer triggers on a ManualClock against a real (SQLite) store: due times fire with their
// scheduled time, a host that was down runs a missed schedule once (past due), two hosts on
// one store run each due time once, run_on_startup, and runs never overlap.
#include "triggers/timer/timer_trigger.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <condition_variable>
#include <filesystem>
#include <random>

#include "observe/log.h"
#include "observe/metrics.h"
#include "pool/function_pools.h"
#include "pool/worker_threads.h"
#include "store/store.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Records every payload; can hold runs until released.
struct Runs {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<boost::json::object> payloads;
  bool hold = false;
  int holding = 0;

  bool wait_for(std::size_t n) {
    std::unique_lock l(mu);
    return cv.wait_for(l, 10s, [&] { return payloads.size() >= n; });
  }
  std::size_t count() {
    std::lock_guard l(mu);
    return payloads.size();
  }
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
    runs_.payloads.push_back(boost::json::parse(inv.payload).as_object());
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

// One host's worth of parts around a shared store.
struct HostParts {
  HostParts(const AppSpec& app, Store& store, ManualClock& clock, TimerQueue& timers, TimerThread& thread, Logger& logger,
            Runs& runs)
      : workers(std::make_unique<WorkerThreads>(2)), ctx{clock, timers, &thread, *workers, metrics} {
    pools.add(std::make_unique<FunctionPool>(app.functions[0], 0, std::make_unique<Recorder>(runs), ctx));
    trigger = std::make_unique<TimerTrigger>(app, pools, store, clock, timers, &thread, logger);
  }
  ~HostParts() {
    trigger->stop();
    workers.reset();  // runs still on a worker thread finish before the pool goes
  }
  std::unique_ptr<WorkerThreads> workers;
  Metrics metrics{{"job"}};
  PoolContext ctx;
  FunctionPools pools;
  std::unique_ptr<TimerTrigger> trigger;
};

class TimerTriggerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("nimbus-timer-" + std::to_string(std::random_device{}()));
    fs::create_directories(dir_);
    auto s = open_store("sqlite:state.db", dir_, clock_);
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(*s);
    devnull_ = ::open("/dev/null", O_WRONLY);
    sink_ = std::make_unique<LogSink>(devnull_);
    logger_ = std::make_unique<Logger>(*sink_, clock_, "t");
    thread_ = std::make_unique<TimerThread>(clock_, timers_);
    app_.name = "t";
    app_.dir = dir_;
    FunctionSpec fn;
    fn.name = "job";
    fn.timeout = 5s;
    TriggerSpec t;
    t.kind = TriggerKind::timer;
    t.timer.schedule = "*/10 * * * * *";
    fn.triggers.push_back(t);
    app_.functions.push_back(fn);
  }
  void TearDown() override {
    thread_.reset();
    store_->close();
    store_.reset();
    logger_.reset();
    sink_.reset();
    ::close(devnull_);
    fs::remove_all(dir_);
  }
  std::unique_ptr<HostParts> host() {
    return std::make_unique<HostParts>(app_, *store_, clock_, timers_, *thread_, *logger_, runs_);
  }
  // Moves the clock to `s` seconds past the next multiple of 10 seconds (a due time).
  void advance_past_due(int s = 1) {
    auto now = std::chrono::duration_cast<std::chrono::seconds>(clock_.wall().time_since_epoch()).count();
    advance(std::chrono::seconds(10 - now % 10 + s));
  }
  void advance(Duration d) {
    clock_.advance(d);
    thread_->wake();
  }

  fs::path dir_;
  ManualClock clock_;
  TimerQueue timers_;
  std::unique_ptr<TimerThread> thread_;
  std::unique_ptr<Store> store_;
  int devnull_ = -1;
  std::unique_ptr<LogSink> sink_;
  std::unique_ptr<Logger> logger_;
  AppSpec app_;
  Runs runs_;
};

TEST_F(TimerTriggerTest, FiresEachDueTimeWithItsScheduledTime) {
  auto h = host();
  ASSERT_TRUE(h->trigger->start().ok());
  EXPECT_EQ(runs_.count(), 0u);
  advance_past_due(0);
  ASSERT_TRUE(runs_.wait_for(1));
  auto first = runs_.payloads[0];
  EXPECT_EQ(first["schedule"].as_string(), "*/10 * * * * *");
  EXPECT_FALSE(first["is_past_due"].as_bool());
  EXPECT_EQ(first["scheduled_time"].as_string().size(), 20u);  // 2026-11-21T09:00:10Z
  advance(10s);
  ASSERT_TRUE(runs_.wait_for(2));
  EXPECT_NE(runs_.payloads[1]["scheduled_time"], first["scheduled_time"]);
  EXPECT_EQ(runs_.payloads[1]["last"], first["scheduled_time"]);
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
  EXPECT_TRUE(runs_.payloads[0]["is_past_due"].as_bool());
  advance_past_due();
  ASSERT_TRUE(runs_.wait_for(2));
  EXPECT_FALSE(runs_.payloads[1]["is_past_due"].as_bool());
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
  app_.functions[0].triggers[0].timer.run_on_startup = true;
  auto h = host();
  ASSERT_TRUE(h->trigger->start().ok());
  ASSERT_TRUE(runs_.wait_for(1));
  EXPECT_FALSE(runs_.payloads[0]["is_past_due"].as_bool());
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
  std::this_thread::sleep_for(50ms);  // the run's release of the schedule is committed
  advance(10s);
  ASSERT_TRUE(runs_.wait_for(2));
}

TEST_F(TimerTriggerTest, AnUnknownTimeZoneIsAStartError) {
  app_.functions[0].triggers[0].timer.time_zone = "Atlantis/Capital";
  auto h = host();
  auto st = h->trigger->start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("function 'job'"), std::string::npos);
  EXPECT_NE(st.error().message.find("Atlantis/Capital"), std::string::npos);
}

}  // namespace
}  // namespace nimbus
