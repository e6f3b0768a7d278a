// The durable kinds: `orchestration` (its keys; its Trigger, durable/orchestrations.h),
// `entity` (its keys; its Trigger, durable/entities.h) and `activity` (its keys; fed from
// _activity/<name> by the dispatcher, whose hooks here send the result back to the calling
// orchestration in the commit that acknowledges the call).
#include <yaml-cpp/yaml.h>

#include <boost/json.hpp>
#include <charconv>
#include <map>
#include <mutex>
#include <type_traits>

#include "durable/durable.h"
#include "durable/entities.h"
#include "durable/orchestrations.h"
#include "manifest/manifest_reader.h"
#include "store/store.h"
#include "triggers/kind.h"

namespace nimbus {
namespace durable {
namespace json = boost::json;

namespace {

// batch_size and lease, which both kinds take.
template <class Spec>
void read_feed_keys(ManifestReader& r, const YAML::Node& n, const std::string& path, Spec& t) {
  if (auto v = n["lease"]) {
    if (auto d = r.duration(v, path + ".lease")) t.lease = *d;
  }
  if (auto v = n["batch_size"]) {
    if (auto b = r.integer(v, path + ".batch_size", 1, 1000)) t.batch_size = static_cast<int>(*b);
  }
}

// orchestration and entity: auth (of their routes), batch_size and lease; an orchestration's
// retention.
template <class Spec>
std::shared_ptr<const TriggerSettings> read_routed(ManifestReader& r, const YAML::Node& n, const std::string& path,
                                                   const FunctionSpec&) {
  auto t = std::make_shared<Spec>();
  if (!n || n.IsNull()) return t;
  std::size_t errors_before = r.diagnostics.size();
  constexpr bool orchestration = std::is_same_v<Spec, OrchestrationTriggerSpec>;
  std::vector<std::string_view> keys = {"auth", "batch_size", "lease"};
  if (orchestration) keys.insert(keys.end(), {"retention", "version", "versioning"});
  if (!r.check_map(n, path, keys)) return nullptr;
  if (auto v = n["auth"]) {
    if (auto a = r.choice(v, path + ".auth", {"anonymous", "function"})) {
      t->auth = *a == "function" ? AuthLevel::function : AuthLevel::anonymous;
    }
  }
  if constexpr (orchestration) {
    if (auto v = n["retention"]) {
      if (auto d = r.duration(v, path + ".retention")) t->retention = *d;
    }
    if (auto v = n["version"]) {
      if (auto text = r.scalar(v, path + ".version", "a version (text)")) {
        if (text->empty() || text->size() > 64) {
          r.error(v, path + ".version", "a version is 1 to 64 characters");
        } else {
          t->version = *text;
        }
      }
    }
    if (auto v = n["versioning"]) {
      const std::string at = path + ".versioning";
      if (r.check_map(v, at, {"on_mismatch"}) && v["on_mismatch"]) {
        if (auto c = r.choice(v["on_mismatch"], at + ".on_mismatch", {"replay", "fail", "keep_old"})) {
          t->on_mismatch = *c == "fail" ? OnMismatch::fail : *c == "keep_old" ? OnMismatch::keep_old : OnMismatch::replay;
        }
      }
    }
  }
  read_feed_keys(r, n, path, *t);
  if (r.diagnostics.size() != errors_before) return nullptr;
  return t;
}

std::shared_ptr<const TriggerSettings> read_activity(ManifestReader& r, const YAML::Node& n, const std::string& path,
                                                     const FunctionSpec&) {
  auto t = std::make_shared<ActivityTriggerSpec>();
  if (!n || n.IsNull()) return t;
  std::size_t errors_before = r.diagnostics.size();
  if (!r.check_map(n, path, {"batch_size", "lease"})) return nullptr;
  read_feed_keys(r, n, path, *t);
  if (r.diagnostics.size() != errors_before) return nullptr;
  return t;
}

Expected<std::unique_ptr<Trigger>> make_entities(const TriggerContext& context) { return make_entity_trigger(context); }

Expected<std::unique_ptr<Trigger>> make_orchestrations(const TriggerContext& context) {
  return make_orchestration_trigger(context);
}

// An activity's result, as the orchestration sees it: its reply as JSON (text that is not
// JSON becomes a JSON string; nothing, null).
json::value result_value(const Result& r) {
  if (!r.http || r.http->body.empty()) return nullptr;
  boost::system::error_code ec;
  json::value v = json::parse(r.http->body, ec);
  return ec ? json::value(json::string(r.http->body)) : v;
}

class ActivityHooks final : public FeedHooks {
 public:
  Status prepare(Store&, const Message& message, Invocation& inv, std::shared_ptr<const Headers>&,
                 int64_t) const override {
    const std::string* instance = find_header(inv.metadata, kMetaInstance);
    const std::string* task = find_header(inv.metadata, kMetaTask);
    const std::string* reply = find_header(inv.metadata, kMetaReply);
    if (!instance || !task || !reply) return ok_status();  // enqueued by hand: runs, answers no one
    int64_t step = 0;
    auto [end, ec] = std::from_chars(task->data(), task->data() + task->size(), step);
    if (ec != std::errc() || end != task->data() + task->size()) {
      return Error{"the activity call's " + std::string(kMetaTask) + " metadata is not a number: '" + *task + "'"};
    }
    std::lock_guard lock(mu_);
    calls_[message.id] = Call{*instance, step, *reply, inv.traceparent, inv.tracestate};
    return ok_status();
  }

  void complete(Batch& batch, const std::string& message_id, int, Outcome outcome, bool last, const Result& result,
                const std::string& error_type, int64_t now_ms) const override {
    Call call;
    {
      std::lock_guard lock(mu_);
      auto it = calls_.find(message_id);
      if (it == calls_.end()) return;
      call = std::move(it->second);
      calls_.erase(it);
    }
    if (outcome != Outcome::success && !last) return;  // retried: the orchestration waits on
    // The result goes to the orchestration, not to a client: with nothing else in the commit
    // (no outputs of the activity's own, which others may see at once), it need not wait for
    // the disk (Batch::relaxed); the step that finishes the instance flushes it.
    batch.relaxed = batch.enqueues.empty() && batch.publishes.empty() && batch.puts.empty() &&
                    batch.deletes.empty() && batch.appends.empty() && batch.checkpoints.empty() &&
                    batch.blob_puts.empty() && batch.blob_deletes.empty() && batch.wakes.empty();
    json::object event;
    event["task_id"] = call.task;
    event["time_ms"] = now_ms;
    if (outcome == Outcome::success) {
      event["type"] = "task_completed";
      event["result"] = result_value(result);
    } else {
      event["type"] = "task_failed";
      event["error"] = json::object{{"type", error_type.empty() ? std::string(to_string(outcome)) : error_type},
                                    {"message", result.error.message}};
    }
    NewMessage m;
    m.type = "nimbus.durable.event";
    m.payload = json::serialize(json::object{{"instance", call.instance}, {"event", std::move(event)}});
    // The step its answer wakes is in the activity's trace, under it.
    add_trace_context(m.metadata, call.traceparent, call.tracestate);
    batch.enqueues.push_back({call.reply, std::move(m)});
  }

 private:
  struct Call {
    std::string instance;
    int64_t task = 0;
    std::string reply;
    std::string traceparent;  // the activity run's
    std::string tracestate;
  };
  mutable std::mutex mu_;
  mutable std::map<std::string, Call> calls_;  // by message id, from delivery to completion
};

std::optional<StoreFeed> activity_feed(const FunctionSpec& fn, const TriggerSpec& trigger) {
  const auto* a = trigger.as<ActivityTriggerSpec>();
  if (!a) return std::nullopt;
  StoreFeed f;
  f.queue = activity_queue(fn.name);
  f.batch_size = a->batch_size;
  f.lease = a->lease;
  f.default_type = "nimbus.durable.activity";
  f.hooks = std::make_shared<ActivityHooks>();
  f.hand_off = true;  // an orchestration's calls: taken in the commit that makes them
  return f;
}

}  // namespace
}  // namespace durable

extern const TriggerKindInfo kOrchestrationKind = {"orchestration", durable::read_routed<durable::OrchestrationTriggerSpec>, nullptr,
                                                   durable::make_orchestrations, nullptr};
extern const TriggerKindInfo kEntityKind = {"entity", durable::read_routed<durable::EntityTriggerSpec>, nullptr, durable::make_entities, nullptr};
extern const TriggerKindInfo kActivityKind = {"activity", durable::read_activity, nullptr, nullptr,
                                              durable::activity_feed};

}  // namespace nimbus
