// Feeds a queue and times how fast a cluster's hosts drain it, in two steps:
//   MODE=fill: N messages into QUEUE of the store at STORE, in commits of 1,000;
//   MODE=drain: the queue's stats every 10 ms until nothing is left (ready, delayed or in
//   flight); prints {"messages", "drain_ms" (from its own start), "processed_per_s"}.
// bench/cluster_pg.sh fills with no host running, then starts the hosts and the drain at once,
// so the rate is the hosts' processing (their start included), not the enqueue.
// Env: STORE, MODE, N (20000), QUEUE (in).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "store/store.h"

int main() {
  using namespace nimbus;
  using Steady = std::chrono::steady_clock;
  const char* url = std::getenv("STORE");
  const int n = std::getenv("N") ? std::atoi(std::getenv("N")) : 20000;
  const std::string queue = std::getenv("QUEUE") ? std::getenv("QUEUE") : "in";
  if (!url) {
    std::fprintf(stderr, "queue_feed: set STORE to a store URL\n");
    return 2;
  }
  SystemClock clock;
  auto store = open_store(url, ".", clock);
  if (!store) {
    std::fprintf(stderr, "queue_feed: %s\n", store.error().message.c_str());
    return 1;
  }
  const std::string mode = std::getenv("MODE") ? std::getenv("MODE") : "";
  if (mode != "fill" && mode != "drain") {
    std::fprintf(stderr, "queue_feed: set MODE to fill or drain\n");
    return 2;
  }
  const auto start = Steady::now();
  for (int sent = 0; mode == "fill" && sent < n;) {
    Batch b;
    for (int i = 0; i < 1000 && sent < n; ++i, ++sent) {
      NewMessage m;
      m.payload = std::to_string(sent);
      b.enqueues.push_back({queue, std::move(m)});
    }
    if (auto r = (*store)->commit_sync(std::move(b)); !r) {
      std::fprintf(stderr, "queue_feed: enqueue: %s\n", r.error().message.c_str());
      return 1;
    }
  }
  if (mode == "fill") {
    (*store)->close();
    return 0;
  }
  for (;;) {
    auto stats = (*store)->stats();
    if (!stats) {
      std::fprintf(stderr, "queue_feed: stats: %s\n", stats.error().message.c_str());
      return 1;
    }
    int64_t left = 0;
    for (const auto& q : *stats) {
      if (q.queue == queue) left = q.ready + q.delayed + q.in_flight;
    }
    if (left == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const auto drained = Steady::now();
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::printf("{\"messages\":%d,\"drain_ms\":%.1f,\"processed_per_s\":%.0f}\n", n, ms(drained - start),
              n / (ms(drained - start) / 1000.0));
  (*store)->close();
  return 0;
}
