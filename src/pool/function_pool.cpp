#include "pool/function_pool.h"

#include <algorithm>

#include "observe/metrics.h"
#include "pool/worker_threads.h"

namespace nimbus {

struct FunctionPool::Call {
  Invocation invocation;
  Completion done;
  TimePoint started;
  TimePoint handed{};  // given to the executor
  std::atomic<bool> settled{false};
  TimerQueue::Id timer = 0;
  bool queued = false;  // guarded by the pool's mutex
};

FunctionPool::FunctionPool(const FunctionSpec& spec, int index, std::unique_ptr<Executor> executor,
                           PoolContext context)
    : spec_(spec),
      index_(index),
      executor_(std::move(executor)),
      ctx_(context),
      inline_(!spec.blocking && executor_->mode() == Executor::Mode::synchronous),
      capacity_(std::max(executor_->capacity(spec), 1)) {}

FunctionPool::~FunctionPool() = default;

bool FunctionPool::claim_slot() {
  int cur = running_.load(std::memory_order_relaxed);
  while (cur < capacity_) {
    if (running_.compare_exchange_weak(cur, cur + 1, std::memory_order_acq_rel)) return true;
  }
  return false;
}

void PoolStats::record(const Result& result, Duration took) {
  calls.fetch_add(1, std::memory_order_relaxed);
  if (result.outcome != Outcome::success || (result.http && result.http->status >= 500)) {
    errors.fetch_add(1, std::memory_order_relaxed);
  }
  const double s = std::chrono::duration<double>(took).count();
  int i = 0;
  while (i < Metrics::kBuckets && s > Metrics::kBucketBounds[i]) ++i;
  buckets[i].fetch_add(1, std::memory_order_relaxed);
  if (result.cold_start == Duration::zero()) warm_buckets[i].fetch_add(1, std::memory_order_relaxed);
  sum_us.fetch_add(static_cast<uint64_t>(std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(took).count())),
                   std::memory_order_relaxed);
}

void FunctionPool::set_routes(std::shared_ptr<const VersionRoutes> routes) {
  const bool routed = routes != nullptr;
  routes_.store(std::move(routes), std::memory_order_release);
  routed_.store(routed, std::memory_order_release);
}

std::shared_ptr<const VersionRoutes> FunctionPool::routes() const {
  if (!routed_.load(std::memory_order_acquire)) return nullptr;
  return routes_.load(std::memory_order_acquire);
}

namespace {

// The value of cookie `name` in a Cookie header ("a=1; b=2"), or "".
std::string_view cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    const auto semi = header.find(';');
    std::string_view pair = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
    while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
    const auto eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == name) return pair.substr(eq + 1);
  }
  return {};
}

// 0..99 from a sticky key or the invocation's id (FNV-1a: stable across hosts and restarts),
// or drawn when there is neither.
int bucket_of(std::string_view key) {
  if (!key.empty()) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : key) h = (h ^ c) * 1099511628211ull;
    return static_cast<int>(h % 100);
  }
  thread_local uint64_t state = 0x9e3779b97f4a7c15ull ^ reinterpret_cast<uintptr_t>(&state);
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return static_cast<int>(state % 100);
}

}  // namespace

FunctionPool* FunctionPool::pick(const VersionRoutes& routes, const Invocation& inv, std::string* problem) const {
  const Headers* headers = inv.http ? &inv.http->headers : nullptr;
  const VersionSplit* split = nullptr;
  if (const std::string* pin = headers ? find_header(*headers, kVersionHeader) : nullptr; pin && !pin->empty()) {
    if (auto v = routes.versions.find(*pin); v != routes.versions.end()) {
      return v->second ? v->second : const_cast<FunctionPool*>(this);
    }
    auto a = routes.aliases.find(*pin);
    if (a == routes.aliases.end()) {
      *problem = "the request pins version or alias '" + *pin + "' (Nimbus-Version), which this host does not run";
      return nullptr;
    }
    split = &a->second;
  } else {
    auto a = routes.aliases.find("live");
    if (a == routes.aliases.end()) return const_cast<FunctionPool*>(this);
    split = &a->second;
  }
  std::string_view key;
  if (headers && !split->sticky_header.empty()) {
    if (const std::string* v = find_header(*headers, split->sticky_header)) key = *v;
  } else if (headers && !split->sticky_cookie.empty()) {
    if (const std::string* c = find_header(*headers, "cookie")) key = cookie_value(*c, split->sticky_cookie);
  }
  int at = bucket_of(key.empty() ? std::string_view(inv.id) : key);
  for (const auto& [pool, weight] : split->weights) {
    if (at < weight) return pool ? pool : const_cast<FunctionPool*>(this);
    at -= weight;
  }
  return split->weights.empty() || !split->weights.back().first ? const_cast<FunctionPool*>(this)
                                                                 : split->weights.back().first;
}

FunctionPool* FunctionPool::choose(const Invocation& inv, std::string* problem) const {
  auto routes = this->routes();
  return routes ? pick(*routes, inv, problem) : const_cast<FunctionPool*>(this);
}

FunctionPool* FunctionPool::with_code(const std::string& code, const std::string& own_code, const std::string& version) {
  auto routes = this->routes();
  if (code == (code_version_.empty() ? own_code : code_version_)) return this;
  if (!routes) return nullptr;
  if (auto it = routes->by_code.find(code); it != routes->by_code.end()) return it->second ? it->second : this;
  if (!version.empty() && routes->load) routes->load(version);
  return nullptr;
}

std::optional<Result> FunctionPool::try_run_inline(const Invocation& inv, TimePoint* finished) {
  if (auto routes = this->routes()) {  // held while the chosen version runs
    std::string problem;
    FunctionPool* to = pick(*routes, inv, &problem);
    if (to != this) {
      if (!to) {
        if (finished) *finished = ctx_.clock.now();
        ctx_.metrics.invocation(index_, inv.trigger, Outcome::unavailable, Duration::zero());
        return Result::failure(Outcome::unavailable, "unknown_version", problem);
      }
      return to->try_run_inline(inv, finished);
    }
  }
  if (!inline_ || closed_.load(std::memory_order_relaxed) ||
      waiting_count_.load(std::memory_order_relaxed) > 0 || !claim_slot()) {
    return std::nullopt;
  }
  ctx_.metrics.in_flight(index_, +1);
  const TimePoint handed = ctx_.clock.now();
  Result r = executor_->call(inv);
  ctx_.metrics.in_flight(index_, -1);
  TimePoint end = ctx_.clock.now();
  r.ran = end - handed;
  r.waited = inv.started == TimePoint{} ? Duration::zero() : handed - inv.started;
  if (finished) *finished = end;
  ctx_.metrics.invocation(index_, inv.trigger, r.outcome, end - inv.started);
  if (PoolStats* stats = stats_.load(std::memory_order_relaxed)) {
    stats->record(r, end - inv.started);
    if (const std::string* v = stats->version.load(std::memory_order_acquire)) r.version = *v;
  }
  release_slot();
  return r;
}

void FunctionPool::dispatch_here(Invocation inv, Completion done) {
  // (The pool chosen lives as long as the host's deployments: versions are not unloaded.)
  if (closed_.load()) {
    Result r = Result::failure(Outcome::unavailable, "unavailable", "function '" + spec_.name + "' is shutting down");
    ctx_.metrics.invocation(index_, inv.trigger, r.outcome, Duration::zero());
    return done(std::move(r));
  }
  run_here(std::move(inv), std::move(done));
}

void FunctionPool::dispatch(Invocation inv, Completion done) {
  if (auto routes = this->routes()) {
    std::string problem;
    FunctionPool* to = pick(*routes, inv, &problem);
    if (!to) {
      ctx_.metrics.invocation(index_, inv.trigger, Outcome::unavailable, Duration::zero());
      return done(Result::failure(Outcome::unavailable, "unknown_version", problem));
    }
    if (to != this) {
      // The routes (and with them the chosen version's pool) live until it answers.
      return to->dispatch(std::move(inv), [routes = std::move(routes), done = std::move(done)](Result&& r) mutable {
        Completion finish = std::move(done);
        routes.reset();
        finish(std::move(r));
      });
    }
  }
  if (closed_.load()) {
    Result r = Result::failure(Outcome::unavailable, "unavailable",
                               "function '" + spec_.name + "' is shutting down");
    ctx_.metrics.invocation(index_, inv.trigger, r.outcome, Duration::zero());
    done(std::move(r));
    return;
  }
  run_here(std::move(inv), std::move(done));
}

void FunctionPool::run_here(Invocation inv, Completion done) {
  auto call = std::make_shared<Call>();
  call->invocation = std::move(inv);
  call->done = std::move(done);
  call->started = call->invocation.started == TimePoint{} ? ctx_.clock.now() : call->invocation.started;
  if (waiting_count_.load() == 0 && claim_slot()) {
    arm_deadline(call);
    start(std::move(call));
    return;
  }
  std::unique_lock lock(mu_);
  if (waiting_count_.load() >= spec_.wait_queue) {
    lock.unlock();
    // Shed before any deadline is armed: overload must not add timer work.
    settle(call, Result::failure(Outcome::overloaded, "overloaded",
                                 "function '" + spec_.name + "' is at its concurrency limit (" +
                                     std::to_string(capacity_) + ") and its wait queue is full"));
    return;
  }
  arm_deadline(call);  // its callback takes mu_, so it sees the call queued below
  call->queued = true;
  waiting_.push_back(call);
  waiting_count_.fetch_add(1);
  ctx_.metrics.in_flight(index_, +1);
  lock.unlock();
  pump();  // a slot may have freed between the claim and the enqueue
}

void FunctionPool::arm_deadline(const std::shared_ptr<Call>& call) {
  if (call->invocation.deadline == TimePoint{}) return;
  std::weak_ptr<Call> weak = call;
  call->timer = ctx_.timers.at(call->invocation.deadline,
      [this, weak] {
        if (auto c = weak.lock()) on_deadline(c);
      });
}

void FunctionPool::start(std::shared_ptr<Call> call) {
  ctx_.metrics.in_flight(index_, +1);
  call->handed = ctx_.clock.now();
  if (executor_->mode() == Executor::Mode::asynchronous) {
    std::shared_ptr<Call> keep = call;
    executor_->start(keep->invocation, [this, keep](Result&& r) { finish(keep, std::move(r)); });
  } else if (inline_) {
    finish(call, executor_->call(call->invocation));
  } else {
    ctx_.workers.post([this, call = std::move(call)] { finish(call, executor_->call(call->invocation)); });
  }
}

void FunctionPool::finish(const std::shared_ptr<Call>& call, Result&& result) {
  if (call->timer != 0) ctx_.timers.cancel(call->timer);
  ctx_.metrics.in_flight(index_, -1);
  // The slot is free before anyone hears of the result: a caller that dispatches again from
  // its completion (a queue consumer with room again) must find it free, not overloaded.
  running_.fetch_sub(1, std::memory_order_acq_rel);
  settle(call, std::move(result));
  if (waiting_count_.load() > 0) pump();
}

void FunctionPool::settle(const std::shared_ptr<Call>& call, Result&& result) {
  if (call->settled.exchange(true)) return;  // the deadline answered first
  const TimePoint now = ctx_.clock.now();
  const Duration took = now - call->started;
  if (call->handed != TimePoint{}) {
    const Duration in_executor = now - call->handed;
    result.ran = std::max(Duration::zero(), in_executor - result.waited);
    result.waited += call->handed - call->started;
  }
  ctx_.metrics.invocation(index_, call->invocation.trigger, result.outcome, took);
  if (PoolStats* stats = stats_.load(std::memory_order_relaxed)) {
    stats->record(result, took);
    if (const std::string* v = stats->version.load(std::memory_order_acquire)) result.version = *v;
  }
  Completion done = std::move(call->done);
  done(std::move(result));
}

void FunctionPool::on_deadline(const std::shared_ptr<Call>& call) {
  {
    std::lock_guard lock(mu_);
    if (call->queued) {
      // Timed out while waiting for a slot: it never ran; take it out of line.
      call->queued = false;
      for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
        if (*it == call) {
          waiting_.erase(it);
          break;
        }
      }
      waiting_count_.fetch_sub(1);
      ctx_.metrics.in_flight(index_, -1);
    }
  }
  settle(call, Result::failure(Outcome::timeout, "timeout",
                               "function '" + spec_.name + "' did not finish within its timeout"));
}

void FunctionPool::release_slot() {
  running_.fetch_sub(1, std::memory_order_acq_rel);
  if (waiting_count_.load() > 0) pump();
}

void FunctionPool::pump() {
  while (true) {
    std::shared_ptr<Call> next;
    {
      std::lock_guard lock(mu_);
      if (waiting_.empty() || !claim_slot()) return;
      next = std::move(waiting_.front());
      waiting_.pop_front();
      next->queued = false;
      waiting_count_.fetch_sub(1);
      ctx_.metrics.in_flight(index_, -1);  // start() counts it again as running
      ctx_.metrics.queue_wait(index_, ctx_.clock.now() - next->started);
    }
    start(std::move(next));
  }
}

void FunctionPool::close() { closed_.store(true); }

int FunctionPool::waiting() const { return waiting_count_.load(); }

}  // namespace nimbus
