#pragma once
// What the latency benchmarks share: settings from the environment, and an in-process function
// that notes how late each invocation started against a time its payload names.
#include <algorithm>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <vector>

#include "runtime/executor.h"

namespace nimbus::bench {

inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

// Milliseconds, added from any thread.
class LatencySamples {
 public:
  void add(double ms) {
    std::lock_guard l(mu_);
    ms_.push_back(ms);
  }
  std::size_t size() const {
    std::lock_guard l(mu_);
    return ms_.size();
  }
  std::vector<double> sorted() const {
    std::lock_guard l(mu_);
    std::vector<double> out = ms_;
    std::sort(out.begin(), out.end());
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::vector<double> ms_;
};

// The p-th percentile (0 to 100) of sorted samples; -1 when there are none.
inline double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return -1.0;
  return sorted[std::min(sorted.size() - 1, static_cast<std::size_t>(p / 100 * static_cast<double>(sorted.size())))];
}

// Runs inline (as a native `blocking: false` function) and adds lateness(invocation), taken as
// it starts, to the samples.
class StampExecutor final : public Executor {
 public:
  StampExecutor(LatencySamples& samples, std::function<double(const Invocation&)> lateness)
      : samples_(samples), lateness_(std::move(lateness)) {}
  Mode mode() const override { return Mode::synchronous; }
  Result call(const Invocation& inv) override {
    samples_.add(lateness_(inv));
    Result r;
    r.http = HttpReply{200, {}, ""};
    return r;
  }

 private:
  LatencySamples& samples_;
  std::function<double(const Invocation&)> lateness_;
};

}  // namespace nimbus::bench
