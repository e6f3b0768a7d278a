// Durable entities (entities.h): the per-key step engine and the routes.
#include "durable/entities.h"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string_view>

#include "durable/durable.h"
#include "durable/keyed_steps.h"
#include "durable/worker_trigger.h"
#include "observe/log.h"
#include "pool/function_pools.h"
#include "store/store.h"
#include "triggers/dispatch/leased_feed.h"
#include "core/ids.h"
#include "triggers/http/http_trigger.h"
#include "triggers/http/public_routes.h"
#include "triggers/http/server.h"
#include "triggers/task_thread.h"

namespace nimbus::durable {
namespace json = boost::json;

bool valid_entity_key(const std::string& key) {
  if (key.empty() || key.size() > 200) return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':' || c == '@';
  });
}

namespace {

constexpr int kMaxHeld = 4096;  // operations leased by one entity's consumer at once

int64_t to_ms(Duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }

std::string str(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

HttpReply json_reply(int status, const json::value& body) {
  return HttpReply{status, {{"content-type", "application/json"}}, json::serialize(body)};
}
HttpReply error_reply(int status, const std::string& code, const std::string& message) {
  return json_reply(status, json::object{{"error", code}, {"message", message}});
}

// A client's call (POST .../<op>?call=true) waits for its reply: the step that runs it puts the
// reply in _entity_replies under the call's id (kept 10 minutes) and wakes
// "_entity_replies/<id>". The waiting route hears of it at once when this host ran the step,
// else from that wake (told across hosts by the store) and reads it; failing both, by reading
// it every second until the call's timeout.
constexpr const char* kMetaClientCall = "durable-client-call";
constexpr const char* kReplies = "_entity_replies";
constexpr std::string_view kReplyWake = "_entity_replies/";
constexpr auto kReplyPoll = std::chrono::seconds(1);
constexpr int64_t kReplyTtlMs = 10 * 60 * 1000;
constexpr int64_t kDefaultCallTimeoutMs = 30000, kMaxCallTimeoutMs = 300000;

// The HTTP reply to a client's call, from the stored reply {"ok", "result" | "error"}.
HttpReply call_reply(const json::object& stored) {
  const json::value* ok = stored.if_contains("ok");
  if (ok && ok->is_bool() && ok->as_bool()) {
    return json_reply(200, json::object{{"result", stored.if_contains("result") ? stored.at("result") : json::value(nullptr)}});
  }
  json::object body{{"error", "operation_failed"}};
  if (const auto* e = stored.if_contains("error"); e && e->is_object()) {
    body["type"] = e->as_object().if_contains("type") ? e->as_object().at("type") : json::value("");
    body["message"] = e->as_object().if_contains("message") ? e->as_object().at("message") : json::value("");
  }
  return json_reply(500, body);
}

// Reserved operations: the lock protocol of critical sections (orchestrations.cpp).
constexpr const char* kLockOp = "__lock";
constexpr const char* kUnlockOp = "__unlock";

// One operation of a step: from a leased message, or parked in the entity's document while a
// critical section of another orchestration held it.
struct Operation {
  json::object body;  // {"key", "op", "input", "from"}
  Headers metadata;
  std::optional<Message> message;  // absent: it was parked
  std::string op, from;
  json::value input;
  // A call's reply: the calling instance, its task and its orchestrator's queue.
  std::string instance, reply;
  int64_t task = -1;
  std::string client_call;  // a client's call id, waiting for the reply
};

Operation operation_of(json::object body, Headers metadata, std::optional<Message> message) {
  Operation op;
  op.op = str(body, "op");
  op.from = str(body, "from");
  op.input = body.if_contains("input") ? body.at("input") : json::value(nullptr);
  const std::string* instance = find_header(metadata, kMetaInstance);
  const std::string* task = find_header(metadata, kMetaTask);
  const std::string* reply = find_header(metadata, kMetaReply);
  if (instance && task && reply) {
    int64_t n = -1;
    auto [end, ec] = std::from_chars(task->data(), task->data() + task->size(), n);
    if (ec == std::errc() && end == task->data() + task->size()) {
      op.instance = *instance;
      op.reply = *reply;
      op.task = n;
    }
  }
  if (const std::string* call = find_header(metadata, kMetaClientCall)) op.client_call = *call;
  op.body = std::move(body);
  op.metadata = std::move(metadata);
  op.message = std::move(message);
  return op;
}

// A parked operation as the document keeps it, and back.
json::object parked_entry(const Operation& op) {
  json::array meta;
  for (const auto& [k, v] : op.metadata) meta.push_back(json::array{json::string(k), json::string(v)});
  return json::object{{"body", op.body}, {"metadata", std::move(meta)}};
}
std::optional<Operation> from_parked(const json::value& entry) {
  if (!entry.is_object() || !entry.as_object().if_contains("body") || !entry.as_object().at("body").is_object()) {
    return std::nullopt;
  }
  Headers metadata;
  if (const auto* m = entry.as_object().if_contains("metadata"); m && m->is_array()) {
    for (const auto& kv : m->as_array()) {
      if (kv.is_array() && kv.as_array().size() == 2 && kv.as_array()[0].is_string() && kv.as_array()[1].is_string()) {
        metadata.push_back({std::string(kv.as_array()[0].as_string()), std::string(kv.as_array()[1].as_string())});
      }
    }
  }
  return operation_of(entry.as_object().at("body").as_object(), std::move(metadata), std::nullopt);
}

}  // namespace

class EntityWorker : public std::enable_shared_from_this<EntityWorker> {
 public:
  EntityWorker(const FunctionSpec& fn, const EntityTriggerSpec& spec, FunctionPool& pool, const TriggerContext& c,
               std::shared_ptr<TaskThread> thread)
      : thread_(std::move(thread)),
        fn_(fn),
        spec_(spec),
        pool_(pool),
        store_(c.store),
        clock_(c.clock),
        logger_(c.logger),
        queue_(entity_queue(fn.name)),
        kind_(TriggerKind::named("entity")),
        timers_(c.timers) {}

  static std::shared_ptr<EntityWorker> make(const FunctionSpec& fn, const EntityTriggerSpec& spec, FunctionPool& pool,
                                            const TriggerContext& c, std::shared_ptr<TaskThread> thread) {
    auto w = std::make_shared<EntityWorker>(fn, spec, pool, c, thread);
    w->feed_ = worker_feed(w, w->queue_, fn, spec.batch_size, spec.lease, kMaxHeld, c, thread);
    return w;
  }

  const std::string& queue() const { return queue_; }
  void pump() { feed_->pump(); }
  void stop() {
    feed_->stop();
    std::vector<Message> back = steps_.take_waiting();
    if (!back.empty()) feed_->release(back);
    // Clients' calls still waiting: their operations stay queued and run later.
    std::map<std::string, Responder> calls;
    {
      std::lock_guard lock(calls_mu_);
      calls.swap(calls_);
    }
    for (auto& [id, respond] : calls) {
      respond(json_reply(202, json::object{{"call", id}, {"signaled", true},
                                           {"message", "the host is stopping: the operation is accepted and will run"}}));
    }
  }
  bool wait_idle(TimePoint until) { return feed_->wait_idle(until); }
  void add_routes(PublicRoutes& routes);

  // The store told of changes (on its thread; nothing here blocks): a reply another host's
  // step wrote for a call waiting here is read on the store's I/O threads.
  void on_changes(const std::vector<std::string>& names) {
    for (const auto& name : names) {
      if (name.size() <= kReplyWake.size() || name.compare(0, kReplyWake.size(), kReplyWake) != 0) continue;
      std::string id = name.substr(kReplyWake.size());
      {
        std::lock_guard lock(calls_mu_);
        if (!calls_.count(id)) continue;
      }
      store_.run_blocking([self = shared_from_this(), id] { self->read_reply(id); });
    }
  }

  // On the task thread: the operations by key; one step per key at a time.
  void take(std::vector<Message> messages) {
    std::map<std::string, std::vector<Message>> by_key;
    Batch dead;
    std::vector<std::string> dead_ids;
    for (auto& m : messages) {
      boost::system::error_code ec;
      json::value v = json::parse(m.payload, ec);
      const json::object* o = !ec && v.is_object() ? &v.as_object() : nullptr;
      const std::string key = o ? str(*o, "key") : std::string();
      if (!o || !valid_entity_key(key) || str(*o, "op").empty()) {
        dead.dead.push_back({{m.id, m.lease},
                             "not an entity operation: expected {\"key\": KEY, \"op\": NAME, \"input\": ...}"});
        dead_ids.push_back(m.id);
        logger_.host(LogLevel::error, "an entity operation is malformed; moved to the dead-letter queue",
                     {{"function", fn_.name}, {"queue", queue_}, {"message_id", m.id}});
        continue;
      }
      by_key[key].push_back(std::move(m));
    }
    if (!dead.dead.empty()) {
      store_.commit(std::move(dead), [self = shared_from_this(), dead_ids](Expected<BatchResult>) { self->feed_->forget(dead_ids); });
    }
    for (auto& [key, msgs] : by_key) {
      if (feed_->stopping()) {
        feed_->release(msgs);
        continue;
      }
      if (steps_.enter(key, msgs)) begin(key, std::move(msgs));
    }
  }

 private:
  // One operation's end: its result object from the SDK ({"result"} or {"error"}), or the
  // failure that sends it to the dead letters.
  struct OpEnd {
    json::value result = nullptr;
    std::string failure;  // "" = it ran
  };
  struct Step {
    std::string key;
    std::vector<Message> messages;  // every leased message of the step
    std::string etag;               // of the entity's document; "" = there is none
    json::value state = nullptr;
    bool exists = false;
    std::string lock;               // the orchestration instance whose critical section holds it
    json::array parked;             // operations of others, waiting for the lock's release
    std::vector<Operation> run;     // the operations the entity function runs, in order
    Batch protocol;                 // the lock protocol's messages (forwards, grants), refusals
    std::set<std::string> refused;  // messages refused (dead-lettered) rather than run or parked
    std::vector<std::pair<std::string, json::object>> client_replies;  // by call id, once committed
    int attempt = 1;
    std::string traceparent;      // the operations' (their cause)
    std::string run_traceparent;  // the entity function's last run: the parent of its replies
    std::string tracestate;       // the operations' (W3C), passed on with the replies
    // Operations that failed together on their last attempt (a crash, a timeout) are run again
    // one at a time, in order, within the step: only those that fail alone are dead-lettered.
    bool singles = false;
    std::size_t next = 0;            // singles: the operation running
    std::vector<OpEnd> outcomes;  // singles: each operation's, so far
    bool sets_due = false;        // its commit sends operations back for later (a retry)
  };
  using StepPtr = std::shared_ptr<Step>;

  void begin(const std::string& key, std::vector<Message> messages) {
    auto s = std::make_shared<Step>();
    s->key = key;
    s->messages = std::move(messages);
    for (const auto& m : s->messages) s->attempt = std::max(s->attempt, m.deliveries);
    if (const std::string* tp = find_header(s->messages.front().metadata, "traceparent")) {
      s->traceparent = *tp;
      if (const std::string* ts = find_header(s->messages.front().metadata, "tracestate")) s->tracestate = *ts;
    }
    auto got = store_.get(kEntities, entity_state_key(fn_.name, key));
    if (!got) {
      logger_.host(LogLevel::error, "cannot read an entity's state; its operations are tried again",
                   {{"function", fn_.name}, {"key", key}, {"error", got.error().message}});
      feed_->release(s->messages, 1000);
      return step_done(key);
    }
    if (*got) {
      s->etag = (*got)->etag;
      boost::system::error_code ec;
      json::value doc = json::parse((*got)->value, ec);
      if (ec || !doc.is_object()) {
        logger_.host(LogLevel::error, "an entity's stored document is not JSON; it starts again from none",
                     {{"function", fn_.name}, {"key", key}});
      } else {
        const json::object& d = doc.as_object();
        if (d.if_contains("state")) {
          s->state = d.at("state");
          s->exists = true;
        }
        s->lock = str(d, "lock");
        if (d.if_contains("parked") && d.at("parked").is_array()) s->parked = d.at("parked").as_array();
      }
    }
    // In arrival order: a lock held by one orchestration parks the others' operations; its
    // release runs them first, in the order they came.
    std::deque<Operation> todo;
    for (const auto& m : s->messages) {
      todo.push_back(operation_of(json::parse(m.payload).as_object(), m.metadata, m));
    }
    while (!todo.empty()) {
      Operation op = std::move(todo.front());
      todo.pop_front();
      if (op.op == kUnlockOp) {
        // Only the request that holds it lets it go (a release without a token: from before them).
        const std::string token = op.input.is_object() ? str(op.input.as_object(), "token") : std::string();
        // (A lock taken before tokens holds the bare instance id: its owner's release names it.)
        if (!s->lock.empty() && (token.empty() || s->lock.find('#') == std::string::npos ? lock_holder(s->lock) == op.from
                                                                                         : token == s->lock)) {
          s->lock.clear();
          for (auto it = s->parked.rbegin(); it != s->parked.rend(); ++it) {
            if (auto p = from_parked(*it)) todo.push_front(std::move(*p));
          }
          s->parked.clear();
        }
        continue;
      }
      // Held: the holder's operations run; others', and the holder's own other lock requests
      // (an abandoned one's grant is still to be released), wait.
      if (!s->lock.empty() && (op.op == kLockOp ? request_token(op) != s->lock : lock_holder(s->lock) != op.from)) {
        // A lock request is never refused (nobody would hear of it, and the entities it holds
        // further up its chain would stay locked): only operations are.
        if (s->parked.size() >= kMaxParked && op.op != kLockOp) {
          refuse_parking(*s, op);
          continue;
        }
        s->parked.push_back(parked_entry(op));
        continue;
      }
      if (op.op == kLockOp) {
        take_lock(*s, op);
        continue;
      }
      s->run.push_back(std::move(op));
    }
    if (s->run.empty()) return decide(s, Result{});
    invoke(s, 0, s->run.size());
  }

  // The entity function runs `count` of the step's operations from `first`, on its state.
  void invoke(const StepPtr& s, std::size_t first, std::size_t count) {
    json::array operations;
    for (std::size_t i = first; i < first + count; ++i) {
      operations.push_back(json::object{{"op", s->run[i].op}, {"input", s->run[i].input}});
    }
    json::object work{{"name", fn_.name}, {"key", s->key}, {"state", s->state}, {"exists", s->exists},
                      {"operations", std::move(operations)}};
    Invocation inv = new_invocation(fn_, kind_, "/entities/" + fn_.name + "/" + s->key, "nimbus.durable.entity", clock_,
                                    s->traceparent, s->tracestate);
    inv.subject = s->key;
    s->run_traceparent = inv.traceparent;
    s->tracestate = inv.tracestate;
    inv.message_id = count == 1 && s->run[first].message ? s->run[first].message->id : s->messages.front().id;
    inv.attempt = s->attempt;
    inv.payload = json::serialize(work);
    inv.metadata = {{"content-type", "application/json"}};
    RunRecord run(inv, s->messages.front(), clock_);
    pool_.dispatch(std::move(inv), [self = shared_from_this(), s, run = std::move(run)](Result&& r) {
      run.log(self->logger_, self->clock_, r);
      auto result = std::make_shared<Result>(std::move(r));
      self->thread_->post([self, s, result] { self->decide(s, std::move(*result)); });
    });
  }

  // A locked entity keeps at most this many others' operations waiting (in its document, which
  // every step rewrites); past it an operation goes to the dead letters and its caller hears why.
  static constexpr std::size_t kMaxParked = 1000;
  void refuse_parking(Step& s, const Operation& op) {
    const std::string why = "entity '" + fn_.name + "' key '" + s.key + "' is locked by " + lock_holder(s.lock) + " and " +
                            std::to_string(kMaxParked) + " operations already wait for it";
    logger_.host(LogLevel::warn, "an operation on a locked entity is refused: too many wait",
                 {{"function", fn_.name}, {"key", s.key}, {"op", op.op}});
    if (op.message) {
      s.protocol.dead.push_back({{op.message->id, op.message->lease}, why});
      s.refused.insert(op.message->id);
    } else {
      NewMessage m;
      m.type = "nimbus.durable.entity.op";
      m.payload = json::serialize(op.body);
      m.metadata = op.metadata;
      m.metadata.push_back({"error", why});
      s.protocol.enqueues.push_back({queue_ + ".dead", std::move(m)});
    }
    reply(s, s.protocol, op, false, json::object{{"type", "entity_locked"}, {"message", why}}, unix_ms(clock_));
  }

  // The token a lock request holds the entity by (its instance alone, for requests from before tokens).
  static std::string request_token(const Operation& op) {
    const json::object* in = op.input.is_object() ? &op.input.as_object() : nullptr;
    std::string token = in ? str(*in, "token") : std::string();
    if (token.empty() && in) token = str(*in, "owner");
    return token.empty() ? op.from : token;
  }

  // A critical section's lock request reached this entity (entities are locked one after the
  // other, in the order of their names and keys, so two sections never wait on each other):
  // it is the owner's now; the request goes on to the next entity, or the owner hears that it
  // holds them all.
  void take_lock(Step& s, const Operation& op) {
    const json::object* in = op.input.is_object() ? &op.input.as_object() : nullptr;
    const json::array* entities = in && in->if_contains("entities") && in->at("entities").is_array()
                                      ? &in->at("entities").as_array()
                                      : nullptr;
    const auto index = in && in->if_contains("index") && in->at("index").is_int64() ? in->at("index").as_int64() : -1;
    const std::string owner = in ? str(*in, "owner") : std::string();
    bool well_formed = entities && !owner.empty() && index >= 0 && index < static_cast<int64_t>(entities->size()) &&
                       str(*in, "reply").rfind("_orch/", 0) == 0;
    if (well_formed) {
      for (const auto& e : *entities) {
        well_formed = well_formed && e.is_object() && !str(e.as_object(), "name").empty() &&
                      valid_entity_key(str(e.as_object(), "key"));
      }
    }
    if (!well_formed) {
      logger_.host(LogLevel::error, "a malformed lock request is dropped", {{"function", fn_.name}, {"key", s.key}});
      return;
    }
    s.lock = request_token(op);
    if (index + 1 < static_cast<int64_t>(entities->size())) {
      const json::object& next = entities->at(index + 1).as_object();
      json::object input = *in;
      input["index"] = index + 1;
      NewMessage m;
      m.type = "nimbus.durable.entity.lock";
      m.subject = str(next, "key");
      m.payload = json::serialize(json::object{{"key", str(next, "key")}, {"op", kLockOp}, {"from", owner}, {"input", std::move(input)}});
      s.protocol.enqueues.push_back({entity_queue(str(next, "name")), std::move(m)});
      return;
    }
    json::object event{{"type", "lock_acquired"}, {"task_id", in->if_contains("task") ? in->at("task") : json::value(-1)},
                       {"generation", in->if_contains("generation") ? in->at("generation") : json::value(0)},
                       {"token", s.lock}, {"entities", *entities}, {"time_ms", unix_ms(clock_)}};
    NewMessage m;
    m.type = "nimbus.durable.event";
    m.payload = json::serialize(json::object{{"instance", owner}, {"event", std::move(event)}});
    s.protocol.enqueues.push_back({str(*in, "reply"), std::move(m)});
  }

  static std::string failure_of(const Result& r) {
    return (r.error.type.empty() ? std::string(to_string(r.outcome)) : r.error.type) +
           (r.error.message.empty() ? "" : ": " + r.error.message);
  }

  // The SDK's answer for `count` operations: {"state", "exists", "results": [one each]}, or
  // why it is not one (into `failure`).
  static const json::array* step_results(const Result& r, std::size_t count, json::value& answer, std::string& failure) {
    boost::system::error_code ec;
    answer = json::parse(r.http ? r.http->body : std::string(), ec);
    const json::object* o = !ec && answer.is_object() ? &answer.as_object() : nullptr;
    const json::value* results = o ? o->if_contains("results") : nullptr;
    if (!results || !results->is_array() || results->as_array().size() != count) {
      failure = "the entity's answer is not a step's result ({\"state\", \"exists\", \"results\": [one per operation]}; "
                "is the handler wrapped by the SDK's entity?): " +
                (r.http ? r.http->body.substr(0, 200) : std::string());
      return nullptr;
    }
    return &results->as_array();
  }

  // The answer's new state becomes the step's.
  static void take_state(Step& s, const json::object& answer) {
    const json::value* exists = answer.if_contains("exists");
    s.exists = exists ? exists->is_bool() && exists->as_bool() : true;
    s.state = answer.if_contains("state") ? answer.at("state") : json::value(nullptr);
  }

  // On the task thread: the entity's answer, into the new state and the replies.
  void decide(const StepPtr& s, Result r) {
    if (s->singles) return decide_single(s, std::move(r));
    std::vector<OpEnd> outcomes(s->run.size());
    if (s->run.empty()) return finish(s, std::move(outcomes));
    if (r.outcome != Outcome::success) {
      const std::string failure = failure_of(r);
      if (s->attempt < fn_.retry.max_attempts) {
        logger_.host(LogLevel::warn, "an entity step failed; its operations are tried again",
                     {{"function", fn_.name}, {"key", s->key}, {"attempt", s->attempt}, {"error", failure}});
        Batch b;
        const int64_t due = unix_ms(clock_) + to_ms(fn_.retry.next_delay(s->attempt));
        for (const auto& m : s->messages) b.retries.push_back({{m.id, m.lease}, due, failure});
        s->client_replies.clear();  // nothing of this step is kept: no refusal is told either
        return commit(s, std::move(b));
      }
      if (s->run.size() > 1) {
        // The last attempt: which operation brought the step down is found by running them
        // one at a time, in order, each on the state the ones before it left.
        logger_.host(LogLevel::warn, "an entity step failed on its last attempt; its operations are run one at a time",
                     {{"function", fn_.name}, {"key", s->key}, {"operations", static_cast<int64_t>(s->run.size())}, {"error", failure}});
        s->singles = true;
        s->next = 0;
        s->outcomes.assign(s->run.size(), OpEnd{});
        return invoke(s, 0, 1);
      }
      outcomes[0].failure = failure;
      return finish(s, std::move(outcomes));
    }
    json::value answer;
    std::string failure;
    const json::array* results = step_results(r, s->run.size(), answer, failure);
    if (!results) {
      for (auto& o : outcomes) o.failure = failure;
      return finish(s, std::move(outcomes));
    }
    for (std::size_t i = 0; i < s->run.size(); ++i) outcomes[i].result = (*results)[i];
    take_state(*s, answer.as_object());
    finish(s, std::move(outcomes));
  }

  // Singles: one operation's answer; the next runs on the state it left, or the step ends.
  void decide_single(const StepPtr& s, Result r) {
    if (r.outcome == Outcome::unavailable || r.outcome == Outcome::overloaded) {
      // The host is stopping (or full): nothing of the step is kept, and the operations come
      // back unrun (their delivery does not count) rather than meet dead letters they did not earn.
      Batch b;
      const int64_t now = unix_ms(clock_);
      for (const auto& m : s->messages) b.retries.push_back({{m.id, m.lease}, now + 1000, failure_of(r), true});
      s->client_replies.clear();
      return commit(s, std::move(b));
    }
    OpEnd& out = s->outcomes[s->next];
    if (r.outcome != Outcome::success) {
      out.failure = failure_of(r) + " (operation '" + s->run[s->next].op + "' failed when run alone)";
    } else {
      json::value answer;
      if (const json::array* results = step_results(r, 1, answer, out.failure)) {
        out.result = (*results)[0];
        take_state(*s, answer.as_object());
      }
    }
    if (++s->next < s->run.size()) return invoke(s, s->next, 1);
    finish(s, std::move(s->outcomes));
  }

  // The step's end: each operation's reply (a failed one to the dead letters, the state as it
  // was before it), the entity's document, the acks.
  void finish(const StepPtr& s, std::vector<OpEnd> outcomes) {
    const int64_t now = unix_ms(clock_);
    Batch b = std::move(s->protocol);
    std::set<std::string> dead_ids;
    for (std::size_t i = 0; i < s->run.size(); ++i) {
      const Operation& op = s->run[i];
      const OpEnd& out = outcomes[i];
      if (!out.failure.empty()) {
        // The operation cannot run: it goes to the dead-letter queue and its caller learns it;
        // the lock protocol's part of the step still counts.
        logger_.host(LogLevel::error, "an entity operation failed; it is moved to the dead-letter queue",
                     {{"function", fn_.name}, {"key", s->key}, {"op", op.op}, {"error", out.failure}});
        if (op.message) {
          b.dead.push_back({{op.message->id, op.message->lease}, out.failure});
          dead_ids.insert(op.message->id);
        } else {  // a parked operation has no lease of its own: straight to the dead letters
          NewMessage m;
          m.type = "nimbus.durable.entity.op";
          m.payload = json::serialize(op.body);
          m.metadata = op.metadata;
          m.metadata.push_back({"error", out.failure});
          b.enqueues.push_back({queue_ + ".dead", std::move(m)});
        }
        reply(*s, b, op, false, json::object{{"type", "entity_failed"}, {"message", out.failure}}, now);
        continue;
      }
      const json::object* res = out.result.is_object() ? &out.result.as_object() : nullptr;
      if (res && res->if_contains("error")) {
        const json::value& e = res->at("error");
        reply(*s, b, op, false,
              e.is_object() ? e.as_object() : json::object{{"type", "entity_operation_failed"}, {"message", e}}, now);
      } else {
        reply(*s, b, op, true, res && res->if_contains("result") ? res->at("result") : json::value(nullptr), now);
      }
    }
    for (const auto& m : s->messages) {
      if (!dead_ids.count(m.id) && !s->refused.count(m.id)) b.acks.push_back({m.id, m.lease});
    }
    json::object doc;
    if (s->exists) doc["state"] = s->state;
    if (!s->lock.empty()) doc["lock"] = s->lock;
    if (!s->parked.empty()) doc["parked"] = s->parked;
    const std::string key = entity_state_key(fn_.name, s->key);
    if (!doc.empty()) {
      b.puts.push_back({kEntities, key, json::serialize(doc), s->etag, 0});
    } else if (!s->etag.empty()) {
      b.deletes.push_back({kEntities, key, s->etag});
    }
    commit(s, std::move(b));
  }

  // A call's result back to its caller: a client's into _entity_replies, an orchestration's
  // as an event like an activity's result.
  void reply(Step& s, Batch& b, const Operation& op, bool ok, json::value value, int64_t now) {
    if (!op.client_call.empty()) {
      json::object stored{{"ok", ok}, {ok ? "result" : "error", value}};
      b.puts.push_back({kReplies, op.client_call, json::serialize(stored), std::nullopt, kReplyTtlMs});
      b.wakes.push_back(std::string(kReplyWake) + op.client_call);
      s.client_replies.emplace_back(op.client_call, std::move(stored));
    }
    if (op.reply.empty()) return;
    json::object event{{"task_id", op.task}, {"time_ms", now}};
    if (ok) {
      event["type"] = "task_completed";
      event["result"] = std::move(value);
    } else {
      event["type"] = "task_failed";
      event["error"] = std::move(value);
    }
    NewMessage m;
    m.type = "nimbus.durable.event";
    m.payload = json::serialize(json::object{{"instance", op.instance}, {"event", std::move(event)}});
    add_trace_context(m.metadata, s.run_traceparent.empty() ? s.traceparent : s.run_traceparent, s.tracestate);
    b.enqueues.push_back({op.reply, std::move(m)});
  }

  void commit(const StepPtr& s, Batch b) {
    // Operations signalled or called by orchestrations tell no client: they need not wait for
    // the disk (Batch::relaxed). A reply to a client's call is what that client is answered on.
    b.relaxed = std::none_of(b.puts.begin(), b.puts.end(), [](const Batch::Put& p) { return p.store == kReplies; });
    s->sets_due = !b.retries.empty();
    store_.commit(std::move(b), [self = shared_from_this(), s](Expected<BatchResult> done) {
      Status st = done ? Status(ok_status()) : Status(done.error());
      self->thread_->post([self, s, st] { self->committed(s, st); });
    });
  }

  void committed(const StepPtr& s, const Status& st) {
    if (!st) {
      // Another host's step on this key came first (the ETag moved), or the store failed:
      // nothing of this step was kept; its operations run again.
      const bool conflict = st.error().code == store_error::conflict;
      logger_.host(conflict ? LogLevel::info : LogLevel::error,
                   conflict ? "an entity step lost to another one; its operations run again"
                            : "cannot commit an entity step; its operations run again",
                   {{"function", fn_.name}, {"key", s->key}, {"error", st.error().message}});
      feed_->release(s->messages, conflict ? 0 : 1000);
    } else {
      std::vector<std::string> ids;
      for (const auto& m : s->messages) ids.push_back(m.id);
      feed_->forget(ids);
      for (const auto& [call, stored] : s->client_replies) finish_call(call, call_reply(stored));
    }
    step_done(s->key, s->sets_due);
  }

  // `due_later`: the step's commit sent operations back for later (LeasedFeed::step_over).
  void step_done(const std::string& key, bool due_later = false) {
    std::vector<Message> next = steps_.leave(key, feed_->stopping());
    if (!next.empty()) begin(key, std::move(next));
    feed_->step_over(due_later);
  }

  // --- routes -------------------------------------------------------------------------

  void signal(IncomingRequest& request, const Headers& params, Responder respond) {
    const std::string* key = find_header(params, "key");
    const std::string* op = find_header(params, "op");
    if (!key || !valid_entity_key(*key)) {
      return respond(error_reply(400, "bad_key", "an entity key is 1 to 200 letters, digits and - _ . : @"));
    }
    if (op->rfind("__", 0) == 0) {
      return respond(error_reply(400, "bad_operation", "operations starting with __ are the host's own"));
    }
    const std::string target(request.target());
    const auto q = target.find('?');
    const std::string query = q == std::string::npos ? std::string() : target.substr(q + 1);
    const bool call = query_param(query, "call").value_or("") == "true";
    int64_t timeout_ms = kDefaultCallTimeoutMs;
    if (auto t = query_param(query, "timeout_ms")) {
      timeout_ms = std::atoll(t->c_str());
      if (timeout_ms <= 0 || timeout_ms > kMaxCallTimeoutMs) {
        return respond(error_reply(400, "bad_timeout", "timeout_ms is 1 to " + std::to_string(kMaxCallTimeoutMs)));
      }
    }
    std::string body = request.take_body();
    json::value input = nullptr;
    if (!body.empty()) {
      boost::system::error_code ec;
      input = json::parse(body, ec);
      if (ec) return respond(error_reply(400, "bad_input", "the operation's input is not JSON: " + ec.message()));
    }
    NewMessage m;
    m.type = "nimbus.durable.entity.signal";
    m.subject = *key;
    m.payload = json::serialize(json::object{{"key", *key}, {"op", *op}, {"input", std::move(input)}});
    m.metadata = {{"content-type", "application/json"}};
    if (auto tp = request.header("traceparent")) {
      add_trace_context(m.metadata, *tp, continue_tracestate(*tp, tracestate_of(request)));
    }
    std::string id;
    if (call) {  // waits from before the enqueue: the reply may come before the commit's callback
      id = new_invocation_id();
      m.metadata.push_back({kMetaClientCall, id});
      std::lock_guard lock(calls_mu_);
      calls_.emplace(id, respond);
    }
    Batch b;
    b.enqueues.push_back({queue_, std::move(m)});
    store_.commit(std::move(b), [self = shared_from_this(), respond, id, timeout_ms, name = fn_.name, key = *key,
                                 op = *op](Expected<BatchResult> done) {
      if (!done) {
        HttpReply r = error_reply(503, "store_unavailable", "cannot keep the operation: " + done.error().message);
        return id.empty() ? respond(std::move(r)) : self->finish_call(id, std::move(r));
      }
      if (id.empty()) return respond(json_reply(202, json::object{{"entity", name}, {"key", key}, {"op", op}, {"signaled", true}}));
      self->poll_call(id, self->clock_.now() + std::chrono::milliseconds(timeout_ms));
    });
  }

  // Answers a waiting client call, once (a local step's commit, a poll, or its timeout).
  void finish_call(const std::string& id, HttpReply reply) {
    std::optional<Responder> respond;
    {
      std::lock_guard lock(calls_mu_);
      auto it = calls_.find(id);
      if (it == calls_.end()) return;
      respond = std::move(it->second);
      calls_.erase(it);
    }
    (*respond)(std::move(reply));
  }

  // The stored reply of a waiting call, if there is one yet: answers it. True once answered.
  bool read_reply(const std::string& id) {
    auto got = store_.get(kReplies, id);
    if (!got || !*got) return false;
    boost::system::error_code ec;
    json::value v = json::parse((*got)->value, ec);
    if (ec || !v.is_object()) return false;
    finish_call(id, call_reply(v.as_object()));
    return true;
  }

  // Another host may run the call, and its wake may be lost (a reconnecting listener): the
  // reply is also read every second (on the store's I/O threads; the timer thread only
  // schedules), and at `deadline` the call is answered 202.
  void poll_call(const std::string& id, TimePoint deadline) {
    std::weak_ptr<EntityWorker> weak = weak_from_this();
    timers_.at(std::min(clock_.now() + kReplyPoll, deadline), [weak, id, deadline] {
      auto self = weak.lock();
      if (!self) return;
      {
        std::lock_guard lock(self->calls_mu_);
        if (!self->calls_.count(id)) return;  // answered
      }
      self->store_.run_blocking([self, id, deadline] {
        if (self->read_reply(id)) return;
        if (self->clock_.now() >= deadline) {
          return self->finish_call(id, json_reply(202, json::object{{"call", id}, {"signaled", true},
                                                                     {"message", "the operation is accepted and will run, "
                                                                                 "but did not finish within timeout_ms"}}));
        }
        self->poll_call(id, deadline);
      });
    });
  }

  void read_state(const Headers& params, Responder respond) {
    const std::string* key = find_header(params, "key");
    if (!key || !valid_entity_key(*key)) {
      return respond(error_reply(400, "bad_key", "an entity key is 1 to 200 letters, digits and - _ . : @"));
    }
    store_.run_blocking([this, self = shared_from_this(), key = *key, respond] {
      auto got = store_.get(kEntities, entity_state_key(fn_.name, key));
      if (!got) return respond(error_reply(503, "store_unavailable", got.error().message));
      boost::system::error_code ec;
      json::value doc = *got ? json::parse((*got)->value, ec) : json::value(nullptr);
      const json::object* d = !ec && doc.is_object() ? &doc.as_object() : nullptr;
      if (!d || !d->if_contains("state")) {
        return respond(error_reply(404, "not_found", "entity " + fn_.name + "/" + key + " has no state"));
      }
      json::object body{{"entity", fn_.name}, {"key", key}, {"state", d->at("state")}};
      if (const std::string lock = str(*d, "lock"); !lock.empty()) body["lockedBy"] = lock_holder(lock);
      if (const auto* p = d->if_contains("parked"); p && p->is_array()) body["parked"] = p->as_array().size();
      respond(json_reply(200, body));
    });
  }

  std::shared_ptr<TaskThread> thread_;
  const FunctionSpec& fn_;
  EntityTriggerSpec spec_;
  FunctionPool& pool_;
  Store& store_;
  const Clock& clock_;
  Logger& logger_;
  std::string queue_;
  TriggerKind kind_;
  std::shared_ptr<LeasedFeed> feed_;
  KeyedSteps steps_;
  Timers timers_;
  std::mutex calls_mu_;
  std::map<std::string, Responder> calls_;  // clients' calls waiting for their reply, by id
};

void EntityWorker::add_routes(PublicRoutes& routes) {
  const std::string base = "/_nimbus/entities/" + fn_.name + "/{key}";
  std::weak_ptr<EntityWorker> weak = weak_from_this();
  auto stopping = [](Responder& respond) {
    respond(error_reply(503, "stopping", "the host is stopping"));
  };
  routes.add({base, {"GET"}, fn_.name, spec_.auth, [weak, stopping](IncomingRequest&, Headers params, Responder respond) {
                if (auto self = weak.lock()) return self->read_state(params, std::move(respond));
                stopping(respond);
              }});
  routes.add({base + "/{op}", {"POST"}, fn_.name, spec_.auth,
              [weak, stopping](IncomingRequest& request, Headers params, Responder respond) {
                if (auto self = weak.lock()) return self->signal(request, params, std::move(respond));
                stopping(respond);
              }});
}

Expected<std::unique_ptr<Trigger>> make_entity_trigger(const TriggerContext& c) {
  auto thread = std::make_shared<TaskThread>();  // the steps' reads and decisions, for every entity
  std::vector<std::shared_ptr<EntityWorker>> workers;
  for (const auto& fn : c.app.functions) {
    auto specs = fn.triggers_of<EntityTriggerSpec>();
    FunctionPool* pool = c.pools.find(fn.name);
    if (specs.empty() || !pool) continue;
    auto w = EntityWorker::make(fn, *specs.front(), *pool, c, thread);
    if (c.routes) w->add_routes(*c.routes);
    workers.push_back(std::move(w));
  }
  return std::unique_ptr<Trigger>(std::make_unique<WorkerTrigger<EntityWorker>>(c.store, "entity", thread, std::move(workers)));
}

}  // namespace nimbus::durable
