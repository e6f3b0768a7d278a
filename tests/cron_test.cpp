// Cron schedules: next occurrences against a table of cases (step, ranges, names, leap years,
// month ends, day-of-month OR weekday, daylight-saving gaps and overlaps), and clear errors.
#include "triggers/timer/time_zone.h"

#include <date/date.h>
#include <gtest/gtest.h>

#include <cstdio>

namespace nimbus {
bool check_cron_input(std::string_view text);  // fuzz/cron_fuzz.cpp
namespace {

using namespace std::chrono;

// "2026-03-29 01:00:00" (UTC) as sys_seconds.
SysSeconds utc(const std::string& text) {
  int y, mo, d, h, mi, se;
  EXPECT_EQ(std::sscanf(text.c_str(), "%d-%d-%d %d:%d:%d", &y, &mo, &d, &h, &mi, &se), 6) << text;
  return date::sys_days(date::year(y) / mo / d) + hours(h) + minutes(mi) + seconds(se);
}

std::string show(SysSeconds t) { return date::format("%Y-%m-%d %H:%M:%S", t); }

struct Case {
  const char* cron;
  const char* zone;
  const char* after;     // UTC
  const char* expected;  // UTC
  const char* why;
};

class CronNext : public ::testing::TestWithParam<Case> {};

TEST_P(CronNext, FindsTheNextDueTime) {
  const Case& c = GetParam();
  auto schedule = parse_cron(c.cron);
  ASSERT_TRUE(schedule.ok()) << schedule.error().message;
  auto zone = TimeZone::find(c.zone);
  ASSERT_TRUE(zone.ok()) << zone.error().message;
  EXPECT_EQ(show(zone->next(*schedule, utc(c.after))), c.expected) << c.why;
}

INSTANTIATE_TEST_SUITE_P(
    Table, CronNext,
    ::testing::Values(
        Case{"0 */5 * * * *", "UTC", "2026-01-01 00:03:10", "2026-01-01 00:05:00", "every five minutes"},
        Case{"0 */5 * * * *", "UTC", "2026-01-01 00:05:00", "2026-01-01 00:10:00", "strictly after"},
        Case{"30 2 * * *", "UTC", "2026-01-01 00:00:00", "2026-01-01 02:30:00", "five fields: seconds are 0"},
        Case{"*/15 * * * * *", "UTC", "2026-01-01 00:00:50", "2026-01-01 00:01:00", "seconds step over a minute"},
        Case{"0 0 0 29 2 *", "UTC", "2026-03-01 00:00:00", "2028-02-29 00:00:00", "the next leap day"},
        Case{"0 0 12 31 * *", "UTC", "2026-04-01 00:00:00", "2026-05-31 12:00:00", "April has no 31st"},
        Case{"0 0 0 13 * FRI", "UTC", "2026-01-01 00:00:00", "2026-01-02 00:00:00", "day 13 OR a Friday"},
        Case{"0 0 9 * JAN-MAR MON-FRI", "UTC", "2026-03-31 09:00:01", "2027-01-01 09:00:00", "names, ranges"},
        Case{"0 0 10 * * 7", "UTC", "2026-11-21 12:00:00", "2026-11-22 10:00:00", "7 is Sunday"},
        Case{"0 0 8-10/2 * * *", "UTC", "2026-01-01 08:00:00", "2026-01-01 10:00:00", "range with step"},
        Case{"0 0 0 1 1,7 *", "UTC", "2026-02-01 00:00:00", "2026-07-01 00:00:00", "list of months"},
        Case{"0 0 9 * * *", "America/New_York", "2026-01-01 00:00:00", "2026-01-01 14:00:00", "EST is UTC-5"},
        Case{"0 0 9 * * *", "America/New_York", "2026-07-01 00:00:00", "2026-07-01 13:00:00", "EDT is UTC-4"},
        // Berlin springs forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC).
        Case{"0 30 2 * * *", "Europe/Berlin", "2026-03-28 12:00:00", "2026-03-29 01:00:00",
             "02:30 does not exist that day: fires as the gap ends"},
        Case{"0 30 2 * * *", "Europe/Berlin", "2026-03-29 01:00:00", "2026-03-30 00:30:00", "then back to normal"},
        Case{"0 30 2 * * *", "Europe/Berlin", "2026-03-29 00:59:59", "2026-03-29 01:00:00",
             "one second before the gap: still the gap's end"},
        // Berlin falls back 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC): 02:30 happens twice.
        Case{"0 30 2 * * *", "Europe/Berlin", "2026-10-24 12:00:00", "2026-10-25 00:30:00", "first 02:30 (CEST)"},
        Case{"0 30 2 * * *", "Europe/Berlin", "2026-10-25 00:30:00", "2026-10-26 01:30:00",
             "not again at the second 02:30 (CET)"},
        Case{"0 0 * * * *", "Europe/Berlin", "2026-10-25 00:00:00", "2026-10-25 02:00:00",
             "hourly: 03:00 CET is next; the repeated 02:00 does not fire twice"}),
    [](const auto& info) { return "case" + std::to_string(info.index); });

TEST(Cron, BadExpressionsNameTheField) {
  struct Bad {
    const char* cron;
    const char* says;
  } cases[] = {{"* * *", "has 3 fields"},
               {"61 * * * * *", "second field '61'"},
               {"0 0 25 * * *", "hour field '25'"},
               {"0 0 0 0 * *", "day of month field '0'"},
               {"0 0 0 * FOO *", "month name (JAN-DEC)"},
               {"0 0 0 * * FUNDAY", "day name (SUN-SAT)"},
               {"0 */0 * * * *", "step '0'"},
               {"0 5-2 * * * *", "outside"}};
  for (const auto& b : cases) {
    auto s = parse_cron(b.cron);
    ASSERT_FALSE(s.ok()) << b.cron;
    EXPECT_NE(s.error().message.find(b.says), std::string::npos) << b.cron << " -> " << s.error().message;
  }
}

// The fuzz target's invariants over a fixed corpus of awkward inputs (make fuzz explores more).
TEST(Cron, FuzzInvariantsHoldOnACorpus) {
  for (const char* input : {"", " ", "*", "* * * * *", "* * * * * *", "*/1 */1 */1 */1 */1 */1", "0 0 0 31 2 *",
                            "0 0 0 30 FEB,APR *", "59 59 23 31 12 6", "0 0 0 * * 0,7", "1-59/58 * * * * *",
                            "0 0 0 1 1 SUN-SAT", "0,0,0 0 0 1 1 *", "a b c d e f", "0 0 0 1 1 * *", "-1 * * * * *",
                            "0/5 * * * * *", "5/0 * * * * *", "99999 * * * * *", "0 0 0 L * *", "0 0 0 ? * MON",
                            "\xff\xfe * * * * *", "0 0 12 29 2 MON"}) {
    EXPECT_TRUE(check_cron_input(input)) << "'" << input << "'";
  }
}

TEST(Cron, UnknownTimeZoneIsAClearError) {
  auto z = TimeZone::find("Mars/Olympus_Mons");
  ASSERT_FALSE(z.ok());
  EXPECT_NE(z.error().message.find("Mars/Olympus_Mons"), std::string::npos);
  EXPECT_NE(z.error().message.find("IANA"), std::string::npos);
}

}  // namespace
}  // namespace nimbus
