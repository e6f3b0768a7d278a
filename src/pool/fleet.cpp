#include "pool/fleet.h"

#include <algorithm>
#include <cstdio>
#include <thread>

#include "core/units.h"
#include "core/services.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "runtime/registry.h"

namespace nimbus {

struct InstanceFleet::Instance {
  uint64_t serial = 0;
  std::shared_ptr<InstanceConnection> conn;  // shared with writes in progress outside the lock
  bool ready = false;
  bool retiring = false;
  bool overran = false;  // killed because an invocation overran its deadline
  TimePoint spawned{};
  TimePoint last_used{};
  std::map<std::string, Waiting> in_flight;
  TimerQueue::Id idle_timer = 0;
  TimerQueue::Id deadline_timer = 0;
  TimePoint deadline_armed{};  // when deadline_timer fires
  std::string fatal;  // what the worker said before it gave up
  std::string api_token;  // this instance's NIMBUS_API_TOKEN
  bool ended = false;
  std::string end_reason;
  std::size_t pipelined = 0;  // bytes written to it before ready: init and invokes behind it
};

namespace {
// What a starting instance may be sent behind its init: at most half its pipe (32 KiB of the
// usual 64), so that a write to a worker still loading its code never blocks the host's thread.
constexpr std::size_t kPipelineBudget = 32 * 1024;
}  // namespace

// Timer callbacks may outlive the executor: they go through this, and do nothing once it died.
struct ExecutorGuard {
  std::mutex mu;
  bool alive = true;
};

InstanceFleet::InstanceFleet(const FunctionSpec& function, int index, FleetOptions options,
                             std::unique_ptr<InstanceTransport> transport, const Clock& clock, Timers timers,
                             Logger& logger, Metrics& metrics)
    : spec_(function),
      index_(index),
      options_(std::move(options)),
      clock_(clock),
      timers_(timers),
      logger_(logger),
      metrics_(metrics),
      transport_(std::move(transport)),
      guard_(std::make_shared<ExecutorGuard>()),
      autoscaler_(AutoscalerConfig{.target_per_instance = options_.concurrency * options_.target_utilization,
                                   .min_instances = options_.min_instances,
                                   .max_instances = options_.max_instances}) {}

FleetOptions fleet_options_for(const FunctionSpec& fn) {
  FleetOptions o;
  o.min_instances = fn.min_instances;
  o.max_instances = fn.max_instances;
  o.concurrency = fn.concurrency;
  o.idle_timeout = fn.idle_timeout;
  return o;
}

Expected<std::unique_ptr<Executor>> make_executor(const FunctionSpec& fn, int index, const RuntimeContext& c) {
  const RuntimeTransport* t = find_runtime_transport(fn.transport());
  if (!t) {
    return Error{"function '" + fn.name + "': no runtime transport '" + std::string(to_string(fn.transport())) +
                 "' in this build"};
  }
  if (t->make_executor) return t->make_executor(fn, index, c);
  auto transport = t->make_instances(fn, c);
  if (!transport) return transport.error();
  auto fleet = std::make_unique<InstanceFleet>(fn, index, fleet_options_for(fn), std::move(*transport), c.clock, c.timers,
                                               c.logger, c.metrics);
  if (c.api_issue) fleet->set_api(c.api_url, [issue = c.api_issue, name = fn.name] { return issue(name); }, c.api_revoke);
  return std::unique_ptr<Executor>(std::move(fleet));
}

InstanceFleet::~InstanceFleet() {
  {
    std::lock_guard lock(guard_->mu);
    guard_->alive = false;
  }
  stop(Duration::zero());
}

Result InstanceFleet::call(const Invocation&) {
  return Result::failure(Outcome::unavailable, "internal", "process functions run asynchronously");
}

TimerQueue::Id InstanceFleet::schedule(TimePoint at, std::function<void()> fn) {
  std::weak_ptr<ExecutorGuard> guard = guard_;
  auto id = timers_.at(at,
      [guard, fn = std::move(fn)] {
        auto g = guard.lock();
        if (!g) return;
        std::lock_guard lock(g->mu);
        if (g->alive) fn();
      });
  return id;
}

std::shared_ptr<InstanceFleet::Instance> InstanceFleet::spawn_locked(std::string* error) {
  auto inst = std::make_shared<Instance>();
  inst->serial = next_serial_++;
  inst->spawned = clock_.now();
  inst->last_used = inst->spawned;
  std::weak_ptr<Instance> weak = inst;
  std::vector<std::string> extra_env;
  if (api_issue_) {
    inst->api_token = api_issue_();
    extra_env.push_back("NIMBUS_API=" + api_url_);
    extra_env.push_back("NIMBUS_API_TOKEN=" + inst->api_token);
  }
  InstanceEvents events{
      [this, weak] {
        if (auto i = weak.lock()) on_ready(i);
      },
      [this, weak](const std::string& id, Result r) {
        if (auto i = weak.lock()) on_result(i, id, std::move(r));
      },
      [this, weak](const std::string& id, OutputMessage out) {
        if (auto i = weak.lock()) on_output(i, id, std::move(out));
      },
      [this, weak](std::string message) {
        if (auto i = weak.lock()) on_fatal(i, std::move(message));
      },
      [this, weak](int code, const std::string& why) {
        if (auto i = weak.lock()) on_exit(i, code, why);
      },
      [this, weak](const std::string& id) {
        auto i = weak.lock();
        return i ? trace_of(i, id) : std::pair<std::string, std::string>();
      }};
  auto conn = transport_->launch(inst->serial, std::move(extra_env), std::move(events));
  if (!conn) {
    if (!inst->api_token.empty() && api_revoke_) api_revoke_(inst->api_token);
    *error = conn.error().message;
    return nullptr;
  }
  inst->conn = std::move(*conn);
  inst->pipelined = inst->conn->launch_bytes();
  instances_.push_back(inst);
  metrics_.instances(index_, static_cast<int>(instances_.size()));
  return inst;
}

Status InstanceFleet::warm_up() {
  std::unique_lock lock(mu_);
  std::string error;
  std::vector<std::shared_ptr<Instance>> started;
  for (int i = 0; i < options_.min_instances; ++i) {
    auto inst = spawn_locked(&error);
    if (!inst) return Error{"function '" + spec_.name + "': " + error};
    started.push_back(inst);
  }
  // Wait for them: a handler that cannot load is a start-up error, said now.
  TimePoint give_up = clock_.now() + options_.start_timeout;
  for (auto& inst : started) {
    ready_cv_.wait_until(lock, std::chrono::steady_clock::now() + options_.start_timeout, [&] {
      return inst->ready || inst->ended || clock_.now() > give_up;
    });
    if (!inst->ready) {
      std::string why = inst->fatal.empty() ? inst->end_reason : inst->fatal;
      return Error{"function '" + spec_.name + "': its worker did not start: " +
                   (why.empty() ? "no ready message within " + format_duration(options_.start_timeout) : why)};
    }
  }
  return ok_status();
}

int InstanceFleet::instances() const {
  std::lock_guard lock(mu_);
  return static_cast<int>(instances_.size());
}

void InstanceFleet::start(const Invocation& inv, Completion done) {
  Waiting w;
  w.id = inv.id;
  transport_->encode(inv, w.wire);
  w.done = std::move(done);
  w.deadline = inv.deadline;
  w.traceparent = inv.traceparent;
  w.tracestate = inv.tracestate;
  std::vector<std::function<void()>> after;
  Outgoing direct;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      after.push_back([d = std::move(w.done), name = spec_.name]() mutable {
        d(Result::failure(Outcome::unavailable, "unavailable", "function '" + name + "' is shutting down"));
      });
    } else {
      load_changed_locked(+1);
      if (!ticking_) {
        ticking_ = true;
        tick_from_ = clock_.now();
        load_area_ = 0;
        schedule(tick_from_ + options_.scale_tick, [this] { on_tick(); });
      }
      if (auto best = least_loaded_locked()) {
        assign_locked(best, std::move(w), after, &direct);
      } else {
        w.queued_at = clock_.now();
        w.cold = std::none_of(instances_.begin(), instances_.end(),
                              [](const std::shared_ptr<Instance>& i) { return i->ready && !i->retiring; });
        // Bound the wait for a cold start: the caller hears 503 rather than hanging.
        schedule(w.queued_at + options_.start_timeout, [this, id = w.id] { on_start_timeout(id); });
        waiting_.push_back(std::move(w));
        pipeline_waiting_locked(after);
        if (!waiting_.empty()) scale_up_locked(after);
      }
    }
  }
  // The write happens after the lock is released: on a busy core the worker may answer at
  // once, and its reply must not find the lock still held by this thread.
  direct.send();
  for (auto& fn : after) fn();
}

void InstanceFleet::Outgoing::send() {
  if (conn && !conn->send(wire)) conn->kill();  // its exit fails what it holds
}

void InstanceFleet::scale_up_locked(std::vector<std::function<void()>>& after) {
  std::size_t room = 0;  // what the instances starting will take when ready
  int live = 0;
  for (auto& i : instances_) {
    if (i->retiring) continue;
    ++live;
    if (!i->ready) room += static_cast<std::size_t>(options_.concurrency) - std::min(i->in_flight.size(), static_cast<std::size_t>(options_.concurrency));
  }
  if (waiting_.size() <= room || live >= options_.max_instances) return;
  std::string error;
  auto inst = spawn_locked(&error);
  if (!inst) {
    // Nothing can run them: fail what waits, with the reason.
    while (!waiting_.empty()) {
      after.push_back([d = take_locked(waiting_.front()), error, name = spec_.name]() mutable {
        d(Result::failure(Outcome::unavailable, "start_failed", "function '" + name + "' could not start a worker: " + error));
      });
      waiting_.pop_front();
    }
    return;
  }
  pipeline_waiting_locked(after);
}

// A start from zero sends the waiting work right behind init instead of after ready: the
// worker reads it as soon as its code is loaded (a Node worker answers it before its event
// loop has turned once), which saves a round trip and, for Node, the loading of `net`
// before the first reply. Only while no instance is ready (scaling up under load keeps work
// in line for whichever instance frees up first), and within the pipe budget.
std::shared_ptr<InstanceFleet::Instance> InstanceFleet::starting_with_room_locked(const Waiting& w) const {
  std::shared_ptr<Instance> found;
  for (const auto& i : instances_) {
    if (i->retiring) continue;
    if (i->ready) return nullptr;
    if (!found && static_cast<int>(i->in_flight.size()) < options_.concurrency &&
        i->pipelined + w.wire.size() <= std::min(kPipelineBudget, i->conn->pipeline_capacity() / 2)) {
      found = i;
    }
  }
  return found;
}

void InstanceFleet::pipeline_waiting_locked(std::vector<std::function<void()>>& after) {
  while (!waiting_.empty()) {
    auto inst = starting_with_room_locked(waiting_.front());
    if (!inst) return;
    Waiting w = std::move(waiting_.front());
    waiting_.pop_front();
    inst->pipelined += w.wire.size();
    w.resend = w.wire;
    assign_locked(inst, std::move(w), after);
  }
}

std::shared_ptr<InstanceFleet::Instance> InstanceFleet::least_loaded_locked() const {
  std::shared_ptr<Instance> best;
  for (const auto& i : instances_) {
    if (i->ready && !i->retiring && static_cast<int>(i->in_flight.size()) < options_.concurrency &&
        (!best || i->in_flight.size() < best->in_flight.size())) {
      best = i;
    }
  }
  return best;
}

void InstanceFleet::assign_locked(const std::shared_ptr<Instance>& inst, Waiting&& w,
                                    std::vector<std::function<void()>>& after, Outgoing* direct) {
  if (w.queued_at != TimePoint{} && w.resend.empty()) metrics_.queue_wait(index_, clock_.now() - w.queued_at);
  if (inst->in_flight.count(w.id)) {
    // Two invocations with one id on one instance could not be told apart: refuse the second.
    after.push_back([d = take_locked(w), id = w.id]() mutable {
      d(Result::failure(Outcome::unavailable, "duplicate_invocation", "invocation " + id + " is already in flight"));
    });
    return;
  }
  if (w.deadline != TimePoint{} && (inst->deadline_timer == 0 || w.deadline < inst->deadline_armed)) {
    arm_deadline_locked(inst, w.deadline);
  }
  w.sent_at = clock_.now();  // behind init: set again when the instance is ready
  Outgoing out{inst->conn, std::move(w.wire)};
  std::string id = w.id;
  inst->in_flight.emplace(std::move(id), std::move(w));
  if (direct && !direct->conn) {
    *direct = std::move(out);
  } else {
    after.push_back([out = std::move(out)]() mutable { out.send(); });
  }
}

void InstanceFleet::time_out_locked(Waiting& w, std::vector<std::function<void()>>& after) {
  after.push_back([d = take_locked(w), name = spec_.name]() mutable {
    d(Result::failure(Outcome::timeout, "timeout", "function '" + name + "' timed out while it waited for a worker"));
  });
}

void InstanceFleet::drain_waiting_locked(std::vector<std::function<void()>>& after, bool scale_up) {
  const TimePoint now = waiting_.empty() ? TimePoint{} : clock_.now();
  while (!waiting_.empty()) {
    auto best = least_loaded_locked();
    if (!best) break;
    Waiting w = std::move(waiting_.front());
    waiting_.pop_front();
    if (w.deadline != TimePoint{} && w.deadline <= now) {
      // Its deadline passed while it waited (its caller has heard so): not sent, so that no
      // worker is killed for work it never had.
      time_out_locked(w, after);
      continue;
    }
    assign_locked(best, std::move(w), after);
  }
  if (scale_up && !waiting_.empty()) scale_up_locked(after);
}

void InstanceFleet::on_ready(const std::shared_ptr<Instance>& inst) {
  std::vector<std::function<void()>> after;
  {
    std::lock_guard lock(mu_);
    inst->ready = true;
    const TimePoint now = clock_.now();
    metrics_.cold_start(index_, now - inst->spawned);
    for (auto& [id, w] : inst->in_flight) {
      if (w.resend.empty()) continue;  // sent behind init: it waited until now
      std::string().swap(w.resend);
      if (w.abandoned) continue;
      if (w.deadline != TimePoint{} && w.deadline <= now) {
        // Past its deadline before the worker could start it (a worker of ours skips it).
        time_out_locked(w, after);
        w.abandoned = true;
        continue;
      }
      metrics_.queue_wait(index_, now - w.queued_at);
      w.sent_at = now;
    }
    drain_waiting_locked(after);
    if (inst->in_flight.empty()) arm_idle_locked(inst);
    ready_cv_.notify_all();
  }
  for (auto& fn : after) fn();
}

void InstanceFleet::on_result(const std::shared_ptr<Instance>& inst, const std::string& id, Result&& r) {
  // The completion runs after the lock is released, before any work the reply let through.
  std::vector<std::function<void()>> after;
  Completion done;
  {
    std::lock_guard lock(mu_);
    auto it = inst->in_flight.find(id);
    if (it != inst->in_flight.end() && it->second.abandoned) {
      inst->in_flight.erase(it);  // its caller has had its answer
    } else if (it != inst->in_flight.end()) {
      done = take_locked(it->second);
      if (r.outcome == Outcome::success) r.outputs = std::move(it->second.outputs);
      if (const Waiting& w = it->second; w.queued_at != TimePoint{} && w.sent_at > w.queued_at) {
        r.waited = w.sent_at - w.queued_at;
        if (w.cold) r.cold_start = r.waited;
      }
      inst->in_flight.erase(it);
      inst->last_used = clock_.now();
    }
    drain_waiting_locked(after);
    if (inst->in_flight.empty()) arm_idle_locked(inst);
  }
  if (done) done(std::move(r));
  for (auto& fn : after) fn();
}

// An output of an invocation in flight: kept until its result, then committed with it.
void InstanceFleet::on_output(const std::shared_ptr<Instance>& inst, const std::string& id, OutputMessage&& out) {
  std::lock_guard lock(mu_);
  auto it = inst->in_flight.find(id);
  if (it != inst->in_flight.end()) it->second.outputs.push_back(std::move(out));
}

void InstanceFleet::on_fatal(const std::shared_ptr<Instance>& inst, std::string message) {
  std::lock_guard lock(mu_);
  inst->fatal = std::move(message);
  logger_.host(LogLevel::error, "worker gave up", {{"function", spec_.name}, {"reason", inst->fatal}});
}

std::pair<std::string, std::string> InstanceFleet::trace_of(const std::shared_ptr<Instance>& inst,
                                                            const std::string& id) {
  std::lock_guard lock(mu_);
  auto it = inst->in_flight.find(id);
  if (it == inst->in_flight.end()) return {};
  return {it->second.traceparent, it->second.tracestate};
}

void InstanceFleet::on_exit(const std::shared_ptr<Instance>& inst, int, const std::string& why) {
  std::vector<std::function<void()>> after;
  {
    std::lock_guard lock(mu_);
    inst->ended = true;
    inst->end_reason = why;
    if (!inst->api_token.empty() && api_revoke_) api_revoke_(inst->api_token);
    std::erase(instances_, inst);
    metrics_.instances(index_, static_cast<int>(instances_.size()));
    std::string reason = "the worker of function '" + spec_.name + "' (pid " + std::to_string(inst->conn->pid()) + ") " + why +
                         (inst->fatal.empty() ? "" : ": " + inst->fatal);
    reason += transport_->limits_note();
    if (!inst->retiring && !stopping_) {
      logger_.host(LogLevel::warn, "worker ended", {{"function", spec_.name}, {"reason", reason}});
    }
    if (!stopping_) {
      using Why = Metrics::WorkerExit;
      // (one killed for an overrun is retiring too: the overrun is its reason)
      metrics_.worker_exit(index_, inst->overran    ? Why::timeout
                                   : !inst->ready   ? Why::failed_start
                                   : inst->retiring ? Why::retired
                                                    : Why::crashed);
    }
    std::vector<Waiting> again;  // sent behind the init of a worker that never started
    for (auto& [id, w] : inst->in_flight) {
      if (w.abandoned) continue;
      if (!inst->ready && !w.resend.empty() && !stopping_) {
        w.wire = std::move(w.resend);
        w.resend.clear();
        again.push_back(std::move(w));
        continue;
      }
      after.push_back([d = take_locked(w), reason]() mutable {
        d(Result::failure(Outcome::crashed, "worker_failed", reason));
      });
    }
    inst->in_flight.clear();
    // Back to the head of the line, in the order they came: they wait like any other work.
    std::sort(again.begin(), again.end(), [](const Waiting& a, const Waiting& b) { return a.queued_at > b.queued_at; });
    for (auto& w : again) waiting_.push_front(std::move(w));
    if (!inst->ready && !waiting_.empty()) {
      // It never started: what waits for it would wait for the same failure.
      bool other_starting = false;
      for (auto& i : instances_) other_starting |= !i->retiring;
      if (!other_starting) {
        while (!waiting_.empty()) {
          after.push_back([d = take_locked(waiting_.front()), reason]() mutable {
            d(Result::failure(Outcome::unavailable, "start_failed", reason));
          });
          waiting_.pop_front();
        }
      } else if (!stopping_) {
        // To the other instances: behind the init of those starting, in order, then to ready
        // ones with room; the rest waits.
        pipeline_waiting_locked(after);
        drain_waiting_locked(after, false);
      }
    } else if (!stopping_) {
      drain_waiting_locked(after);
    }
    graveyard_.push_back(std::move(inst->conn));
    schedule(clock_.now(), [this] { bury(); });
    ready_cv_.notify_all();
  }
  for (auto& fn : after) fn();
}

void InstanceFleet::bury() {
  std::vector<std::shared_ptr<InstanceConnection>> dead;
  {
    std::lock_guard lock(mu_);
    dead.swap(graveyard_);
  }
  dead.clear();  // joins their threads, which have finished their exit callbacks by now
}

// Deadlines cost no timer operation per invocation: each instance has one timer, armed for
// the earliest deadline it has been given (re-armed earlier only when an invocation with an
// earlier deadline arrives). When it fires, an instance holding work past its deadline is
// killed; otherwise the timer is armed again for the earliest deadline still held, if any.
void InstanceFleet::arm_deadline_locked(const std::shared_ptr<Instance>& inst, TimePoint at) {
  if (inst->deadline_timer != 0) timers_.cancel(std::exchange(inst->deadline_timer, 0));
  std::weak_ptr<Instance> weak = inst;
  inst->deadline_armed = at;
  inst->deadline_timer = schedule(at, [this, weak] { on_deadline(weak); });
}

void InstanceFleet::on_deadline(const std::weak_ptr<Instance>& weak) {
  auto inst = weak.lock();
  if (!inst) return;
  std::vector<std::function<void()>> after;
  {
    std::lock_guard lock(mu_);
    inst->deadline_timer = 0;
    if (inst->ended) return;
    const TimePoint now = clock_.now();
    TimePoint earliest{};
    std::string overran;  // the first invocation found past its deadline on a started worker
    for (auto it = inst->in_flight.begin(); it != inst->in_flight.end(); ++it) {
      Waiting& w = it->second;
      if (w.abandoned) continue;
      if (w.deadline != TimePoint{} && w.deadline <= now) {
        if (!inst->ready) {
          // Sent behind init to a worker still starting: it has not overrun anything. Its
          // caller hears of the timeout now; the worker (ours skip work past its deadline)
          // answers into the void.
          time_out_locked(w, after);
          w.abandoned = true;
          continue;
        }
        // Over its timeout: its caller hears so now (a timeout, whatever the worker does or
        // does not do next), and the worker is killed below.
        after.push_back([d = take_locked(w), name = spec_.name]() mutable {
          d(Result::failure(Outcome::timeout, "timeout",
                            "function '" + name + "' did not finish within its timeout; its worker was killed"));
        });
        w.abandoned = true;
        if (overran.empty()) overran = it->first;
        continue;
      }
      if (w.deadline != TimePoint{} && (earliest == TimePoint{} || w.deadline < earliest)) earliest = w.deadline;
    }
    if (!overran.empty()) {
      logger_.host(LogLevel::warn, "worker overran a deadline; killing it",
                   {{"function", spec_.name}, {"invocation_id", overran}});
      if (inst->fatal.empty()) inst->fatal = "killed because invocation " + overran + " overran its deadline";
      inst->overran = true;
      inst->retiring = true;  // no new work for it while its end is on the way
      inst->conn->kill();  // its exit fails what else it holds
    } else if (earliest != TimePoint{}) {
      arm_deadline_locked(inst, earliest);
    }
  }
  for (auto& fn : after) fn();
}

void InstanceFleet::on_start_timeout(const std::string& id) {
  std::vector<std::function<void()>> after;
  {
    std::lock_guard lock(mu_);
    auto give_up = [&](Waiting& w) {
      after.push_back([d = take_locked(w), name = spec_.name, t = options_.start_timeout]() mutable {
        d(Result::failure(Outcome::overloaded, "cold_start_timeout",
                          "function '" + name + "' had no instance ready within " + format_duration(t)));
      });
    };
    auto it = std::find_if(waiting_.begin(), waiting_.end(), [&](const Waiting& w) { return w.id == id; });
    if (it != waiting_.end()) {
      give_up(*it);
      waiting_.erase(it);
    } else {
      // Or sent behind the init of an instance that has not started within the bound: that
      // instance failed to start (as at warm-up) and is killed, so that work the caller was
      // told did not run never does. What else it held goes back in line on its exit.
      for (auto& inst : instances_) {
        if (inst->ready) continue;
        auto f = inst->in_flight.find(id);
        if (f == inst->in_flight.end() || f->second.resend.empty() || f->second.abandoned) continue;
        give_up(f->second);
        f->second.abandoned = true;
        inst->fatal = "no ready message within " + format_duration(options_.start_timeout);
        logger_.host(LogLevel::warn, "worker did not start in time; killing it",
                     {{"function", spec_.name}, {"reason", inst->fatal}});
        inst->conn->kill();
        break;
      }
    }
  }
  for (auto& fn : after) fn();
}

// One idle timer per instance, armed when it goes idle and left alone while it works: when it
// fires, on_idle looks at last_used and re-arms for the rest of the idle time if need be. Use
// costs no timer operations.
void InstanceFleet::arm_idle_locked(const std::shared_ptr<Instance>& inst) {
  if (inst->idle_timer != 0) return;
  std::weak_ptr<Instance> weak = inst;
  inst->idle_timer = schedule(inst->last_used + options_.idle_timeout, [this, weak] { on_idle(weak); });
}

void InstanceFleet::on_idle(const std::weak_ptr<Instance>& weak) {
  auto inst = weak.lock();
  if (!inst) return;
  std::lock_guard lock(mu_);
  inst->idle_timer = 0;
  int live = 0;
  for (auto& i : instances_) live += i->retiring ? 0 : 1;
  if (inst->ended || inst->retiring || !inst->in_flight.empty() || live <= options_.min_instances) return;
  if (clock_.now() - inst->last_used < options_.idle_timeout) {
    arm_idle_locked(inst);
    return;
  }
  inst->retiring = true;  // scale down: it takes no new work and ends when told
  inst->conn->shutdown(std::chrono::seconds(1));
}

void InstanceFleet::load_changed_locked(int delta) {
  TimePoint now = clock_.now();
  if (load_changed_ != TimePoint{} && now > load_changed_) {
    load_area_ += load_ * std::chrono::duration<double>(now - load_changed_).count();
  }
  load_changed_ = now;
  load_ += delta;
}

Completion InstanceFleet::take_locked(Waiting& w) {
  load_changed_locked(-1);
  return std::move(w.done);
}

void InstanceFleet::on_tick() {
  std::lock_guard lock(mu_);
  if (stopping_) {
    ticking_ = false;
    return;
  }
  load_changed_locked(0);  // bring the area up to now
  TimePoint now = clock_.now();
  double seconds = std::chrono::duration<double>(now - tick_from_).count();
  double average = seconds > 0 ? load_area_ / seconds : load_;
  tick_from_ = now;
  load_area_ = 0;
  autoscaler_.record(now, average);

  std::vector<std::shared_ptr<Instance>> live;
  for (auto& i : instances_)
    if (!i->retiring) live.push_back(i);
  int current = static_cast<int>(live.size());
  // The last instance is idle_timeout's to retire: a function with work in the window keeps one.
  int want = std::max(autoscaler_.desired(now, current), current > 0 ? 1 : 0);
  char load_text[32];
  std::snprintf(load_text, sizeof load_text, "%.2f", average);
  if (want > current) {
    logger_.host(LogLevel::info, "scaling up",
                 {{"function", spec_.name}, {"from", current}, {"to", want},
                  {"panic", autoscaler_.panicking() ? "yes" : "no"}, {"in_flight", load_text}});
    std::string error;
    for (int i = current; i < want; ++i) {
      if (!spawn_locked(&error)) {
        logger_.host(LogLevel::warn, "could not start a worker", {{"function", spec_.name}, {"reason", error}});
        break;
      }
    }
  } else if (want < current) {
    // Retire the surplus among idle, ready instances, the longest idle first.
    std::vector<std::shared_ptr<Instance>> idle;
    for (auto& i : live)
      if (i->ready && i->in_flight.empty()) idle.push_back(i);
    std::sort(idle.begin(), idle.end(), [](const auto& a, const auto& b) { return a->last_used < b->last_used; });
    int retire = std::min(current - want, static_cast<int>(idle.size()));
    if (retire > 0) {
      logger_.host(LogLevel::info, "scaling down",
                   {{"function", spec_.name}, {"from", current}, {"to", current - retire}, {"in_flight", load_text}});
    }
    for (int i = 0; i < retire; ++i) {
      idle[i]->retiring = true;
      idle[i]->conn->shutdown(std::chrono::seconds(1));
    }
  }
  // Nothing running, waiting or alive: stop ticking until work arrives (no wake-ups at zero).
  if (instances_.empty() && waiting_.empty() && load_ == 0) {
    ticking_ = false;
    return;
  }
  schedule(now + options_.scale_tick, [this] { on_tick(); });
}

void InstanceFleet::stop(Duration grace) {
  std::vector<std::shared_ptr<Instance>> all;
  std::vector<std::function<void()>> after;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    all = instances_;
    for (auto& i : all) {
      i->retiring = true;
      i->conn->shutdown(grace);
    }
    while (!waiting_.empty()) {
      after.push_back([d = take_locked(waiting_.front()), name = spec_.name]() mutable {
        d(Result::failure(Outcome::unavailable, "unavailable", "function '" + name + "' is shutting down"));
      });
      waiting_.pop_front();
    }
  }
  for (auto& fn : after) fn();
  auto give_up = std::chrono::steady_clock::now() + grace;
  {
    std::unique_lock lock(mu_);
    ready_cv_.wait_until(lock, give_up, [&] { return instances_.empty(); });
    for (auto& i : instances_) i->conn->kill();
    ready_cv_.wait_for(lock, std::chrono::seconds(5), [&] { return instances_.empty(); });
  }
  bury();
}

void InstanceFleet::kill_all() {
  std::lock_guard lock(mu_);
  stopping_ = true;
  for (auto& i : instances_) i->conn->kill();
}

}  // namespace nimbus
