#include "triggers/timer/time_zone.h"

#include <date/tz.h>

namespace nimbus {

Expected<TimeZone> TimeZone::find(const std::string& name) {
  TimeZone tz;
  tz.name_ = name.empty() ? "UTC" : name;
  try {
    tz.zone_ = date::locate_zone(tz.name_);
  } catch (const std::exception& e) {
    return Error{"time zone '" + tz.name_ + "' is not known (" + e.what() +
                 "); expected an IANA name such as Europe/Berlin or America/New_York"};
  }
  return tz;
}

SysSeconds TimeZone::next(const CronSchedule& schedule, SysSeconds after) const {
  using namespace std::chrono;
  const auto* zone = static_cast<const date::time_zone*>(zone_);
  // Start one second later in local time; walk matching local times until one maps past `after`.
  auto local = date::local_seconds((zone->to_local(after + seconds(1))).time_since_epoch());
  // Just after a transition, local times that were skipped or repeated lie before `local`
  // and may still be due (a gap's times fire as it ends): look back then, and only then
  // (stepping candidate by candidate through two hours is slow for a schedule every second).
  const auto since_transition = (after + seconds(1)) - date::floor<seconds>(zone->get_info(after + seconds(1)).begin);
  auto probe = since_transition < hours(3) ? local - hours(2) : local;
  for (int guard = 0; guard < 100000; ++guard) {
    auto candidate = next_local(schedule, probe);
    if (!candidate) break;
    probe = *candidate + seconds(1);
    auto info = zone->get_info(*candidate);
    SysSeconds at;
    if (info.result == date::local_info::unique) {
      at = SysSeconds((*candidate - info.first.offset).time_since_epoch());
    } else if (info.result == date::local_info::nonexistent) {
      at = SysSeconds(date::floor<seconds>(info.second.begin).time_since_epoch());  // the first instant after the gap
    } else {
      at = SysSeconds((*candidate - info.first.offset).time_since_epoch());  // the first of the two
    }
    if (at > after) return at;
  }
  return SysSeconds::max();
}

}  // namespace nimbus
