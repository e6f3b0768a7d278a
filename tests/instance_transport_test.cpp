// The instance seam: the fleet (InstanceFleet) runs a function on any InstanceTransport.
// Here a transport of the test's own, with no process at all, shows that a new runtime kind
// is only a transport: the fleet starts instances on demand, waits for ready, spreads work by
// concurrency, hands outputs over with the result, fails what a lost instance held, and
// scales to zero.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include "observe/log.h"
#include "observe/metrics.h"
#include "runtime/instance.h"
#include "pool/fleet.h"

namespace nimbus {
namespace {

using namespace std::chrono_literals;

// Instances that are plain objects: ready when launched (on a thread of their own), and
// answer each invocation with its payload reversed and one output.
class LoopbackTransport final : public InstanceTransport {
 public:
  // Threads the instances answer on, joined by the test once the fleet has stopped.
  struct Threads {
    std::mutex mu;
    std::vector<std::thread> list;
    template <class F>
    void run(F f) {
      std::lock_guard lock(mu);
      list.emplace_back(std::move(f));
    }
    void join() {
      std::vector<std::thread> all;
      {
        std::lock_guard lock(mu);
        all.swap(list);
      }
      for (auto& t : all) t.join();
    }
  };
  std::shared_ptr<Threads> threads = std::make_shared<Threads>();

  struct Instance final : InstanceConnection {
    std::shared_ptr<Threads> threads;
    InstanceEvents events;
    int number = 0;
    std::atomic<bool> dead{false};
    bool send(std::string_view encoded) override {
      if (dead) return false;
      std::string id(encoded.substr(0, encoded.find('|')));
      std::string payload(encoded.substr(encoded.find('|') + 1));
      threads->run([events = events, number = number, id, payload] {
        events.output(id, OutputMessage{"out", payload, {}});
        Result r;
        r.http = HttpReply{200, {}, std::string(payload.rbegin(), payload.rend()) + "@" + std::to_string(number)};
        events.result(id, std::move(r));
      });
      return true;
    }
    std::size_t pipeline_capacity() const override { return 0; }  // nothing is sent before ready
    std::size_t launch_bytes() const override { return 0; }
    void shutdown(Duration) override { end("shut down"); }
    void kill() override { end("killed"); }
    int pid() const override { return 1000 + number; }
    void end(const std::string& why) {
      if (dead.exchange(true)) return;
      threads->run([events = events, why] { events.exit(0, why); });
    }
  };

  void encode(const Invocation& inv, std::string& out) const override { out = inv.id + "|" + inv.payload; }
  Expected<std::shared_ptr<InstanceConnection>> launch(uint64_t serial, std::vector<std::string> env,
                                                        InstanceEvents events) override {
    auto i = std::make_shared<Instance>();
    i->events = std::move(events);
    i->threads = threads;
    i->number = static_cast<int>(serial);
    env_seen = env;
    {
      std::lock_guard lock(mu);
      launched.push_back(i);
    }
    threads->run([ready = i->events.ready] { ready(); });
    return std::shared_ptr<InstanceConnection>(i);
  }

  std::mutex mu;
  std::vector<std::shared_ptr<Instance>> launched;
  std::vector<std::string> env_seen;
};

class InstanceTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    devnull_ = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    sink_ = std::make_unique<LogSink>(devnull_);
    logger_ = std::make_unique<Logger>(*sink_, clock_, "t");
    timer_thread_ = std::make_unique<TimerThread>(clock_, timers_);
    fn_.name = "rev";
    fn_.concurrency = 2;
    fn_.max_instances = 2;
    fn_.idle_timeout = 10s;
    auto transport = std::make_unique<LoopbackTransport>();
    transport_ = transport.get();
    executor_ = std::make_unique<InstanceFleet>(fn_, 0, fleet_options_for(fn_), std::move(transport), clock_,
                                                Timers(timers_, timer_thread_.get()), *logger_, metrics_);
  }
  void TearDown() override {
    auto threads = transport_->threads;
    executor_->stop(5s);
    threads->join();  // every answer and exit delivered while the fleet is still there
    executor_.reset();
    timer_thread_.reset();
    ::close(devnull_);
  }
  std::future<Result> run(const std::string& payload) {
    auto promise = std::make_shared<std::promise<Result>>();
    Invocation inv;
    inv.id = "inv-" + payload;
    inv.payload = payload;
    inv.started = clock_.now();
    inv.deadline = clock_.now() + 30s;
    executor_->start(inv, [promise](Result&& r) { promise->set_value(std::move(r)); });
    return promise->get_future();
  }

  ManualClock clock_;
  TimerQueue timers_;
  std::unique_ptr<TimerThread> timer_thread_;
  int devnull_ = -1;
  std::unique_ptr<LogSink> sink_;
  std::unique_ptr<Logger> logger_;
  Metrics metrics_{{"rev"}};
  FunctionSpec fn_;
  LoopbackTransport* transport_ = nullptr;
  std::unique_ptr<InstanceFleet> executor_;
};

TEST_F(InstanceTransportTest, TheFleetRunsAFunctionOnATransportWithNoProcess) {
  EXPECT_EQ(executor_->instances(), 0);
  auto first = run("abc");
  ASSERT_EQ(first.wait_for(10s), std::future_status::ready);
  Result r = first.get();
  ASSERT_EQ(r.outcome, Outcome::success) << r.error.message;
  EXPECT_EQ(r.http->body, "cba@1") << "started from zero, on instance 1";
  ASSERT_EQ(r.outputs.size(), 1u) << "an output sent before the result comes with it";
  EXPECT_EQ(r.outputs[0].payload, "abc");
  EXPECT_EQ(executor_->instances(), 1);

  // Many at once: both instances take work, concurrency 2 each.
  std::vector<std::future<Result>> many;
  for (int i = 0; i < 20; ++i) many.push_back(run("m" + std::to_string(i)));
  for (auto& f : many) {
    ASSERT_EQ(f.wait_for(10s), std::future_status::ready);
    EXPECT_EQ(f.get().outcome, Outcome::success);
  }
  EXPECT_LE(executor_->instances(), 2);
}

TEST_F(InstanceTransportTest, AnInstanceThatIsLostFailsWhatItHeldAndIsReplaced) {
  auto first = run("x");
  ASSERT_EQ(first.wait_for(10s), std::future_status::ready);
  ASSERT_EQ(first.get().outcome, Outcome::success);
  std::shared_ptr<LoopbackTransport::Instance> one;
  {
    std::lock_guard lock(transport_->mu);
    one = transport_->launched.at(0);
  }
  one->kill();
  for (int i = 0; i < 1000 && executor_->instances() != 0; ++i) std::this_thread::sleep_for(2ms);
  EXPECT_EQ(executor_->instances(), 0);
  auto again = run("y");
  ASSERT_EQ(again.wait_for(10s), std::future_status::ready);
  Result r = again.get();
  ASSERT_EQ(r.outcome, Outcome::success);
  EXPECT_EQ(r.http->body, "y@2") << "a new instance";
}

}  // namespace
}  // namespace nimbus
