#pragma once
// Every trigger kind the host can run, in the order they start (and stop taking work). A new
// kind is a folder under triggers/ with a class implementing Trigger (trigger.h), plus one
// line in registry.cpp.
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "core/expected.h"
#include "triggers/trigger.h"

namespace nimbus {

struct TriggerFactory {
  std::string_view name;
  std::function<Expected<std::unique_ptr<Trigger>>(const TriggerContext&)> make;
};

const std::vector<TriggerFactory>& trigger_registry();

// One trigger of every registered kind (a kind no function uses starts and does nothing).
Expected<std::vector<std::unique_ptr<Trigger>>> make_triggers(const TriggerContext& context);

}  // namespace nimbus
