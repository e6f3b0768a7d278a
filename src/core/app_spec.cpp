#include "core/app_spec.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "core/ids.h"

namespace nimbus {

std::string_view to_string(RuntimeKind kind) {
  switch (kind) {
    case RuntimeKind::native: return "native";
    case RuntimeKind::python: return "python";
    case RuntimeKind::node: return "node";
    case RuntimeKind::process: return "process";
  }
  return "unknown";
}

std::string_view to_string(Transport transport) {
  switch (transport) {
    case Transport::in_process: return "in_process";
    case Transport::frames: return "frames";
  }
  return "unknown";
}

std::string_view to_string(Isolation isolation) {
  switch (isolation) {
    case Isolation::none: return "none";
    case Isolation::process: return "process";
    case Isolation::sandbox: return "sandbox";
  }
  return "unknown";
}

Duration RetryPolicy::delay_after(int attempt, double random01) const {
  double base = std::chrono::duration<double>(initial).count();
  if (exponential) base *= std::pow(2.0, std::max(0, attempt - 1));
  base = std::min(base, std::chrono::duration<double>(max).count());
  base *= 1.0 + jitter * (2.0 * random01 - 1.0);
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(std::max(base, 0.0)));
}

Duration RetryPolicy::next_delay(int attempt) const {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return delay_after(attempt, std::uniform_real_distribution<double>(0.0, 1.0)(rng));
}

Invocation new_invocation(const FunctionSpec& function, TriggerKind trigger, std::string source,
                          std::string type, const Clock& clock, std::string_view traceparent,
                          std::string_view tracestate) {
  Invocation inv;
  inv.id = new_invocation_id();
  inv.function = function.name;
  inv.trigger = trigger;
  inv.source = std::move(source);
  inv.type = std::move(type);
  inv.started = clock.now();
  inv.time = clock.wall();
  inv.deadline = inv.started + function.timeout;
  inv.traceparent = continue_trace(traceparent);
  inv.parent_span = valid_traceparent(traceparent) ? span_id_of(traceparent) : 0;
  if (!tracestate.empty()) inv.tracestate = continue_tracestate(traceparent, tracestate);
  return inv;
}

}  // namespace nimbus
