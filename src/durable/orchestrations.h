#pragma once
// The orchestration trigger: for every orchestrator function, a consumer of its events
// (_orch/<name>) that runs one step of an instance at a time on this host (events that arrive
// meanwhile wait for the next step, their leases renewed), and the management routes on the
// public listener:
//   POST   /_nimbus/orchestrations/<name>[?instance=ID]      start (body: the input, JSON) -> 202
//   GET    /_nimbus/orchestrations/<name>/instances          list (?status=, ?limit=)
//   GET    /_nimbus/orchestrations/<name>/instances/<id>     status: 202 running, 200 finished
//                                                            (?history=true adds the history)
//   POST   .../instances/<id>/events/<event>                 raise an event (body: its data)
//   POST   .../instances/<id>/terminate|suspend|resume
//   DELETE .../instances/<id>                                purge a finished instance
// A step: read the instance record and its history, invoke the orchestrator with
// {instance, name, history, new_events}, check its actions against the history (a differing
// replay fails the instance: non-determinism), and commit in one store commit the events' acks,
// the step's history page, the record (conditional on its ETag: another host's step wins and
// this one's events are delivered again) and the messages of every new action.
#include <memory>

#include "core/expected.h"
#include "triggers/trigger.h"

namespace nimbus::durable {

Expected<std::unique_ptr<Trigger>> make_orchestration_trigger(const TriggerContext& context);

}  // namespace nimbus::durable
