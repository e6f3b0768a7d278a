#pragma once
// Queue and topic triggers: each (function, trigger) pair is a consumer that leases messages
// from the store only as far as the function's pool has room (no unbounded prefetch), runs
// them, and completes each in one store commit: on success the ack and every output
// together; on failure a retry with backoff, or after the last attempt the move to
// `<queue>.dead` with the error. Leases are renewed while functions run. An idle consumer
// waits for the store to say its queue got work, for the next delayed message, or at most
// `max_wait` (work enqueued by another host). A topic trigger is a consumer of its
// subscription's queue, `<topic>/<subscription>`; a function's mqtt triggers, of the queue
// `_mqtt.<function>` that the MQTT trigger commits their messages to. A function's blob
// triggers are a consumer of its blob event queue, `_blobs.<function>`
// (triggers/blob/blob_trigger.h).
#include <memory>
#include <vector>

#include "core/app_spec.h"
#include "core/clock.h"
#include "core/expected.h"
#include "store/store.h"
#include "triggers/trigger.h"

namespace nimbus {

class FunctionPools;
class Logger;
class TaskThread;

class QueueTrigger final : public Trigger {
 public:
  explicit QueueTrigger(const TriggerContext& context);
  ~QueueTrigger() override;
  QueueTrigger(const QueueTrigger&) = delete;
  QueueTrigger& operator=(const QueueTrigger&) = delete;

  std::string_view kind() const override { return "queue"; }
  // Registers topic subscriptions, then starts every consumer.
  Status start() override;
  // Receives nothing more; the invocations in flight go on.
  void stop_taking_work() override;
  // Waits up to `grace` for the invocations in flight to complete. False when some did not
  // (their messages are redelivered after their lease).
  bool drain(Duration grace) override;
  int consumers() const;

  class Consumer;

 private:
  void wake(const std::vector<std::string>& queues);

  const AppSpec& app_;
  FunctionPools& pools_;
  Store& store_;
  const Clock& clock_;
  Timers timers_;
  Logger& logger_;
  std::unique_ptr<Store::ChangeWatch> enqueued_;  // queues that got messages wake their consumers
  std::shared_ptr<TaskThread> dispatcher_;  // outlives the consumers (declared before them)
  std::vector<std::unique_ptr<TriggerSpec>> async_triggers_;  // consumers of async HTTP routes
  std::vector<std::shared_ptr<Consumer>> consumers_;
};

}  // namespace nimbus
