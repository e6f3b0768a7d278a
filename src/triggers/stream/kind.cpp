// The stream kind: its keys and its Trigger.
#include <yaml-cpp/yaml.h>

#include "manifest/manifest_reader.h"
#include "triggers/kind.h"
#include "triggers/stream/stream_spec.h"
#include "triggers/stream/stream_trigger.h"

namespace nimbus {
namespace {

std::shared_ptr<const TriggerSettings> read(ManifestReader& r, const YAML::Node& n, const std::string& path,
                                            const FunctionSpec& fn) {
  std::size_t errors_before = r.diagnostics.size();
  if (!r.check_map(n, path, {"name", "group", "batch_size", "max_wait", "start"})) return nullptr;
  auto t = std::make_shared<StreamTriggerSpec>();
  t->group = fn.name;  // unless it names another
  if (auto v = n["name"]; !v) {
    r.error(n, path + ".name", "is missing; expected the stream's name, e.g. name: telemetry");
  } else if (auto name = r.scalar(v, path + ".name", "a stream name")) {
    if (r.check_name(v, path + ".name", *name, "stream")) t->name = *name;
  }
  if (auto v = n["group"]) {
    if (auto g = r.scalar(v, path + ".group", "a consumer group name")) {
      if (r.check_name(v, path + ".group", *g, "consumer group")) t->group = *g;
    }
  }
  if (auto v = n["batch_size"]) {
    if (auto b = r.integer(v, path + ".batch_size", 1, 10000)) t->batch_size = static_cast<int>(*b);
  }
  if (auto v = n["max_wait"]) {
    if (auto d = r.duration(v, path + ".max_wait")) t->max_wait = *d;
  }
  if (auto v = n["start"]) {
    if (auto c = r.choice(v, path + ".start", {"earliest", "latest"})) t->from_latest = *c == "latest";
  }
  if (r.diagnostics.size() != errors_before) return nullptr;
  return t;
}

Expected<std::unique_ptr<Trigger>> make(const TriggerContext& context) {
  return std::unique_ptr<Trigger>(std::make_unique<StreamTrigger>(context));
}

}  // namespace

extern const TriggerTemplate kStreamTemplate;
extern const TriggerKindInfo kStreamKind = {"stream", read, &kStreamTemplate, make, nullptr};

}  // namespace nimbus
