#pragma once
// The dispatcher: one consumer for every store-fed trigger (queue, topic, blob, mqtt, async
// http; a kind says which queue feeds it through TriggerKindInfo::feed, triggers/kind.h). A
// consumer leases messages from the store only as far as the function's pool has room (no
// unbounded prefetch), runs them, and completes each in one store commit: on success the ack
// and every output together; on failure a retry with backoff and jitter, or after the last
// attempt the move to `<queue>.dead` with the error. What a kind adds (a blob's bytes, an
// async job's record) enters through its FeedHooks at delivery and in that commit. Leases are
// renewed while functions run. An idle consumer waits for the store to say its queue got
// work, for the next delayed message, or at most `max_wait` (work enqueued by another host).
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

class StoreDispatcher final : public Trigger {
 public:
  explicit StoreDispatcher(const TriggerContext& context);
  ~StoreDispatcher() override;
  StoreDispatcher(const StoreDispatcher&) = delete;
  StoreDispatcher& operator=(const StoreDispatcher&) = delete;

  std::string_view kind() const override { return "dispatcher"; }
  // Sets up every feed (topic subscriptions), then starts every consumer.
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
  std::vector<std::shared_ptr<Consumer>> consumers_;
};

}  // namespace nimbus
