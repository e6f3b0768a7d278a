#pragma once
// A function's fleet of instances: the pool that owns them. How one instance is started and
// spoken to is its transport's (runtime/instance.h): worker processes over frames today
// (runtime/process/frames_transport.h), an HTTP server on $PORT or the Lambda Runtime API next.
// The fleet starts instances on demand (a request that finds none waits for the cold start,
// sent behind the instance's launch when its transport has room), keeps at least
// min_instances, adds instances up to max_instances when every one is at its concurrency or
// when the autoscaler (Knative's KPA as the model: stable and panic windows over the average
// in-flight work) asks for more, retires surplus idle instances when it asks for fewer, and
// retires any instance idle for idle_timeout (the last one too: scale to zero). An instance
// that ends fails its in-flight invocations (Outcome::crashed); one that overruns a deadline
// is killed and replaced on demand.
#include <condition_variable>
#include <functional>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/app_spec.h"
#include "core/clock.h"
#include "pool/autoscaler.h"
#include "runtime/executor.h"
#include "runtime/instance.h"

namespace nimbus {

class Logger;
class Metrics;
struct RuntimeContext;

struct FleetOptions {
  int min_instances = 0;
  int max_instances = 4;
  int concurrency = 1;            // in-flight invocations per instance
  Duration idle_timeout = std::chrono::minutes(5);
  Duration start_timeout = std::chrono::seconds(10);
  // Load-based scaling: every scale_tick the average in-flight work (running + waiting) feeds
  // the autoscaler, which aims for target_utilization x concurrency per instance.
  Duration scale_tick = std::chrono::seconds(2);
  double target_utilization = 0.7;
};

// A manifest function's fleet settings (min_instances, max_instances, concurrency, idle_timeout).
FleetOptions fleet_options_for(const FunctionSpec& function);

// Every function's executor, from its runtime transport (runtime/registry.h): an in-process
// transport's executor as it is; an instance transport under an InstanceFleet that hands its
// instances the loopback service API. The host knows no transport by name.
Expected<std::unique_ptr<Executor>> make_executor(const FunctionSpec& function, int index, const RuntimeContext& context);

class InstanceFleet final : public Executor {
 public:
  // `transport`: how its instances are started and spoken to.
  InstanceFleet(const FunctionSpec& function, int index, FleetOptions options, std::unique_ptr<InstanceTransport> transport,
                const Clock& clock, Timers timers, Logger& logger, Metrics& metrics);
  ~InstanceFleet() override;

  Mode mode() const override { return Mode::asynchronous; }
  Result call(const Invocation& invocation) override;
  void start(const Invocation& invocation, Completion done) override;

  // The loopback service API: each instance gets NIMBUS_API=url and a token of its own
  // (issued at spawn, revoked when it ends).
  void set_api(std::string url, std::function<std::string()> issue, std::function<void(const std::string&)> revoke) {
    api_url_ = std::move(url);
    api_issue_ = std::move(issue);
    api_revoke_ = std::move(revoke);
  }
  // concurrency per instance x max_instances.
  int capacity(const FunctionSpec& function) const override { return function.concurrency * function.max_instances; }
  // Starts min_instances; returns the first start-up failure (bad handler, missing program).
  Status warm_up() override;
  int instances() const;
  // Sends shutdown to every instance and waits up to `grace` for them to end.
  void stop(Duration grace) override;
  // Kills every instance at once, waiting for nothing (a host out of grace, about to exit).
  void kill_all() override;

 private:
  struct Instance;
  struct Waiting {
    std::string id;
    std::string wire;  // the encoded invoke frame
    Completion done;
    TimePoint deadline;
    TimePoint queued_at{};  // set while it waits for an instance
    TimePoint sent_at{};    // handed to its instance (for one sent behind init: the instance's ready)
    bool cold = false;      // it waited for an instance to start (none was ready)
    std::vector<OutputMessage> outputs;  // sent by the instance before its result
    std::string traceparent, tracestate;
    // Sent to an instance still starting (behind init): a copy of the frame, to hand the work
    // to another instance if this one never starts.
    std::string resend;
    // Its caller has had an answer (a timeout) while an instance still holds it: it keeps its
    // slot until the instance answers or ends, and that answer goes nowhere.
    bool abandoned = false;
  };

  std::shared_ptr<Instance> spawn_locked(std::string* error);
  // A ready instance with room, the least loaded; null when none.
  std::shared_ptr<Instance> least_loaded_locked() const;
  // An invoke frame to write once the lock is released.
  struct Outgoing {
    std::shared_ptr<InstanceConnection> conn;
    std::string wire;
    void send();
  };
  // Hands w to the instance; the send to the instance goes to `direct` when given and still
  // empty (no allocation for the common case), else is added to `after`.
  void assign_locked(const std::shared_ptr<Instance>& instance, Waiting&& w, std::vector<std::function<void()>>& after,
                     Outgoing* direct = nullptr);
  // While no instance is ready, a starting one that can take w behind its init (room for it
  // at its concurrency and in its pipe budget); null when none.
  std::shared_ptr<Instance> starting_with_room_locked(const Waiting& w) const;
  // Sends what waits, in order, behind the init of starting instances with room.
  void pipeline_waiting_locked(std::vector<std::function<void()>>& after);
  void drain_waiting_locked(std::vector<std::function<void()>>& after, bool scale_up = true);
  // w's caller hears that it timed out while it waited for an instance (after the lock).
  void time_out_locked(Waiting& w, std::vector<std::function<void()>>& after);
  void scale_up_locked(std::vector<std::function<void()>>& after);
  // What an instance says (InstanceEvents), on its transport's threads.
  void on_ready(const std::shared_ptr<Instance>& instance);
  void on_result(const std::shared_ptr<Instance>& instance, const std::string& id, Result&& result);
  void on_output(const std::shared_ptr<Instance>& instance, const std::string& id, OutputMessage&& output);
  void on_fatal(const std::shared_ptr<Instance>& instance, std::string message);
  std::pair<std::string, std::string> trace_of(const std::shared_ptr<Instance>& instance, const std::string& id);
  void on_exit(const std::shared_ptr<Instance>& instance, int code, const std::string& why);
  // One deadline timer per instance, armed for the earliest deadline it holds (see the .cpp).
  void arm_deadline_locked(const std::shared_ptr<Instance>& instance, TimePoint at);
  void on_deadline(const std::weak_ptr<Instance>& instance);
  void on_start_timeout(const std::string& id);
  void on_idle(const std::weak_ptr<Instance>& instance);
  // In-flight work changed by `delta`: keeps the time-weighted load the autoscaler samples.
  void load_changed_locked(int delta);
  Completion take_locked(Waiting& w);  // the completion of work that leaves, counted out
  void on_tick();
  void arm_idle_locked(const std::shared_ptr<Instance>& instance);
  TimerQueue::Id schedule(TimePoint at, std::function<void()> fn);
  void bury();

  FunctionSpec spec_;
  int index_;
  FleetOptions options_;
  const Clock& clock_;
  Timers timers_;
  Logger& logger_;
  Metrics& metrics_;
  std::unique_ptr<InstanceTransport> transport_;
  std::string api_url_;
  std::function<std::string()> api_issue_;
  std::function<void(const std::string&)> api_revoke_;
  std::shared_ptr<struct ExecutorGuard> guard_;
  mutable std::mutex mu_;
  std::condition_variable ready_cv_;
  std::vector<std::shared_ptr<Instance>> instances_;
  std::deque<Waiting> waiting_;
  std::vector<std::shared_ptr<InstanceConnection>> graveyard_;  // ended instances, joined off their threads
  uint64_t next_serial_ = 1;
  Autoscaler autoscaler_;
  int load_ = 0;             // invocations running or waiting for an instance
  double load_area_ = 0;     // load integrated over seconds since tick_from_
  TimePoint load_changed_{};
  TimePoint tick_from_{};
  bool ticking_ = false;
  bool stopping_ = false;
};

}  // namespace nimbus
