#pragma once
// The Trigger of a durable kind whose functions each have a worker leasing from a store queue
// (orchestrations.cpp, entities.cpp): woken by the store's change notices for its queue,
// stopped and drained together. `Worker` has queue(), pump(), on_changes(names) (every name
// the store told of, for wakes of its own), stop() and wait_idle(until).
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "store/store.h"
#include "triggers/dispatch/leased_feed.h"
#include "triggers/task_thread.h"
#include "triggers/trigger.h"

namespace nimbus::durable {

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
