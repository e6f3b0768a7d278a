#pragma once
// What every store backend shares behind the Store interface: the checks of blob names and
// blob subscriptions, the offsets plan of a batch's stream appends, and times that cannot
// overflow. Backends only; callers use store.h.
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "store/store.h"

namespace nimbus {

// A container and name a blob may have (store_error::invalid naming which and why, if not).
Status check_blob_address(const std::string& container, const std::string& name);
// Every subscription's container and pattern parse (store_error::invalid naming the first that does not).
Status check_blob_subscriptions(const std::vector<BlobSubscription>& subscriptions);

// `now` plus a delay or a time to live that came from outside (an x-delay-ms header, a
// function's delay_ms or ttl_ms metadata) and may be any int64: beyond the end of int64 is
// the end of int64, never an overflow.
int64_t saturating_after(int64_t now, int64_t delay);

// The CloudEvents id a publish gives its copies: the message's event id, else its id, else a
// new one (every copy carries it; copy ids derive from it, so a publish is idempotent).
std::string publish_event_id(const NewMessage& message);

// Where a batch's appends go: each record's id (given, or made now) and partition, and how
// many records each (stream, partition) receives (one offset counter update each).
struct AppendPlan {
  std::vector<std::string> ids;
  std::vector<int> partitions;
  std::map<std::pair<std::string, int>, int64_t> count;
};
AppendPlan plan_appends(const Batch& batch);

}  // namespace nimbus
