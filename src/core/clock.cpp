#include "core/clock.h"

#include "core/thread_role.h"

namespace nimbus {

ManualClock::ManualClock()
    : start_(std::chrono::steady_clock::now()), wall_start_(std::chrono::system_clock::now()) {}

TimePoint ManualClock::now() const {
  return start_ + Duration(offset_ns_.load(std::memory_order_acquire));
}

WallTime ManualClock::wall() const {
  return wall_start_ + std::chrono::duration_cast<WallTime::duration>(
                           Duration(offset_ns_.load(std::memory_order_acquire)));
}

void ManualClock::advance(Duration d) {
  offset_ns_.fetch_add(d.count(), std::memory_order_acq_rel);
  std::vector<std::function<void()>> listeners;
  {
    std::lock_guard lock(mu_);
    listeners = listeners_;
  }
  for (auto& l : listeners) l();
}

void ManualClock::on_advance(std::function<void()> listener) {
  std::lock_guard lock(mu_);
  listeners_.push_back(std::move(listener));
}

TimerQueue::Id TimerQueue::schedule(TimePoint due, std::function<void()> fn, bool* earliest) {
  std::lock_guard lock(mu_);
  Id id = next_id_++;
  auto at = by_due_.emplace(due, id);
  if (earliest) *earliest = at == by_due_.begin();
  by_id_.emplace(id, std::make_pair(due, std::move(fn)));
  return id;
}

bool TimerQueue::cancel(Id id) {
  std::lock_guard lock(mu_);
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return false;
  auto [lo, hi] = by_due_.equal_range(it->second.first);
  for (auto d = lo; d != hi; ++d) {
    if (d->second == id) {
      by_due_.erase(d);
      break;
    }
  }
  by_id_.erase(it);
  return true;
}

std::vector<std::function<void()>> TimerQueue::take_due(TimePoint now) {
  std::vector<std::function<void()>> due;
  std::lock_guard lock(mu_);
  while (!by_due_.empty() && by_due_.begin()->first <= now) {
    Id id = by_due_.begin()->second;
    by_due_.erase(by_due_.begin());
    auto it = by_id_.find(id);
    due.push_back(std::move(it->second.second));
    by_id_.erase(it);
  }
  return due;
}

bool TimerQueue::next_due(TimePoint* out) const {
  std::lock_guard lock(mu_);
  if (by_due_.empty()) return false;
  *out = by_due_.begin()->first;
  return true;
}

size_t TimerQueue::size() const {
  std::lock_guard lock(mu_);
  return by_id_.size();
}

TimerThread::TimerThread(const Clock& clock, TimerQueue& queue)
    : clock_(clock), queue_(queue), thread_([this] {
        set_thread_role(ThreadRole::timer);
        name_this_thread("timer");
        run();
      }) {}

TimerThread::~TimerThread() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void TimerThread::wake() {
  {
    std::lock_guard lock(mu_);
    ++wakes_;
  }
  cv_.notify_all();
}

void TimerThread::wake_for(TimePoint due) {
  {
    std::lock_guard lock(mu_);
    if (due >= planned_) return;
    ++wakes_;
  }
  cv_.notify_all();
}

void TimerThread::run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    uint64_t seen = wakes_;
    planned_ = TimePoint::min();
    lock.unlock();
    for (auto& fn : queue_.take_due(clock_.now())) fn();
    TimePoint next;
    bool has_next = queue_.next_due(&next);
    lock.lock();
    if (stop_ || wakes_ != seen) continue;
    if (!has_next) {
      planned_ = TimePoint::max();
      cv_.wait(lock, [&] { return stop_ || wakes_ != seen; });
    } else {
      // The clock may be manual: never sleep past a real-time bound, so a manual advance that
      // forgot to wake() is still noticed; a wake() cuts the wait short anyway.
      TimePoint now = clock_.now();
      Duration wait = next - now;
      if (wait > std::chrono::milliseconds(50)) wait = std::chrono::milliseconds(50);
      if (wait > Duration::zero()) {
        planned_ = now + wait;
        cv_.wait_for(lock, wait, [&] { return stop_ || wakes_ != seen; });
      }
    }
  }
}

TimerQueue::Id Timers::at(TimePoint due, std::function<void()> fn) {
  bool earliest = false;
  const TimerQueue::Id id = queue_->schedule(due, std::move(fn), &earliest);
  if (earliest && thread_) thread_->wake_for(due);
  return id;
}

}  // namespace nimbus
