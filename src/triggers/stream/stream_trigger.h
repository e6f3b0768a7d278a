#pragma once
// Stream triggers: a function reads a stream as a consumer group. Each partition is consumed
// in order, one batch at a time: the records from the group's checkpoint on (up to
// batch_size) become one invocation, and only when it succeeds is the checkpoint moved past
// them, in the same commit as the function's outputs. So:
// - within a partition, batches never overlap and never run out of order;
// - a host killed at any moment re-reads from the last committed checkpoint: the checkpoint
//   is never ahead of processed work, and outputs of an uncommitted batch never appear;
// - hosts on one store share the partitions by leases (partition_leases.h): each reads those
//   it holds; and a checkpoint commit is still fenced by the value it started from, so in a
//   handover each batch's checkpoint and outputs land once.
// A failed batch is retried with the function's retry policy; after the last attempt it goes
// to the queue `<stream>.<group>.dead` (with its error) and the partition moves on.
//
// The payload is a JSON array of records in CloudEvents' JSON style: {"stream", "partition",
// "offset", "key", "time_ms", "id", "type", "source", "subject", "metadata", "data"} where
// `data` is the record's JSON value when it is JSON, its text when it is other UTF-8, and
// `data_base64` replaces it for binary payloads.
//
// Retention runs here too: every minute, streams with `retention` or `max_records` are trimmed.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/app_spec.h"
#include "core/clock.h"
#include "core/expected.h"
#include "store/store.h"
#include "triggers/stream/partition_leases.h"
#include "triggers/stream/stream_spec.h"
#include "triggers/trigger.h"

namespace nimbus {

class FunctionPools;
class Logger;
class TaskThread;

// The JSON array a batch of records is delivered as (see above).
std::string stream_batch_payload(const std::vector<StreamRecord>& records);

class StreamTrigger final : public Trigger {
 public:
  explicit StreamTrigger(const TriggerContext& context);
  ~StreamTrigger() override;
  StreamTrigger(const StreamTrigger&) = delete;
  StreamTrigger& operator=(const StreamTrigger&) = delete;

  // Checks that the store agrees with the manifest on partition counts, loads checkpoints and
  // starts consuming.
  std::string_view kind() const override { return "stream"; }
  Status start() override;
  // No new batches; the running ones go on.
  void stop_taking_work() override;
  // Waits up to `grace` for the running batches (their checkpoints commit). False when some
  // were still running (they are read again at the next start).
  bool drain(Duration grace) override;
  // Called with the names a store commit woke (stream_wake_name).
  void on_appended(const std::vector<std::string>& names);

  class Partition;

 private:
  void trim();
  void arm_lease_round();
  const AppSpec& app_;
  FunctionPools& pools_;
  Store& store_;
  const Clock& clock_;
  Timers timers_;
  Logger& logger_;
  std::shared_ptr<TaskThread> worker_;
  std::vector<std::shared_ptr<Partition>> partitions_;
  TimerQueue::Id trim_timer_ = 0;
  std::unique_ptr<Store::ChangeWatch> appended_;  // partitions that got records wake their readers
  std::string host_id_;
  std::unique_ptr<PartitionLeases> leases_;
  std::mutex lease_mu_;  // started_ and lease_timer_ between the timer and stop_taking_work
  TimerQueue::Id lease_timer_ = 0;
  bool started_ = false;
  bool draining_ = false;
};

}  // namespace nimbus
