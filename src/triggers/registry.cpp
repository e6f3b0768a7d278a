#include "triggers/registry.h"

#include "triggers/dispatch/dispatcher.h"

namespace nimbus {

Status FeedHooks::prepare(Store&, const Message&, Invocation&, std::shared_ptr<const Headers>&, int64_t) const {
  return ok_status();
}

void FeedHooks::complete(Batch&, const std::string&, int, Outcome, bool, const Result&, const std::string&,
                         int64_t) const {}

// Each defined in triggers/<kind>/kind.cpp.
extern const TriggerKindInfo kHttpKind, kQueueKind, kTopicKind, kTimerKind, kStreamKind, kBlobKind, kFileKind,
    kMqttKind, kCloudEventsKind, kActivityKind, kOrchestrationKind, kEntityKind;

// A new kind is one line here (and its folder).
const std::vector<const TriggerKindInfo*>& trigger_kinds() {
  static const std::vector<const TriggerKindInfo*> kinds = {
      &kHttpKind,
      &kQueueKind,
      &kTopicKind,
      &kTimerKind,
      &kStreamKind,
      &kBlobKind,
      &kMqttKind,
      &kFileKind,
      &kCloudEventsKind,
      &kActivityKind,       // durable/kind.cpp
      &kOrchestrationKind,  // durable/kind.cpp
      &kEntityKind,         // durable/kind.cpp
  };
  return kinds;
}

const TriggerKindInfo* find_trigger_kind(std::string_view name) {
  for (const auto* k : trigger_kinds())
    if (k->name == name) return k;
  return nullptr;
}

const TriggerKindInfo* find_trigger_kind(TriggerKind kind) { return find_trigger_kind(kind.name()); }

Expected<std::vector<std::unique_ptr<Trigger>>> make_triggers(const TriggerContext& context) {
  std::vector<std::unique_ptr<Trigger>> out;
  bool dispatcher = false;
  for (const auto* kind : trigger_kinds()) {
    if (kind->make) {
      auto made = kind->make(context);
      if (!made) return made.error();
      out.push_back(std::move(*made));
    }
    if (kind->feed && !dispatcher) {  // the dispatcher starts after the first store-fed kind
      out.push_back(std::make_unique<StoreDispatcher>(context));
      dispatcher = true;
    }
  }
  return out;
}

const std::vector<TriggerTemplate>& trigger_templates() {
  static const std::vector<TriggerTemplate> templates = [] {
    std::vector<TriggerTemplate> out;
    for (const auto* k : trigger_kinds())
      if (k->scaffold) out.push_back(*k->scaffold);
    return out;
  }();
  return templates;
}

const TriggerTemplate* find_trigger_template(std::string_view kind) {
  for (const auto& t : trigger_templates()) {
    if (t.kind == kind) return &t;
  }
  return nullptr;
}

}  // namespace nimbus
