#pragma once
// Host metrics in the Prometheus text format 0.0.4. Counters live in per-thread shards (each
// written by one thread with plain relaxed stores, so the request path takes no lock and shares
// no cache line); a scrape sums the shards.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/invocation.h"

namespace nimbus {

class Metrics {
 public:
  explicit Metrics(std::vector<std::string> functions);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // `function` is the index in the list given at construction.
  void invocation(int function, TriggerKind trigger, Outcome outcome, Duration duration);
  void in_flight(int function, int delta);
  void cold_start(int function, Duration duration);
  // How long an invocation waited for a free slot or a starting instance before it ran.
  void queue_wait(int function, Duration waited);
  // Instances of a function now (worker processes; set by whoever owns them).
  void instances(int function, int count);
  void http_response(int status);
  // A worker process of a function ended while the host was not stopping.
  enum class WorkerExit : uint8_t { crashed, timeout, failed_start, retired };
  void worker_exit(int function, WorkerExit why);

  std::string render() const;

  static constexpr int kBuckets = 16;  // finite bucket bounds; +Inf is implied
  static const double kBucketBounds[kBuckets];

 private:
  struct Shard;
  Shard& shard();
  std::vector<std::string> functions_;
  std::unique_ptr<std::atomic<int>[]> instances_;  // a gauge set by one owner per function
  static constexpr int kWorkerExits = 4;
  std::unique_ptr<std::atomic<uint64_t>[]> worker_exits_;  // function * kWorkerExits + why
  uint64_t generation_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

// Checks text against the Prometheus 0.0.4 exposition format; returns "" or the first problem
// with its line number. Used by tests, and by `nimbus status --check-metrics`.
std::string check_prometheus_text(const std::string& text);

}  // namespace nimbus
