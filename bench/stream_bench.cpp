// Stream throughput, end to end through the real parts: the SQLite store (default
// durability), the stream trigger, the function pool and a native no-op function
// (tests/functions/hello.so), at batch sizes 1 and 100:
//   append   N records in commits of BATCH records (at most 256 commits outstanding, as many
//            concurrent producers would have)                        -> appended records/s
//   process  a consumer group reads all N with batch_size BATCH, 4 partitions, one batch in
//            flight per partition, checkpoint committed per batch    -> processed records/s
// "Processed" means the batch's checkpoint is committed. Prints one JSON object per batch size.
// Env: N (100000; 20000 for batch size 1 processing), PARTITIONS (4).
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>
#include <random>

#include "triggers/kind.h"
#include "forwarding_store.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "pool/function_pools.h"
#include "pool/worker_threads.h"
#include "runtime/native/native_runtime.h"
#include "triggers/stream/stream_trigger.h"

namespace nimbus {
namespace {

using Steady = std::chrono::steady_clock;

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

double seconds_since(Steady::time_point t0) { return std::chrono::duration<double>(Steady::now() - t0).count(); }

// Counts records whose checkpoint has been committed.
class CheckpointCounter final : public ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  void commit(Batch batch, CommitDone done) override {
    if (batch.checkpoints.empty()) return inner_.commit(std::move(batch), std::move(done));
    auto cps = std::make_shared<std::vector<Batch::Checkpoint>>(batch.checkpoints);
    inner_.commit(std::move(batch), [this, cps, done = std::move(done)](Expected<BatchResult> r) {
      if (r.ok()) {
        std::lock_guard l(mu);
        for (const auto& c : *cps) {
          auto& at = offsets[c.partition];
          processed += c.offset - at;
          at = c.offset;
        }
        cv.notify_all();
      }
      done(std::move(r));
    });
  }
  std::mutex mu;
  std::condition_variable cv;
  std::map<int, int64_t> offsets;
  int64_t processed = 0;
};

struct Figures {
  double append_per_s = 0;
  double processed_per_s = 0;
};

Expected<Figures> measure(int batch, int records, int partitions) {
  std::random_device rd;
  auto dir = std::filesystem::temp_directory_path() / ("nimbus-stream-bench-" + std::to_string(rd()));
  std::filesystem::create_directories(dir);
  SystemClock clock;
  auto opened = open_store("sqlite:state.db", dir, clock);
  if (!opened) return opened.error();
  Store& real = **opened;
  Figures f;

  // Append: commits of `batch` records, up to 256 outstanding.
  {
    std::mutex mu;
    std::condition_variable cv;
    int outstanding = 0;
    std::string error;
    auto t0 = Steady::now();
    for (int i = 0; i < records; i += batch) {
      Batch b;
      for (int j = i; j < std::min(records, i + batch); ++j) {
        Batch::Append a;
        a.stream = "bench";
        a.partitions = partitions;
        a.key = "device-" + std::to_string(j % 1000);
        a.record.payload = "{\"i\":" + std::to_string(j) + ",\"temp\":21.5}";
        b.appends.push_back(std::move(a));
      }
      std::unique_lock l(mu);
      cv.wait(l, [&] { return outstanding < 256; });
      ++outstanding;
      l.unlock();
      real.commit(std::move(b), [&](Expected<BatchResult> r) {
        std::lock_guard g(mu);
        if (!r && error.empty()) error = r.error().message;
        --outstanding;
        cv.notify_all();
      });
    }
    std::unique_lock l(mu);
    cv.wait(l, [&] { return outstanding == 0; });
    if (!error.empty()) return Error{"append: " + error};
    f.append_per_s = records / seconds_since(t0);
  }

  // Process: one consumer group reads everything appended above.
  AppSpec app;
  app.name = "bench";
  app.dir = dir;
  app.streams.push_back(StreamSpec{"bench", partitions, {}, 0});
  FunctionSpec fn;
  fn.name = "noop";
  fn.handler = NIMBUS_TEST_FUNCTIONS "/hello.so";
  fn.blocking = false;
  fn.concurrency = 64;
  StreamTriggerSpec t;
  t.name = "bench";
  t.group = "noop";
  t.batch_size = batch;
  fn.triggers.push_back(make_trigger("stream", t));
  app.functions.push_back(fn);
  int devnull = ::open("/dev/null", O_WRONLY);
  LogSink sink(devnull);
  Logger logger(sink, clock, app.name);
  Metrics metrics({"noop"});
  TimerQueue timers;
  TimerThread timer_thread(clock, timers);
  WorkerThreads workers(2);
  PoolContext ctx{clock, Timers(timers, &timer_thread), workers, metrics};
  auto executor = load_native_function(fn, fn.handler, clock, logger);
  if (!executor) return executor.error();
  FunctionPools pools;
  pools.add(std::make_unique<FunctionPool>(fn, 0, std::move(*executor), ctx));
  CheckpointCounter store(real);
  StreamTrigger trigger(TriggerContext{app, pools, store, clock, Timers(timers, &timer_thread), logger});
  const int64_t target = records;
  auto t0 = Steady::now();
  if (auto st = trigger.start(); !st) return st.error();
  {
    std::unique_lock l(store.mu);
    store.cv.wait(l, [&] { return store.processed >= target; });
    f.processed_per_s = static_cast<double>(store.processed) / seconds_since(t0);
  }
  trigger.stop(std::chrono::seconds(5));
  real.close();
  sink.flush();
  ::close(devnull);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return f;
}

int run() {
  const int n = env_int("N", 100000);
  const int partitions = env_int("PARTITIONS", 4);
  for (int batch : {1, 100}) {
    // At batch size 1 every record is a commit of its own: fewer records keep the run short.
    const int records = batch == 1 ? std::min(n, env_int("N1", 20000)) : n;
    auto f = measure(batch, records, partitions);
    if (!f) {
      std::fprintf(stderr, "batch %d: %s\n", batch, f.error().message.c_str());
      return 1;
    }
    std::printf("{\"batch\":%d,\"records\":%d,\"partitions\":%d,\"append_per_s\":%.0f,\"processed_per_s\":%.0f}\n", batch,
                records, partitions, f->append_per_s, f->processed_per_s);
  }
  return 0;
}

}  // namespace
}  // namespace nimbus

int main() { return nimbus::run(); }
