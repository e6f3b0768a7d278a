#pragma once
// Every trigger kind Nimbus has (triggers/registry.cpp lists them, one line each), and the
// Triggers the host runs for an app: one per kind that has one, and the dispatcher for every
// kind fed from the store.
#include <memory>
#include <vector>

#include "core/expected.h"
#include "triggers/kind.h"
#include "triggers/trigger.h"

namespace nimbus {

Expected<std::vector<std::unique_ptr<Trigger>>> make_triggers(const TriggerContext& context);

}  // namespace nimbus
