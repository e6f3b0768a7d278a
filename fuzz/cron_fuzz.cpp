// libFuzzer target for the cron parser and matcher: any input either parses or is refused
// with a message; a schedule that parses yields due times that match every field and never
// go backwards. `make fuzz` builds it with clang (-fsanitize=fuzzer,address,undefined) and runs
// it for FUZZ_SECONDS (default 60). tests/cron_test.cpp feeds the same check a fixed corpus.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/cron.h"

namespace nimbus {

// Returns false when an invariant is broken (the fuzzer then aborts).
bool check_cron_input(std::string_view text) {
  auto schedule = parse_cron(text);
  if (!schedule) return !schedule.error().message.empty();
  date::local_seconds t = date::local_days(date::year(2026) / 1 / 1);
  for (int i = 0; i < 8; ++i) {
    auto next = next_local(*schedule, t);
    if (!next) return true;  // nothing within the search window (e.g. 31 February)
    if (*next < t) return false;
    auto day = date::floor<date::days>(*next);
    date::year_month_day ymd{day};
    date::hh_mm_ss<std::chrono::seconds> hms{*next - day};
    const auto& s = *schedule;
    if (!s.months[static_cast<unsigned>(ymd.month())] || !s.hours[static_cast<std::size_t>(hms.hours().count())] ||
        !s.minutes[static_cast<std::size_t>(hms.minutes().count())] ||
        !s.seconds[static_cast<std::size_t>(hms.seconds().count())]) {
      return false;
    }
    t = *next + std::chrono::seconds(1);
  }
  return true;
}

}  // namespace nimbus

#ifdef NIMBUS_FUZZ_MAIN
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 256) return 0;
  if (!nimbus::check_cron_input(std::string_view(reinterpret_cast<const char*>(data), size))) std::abort();
  return 0;
}
#endif
