// FunctionPool: the concurrency limit, the wait queue, deadlines (while running and while
// waiting), close(), and the inline fast path. Time is a ManualClock; deadlines fire when the
// test runs the TimerQueue's due callbacks itself. `done` must be called exactly once always.
#include "pool/function_pool.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "observe/metrics.h"
#include "pool/worker_threads.h"

namespace nimbus {
namespace {

using namespace std::chrono_literals;
constexpr auto kGenerous = 10s;  // real-time bound for waiting on other threads only

// What the test executor saw, shared between the test and the executor the pool owns.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool hold = true;                 // calls block until released
  std::set<std::string> released;   // ids allowed to return
  std::vector<std::string> started;
  std::vector<std::string> returned;
  int in_call = 0;
  int max_in_call = 0;

  void release(const std::string& id) {
    std::lock_guard lock(mu);
    released.insert(id);
    cv.notify_all();
  }
  void release_all() {
    std::lock_guard lock(mu);
    hold = false;
    cv.notify_all();
  }
  bool wait_started(std::size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kGenerous, [&] { return started.size() >= n; });
  }
  bool wait_started(const std::string& id) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kGenerous, [&] { return has(started, id); });
  }
  bool was_started(const std::string& id) {
    std::lock_guard lock(mu);
    return has(started, id);
  }
  bool has_returned(const std::string& id) {
    std::lock_guard lock(mu);
    return has(returned, id);
  }
  static bool has(const std::vector<std::string>& v, const std::string& id) {
    return std::find(v.begin(), v.end(), id) != v.end();
  }
};

// A synchronous executor whose call() blocks until the test releases that invocation.
class GatedExecutor final : public Executor {
 public:
  explicit GatedExecutor(std::shared_ptr<Gate> gate, int instances = 1) : gate_(std::move(gate)), instances_(instances) {}
  Mode mode() const override { return Mode::synchronous; }
  // As a fleet: `concurrency` on each of `instances`.
  int capacity(const FunctionSpec& fn) const override { return fn.concurrency * instances_; }
  Result call(const Invocation& inv) override {
    std::unique_lock lock(gate_->mu);
    gate_->started.push_back(inv.id);
    gate_->max_in_call = std::max(gate_->max_in_call, ++gate_->in_call);
    gate_->cv.notify_all();
    gate_->cv.wait(lock, [&] { return !gate_->hold || gate_->released.count(inv.id) > 0; });
    --gate_->in_call;
    gate_->returned.push_back(inv.id);
    gate_->cv.notify_all();
    Result r;
    r.http = HttpReply{200, {}, "ran " + inv.id};
    return r;
  }

 private:
  std::shared_ptr<Gate> gate_;
  int instances_;
};

// Every completion, by invocation id.
struct Completions {
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, std::vector<Result>> by_id;

  Completion for_id(const std::string& id) {
    return [this, id](Result&& r) {
      std::lock_guard lock(mu);
      by_id[id].push_back(std::move(r));
      cv.notify_all();
    };
  }
  bool wait(const std::string& id) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kGenerous, [&] { return by_id.count(id) > 0; });
  }
  bool has(const std::string& id) {
    std::lock_guard lock(mu);
    return by_id.count(id) > 0;
  }
  std::size_t count(const std::string& id) {
    std::lock_guard lock(mu);
    auto it = by_id.find(id);
    return it == by_id.end() ? 0 : it->second.size();
  }
  Result first(const std::string& id) {
    std::lock_guard lock(mu);
    auto it = by_id.find(id);
    if (it == by_id.end() || it->second.empty()) {
      ADD_FAILURE() << "no result for " << id;
      return {};
    }
    return it->second.front();
  }
};

class FunctionPoolTest : public ::testing::Test {
 protected:
  void make_pool(int concurrency, int wait_queue, bool blocking = true, int instances = 1) {
    spec_.name = "orders";
    spec_.concurrency = concurrency;
    spec_.wait_queue = wait_queue;
    spec_.blocking = blocking;
    pool_ = std::make_unique<FunctionPool>(
        spec_, 0, std::make_unique<GatedExecutor>(gate_, instances),
        PoolContext{clock_, Timers(timers_, nullptr), *workers_, metrics_});
  }

  void TearDown() override {
    // Let every call return and the workers drain before the pool goes away, then check the
    // promise that matters most: each invocation heard back exactly once.
    gate_->release_all();
    workers_.reset();
    for (auto& [id, results] : done_.by_id) EXPECT_EQ(results.size(), 1u) << "done called " << results.size() << " times for " << id;
    for (const auto& id : dispatched_) EXPECT_EQ(done_.count(id), 1u) << id;
    if (pool_) {
      EXPECT_EQ(pool_->running(), 0);
      EXPECT_EQ(pool_->waiting(), 0);
    }
    pool_.reset();
    std::string text = metrics_.render();
    EXPECT_EQ(check_prometheus_text(text), "") << text;
    EXPECT_NE(text.find("nimbus_invocations_in_flight{function=\"orders\"} 0\n"), std::string::npos)
        << "every in-flight count is given back:\n" << text;
  }

  Invocation inv(const std::string& id, Duration timeout = Duration::zero()) {
    Invocation i;
    i.id = id;
    i.function = "orders";
    i.trigger = TriggerKind::http;
    i.started = clock_.now();
    if (timeout != Duration::zero()) i.deadline = clock_.now() + timeout;
    return i;
  }

  void dispatch(const std::string& id, Duration timeout = Duration::zero()) {
    dispatched_.push_back(id);
    pool_->dispatch(inv(id, timeout), done_.for_id(id));
  }

  // Fires what the timer queue holds that is due now, as a TimerThread would.
  std::size_t run_due_timers() {
    auto due = timers_.take_due(clock_.now());
    for (auto& fn : due) fn();
    return due.size();
  }

  double invocations(const std::string& outcome) {
    std::string key = "nimbus_invocations_total{function=\"orders\",trigger=\"http\",outcome=\"" + outcome + "\"} ";
    std::string text = metrics_.render();
    auto at = text.find(key);
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + key.size()));
  }

  ManualClock clock_;
  TimerQueue timers_;
  Metrics metrics_{{"orders"}};
  std::unique_ptr<WorkerThreads> workers_ = std::make_unique<WorkerThreads>(4);
  std::shared_ptr<Gate> gate_ = std::make_shared<Gate>();
  FunctionSpec spec_;
  std::unique_ptr<FunctionPool> pool_;
  Completions done_;
  std::vector<std::string> dispatched_;
};

TEST_F(FunctionPoolTest, ConcurrencyLimitHolds) {
  make_pool(/*concurrency=*/2, /*wait_queue=*/4);
  EXPECT_FALSE(pool_->runs_inline());
  dispatch("a");
  dispatch("b");
  dispatch("c");
  ASSERT_TRUE(gate_->wait_started(2));
  EXPECT_EQ(pool_->running(), 2);
  EXPECT_EQ(pool_->waiting(), 1) << "the third call waits for a slot";
  EXPECT_FALSE(gate_->was_started("c"));
  EXPECT_FALSE(done_.has("c"));

  gate_->release("a");
  ASSERT_TRUE(done_.wait("a"));
  EXPECT_EQ(done_.first("a").outcome, Outcome::success);
  ASSERT_TRUE(gate_->wait_started("c")) << "a freed slot goes to the waiting call";
  EXPECT_EQ(pool_->waiting(), 0);

  gate_->release("b");
  gate_->release("c");
  ASSERT_TRUE(done_.wait("b"));
  ASSERT_TRUE(done_.wait("c"));
  auto c = done_.first("c");
  EXPECT_EQ(c.outcome, Outcome::success);
  ASSERT_TRUE(c.http.has_value());
  EXPECT_EQ(c.http->body, "ran c");
  // Only the call that waited for a slot has a queue-wait observation.
  EXPECT_NE(metrics_.render().find("nimbus_queue_wait_seconds_count{function=\"orders\"} 1\n"), std::string::npos)
      << metrics_.render();
  std::lock_guard lock(gate_->mu);
  EXPECT_EQ(gate_->max_in_call, 2) << "never more than `concurrency` at once";
}

TEST_F(FunctionPoolTest, ManyCallsNeverExceedTheLimit) {
  make_pool(/*concurrency=*/3, /*wait_queue=*/100);
  for (int i = 0; i < 30; ++i) dispatch("call" + std::to_string(i));
  ASSERT_TRUE(gate_->wait_started(3));
  EXPECT_EQ(pool_->waiting(), 27);
  gate_->release_all();
  for (int i = 0; i < 30; ++i) ASSERT_TRUE(done_.wait("call" + std::to_string(i)));
  std::lock_guard lock(gate_->mu);
  EXPECT_LE(gate_->max_in_call, 3);
  EXPECT_EQ(gate_->started.size(), 30u);
}

TEST_F(FunctionPoolTest, FullWaitQueueIsOverloadedAtOnce) {
  make_pool(/*concurrency=*/1, /*wait_queue=*/1);
  dispatch("running");
  ASSERT_TRUE(gate_->wait_started("running"));
  dispatch("waiting");
  EXPECT_EQ(pool_->waiting(), 1);
  dispatch("shed");
  // Answered before dispatch() returned, without running.
  ASSERT_TRUE(done_.has("shed"));
  auto r = done_.first("shed");
  EXPECT_EQ(r.outcome, Outcome::overloaded);
  EXPECT_EQ(r.error.type, "overloaded");
  EXPECT_NE(r.error.message.find("concurrency limit (1)"), std::string::npos) << r.error.message;
  EXPECT_FALSE(r.http.has_value());
  EXPECT_FALSE(gate_->was_started("shed"));
  EXPECT_EQ(pool_->waiting(), 1);
  EXPECT_EQ(invocations("overloaded"), 1);

  gate_->release_all();
  ASSERT_TRUE(done_.wait("running"));
  ASSERT_TRUE(done_.wait("waiting"));
  EXPECT_EQ(done_.first("waiting").outcome, Outcome::success);
}

// The pool admits what its executor can run (a fleet: concurrency x instances), not the
// function's per-instance concurrency: nobody patches the spec for it.
TEST_F(FunctionPoolTest, ThePoolAdmitsWhatItsExecutorCanRun) {
  make_pool(/*concurrency=*/2, /*wait_queue=*/0, /*blocking=*/true, /*instances=*/2);  // 4 worker threads
  EXPECT_EQ(pool_->capacity(), 4);
  EXPECT_EQ(pool_->spec().concurrency, 2);
  for (int i = 0; i < 4; ++i) dispatch("r" + std::to_string(i));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(gate_->wait_started("r" + std::to_string(i)));
  dispatch("fifth");
  ASSERT_TRUE(done_.has("fifth"));
  EXPECT_EQ(done_.first("fifth").outcome, Outcome::overloaded);
  EXPECT_NE(done_.first("fifth").error.message.find("concurrency limit (4)"), std::string::npos);
}

TEST_F(FunctionPoolTest, ShedCallLeavesNoTimerBehind) {
  make_pool(/*concurrency=*/1, /*wait_queue=*/0);
  dispatch("a");
  ASSERT_TRUE(gate_->wait_started("a"));
  dispatch("shed", 30s);
  ASSERT_TRUE(done_.has("shed"));
  EXPECT_EQ(done_.first("shed").outcome, Outcome::overloaded);
  EXPECT_EQ(timers_.size(), 0u) << "a shed call must not keep a deadline timer until it is due";
}

TEST_F(FunctionPoolTest, ZeroWaitQueueShedsEverythingBeyondTheLimit) {
  make_pool(/*concurrency=*/1, /*wait_queue=*/0);
  dispatch("a");
  ASSERT_TRUE(gate_->wait_started("a"));
  dispatch("b");
  ASSERT_TRUE(done_.has("b"));
  EXPECT_EQ(done_.first("b").outcome, Outcome::overloaded);
}

TEST_F(FunctionPoolTest, ACompletionThatDispatchesAgainFindsTheSlotFree) {
  // A queue consumer hears a result and, now with room, starts the next message from that
  // completion: the finished invocation's slot must already be free, or it is overloaded.
  make_pool(/*concurrency=*/1, /*wait_queue=*/0);
  dispatched_.push_back("a");
  dispatched_.push_back("b");
  auto b_done = done_.for_id("b");
  auto a_done = done_.for_id("a");
  pool_->dispatch(inv("a"), [this, a_done, b_done](Result&& r) mutable {
    a_done(std::move(r));
    pool_->dispatch(inv("b"), b_done);
  });
  ASSERT_TRUE(gate_->wait_started("a"));
  gate_->release("a");
  ASSERT_TRUE(done_.wait("a"));
  if (done_.has("b")) FAIL() << "b was refused: " << done_.first("b").error.message;
  ASSERT_TRUE(gate_->wait_started("b"));
  gate_->release("b");
  ASSERT_TRUE(done_.wait("b"));
  EXPECT_EQ(done_.first("b").outcome, Outcome::success);
}

TEST_F(FunctionPoolTest, DeadlineWhileRunningIsATimeoutAndTheSlotStaysTaken) {
  make_pool(/*concurrency=*/1, /*wait_queue=*/4);
  dispatch("slow", 100ms);
  ASSERT_TRUE(gate_->wait_started("slow"));

  clock_.advance(99ms);
  EXPECT_EQ(run_due_timers(), 0u) << "not due yet";
  EXPECT_FALSE(done_.has("slow"));

  clock_.advance(1ms);
  EXPECT_EQ(run_due_timers(), 1u);
  ASSERT_TRUE(done_.has("slow")) << "the caller hears the timeout when the deadline passes";
  auto r = done_.first("slow");
  EXPECT_EQ(r.outcome, Outcome::timeout);
  EXPECT_EQ(r.error.type, "timeout");
  EXPECT_NE(r.error.message.find("orders"), std::string::npos);
  EXPECT_FALSE(gate_->has_returned("slow")) << "the function is still running";

  // The slot is still taken: the next call has to wait.
  EXPECT_EQ(pool_->running(), 1);
  dispatch("next");
  EXPECT_EQ(pool_->waiting(), 1);
  EXPECT_FALSE(gate_->was_started("next"));

  gate_->release("slow");
  ASSERT_TRUE(gate_->wait_started("next")) << "the slot frees when the function really returns";
  EXPECT_EQ(done_.count("slow"), 1u) << "the late real result is dropped";
  gate_->release("next");
  ASSERT_TRUE(done_.wait("next"));
  EXPECT_EQ(done_.first("next").outcome, Outcome::success);
  EXPECT_EQ(invocations("timeout"), 1);
  EXPECT_EQ(invocations("success"), 1) << "the timed-out call is counted once, as a timeout";
}

TEST_F(FunctionPoolTest, FinishingBeforeTheDeadlineCancelsIt) {
  make_pool(/*concurrency=*/1, /*wait_queue=*/4);
  dispatch("quick", 1s);
  ASSERT_TRUE(gate_->wait_started("quick"));
  EXPECT_EQ(timers_.size(), 1u);
  gate_->release("quick");
  ASSERT_TRUE(done_.wait("quick"));
  EXPECT_EQ(done_.first("quick").outcome, Outcome::success);
  // finish() cancels the timer before calling done, so it is gone by now.
  EXPECT_EQ(timers_.size(), 0u);
  clock_.advance(2s);
  EXPECT_EQ(run_due_timers(), 0u);
  EXPECT_EQ(done_.count("quick"), 1u);
}

TEST_F(FunctionPoolTest, DeadlineWhileWaitingIsATimeoutAndItNeverRuns) {
  make_pool(/*concurrency=*/1, /*wait_queue=*/4);
  dispatch("blocker");
  ASSERT_TRUE(gate_->wait_started("blocker"));
  dispatch("queued", 50ms);
  EXPECT_EQ(pool_->waiting(), 1);

  clock_.advance(50ms);
  EXPECT_EQ(run_due_timers(), 1u);
  ASSERT_TRUE(done_.has("queued"));
  auto r = done_.first("queued");
  EXPECT_EQ(r.outcome, Outcome::timeout);
  EXPECT_EQ(r.error.type, "timeout");
  EXPECT_EQ(pool_->waiting(), 0) << "a timed-out call leaves the line";

  gate_->release("blocker");
  ASSERT_TRUE(done_.wait("blocker"));
  // Drain the workers: anything the pool would still start has run by then.
  workers_.reset();
  EXPECT_FALSE(gate_->was_started("queued")) << "a call that timed out waiting must never run";
  EXPECT_EQ(done_.count("queued"), 1u);
}

TEST_F(FunctionPoolTest, ClosedPoolIsUnavailableButAdmittedCallsFinish) {
  make_pool(/*concurrency=*/1, /*wait_queue=*/4);
  dispatch("admitted");
  ASSERT_TRUE(gate_->wait_started("admitted"));
  dispatch("queued");
  pool_->close();

  dispatch("late");
  ASSERT_TRUE(done_.has("late")) << "refused before dispatch() returns";
  auto r = done_.first("late");
  EXPECT_EQ(r.outcome, Outcome::unavailable);
  EXPECT_EQ(r.error.type, "unavailable");
  EXPECT_NE(r.error.message.find("shutting down"), std::string::npos) << r.error.message;
  EXPECT_FALSE(gate_->was_started("late"));

  gate_->release_all();
  ASSERT_TRUE(done_.wait("admitted"));
  ASSERT_TRUE(done_.wait("queued"));
  EXPECT_EQ(done_.first("admitted").outcome, Outcome::success);
  EXPECT_EQ(done_.first("queued").outcome, Outcome::success);
  EXPECT_EQ(invocations("unavailable"), 1);
}

TEST_F(FunctionPoolTest, InlineFastPathReturnsTheResult) {
  gate_->release_all();  // calls return at once
  make_pool(/*concurrency=*/2, /*wait_queue=*/4, /*blocking=*/false);
  ASSERT_TRUE(pool_->runs_inline());
  auto thread_id = std::this_thread::get_id();
  auto r = pool_->try_run_inline(inv("fast"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->outcome, Outcome::success);
  ASSERT_TRUE(r->http.has_value());
  EXPECT_EQ(r->http->body, "ran fast");
  EXPECT_EQ(pool_->running(), 0);
  EXPECT_EQ(std::this_thread::get_id(), thread_id);
  EXPECT_EQ(invocations("success"), 1);

  // dispatch() on an inline pool also runs on the caller's thread.
  dispatch("dispatched");
  ASSERT_TRUE(done_.has("dispatched"));
  EXPECT_EQ(done_.first("dispatched").outcome, Outcome::success);
}

TEST_F(FunctionPoolTest, InlineFastPathDeclinesAtTheLimit) {
  make_pool(/*concurrency=*/1, /*wait_queue=*/4, /*blocking=*/false);
  ASSERT_TRUE(pool_->runs_inline());
  std::optional<Result> other;
  std::thread t([&] { other = pool_->try_run_inline(inv("holder")); });
  ASSERT_TRUE(gate_->wait_started("holder"));
  EXPECT_EQ(pool_->running(), 1);

  EXPECT_FALSE(pool_->try_run_inline(inv("declined")).has_value()) << "at the limit: use dispatch()";
  EXPECT_FALSE(gate_->was_started("declined"));

  gate_->release("holder");
  t.join();
  ASSERT_TRUE(other.has_value());
  EXPECT_EQ(other->outcome, Outcome::success);
  EXPECT_EQ(pool_->running(), 0);

  gate_->release_all();
  auto again = pool_->try_run_inline(inv("again"));
  ASSERT_TRUE(again.has_value()) << "the slot is free again";
  EXPECT_EQ(again->outcome, Outcome::success);
}

TEST_F(FunctionPoolTest, InlineFastPathDeclinesWhenClosedOrNotInline) {
  gate_->release_all();
  make_pool(/*concurrency=*/1, /*wait_queue=*/4, /*blocking=*/false);
  pool_->close();
  EXPECT_FALSE(pool_->try_run_inline(inv("x")).has_value());
  dispatch("y");
  ASSERT_TRUE(done_.has("y"));
  EXPECT_EQ(done_.first("y").outcome, Outcome::unavailable);

  make_pool(/*concurrency=*/1, /*wait_queue=*/4, /*blocking=*/true);
  EXPECT_FALSE(pool_->runs_inline());
  EXPECT_FALSE(pool_->try_run_inline(inv("z")).has_value()) << "blocking functions never run inline";
  EXPECT_FALSE(gate_->was_started("x"));
  EXPECT_FALSE(gate_->was_started("z"));
}

}  // namespace
}  // namespace nimbus
