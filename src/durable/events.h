#pragma once
// An orchestration event as the message that carries it to the orchestrator's queue:
// {"instance": ID, "event": {...}} (durable.h). For the durable .cpp files only (Boost.JSON).
#include <boost/json/object.hpp>
#include <string>

#include "store/store.h"

namespace nimbus::durable {

NewMessage event_message(const std::string& instance, boost::json::object event, const std::string& traceparent = {},
                         const std::string& tracestate = {});

}  // namespace nimbus::durable
