#include "triggers/dispatch/leased_feed.h"

#include <algorithm>

#include "observe/log.h"
#include "triggers/task_thread.h"

namespace nimbus {

LeasedFeed::LeasedFeed(Options options, Store& store, const Clock& clock, Timers timers, Logger& logger,
                       std::shared_ptr<TaskThread> thread, std::function<void(std::vector<Message>)> deliver)
    : options_(std::move(options)),
      store_(store),
      clock_(clock),
      timers_(timers),
      logger_(logger),
      thread_(std::move(thread)),
      deliver_(std::move(deliver)) {}

void LeasedFeed::pump() {
  if (options_.hand_off) {  // offered once, outside mu_ (the store takes its lock, then ours)
    bool first;
    {
      std::lock_guard lock(mu_);
      first = !offered_ && !stopping_;
      offered_ = true;
    }
    if (first) {
      auto offer = store_.offer_claims(options_.queue, std::weak_ptr<Store::Claimant>(shared_from_this()));
      std::unique_lock lock(mu_);
      if (!stopping_) offer_ = std::move(offer);
      lock.unlock();
    }  // an offer not kept (stopped meanwhile) ends here, outside mu_
  }
  int want;
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    if (receiving_) {
      rescan_ = true;  // work may have arrived after that receive looked: look again after it
      return;
    }
    want = std::min(options_.batch_size, options_.capacity - static_cast<int>(held_.size()) - reserved_);
    if (want <= 0) {
      starved_ = true;
      drained_ = false;
      return;
    }
    receiving_ = true;
    if (wake_timer_ != 0) {
      timers_.cancel(wake_timer_);
      wake_timer_ = 0;
    }
  }
  store_.receive(options_.queue, want, options_.lease_ms,
                 [self = shared_from_this(), want](Expected<std::vector<Message>> got) {
                   self->on_received(want, std::move(got));
                 });
}

void LeasedFeed::on_received(int wanted, Expected<std::vector<Message>> got) {
  if (!got) {
    logger_.host(LogLevel::error, "cannot receive from the store",
                 {{"function", options_.owner}, {"queue", options_.queue}, {"error", got.error().message}});
    std::lock_guard lock(mu_);
    receiving_ = false;
    arm_wake_locked(clock_.now() + options_.max_wait);
    idle_cv_.notify_all();
    return;
  }
  std::vector<Message>& messages = *got;
  bool stopping, rescan;
  {
    std::lock_guard lock(mu_);
    stopping = stopping_;
    receiving_ = false;
    for (const auto& m : messages) held_[m.id] = m.lease;
    if (!messages.empty() && !stopping) arm_renewal_locked();
    rescan = std::exchange(rescan_, false);
    drained_ = static_cast<int>(messages.size()) < wanted;
    idle_cv_.notify_all();
  }
  if (stopping) {
    // Received as the host stops: handed straight back rather than left leased.
    if (!messages.empty()) release(messages);
    return;
  }
  const int received = static_cast<int>(messages.size());
  if (received > 0) deliver_(std::move(messages));
  if (received >= wanted || rescan) return pump();  // there may be more
  // Drained: sleep until the next delayed message is due, a commit wakes us, or max_wait.
  // The due time is a store read: on the owner's thread, never the writer's (this one).
  thread_->post([self = shared_from_this()] { self->sleep_until_due(); });
}

void LeasedFeed::sleep_until_due() {
  TimePoint at = clock_.now() + options_.max_wait;
  if (auto due = store_.next_due(options_.queue); due && *due > 0) {
    at = std::min(at, clock_.now() + std::chrono::milliseconds(std::max<int64_t>(*due - unix_ms(clock_), 0)));
  }
  std::lock_guard lock(mu_);
  arm_wake_locked(at);
}

void LeasedFeed::arm_wake_locked(TimePoint at) {
  if (stopping_) return;
  if (wake_timer_ != 0) timers_.cancel(wake_timer_);
  std::weak_ptr<LeasedFeed> weak = weak_from_this();
  wake_timer_ = timers_.at(at, [weak] {
    if (auto self = weak.lock()) {
      {
        std::lock_guard lock(self->mu_);
        self->wake_timer_ = 0;
      }
      self->pump();
    }
  });
}

// While anything is held, extend its leases every third of the lease.
void LeasedFeed::arm_renewal_locked() {
  if (renew_timer_ != 0 || stopping_) return;
  std::weak_ptr<LeasedFeed> weak = weak_from_this();
  const TimePoint at = clock_.now() + std::chrono::milliseconds(std::max<int64_t>(options_.lease_ms / 3, 1));
  renew_timer_ = timers_.at(at, [weak] {
    if (auto self = weak.lock()) self->renew();
  });
}

void LeasedFeed::renew() {
  std::vector<LeaseRef> refs;
  {
    std::lock_guard lock(mu_);
    renew_timer_ = 0;
    if (held_.empty()) return;
    for (const auto& [id, lease] : held_) refs.push_back({id, lease});
    arm_renewal_locked();
  }
  store_.extend(std::move(refs), options_.lease_ms, [self = shared_from_this()](Status st) {
    if (!st) {
      self->logger_.host(LogLevel::warn, "cannot extend leases",
                         {{"queue", self->options_.queue}, {"error", st.error().message}});
    }
  });
}

void LeasedFeed::forget(const std::vector<std::string>& ids, bool requeued) {
  bool look;
  {
    std::lock_guard lock(mu_);
    for (const auto& id : ids) held_.erase(id);
    look = std::exchange(starved_, false) || requeued;
    idle_cv_.notify_all();
  }
  if (look) pump();
}

void LeasedFeed::step_over(bool due_later) {
  if (due_later || !handed_off()) pump();
}

void LeasedFeed::stop() {
  std::unique_ptr<Store::ChangeWatch> offer;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    for (auto* id : {&wake_timer_, &renew_timer_}) {
      if (*id != 0) timers_.cancel(*id);
      *id = 0;
    }
    offer = std::move(offer_);
  }
  offer.reset();  // outside mu_: the store takes its lock, then ours
}

int64_t LeasedFeed::reserve() {
  std::lock_guard lock(mu_);
  // Not while a receive is under way: it may be about to find older messages (a wake-up), and
  // its batch is not counted in held_ yet.
  if (stopping_ || !drained_ || receiving_ || static_cast<int>(held_.size()) + reserved_ >= options_.capacity) return 0;
  ++reserved_;
  return options_.lease_ms;
}

bool LeasedFeed::handed_off() const {
  std::lock_guard lock(mu_);
  return handed_;
}

void LeasedFeed::claimed(std::vector<Message> messages) {
  bool stopping;
  {
    std::lock_guard lock(mu_);
    handed_ = true;
    reserved_ -= static_cast<int>(messages.size());
    stopping = stopping_;
    if (!stopping) {
      for (const auto& m : messages) held_[m.id] = m.lease;
      if (!messages.empty()) arm_renewal_locked();
    }
    idle_cv_.notify_all();
  }
  if (stopping) {  // taken as the host stops: handed straight back rather than left leased
    release(messages);
    return;
  }
  deliver_(std::move(messages));
}

void LeasedFeed::unclaimed(int n) {
  bool look;
  {
    std::lock_guard lock(mu_);
    reserved_ -= n;
    look = std::exchange(starved_, false);
    idle_cv_.notify_all();
  }
  if (look) pump();
}

bool LeasedFeed::stopping() const {
  std::lock_guard lock(mu_);
  return stopping_;
}

bool LeasedFeed::wait_idle(TimePoint until) {
  std::unique_lock lock(mu_);
  return idle_cv_.wait_until(lock, until, [&] { return held_.empty() && !receiving_ && reserved_ == 0; });
}

void LeasedFeed::release(const std::vector<Message>& messages, int64_t delay_ms) {
  Batch back;
  std::vector<std::string> ids;
  for (const auto& m : messages) {
    back.retries.push_back({{m.id, m.lease}, unix_ms(clock_) + delay_ms, m.last_error, true});
    ids.push_back(m.id);
  }
  store_.commit(std::move(back),
                [self = shared_from_this(), ids](Expected<BatchResult>) { self->forget(ids, /*requeued=*/true); });
}

}  // namespace nimbus
