#pragma once
// A function's pool: bounds how many invocations run at once (`concurrency`), lets a few more
// wait (`wait_queue`), sheds the rest as Outcome::overloaded, and enforces the deadline: a
// caller hears Outcome::timeout when it passes, even if the code is still running (the slot
// stays taken until it really ends). Blocking in-process functions run on WorkerThreads;
// `blocking: false` ones run inline on the caller's thread.
#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/app_spec.h"
#include "core/clock.h"
#include "runtime/executor.h"

namespace nimbus {

class Metrics;
class WorkerThreads;
class FunctionPool;

// Versions (deploy/): where a function's invocations go when more than one version of its code
// runs. A request may pin a version or an alias by the Nimbus-Version header; otherwise the
// `live` alias's weights decide, by a sticky key's hash when the alias has one (the same user
// sees the same version), else by a draw per invocation.
struct VersionSplit {
  std::vector<std::pair<FunctionPool*, int>> weights;  // pool (null: the front pool's own code), weight; sum 100
  std::string sticky_header;                            // lower case; "" = none
  std::string sticky_cookie;                            // "" = none
};
struct VersionRoutes {
  std::map<std::string, FunctionPool*> versions;  // what an alias names, by id (null: own code)
  std::map<std::string, VersionSplit> aliases;    // "live" is every request's unless pinned
  std::vector<std::shared_ptr<FunctionPool>> pools;  // keeps the versions' pools
  // Every version loaded here by its code's tag (an orchestrator's code version), aliases or
  // not (null: own code): an orchestration instance runs on the code it started on
  // (durable/, versioning.on_mismatch: keep_old).
  std::map<std::string, FunctionPool*> by_code;
  // Asks for version `id` to be loaded here (it is, soon, unless it cannot be).
  std::function<void(const std::string& id)> load;
  std::string own_version;  // the version id of the front pool's own code (the host's folder)
};
inline constexpr const char* kVersionHeader = "nimbus-version";

// One version's invocations of one function, for per-version metrics and canaries (deploy/):
// counted only while versions are in use (set_stats), with Metrics' latency buckets.
struct PoolStats {
  static constexpr int kBuckets = 17;  // Metrics::kBuckets finite bounds, then +Inf
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> errors{0};  // not a success, or an HTTP reply of 500 or more
  std::atomic<uint64_t> buckets[kBuckets] = {};
  // The same for the calls that did not wait for an instance to start: the latency a version
  // will have once warm, which is what a canary is judged on (cold starts have their own metric).
  std::atomic<uint64_t> warm_buckets[kBuckets] = {};
  std::atomic<uint64_t> sum_us{0};
  // The version id whose pool counts here, once it is numbered (null before); the string lives
  // as long as the stats.
  std::atomic<const std::string*> version{nullptr};
  void record(const Result& result, Duration took);
};

struct PoolContext {
  const Clock& clock;
  Timers timers;
  WorkerThreads& workers;
  Metrics& metrics;
};

class FunctionPool {
 public:
  FunctionPool(const FunctionSpec& spec, int index, std::unique_ptr<Executor> executor,
               PoolContext context);
  ~FunctionPool();

  const FunctionSpec& spec() const { return spec_; }
  int index() const { return index_; }
  // Invocations it runs at once, at most: the executor's capacity for the function (for a
  // fleet of worker instances, concurrency x max_instances). Triggers lease no more than this.
  int capacity() const { return capacity_; }

  // True when invocations may run inline on the calling (event-loop) thread.
  bool runs_inline() const { return inline_; }

  // The fast path for inline functions: runs now and returns the Result when a slot is free
  // and nobody is waiting; nullopt means "use dispatch()" (inv is untouched then).
  // *finished is set to when it returned (saves the caller a clock read).
  std::optional<Result> try_run_inline(const Invocation& inv, TimePoint* finished = nullptr);

  // Runs `inv` under the pool's limits; `done` is called exactly once, on any thread, with the
  // function's Result or a timeout / overloaded / unavailable one.
  void dispatch(Invocation inv, Completion done);

  // After close(), new invocations are refused (unavailable); those admitted still finish.
  void close();

  // Sends invocations on to other versions' pools (null: only this pool's own code runs).
  // The pools a routing names live as long as it does, and past it until their invocations end.
  void set_routes(std::shared_ptr<const VersionRoutes> routes);
  std::shared_ptr<const VersionRoutes> routes() const;
  // The pool `inv` would run on (this one for its own code), or null with *problem said. For
  // a part that must know before it runs (an orchestration records the code its instance
  // started on); dispatch_here() then runs it there without routing again.
  FunctionPool* choose(const Invocation& inv, std::string* problem) const;
  void dispatch_here(Invocation inv, Completion done);
  // The version and code tag of this pool's own code (set by deploy/ before it is routed to).
  void set_version(std::string id, std::string code) {
    version_id_ = std::move(id);
    code_version_ = std::move(code);
  }
  const std::string& version_id() const { return version_id_; }
  // The version id of `chosen` (this pool or one choose() gave).
  std::string version_of(const FunctionPool* chosen) const {
    if (chosen != this) return chosen->version_id();
    auto r = routes();
    return r ? r->own_version : std::string();
  }
  const std::string& code_version() const { return code_version_; }
  // The pool loaded here whose code tag is `code` (this one for its own, when it has that tag
  // or `own_code` says it is; null: none). When none, and `version` names the version it came
  // from, that version is asked to be loaded.
  FunctionPool* with_code(const std::string& code, const std::string& own_code, const std::string& version);

  // Counts this pool's own invocations into `stats` (null: not counted); it must outlive the pool.
  void set_stats(PoolStats* stats) { stats_.store(stats, std::memory_order_release); }

  int running() const { return running_.load(std::memory_order_relaxed); }
  int waiting() const;

 private:
  struct Call;
  // The pool `inv` goes to (this one for its own code), or null with *problem said. The same
  // invocation picks the same pool every time (its id is the draw), so a caller that tries the
  // inline path and then dispatches does not draw twice.
  FunctionPool* pick(const VersionRoutes& routes, const Invocation& inv, std::string* problem) const;
  void run_here(Invocation inv, Completion done);  // under this pool's limits, its own code
  bool claim_slot();
  void arm_deadline(const std::shared_ptr<Call>& call);
  void start(std::shared_ptr<Call> call);
  void finish(const std::shared_ptr<Call>& call, Result&& result);
  void release_slot();
  void pump();
  void on_deadline(const std::shared_ptr<Call>& call);
  void settle(const std::shared_ptr<Call>& call, Result&& result);

  FunctionSpec spec_;
  int index_;
  std::unique_ptr<Executor> executor_;
  PoolContext ctx_;
  bool inline_;
  int capacity_;
  std::atomic<int> running_{0};
  std::atomic<int> waiting_count_{0};
  std::atomic<bool> closed_{false};
  std::atomic<bool> routed_{false};  // routes_ is set: the fast path skips loading it otherwise
  std::atomic<PoolStats*> stats_{nullptr};
  std::atomic<std::shared_ptr<const VersionRoutes>> routes_;
  std::string version_id_, code_version_;
  mutable std::mutex mu_;
  std::deque<std::shared_ptr<Call>> waiting_;
};

}  // namespace nimbus
