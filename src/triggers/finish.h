#pragma once
// The end of an invocation that someone waits for (an HTTP request, a CloudEvent, an admin
// invoke, a timer's run): its outputs are committed first (outputs.h), so nobody hears of a
// success whose outputs were lost; then `answer` gives the result to whoever waits and returns
// the HTTP status it gave (0: none); then the invocation's log line is written. Store-fed
// kinds end in the dispatcher instead, where the outputs share the ack's commit.
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "core/app_spec.h"
#include "core/clock.h"
#include "core/invocation.h"
#include "observe/log.h"
#include "triggers/outputs.h"

namespace nimbus {

// What the log line of an invocation (and its answer) needs.
struct InvocationView {
  std::string_view function;
  TriggerKind trigger;
  std::string_view id, traceparent;
  TimePoint started;
  WallTime started_wall;
  uint64_t parent_span;
  std::string_view tracestate;
};
inline InvocationView view_of(const Invocation& inv) {
  return {inv.function, inv.trigger, inv.id, inv.traceparent, inv.started, inv.time, inv.parent_span, inv.tracestate};
}

// The same, kept once the invocation itself has gone to the pool.
struct InvocationStamp {
  std::string function;
  TriggerKind trigger;
  std::string id, traceparent;
  TimePoint started;
  WallTime started_wall;
  uint64_t parent_span;
  std::string tracestate;  // carried by its outputs with the traceparent

  static InvocationStamp of(const Invocation& inv) {
    return {inv.function, inv.trigger, inv.id, inv.traceparent, inv.started, inv.time, inv.parent_span, inv.tracestate};
  }
  // From an invocation that is done with (run inline): its strings move.
  static InvocationStamp take(Invocation& inv) {
    return {std::move(inv.function), inv.trigger,  std::move(inv.id),  std::move(inv.traceparent),
            inv.started,             inv.time,     inv.parent_span,    std::move(inv.tracestate)};
  }
  InvocationView view() const {
    return {function, trigger, id, traceparent, started, started_wall, parent_span, tracestate};
  }
};

// `finished`: when it ended, if the caller knows already (saves reading the clock again).
inline void log_invocation(Logger& logger, const Clock& clock, const InvocationView& s, const Result& r, int status,
                           TimePoint finished = {}) {
  const Duration took = (finished == TimePoint{} ? clock.now() : finished) - s.started;
  InvocationRecord record{s.function, s.trigger, s.id, s.traceparent, r.outcome, status, took, r.error.type,
                          r.error.message, s.started_wall + std::chrono::duration_cast<WallTime::duration>(took),
                          r.version, s.parent_span, 1, r.waited, r.cold_start, r.ran};
  record.tracestate = s.tracestate;
  logger.invocation(record);
}

// `answer`: int(Result&, const InvocationView&), called once, on the caller's thread when
// there are no outputs, else on the store's once they are committed. It may move parts of the
// result out (the reply); the outcome and error stay for the log, written after it.
template <class Answer>
void finish_invocation(Store* store, const FunctionSpec& fn, Logger& logger, const Clock& clock, InvocationStamp stamp,
                       Result&& result, Answer answer, TimePoint finished = {}) {
  if (result.outcome != Outcome::success || result.outputs.empty()) {
    const int status = answer(result, stamp.view());
    return log_invocation(logger, clock, stamp.view(), result, status, finished);
  }
  const std::string traceparent = stamp.traceparent, tracestate = stamp.tracestate;  // (the lambda takes the stamp)
  commit_outputs_then(
      store, fn, std::move(result), traceparent, tracestate,
      [&logger, &clock, stamp = std::move(stamp), answer = std::move(answer)](Result&& r) mutable {
        const int status = answer(r, stamp.view());
        log_invocation(logger, clock, stamp.view(), r, status);
      },
      logger.tracer(), &clock);
}

// For an invocation run inline and still at hand: nothing of it is copied unless its outputs
// must be committed first.
template <class Answer>
void finish_inline(Store* store, const FunctionSpec& fn, Logger& logger, const Clock& clock, Invocation& inv,
                   Result&& result, Answer answer, TimePoint finished = {}) {
  if (result.outcome != Outcome::success || result.outputs.empty()) {
    const int status = answer(result, view_of(inv));
    return log_invocation(logger, clock, view_of(inv), result, status, finished);
  }
  finish_invocation(store, fn, logger, clock, InvocationStamp::take(inv), std::move(result), std::move(answer));
}

}  // namespace nimbus
