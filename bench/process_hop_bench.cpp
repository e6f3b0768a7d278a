// The per-invocation cost of the process hop: the same native hello function called in the
// host's address space, and in a worker process (isolation: process) through the worker
// protocol, one invocation at a time (c1). The difference is the hop: encoding the invoke
// frame, two socket crossings, the worker's decode and reply, the host's reader thread and
// the completion handing the result back. Run pinned to one core (`taskset -c 0`) to match
// the HTTP benchmarks, where the host and its workers share a core.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>

#include "core/app_spec.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "runtime/native/native_runtime.h"
#include "runtime/process/process_runtime.h"

namespace nimbus {
namespace {

struct Fixture {
  AppSpec app;
  FunctionSpec fn;
  SystemClock clock;
  int devnull = ::open("/dev/null", O_WRONLY);
  LogSink sink{devnull};
  Logger logger{sink, clock, "bench"};
  Metrics metrics{{"hello"}};

  Fixture() {
    app.name = "bench";
    app.dir = std::filesystem::temp_directory_path();
    fn.name = "hello";
    fn.handler = NIMBUS_TEST_FUNCTIONS "/hello.so";
    fn.isolation = Isolation::process;
    fn.min_instances = 1;
    fn.max_instances = 1;
    fn.concurrency = 1;
  }
  ~Fixture() {
    sink.flush();
    ::close(devnull);
  }
  Invocation invocation() const {
    Invocation inv = new_invocation(fn, TriggerKind::http, "/bench", "http.request", clock);
    inv.http = HttpRequest{"GET", "/hello", "", {{"Host", "127.0.0.1"}}, {}};
    return inv;
  }
};

void BM_NativeInHost(benchmark::State& state) {
  Fixture f;
  auto executor = load_native_function(f.fn, f.fn.handler, f.clock, f.logger);
  if (!executor) {
    state.SkipWithError(executor.error().message.c_str());
    return;
  }
  Invocation inv = f.invocation();
  int status = 0;
  for (auto _ : state) {
    Result r = (*executor)->call(inv);
    status = r.http ? r.http->status : 0;
    benchmark::DoNotOptimize(status);
  }
  if (status != 200) state.SkipWithError("unexpected reply");
}
BENCHMARK(BM_NativeInHost);

void BM_NativeInWorker(benchmark::State& state) {
  Fixture f;
  TimerQueue timers;
  TimerThread timer_thread(f.clock, timers);
  ProcessExecutor executor(f.fn, 0, process_options_for(f.app, f.fn, f.fn.handler), f.clock, timers, &timer_thread,
                           f.logger, f.metrics);
  if (auto st = executor.warm_up(); !st) {
    state.SkipWithError(st.error().message.c_str());
    return;
  }
  Invocation inv = f.invocation();
  std::atomic<int> status{0};
  for (auto _ : state) {
    status.store(0, std::memory_order_relaxed);
    executor.start(inv, [&status](Result&& r) {
      status.store(r.http ? r.http->status : -1, std::memory_order_release);
      status.notify_one();
    });
    status.wait(0, std::memory_order_acquire);
  }
  if (status.load() != 200) state.SkipWithError("unexpected reply");
  executor.stop(std::chrono::seconds(1));
}
BENCHMARK(BM_NativeInWorker)->UseRealTime();

}  // namespace
}  // namespace nimbus

BENCHMARK_MAIN();
