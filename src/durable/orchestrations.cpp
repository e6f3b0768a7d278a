// The orchestration trigger (orchestrations.h): the step engine and the management routes.
#include "durable/orchestrations.h"

#include <algorithm>
#include <boost/json.hpp>
#include <map>
#include <mutex>
#include <set>
#include <variant>

#include "core/ids.h"
#include "core/units.h"
#include "durable/client.h"
#include "durable/durable.h"
#include "durable/entities.h"
#include "durable/events.h"
#include "durable/keyed_steps.h"
#include "durable/worker_trigger.h"
#include "observe/log.h"
#include "pool/function_pools.h"
#include "store/store.h"
#include "triggers/dispatch/leased_feed.h"
#include "triggers/http/http_trigger.h"
#include "triggers/http/public_routes.h"
#include "triggers/http/server.h"
#include "triggers/task_thread.h"

namespace nimbus::durable {
namespace json = boost::json;
namespace {

constexpr int kMaxHeld = 2048;  // events leased by one orchestrator's consumer at once
// `?wait=` on a status or start request: told when the instance finishes (a commit's wake),
// read again every second besides (a wake can be lost while a listener reconnects).
constexpr std::string_view kDoneWake = "_orch_done/";
constexpr Duration kMaxWait = std::chrono::minutes(5);
constexpr Duration kWaitPoll = std::chrono::seconds(1);

int64_t to_ms(Duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }

std::string str(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}
std::optional<int64_t> integer(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  if (v && v->is_int64()) return v->as_int64();
  if (v && v->is_uint64()) return static_cast<int64_t>(v->as_uint64());
  if (v && v->is_double()) return static_cast<int64_t>(v->as_double());
  return std::nullopt;
}
HttpReply stopping_reply() {
  return HttpReply{503, {{"content-type", "application/json"}},
                   R"({"error":"stopping","message":"the host is stopping"})"};
}

// The action a history event records the scheduling of ("" for other events).
std::string action_of(const std::string& event_type) {
  if (event_type == "task_scheduled") return "call_activity";
  if (event_type == "timer_created") return "create_timer";
  if (event_type == "sub_orchestration_created") return "call_sub_orchestration";
  if (event_type == "entity_called") return "call_entity";
  if (event_type == "entity_signaled") return "signal_entity";
  if (event_type == "entities_lock_requested") return "lock_entities";
  if (event_type == "entities_unlocked") return "unlock_entities";
  return "";
}

// What a scheduled step is, for the determinism check: "call_activity 'name'".
std::string describe(const std::string& type, const std::string& name) {
  return name.empty() ? type : type + " '" + name + "'";
}

}  // namespace

class Orchestrator : public std::enable_shared_from_this<Orchestrator> {
 public:
  Orchestrator(const FunctionSpec& fn, const OrchestrationTriggerSpec& spec, FunctionPool& pool,
               const TriggerContext& c, std::shared_ptr<TaskThread> thread, std::set<std::string> activities,
               std::map<std::string, std::string> orchestrators, std::set<std::string> entities)
      : thread_(std::move(thread)),
        fn_(fn),
        spec_(spec),
        pool_(pool),
        store_(c.store),
        clock_(c.clock),
        logger_(c.logger),
        timers_(c.timers),
        queue_(orchestrator_queue(fn.name)),
        kind_(TriggerKind::named("orchestration")),
        activities_(std::move(activities)),
        entities_(std::move(entities)),
        orchestrators_(std::move(orchestrators)) {}

  // Made shared first: the feed's hand-offs hold the orchestrator weakly.
  static std::shared_ptr<Orchestrator> make(const FunctionSpec& fn, const OrchestrationTriggerSpec& spec,
                                            FunctionPool& pool, const TriggerContext& c,
                                            std::shared_ptr<TaskThread> thread, std::set<std::string> activities,
                                            std::map<std::string, std::string> orchestrators,
                                            std::set<std::string> entities) {
    auto o = std::make_shared<Orchestrator>(fn, spec, pool, c, thread, std::move(activities), std::move(orchestrators),
                                            std::move(entities));
    o->client_ = std::make_shared<Client>(c.store, c.clock, o->orchestrators_);
    o->feed_ = worker_feed(o, o->queue_, fn, spec.batch_size, spec.lease, kMaxHeld, c, thread);
    return o;
  }

  const std::string& queue() const { return queue_; }
  const std::string& version() const { return orchestrators_.at(fn_.name); }
  void pump() { feed_->pump(); }
  // The store told of changes (on its thread; nothing here blocks): an instance a request
  // waits for finished, here or on another host; its status is read on the store's I/O threads.
  void on_changes(const std::vector<std::string>& names) {
    for (const auto& name : names) {
      if (name.size() <= kDoneWake.size() || name.compare(0, kDoneWake.size(), kDoneWake) != 0) continue;
      std::string id = name.substr(kDoneWake.size());
      {
        std::lock_guard lock(waits_mu_);
        if (!waits_.count(id)) continue;
      }
      store_.run_blocking([self = shared_from_this(), id] { self->check_waits(id); });
    }
  }

  void stop() {
    {  // requests waiting for instances are answered now: the host will not see them finish
      std::multimap<std::string, Waiter> waiting;
      {
        std::lock_guard lock(waits_mu_);
        stopped_ = true;
        waiting.swap(waits_);
      }
      for (auto& [id, w] : waiting) w.respond(w.at_deadline ? std::move(*w.at_deadline) : stopping_reply());
    }
    feed_->stop();
    // Events waiting behind a running step go back to the store for the next start.
    std::vector<Message> back = steps_.take_waiting();
    if (!back.empty()) feed_->release(back);
  }

  bool wait_idle(TimePoint until) { return feed_->wait_idle(until); }

  void add_routes(PublicRoutes& routes);

  // On the task thread: the events by instance; one step per instance at a time.
  void take(std::vector<Message> messages) {
    std::map<std::string, std::vector<Message>> by_instance;
    Batch dead;
    for (auto& m : messages) {
      boost::system::error_code ec;
      json::value v = json::parse(m.payload, ec);
      const json::object* o = !ec && v.is_object() ? &v.as_object() : nullptr;
      const std::string id = o ? str(*o, "instance") : std::string();
      if (id.empty() || !o->if_contains("event") || !o->at("event").is_object()) {
        dead.dead.push_back({{m.id, m.lease}, "not an orchestration event: expected {\"instance\": ID, \"event\": {...}}"});
        logger_.host(LogLevel::error, "an orchestration event is malformed; moved to the dead-letter queue",
                     {{"function", fn_.name}, {"queue", queue_}, {"message_id", m.id}});
        continue;
      }
      by_instance[id].push_back(std::move(m));
    }
    if (!dead.dead.empty()) {
      std::vector<std::string> ids;
      for (const auto& d : dead.dead) ids.push_back(d.ref.id);
      store_.commit(std::move(dead), [self = shared_from_this(), ids](Expected<BatchResult>) { self->forget(ids); });
    }
    for (auto& [id, msgs] : by_instance) {
      if (feed_->stopping()) {
        release_now(msgs);
        continue;
      }
      if (steps_.enter(id, msgs)) begin(id, std::move(msgs));
    }
  }

 private:
  struct Step {
    std::string id;
    std::vector<Message> messages;
    Instance record;
    std::string etag;
    json::array history;     // this generation's, before this step
    json::array new_events;  // this step's, orchestrator_started first
    std::vector<std::string> page_keys;
    std::vector<std::pair<std::string, std::string>> scheduled;  // (type, name) by task id
    int attempt = 1;
    std::string traceparent;       // the events' (the cause of this step)
    std::string step_traceparent;  // the orchestrator's run in this step: the parent of what it sends
    std::string tracestate;        // the events' (W3C), passed on with what the step sends
    bool history_loaded = false;
    bool record_put = false;  // commit_step: the record is the commit's last put
    bool sets_due = false;    // the commit puts something in the queue for later (a timer, a retry)
    Batch extra;              // messages the step sends whatever it decides (lock releases)
  };
  using StepPtr = std::shared_ptr<Step>;
  static const std::string& sent_traceparent(const Step& s) {
    return s.step_traceparent.empty() ? s.traceparent : s.step_traceparent;
  }

  // What this host last committed for an instance: the next step starts from it without a
  // read. A stale entry (another host advanced the instance) only costs a conflict at commit
  // (the ETag fences it), after which the entry is dropped and the next step reads afresh.
  // Touched only on the task thread.
  struct Cached {
    Instance record;
    std::string etag;
    json::array history;
    std::vector<std::string> page_keys;
    std::vector<std::pair<std::string, std::string>> scheduled;
  };
  static constexpr std::size_t kMaxCached = 4096;

  void forget(const std::vector<std::string>& ids) { feed_->forget(ids); }
  // Hands messages back, not counting the delivery (a step lost to another host's).
  void release_now(const std::vector<Message>& msgs, int64_t delay_ms = 0) { feed_->release(msgs, delay_ms); }

  // --- a step ----------------------------------------------------------------------------

  void begin(const std::string& id, std::vector<Message> messages) {
    auto s = std::make_shared<Step>();
    s->id = id;
    s->messages = std::move(messages);
    for (const auto& m : s->messages) s->attempt = std::max(s->attempt, m.deliveries);
    if (const std::string* tp = find_header(s->messages.front().metadata, "traceparent")) {
      s->traceparent = *tp;
      if (const std::string* ts = find_header(s->messages.front().metadata, "tracestate")) s->tracestate = *ts;
    }
    const int64_t now = unix_ms(clock_);
    if (auto hit = cache_.find(id); hit != cache_.end()) {
      Cached& c = hit->second;
      s->record = std::move(c.record);
      s->etag = std::move(c.etag);
      s->history = std::move(c.history);
      s->page_keys = std::move(c.page_keys);
      s->scheduled = std::move(c.scheduled);
      s->history_loaded = true;
      cache_.erase(hit);
      return run_step(s, now);
    }
    auto got = store_.get(kInstances, id);
    if (!got) return give_up_for_now(s, "cannot read the instance: " + got.error().message);
    if (!*got) {
      const bool only_purges = std::all_of(s->messages.begin(), s->messages.end(), [](const Message& m) {
        return m.payload.find(R"("type":"purge_due")") != std::string::npos;
      });
      logger_.host(only_purges ? LogLevel::debug : LogLevel::warn,
                   "events for an orchestration instance that does not exist (purged?) are dropped",
                   {{"function", fn_.name}, {"instance", id}, {"events", static_cast<int64_t>(s->messages.size())}});
      Batch b;
      for (const auto& m : s->messages) {
        b.acks.push_back({m.id, m.lease});
        // A grant for an instance that is gone (purged while it waited): released, or its
        // entities would stay locked for ever.
        boost::system::error_code ec;
        json::value v = json::parse(m.payload, ec);
        const json::object* event = !ec && v.is_object() && v.as_object().if_contains("event") &&
                                            v.as_object().at("event").is_object()
                                        ? &v.as_object().at("event").as_object()
                                        : nullptr;
        if (event && str(*event, "type") == "lock_acquired") release_grant(b, id, *event);
      }
      return commit(s, std::move(b));
    }
    auto record = decode_instance((*got)->value);
    if (!record) return give_up_for_now(s, "the instance record is not valid JSON");
    s->record = std::move(*record);
    s->etag = (*got)->etag;
    run_step(s, now);
  }

  // The step from the instance as it stands: its events into the history; the orchestrator
  // runs unless they only stopped it.
  void run_step(const StepPtr& s, int64_t now) {
    const std::string& id = s->id;
    s->new_events.push_back(json::object{{"type", "orchestrator_started"}, {"time_ms", now}});
    bool run = false;
    bool appended = false;
    bool purge_now = false;
    for (const auto& m : s->messages) {
      json::object event = json::parse(m.payload).as_object().at("event").as_object();
      const std::string type = str(event, "type");
      if (type == "purge_due") {
        // Only the instance it was set for, once finished (an id may be started again).
        if (finished(s->record.status) && integer(event, "created_ms") == s->record.created_ms) purge_now = true;
        continue;
      }
      if (type == "lock_acquired" && !lock_granted(s->record, event)) {
        // A critical section's locks came too late (the instance ended or let go of them
        // meanwhile): they are released at once, by the token of the request they answer.
        release_grant(s->extra, id, event);
        continue;
      }
      if (finished(s->record.status)) {
        logger_.host(LogLevel::debug, "an event for a finished orchestration instance is dropped",
                     {{"instance", id}, {"event", type}});
        continue;
      }
      if (type == "execution_terminated") {
        s->record.status = RuntimeStatus::terminated;
        s->record.error = "terminated: " + str(event, "reason");
        s->new_events.push_back(std::move(event));
        appended = true;
        continue;
      }
      if (type == "execution_suspended") {
        if (s->record.status != RuntimeStatus::suspended) s->record.status = RuntimeStatus::suspended;
        s->new_events.push_back(std::move(event));
        appended = true;
        continue;
      }
      if (type == "execution_resumed") {
        if (s->record.status == RuntimeStatus::suspended) s->record.status = RuntimeStatus::running;
      } else if (type == "execution_started") {
        s->record.status = RuntimeStatus::running;
      }
      s->new_events.push_back(std::move(event));
      appended = true;
      run = true;
    }
    if (purge_now) return purge(s);
    if (!appended) {  // only events for a finished instance: acknowledged, nothing else
      Batch b;
      for (const auto& m : s->messages) b.acks.push_back({m.id, m.lease});
      return commit(s, std::move(b));
    }
    if (s->record.status == RuntimeStatus::terminated) {
      Batch b;
      json::array page = s->new_events;
      notify_parent(s->record, b, false, json::value(s->record.error));
      finishing(s->record, b);
      return commit_step(s, std::move(page), std::move(b));
    }
    if (!run || s->record.status == RuntimeStatus::suspended) {
      // Suspended: the events join the history, the orchestrator runs once it is resumed.
      return commit_step(s, s->new_events, Batch{});
    }
    Invocation inv = new_invocation(fn_, kind_, "/orchestrations/" + fn_.name, "nimbus.durable.step", clock_,
                                    s->traceparent, s->tracestate);
    inv.subject = id;
    inv.message_id = s->messages.front().id;
    inv.attempt = s->attempt;
    inv.metadata = {{"content-type", "application/json"}};
    // Which code runs the step. With versions deployed (deploy/), the first step of an instance
    // (or of a generation) runs on the version live picks, and the instance records that code;
    // later steps follow versioning.on_mismatch: replay runs whatever live picks, fail fails the
    // instance when that is other code, keep_old runs the code it started on.
    FunctionPool* target = nullptr;  // null: the pool routes
    std::string problem;
    // An instance draws its version by its id: while the weights stay, its steps land on one
    // version (a canary's split does not toss it between codes step by step).
    Invocation draw;
    draw.id = id;
    if (s->record.pages == 0 && s->record.events == 0) {
      if (FunctionPool* chosen = pool_.choose(draw, &problem)) {
        target = chosen;
        s->record.version = chosen->code_version().empty() ? version() : chosen->code_version();
        s->record.app_version = pool_.version_of(chosen);
      }
    } else if (spec_.on_mismatch != OnMismatch::replay && !s->record.version.empty()) {
      FunctionPool* chosen = pool_.choose(draw, &problem);
      const std::string current = chosen && !chosen->code_version().empty() ? chosen->code_version() : version();
      if (s->record.version == current) {
        target = chosen;
      } else if (spec_.on_mismatch == OnMismatch::fail) {
        return fail_instance(s, "version mismatch: the instance started on version " + s->record.version +
                                    " of orchestrator '" + fn_.name + "', this host runs version " + current +
                                    " (versioning.on_mismatch: fail)");
      } else {
        target = pool_.with_code(s->record.version, version(), s->record.app_version);
        if (!target) {
          return wait_for_code(s, "the instance started on version " + s->record.version + " of the code" +
                                      (s->record.app_version.empty() ? "" : " (deployed " + s->record.app_version + ")") +
                                      ", which this host does not have loaded (versioning.on_mismatch: keep_old)");
        }
      }
    }
    if (!code_waits_.empty()) code_waits_.erase(id);
    if (!s->history_loaded) {
      if (auto st = load_history(*s); !st) return give_up_for_now(s, st.error().message);
      s->history_loaded = true;
    }
    json::object work{{"instance", id},
                      {"name", fn_.name},
                      {"history", s->history},
                      {"new_events", s->new_events}};
    inv.payload = json::serialize(work);
    s->step_traceparent = inv.traceparent;  // the step runs: what it sends is under its span
    s->tracestate = inv.tracestate;
    auto done = [self = shared_from_this(), s, run = RunRecord(inv, s->messages.front(), clock_)](Result&& r) {
      run.log(self->logger_, self->clock_, r);
      auto result = std::make_shared<Result>(std::move(r));
      self->thread_->post([self, s, result] { self->decide(s, std::move(*result)); });
    };
    if (target) return target->dispatch_here(std::move(inv), std::move(done));
    pool_.dispatch(std::move(inv), std::move(done));
  }

  Status load_history(Step& s) {
    if (s.record.pages == 0) return ok_status();  // a new instance (or generation): nothing to read
    auto pages = store_.scan(kHistory, history_prefix(s.id, s.record.generation), 1 << 30);
    if (!pages) return Error{"cannot read the history: " + pages.error().message};
    std::sort(pages->begin(), pages->end(), [](const StateEntry& a, const StateEntry& b) { return a.key < b.key; });
    for (const auto& p : *pages) {
      s.page_keys.push_back(p.key);
      boost::system::error_code ec;
      json::value v = json::parse(p.value, ec);
      if (ec || !v.is_array()) return Error{"history page " + p.key + " is not a JSON array"};
      for (auto& e : v.as_array()) {
        if (!e.is_object()) continue;
        const std::string type = str(e.as_object(), "type");
        if (!action_of(type).empty()) s.scheduled.emplace_back(type, str(e.as_object(), "name"));
        s.history.push_back(std::move(e));
      }
    }
    return ok_status();
  }

  // keep_old: the code the instance started on is not loaded here (its version is being
  // loaded, or will not load: a host started from a folder whose triggers differ from it). The
  // events go back, a little later each time (1 s, doubling to 10 s); the first wait of an
  // instance is a warning with the reason, the later ones are debug lines.
  void wait_for_code(const StepPtr& s, const std::string& why) {
    if (code_waits_.size() >= 10000 && !code_waits_.count(s->id)) code_waits_.clear();  // bounded (only delays)
    int64_t& delay = code_waits_[s->id];
    const bool first = delay == 0;
    // At most 10 s: the events wait in the shared queue, where a host that has the code
    // would otherwise find them late.
    delay = first ? 1000 : std::min<int64_t>(delay * 2, 10000);
    logger_.host(first ? LogLevel::warn : LogLevel::debug, "an orchestration step waits for the code its instance started on",
                 {{"function", fn_.name}, {"instance", s->id}, {"retry_in_ms", delay}, {"why", why}});
    release_now(s->messages, delay);
    step_done(s->id);
  }

  // The store could not be read: the events go back, to be tried again in a second.
  void give_up_for_now(const StepPtr& s, const std::string& why) {
    logger_.host(LogLevel::error, "cannot run an orchestration step; its events are tried again",
                 {{"function", fn_.name}, {"instance", s->id}, {"error", why}});
    release_now(s->messages, 1000);
    step_done(s->id);
  }

  // On the task thread: what the orchestrator answered, into history and messages.
  void decide(const StepPtr& s, Result r) {
    const int64_t now = unix_ms(clock_);
    if (r.outcome != Outcome::success) {
      const std::string why = (r.error.type.empty() ? std::string(to_string(r.outcome)) : r.error.type) +
                              (r.error.message.empty() ? "" : ": " + r.error.message);
      if (s->attempt < fn_.retry.max_attempts) {
        logger_.host(LogLevel::warn, "an orchestration step failed; it is tried again",
                     {{"function", fn_.name}, {"instance", s->id}, {"attempt", s->attempt}, {"error", why}});
        Batch b;
        const int64_t due = now + to_ms(fn_.retry.next_delay(s->attempt));
        for (const auto& m : s->messages) b.retries.push_back({{m.id, m.lease}, due, why});
        return commit(s, std::move(b));
      }
      return fail_instance(s, "the orchestrator failed " + std::to_string(s->attempt) + " times: " + why);
    }
    const std::string body = r.http ? r.http->body : std::string();
    boost::system::error_code ec;
    json::value answer = json::parse(body, ec);
    if (ec || !answer.is_object() || !answer.as_object().if_contains("actions") ||
        !answer.as_object().at("actions").is_array()) {
      return fail_instance(s, "the orchestrator's answer is not a step's result ({\"actions\": [...], \"outcome\": "
                              "{...}}; is the handler wrapped by the SDK's orchestrator?): " +
                                  body.substr(0, 200));
    }
    json::object& o = answer.as_object();
    json::array& actions = o.at("actions").as_array();
    json::array page = s->new_events;
    Batch b;
    // Replayed actions must be the ones the history holds, in order.
    for (std::size_t i = 0; i < actions.size() && i < s->scheduled.size(); ++i) {
      if (!actions[i].is_object()) return fail_instance(s, "action " + std::to_string(i) + " is not an object");
      const json::object& a = actions[i].as_object();
      const std::string type = str(a, "type");
      const std::string want_type = action_of(s->scheduled[i].first);
      const std::string name = type == "create_timer" ? std::string() : str(a, "name");
      if (type != want_type || name != s->scheduled[i].second) {
        return fail_instance(s, "non-determinism: at step " + std::to_string(i) + " the history has " +
                                    describe(want_type, s->scheduled[i].second) + " but the code now asks for " +
                                    describe(type, name) +
                                    " (orchestrator code changed while this instance was in flight?)");
      }
    }
    for (std::size_t i = s->scheduled.size(); i < actions.size(); ++i) {
      if (!actions[i].is_object()) return fail_instance(s, "action " + std::to_string(i) + " is not an object");
      const json::object& a = actions[i].as_object();
      const std::string type = str(a, "type");
      const int64_t task = static_cast<int64_t>(i);
      const json::value input = a.if_contains("input") ? a.at("input") : json::value(nullptr);
      if (type == "call_activity") {
        const std::string name = str(a, "name");
        if (!activities_.count(name)) {
          return fail_instance(s, "step " + std::to_string(i) + " calls activity '" + name +
                                      "', but no function has an activity trigger by that name");
        }
        page.push_back(json::object{{"type", "task_scheduled"}, {"task_id", task}, {"name", name}, {"input", input}});
        NewMessage m;
        m.type = "nimbus.durable.activity";
        m.subject = s->id;
        m.payload = json::serialize(input);
        m.metadata = {{kMetaInstance, s->id}, {kMetaTask, std::to_string(task)}, {kMetaReply, queue_},
                      {"content-type", "application/json"}};
        add_trace_context(m.metadata, sent_traceparent(*s), s->tracestate);
        b.enqueues.push_back({activity_queue(name), std::move(m)});
      } else if (type == "create_timer") {
        const auto fire_at = integer(a, "fire_at_ms");
        if (!fire_at) return fail_instance(s, "step " + std::to_string(i) + ": create_timer needs fire_at_ms");
        page.push_back(json::object{{"type", "timer_created"}, {"task_id", task}, {"fire_at_ms", *fire_at}});
        NewMessage m = event_message(s->id, json::object{{"type", "timer_fired"}, {"task_id", task}, {"fire_at_ms", *fire_at}},
                                     sent_traceparent(*s), s->tracestate);
        m.delay_ms = std::max<int64_t>(*fire_at - now, 0);
        b.enqueues.push_back({queue_, std::move(m)});
      } else if (type == "call_sub_orchestration") {
        const std::string name = str(a, "name");
        if (!orchestrators_.count(name)) {
          return fail_instance(s, "step " + std::to_string(i) + " calls orchestration '" + name +
                                      "', but no function has an orchestration trigger by that name");
        }
        const std::string child = s->id + ":" + std::to_string(task);
        page.push_back(json::object{{"type", "sub_orchestration_created"}, {"task_id", task}, {"name", name},
                                    {"instance", child}, {"input", input}});
        Instance c;
        c.id = child;
        c.name = name;
        c.input = json::serialize(input);
        c.created_ms = c.updated_ms = now;
        c.parent_instance = s->id;
        c.parent_queue = queue_;
        c.parent_task = task;
        c.version = orchestrators_.at(name);
        b.puts.push_back({kInstances, child, encode(c), std::string(), 0});
        b.enqueues.push_back({orchestrator_queue(name),
                              event_message(child, json::object{{"type", "execution_started"}, {"input", input}, {"time_ms", now}},
                                            sent_traceparent(*s), s->tracestate)});
      } else if (type == "call_entity" || type == "signal_entity") {
        const std::string name = str(a, "name");
        const std::string key = str(a, "key");
        const std::string op = str(a, "op");
        if (!entities_.count(name)) {
          return fail_instance(s, "step " + std::to_string(i) + " " + (type == "call_entity" ? "calls" : "signals") +
                                      " entity '" + name + "', but no function has an entity trigger by that name");
        }
        if (!valid_entity_key(key) || op.empty()) {
          return fail_instance(s, "step " + std::to_string(i) + ": " + type +
                                      " needs a key (1 to 200 letters, digits and - _ . : @) and an op");
        }
        if (op.rfind("__", 0) == 0) {
          return fail_instance(s, "step " + std::to_string(i) + ": " + type + " names the operation '" + op +
                                      "'; operations starting with __ are Nimbus's own (locks)");
        }
        const bool call = type == "call_entity";
        if (call && !s->record.locks.empty() && !in_locked_set(s->record, name, key)) {
          // Inside a critical section a call waits for its answer, and the entity may be held by
          // a section that waits for ours: only the locked entities may be called (signals may go anywhere).
          return fail_instance(s, "step " + std::to_string(i) + " calls entity '" + name + "' key '" + key +
                                      "' inside a critical section that did not lock it; call only the locked "
                                      "entities there (or signal it, or unlock first)");
        }
        page.push_back(json::object{{"type", call ? "entity_called" : "entity_signaled"}, {"task_id", task},
                                    {"name", name}, {"key", key}, {"op", op}, {"input", input}});
        NewMessage m;
        m.type = call ? "nimbus.durable.entity.call" : "nimbus.durable.entity.signal";
        m.subject = key;
        m.payload = json::serialize(json::object{{"key", key}, {"op", op}, {"input", input}, {"from", s->id}});
        m.metadata = {{"content-type", "application/json"}};
        if (call) {
          m.metadata.push_back({kMetaInstance, s->id});
          m.metadata.push_back({kMetaTask, std::to_string(task)});
          m.metadata.push_back({kMetaReply, queue_});
        }
        add_trace_context(m.metadata, sent_traceparent(*s), s->tracestate);
        b.enqueues.push_back({entity_queue(name), std::move(m)});
      } else if (type == "lock_entities") {
        // A critical section: the entities are locked one after the other in a fixed order
        // (entities.cpp), and the instance hears lock_acquired once it holds them all.
        std::vector<std::pair<std::string, std::string>> wanted;
        const json::value* list = a.if_contains("entities");
        for (const auto& e : list && list->is_array() ? list->as_array() : json::array{}) {
          const json::object* eo = e.is_object() ? &e.as_object() : nullptr;
          const std::string name = eo ? str(*eo, "name") : std::string();
          const std::string key = eo ? str(*eo, "key") : std::string();
          if (!entities_.count(name) || !valid_entity_key(key)) {
            return fail_instance(s, "step " + std::to_string(i) + ": lock_entities names entity '" + name + "' key '" +
                                        key + "', which no function with an entity trigger provides (or the key is not valid)");
          }
          wanted.emplace_back(name, key);
        }
        std::sort(wanted.begin(), wanted.end());
        wanted.erase(std::unique(wanted.begin(), wanted.end()), wanted.end());
        if (wanted.empty()) return fail_instance(s, "step " + std::to_string(i) + ": lock_entities needs entities");
        if (!s->record.locks.empty()) {
          return fail_instance(s, "step " + std::to_string(i) + ": lock_entities while the instance holds (or waits "
                                      "for) other locks: unlock them first (critical sections do not nest)");
        }
        json::array names;
        for (const auto& [name, key] : wanted) names.push_back(json::object{{"name", name}, {"key", key}});
        page.push_back(json::object{{"type", "entities_lock_requested"}, {"task_id", task}, {"entities", names}});
        const std::string token = lock_token(s->id, s->record.created_ms, s->record.generation, task);
        s->record.locks = json::serialize(json::object{{"task", task},
                                                       {"generation", s->record.generation},
                                                       {"entities", names},
                                                       {"held", false},
                                                       {"token", token}});
        json::object request{{"owner", s->id}, {"generation", s->record.generation}, {"task", task}, {"token", token},
                             {"reply", queue_}, {"entities", names}, {"index", 0}};
        NewMessage m;
        m.type = "nimbus.durable.entity.lock";
        m.subject = wanted.front().second;
        m.payload = json::serialize(json::object{{"key", wanted.front().second}, {"op", "__lock"}, {"from", s->id},
                                                 {"input", std::move(request)}});
        b.enqueues.push_back({entity_queue(wanted.front().first), std::move(m)});
      } else if (type == "unlock_entities") {
        page.push_back(json::object{{"type", "entities_unlocked"}, {"task_id", task}});
        // Into the step's extra messages: they go out even if a later action fails the instance.
        release_locks(s->record, s->extra);
      } else {
        return fail_instance(s, "step " + std::to_string(i) + " is an unknown action '" + type +
                                    "' (known: call_activity, create_timer, call_sub_orchestration, call_entity, "
                                    "signal_entity, lock_entities, unlock_entities)");
      }
    }
    if (const auto* cs = o.if_contains("custom_status")) s->record.custom_status = json::serialize(*cs);
    const json::object* outcome = o.if_contains("outcome") && o.at("outcome").is_object() ? &o.at("outcome").as_object() : nullptr;
    const std::string what = outcome ? str(*outcome, "type") : "running";
    if (what == "completed") {
      const json::value output = outcome->if_contains("output") ? outcome->at("output") : json::value(nullptr);
      s->record.status = RuntimeStatus::completed;
      s->record.output = json::serialize(output);
      page.push_back(json::object{{"type", "execution_completed"}, {"output", output}, {"time_ms", now}});
      notify_parent(s->record, b, true, output);
      finishing(s->record, b);
    } else if (what == "failed") {
      const json::value error = outcome->if_contains("error") ? outcome->at("error") : json::value("failed");
      s->record.status = RuntimeStatus::failed;
      s->record.error = error.is_string() ? std::string(error.as_string()) : json::serialize(error);
      page.push_back(json::object{{"type", "execution_failed"}, {"error", error}, {"time_ms", now}});
      notify_parent(s->record, b, false, error);
      finishing(s->record, b);
    } else if (what == "continued_as_new") {
      // The next generation starts from its input alone; this one's history is deleted with
      // this commit (that is what bounds an eternal orchestration's history).
      const json::value input = outcome->if_contains("input") ? outcome->at("input") : json::value(nullptr);
      for (const auto& key : s->page_keys) b.deletes.push_back({kHistory, key, std::nullopt});
      release_locks(s->record, b);  // a new generation holds nothing
      s->history = json::array{};
      s->page_keys.clear();
      s->scheduled.clear();
      s->record.generation += 1;
      s->record.pages = 0;
      s->record.events = 0;
      s->record.input = json::serialize(input);
      s->record.status = RuntimeStatus::running;
      s->record.version = version();  // a new generation replays nothing: it runs this code
      b.enqueues.push_back({queue_, event_message(s->id, json::object{{"type", "execution_started"}, {"input", input}, {"time_ms", now}},
                                                  sent_traceparent(*s), s->tracestate)});
      return commit_step(s, json::array{}, std::move(b));
    } else if (what != "running") {
      return fail_instance(s, "the orchestrator's outcome '" + what + "' is unknown (known: running, completed, failed, continued_as_new)");
    }
    commit_step(s, std::move(page), std::move(b));
  }

  void notify_parent(const Instance& i, Batch& b, bool ok, const json::value& value) {
    if (i.parent_instance.empty()) return;
    json::object e{{"task_id", i.parent_task}, {"time_ms", unix_ms(clock_)}};
    if (ok) {
      e["type"] = "sub_orchestration_completed";
      e["result"] = value;
    } else {
      e["type"] = "sub_orchestration_failed";
      e["error"] = json::object{{"type", "orchestration_failed"}, {"message", value.is_string() ? value : json::value(json::serialize(value))}};
    }
    b.enqueues.push_back({i.parent_queue, event_message(i.parent_instance, std::move(e))});
  }

  // The lock_acquired `event` answers the critical section `i` waits for: it holds its locks now.
  static bool lock_granted(Instance& i, const json::object& event) {
    if (i.locks.empty() || finished(i.status)) return false;
    boost::system::error_code ec;
    json::value v = json::parse(i.locks, ec);
    if (ec || !v.is_object()) return false;
    json::object& l = v.as_object();
    const auto task = integer(l, "task"), generation = integer(l, "generation");
    // The grant names the request's token (grants from before tokens: its generation and task).
    const std::string token = str(event, "token");
    if ((!token.empty() && token != str(l, "token")) || task != integer(event, "task_id") ||
        generation != integer(event, "generation") ||
        (l.if_contains("held") && l.at("held").is_bool() && l.at("held").as_bool())) {
      return false;
    }
    l["held"] = true;
    i.locks = json::serialize(l);
    return true;
  }

  // Releases the entities `entities` ([{"name", "key"}]) that `owner`'s request `token` locked
  // (token "": whatever the owner holds; locks taken before tokens).
  static void unlock(Batch& b, const std::string& owner, const std::string& token, const json::value& entities) {
    if (!entities.is_array()) return;
    for (const auto& e : entities.as_array()) {
      if (!e.is_object()) continue;
      const std::string name = str(e.as_object(), "name"), key = str(e.as_object(), "key");
      NewMessage m;
      m.type = "nimbus.durable.entity.unlock";
      m.subject = key;
      json::object body{{"key", key}, {"op", "__unlock"}, {"from", owner}};
      if (!token.empty()) body["input"] = json::object{{"token", token}};
      m.payload = json::serialize(body);
      b.enqueues.push_back({entity_queue(name), std::move(m)});
    }
  }

  // Whether the critical section `i` asked for (or holds) entity `name`/`key`.
  static bool in_locked_set(const Instance& i, const std::string& name, const std::string& key) {
    boost::system::error_code ec;
    json::value v = json::parse(i.locks, ec);
    if (ec || !v.is_object() || !v.as_object().if_contains("entities") || !v.as_object().at("entities").is_array()) return false;
    for (const auto& e : v.as_object().at("entities").as_array()) {
      if (e.is_object() && str(e.as_object(), "name") == name && str(e.as_object(), "key") == key) return true;
    }
    return false;
  }

  // A grant nobody waits for (lock_acquired `event` for `owner`): its entities are released.
  // By the token the grant names. A grant from an entity host of an earlier release names none,
  // and what its entity holds cannot be told from the grant: released as the owner's (token "").
  static void release_grant(Batch& b, const std::string& owner, const json::object& event) {
    unlock(b, owner, str(event, "token"), event.if_contains("entities") ? event.at("entities") : json::value(nullptr));
  }

  // The instance lets go of its critical section: held locks are released; a request still
  // under way is forgotten (its grant, when it comes, is released then: lock_granted fails).
  static void release_locks(Instance& i, Batch& b) {
    if (i.locks.empty()) return;
    boost::system::error_code ec;
    json::value v = json::parse(i.locks, ec);
    if (!ec && v.is_object() && v.as_object().if_contains("held") && v.as_object().at("held").is_bool() &&
        v.as_object().at("held").as_bool()) {
      unlock(b, i.id, str(v.as_object(), "token"),
             v.as_object().if_contains("entities") ? v.as_object().at("entities") : json::value(nullptr));
    }
    i.locks.clear();
  }

  // The instance finished (completed, failed, terminated): its locks are released, and with a
  // retention its purge is due then (a delayed event of its own: every host, no scans).
  void finishing(Instance& i, Batch& b) {
    release_locks(i, b);
    b.wakes.push_back(std::string(kDoneWake) + i.id);  // requests waiting for it, on any host
    if (spec_.retention <= Duration::zero()) return;
    NewMessage m = event_message(i.id, json::object{{"type", "purge_due"}, {"created_ms", i.created_ms}});
    m.delay_ms = to_ms(spec_.retention);
    b.enqueues.push_back({queue_, std::move(m)});
  }

  // A finished instance's retention is over: its record and history go, with the acks.
  void purge(const StepPtr& s) {
    if (!s->history_loaded) {
      if (auto st = load_history(*s); !st) return give_up_for_now(s, st.error().message);
      s->history_loaded = true;
    }
    Batch b = std::move(s->extra);
    for (const auto& m : s->messages) b.acks.push_back({m.id, m.lease});
    for (const auto& key : s->page_keys) b.deletes.push_back({kHistory, key, std::nullopt});
    b.deletes.push_back({kInstances, s->id, s->etag});
    logger_.host(LogLevel::info, "a finished orchestration instance's retention is over; it is purged",
                 {{"function", fn_.name}, {"instance", s->id}});
    commit(s, std::move(b));
  }

  void fail_instance(const StepPtr& s, const std::string& why) {
    logger_.host(LogLevel::error, "orchestration instance failed",
                 {{"function", fn_.name}, {"instance", s->id}, {"error", why}});
    s->record.status = RuntimeStatus::failed;
    s->record.error = why;
    json::array page = s->new_events;
    page.push_back(json::object{{"type", "execution_failed"}, {"error", why}, {"time_ms", unix_ms(clock_)}});
    Batch b;
    notify_parent(s->record, b, false, json::value(why));
    finishing(s->record, b);
    commit_step(s, std::move(page), std::move(b));
  }

  // The step's one commit: acks, its history page, the record (fenced by its ETag) and `b`.
  void commit_step(const StepPtr& s, json::array page, Batch b) {
    for (const auto& m : s->messages) b.acks.push_back({m.id, m.lease});
    if (!page.empty()) {
      const std::string key = page_key(s->id, s->record.generation, s->record.pages);
      b.puts.push_back({kHistory, key, json::serialize(page), std::string(), 0});
      s->record.pages += 1;
      s->record.events += static_cast<int64_t>(page.size());
      s->page_keys.push_back(key);
      for (auto& e : page) {
        const std::string type = str(e.as_object(), "type");
        if (!action_of(type).empty()) s->scheduled.emplace_back(type, str(e.as_object(), "name"));
        s->history.push_back(std::move(e));
      }
    }
    s->record.updated_ms = unix_ms(clock_);
    b.puts.push_back({kInstances, s->id, encode(s->record), s->etag, 0});
    s->record_put = true;
    // A step that leaves the instance running tells no client anything it could not see taken
    // back by a database crash (its messages run again): it need not wait for the disk
    // (Batch::relaxed). The step that finishes the instance (what ?wait= answers) is flushed,
    // and with it every step before it.
    b.relaxed = !finished(s->record.status);
    commit(s, std::move(b));
  }

  void commit(const StepPtr& s, Batch b) {
    for (auto& e : s->extra.enqueues) b.enqueues.push_back(std::move(e));
    s->extra.enqueues.clear();
    s->sets_due = !b.retries.empty() || std::any_of(b.enqueues.begin(), b.enqueues.end(), [this](const Batch::Enqueue& e) {
                    return e.queue == queue_ && e.message.delay_ms > 0;
                  });
    store_.commit(std::move(b), [self = shared_from_this(), s](Expected<BatchResult> done) {
      Status st = done ? Status(ok_status()) : Status(done.error());
      std::string etag = done && !done->etags.empty() ? done->etags.back() : std::string();
      self->thread_->post([self, s, st, etag] { self->committed(s, st, etag); });
    });
  }

  void committed(const StepPtr& s, const Status& st, const std::string& etag) {
    cache_.erase(s->id);
    if (st && s->record_put && s->history_loaded && !finished(s->record.status)) {
      if (cache_.size() >= kMaxCached) cache_.erase(cache_.begin());
      cache_[s->id] = Cached{std::move(s->record), etag, std::move(s->history), std::move(s->page_keys),
                             std::move(s->scheduled)};
    }
    if (!st) {
      // Another host advanced the instance first (its ETag moved), or the store failed: this
      // step's effects were not kept; its events are delivered again and replayed then.
      const bool conflict = st.error().code == store_error::conflict;
      logger_.host(conflict ? LogLevel::info : LogLevel::error,
                   conflict ? "an orchestration step lost to another one; its events are run again"
                            : "cannot commit an orchestration step; its events are run again",
                   {{"function", fn_.name}, {"instance", s->id}, {"error", st.error().message}});
      release_now(s->messages, conflict ? 0 : 1000);
    } else {
      std::vector<std::string> ids;
      for (const auto& m : s->messages) ids.push_back(m.id);
      forget(ids);
    }
    step_done(s->id, s->sets_due);
  }

  // The instance's step is over: the events that waited for it make the next one.
  // `due_later`: it put a durable timer or a retry in the queue (LeasedFeed::step_over).
  void step_done(const std::string& id, bool due_later = false) {
    std::vector<Message> next = steps_.leave(id, feed_->stopping());
    if (!next.empty()) begin(id, std::move(next));
    feed_->step_over(due_later);
  }

  // --- requests that wait for an instance to finish (?wait=) ------------------------------

  struct Waiter {
    uint64_t n = 0;
    std::string base;
    TimePoint deadline;
    std::optional<HttpReply> at_deadline;  // a start's reply; none: the status then
    Responder respond;
  };

  // On a store I/O thread: `id` was running when read; the request waits (registered first,
  // then read again, so that a finish in between is not missed).
  void park(const std::string& id, const std::string& base, Duration wait, std::optional<HttpReply> at_deadline,
            Responder respond) {
    uint64_t n;
    const TimePoint deadline = clock_.now() + wait;
    {
      std::unique_lock lock(waits_mu_);
      if (stopped_) {  // stopping: nothing here will see it finish (a start's reply is still its own)
        lock.unlock();
        return respond(at_deadline ? std::move(*at_deadline) : stopping_reply());
      }
      n = ++next_wait_;
      waits_.emplace(id, Waiter{n, base, deadline, std::move(at_deadline), std::move(respond)});
    }
    check_waits(id);
    poll_wait(id, n, deadline);
  }

  // Every second until its deadline: read again (a wake may have been lost), and answer at it.
  void poll_wait(const std::string& id, uint64_t n, TimePoint deadline) {
    std::weak_ptr<Orchestrator> weak = weak_from_this();
    timers_.at(std::min(clock_.now() + kWaitPoll, deadline), [weak, id, n, deadline] {
      auto self = weak.lock();
      if (!self || !self->parked(id, n)) return;
      self->store_.run_blocking([self, id, n, deadline] {
        self->check_waits(id);
        if (self->parked(id, n)) self->poll_wait(id, n, deadline);
      });
    });
  }

  bool parked(const std::string& id, uint64_t n) {
    std::lock_guard lock(waits_mu_);
    auto [from, to] = waits_.equal_range(id);
    return std::any_of(from, to, [n](const auto& w) { return w.second.n == n; });
  }

  // On a store I/O thread: the requests waiting for `id` get its status if it finished (or is
  // gone), and those whose wait is over get what they would have without waiting.
  void check_waits(const std::string& id) {
    std::string base;
    {
      std::lock_guard lock(waits_mu_);
      auto it = waits_.find(id);
      if (it == waits_.end()) return;
      base = it->second.base;
    }
    // The status as each waiter's URLs should give it (its own Host header), read once per base.
    std::map<std::string, HttpReply> by_base;
    by_base[base] = client_->instance("GET", fn_.name, id, "", "", "", "", false, base);
    const int status = by_base[base].status;
    const bool over = status != 202 && status != 503;  // finished (200) or gone (404)
    const TimePoint t = clock_.now();
    std::vector<std::pair<Responder, std::variant<HttpReply, std::string>>> answers;  // a reply, or its base
    {
      std::lock_guard lock(waits_mu_);
      auto [from, to] = waits_.equal_range(id);
      for (auto it = from; it != to;) {
        Waiter& w = it->second;
        if (over || t >= w.deadline) {
          // A start's waiter keeps its own reply unless the instance finished (a purge that
          // came first is no news to the request that created it).
          if (w.at_deadline && status != 200) {
            answers.emplace_back(std::move(w.respond), std::move(*w.at_deadline));
          } else {
            answers.emplace_back(std::move(w.respond), w.base);
          }
          it = waits_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& [respond, reply] : answers) {
      if (auto* own = std::get_if<HttpReply>(&reply)) {
        respond(std::move(*own));
        continue;
      }
      const std::string& b = std::get<std::string>(reply);
      auto got = by_base.find(b);
      if (got == by_base.end()) got = by_base.emplace(b, client_->instance("GET", fn_.name, id, "", "", "", "", false, b)).first;
      respond(HttpReply(got->second));  // a copy: several may wait on one base
    }
  }

  // --- management (durable/client.h, on the store's I/O threads) -------------------------

  std::string base_url(IncomingRequest& request) const {
    auto host = request.header("host");
    return "http://" + std::string(host ? *host : "localhost") + "/_nimbus/orchestrations/" + fn_.name;
  }

  // `?wait=DURATION` (at most 5 minutes): how long a start or a status request may wait for
  // the instance to finish. Null when absent; a reply when it is not a duration.
  static std::optional<Duration> wait_of(const std::string& query, std::optional<HttpReply>& bad) {
    auto text = query_param(query, "wait");
    if (!text) return std::nullopt;
    auto d = parse_duration(*text);
    if (!d || *d < Duration::zero() || *d > kMaxWait) {
      bad = HttpReply{400, {{"content-type", "application/json"}},
                      R"j({"error":"bad_wait","message":"wait is a duration from 0s to 5m (such as 10s or 500ms)"})j"};
      return std::nullopt;
    }
    return d;
  }

  void start_instance(IncomingRequest& request, Responder respond) {
    const std::string target(request.target());
    const auto q = target.find('?');
    const std::string query = q == std::string::npos ? std::string() : target.substr(q + 1);
    std::optional<HttpReply> bad;
    const std::optional<Duration> wait = wait_of(query, bad);
    if (bad) return respond(std::move(*bad));
    auto tp = request.header("traceparent");
    const std::string ts = tp ? tracestate_of(request) : std::string();
    store_.run_blocking([self = shared_from_this(), client = client_, name = fn_.name,
                         id = query_param(query, "instance").value_or(""), body = request.take_body(),
                         base = base_url(request), respond, traceparent = tp ? std::string(*tp) : std::string(),
                         tracestate = ts, wait] {
      HttpReply started = client->start(name, id, body, base, traceparent, tracestate);
      if (!wait || started.status != 202) return respond(std::move(started));
      // Its id: the last part of the status URL the reply gives (the one asked for, or a new one).
      const std::string* location = find_header(started.headers, "location");
      const std::string instance = location ? location->substr(location->rfind('/') + 1) : id;
      self->park(instance, base, *wait, std::move(started), respond);
    });
  }

  void instance_request(IncomingRequest& request, const Headers& params, Responder respond) {
    const std::string target(request.target());
    const auto q = target.find('?');
    const std::string query = q == std::string::npos ? std::string() : target.substr(q + 1);
    auto param = [&](const char* name) {
      const std::string* v = find_header(params, name);
      return v ? *v : std::string();
    };
    std::optional<HttpReply> bad;
    const std::optional<Duration> wait = wait_of(query, bad);
    if (bad) return respond(std::move(*bad));
    auto tp = request.header("traceparent");
    const std::string ts = tp ? tracestate_of(request) : std::string();
    store_.run_blocking([self = shared_from_this(), wait, client = client_, name = fn_.name,
                         method = std::string(request.method()), id = param("id"),
                         traceparent = tp ? std::string(*tp) : std::string(),
                         tracestate = ts,
                         action = param("action"), event = param("event"), body = request.take_body(),
                         reason = query_param(query, "reason").value_or(""),
                         history = query_param(query, "history").value_or("") == "true",
                         status = query_param(query, "status").value_or(""),
                         limit = std::atoi(query_param(query, "limit").value_or("100").c_str()),
                         after = query_param(query, "after").value_or(""), base = base_url(request), respond] {
      if (id.empty()) return respond(client->list(name, status, limit, after));
      HttpReply reply =
          client->instance(method, name, id, action, event, body, reason, history, base, traceparent, tracestate);
      // A running instance's status, asked to wait: answered when it finishes or the wait ends.
      if (wait && method == "GET" && action.empty() && !history && reply.status == 202) {
        return self->park(id, base, *wait, std::nullopt, respond);
      }
      respond(std::move(reply));
    });
  }

  std::shared_ptr<TaskThread> thread_;
  const FunctionSpec& fn_;
  OrchestrationTriggerSpec spec_;
  FunctionPool& pool_;
  Store& store_;
  const Clock& clock_;
  Logger& logger_;
  Timers timers_;
  std::string queue_;
  TriggerKind kind_;
  std::set<std::string> activities_, entities_;
  std::map<std::string, std::string> orchestrators_;  // name -> its code's version
  std::shared_ptr<LeasedFeed> feed_;  // leases, renewal, wake-ups
  std::shared_ptr<Client> client_;    // the management routes

  std::map<std::string, Cached> cache_;  // by instance id; the task thread's
  std::map<std::string, int64_t> code_waits_;  // keep_old instances waiting for their code: the next delay, ms
  std::mutex waits_mu_;
  std::multimap<std::string, Waiter> waits_;  // requests waiting for an instance to finish, by its id
  uint64_t next_wait_ = 0;
  bool stopped_ = false;  // stop() answered the waiters: later ones are answered at once
  KeyedSteps steps_;  // one step per instance at a time
};

void Orchestrator::add_routes(PublicRoutes& routes) {
  const std::string base = "/_nimbus/orchestrations/" + fn_.name;
  std::weak_ptr<Orchestrator> weak = weak_from_this();
  auto instance = [weak](IncomingRequest& request, Headers params, Responder respond) {
    if (auto self = weak.lock()) return self->instance_request(request, params, std::move(respond));
    respond(stopping_reply());
  };
  routes.add({base, {"POST"}, fn_.name, spec_.auth, [weak](IncomingRequest& request, Headers, Responder respond) {
                if (auto self = weak.lock()) return self->start_instance(request, std::move(respond));
                respond(stopping_reply());
              }});
  routes.add({base + "/instances", {"GET"}, fn_.name, spec_.auth, instance});
  routes.add({base + "/instances/{id}", {"GET", "DELETE"}, fn_.name, spec_.auth, instance});
  routes.add({base + "/instances/{id}/{action}", {"POST"}, fn_.name, spec_.auth, instance});
  routes.add({base + "/instances/{id}/{action}/{event}", {"POST"}, fn_.name, spec_.auth, instance});
}

Expected<std::unique_ptr<Trigger>> make_orchestration_trigger(const TriggerContext& c) {
  std::set<std::string> activities, entities;
  for (const auto& fn : c.app.functions) {
    if (!fn.triggers_of<ActivityTriggerSpec>().empty()) activities.insert(fn.name);
    if (!fn.triggers_of<EntityTriggerSpec>().empty()) entities.insert(fn.name);
  }
  const std::map<std::string, std::string> orchestrators = orchestrator_versions(c.app);  // reads their files
  auto thread = std::make_shared<TaskThread>();  // the steps' reads and decisions, for every orchestrator
  std::vector<std::shared_ptr<Orchestrator>> workers;
  for (const auto& fn : c.app.functions) {
    auto specs = fn.triggers_of<OrchestrationTriggerSpec>();
    FunctionPool* pool = c.pools.find(fn.name);
    if (specs.empty() || !pool) continue;
    auto o = Orchestrator::make(fn, *specs.front(), *pool, c, thread, activities, orchestrators, entities);
    if (c.routes) o->add_routes(*c.routes);
    workers.push_back(std::move(o));
  }
  return std::unique_ptr<Trigger>(
      std::make_unique<WorkerTrigger<Orchestrator>>(c.store, "orchestration", thread, std::move(workers)));
}

}  // namespace nimbus::durable
