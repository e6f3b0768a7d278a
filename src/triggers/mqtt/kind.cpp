// The mqtt kind: its keys, its Trigger (the connection to the app's broker) and its feed: the
// queue its messages are committed to before the broker hears PUBACK.
#include <yaml-cpp/yaml.h>

#include "core/mqtt_topic.h"
#include "manifest/manifest_reader.h"
#include "triggers/kind.h"
#include "triggers/mqtt/mqtt_spec.h"
#include "triggers/mqtt/mqtt_trigger.h"

namespace nimbus {
namespace {

std::shared_ptr<const TriggerSettings> read(ManifestReader& r, const YAML::Node& n, const std::string& path,
                                            const FunctionSpec&) {
  std::size_t errors_before = r.diagnostics.size();
  if (!r.check_map(n, path, {"topic", "qos", "lease", "batch_size"})) return nullptr;
  auto t = std::make_shared<MqttTriggerSpec>();
  if (auto v = n["topic"]; !v) {
    r.error(n, path + ".topic", "is missing; expected a topic filter, e.g. topic: devices/+/telemetry");
  } else if (auto filter = r.scalar(v, path + ".topic", "a topic filter such as devices/+/telemetry")) {
    std::string problem = check_topic_filter(*filter);
    if (!problem.empty()) r.error(v, path + ".topic", "'" + *filter + "' " + problem);
    t->filter = *filter;
  }
  if (auto v = n["qos"]) {
    if (auto q = r.integer(v, path + ".qos", 0, 1)) t->qos = static_cast<int>(*q);
  }
  if (auto v = n["lease"]) {
    if (auto d = r.duration(v, path + ".lease")) t->lease = *d;
  }
  if (auto v = n["batch_size"]) {
    if (auto b = r.integer(v, path + ".batch_size", 1, 1000)) t->batch_size = static_cast<int>(*b);
  }
  if (r.diagnostics.size() != errors_before) return nullptr;
  return t;
}

// A broker that is down is retried, never fatal.
Expected<std::unique_ptr<Trigger>> make(const TriggerContext& context) {
  return std::unique_ptr<Trigger>(std::make_unique<MqttTrigger>(context));
}

// A function's messages wait in one queue (the first mqtt trigger's batch size, the longest
// lease).
std::optional<StoreFeed> feed(const FunctionSpec& fn, const TriggerSpec& trigger) {
  const auto* t = trigger.as<MqttTriggerSpec>();
  if (!t) return std::nullopt;
  StoreFeed f;
  f.queue = mqtt_queue_for(fn.name);
  f.batch_size = t->batch_size;
  f.lease = t->lease;
  return f;
}

}  // namespace

extern const TriggerTemplate kMqttTemplate;
extern const TriggerKindInfo kMqttKind = {"mqtt", read, &kMqttTemplate, make, feed};

}  // namespace nimbus
