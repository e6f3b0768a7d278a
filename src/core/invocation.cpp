#include "core/invocation.h"

#include <strings.h>

#include <atomic>
#include <mutex>

namespace nimbus {

namespace {

struct KindNames {
  std::mutex mu;
  std::string names[TriggerKind::kMax] = {"http", "admin"};
  std::atomic<int> count{2};
};

KindNames& kind_names() {
  static KindNames names;
  return names;
}

}  // namespace

TriggerKind TriggerKind::named(std::string_view name) {
  KindNames& k = kind_names();
  std::lock_guard lock(k.mu);
  const int n = k.count.load(std::memory_order_relaxed);
  for (int i = 0; i < n; ++i) {
    if (k.names[i] == name) return TriggerKind(static_cast<uint8_t>(i));
  }
  if (n == kMax - 1) {  // the last is kept for every name beyond
    k.names[n] = "other";
    k.count.store(kMax, std::memory_order_release);
  }
  if (n >= kMax - 1) return TriggerKind(static_cast<uint8_t>(kMax - 1));
  k.names[n] = std::string(name);
  k.count.store(n + 1, std::memory_order_release);
  return TriggerKind(static_cast<uint8_t>(n));
}

std::string_view TriggerKind::name() const {
  // A kind's name never changes once made, so reading it needs no lock.
  return kind_names().names[index_];
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

void add_trace_context(Headers& metadata, std::string_view traceparent, std::string_view tracestate) {
  if (traceparent.empty() || find_header(metadata, "traceparent")) return;
  metadata.push_back({"traceparent", std::string(traceparent)});
  if (!tracestate.empty() && !find_header(metadata, "tracestate")) metadata.push_back({"tracestate", std::string(tracestate)});
}

}  // namespace nimbus
