#pragma once
// Cron schedules in an IANA time zone (the OS time zone database, through Howard Hinnant's
// date/tz). A local time that does not exist (the hour skipped when clocks go forward) fires
// at the first instant after the gap, so a daily job still runs that day; a local time that
// occurs twice (clocks go back) fires once, at its first occurrence.
#include <chrono>
#include <string>

#include "core/cron.h"
#include "core/expected.h"

namespace nimbus {

using SysSeconds = std::chrono::sys_seconds;

class TimeZone {
 public:
  // "UTC" (the default) or an IANA name such as "Europe/Berlin"; errors name the zone.
  static Expected<TimeZone> find(const std::string& name);
  const std::string& name() const { return name_; }

  // The first due time strictly after `after`.
  SysSeconds next(const CronSchedule& schedule, SysSeconds after) const;

 private:
  TimeZone() = default;
  std::string name_;
  const void* zone_ = nullptr;  // date::time_zone, kept out of this header
};

}  // namespace nimbus
