// The queue kind: its keys, and the queue it is fed from (the dispatcher runs it).
#include <yaml-cpp/yaml.h>

#include "manifest/manifest_reader.h"
#include "triggers/kind.h"
#include "triggers/queue/queue_spec.h"

namespace nimbus {

bool read_queue_keys(ManifestReader& r, const YAML::Node& n, const std::string& path, const char* what,
                     std::initializer_list<std::string_view> extra, QueueTriggerSpec& q) {
  std::size_t errors_before = r.diagnostics.size();
  std::vector<std::string_view> known = {"name", "batch_size", "max_wait", "lease"};
  known.insert(known.end(), extra.begin(), extra.end());
  if (!r.check_map(n, path, known)) return false;
  if (auto v = n["name"]; !v) {
    r.error(n, path + ".name", std::string("is missing; expected the ") + what + "'s name, e.g. name: orders");
  } else if (auto name = r.scalar(v, path + ".name", std::string("a ") + what + " name")) {
    if (r.check_name(v, path + ".name", *name, what)) q.name = *name;
  }
  if (auto v = n["batch_size"]) {
    if (auto b = r.integer(v, path + ".batch_size", 1, 1000)) q.batch_size = static_cast<int>(*b);
  }
  if (auto v = n["max_wait"]) {
    if (auto d = r.duration(v, path + ".max_wait")) q.max_wait = *d;
  }
  if (auto v = n["lease"]) {
    if (auto d = r.duration(v, path + ".lease")) q.lease = *d;
  }
  return r.diagnostics.size() == errors_before;
}

namespace {

std::shared_ptr<const TriggerSettings> read(ManifestReader& r, const YAML::Node& n, const std::string& path,
                                            const FunctionSpec&) {
  auto q = std::make_shared<QueueTriggerSpec>();
  if (!read_queue_keys(r, n, path, "queue", {}, *q)) return nullptr;
  return q;
}

std::optional<StoreFeed> feed(const FunctionSpec&, const TriggerSpec& trigger) {
  const auto* q = trigger.as<QueueTriggerSpec>();
  if (!q) return std::nullopt;
  StoreFeed f;
  f.queue = q->name;
  f.batch_size = q->batch_size;
  f.max_wait = q->max_wait;
  f.lease = q->lease;
  return f;
}

}  // namespace

extern const TriggerTemplate kQueueTemplate;
extern const TriggerKindInfo kQueueKind = {"queue", read, &kQueueTemplate, nullptr, feed};

}  // namespace nimbus
