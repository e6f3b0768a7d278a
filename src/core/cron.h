#pragma once
// Cron schedules: NCRONTAB with seconds (6 fields: sec min hour day month weekday) and classic
// 5-field cron (min hour day month weekday; seconds = 0). Each field takes `*`, numbers,
// ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b,c`; months JAN-DEC and weekdays SUN-SAT
// by name (case-insensitive); weekday 7 is Sunday too. As in classic cron, when both day of
// month and weekday are restricted, a day matches if either does.
//
// Pure calendar arithmetic: time zones are triggers/timer/time_zone.h's job.
#include <bitset>
#include <chrono>
#include <string>
#include <string_view>

#include "core/expected.h"

#include <date/date.h>
#include <optional>

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

// The first local (civil) time >= t that the schedule matches, searched up to ~5 years ahead.
std::optional<date::local_seconds> next_local(const CronSchedule& schedule, date::local_seconds t);

}  // namespace nimbus
