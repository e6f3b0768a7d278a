#pragma once
// The metrics a scrape reads at the time it asks, rather than counts as things happen: the
// process (process_*, named as the Prometheus client libraries name them), the build, and what
// the store holds (queue depths, stream lag). All in the Prometheus text format 0.0.4.
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "core/app_spec.h"
#include "core/expected.h"

namespace nimbus {

class Store;

// CPU seconds, resident and virtual memory, open and maximum fds, threads and start time,
// from /proc/self (in memory: no disk I/O).
void process_metrics_text(std::string& out);

// Text a scrape takes as it is, made off the scrape: a scrape that finds it older than
// `max_age` hands `render` to `run` (the store's I/O threads) and answers with what it has, so
// /metrics never waits for the store (and a store that is down, or slow, costs a scrape
// nothing). One render at a time; the first scrapes after a start may find it empty.
class ScrapeCache {
 public:
  ScrapeCache(std::function<std::string()> render, std::function<void(std::function<void()>)> run,
              std::chrono::steady_clock::duration max_age);
  std::string text();

 private:
  struct State {
    std::mutex mu;
    std::string text;
    std::chrono::steady_clock::time_point at{};
    bool rendering = false;
  };
  std::function<std::string()> render_;
  std::function<void(std::function<void()>)> run_;
  std::chrono::steady_clock::duration max_age_;
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// nimbus_build_info{version="..."} 1
void build_info_text(std::string& out, std::string_view version);

// Per queue: messages ready, delayed and in flight, and dead letters; per stream partition:
// records kept and the next offset; per consumer group and partition: the lag. Reads the
// store: a store I/O thread (Store::run_blocking).
Status store_state_metrics_text(Store& store, const AppSpec& app, std::string& out);

}  // namespace nimbus
