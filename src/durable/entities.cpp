// Durable entities (entities.h): the per-key step engine and the routes.
#include "durable/entities.h"

#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <map>

#include "durable/durable.h"
#include "durable/keyed_steps.h"
#include "durable/worker_trigger.h"
#include "observe/log.h"
#include "pool/function_pools.h"
#include "store/store.h"
#include "triggers/dispatch/leased_feed.h"
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

// One operation of a step, from its message.
struct Operation {
  Message message;
  std::string op;
  json::value input;
  // A call's reply: the calling instance, its task and its orchestrator's queue.
  std::string instance, reply;
  int64_t task = -1;
};

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
        kind_(TriggerKind::named("entity")) {}

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
  }
  bool wait_idle(TimePoint until) { return feed_->wait_idle(until); }
  void add_routes(PublicRoutes& routes);

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
  struct Step {
    std::string key;
    std::vector<Operation> ops;
    std::vector<Message> messages;  // every message of the step (the malformed too)
    std::string etag;               // of the state document; "" = there is none
    json::value state = nullptr;
    bool exists = false;
    int attempt = 1;
    std::string traceparent;
  };
  using StepPtr = std::shared_ptr<Step>;

  void begin(const std::string& key, std::vector<Message> messages) {
    auto s = std::make_shared<Step>();
    s->key = key;
    s->messages = std::move(messages);
    for (const auto& m : s->messages) {
      s->attempt = std::max(s->attempt, m.deliveries);
      json::object o = json::parse(m.payload).as_object();
      Operation op;
      op.message = m;
      op.op = str(o, "op");
      op.input = o.if_contains("input") ? o.at("input") : json::value(nullptr);
      const std::string* instance = find_header(m.metadata, kMetaInstance);
      const std::string* task = find_header(m.metadata, kMetaTask);
      const std::string* reply = find_header(m.metadata, kMetaReply);
      if (instance && task && reply) {
        int64_t n = -1;
        auto [end, ec] = std::from_chars(task->data(), task->data() + task->size(), n);
        if (ec == std::errc() && end == task->data() + task->size()) {
          op.instance = *instance;
          op.reply = *reply;
          op.task = n;
        }
      }
      s->ops.push_back(std::move(op));
    }
    if (const std::string* tp = find_header(s->messages.front().metadata, "traceparent")) s->traceparent = *tp;
    auto got = store_.get(kEntities, entity_state_key(fn_.name, key));
    if (!got) {
      logger_.host(LogLevel::error, "cannot read an entity's state; its operations are tried again",
                   {{"function", fn_.name}, {"key", key}, {"error", got.error().message}});
      feed_->release(s->messages, 1000);
      return step_done(key);
    }
    if (*got) {
      boost::system::error_code ec;
      json::value doc = json::parse((*got)->value, ec);
      if (ec || !doc.is_object()) {
        logger_.host(LogLevel::error, "an entity's stored state is not a JSON document; it starts again from none",
                     {{"function", fn_.name}, {"key", key}});
      } else {
        s->state = doc.as_object().if_contains("state") ? doc.as_object().at("state") : json::value(nullptr);
        s->exists = true;
      }
      s->etag = (*got)->etag;
    }
    json::array operations;
    for (const auto& op : s->ops) operations.push_back(json::object{{"op", op.op}, {"input", op.input}});
    json::object work{{"name", fn_.name}, {"key", key}, {"state", s->state}, {"exists", s->exists},
                      {"operations", std::move(operations)}};
    Invocation inv = new_invocation(fn_, kind_, "/entities/" + fn_.name + "/" + key, "nimbus.durable.entity", clock_,
                                    s->traceparent);
    inv.subject = key;
    inv.message_id = s->messages.front().id;
    inv.attempt = s->attempt;
    inv.payload = json::serialize(work);
    inv.metadata = {{"content-type", "application/json"}};
    pool_.dispatch(std::move(inv), [self = shared_from_this(), s](Result&& r) {
      auto result = std::make_shared<Result>(std::move(r));
      self->thread_->post([self, s, result] { self->decide(s, std::move(*result)); });
    });
  }

  // On the task thread: the entity's answer, into the new state and the replies.
  void decide(const StepPtr& s, Result r) {
    const int64_t now = unix_ms(clock_);
    std::string failure;
    json::value answer;
    if (r.outcome != Outcome::success) {
      failure = (r.error.type.empty() ? std::string(to_string(r.outcome)) : r.error.type) +
                (r.error.message.empty() ? "" : ": " + r.error.message);
      if (s->attempt < fn_.retry.max_attempts) {
        logger_.host(LogLevel::warn, "an entity step failed; its operations are tried again",
                     {{"function", fn_.name}, {"key", s->key}, {"attempt", s->attempt}, {"error", failure}});
        Batch b;
        const int64_t due = now + to_ms(fn_.retry.next_delay(s->attempt));
        for (const auto& m : s->messages) b.retries.push_back({{m.id, m.lease}, due, failure});
        return commit(s, std::move(b));
      }
    } else {
      boost::system::error_code ec;
      answer = json::parse(r.http ? r.http->body : std::string(), ec);
      const json::object* o = !ec && answer.is_object() ? &answer.as_object() : nullptr;
      const json::value* results = o ? o->if_contains("results") : nullptr;
      if (!results || !results->is_array() || results->as_array().size() != s->ops.size()) {
        failure = "the entity's answer is not a step's result ({\"state\", \"exists\", \"results\": [one per operation]}; "
                  "is the handler wrapped by the SDK's entity?): " +
                  (r.http ? r.http->body.substr(0, 200) : std::string());
      }
    }
    Batch b;
    if (!failure.empty()) {
      // Its operations cannot run: they go to the dead-letter queue, and callers learn it.
      logger_.host(LogLevel::error, "an entity step failed; its operations are moved to the dead-letter queue",
                   {{"function", fn_.name}, {"key", s->key}, {"error", failure}});
      for (const auto& op : s->ops) {
        b.dead.push_back({{op.message.id, op.message.lease}, failure});
        reply(b, op, false, json::object{{"type", "entity_failed"}, {"message", failure}}, now);
      }
      return commit(s, std::move(b));
    }
    const json::object& o = answer.as_object();
    const json::array& results = o.at("results").as_array();
    for (std::size_t i = 0; i < s->ops.size(); ++i) {
      b.acks.push_back({s->ops[i].message.id, s->ops[i].message.lease});
      const json::object* res = results[i].is_object() ? &results[i].as_object() : nullptr;
      if (res && res->if_contains("error")) {
        const json::value& e = res->at("error");
        reply(b, s->ops[i], false,
              e.is_object() ? e.as_object() : json::object{{"type", "entity_operation_failed"}, {"message", e}}, now);
      } else {
        reply(b, s->ops[i], true, res && res->if_contains("result") ? res->at("result") : json::value(nullptr), now);
      }
    }
    const json::value* exists = o.if_contains("exists");
    const bool keep = exists ? exists->is_bool() && exists->as_bool() : true;
    const std::string key = entity_state_key(fn_.name, s->key);
    if (keep) {
      json::object doc{{"state", o.if_contains("state") ? o.at("state") : json::value(nullptr)}};
      b.puts.push_back({kEntities, key, json::serialize(doc), s->etag, 0});
    } else if (!s->etag.empty()) {
      b.deletes.push_back({kEntities, key, s->etag});
    }
    commit(s, std::move(b));
  }

  // A call's result back to the calling orchestration, as an activity's would come.
  void reply(Batch& b, const Operation& op, bool ok, json::value value, int64_t now) {
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
    b.enqueues.push_back({op.reply, std::move(m)});
  }

  void commit(const StepPtr& s, Batch b) {
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
    }
    step_done(s->key);
  }

  void step_done(const std::string& key) {
    std::vector<Message> next = steps_.leave(key, feed_->stopping());
    if (!next.empty()) begin(key, std::move(next));
    pump();
  }

  // --- routes -------------------------------------------------------------------------

  void signal(IncomingRequest& request, const Headers& params, Responder respond) {
    const std::string* key = find_header(params, "key");
    const std::string* op = find_header(params, "op");
    if (!key || !valid_entity_key(*key)) {
      return respond(error_reply(400, "bad_key", "an entity key is 1 to 200 letters, digits and - _ . : @"));
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
    if (auto tp = request.header("traceparent")) m.metadata.push_back({"traceparent", std::string(*tp)});
    Batch b;
    b.enqueues.push_back({queue_, std::move(m)});
    store_.commit(std::move(b), [respond, name = fn_.name, key = *key, op = *op](Expected<BatchResult> done) {
      if (!done) return respond(error_reply(503, "store_unavailable", "cannot keep the signal: " + done.error().message));
      respond(json_reply(202, json::object{{"entity", name}, {"key", key}, {"op", op}, {"signaled", true}}));
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
      if (!*got) {
        return respond(error_reply(404, "not_found", "entity " + fn_.name + "/" + key + " has no state"));
      }
      boost::system::error_code ec;
      json::value doc = json::parse((*got)->value, ec);
      json::value state = !ec && doc.is_object() && doc.as_object().if_contains("state") ? doc.as_object().at("state")
                                                                                          : json::value(nullptr);
      respond(json_reply(200, json::object{{"entity", fn_.name}, {"key", key}, {"state", std::move(state)}}));
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
