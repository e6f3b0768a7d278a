#pragma once
// Rate limits shared by the hosts of one store: each host decides from its own buckets
// (policies.h) and this merges them into one bucket per limiter and key in the store (state
// store `_rate_limits`) on a thread of its own (a flood of keys can slow the merging, never
// the event loops or the store's I/O threads): every round (gateway.rate_limits.sync, 100 ms)
// the keys a host touched since the last one, and a key met for the first time at once. A
// merge reads the store's bucket, refills it for the time gone by, takes away what this host
// let through, writes it back if nobody else wrote it meanwhile (ETag), and hands the count
// back to the host, so every host converges on one bucket. What the hosts let through before
// they next merge is the slack: across H hosts a client can get at most what H hosts allow
// in one round on top of the limit (docs/gateway.md). An idle bucket leaves the store once
// it would be full again.
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "gateway/policies.h"

namespace nimbus {

class Store;

inline constexpr const char* kRateLimitsStore = "_rate_limits";

class RateLimitSync : public std::enable_shared_from_this<RateLimitSync> {
 public:
  RateLimitSync(Store& store, const Clock& clock) : store_(store), clock_(clock) {}
  ~RateLimitSync();
  // The merging thread: a round every `period` (real time), new keys as soon as they are met.
  void start(Duration period);
  // Stops the thread (after the merge under way); before the store closes.
  void stop();
  // Merged from now on, while it lives (it must have a shared_id). A key it meets for the
  // first time is merged at once by the thread, once started.
  void add(const std::shared_ptr<RateLimiter>& limiter);
  // One round over every limiter's touched keys. Blocks on the store: the thread (or a test).
  void round();
  // Merges this limiter's collected uses (blocking). Public for tests.
  void merge(RateLimiter& limiter, const std::vector<RateLimiter::Use>& uses);

  struct Stats {
    int64_t merged = 0;     // keys written
    int64_t conflicts = 0;  // writes another host beat (read again and retried)
    int64_t failures = 0;   // merges the store refused (kept for the next round)
    std::string last_failure;
  };
  Stats stats() const;
  std::size_t limiters() const;

  // The store's key for a limiter's bucket.
  static std::string bucket_key(const std::string& shared_id, const std::string& key);

 private:
  struct Plan;
  bool write(RateLimiter& limiter, std::vector<Plan>& plans);
  Store& store_;
  const Clock& clock_;
  mutable std::mutex mu_;
  std::vector<std::weak_ptr<RateLimiter>> limiters_;
  std::atomic<int64_t> merged_{0}, conflicts_{0}, failures_{0};
  std::string last_failure_;  // under mu_
  static constexpr std::size_t kPerRound = 5000;  // keys per limiter per round; more wait
  // The thread, and what it is asked to do.
  void learn_soon(std::weak_ptr<RateLimiter> limiter);
  std::thread worker_;
  std::mutex worker_mu_;
  std::condition_variable worker_cv_;
  bool stopping_ = false;                               // under worker_mu_
  std::vector<std::weak_ptr<RateLimiter>> to_learn_;  // under worker_mu_
};

}  // namespace nimbus
