#pragma once
// The timer trigger's settings (`- timer: {schedule, time_zone, run_on_startup}`), read in
// kind.cpp.
#include <string>

#include "core/app_spec.h"

namespace nimbus {

// A schedule: cron (6 fields with seconds, or 5) in an IANA time zone.
struct TimerTriggerSpec final : TriggerSettings {
  std::string schedule;
  std::string time_zone = "UTC";
  bool run_on_startup = false;
};

}  // namespace nimbus
