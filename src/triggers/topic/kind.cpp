// The topic kind: a queue trigger on the function's subscription to a topic, with filters on
// the events' CloudEvents attributes; the subscription is made when the dispatcher starts.
#include <yaml-cpp/yaml.h>

#include "manifest/manifest_reader.h"
#include "store/store.h"
#include "triggers/kind.h"
#include "triggers/queue/queue_spec.h"

namespace nimbus {
namespace {

std::shared_ptr<const TriggerSettings> read(ManifestReader& r, const YAML::Node& n, const std::string& path,
                                            const FunctionSpec& fn) {
  auto t = std::make_shared<TopicTriggerSpec>();
  std::size_t errors_before = r.diagnostics.size();
  read_queue_keys(r, n, path, "topic", {"subscription", "filter"}, *t);
  if (!n.IsMap()) return nullptr;  // reported
  t->subscription = fn.name;
  if (auto v = n["subscription"]) {
    if (auto sub = r.scalar(v, path + ".subscription", "a subscription name")) {
      if (r.check_name(v, path + ".subscription", *sub, "subscription")) t->subscription = *sub;
    }
  }
  if (auto f = n["filter"]) {
    if (r.check_map(f, path + ".filter", {"type", "source", "subject_prefix"})) {
      if (auto v = f["type"]) t->type = r.scalar(v, path + ".filter.type", "a CloudEvents type").value_or("");
      if (auto v = f["source"]) t->source = r.scalar(v, path + ".filter.source", "a CloudEvents source").value_or("");
      if (auto v = f["subject_prefix"]) {
        t->subject_prefix = r.scalar(v, path + ".filter.subject_prefix", "a subject prefix").value_or("");
      }
    }
  }
  if (r.diagnostics.size() != errors_before) return nullptr;
  return t;
}

std::optional<StoreFeed> feed(const FunctionSpec& fn, const TriggerSpec& trigger) {
  const auto* t = trigger.as<TopicTriggerSpec>();
  if (!t) return std::nullopt;
  StoreFeed f;
  f.queue = t->name + "/" + t->subscription;
  f.batch_size = t->batch_size;
  f.max_wait = t->max_wait;
  f.lease = t->lease;
  f.default_type = "nimbus.topic.event";
  Subscription s{t->name, t->subscription, t->type, t->source, t->subject_prefix};
  f.setup = [s, function = fn.name](Store& store) -> Status {
    if (auto st = store.subscribe_sync(s); !st) {
      return Error{"function '" + function + "': cannot subscribe to topic '" + s.topic + "': " + st.error().message};
    }
    return ok_status();
  };
  return f;
}

}  // namespace

extern const TriggerTemplate kTopicTemplate;
extern const TriggerKindInfo kTopicKind = {"topic", read, &kTopicTemplate, nullptr, feed};

}  // namespace nimbus
