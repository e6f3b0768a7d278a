#include "triggers/dispatch/dispatcher.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <thread>
#include <map>
#include <mutex>
#include <random>

#include <boost/json.hpp>

#include "observe/log.h"
#include "pool/function_pools.h"
#include "store/store.h"
#include "triggers/kind.h"
#include "triggers/outputs.h"
#include "triggers/task_thread.h"

namespace nimbus {
namespace {

int64_t to_ms(Duration d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); }

}  // namespace

class StoreDispatcher::Consumer : public std::enable_shared_from_this<StoreDispatcher::Consumer> {
 public:
  Consumer(const FunctionSpec& fn, TriggerKind kind, StoreFeed feed, FunctionPool& pool, Store& store,
           const Clock& clock, Timers timers, Logger& logger, std::shared_ptr<TaskThread> dispatcher)
      : dispatcher_(std::move(dispatcher)),
        fn_(fn),
        kind_(kind),
        spec_(std::move(feed)),
        queue_(spec_.queue),
        pool_(pool),
        store_(store),
        clock_(clock),
        timers_(timers),
        logger_(logger),
        lease_ms_(to_ms(spec_.lease > Duration::zero() ? spec_.lease : fn.timeout + std::chrono::seconds(30))),
        limit_(pool.capacity()) {}

  const std::string& queue() const { return queue_; }

  // Leases as many messages as there is room for, unless a receive is already under way.
  void pump() {
    int want;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      if (receiving_) {
        rescan_ = true;  // work may have arrived after that receive looked: look again after it
        return;
      }
      want = std::min(spec_.batch_size, limit_ - static_cast<int>(in_flight_.size()));
      if (want <= 0) return;
      receiving_ = true;
      if (wake_timer_ != 0) {
        timers_.cancel(wake_timer_);
        wake_timer_ = 0;
      }
    }
    auto self = shared_from_this();
    store_.receive(queue_, want, lease_ms_, [self, want](Expected<std::vector<Message>> got) { self->on_received(want, std::move(got)); });
  }

  void stop() {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto* id : {&wake_timer_, &renew_timer_}) {
      if (*id != 0) timers_.cancel(*id);
      *id = 0;
    }
  }

  bool wait_idle(TimePoint until) {
    std::unique_lock lock(mu_);
    return idle_cv_.wait_until(lock, until, [&] { return in_flight_.empty() && !receiving_; });
  }

 private:
  void on_received(int wanted, Expected<std::vector<Message>> got) {
    if (!got) {
      logger_.host(LogLevel::error, "cannot receive from the store",
                   {{"function", fn_.name}, {"queue", queue_}, {"error", got.error().message}});
      std::lock_guard lock(mu_);
      receiving_ = false;
      arm_wake_locked(clock_.now() + spec_.max_wait);
      idle_cv_.notify_all();
      return;
    }
    std::vector<Message>& messages = *got;
    bool stopping;
    {
      std::lock_guard lock(mu_);
      stopping = stopping_;
    }
    if (stopping && !messages.empty()) {
      // Received as the host stops: hand them straight back rather than leave them leased.
      Batch release;
      for (const auto& m : messages) release.retries.push_back({{m.id, m.lease}, unix_ms(clock_), m.last_error, true});
      store_.commit(std::move(release), [self = shared_from_this()](Expected<BatchResult>) {
        std::lock_guard lock(self->mu_);
        self->receiving_ = false;
        self->idle_cv_.notify_all();
      });
      return;
    }
    {
      std::lock_guard lock(mu_);
      receiving_ = false;
      for (const auto& m : messages) in_flight_[m.id] = m.lease;
      if (!messages.empty()) arm_renewal_locked();
      idle_cv_.notify_all();
    }
    // Functions run off the store's writer thread (this callback's): an inline function that
    // called a store service from here would wait on its own thread. One hand-off per batch.
    const int received = static_cast<int>(messages.size());
    if (received > 0) {
      auto batch = std::make_shared<std::vector<Message>>(std::move(messages));
      dispatcher_->post([self = shared_from_this(), batch] { self->run_batch(*batch); });
    }
    bool rescan;
    {
      std::lock_guard lock(mu_);
      rescan = std::exchange(rescan_, false);
    }
    if (received >= wanted || rescan) {
      pump();  // there may be more
      return;
    }
    // Drained: sleep until the next delayed message is due, a commit wakes us, or max_wait.
    // The due time is a store read: on the dispatcher's thread, never the writer's (this one).
    dispatcher_->post([self = shared_from_this()] { self->sleep_until_due(); });
  }

  void sleep_until_due() {
    TimePoint at = clock_.now() + spec_.max_wait;
    if (auto due = store_.next_due(queue_); due && *due > 0) {
      TimePoint when = clock_.now() + std::chrono::milliseconds(std::max<int64_t>(*due - unix_ms(clock_), 0));
      at = std::min(at, when);
    }
    std::lock_guard lock(mu_);
    arm_wake_locked(at);
  }

  void arm_wake_locked(TimePoint at) {
    if (stopping_) return;
    if (wake_timer_ != 0) timers_.cancel(wake_timer_);
    std::weak_ptr<Consumer> weak = weak_from_this();
    wake_timer_ = timers_.at(at,
        [weak] {
          if (auto self = weak.lock()) {
            {
              std::lock_guard lock(self->mu_);
              self->wake_timer_ = 0;
            }
            self->pump();
          }
        });
  }

  // While anything is in flight, extend its leases every third of the lease.
  void arm_renewal_locked() {
    if (renew_timer_ != 0 || stopping_) return;
    std::weak_ptr<Consumer> weak = weak_from_this();
    const TimePoint at = clock_.now() + std::chrono::milliseconds(std::max<int64_t>(lease_ms_ / 3, 1));
    renew_timer_ = timers_.at(at,
        [weak] {
          if (auto self = weak.lock()) self->renew();
        });
  }

  void renew() {
    std::vector<LeaseRef> refs;
    {
      std::lock_guard lock(mu_);
      renew_timer_ = 0;
      if (in_flight_.empty()) return;
      for (const auto& [id, lease] : in_flight_) refs.push_back({id, lease});
      arm_renewal_locked();
    }
    store_.extend(std::move(refs), lease_ms_, [this, self = shared_from_this()](Status st) {
      if (!st) {
        logger_.host(LogLevel::warn, "cannot extend leases", {{"queue", queue_}, {"error", st.error().message}});
      }
    });
  }

  void run_batch(std::vector<Message>& batch) {
    bool stopping;
    {
      std::lock_guard lock(mu_);
      stopping = stopping_;
    }
    if (!stopping) {
      for (auto& m : batch) dispatch(std::move(m));
      return;
    }
    Batch release;  // the host stops: hand them back for the next start
    for (const auto& m : batch) release.retries.push_back({{m.id, m.lease}, unix_ms(clock_), m.last_error, true});
    store_.commit(std::move(release), [self = shared_from_this(), batch](Expected<BatchResult>) {
      std::lock_guard lock(self->mu_);
      for (const auto& m : batch) self->in_flight_.erase(m.id);
      self->idle_cv_.notify_all();
    });
  }

  void dispatch(Message&& m) {
    Invocation inv = new_invocation(fn_, kind_, m.source.empty() ? "/queues/" + m.queue : m.source,
                                    m.type.empty() ? spec_.default_type : m.type, clock_, [&]() -> std::string_view {
                                      const std::string* tp = find_header(m.metadata, "traceparent");
                                      return tp ? std::string_view(*tp) : std::string_view();
                                    }());
    inv.subject = m.subject;
    inv.event_id = m.event_id;
    inv.message_id = m.id;
    inv.attempt = m.deliveries;
    inv.enqueued_ms = m.enqueued_ms;
    inv.payload = std::move(m.payload);
    inv.metadata = std::move(m.metadata);
    LeaseRef ref{m.id, m.lease};
    std::shared_ptr<const Headers> trigger_metadata;  // what output names are filled from
    if (spec_.hooks) {
      if (auto st = spec_.hooks->prepare(store_, m, inv, trigger_metadata, unix_ms(clock_)); !st) {
        return complete(ref, m.deliveries, inv.id, inv.traceparent, inv.started, nullptr,
                        Result::failure(Outcome::error, st.error().code.empty() ? "prepare" : st.error().code,
                                        st.error().message));
      }
    }
    std::string id = inv.id, trace = inv.traceparent;
    TimePoint started = inv.started;
    pool_.dispatch(std::move(inv), [self = shared_from_this(), ref = std::move(ref), attempt = m.deliveries,
                                    id = std::move(id), trace = std::move(trace), started,
                                    trigger_metadata = std::move(trigger_metadata)](Result&& r) mutable {
      self->complete(ref, attempt, id, trace, started, trigger_metadata.get(), std::move(r));
    });
  }

  void complete(const LeaseRef& ref, int attempt, const std::string& id, const std::string& trace, TimePoint started,
                const Headers* trigger_metadata, Result&& r) {
    Batch batch;
    Outcome outcome = r.outcome;
    std::string error_type = r.error.type, error = r.error.message;
    if (outcome == Outcome::success) {
      if (auto st = add_outputs(fn_, std::move(r.outputs), batch, trigger_metadata); !st) {
        outcome = Outcome::error;
        error_type = "invalid_output";
        error = st.error().message;
        batch = Batch{};
      }
    }
    logger_.invocation({fn_.name, kind_, id, trace, outcome, 0, clock_.now() - started, error_type, error, {}});
    const char* what;
    const bool last = outcome != Outcome::success && attempt >= fn_.retry.max_attempts;
    if (spec_.hooks) spec_.hooks->complete(batch, ref.id, attempt, outcome, last, r, error_type, unix_ms(clock_));
    if (outcome == Outcome::success) {
      batch.acks.push_back(ref);
      what = "ack";
    } else {
      std::string reason = (error_type.empty() ? std::string(to_string(outcome)) : error_type) +
                           (error.empty() ? "" : ": " + error);
      if (last) {
        batch.dead.push_back({ref, reason});
        what = "dead-letter";
        logger_.host(LogLevel::warn, "message moved to the dead-letter queue",
                     {{"function", fn_.name}, {"queue", queue_ + ".dead"}, {"message_id", ref.id},
                      {"attempts", attempt}, {"error", reason}});
      } else {
        int64_t due = unix_ms(clock_) + to_ms(fn_.retry.next_delay(attempt));
        batch.retries.push_back({ref, due, reason});
        what = "retry";
      }
    }
    store_.commit(std::move(batch), [self = shared_from_this(), ref, what](Expected<BatchResult> done) {
      self->committed(ref, what, done.ok() ? Status(ok_status()) : Status(done.error()));
    });
  }

  void committed(const LeaseRef& ref, const char* what, Status st) {
    if (!st) {
      // A lost lease means another delivery owns the message now: this one's outputs are
      // dropped with its ack, so nothing is emitted twice.
      bool lost = st.error().code == store_error::conflict;
      logger_.host(lost ? LogLevel::warn : LogLevel::error,
                   lost ? "the message's lease was lost before its completion; it will be delivered again"
                        : "cannot commit a message's completion; it will be delivered again",
                   {{"function", fn_.name}, {"queue", queue_}, {"message_id", ref.id}, {"step", what},
                    {"error", st.error().message}});
    }
    {
      std::lock_guard lock(mu_);
      in_flight_.erase(ref.id);
      idle_cv_.notify_all();
    }
    pump();
  }

  std::shared_ptr<TaskThread> dispatcher_;  // shared: a completion may post after the trigger is gone (dropped)
  const FunctionSpec& fn_;
  TriggerKind kind_;
  StoreFeed spec_;
  std::string queue_;
  FunctionPool& pool_;
  Store& store_;
  const Clock& clock_;
  Timers timers_;
  Logger& logger_;
  int64_t lease_ms_;
  int limit_;
  std::mutex mu_;
  std::condition_variable idle_cv_;
  std::map<std::string, std::string> in_flight_;  // message id -> lease
  bool receiving_ = false;
  bool rescan_ = false;  // a wake-up came while a receive was under way
  bool stopping_ = false;
  TimerQueue::Id wake_timer_ = 0;
  TimerQueue::Id renew_timer_ = 0;
};

StoreDispatcher::StoreDispatcher(const TriggerContext& c)
    : app_(c.app),
      pools_(c.pools),
      store_(c.store),
      clock_(c.clock),
      timers_(c.timers),
      logger_(c.logger),
      dispatcher_(std::make_shared<TaskThread>()) {}

StoreDispatcher::~StoreDispatcher() { stop(Duration::zero()); }

Status StoreDispatcher::start() {
  for (const auto& fn : app_.functions) {
    FunctionPool* pool = pools_.find(fn.name);
    if (!pool) continue;
    // Each of its triggers fed from the store, by kind; triggers fed from one queue share a
    // consumer, with the longest lease.
    std::vector<std::pair<TriggerKind, StoreFeed>> feeds;
    for (const auto& t : fn.triggers) {
      const TriggerKindInfo* kind = find_trigger_kind(t.kind);
      if (!kind || !kind->feed) continue;
      auto feed = kind->feed(fn, t);
      if (!feed) continue;
      auto same = std::find_if(feeds.begin(), feeds.end(), [&](const auto& f) { return f.second.queue == feed->queue; });
      if (same != feeds.end()) {
        same->second.lease = std::max(same->second.lease, feed->lease);
        continue;
      }
      if (feed->setup) {
        if (auto st = feed->setup(store_); !st) return st;
      }
      feeds.emplace_back(t.kind, std::move(*feed));
    }
    for (auto& [kind, feed] : feeds) {
      consumers_.push_back(std::make_shared<Consumer>(fn, kind, std::move(feed), *pool, store_, clock_, timers_,
                                                      logger_, dispatcher_));
    }
  }
  enqueued_ = store_.watch_changes([this](const std::vector<std::string>& queues) { wake(queues); });
  for (auto& c : consumers_) c->pump();
  return ok_status();
}

void StoreDispatcher::wake(const std::vector<std::string>& queues) {
  for (auto& c : consumers_) {
    if (std::find(queues.begin(), queues.end(), c->queue()) != queues.end()) c->pump();
  }
}

void StoreDispatcher::stop_taking_work() {
  enqueued_.reset();
  for (auto& c : consumers_) c->stop();
  dispatcher_->drain();  // batches received before the stop are handed back now
}

bool StoreDispatcher::drain(Duration grace) {
  TimePoint until = std::chrono::steady_clock::now() + grace;
  bool all = true;
  for (auto& c : consumers_) all &= c->wait_idle(until);
  return all;
}

int StoreDispatcher::consumers() const { return static_cast<int>(consumers_.size()); }

}  // namespace nimbus
