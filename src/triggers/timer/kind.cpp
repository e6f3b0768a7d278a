// The timer kind: its keys and its Trigger.
#include <yaml-cpp/yaml.h>

#include "core/cron.h"
#include "manifest/manifest_reader.h"
#include "triggers/kind.h"
#include "triggers/timer/timer_spec.h"
#include "triggers/timer/timer_trigger.h"

namespace nimbus {
namespace {

std::shared_ptr<const TriggerSettings> read(ManifestReader& r, const YAML::Node& n, const std::string& path,
                                            const FunctionSpec&) {
  std::size_t errors_before = r.diagnostics.size();
  if (!r.check_map(n, path, {"schedule", "time_zone", "run_on_startup"})) return nullptr;
  auto t = std::make_shared<TimerTriggerSpec>();
  if (auto v = n["schedule"]; !v) {
    r.error(n, path + ".schedule", "is missing; expected a cron expression such as \"0 */5 * * * *\" (every five minutes)");
  } else if (auto text = r.scalar(v, path + ".schedule", "a cron expression")) {
    if (auto cron = parse_cron(*text); !cron) {
      r.error(v, path + ".schedule", cron.error().message);
    } else if (!next_local(*cron, date::local_days(date::year(2024) / 1 / 1))) {
      r.error(v, path + ".schedule", "cron '" + *text + "' never matches a date (such as 30 February); expected a schedule that runs");
    } else {
      t->schedule = *text;
    }
  }
  if (auto v = n["time_zone"]) {
    if (auto z = r.scalar(v, path + ".time_zone", "an IANA time zone such as Europe/Berlin")) t->time_zone = *z;
  }
  if (auto v = n["run_on_startup"]) {
    if (auto b = r.boolean(v, path + ".run_on_startup")) t->run_on_startup = *b;
  }
  if (r.diagnostics.size() != errors_before) return nullptr;
  return t;
}

Expected<std::unique_ptr<Trigger>> make(const TriggerContext& context) {
  return std::unique_ptr<Trigger>(std::make_unique<TimerTrigger>(context));
}

}  // namespace

extern const TriggerTemplate kTimerTemplate;
extern const TriggerKindInfo kTimerKind = {"timer", read, &kTimerTemplate, make, nullptr};

}  // namespace nimbus
