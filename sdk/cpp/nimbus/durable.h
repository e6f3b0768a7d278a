// Durable orchestrations and entities in C++ (docs/durable.md): an orchestrator is a C++20
// coroutine that co_awaits tasks; an entity is a function of one operation.
//
//   #include <nimbus/durable.h>
//   namespace durable = nimbus::durable;
//
//   durable::Orchestration hello_cities(durable::OrchestrationContext& ctx) {
//     boost::json::array out;
//     for (const auto& city : ctx.input().as_array())
//       out.push_back(co_await ctx.call_activity("say_hello", city));
//     co_return out;
//   }
//   NIMBUS_ORCHESTRATOR(hello_cities)
//
//   boost::json::value counter(durable::EntityContext& ctx) {
//     int64_t value = ctx.state(0).to_number<int64_t>();
//     if (ctx.operation() == "add") ctx.set_state(value + ctx.input().to_number<int64_t>());
//     return value;
//   }
//   NIMBUS_ENTITY(counter)
//
// The coroutine runs again from its start at every step, against the instance's history
// (deterministic replay): a task the history says is done resumes it at once. So the code must
// be deterministic: time from ctx.current_time_ms(), ids from ctx.new_guid(), I/O only in
// activities. The wire is the one the Python and Node SDKs speak (src/durable/ is the host's
// side). Build with `target_link_libraries(fn PRIVATE nimbus::durable)` (Boost.JSON).
#pragma once

#include <boost/json.hpp>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "nimbus/function.h"

namespace nimbus::durable {
namespace json = boost::json;

// A called activity, sub-orchestration or entity operation failed (after its retries).
class ActivityFailed : public std::runtime_error {
 public:
  explicit ActivityFailed(json::value error) : std::runtime_error(message_of(error)), error_(std::move(error)) {}
  const json::value& error() const { return error_; }

 private:
  static std::string message_of(const json::value& e) {
    if (const auto* o = e.if_object()) {
      for (const char* key : {"message", "type"}) {
        if (const auto* v = o->if_contains(key); v && v->is_string() && !v->as_string().empty()) {
          return std::string(v->as_string());
        }
      }
    }
    return "failed";
  }
  json::value error_;
};

// How a call is tried again when it fails: up to max_attempts in all, waiting
// first_interval_ms, then that times backoff each time (at most max_interval_ms), on a durable
// timer.
struct RetryPolicy {
  int max_attempts = 3;
  int64_t first_interval_ms = 1000;
  double backoff = 2.0;
  std::optional<int64_t> max_interval_ms;
  std::function<bool(const json::value& error)> handle;  // empty: retry every failure

  int64_t delay_ms(int attempt) const {
    double d = static_cast<double>(first_interval_ms);
    for (int i = 1; i < attempt; ++i) d *= backoff;
    if (max_interval_ms && d > static_cast<double>(*max_interval_ms)) d = static_cast<double>(*max_interval_ms);
    return static_cast<int64_t>(d);
  }
};

namespace detail {

struct TaskState {
  bool done = false;
  json::value result;
  std::optional<json::value> error;
  std::vector<std::function<void()>> on_done;  // parents and the coroutine waiting on it

  void finish(json::value r, std::optional<json::value> e) {
    if (done) return;
    done = true;
    result = std::move(r);
    error = std::move(e);
    auto callbacks = std::move(on_done);
    on_done.clear();
    for (auto& f : callbacks) f();
  }
  void then(std::function<void()> f) {
    if (done) return f();
    on_done.push_back(std::move(f));
  }
};

struct ContinueAsNew {
  json::value input;
};

}  // namespace detail

// Something an orchestrator awaits: `co_await task` gives its result (JSON) or throws
// ActivityFailed.
class Task {
 public:
  explicit Task(std::shared_ptr<detail::TaskState> s) : s_(std::move(s)) {}
  bool done() const { return s_->done; }
  const json::value& result() const { return s_->result; }
  bool failed() const { return s_->error.has_value(); }

  bool await_ready() const noexcept { return s_->done; }
  void await_suspend(std::coroutine_handle<> h) { s_->on_done.push_back([h] { h.resume(); }); }
  json::value await_resume() const {
    if (s_->error) throw ActivityFailed(*s_->error);
    return s_->result;
  }
  const std::shared_ptr<detail::TaskState>& state() const { return s_; }

 private:
  std::shared_ptr<detail::TaskState> s_;
};

// An orchestrator's coroutine type: `co_return` its output.
class Orchestration {
 public:
  struct promise_type {
    json::value output;
    std::exception_ptr error;
    Orchestration get_return_object() { return Orchestration(std::coroutine_handle<promise_type>::from_promise(*this)); }
    std::suspend_always initial_suspend() noexcept { return {}; }
    std::suspend_always final_suspend() noexcept { return {}; }
    void return_value(json::value v) { output = std::move(v); }
    void unhandled_exception() { error = std::current_exception(); }
  };
  explicit Orchestration(std::coroutine_handle<promise_type> h) : h_(h) {}
  Orchestration(Orchestration&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Orchestration& operator=(Orchestration&&) = delete;
  ~Orchestration() {
    if (h_) h_.destroy();
  }
  void start() { h_.resume(); }
  bool done() const { return h_.done(); }
  promise_type& promise() { return h_.promise(); }

 private:
  std::coroutine_handle<promise_type> h_;
};

class OrchestrationContext {
 public:
  OrchestrationContext(std::string instance, const Context* host) : instance_(std::move(instance)), host_(host) {}
  OrchestrationContext(const OrchestrationContext&) = delete;
  // Tasks wait on each other through callbacks (when_all, retries): the step's end breaks those
  // cycles, so nothing of a step outlives it.
  ~OrchestrationContext() {
    for (auto& s : states_) s->on_done.clear();
  }

  const std::string& instance_id() const { return instance_; }
  const json::value& input() const { return input_; }
  int64_t current_time_ms() const { return now_ms_; }  // the step's time: the same on every replay
  bool is_replaying() const { return replaying_; }

  Task call_activity(std::string name, json::value input = nullptr, std::optional<RetryPolicy> retry = std::nullopt) {
    json::object action{{"type", "call_activity"}, {"name", std::move(name)}, {"input", std::move(input)}};
    return retry ? retrying(std::move(action), std::move(*retry)) : schedule(std::move(action));
  }
  Task call_sub_orchestration(std::string name, json::value input = nullptr,
                              std::optional<RetryPolicy> retry = std::nullopt) {
    json::object action{{"type", "call_sub_orchestration"}, {"name", std::move(name)}, {"input", std::move(input)}};
    return retry ? retrying(std::move(action), std::move(*retry)) : schedule(std::move(action));
  }
  // Done at that time (a delayed message in the store: it survives restarts).
  Task create_timer(int64_t fire_at_ms) { return schedule({{"type", "create_timer"}, {"fire_at_ms", fire_at_ms}}); }
  // The data of the next event raised by that name (events raised earlier wait for it).
  Task wait_for_external_event(const std::string& name) {
    auto s = new_state();
    auto& pending = events_[name];
    if (!pending.empty()) {
      json::value data = std::move(pending.front());
      pending.erase(pending.begin());
      s->finish(std::move(data), std::nullopt);
    } else {
      waiters_[name].push_back(s);
    }
    return Task(s);
  }
  // An entity's operation, request/reply (co_await it) or one way.
  Task call_entity(std::string name, std::string key, std::string op, json::value input = nullptr) {
    return schedule({{"type", "call_entity"}, {"name", std::move(name)}, {"key", std::move(key)}, {"op", std::move(op)},
                     {"input", std::move(input)}});
  }
  void signal_entity(std::string name, std::string key, std::string op, json::value input = nullptr) {
    actions_.push_back(json::object{{"type", "signal_entity"}, {"name", std::move(name)}, {"key", std::move(key)},
                                    {"op", std::move(op)}, {"input", std::move(input)}});
  }
  // A critical section over (name, key) entities; unlock_entities() (or the end) releases them.
  Task lock_entities(const std::vector<std::pair<std::string, std::string>>& entities) {
    json::array list;
    for (const auto& [name, key] : entities) list.push_back(json::object{{"name", name}, {"key", key}});
    return schedule({{"type", "lock_entities"}, {"entities", std::move(list)}});
  }
  void unlock_entities() { actions_.push_back(json::object{{"type", "unlock_entities"}}); }

  // Their results as a JSON array once all are done (the first failure fails it).
  Task when_all(const std::vector<Task>& tasks) {
    auto s = new_state();
    auto states = std::make_shared<std::vector<std::shared_ptr<detail::TaskState>>>();
    for (const auto& t : tasks) states->push_back(t.state());
    auto check = [s, states] {
      if (s->done) return;
      for (const auto& c : *states) {
        if (c->done && c->error) return s->finish(nullptr, *c->error);
      }
      for (const auto& c : *states) {
        if (!c->done) return;
      }
      json::array out;
      for (const auto& c : *states) out.push_back(c->result);
      s->finish(std::move(out), std::nullopt);
    };
    for (const auto& c : *states) {
      if (!c->done) c->on_done.push_back(check);
    }
    check();
    return Task(s);
  }
  // The index (in `tasks`) of the first one done.
  Task when_any(const std::vector<Task>& tasks) {
    auto s = new_state();
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      if (tasks[i].done()) {
        s->finish(static_cast<int64_t>(i), std::nullopt);
        return Task(s);
      }
    }
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      tasks[i].state()->on_done.push_back([s, i] { s->finish(static_cast<int64_t>(i), std::nullopt); });
    }
    return Task(s);
  }

  // A UUID that is the same on every replay.
  std::string new_guid() {
    const std::string seed = "nimbus:" + instance_ + ":" + std::to_string(++guids_);
    uint64_t a = 1469598103934665603ull, b = 1099511628211ull * 31;
    for (unsigned char c : seed) {
      a = (a ^ c) * 1099511628211ull;
      b = (b ^ c) * 1469598103934665603ull + 0x9e3779b97f4a7c15ull;
    }
    char out[40];
    std::snprintf(out, sizeof out, "%08x-%04x-8%03x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                  static_cast<unsigned>((a >> 16) & 0xffff), static_cast<unsigned>(a & 0xfff),
                  static_cast<unsigned>(0x8000 | ((b >> 48) & 0x3fff)),
                  static_cast<unsigned long long>(b & 0xffffffffffffull));
    return out;
  }
  void set_custom_status(json::value v) { custom_status_ = std::move(v); }
  // Ends this generation; the next starts from `input` with an empty history.
  [[noreturn]] void continue_as_new(json::value input = nullptr) { throw detail::ContinueAsNew{std::move(input)}; }
  // Logs only when not replaying (each line once, not once per step).
  void log(std::string_view line) const {
    if (!replaying_ && host_) host_->log.info(line);
  }

  // ---- the SDK's own: the history, one event at a time ----
  void apply(const json::object& e) {
    const json::value* t = e.if_contains("type");
    const std::string type = t && t->is_string() ? std::string(t->as_string()) : std::string();
    auto field = [&](const char* k) { return e.if_contains(k) ? e.at(k) : json::value(nullptr); };
    auto task_id = [&] {
      const json::value* v = e.if_contains("task_id");
      return v && v->is_int64() ? v->as_int64() : -1;
    };
    if (type == "orchestrator_started") {
      if (const auto* v = e.if_contains("time_ms"); v && v->is_int64()) now_ms_ = v->as_int64();
    } else if (type == "execution_started") {
      input_ = field("input");
    } else if (type == "task_completed" || type == "sub_orchestration_completed") {
      resolve(task_id(), field("result"), std::nullopt);
    } else if (type == "task_failed" || type == "sub_orchestration_failed") {
      json::value err = field("error");
      resolve(task_id(), nullptr, err.is_null() ? json::value(json::object{{"message", "failed"}}) : err);
    } else if (type == "timer_fired" || type == "lock_acquired") {
      resolve(task_id(), nullptr, std::nullopt);
    } else if (type == "event_raised") {
      const std::string name = e.if_contains("name") && e.at("name").is_string() ? std::string(e.at("name").as_string()) : "";
      auto& waiting = waiters_[name];
      if (!waiting.empty()) {
        auto s = waiting.front();
        waiting.erase(waiting.begin());
        s->finish(field("data"), std::nullopt);
      } else {
        events_[name].push_back(field("data"));
      }
    }
  }
  void set_replaying(bool r) { replaying_ = r; }
  json::array& actions() { return actions_; }
  const std::optional<json::value>& custom_status() const { return custom_status_; }

 private:
  std::shared_ptr<detail::TaskState> new_state() {
    states_.push_back(std::make_shared<detail::TaskState>());
    return states_.back();
  }
  Task schedule(json::object action) {
    const int64_t id = static_cast<int64_t>(actions_.size());
    actions_.push_back(std::move(action));
    auto s = new_state();
    tasks_[id] = s;
    if (auto early = early_.find(id); early != early_.end()) {
      auto [result, error] = std::move(early->second);
      early_.erase(early);
      s->finish(std::move(result), std::move(error));
    }
    return Task(s);
  }
  void resolve(int64_t id, json::value result, std::optional<json::value> error) {
    if (auto t = tasks_.find(id); t != tasks_.end()) return t->second->finish(std::move(result), std::move(error));
    early_[id] = {std::move(result), std::move(error)};
  }
  // A call with a retry policy: each failure a durable timer, then the call again.
  Task retrying(json::object action, RetryPolicy policy) {
    struct Run {
      OrchestrationContext* ctx;
      json::object action;
      RetryPolicy policy;
      int attempt = 1;
      std::shared_ptr<detail::TaskState> out;
      void call(const std::shared_ptr<Run>& self) {
        Task t = ctx->schedule(action);
        t.state()->then([self, s = t.state()] { self->called(self, s); });
      }
      void called(const std::shared_ptr<Run>& self, const std::shared_ptr<detail::TaskState>& s) {
        if (!s->error) return out->finish(s->result, std::nullopt);
        if (attempt >= policy.max_attempts || (policy.handle && !policy.handle(*s->error))) {
          return out->finish(nullptr, s->error);
        }
        Task timer = ctx->create_timer(ctx->current_time_ms() + policy.delay_ms(attempt));
        timer.state()->then([self] {
          ++self->attempt;
          self->call(self);
        });
      }
    };
    auto run = std::make_shared<Run>(Run{this, std::move(action), std::move(policy)});
    run->out = new_state();
    run->call(run);
    return Task(run->out);
  }

  std::string instance_;
  const Context* host_;
  json::value input_ = nullptr;
  int64_t now_ms_ = 0;
  bool replaying_ = true;
  json::array actions_;
  std::map<int64_t, std::shared_ptr<detail::TaskState>> tasks_;
  std::map<int64_t, std::pair<json::value, std::optional<json::value>>> early_;  // resolved before scheduled
  std::map<std::string, std::vector<std::shared_ptr<detail::TaskState>>> waiters_;
  std::map<std::string, std::vector<json::value>> events_;  // raised before anyone waited
  std::optional<json::value> custom_status_;
  int guids_ = 0;
  std::vector<std::shared_ptr<detail::TaskState>> states_;  // every task of the step
};

// One operation on an entity: its name and input, and the entity's state.
class EntityContext {
 public:
  EntityContext(std::string name, std::string key, std::string op, json::value input, json::value state, bool exists)
      : name_(std::move(name)), key_(std::move(key)), op_(std::move(op)), input_(std::move(input)),
        state_(std::move(state)), exists_(exists) {}
  const std::string& entity_name() const { return name_; }
  const std::string& entity_key() const { return key_; }
  const std::string& operation() const { return op_; }
  const json::value& input() const { return input_; }
  bool has_state() const { return exists_; }
  // The state, or `initial` when there is none yet.
  json::value state(json::value initial = nullptr) const { return exists_ ? state_ : initial; }
  void set_state(json::value v) {
    state_ = std::move(v);
    exists_ = true;
  }
  void delete_state() {
    state_ = nullptr;
    exists_ = false;
  }

  // The SDK's own.
  std::pair<json::value, bool> take_state() { return {std::move(state_), exists_}; }

 private:
  std::string name_, key_, op_;
  json::value input_, state_;
  bool exists_;
};

namespace detail {

inline std::string text_of(const json::object& o, const char* key) {
  const json::value* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// One step of an orchestration: the history and the new events replayed through `fn`.
template <class Fn>
json::object orchestration_step(Fn& fn, const json::object& work, const Context* host) {
  OrchestrationContext ctx(text_of(work, "instance"), host);
  std::vector<const json::object*> events;
  std::size_t replayed = 0;
  for (const char* part : {"history", "new_events"}) {
    if (const auto* list = work.if_contains(part); list && list->is_array()) {
      for (const auto& e : list->as_array()) {
        if (e.is_object()) events.push_back(&e.as_object());
      }
    }
    if (std::string_view(part) == "history") replayed = events.size();
  }
  std::optional<Orchestration> orch;
  for (std::size_t i = 0; i < events.size(); ++i) {
    ctx.set_replaying(i < replayed);
    ctx.apply(*events[i]);
    if (!orch && text_of(*events[i], "type") == "execution_started") {
      orch.emplace(fn(ctx));
      orch->start();
    }
  }
  json::object outcome{{"type", "running"}};
  if (orch && orch->done()) {
    if (auto error = orch->promise().error) {
      try {
        std::rethrow_exception(error);
      } catch (const ContinueAsNew& more) {
        outcome = {{"type", "continued_as_new"}, {"input", more.input}};
      } catch (const std::exception& e) {
        outcome = {{"type", "failed"}, {"error", json::object{{"type", "exception"}, {"message", e.what()}}}};
      } catch (...) {
        outcome = {{"type", "failed"}, {"error", json::object{{"type", "exception"}, {"message", "a non-standard exception"}}}};
      }
    } else {
      outcome = {{"type", "completed"}, {"output", orch->promise().output}};
    }
  }
  json::object reply{{"actions", std::move(ctx.actions())}, {"outcome", std::move(outcome)}};
  if (ctx.custom_status()) reply["custom_status"] = *ctx.custom_status();
  orch.reset();  // the coroutine (suspended, or done) goes before the context it refers to
  return reply;
}

// One step of an entity: each operation in order; one that throws fails only its caller and
// leaves the state as it was before it.
template <class Fn>
json::object entity_step(Fn& fn, const json::object& work) {
  json::value state = work.if_contains("state") ? work.at("state") : json::value(nullptr);
  bool exists = work.if_contains("exists") && work.at("exists").is_bool() && work.at("exists").as_bool();
  json::array results;
  if (const auto* ops = work.if_contains("operations"); ops && ops->is_array()) {
    for (const auto& op : ops->as_array()) {
      if (!op.is_object()) continue;
      const json::object& o = op.as_object();
      EntityContext ctx(text_of(work, "name"), text_of(work, "key"), text_of(o, "op"),
                        o.if_contains("input") ? o.at("input") : json::value(nullptr), state, exists);
      try {
        json::value result = fn(ctx);
        std::tie(state, exists) = ctx.take_state();
        results.push_back(json::object{{"result", std::move(result)}});
      } catch (const std::exception& e) {
        results.push_back(json::object{{"error", json::object{{"type", "exception"}, {"message", e.what()}}}});
      }
    }
  }
  return json::object{{"state", std::move(state)}, {"exists", exists}, {"results", std::move(results)}};
}

template <class Step>
Response json_step(const Request& req, Step&& step) {
  boost::system::error_code ec;
  json::value work = json::parse(req.body(), ec);
  if (ec || !work.is_object()) return Response::json(400, R"({"error":"not a durable step"})");
  return Response::json(200, json::serialize(step(work.as_object())));
}

}  // namespace detail
}  // namespace nimbus::durable

// Exports `fn` (Orchestration(OrchestrationContext&)) as this library's function: an
// orchestrator (its trigger: `orchestration`).
#define NIMBUS_ORCHESTRATOR(fn)                                                                    \
  static ::nimbus::Response nimbus_orchestrator_handler_(const ::nimbus::Request& req, ::nimbus::Context& ctx) { \
    return ::nimbus::durable::detail::json_step(req, [&](const ::boost::json::object& work) {     \
      return ::nimbus::durable::detail::orchestration_step(fn, work, &ctx);                       \
    });                                                                                            \
  }                                                                                                \
  NIMBUS_FUNCTION(nimbus_orchestrator_handler_)

// Exports `fn` (boost::json::value(EntityContext&): the operation's result) as this library's
// function: an entity (its trigger: `entity`).
#define NIMBUS_ENTITY(fn)                                                                          \
  static ::nimbus::Response nimbus_entity_handler_(const ::nimbus::Request& req, ::nimbus::Context&) { \
    return ::nimbus::durable::detail::json_step(                                                   \
        req, [&](const ::boost::json::object& work) { return ::nimbus::durable::detail::entity_step(fn, work); }); \
  }                                                                                                \
  NIMBUS_FUNCTION(nimbus_entity_handler_)
