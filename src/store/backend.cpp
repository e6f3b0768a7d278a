#include "store/backend.h"

#include <algorithm>
#include <limits>

#include "core/blob_path.h"
#include "core/ids.h"

namespace nimbus {

Status check_blob_address(const std::string& container, const std::string& name) {
  if (auto why = check_blob_container(container); !why.empty()) {
    return Error{"blob container '" + container + "' " + why, store_error::invalid};
  }
  if (auto why = check_blob_name(name); !why.empty()) {
    return Error{"blob name '" + name + "' in container " + container + " " + why, store_error::invalid};
  }
  return ok_status();
}

Status check_blob_subscriptions(const std::vector<BlobSubscription>& subscriptions) {
  for (const auto& sub : subscriptions) {
    std::string problem;
    if (auto why = check_blob_container(sub.container); !why.empty()) problem = "container '" + sub.container + "' " + why;
    else if (!parse_blob_pattern(sub.pattern, &problem)) problem = "pattern '" + sub.pattern + "' " + problem;
    if (!problem.empty()) return Error{"blob subscription of queue " + sub.queue + ": " + problem, store_error::invalid};
  }
  return ok_status();
}

int64_t saturating_after(int64_t now, int64_t delay) {
  delay = std::max<int64_t>(delay, 0);
  return delay > std::numeric_limits<int64_t>::max() - now ? std::numeric_limits<int64_t>::max() : now + delay;
}

std::string publish_event_id(const NewMessage& m) {
  if (!m.event_id.empty()) return m.event_id;
  return m.id.empty() ? new_invocation_id() : m.id;
}

AppendPlan plan_appends(const Batch& b) {
  AppendPlan plan;
  for (const auto& a : b.appends) {
    plan.ids.push_back(a.record.id.empty() ? new_invocation_id() : a.record.id);
    plan.partitions.push_back(stream_partition(a.key.empty() ? plan.ids.back() : a.key, a.partitions));
    ++plan.count[{a.stream, plan.partitions.back()}];
  }
  return plan;
}

}  // namespace nimbus
