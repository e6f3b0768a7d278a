#pragma once
// One thread that runs posted tasks in order: the triggers start invocations and read the
// store here, never on the store's writer or the timer thread.
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>

namespace nimbus {

class TaskThread {
 public:
  TaskThread() : thread_([s = state_] { run(s); }) {}
  ~TaskThread() { close(); }
  TaskThread(const TaskThread&) = delete;
  TaskThread& operator=(const TaskThread&) = delete;

  // Dropped once close() has begun.
  void post(std::function<void()> task) {
    {
      std::lock_guard lock(state_->mu);
      if (state_->done) return;
      state_->tasks.push_back(std::move(task));
    }
    state_->cv.notify_one();
  }
  // Returns once every task posted before the call has run.
  void drain() {
    std::promise<void> ran;
    auto f = ran.get_future();
    post([&ran] { ran.set_value(); });
    f.wait();
  }
  // Runs what was posted, then joins the thread. Called on the thread itself (a task let go of
  // the last reference to its owner), it cannot join itself: the thread finishes what was
  // posted and ends on its own (its state is its own to keep).
  void close() {
    {
      std::lock_guard lock(state_->mu);
      state_->done = true;
    }
    state_->cv.notify_one();
    if (!thread_.joinable()) return;
    if (thread_.get_id() == std::this_thread::get_id()) thread_.detach();
    else thread_.join();
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::function<void()>> tasks;
    bool done = false;
  };
  static void run(const std::shared_ptr<State>& s) {
    std::unique_lock lock(s->mu);
    for (;;) {
      s->cv.wait(lock, [&] { return s->done || !s->tasks.empty(); });
      if (s->tasks.empty()) return;
      auto task = std::move(s->tasks.front());
      s->tasks.pop_front();
      lock.unlock();
      try {
        task();
      } catch (const std::exception& e) {
        // A bug that a malformed message reached: logged, and the thread goes on with the next
        // task (the message's lease runs out and it comes again, towards its dead letter).
        std::fprintf(stderr, "nimbus: a task failed: %s\n", e.what());
      }
      task = nullptr;  // what it held (perhaps this thread's owner) goes before the lock is taken
      lock.lock();
    }
  }
  std::shared_ptr<State> state_ = std::make_shared<State>();
  std::thread thread_;  // after state_: it starts with it
};

}  // namespace nimbus
