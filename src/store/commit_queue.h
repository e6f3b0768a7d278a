#pragma once
// What a backend's writer thread takes its work from: operations submitted from any thread,
// taken all at once for one transaction (group commit). Shared by the backends.
#include <condition_variable>
#include <deque>
#include <iterator>
#include <mutex>
#include <vector>

namespace nimbus {

template <class Op>
class CommitQueue {
 public:
  // Queues `op` for the writer; false (and `op` untouched) once close() has begun.
  bool push(Op& op) {
    {
      std::lock_guard lock(mu_);
      if (closed_) return false;
      pending_.push_back(std::move(op));
    }
    cv_.notify_one();
    return true;
  }
  // Waits for work and takes all of it; empty once closed and drained (the writer ends).
  std::vector<Op> take() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return closed_ || !pending_.empty(); });
    std::vector<Op> group(std::make_move_iterator(pending_.begin()), std::make_move_iterator(pending_.end()));
    pending_.clear();
    return group;
  }
  // Refuses new work; what is queued is still taken. False if it was closed already.
  bool close() {
    {
      std::lock_guard lock(mu_);
      if (closed_) return false;
      closed_ = true;
    }
    cv_.notify_all();
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Op> pending_;
  bool closed_ = false;
};

}  // namespace nimbus
