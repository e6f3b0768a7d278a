#include "core/cron.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <sstream>
#include <vector>

namespace nimbus {
namespace {

constexpr const char* kFieldNames[] = {"second", "minute", "hour", "day of month", "month", "day of week"};
constexpr int kMin[] = {0, 0, 0, 1, 1, 0};
constexpr int kMax[] = {59, 59, 23, 31, 12, 7};
constexpr const char* kMonths[] = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr const char* kDays[] = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    auto at = s.find(sep, start);
    out.push_back(s.substr(start, at - start));
    if (at == std::string_view::npos) return out;
    start = at + 1;
  }
}

// A number or, for months and weekdays, a name.
bool value_of(std::string_view text, int field, int& out) {
  if (text.empty()) return false;
  if (std::all_of(text.begin(), text.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    if (text.size() > 4) return false;
    out = std::stoi(std::string(text));
    return true;
  }
  std::string upper(text);
  std::transform(upper.begin(), upper.end(), upper.begin(), [](char c) { return static_cast<char>(std::toupper(c)); });
  if (field == 4) {
    for (int i = 0; i < 12; ++i)
      if (upper == kMonths[i]) return (out = i + 1), true;
  }
  if (field == 5) {
    for (int i = 0; i < 7; ++i)
      if (upper == kDays[i]) return (out = i), true;
  }
  return false;
}

// Sets the bits one field names; false with *error set on a problem.
bool parse_field(std::string_view text, int field, std::vector<bool>& bits, bool& star, std::string& error) {
  const int lo = kMin[field], hi = kMax[field];
  bits.assign(static_cast<std::size_t>(hi + 1), false);
  star = text == "*" || text == "?";
  auto fail = [&](const std::string& why) {
    error = std::string(kFieldNames[field]) + " field '" + std::string(text) + "': " + why;
    return false;
  };
  for (std::string_view part : split(text, ',')) {
    int step = 1;
    if (auto slash = part.find('/'); slash != std::string_view::npos) {
      int s;
      if (!value_of(part.substr(slash + 1), -1, s) || s <= 0) return fail("step '" + std::string(part.substr(slash + 1)) + "' is not a positive number");
      step = s;
      part = part.substr(0, slash);
    }
    int from, to;
    if (part == "*" || part == "?") {
      from = lo;
      to = hi == 7 ? 6 : hi;
    } else if (auto dash = part.find('-'); dash != std::string_view::npos) {
      if (!value_of(part.substr(0, dash), field, from) || !value_of(part.substr(dash + 1), field, to)) {
        return fail("'" + std::string(part) + "' is not a range like 1-5");
      }
    } else {
      if (!value_of(part, field, from)) return fail("'" + std::string(part) + "' is not a number" +
                                                    (field == 4 ? " or a month name (JAN-DEC)" : field == 5 ? " or a day name (SUN-SAT)" : ""));
      to = step > 1 ? (hi == 7 ? 6 : hi) : from;  // "5/15" means from 5 every 15
    }
    if (from < lo || to > hi || from > to) {
      return fail("'" + std::string(part) + "' is outside " + std::to_string(lo) + "-" + std::to_string(hi));
    }
    for (int v = from; v <= to; v += step) bits[static_cast<std::size_t>(v)] = true;
  }
  return true;
}

template <std::size_t N>
void copy_bits(const std::vector<bool>& from, std::bitset<N>& to) {
  for (std::size_t i = 0; i < N && i < from.size(); ++i) to[i] = from[i];
}

bool day_matches(const CronSchedule& s, const date::year_month_day& ymd) {
  bool dom = s.days[static_cast<unsigned>(ymd.day())];
  bool dow = s.weekdays[date::weekday(date::sys_days(ymd)).c_encoding()];
  if (s.any_day && s.any_weekday) return true;
  if (s.any_day) return dow;
  if (s.any_weekday) return dom;
  return dom || dow;
}

}  // namespace

std::optional<date::local_seconds> next_local(const CronSchedule& s, date::local_seconds t) {
  using namespace std::chrono;
  const auto limit = t + date::days(5 * 366);
  while (t < limit) {
    auto day = date::floor<date::days>(t);
    date::year_month_day ymd{day};
    if (!s.months[static_cast<unsigned>(ymd.month())]) {
      auto first_next = date::year_month_day{ymd.year() / ymd.month() / 1} + date::months(1);
      t = date::local_days(first_next);
      continue;
    }
    if (!day_matches(s, ymd)) {
      t = day + date::days(1);
      continue;
    }
    date::hh_mm_ss<seconds> hms{t - day};
    auto h = static_cast<std::size_t>(hms.hours().count());
    if (!s.hours[h]) {
      t = day + hours(h + 1);
      continue;
    }
    auto m = static_cast<std::size_t>(hms.minutes().count());
    if (!s.minutes[m]) {
      t = day + hours(h) + minutes(m + 1);
      continue;
    }
    if (!s.seconds[static_cast<std::size_t>(hms.seconds().count())]) {
      t += seconds(1);
      continue;
    }
    return t;
  }
  return std::nullopt;
}


Expected<CronSchedule> parse_cron(std::string_view expression) {
  std::vector<std::string_view> fields;
  for (auto f : split(expression, ' '))
    if (!f.empty()) fields.push_back(f);
  if (fields.size() != 5 && fields.size() != 6) {
    return Error{"cron '" + std::string(expression) + "' has " + std::to_string(fields.size()) +
                 " fields; expected 6 (second minute hour day month weekday) or 5 (minute hour day month weekday)"};
  }
  if (fields.size() == 5) fields.insert(fields.begin(), "0");
  CronSchedule s;
  s.text = std::string(expression);
  std::vector<bool> bits;
  std::string error;
  bool star = false;
  for (int f = 0; f < 6; ++f) {
    if (!parse_field(fields[static_cast<std::size_t>(f)], f, bits, star, error)) {
      return Error{"cron '" + std::string(expression) + "': " + error};
    }
    switch (f) {
      case 0: copy_bits(bits, s.seconds); break;
      case 1: copy_bits(bits, s.minutes); break;
      case 2: copy_bits(bits, s.hours); break;
      case 3:
        copy_bits(bits, s.days);
        s.any_day = star;
        break;
      case 4: copy_bits(bits, s.months); break;
      case 5:
        if (bits.size() > 7 && bits[7]) bits[0] = true;  // 7 is Sunday too
        copy_bits(bits, s.weekdays);
        s.any_weekday = star;
        break;
    }
  }
  return s;
}

}  // namespace nimbus
