// The cloudevents kind: its keys and its Trigger (routes on the public listener).
#include <yaml-cpp/yaml.h>

#include "core/route_pattern.h"
#include "manifest/manifest_reader.h"
#include "triggers/cloudevents/cloudevents_spec.h"
#include "triggers/cloudevents/cloudevents_trigger.h"
#include "triggers/kind.h"

namespace nimbus {
namespace {

std::shared_ptr<const TriggerSettings> read(ManifestReader& r, const YAML::Node& n, const std::string& path,
                                            const FunctionSpec&) {
  std::size_t errors_before = r.diagnostics.size();
  if (!r.check_map(n, path, {"path", "auth"})) return nullptr;
  auto t = std::make_shared<CloudEventsTriggerSpec>();
  if (auto v = n["path"]; !v) {
    r.error(n, path + ".path", "is missing; expected the route events are sent to, e.g. path: /events");
  } else if (auto route = r.scalar(v, path + ".path", "a route such as /events")) {
    std::string problem = check_route(*route);
    if (!problem.empty()) r.error(v, path + ".path", "'" + *route + "' " + problem);
    if (route->rfind("/_nimbus/", 0) == 0) r.error(v, path + ".path", "'" + *route + "' is under /_nimbus/, which Nimbus keeps for itself");
    t->path = *route;
  }
  if (auto v = n["auth"]) {
    if (auto a = r.choice(v, path + ".auth", {"anonymous", "function"})) {
      t->auth = *a == "function" ? AuthLevel::function : AuthLevel::anonymous;
    }
  }
  if (r.diagnostics.size() != errors_before) return nullptr;
  return t;
}

Expected<std::unique_ptr<Trigger>> make(const TriggerContext& context) {
  return std::unique_ptr<Trigger>(std::make_unique<CloudEventsTrigger>(context));
}

}  // namespace

extern const TriggerTemplate kCloudEventsTemplate;
extern const TriggerKindInfo kCloudEventsKind = {"cloudevents", read, &kCloudEventsTemplate, make, nullptr};

}  // namespace nimbus
