#pragma once
// Leasing from one store queue, for a consumer that runs what it leases elsewhere: the
// dispatcher's consumers (dispatcher.cpp) and the orchestration steps (durable/). It receives
// only as many messages as its owner has room for, hands each batch over, renews the leases of
// everything it holds every third of the lease, sleeps when the queue is drained (until the
// next delayed message is due, a commit wakes it, or `max_wait` passes: work enqueued by
// another host), and on stop hands back what it received too late. The owner says when a
// message is done with forget() (its commit is in), which frees room: it looks for more only
// if it had no room left when it last wanted to, or when the message went back to the queue
// (a retry: its due time may be sooner than the wake-up armed). A completion does not look by
// itself: work that arrived meanwhile woke the feed already (each look is a store write).
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/clock.h"
#include "store/store.h"

namespace nimbus {

class Logger;
class TaskThread;

class LeasedFeed : public std::enable_shared_from_this<LeasedFeed>, public Store::Claimant {
 public:
  struct Options {
    std::string queue;
    int batch_size = 16;
    Duration max_wait = std::chrono::seconds(1);
    int64_t lease_ms = 30000;
    int capacity = 16;         // messages held at once, at most
    std::string owner;         // for log lines: the function
    // Takes messages commits on this host make in the queue, leased in those commits
    // (Store::offer_claims), while it has room and its last look found the queue drained (a
    // backlog is served in its order first). The platform's own hops (orchestration steps,
    // activities, entities): one lease transaction and two wake-ups fewer each.
    bool hand_off = false;
  };
  // `deliver` gets each received batch on the store's writer thread: hand it off. `thread` is
  // where the next due time is read (a store read).
  LeasedFeed(Options options, Store& store, const Clock& clock, Timers timers, Logger& logger,
             std::shared_ptr<TaskThread> thread, std::function<void(std::vector<Message>)> deliver);

  const std::string& queue() const { return options_.queue; }
  int64_t lease_ms() const { return options_.lease_ms; }
  // Leases as many as there is room for, unless a receive is already under way.
  void pump();
  // These are done (committed or handed back): room for more. `requeued`: one went back to
  // the queue (a retry, a failed commit), so look again.
  void forget(const std::vector<std::string>& ids, bool requeued = false);
  // The owner's step is over (orchestrations, entities: its commit is in, or failed). A store
  // that does not hand off is looked at now: the step's own answers are there soon. One that
  // hands off brings them in their commit, and a look would be an empty lease transaction per
  // step, unless the step put something in this queue for later (`due_later`: a durable timer,
  // a retry), which wakes nobody: the look re-arms the wake-up for it.
  void step_over(bool due_later = false);
  // Receives nothing more; timers are cancelled.
  void stop();
  bool stopping() const;
  // Until nothing is held and no receive is under way, or `until`.
  bool wait_idle(TimePoint until);
  // Hands messages back unrun (not counted as a delivery), `delay_ms` from now; forgotten then.
  void release(const std::vector<Message>& messages, int64_t delay_ms = 0);

  // Store::Claimant (Options::hand_off): the store asks for room under its own lock.
  // Whether the store has handed it a message (its store hands off: the platform's hops reach
  // it without a look).
  bool handed_off() const;
  int64_t reserve() override;
  void claimed(std::vector<Message> messages) override;
  void unclaimed(int n) override;

 private:
  void on_received(int wanted, Expected<std::vector<Message>> got);
  void sleep_until_due();
  void arm_wake_locked(TimePoint at);
  void arm_renewal_locked();
  void renew();

  Options options_;
  Store& store_;
  const Clock& clock_;
  Timers timers_;
  Logger& logger_;
  std::shared_ptr<TaskThread> thread_;
  std::function<void(std::vector<Message>)> deliver_;

  mutable std::mutex mu_;
  std::condition_variable idle_cv_;
  std::map<std::string, std::string> held_;  // message id -> lease
  bool receiving_ = false;
  bool rescan_ = false;  // a wake-up came while a receive was under way
  bool starved_ = false;  // a look was skipped for want of room: look when room is made
  bool stopping_ = false;
  bool drained_ = false;  // the last look found fewer than it wanted: no backlog known
  int reserved_ = 0;      // room promised to commits under way (hand_off)
  bool handed_ = false;   // claimed() was called
  std::unique_ptr<Store::ChangeWatch> offer_;  // hand_off: while the feed takes
  bool offered_ = false;
  TimerQueue::Id wake_timer_ = 0;
  TimerQueue::Id renew_timer_ = 0;
};

}  // namespace nimbus
