#pragma once
// The Trigger of a durable kind whose functions each have a worker leasing from a store queue
// (orchestrations.cpp, entities.cpp): woken by the store's change notices for its queue,
// stopped and drained together. `Worker` has queue(), pump(), stop() and wait_idle(until).
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "store/store.h"
#include "triggers/trigger.h"

namespace nimbus {
class TaskThread;
}

namespace nimbus::durable {

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
