#include "pool/function_pool.h"

#include <algorithm>

#include "observe/metrics.h"
#include "pool/worker_threads.h"

namespace nimbus {

struct FunctionPool::Call {
  Invocation invocation;
  Completion done;
  TimePoint started;
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

std::optional<Result> FunctionPool::try_run_inline(const Invocation& inv, TimePoint* finished) {
  if (!inline_ || closed_.load(std::memory_order_relaxed) ||
      waiting_count_.load(std::memory_order_relaxed) > 0 || !claim_slot()) {
    return std::nullopt;
  }
  ctx_.metrics.in_flight(index_, +1);
  Result r = executor_->call(inv);
  ctx_.metrics.in_flight(index_, -1);
  TimePoint end = ctx_.clock.now();
  if (finished) *finished = end;
  ctx_.metrics.invocation(index_, inv.trigger, r.outcome, end - inv.started);
  release_slot();
  return r;
}

void FunctionPool::dispatch(Invocation inv, Completion done) {
  if (closed_.load()) {
    Result r = Result::failure(Outcome::unavailable, "unavailable",
                               "function '" + spec_.name + "' is shutting down");
    ctx_.metrics.invocation(index_, inv.trigger, r.outcome, Duration::zero());
    done(std::move(r));
    return;
  }
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
  ctx_.metrics.invocation(index_, call->invocation.trigger, result.outcome, ctx_.clock.now() - call->started);
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
