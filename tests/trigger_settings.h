#pragma once
// Tests read a trigger's settings as its kind's own type (triggers/<kind>/<kind>_spec.h).
#include <stdexcept>
#include <string>

#include "core/app_spec.h"
#include "durable/durable.h"
#include "durable/entities.h"
#include "triggers/blob/blob_spec.h"
#include "triggers/file/file_spec.h"
#include "triggers/http/http_spec.h"
#include "triggers/kind.h"
#include "triggers/mqtt/mqtt_spec.h"
#include "triggers/queue/queue_spec.h"
#include "triggers/stream/stream_spec.h"
#include "triggers/timer/timer_spec.h"

namespace nimbus {

// The settings of `t` as `Settings`; throws (failing the test) when `t` is another kind.
template <class Settings>
const Settings& settings_of(const TriggerSpec& t) {
  const auto* s = t.as<Settings>();
  if (!s) throw std::logic_error("the trigger is a " + std::string(t.kind.name()) + " trigger, not the kind asked for");
  return *s;
}

}  // namespace nimbus
