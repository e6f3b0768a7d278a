#pragma once
// Cron schedules: NCRONTAB with seconds (6 fields: sec min hour day month weekday) and classic
// 5-field cron (min hour day month weekday; seconds = 0). Each field takes `*`, numbers,
// ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b,c`; months JAN-DEC and weekdays SUN-SAT
// by name (case-insensitive); weekday 7 is Sunday too. As in classic cron, when both day of
// month and weekday are restricted, a day matches if either does.
//
// Times are computed in an IANA time zone. A local time that does not exist (the hour skipped
// when clocks go forward) fires at the first instant after the gap, so a daily job still runs
// that day; a local time that occurs twice (clocks go back) fires once, at its first
// occurrence.
#include <bitset>
#include <chrono>
#include <string>
#include <string_view>

#include "core/expected.h"

namespace nimbus {

struct CronSchedule {
  std::bitset<60> seconds, minutes;
  std::bitset<24> hours;
  std::bitset<32> days;      // 1..31
  std::bitset<13> months;    // 1..12
  std::bitset<7> weekdays;   // 0 = Sunday
  bool any_day = true;       // day-of-month field was '*'
  bool any_weekday = true;   // weekday field was '*'
  std::string text;
};

// Parses an expression; the error names the field and what is wrong with it.
Expected<CronSchedule> parse_cron(std::string_view expression);

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
