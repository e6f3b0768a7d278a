// The fleet's instance lifecycle (pool/fleet.h) over worker processes, with time driven by a ManualClock: cold start
// from zero, scale to zero after idle_timeout, min_instances kept warm, and the autoscaler
// adding instances under sustained load and retiring the surplus when it passes.
#include "pool/fleet.h"
#include "runtime/process/frames_transport.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <fstream>
#include <random>
#include <set>

#include "observe/log.h"
#include "observe/metrics.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class FleetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::random_device rd;
    dir_ = fs::temp_directory_path() / ("nimbus-prt-" + std::to_string(rd()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "app.py") << "def hello(req, ctx):\n    return 'hi'\n";
    devnull_ = ::open("/dev/null", O_WRONLY);
    sink_ = std::make_unique<LogSink>(devnull_);
    logger_ = std::make_unique<Logger>(*sink_, clock_, "t");
    timer_thread_ = std::make_unique<TimerThread>(clock_, timers_);
  }
  void TearDown() override {
    executor_.reset();
    timer_thread_.reset();
    logger_.reset();
    sink_.reset();
    ::close(devnull_);
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void make(int min_instances, Duration idle, const std::string& handler = "app.py:hello", int concurrency = 1) {
    AppSpec app;
    app.name = "t";
    app.dir = dir_;
    fn_.name = "hello";
    fn_.runtime = RuntimeKind::python;
    fn_.handler = handler;
    fn_.concurrency = concurrency;
    fn_.min_instances = min_instances;
    fn_.max_instances = 2;
    fn_.idle_timeout = idle;
    executor_ = std::make_unique<InstanceFleet>(fn_, 0, fleet_options_for(fn_), std::make_unique<FramesTransport>(fn_, worker_launch_for(app, fn_), *logger_), clock_, Timers(timers_, timer_thread_.get()),
                                                  *logger_, metrics_);
  }
  Result invoke() {
    Invocation inv;
    inv.id = "0123456789abcdef0123456789abcdef";
    inv.function = "hello";
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Result> out;
    executor_->start(inv, [&](Result&& r) {
      std::lock_guard l(mu);
      out = std::move(r);
      cv.notify_all();
    });
    std::unique_lock l(mu);
    cv.wait_for(l, 20s, [&] { return out.has_value(); });
    return out ? std::move(*out) : Result::failure(Outcome::error, "test", "no result within 20 s");
  }
  // A function run by tests/workers/start_worker.py with `args`.
  void make_start_worker(std::vector<std::string> args, int concurrency, int max_instances) {
    AppSpec app;
    app.name = "t";
    app.dir = dir_;
    fn_.name = "hello";
    fn_.runtime = RuntimeKind::process;
    fn_.command = {"/usr/bin/python3", NIMBUS_SOURCE_DIR "/tests/workers/start_worker.py"};
    fn_.command.insert(fn_.command.end(), args.begin(), args.end());
    fn_.concurrency = concurrency;
    fn_.max_instances = max_instances;
    fn_.idle_timeout = 1h;
    executor_ = std::make_unique<InstanceFleet>(fn_, 0, fleet_options_for(fn_), std::make_unique<FramesTransport>(fn_, worker_launch_for(app, fn_), *logger_), clock_, Timers(timers_, timer_thread_.get()),
                                                  *logger_, metrics_);
  }
  // Starts an invocation whose result arrives later; `timeout` > 0 gives it a deadline.
  std::shared_ptr<struct Pending> start(const std::string& id, Duration timeout = {}, std::string payload = {});
  // Waits (bounded, real time) for the instance count to reach `n`.
  bool wait_instances(int n) {
    for (int i = 0; i < 2000; ++i) {
      if (executor_->instances() == n) return true;
      std::this_thread::sleep_for(5ms);
    }
    return false;
  }
  void advance(Duration d) {
    clock_.advance(d);
    timer_thread_->wake();
  }

  fs::path dir_;
  int devnull_ = -1;
  ManualClock clock_;
  TimerQueue timers_;
  std::unique_ptr<TimerThread> timer_thread_;
  std::unique_ptr<LogSink> sink_;
  std::unique_ptr<Logger> logger_;
  Metrics metrics_{{"hello"}};
  FunctionSpec fn_;
  std::unique_ptr<InstanceFleet> executor_;
};

// A call that runs in the background: its result arrives later, or never.
struct Pending {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<Result> result;
  bool wait(Duration d) {
    std::unique_lock l(mu);
    return cv.wait_for(l, d, [&] { return result.has_value(); });
  }
  bool done() {
    std::lock_guard l(mu);
    return result.has_value();
  }
};

std::shared_ptr<Pending> FleetTest::start(const std::string& id, Duration timeout, std::string payload) {
  auto p = std::make_shared<Pending>();
  Invocation inv;
  inv.id = id;
  inv.function = "hello";
  inv.started = clock_.now();
  if (timeout > Duration{}) inv.deadline = inv.started + timeout;
  inv.time = std::chrono::system_clock::now();
  inv.http = HttpRequest{"GET", "/", "", {}, {}};
  inv.payload = std::move(payload);
  executor_->start(inv, [p](Result&& r) {
    std::lock_guard l(p->mu);
    p->result = std::move(r);
    p->cv.notify_all();
  });
  return p;
}

// A start from zero sends the work that waits for it right behind init, up to the function's
// concurrency: the worker answers ready only once two invocations have arrived, so without
// that it would never start (the start timeout runs on the manual clock, which stands still).
TEST_F(FleetTest, AStartFromZeroSendsTheWaitingWorkBehindInitUpToTheConcurrency) {
  make_start_worker({"hold", "2"}, /*concurrency=*/2, /*max_instances=*/1);
  auto a = start("a");
  auto b = start("b");
  auto c = start("c");  // no room behind init: it waits for ready
  for (auto* p : {&a, &b, &c}) {
    ASSERT_TRUE((*p)->wait(20s)) << "the worker never saw two invocations before ready";
    ASSERT_EQ((*p)->result->outcome, Outcome::success) << (*p)->result->error.message;
  }
  EXPECT_EQ(a->result->http->body, "behind init");
  EXPECT_EQ(b->result->http->body, "behind init");
  EXPECT_EQ(c->result->http->body, "after ready");
  // The time they waited for the start is the pool's queue wait, counted when ready came.
  EXPECT_NE(metrics_.render().find("nimbus_queue_wait_seconds_count{function=\"hello\"} 3\n"), std::string::npos)
      << metrics_.render();
}

// What goes behind init stays within half the pipe (32 KiB): a bigger request waits for ready,
// so that writing to a worker still loading its code never blocks the host.
TEST_F(FleetTest, WorkBeyondThePipeBudgetWaitsForReady) {
  make_start_worker({"hold", "1"}, /*concurrency=*/2, /*max_instances=*/1);
  auto a = start("a");
  auto b = start("b", {}, std::string(40 * 1024, 'b'));
  for (auto* p : {&a, &b}) {
    ASSERT_TRUE((*p)->wait(20s));
    ASSERT_EQ((*p)->result->outcome, Outcome::success) << (*p)->result->error.message;
  }
  EXPECT_EQ(a->result->http->body, "behind init");  // and nothing more was waiting in the pipe
  EXPECT_EQ(b->result->http->body, "after ready");
}

// Work sent behind init whose deadline passes while the worker is still starting fails as a
// timeout; the worker, which overran nothing, is not killed, and takes the next work.
TEST_F(FleetTest, WorkWhoseDeadlinePassesWhileTheWorkerStartsTimesOutAndTheWorkerLives) {
  make_start_worker({"hold", "2"}, /*concurrency=*/2, /*max_instances=*/1);
  auto a = start("a", 5s);
  ASSERT_TRUE(wait_instances(1));
  advance(6s);
  ASSERT_TRUE(a->wait(20s));
  EXPECT_EQ(a->result->outcome, Outcome::timeout) << a->result->error.message;
  auto b = start("b");  // the worker, holding "a", answers ready with this second one
  ASSERT_TRUE(b->wait(20s)) << "the starting worker was killed or given nothing more";
  EXPECT_EQ(b->result->outcome, Outcome::success) << b->result->error.message;
  EXPECT_EQ(b->result->http->body, "behind init");
  EXPECT_EQ(executor_->instances(), 1);
}

// Work that waited in line past its deadline is not sent when an instance frees up: no worker
// is killed for work it never had.
TEST_F(FleetTest, WorkWhoseDeadlinePassedInLineIsNotSentAndKillsNoWorker) {
  const fs::path go = dir_ / "go";
  make_start_worker({"hold", "2", go.string()}, /*concurrency=*/2, /*max_instances=*/1);
  auto a = start("a", 5s);
  auto b = start("b");
  auto c = start("c", 5s);  // no room behind init: it waits in line for ready
  advance(6s);              // the worker holds ready until `go` exists
  ASSERT_TRUE(a->wait(20s));
  EXPECT_EQ(a->result->outcome, Outcome::timeout) << a->result->error.message;
  std::ofstream(go) << "go";
  ASSERT_TRUE(c->wait(20s));
  EXPECT_EQ(c->result->outcome, Outcome::timeout) << c->result->error.message;
  ASSERT_TRUE(b->wait(20s));
  EXPECT_EQ(b->result->outcome, Outcome::success) << b->result->error.message;
  auto d = start("d");  // the same worker: a new one would wait for two invocations
  ASSERT_TRUE(d->wait(20s)) << "the worker was killed";
  EXPECT_EQ(d->result->outcome, Outcome::success) << d->result->error.message;
  EXPECT_EQ(d->result->http->body, "after ready");
}

// A start that takes longer than the bound answers the work behind its init with 503
// (cold_start_timeout), and the instance is killed: that work must not run after its caller
// heard it did not. The next request starts a new instance.
TEST_F(FleetTest, AStartPastTheBoundFailsTheWorkBehindInitAndTheWorkerIsKilled) {
  const fs::path go = dir_ / "go";
  make_start_worker({"hold", "1", go.string()}, /*concurrency=*/1, /*max_instances=*/1);
  auto a = start("a");
  ASSERT_TRUE(wait_instances(1));
  advance(11s);  // past the 10 s start bound
  ASSERT_TRUE(a->wait(20s));
  EXPECT_EQ(a->result->outcome, Outcome::overloaded);
  EXPECT_EQ(a->result->error.type, "cold_start_timeout") << a->result->error.message;
  EXPECT_TRUE(wait_instances(0)) << "the worker that did not start was not killed";
  std::ofstream(go) << "go";
  auto b = start("b");
  ASSERT_TRUE(b->wait(20s));
  ASSERT_EQ(b->result->outcome, Outcome::success) << b->result->error.message;
  EXPECT_EQ(b->result->http->body, "behind init");
}

// A worker that dies before ready hands what was sent behind its init back to the line, for
// another instance that is starting; only when none is left does the work fail.
TEST_F(FleetTest, WorkBehindTheInitOfAWorkerThatNeverStartsGoesToAnotherInstance) {
  make_start_worker({"fail-first", dir_.string()}, /*concurrency=*/1, /*max_instances=*/2);
  auto a = start("a");  // behind the init of the first instance, which will fail
  auto b = start("b");  // the first has no room: a second instance starts for it
  ASSERT_TRUE(wait_instances(2));
  std::ofstream(dir_ / "go") << "go";  // the first instance exits without ready
  for (auto* p : {&a, &b}) {
    ASSERT_TRUE((*p)->wait(20s));
    ASSERT_EQ((*p)->result->outcome, Outcome::success) << (*p)->result->error.message;
  }
  // Which instance ran first is up to the scheduler; one of the two went back in line.
  std::multiset<std::string> bodies{a->result->http->body, b->result->http->body};
  EXPECT_EQ(bodies, (std::multiset<std::string>{"after ready", "behind init"}));
}

TEST_F(FleetTest, ADeadlineKillsTheWorkerOnceWorkIsPastItAndAnEarlierOneIsFollowed) {
  std::ofstream(dir_ / "app.py") << "import asyncio\n"
                                    "def hello(req, ctx):\n    return 'hi'\n"
                                    "async def hold(req, ctx):\n"
                                    "    await asyncio.sleep(float(req.query.get('s', '0')))\n"
                                    "    return 'held'\n";
  make(0, 600s, "app.py:hold", /*concurrency=*/2);
  auto start = [&](const std::string& id, const std::string& query, Duration timeout) {
    auto p = std::make_shared<Pending>();
    Invocation inv;
    inv.id = id;
    inv.function = "hello";
    inv.started = clock_.now();
    inv.deadline = inv.started + timeout;
    inv.time = std::chrono::system_clock::now();
    inv.http = HttpRequest{"GET", "/", query, {}, {}};
    executor_->start(inv, [p](Result&& r) {
      std::lock_guard l(p->mu);
      p->result = std::move(r);
      p->cv.notify_all();
    });
    return p;
  };
  // One that finishes well within its deadline (t+10 s) leaves the timer armed for then.
  auto quick = start("quick", "s=0", 10s);
  ASSERT_TRUE(quick->wait(20s));
  ASSERT_EQ(quick->result->outcome, Outcome::success) << quick->result->error.message;
  auto held = start("held", "s=60", 20s);  // deadline t+20 s
  std::this_thread::sleep_for(100ms);
  advance(11s);  // t+11: the timer fires for t+10, finds nothing past its deadline
  std::this_thread::sleep_for(200ms);  // give a wrong kill the chance to show
  EXPECT_FALSE(held->done());
  EXPECT_EQ(executor_->instances(), 1);
  advance(10s);  // t+21: "held" is past its deadline
  ASSERT_TRUE(held->wait(20s));
  EXPECT_EQ(held->result->outcome, Outcome::timeout);  // over its timeout: a timeout, always
  EXPECT_NE(held->result->error.message.find("killed"), std::string::npos) << held->result->error.message;

  // A later arrival with an earlier deadline than the one armed brings the timer forward.
  auto slow = start("slow", "s=60", 100s);
  auto warm = start("warm", "s=0", 100s);  // answered: the new instance is ready
  ASSERT_TRUE(warm->wait(20s));
  auto urgent = start("urgent", "s=60", 5s);
  std::this_thread::sleep_for(200ms);
  advance(6s);
  ASSERT_TRUE(urgent->wait(20s)) << "the earlier deadline was not followed";
  EXPECT_EQ(urgent->result->outcome, Outcome::timeout);
  ASSERT_TRUE(slow->wait(20s));  // it shared the killed worker
  EXPECT_EQ(slow->result->outcome, Outcome::crashed);
  EXPECT_NE(slow->result->error.message.find("invocation urgent overran its deadline"), std::string::npos)
      << slow->result->error.message;
}

TEST_F(FleetTest, ScalesFromZeroAndBackToZeroAfterIdleTimeout) {
  make(/*min_instances=*/0, 60s);
  ASSERT_TRUE(executor_->warm_up().ok());
  EXPECT_EQ(executor_->instances(), 0);
  Result r = invoke();  // waits for the cold start
  ASSERT_EQ(r.outcome, Outcome::success) << r.error.message;
  EXPECT_EQ(r.http->body, "hi");
  EXPECT_EQ(executor_->instances(), 1);

  advance(30s);                        // idle, but not for long enough
  std::this_thread::sleep_for(100ms);  // give a wrong retirement the chance to show
  EXPECT_EQ(executor_->instances(), 1);
  advance(31s);
  EXPECT_TRUE(wait_instances(0));

  r = invoke();  // from zero again
  EXPECT_EQ(r.outcome, Outcome::success) << r.error.message;
  EXPECT_NE(metrics_.render().find("nimbus_cold_starts_total{function=\"hello\"} 2\n"), std::string::npos);
}

TEST_F(FleetTest, UseResetsTheIdleClock) {
  make(0, 60s);
  ASSERT_EQ(invoke().outcome, Outcome::success);
  advance(50s);
  ASSERT_EQ(invoke().outcome, Outcome::success);  // used again at t=50 s
  advance(50s);                                   // t=100 s: idle 50 s only
  std::this_thread::sleep_for(100ms);             // give a wrong retirement the chance to show
  EXPECT_EQ(executor_->instances(), 1);
  advance(11s);
  EXPECT_TRUE(wait_instances(0));
}

TEST_F(FleetTest, MinInstancesAreStartedAndKeptWarm) {
  make(/*min_instances=*/1, 10s);
  ASSERT_TRUE(executor_->warm_up().ok());
  EXPECT_EQ(executor_->instances(), 1);
  advance(1h);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(executor_->instances(), 1);
  EXPECT_EQ(invoke().outcome, Outcome::success);
}

// Work held open in a Node worker (concurrency 4 per instance) until the test releases it.
TEST_F(FleetTest, AutoscalerAddsInstancesUnderSustainedLoadAndRetiresTheSurplus) {
  const fs::path release = dir_ / "release";
  std::ofstream(dir_ / "hold.js") << "const fs = require('fs');\n"
                                     "exports.hold = async () => {\n"
                                     "  while (!fs.existsSync('" << release.string()
                                  << "')) await new Promise(r => setTimeout(r, 5));\n"
                                     "  return 'released';\n};\n";
  AppSpec app;
  app.name = "t";
  app.dir = dir_;
  fn_.name = "hello";
  fn_.runtime = RuntimeKind::node;
  fn_.handler = "hold.js:hold";
  fn_.concurrency = 4;
  fn_.max_instances = 4;
  fn_.idle_timeout = 1h;  // only the autoscaler retires here
  executor_ = std::make_unique<InstanceFleet>(fn_, 0, fleet_options_for(fn_), std::make_unique<FramesTransport>(fn_, worker_launch_for(app, fn_), *logger_), clock_, Timers(timers_, timer_thread_.get()),
                                                *logger_, metrics_);
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  auto start = [&](int n) {
    for (int i = 0; i < n; ++i) {
      Invocation inv;
      inv.id = "0123456789abcdef0123456789abc" + std::to_string(100 + i);
      inv.function = "hello";
      executor_->start(inv, [&](Result&& r) {
        EXPECT_EQ(r.outcome, Outcome::success) << r.error.message;
        std::lock_guard l(mu);
        ++done;
        cv.notify_all();
      });
    }
  };
  start(4);  // one instance has room for all four: the cold start brings exactly one
  ASSERT_TRUE(wait_instances(1));
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(executor_->instances(), 1);

  // Four in flight against a target of 0.7 x 4 = 2.8 per instance: the next tick asks for two.
  advance(2s);
  EXPECT_TRUE(wait_instances(2));
  advance(2s);
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(executor_->instances(), 2) << "steady load, steady count";

  std::ofstream(release) << "go";
  {
    std::unique_lock l(mu);
    ASSERT_TRUE(cv.wait_for(l, 20s, [&] { return done == 4; }));
  }
  advance(30s);  // idle, but the stable window (60 s) still holds the load
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(executor_->instances(), 2);
  advance(31s);  // a whole stable window with nothing in flight: back to one (zero is idle_timeout's)
  EXPECT_TRUE(wait_instances(1));
  advance(1h);
  EXPECT_TRUE(wait_instances(0));
}

}  // namespace
}  // namespace nimbus
