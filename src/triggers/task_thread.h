#pragma once
// One thread that runs posted tasks in order: the triggers start invocations and read the
// store here, never on the store's writer or the timer thread.
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

namespace nimbus {

class TaskThread {
 public:
  TaskThread() : thread_([this] { run(); }) {}
  ~TaskThread() { close(); }
  TaskThread(const TaskThread&) = delete;
  TaskThread& operator=(const TaskThread&) = delete;

  // Dropped once close() has begun.
  void post(std::function<void()> task) {
    {
      std::lock_guard lock(mu_);
      if (done_) return;
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }
  // Returns once every task posted before the call has run.
  void drain() {
    std::promise<void> ran;
    auto f = ran.get_future();
    post([&ran] { ran.set_value(); });
    f.wait();
  }
  // Runs what was posted, then joins the thread.
  void close() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return done_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      try {
        task();
      } catch (const std::exception& e) {
        // A bug that a malformed message reached: logged, and the thread goes on with the next
        // task (the message's lease runs out and it comes again, towards its dead letter).
        std::fprintf(stderr, "nimbus: a task failed: %s\n", e.what());
      }
      lock.lock();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace nimbus
