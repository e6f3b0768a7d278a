#pragma once
// The Trigger of a durable kind whose functions each have a worker leasing from a store queue
// (orchestrations.cpp, entities.cpp): woken by the store's change notices for its queue,
// stopped and drained together. `Worker` has queue(), pump(), on_changes(names) (every name
// the store told of, for wakes of its own), stop() and wait_idle(until).
#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/invocation.h"
#include "observe/log.h"
#include "store/store.h"
#include "triggers/dispatch/leased_feed.h"
#include "triggers/task_thread.h"
#include "triggers/trigger.h"

namespace nimbus::durable {

// What a durable worker's function run (an orchestrator step, an entity's operations) leaves,
// as every trigger's invocation does: its log line, its spans when its trace is sampled, and
// its record in the invocation history. Taken from the invocation as it is dispatched; `first`
// is the step's first message (its time in the queue, on its first delivery).
struct RunRecord {
  RunRecord(const Invocation& inv, const Message& first, const Clock& clock)
      : function(inv.function),
        kind(inv.trigger),
        id(inv.id),
        traceparent(inv.traceparent),
        tracestate(inv.tracestate),
        parent_span(inv.parent_span),
        started(inv.started),
        attempt(inv.attempt) {
    if (first.deliveries <= 1 && first.enqueued_ms > 0) {
      queued = std::chrono::milliseconds(std::max<int64_t>(0, unix_ms(clock) - first.enqueued_ms));
    }
  }
  void log(Logger& logger, const Clock& clock, const Result& r) const {
    InvocationRecord record{function, kind,      id,          traceparent, r.outcome, 0,     clock.now() - started,
                            r.error.type, r.error.message, {}, r.version, parent_span, attempt, r.waited,
                            r.cold_start, r.ran, queued};
    record.tracestate = tracestate;
    logger.invocation(record);
  }

  std::string function;
  TriggerKind kind;
  std::string id, traceparent, tracestate;
  uint64_t parent_span = 0;
  TimePoint started;
  int attempt = 1;
  std::optional<Duration> queued;
};

// A worker's feed from `queue` for function `fn`: each leased batch goes to
// worker->take(batch) on `thread` (the worker is held weakly). `lease` 0 = fn's timeout + 30 s.
template <class Worker>
std::shared_ptr<LeasedFeed> worker_feed(const std::shared_ptr<Worker>& worker, std::string queue, const FunctionSpec& fn,
                                        int batch_size, Duration lease, int capacity, const TriggerContext& c,
                                        std::shared_ptr<TaskThread> thread) {
  LeasedFeed::Options options;
  options.queue = std::move(queue);
  options.batch_size = batch_size;
  options.lease_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                         lease > Duration::zero() ? lease : fn.timeout + std::chrono::seconds(30))
                         .count();
  options.capacity = capacity;
  options.owner = fn.name;
  options.hand_off = true;  // steps and entity operations are the platform's own hops
  std::weak_ptr<Worker> weak = worker;
  return std::make_shared<LeasedFeed>(std::move(options), c.store, c.clock, c.timers, c.logger, thread,
                                      [weak, thread](std::vector<Message> batch) {
                                        if (auto self = weak.lock()) {
                                          auto b = std::make_shared<std::vector<Message>>(std::move(batch));
                                          thread->post([self, b] { self->take(std::move(*b)); });
                                        }
                                      });
}

template <class Worker>
class WorkerTrigger final : public Trigger {
 public:
  // `thread`: the workers' task thread, held here past them.
  WorkerTrigger(Store& store, std::string kind, std::shared_ptr<TaskThread> thread,
                std::vector<std::shared_ptr<Worker>> workers)
      : store_(store), kind_(std::move(kind)), thread_(std::move(thread)), workers_(std::move(workers)) {}
  ~WorkerTrigger() override { stop(Duration::zero()); }

  std::string_view kind() const override { return kind_; }

  Status start() override {
    if (workers_.empty()) return ok_status();
    watch_ = store_.watch_changes([this](const std::vector<std::string>& queues) {
      for (auto& w : workers_) {
        if (std::find(queues.begin(), queues.end(), w->queue()) != queues.end()) w->pump();
        w->on_changes(queues);  // the worker's own wakes
      }
    });
    for (auto& w : workers_) w->pump();
    return ok_status();
  }

  void stop_taking_work() override {
    watch_.reset();
    for (auto& w : workers_) w->stop();
  }

  bool drain(Duration grace) override {
    const TimePoint until = std::chrono::steady_clock::now() + grace;
    bool all = true;
    for (auto& w : workers_) all &= w->wait_idle(until);
    return all;
  }

 private:
  Store& store_;
  std::string kind_;
  std::shared_ptr<TaskThread> thread_;
  std::unique_ptr<Store::ChangeWatch> watch_;
  std::vector<std::shared_ptr<Worker>> workers_;
};

}  // namespace nimbus::durable
