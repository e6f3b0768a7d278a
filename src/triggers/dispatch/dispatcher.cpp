#include "triggers/dispatch/dispatcher.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <future>
#include <thread>
#include <map>
#include <mutex>
#include <random>

#include <boost/json.hpp>

#include "core/ids.h"
#include "observe/log.h"
#include "observe/trace.h"
#include "pool/function_pools.h"
#include "store/store.h"
#include "triggers/dispatch/leased_feed.h"
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
           const Clock& clock, Logger& logger, std::shared_ptr<TaskThread> dispatcher)
      : dispatcher_(std::move(dispatcher)),
        fn_(fn),
        kind_(kind),
        spec_(std::move(feed)),
        queue_(spec_.queue),
        pool_(pool),
        store_(store),
        clock_(clock),
        logger_(logger) {}

  // Made shared first: the feed's hand-offs hold the consumer weakly.
  static std::shared_ptr<Consumer> make(const FunctionSpec& fn, TriggerKind kind, StoreFeed feed, FunctionPool& pool,
                                        Store& store, const Clock& clock, Timers timers, Logger& logger,
                                        std::shared_ptr<TaskThread> dispatcher) {
    auto c = std::make_shared<Consumer>(fn, kind, std::move(feed), pool, store, clock, logger, dispatcher);
    LeasedFeed::Options o;
    o.queue = c->queue_;
    o.batch_size = c->spec_.batch_size;
    o.max_wait = c->spec_.max_wait;
    o.lease_ms = to_ms(c->spec_.lease > Duration::zero() ? c->spec_.lease : fn.timeout + std::chrono::seconds(30));
    o.capacity = pool.capacity();
    o.owner = fn.name;
    o.hand_off = c->spec_.hand_off;
    std::weak_ptr<Consumer> weak = c;
    c->feed_ = std::make_shared<LeasedFeed>(std::move(o), store, clock, timers, logger, std::move(dispatcher),
                                            [weak](std::vector<Message> batch) {
                                              if (auto self = weak.lock()) self->received(std::move(batch));
                                            });
    return c;
  }

  const std::string& queue() const { return queue_; }
  void pump() { feed_->pump(); }
  void stop() { feed_->stop(); }
  bool wait_idle(TimePoint until) { return feed_->wait_idle(until); }

 private:
  // On the store's writer thread: functions run off it (an inline function that called a
  // store service from here would wait on its own thread). One hand-off per batch.
  void received(std::vector<Message> messages) {
    auto batch = std::make_shared<std::vector<Message>>(std::move(messages));
    dispatcher_->post([self = shared_from_this(), batch] { self->run_batch(*batch); });
  }

  void run_batch(std::vector<Message>& batch) {
    if (feed_->stopping()) return feed_->release(batch);  // the host stops: back for the next start
    for (auto& m : batch) dispatch(std::move(m));
  }

  void dispatch(Message&& m) {
    const std::string* tp = find_header(m.metadata, "traceparent");
    const std::string* ts = tp ? find_header(m.metadata, "tracestate") : nullptr;
    Invocation inv = new_invocation(fn_, kind_, m.source.empty() ? "/queues/" + m.queue : m.source,
                                    m.type.empty() ? spec_.default_type : m.type, clock_,
                                    tp ? std::string_view(*tp) : std::string_view(),
                                    ts ? std::string_view(*ts) : std::string_view());
    inv.subject = m.subject;
    inv.event_id = m.event_id;
    inv.message_id = m.id;
    inv.attempt = m.deliveries;
    inv.enqueued_ms = m.enqueued_ms;
    inv.payload = std::move(m.payload);
    inv.metadata = std::move(m.metadata);
    LeaseRef ref{m.id, m.lease};
    // Its time in the queue, for its trace: from the enqueue to this, its first delivery.
    std::optional<Duration> queued;
    if (m.deliveries <= 1 && m.enqueued_ms > 0) {
      queued = std::chrono::milliseconds(std::max<int64_t>(0, unix_ms(clock_) - m.enqueued_ms));
    }
    std::shared_ptr<const Headers> trigger_metadata;  // what output names are filled from
    if (spec_.hooks) {
      if (auto st = spec_.hooks->prepare(store_, m, inv, trigger_metadata, unix_ms(clock_)); !st) {
        return complete(ref, m.deliveries, inv.id, inv.traceparent, inv.tracestate, inv.parent_span, inv.started, queued,
                        nullptr,
                        Result::failure(Outcome::error, st.error().code.empty() ? "prepare" : st.error().code,
                                        st.error().message));
      }
    }
    std::string id = inv.id, trace = inv.traceparent, state = inv.tracestate;
    TimePoint started = inv.started;
    const uint64_t parent = inv.parent_span;
    pool_.dispatch(std::move(inv), [self = shared_from_this(), ref = std::move(ref), attempt = m.deliveries,
                                    id = std::move(id), trace = std::move(trace), state = std::move(state), started,
                                    parent, queued, trigger_metadata = std::move(trigger_metadata)](Result&& r) mutable {
      self->complete(ref, attempt, id, trace, state, parent, started, queued, trigger_metadata.get(), std::move(r));
    });
  }

  void complete(const LeaseRef& ref, int attempt, const std::string& id, const std::string& trace,
                const std::string& state, uint64_t parent,
                TimePoint started, std::optional<Duration> queued, const Headers* trigger_metadata, Result&& r) {
    Batch batch;
    Outcome outcome = r.outcome;
    std::string error_type = r.error.type, error = r.error.message;
    if (outcome == Outcome::success) {
      if (auto st = add_outputs(fn_, std::move(r.outputs), batch, trigger_metadata, trace, state); !st) {
        outcome = Outcome::error;
        error_type = "invalid_output";
        error = st.error().message;
        batch = Batch{};
      }
    }
    InvocationRecord record{fn_.name, kind_,    id,       trace,        outcome, 0, clock_.now() - started, error_type,
                            error,    {},       r.version, parent, attempt, r.waited, r.cold_start, r.ran, queued};
    record.tracestate = state;
    logger_.invocation(record);
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
    // The commit's own span, under the invocation's, when its trace is recorded.
    Tracer* tracer = trace_sampled(trace) ? logger_.tracer() : nullptr;
    const WallTime commit_began = tracer ? clock_.wall() : WallTime{};
    store_.commit(std::move(batch), [self = shared_from_this(), ref, what, tracer, commit_began,
                                     parent = tracer ? trace_context_of(trace) : TraceContext(),
                                     state = tracer ? state : std::string()](Expected<BatchResult> done) {
      if (tracer) tracer->store_commit(parent, state, commit_began, self->clock_.wall(), what, done.ok());
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
    feed_->forget({ref.id}, /*requeued=*/!st || std::strcmp(what, "retry") == 0);
  }

  std::shared_ptr<TaskThread> dispatcher_;  // shared: a completion may post after the trigger is gone (dropped)
  const FunctionSpec& fn_;
  TriggerKind kind_;
  StoreFeed spec_;
  std::string queue_;
  FunctionPool& pool_;
  Store& store_;
  const Clock& clock_;
  Logger& logger_;
  std::shared_ptr<LeasedFeed> feed_;  // leases, renewal, wake-ups
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
      consumers_.push_back(Consumer::make(fn, kind, std::move(feed), *pool, store_, clock_, timers_,
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
