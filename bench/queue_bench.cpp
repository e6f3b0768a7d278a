// Durable queue throughput and latency, end to end through the real parts: the SQLite store
// (default durability), the queue trigger, the function pool and a native no-op function
// (tests/functions/hello.so), the same shape as BullMQ's bench in ../shared/peers:
//   1. enqueue N messages in commits of 1,000            -> enqueue messages/s
//   2. drain them                                         -> processing messages/s
//   3. one message every 1 ms (LAT_N of them), consumer idle and waiting
//                                                         -> enqueue-to-completion p50/p99
// "Completion" is the commit of the message's ack (the moment BullMQ's 'completed' fires).
// Prints one JSON object. Env: N (100000), LAT_N (1000), BATCH_SIZE (256), CONCURRENCY (256), STORE
// (a store URL; default the embedded store in a temporary folder).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "triggers/kind.h"
#include "triggers/queue/queue_spec.h"
#include "core/ids.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "pool/function_pools.h"
#include "pool/worker_threads.h"
#include "runtime/native/native_runtime.h"
#include "store/store.h"
#include "triggers/dispatch/dispatcher.h"
#include "forwarding_store.h"

namespace nimbus {
namespace {

using Clock_ = std::chrono::steady_clock;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

// Passes everything to the real store and notes when each ack is committed.
class TimingStore final : public ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  std::function<void(const std::vector<LeaseRef>&)> on_acked;

  void commit(Batch batch, CommitDone done) override {
    if (batch.acks.empty()) return inner_.commit(std::move(batch), std::move(done));
    auto acks = std::make_shared<std::vector<LeaseRef>>(batch.acks);
    inner_.commit(std::move(batch), [this, acks, done = std::move(done)](Expected<BatchResult> r) {
      if (r.ok() && on_acked) on_acked(*acks);
      done(std::move(r));
    });
  }
};

double ms_since(Clock_::time_point t0) { return std::chrono::duration<double, std::milli>(Clock_::now() - t0).count(); }

int run() {
  const int n = env_int("N", 100000);
  const int lat_n = env_int("LAT_N", 1000);
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() / ("nimbus-queue-bench-" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  SystemClock clock;
  // STORE: the store's URL (default: the embedded one in a temporary folder).
  const char* url = std::getenv("STORE");
  auto opened = open_store(url && *url ? url : "sqlite:state.db", dir, clock);
  if (!opened) {
    std::fprintf(stderr, "%s\n", opened.error().message.c_str());
    return 1;
  }
  Store& real = **opened;
  TimingStore store(real);

  // 1. enqueue
  auto t0 = Clock_::now();
  for (int i = 0; i < n; i += 1000) {
    Batch b;
    for (int j = i; j < std::min(n, i + 1000); ++j) {
      NewMessage m;
      m.payload = "{\"i\":" + std::to_string(j) + "}";
      b.enqueues.push_back({"bench", std::move(m)});
    }
    if (auto r = real.commit_sync(std::move(b)); !r) {
      std::fprintf(stderr, "enqueue: %s\n", r.error().message.c_str());
      return 1;
    }
  }
  double enqueue_ms = ms_since(t0);

  // 2. drain through the trigger and a native no-op function
  AppSpec app;
  app.name = "bench";
  app.dir = dir;
  FunctionSpec fn;
  fn.name = "noop";
  fn.handler = NIMBUS_TEST_FUNCTIONS "/hello.so";
  fn.blocking = false;
  fn.concurrency = env_int("CONCURRENCY", 256);
  QueueTriggerSpec t;
  t.name = "bench";
  t.batch_size = env_int("BATCH_SIZE", 256);
  fn.triggers.push_back(make_trigger("queue", t));
  app.functions.push_back(fn);
  int devnull = ::open("/dev/null", O_WRONLY);
  LogSink sink(devnull);
  Logger logger(sink, clock, app.name);
  Metrics metrics({"noop"});
  TimerQueue timers;
  TimerThread timer_thread(clock, timers);
  WorkerThreads workers(4);
  PoolContext ctx{clock, Timers(timers, &timer_thread), workers, metrics};
  auto executor = load_native_function(fn, fn.handler, clock, logger);
  if (!executor) {
    std::fprintf(stderr, "%s\n", executor.error().message.c_str());
    return 1;
  }
  FunctionPools pools;
  pools.add(std::make_unique<FunctionPool>(fn, 0, std::move(*executor), ctx));

  std::mutex mu;
  std::condition_variable cv;
  int64_t acked = 0;
  std::map<std::string, Clock_::time_point> added;  // phase 3: message id -> before its enqueue
  std::vector<double> latencies;
  store.on_acked = [&](const std::vector<LeaseRef>& refs) {
    auto now = Clock_::now();
    std::lock_guard l(mu);
    acked += static_cast<int64_t>(refs.size());
    for (const auto& r : refs) {
      if (auto it = added.find(r.id); it != added.end()) {
        latencies.push_back(std::chrono::duration<double, std::milli>(now - it->second).count());
      }
    }
    cv.notify_all();
  };
  StoreDispatcher trigger(TriggerContext{app, pools, store, clock, Timers(timers, &timer_thread), logger});
  t0 = Clock_::now();
  if (auto st = trigger.start(); !st) {
    std::fprintf(stderr, "%s\n", st.error().message.c_str());
    return 1;
  }
  {
    std::unique_lock l(mu);
    cv.wait(l, [&] { return acked >= n; });
  }
  double drain_ms = ms_since(t0);

  // 3. latency at ~1,000 messages/s with an idle, waiting consumer
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto start = Clock_::now();
  for (int i = 0; i < lat_n; ++i) {
    std::this_thread::sleep_until(start + std::chrono::milliseconds(i));
    NewMessage m;
    m.id = new_invocation_id();
    m.payload = "{\"lat\":" + std::to_string(i) + "}";
    {
      std::lock_guard l(mu);
      added[m.id] = Clock_::now();
    }
    Batch b;
    b.enqueues.push_back({"bench", std::move(m)});
    real.commit(std::move(b), [](Expected<BatchResult>) {});
  }
  {
    std::unique_lock l(mu);
    cv.wait_for(l, std::chrono::seconds(30), [&] { return static_cast<int>(latencies.size()) >= lat_n; });
  }
  trigger.stop(std::chrono::seconds(5));
  real.close();
  sink.flush();
  ::close(devnull);
  std::sort(latencies.begin(), latencies.end());
  auto pct = [&](double p) {
    return latencies.empty() ? -1.0 : latencies[std::min(latencies.size() - 1, static_cast<std::size_t>(p / 100 * latencies.size()))];
  };
  std::printf(
      "{\"messages\":%d,\"enqueue_ms\":%.1f,\"enqueue_per_s\":%.0f,\"drain_ms\":%.1f,\"processed_per_s\":%.0f,"
      "\"batch_size\":%d,\"concurrency\":%d,\"latency_n\":%zu,\"latency_p50_ms\":%.3f,\"latency_p99_ms\":%.3f}\n",
      n, enqueue_ms, n / (enqueue_ms / 1000), drain_ms, n / (drain_ms / 1000), t.batch_size, fn.concurrency,
      latencies.size(), pct(50), pct(99));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}

}  // namespace
}  // namespace nimbus

int main() { return nimbus::run(); }
