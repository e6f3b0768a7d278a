#pragma once
// What trigger tests stand on: a temporary folder holding a real (SQLite) store, a ManualClock
// with its timer thread (tests advance it and wake the thread, never sleep), a logger into
// /dev/null, and a host's worth of parts around them: one function's pool and the trigger.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "observe/log.h"
#include "observe/metrics.h"
#include "pool/function_pools.h"
#include "pool/worker_threads.h"
#include "store/store.h"

namespace nimbus {

// What a test's executor saw, in order; the test waits (bounded) for the ones to come.
template <class T>
struct Recorded {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<T> list;

  bool wait_for(std::size_t n) {
    std::unique_lock l(mu);
    return cv.wait_for(l, std::chrono::seconds(10), [&] { return list.size() >= n; });
  }
  std::size_t count() {
    std::lock_guard l(mu);
    return list.size();
  }
};

// One host's worth of parts around a test's shared store: the app's first function, run by
// `executor`, and a Trigger over it. Several on one store are several hosts.
template <class Trigger>
struct HostParts {
  HostParts(const AppSpec& app, Store& store, ManualClock& clock, TimerQueue& timers, TimerThread& thread,
            Logger& logger, std::unique_ptr<Executor> executor)
      : workers(std::make_unique<WorkerThreads>(2)),
        metrics({app.functions[0].name}),
        ctx{clock, Timers(timers, &thread), *workers, metrics} {
    pools.add(std::make_unique<FunctionPool>(app.functions[0], 0, std::move(executor), ctx));
    trigger = std::make_unique<Trigger>(TriggerContext{app, pools, store, clock, Timers(timers, &thread), logger});
  }
  ~HostParts() {
    trigger->stop_taking_work();
    // Triggers that hold work past their invocations (moving a file) finish it first.
    if constexpr (requires(Trigger & t) { t.wait_idle(TimePoint{}); }) {
      EXPECT_TRUE(trigger->wait_idle(std::chrono::steady_clock::now() + std::chrono::seconds(10)));
    }
    workers.reset();  // runs still on a worker thread finish before the pool goes
  }
  std::unique_ptr<WorkerThreads> workers;
  Metrics metrics;
  PoolContext ctx;
  FunctionPools pools;
  std::unique_ptr<Trigger> trigger;
};

class TriggerTest : public ::testing::Test {
 protected:
  // `prefix` names the temporary folder; the app is left for the test to fill in.
  void set_up(const std::string& prefix) {
    dir_ = std::filesystem::temp_directory_path() / (prefix + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(dir_);
    auto s = open_store("sqlite:state.db", dir_, clock_);
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(*s);
    devnull_ = ::open("/dev/null", O_WRONLY);
    sink_ = std::make_unique<LogSink>(devnull_);
    logger_ = std::make_unique<Logger>(*sink_, clock_, "t");
    thread_ = std::make_unique<TimerThread>(clock_, timers_);
    app_.name = "t";
    app_.dir = dir_;
  }
  void TearDown() override {
    thread_.reset();
    if (store_) store_->close();
    store_.reset();
    logger_.reset();
    sink_.reset();
    if (devnull_ >= 0) ::close(devnull_);
    std::filesystem::remove_all(dir_);
  }
  template <class Trigger>
  std::unique_ptr<HostParts<Trigger>> host_of(std::unique_ptr<Executor> executor) {
    return std::make_unique<HostParts<Trigger>>(app_, *store_, clock_, timers_, *thread_, *logger_, std::move(executor));
  }
  void advance(Duration d) {
    clock_.advance(d);
    thread_->wake();
  }

  std::filesystem::path dir_;
  ManualClock clock_;
  TimerQueue timers_;
  std::unique_ptr<TimerThread> thread_;
  std::unique_ptr<Store> store_;
  int devnull_ = -1;
  std::unique_ptr<LogSink> sink_;
  std::unique_ptr<Logger> logger_;
  AppSpec app_;
};

}  // namespace nimbus
