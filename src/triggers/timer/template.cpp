#include "triggers/template.h"

namespace nimbus {

extern const TriggerTemplate kTimerTemplate = {
    "timer",
    [](const std::string&) -> std::vector<std::string> {
      return {"- timer:", "    schedule: \"0 */5 * * * *\"   # cron with seconds: every 5 minutes", "    time_zone: UTC"};
    },
    [](const std::string&) {
      return std::string("a run every 5 minutes (no body). Each due time runs once, even with several hosts; one "
                         "missed while the host was down runs when it starts.");
    },
};

}  // namespace nimbus
