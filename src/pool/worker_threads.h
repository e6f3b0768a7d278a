#pragma once
// A fixed set of threads for in-process functions that may block, so slow code never stalls
// an event loop. Bounded: the pools in front of it bound how much work is queued here.
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace nimbus {

class WorkerThreads {
 public:
  explicit WorkerThreads(int threads);
  ~WorkerThreads();  // runs what was queued, then joins
  WorkerThreads(const WorkerThreads&) = delete;
  WorkerThreads& operator=(const WorkerThreads&) = delete;
  void post(std::function<void()> task);

 private:
  void run();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace nimbus
