#pragma once
// Idle connections of a backend across the network, for the reads that run on the calling
// thread: one is taken for a read and given back after it (unless it broke). Shared by the
// PostgreSQL and Redis backends.
#include <memory>
#include <mutex>
#include <vector>

namespace nimbus {

template <class Conn>
class ConnectionPool {
 public:
  // An idle connection, or null when there is none (the caller makes a new one).
  std::unique_ptr<Conn> take() {
    std::lock_guard lock(mu_);
    if (idle_.empty()) return nullptr;
    auto conn = std::move(idle_.back());
    idle_.pop_back();
    return conn;
  }
  void give(std::unique_ptr<Conn> conn) {
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(conn));
  }
  void clear() {
    std::lock_guard lock(mu_);
    idle_.clear();
  }

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<Conn>> idle_;
};

}  // namespace nimbus
