#include "core/invocation.h"

#include <strings.h>

namespace nimbus {

std::string_view to_string(TriggerKind kind) {
  switch (kind) {
    case TriggerKind::http: return "http";
    case TriggerKind::admin: return "admin";
    case TriggerKind::queue: return "queue";
    case TriggerKind::topic: return "topic";
    case TriggerKind::timer: return "timer";
    case TriggerKind::stream: return "stream";
    case TriggerKind::blob: return "blob";
    case TriggerKind::mqtt: return "mqtt";
    case TriggerKind::file: return "file";
  }
  return "unknown";
}

std::string_view to_string(Outcome outcome) {
  switch (outcome) {
    case Outcome::success: return "success";
    case Outcome::error: return "error";
    case Outcome::timeout: return "timeout";
    case Outcome::overloaded: return "overloaded";
    case Outcome::unavailable: return "unavailable";
    case Outcome::crashed: return "crashed";
  }
  return "unknown";
}

int64_t deadline_unix_ms(const Invocation& inv) {
  if (inv.deadline == TimePoint{}) return 0;  // none
  auto wall = inv.time + std::chrono::duration_cast<WallTime::duration>(inv.deadline - inv.started);
  return std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch()).count();
}

const std::string* find_header(const Headers& headers, std::string_view name) {
  for (const auto& h : headers) {
    if (h.name.size() == name.size() && strncasecmp(h.name.data(), name.data(), name.size()) == 0) {
      return &h.value;
    }
  }
  return nullptr;
}

}  // namespace nimbus
