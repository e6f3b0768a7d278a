#pragma once
// A function's outputs (Result::outputs) as store operations: each names one of the
// function's declared `outputs:` bindings, which says whether it goes to a queue, a topic, a
// state store, a stream, an MQTT topic (through the outbox queue kMqttOutbox) or a blob container. The caller commits them in the same Batch as the input's ack (queue and topic
// triggers) or before the reply (HTTP).
#include <functional>
#include <string>
#include <vector>

#include "core/app_spec.h"
#include "core/expected.h"
#include "core/invocation.h"
#include "store/store.h"

namespace nimbus {

class Tracer;  // observe/trace.h
class Clock;   // core/clock.h

// Adds `outputs` to `batch`; an output for an undeclared binding, or a state output without a
// "key" in its metadata, is an error naming it (and nothing is added).
// A blob output is named by its metadata "path" (a name in the binding's container), else by
// the binding's template, whose {x} take metadata "x" of the output, else the trigger's blob.x
// (`trigger_metadata`: a blob trigger's captures); metadata "content_type" sets its type.
// Each message and stream record carries `traceparent` (the invocation's own: its span is the
// parent of whatever handles the message) and `tracestate` unless the function set a
// traceparent in its metadata; a blob output's events carry them.
Status add_outputs(const FunctionSpec& function, std::vector<OutputMessage> outputs, Batch& batch,
                   const Headers* trigger_metadata = nullptr, std::string_view traceparent = {},
                   std::string_view tracestate = {});

// For callers that reply (HTTP, admin invoke): commits a successful result's outputs, then
// hands the result on (from the store's thread when there was something to commit). Outputs
// that cannot be committed turn the result into an error: the caller never hears success for
// work whose outputs were lost.
// A result with more than kOutputsBuiltInPlace outputs has its batch built on one of the
// store's I/O threads, not on the caller's (which may be an event loop).
// `traceparent`, `tracestate`: the invocation's, carried by the messages (see add_outputs). With `tracer`
// (and `clock`, whose wall time stamps it), the commit is a "store commit" span
// (nimbus.commit: outputs) under the invocation's when its trace is recorded.
void commit_outputs_then(Store* store, const FunctionSpec& function, Result&& result, std::string_view traceparent,
                         std::string_view tracestate, std::function<void(Result&&)> then, Tracer* tracer = nullptr,
                         const Clock* clock = nullptr);
inline constexpr std::size_t kOutputsBuiltInPlace = 256;

}  // namespace nimbus
