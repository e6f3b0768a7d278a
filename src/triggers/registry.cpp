#include "triggers/registry.h"

#include "triggers/file/file_trigger.h"
#include "triggers/http/function_keys.h"
#include "triggers/http/http_trigger.h"
#include "triggers/mqtt/mqtt_trigger.h"
#include "triggers/queue/queue_trigger.h"
#include "triggers/stream/stream_trigger.h"
#include "triggers/timer/timer_trigger.h"
#include "triggers/template.h"

namespace nimbus {
namespace {

template <class T>
Expected<std::unique_ptr<Trigger>> plain(const TriggerContext& context) {
  return std::unique_ptr<Trigger>(std::make_unique<T>(context));
}

// The public listener, with the function keys kept beside the app (made on first start).
Expected<std::unique_ptr<Trigger>> http(const TriggerContext& context) {
  auto keys = FunctionKeys::load_or_create(context.app.dir / ".nimbus" / "keys.json", context.app);
  if (!keys) return keys.error();
  return std::unique_ptr<Trigger>(std::make_unique<HttpTrigger>(context, std::move(*keys)));
}

}  // namespace

const std::vector<TriggerFactory>& trigger_registry() {
  static const std::vector<TriggerFactory> kinds = {
      {"http", http},
      {"queue", plain<QueueTrigger>},  // also topics, blobs, MQTT messages and async HTTP jobs
      {"timer", plain<TimerTrigger>},
      {"stream", plain<StreamTrigger>},
      {"file", plain<FileTrigger>},
      {"mqtt", plain<MqttTrigger>},  // a broker that is down is retried, never fatal
  };
  return kinds;
}

Expected<std::vector<std::unique_ptr<Trigger>>> make_triggers(const TriggerContext& context) {
  std::vector<std::unique_ptr<Trigger>> out;
  for (const auto& kind : trigger_registry()) {
    auto made = kind.make(context);
    if (!made) return made.error();
    out.push_back(std::move(*made));
  }
  return out;
}

// What `nimbus new --trigger KIND` writes, one per manifest kind (triggers/<kind>/template.cpp).
extern const TriggerTemplate kHttpTemplate, kQueueTemplate, kTopicTemplate, kTimerTemplate, kStreamTemplate,
    kBlobTemplate, kFileTemplate, kMqttTemplate;

const std::vector<TriggerTemplate>& trigger_templates() {
  static const std::vector<TriggerTemplate> templates = {kHttpTemplate,   kQueueTemplate, kTopicTemplate,
                                                         kTimerTemplate,  kStreamTemplate, kBlobTemplate,
                                                         kFileTemplate,   kMqttTemplate};
  return templates;
}

const TriggerTemplate* find_trigger_template(std::string_view kind) {
  for (const auto& t : trigger_templates()) {
    if (t.kind == kind) return &t;
  }
  return nullptr;
}

}  // namespace nimbus
