// The per-invocation cost of the process hop: the same native hello function called in the
// host's address space, and in a worker process (isolation: process) through the worker
// protocol, one invocation at a time (c1). The difference is the hop: encoding the invoke
// frame, two pipe crossings, the worker's decode and reply, the host's read and the
// completion handing the result back. Run pinned to one core (`taskset -c 0`) to match
// the HTTP benchmarks, where the host and its workers share a core.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <filesystem>

#include "core/app_spec.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "runtime/native/native_runtime.h"
#include "pool/fleet.h"
#include "runtime/process/frames_transport.h"
#include "triggers/http/server.h"

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
  InstanceFleet executor(f.fn, 0, fleet_options_for(f.fn),
                         std::make_unique<FramesTransport>(f.fn, worker_launch_for(f.app, f.fn, f.fn.handler), f.logger),
                         f.clock, Timers(timers, &timer_thread), f.logger, f.metrics);
  if (auto st = executor.warm_up(); !st) {
    state.SkipWithError(st.error().message.c_str());
    return;
  }
  Invocation inv = f.invocation();
  // The caller sleeps until the completion wakes it, as an event loop does (a futex, not a
  // spin: std::atomic::wait yields in a loop first, which on one core is a context switch
  // of its own to whoever else is runnable).
  std::mutex mu;
  std::condition_variable cv;
  int status = 0;
  bool done = false;
  for (auto _ : state) {
    executor.start(inv, [&](Result&& r) {
      std::lock_guard lock(mu);
      status = r.http ? r.http->status : -1;
      done = true;
      cv.notify_one();
    });
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return done; });
    done = false;
  }
  if (status != 200) state.SkipWithError("unexpected reply");
  executor.stop(std::chrono::seconds(1));
}
BENCHMARK(BM_NativeInWorker)->UseRealTime();

// As the host runs it: the caller is an event loop, and the worker's socket is read on that
// loop (no reader thread), so a reply wakes the loop directly. Each benchmark iteration is a
// chain of kChain invocations, each started by the previous one's completion on the loop;
// `per_invocation` is the figure to read.
void BM_NativeInWorkerOnLoop(benchmark::State& state) {
  constexpr int kChain = 1000;
  Fixture f;
  TimerQueue timers;
  TimerThread timer_thread(f.clock, timers);
  EventLoops loops(1);
  loops.start();
  auto executor = std::make_unique<InstanceFleet>(
      f.fn, 0, fleet_options_for(f.fn),
      std::make_unique<FramesTransport>(f.fn, worker_launch_for(f.app, f.fn, f.fn.handler), f.logger, nullptr,
                                        std::vector<Reactor*>{&loops.reactor(0)}),
      f.clock, Timers(timers, &timer_thread), f.logger, f.metrics);
  if (auto st = executor->warm_up(); !st) {
    state.SkipWithError(st.error().message.c_str());
    return;
  }
  Invocation inv = f.invocation();
  std::mutex mu;
  std::condition_variable cv;
  int left = 0;
  int status = 200;
  std::function<void()> next = [&] {
    executor->start(inv, [&](Result&& r) {
      int s = r.http ? r.http->status : -1;
      std::lock_guard lock(mu);
      if (s != 200) status = s;
      if (--left > 0 && status == 200) {
        next();
      } else {
        left = 0;
        cv.notify_one();
      }
    });
  };
  for (auto _ : state) {
    {
      std::lock_guard lock(mu);
      left = kChain;
    }
    loops.post(0, next);
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return left == 0; });
  }
  if (status != 200) state.SkipWithError("unexpected reply");
  state.counters["per_invocation"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * kChain,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  executor->stop(std::chrono::seconds(1));
  executor.reset();
  loops.drain();
}
BENCHMARK(BM_NativeInWorkerOnLoop)->UseRealTime();

// The machine's floor for a hop: two processes on one core passing 300 bytes back and forth,
// doing nothing else (two context switches, a write and a read on each side). Over pipes (what
// workers use) and over a socket pair (what they used before). What the hop costs above the
// pipe floor is ours.
void ping_pong(benchmark::State& state, int to_child_r, int to_child_w, int from_child_r, int from_child_w) {
  constexpr std::size_t kSize = 300;
  pid_t child = ::fork();
  if (child == 0) {
    ::close(to_child_w);
    ::close(from_child_r);
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(to_child_r, buf, sizeof buf);
      if (n <= 0) ::_exit(0);
      for (ssize_t off = 0; off < n;) {
        ssize_t w = ::write(from_child_w, buf + off, static_cast<std::size_t>(n - off));
        if (w <= 0) ::_exit(0);
        off += w;
      }
    }
  }
  if (to_child_r != from_child_w) ::close(to_child_r);
  ::close(from_child_w);
  char buf[kSize] = {};
  for (auto _ : state) {
    if (::write(to_child_w, buf, kSize) != static_cast<ssize_t>(kSize)) break;
    for (std::size_t got = 0; got < kSize;) {
      ssize_t n = ::read(from_child_r, buf + got, kSize - got);
      if (n <= 0) {
        state.SkipWithError("the echo process went away");
        break;
      }
      got += static_cast<std::size_t>(n);
    }
  }
  ::close(to_child_w);
  if (from_child_r != to_child_w) ::close(from_child_r);
  ::waitpid(child, nullptr, 0);
}

void BM_PipeFloor(benchmark::State& state) {
  int to[2], from[2];
  if (::pipe2(to, O_CLOEXEC) != 0 || ::pipe2(from, O_CLOEXEC) != 0) {
    state.SkipWithError("pipe failed");
    return;
  }
  ping_pong(state, to[0], to[1], from[0], from[1]);
}
BENCHMARK(BM_PipeFloor)->UseRealTime();

void BM_SocketPairFloor(benchmark::State& state) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    state.SkipWithError("socketpair failed");
    return;
  }
  ping_pong(state, sv[1], sv[0], sv[0], sv[1]);
}
BENCHMARK(BM_SocketPairFloor)->UseRealTime();

}  // namespace
}  // namespace nimbus

BENCHMARK_MAIN();
