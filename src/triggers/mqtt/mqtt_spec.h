#pragma once
// The mqtt trigger's settings (`- mqtt: {topic, qos, lease, batch_size}`), read in kind.cpp.
#include <string>

#include "core/app_spec.h"

namespace nimbus {

// Messages from the app's MQTT broker on topics matching `filter`. Each is committed to the
// queue mqtt_queue_for(function) before the broker hears PUBACK; the function runs from there
// (lease and batch size) like a queue trigger.
struct MqttTriggerSpec final : TriggerSettings {
  std::string filter;  // "devices/+/telemetry", "site/#"
  int qos = 1;         // 0 or 1
  Duration lease{};    // 0 = the function's timeout + 30 s
  int batch_size = 16;

  bool uses_mqtt_broker() const override { return true; }
};
inline std::string mqtt_queue_for(const std::string& function) { return "_mqtt." + function; }

}  // namespace nimbus
