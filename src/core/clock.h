#pragma once
// Time comes in from outside: every part that waits or stamps takes a Clock, so tests drive
// time by hand (ManualClock) and never sleep. TimerQueue holds deadlines against any Clock.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

namespace nimbus {

using Duration = std::chrono::nanoseconds;
using TimePoint = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint now() const = 0;  // monotonic: deadlines, durations
  virtual WallTime wall() const = 0;  // calendar: log stamps, CloudEvents time
};

// The clock's calendar time as Unix milliseconds / seconds (store due times, schedules).
inline int64_t unix_ms(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock.wall().time_since_epoch()).count();
}
inline int64_t unix_seconds(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::seconds>(clock.wall().time_since_epoch()).count();
}

class SystemClock final : public Clock {
 public:
  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  WallTime wall() const override { return std::chrono::system_clock::now(); }
};

// A clock that moves only when told to. Listeners hear every advance (a TimerThread uses
// this to wake up and fire what became due).
class ManualClock final : public Clock {
 public:
  ManualClock();
  TimePoint now() const override;
  WallTime wall() const override;
  void advance(Duration d);
  void on_advance(std::function<void()> listener);

 private:
  std::atomic<int64_t> offset_ns_{0};
  TimePoint start_;
  WallTime wall_start_;
  std::mutex mu_;
  std::vector<std::function<void()>> listeners_;
};

// Deadlines and their callbacks, ordered by due time. Thread-safe. take_due() hands back the
// callbacks whose time has come; the caller runs them outside the lock.
class TimerQueue {
 public:
  using Id = uint64_t;
  // *earliest (when given) says whether it is now the first due: only then does a thread
  // sleeping until the previous first need a wake().
  Id schedule(TimePoint due, std::function<void()> fn, bool* earliest = nullptr);
  bool cancel(Id id);
  std::vector<std::function<void()>> take_due(TimePoint now);
  bool next_due(TimePoint* out) const;
  size_t size() const;

 private:
  mutable std::mutex mu_;
  Id next_id_ = 1;
  std::multimap<TimePoint, Id> by_due_;
  std::map<Id, std::pair<TimePoint, std::function<void()>>> by_id_;
};

// Runs a TimerQueue on its own thread against a Clock. With a SystemClock it sleeps until the
// next due time; with a ManualClock it wakes whenever the clock is advanced.
class TimerThread {
 public:
  TimerThread(const Clock& clock, TimerQueue& queue);
  ~TimerThread();
  TimerThread(const TimerThread&) = delete;
  TimerThread& operator=(const TimerThread&) = delete;
  // Call after a manual advance, or to make the thread look at its queue again.
  void wake();
  // Call after scheduling a deadline that became the queue's first: wakes the thread only
  // when `due` comes before the moment it already means to wake at (it sleeps at most 50 ms),
  // so a deadline scheduled and cancelled per invocation costs no context switch.
  void wake_for(TimePoint due);

 private:
  void run();
  const Clock& clock_;
  TimerQueue& queue_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  uint64_t wakes_ = 0;
  // When the thread will look at its queue next; TimePoint::min() while it is awake (any new
  // deadline then gets a wake, so none slips between its look and its sleep).
  TimePoint planned_ = TimePoint::min();
  std::thread thread_;
};

// The host's timers as its parts use them: a callback at a time, with the timer thread woken
// only when that time comes before the one it sleeps until (a deadline scheduled and
// cancelled per invocation then costs no context switch). A handle: copies share the queue
// and the thread, which may be null in tests that run the queue by hand.
class Timers {
 public:
  Timers(TimerQueue& queue, TimerThread* thread) : queue_(&queue), thread_(thread) {}
  TimerQueue::Id at(TimePoint due, std::function<void()> fn);
  bool cancel(TimerQueue::Id id) const { return queue_->cancel(id); }
  TimerQueue& queue() const { return *queue_; }
  TimerThread* thread() const { return thread_; }

 private:
  TimerQueue* queue_;
  TimerThread* thread_;
};

}  // namespace nimbus
