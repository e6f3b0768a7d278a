// Timer jitter on an idle host: TIMERS schedules firing every second for SECONDS seconds
// through the real timer trigger (SQLite store, ETag-claimed due times, the function pool);
// jitter = when the function starts minus its scheduled time. Prints one JSON object.
// Env: TIMERS (20), DURATION (20 seconds).
#include <fcntl.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <date/date.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "triggers/kind.h"
#include "latency_samples.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "pool/function_pools.h"
#include "pool/worker_threads.h"
#include "store/store.h"
#include "triggers/timer/timer_trigger.h"

namespace nimbus {
namespace {

using bench::env_int;

// Started how late against the scheduled_time in its payload.
double lateness(const Invocation& inv) {
  auto started = std::chrono::system_clock::now();
  auto payload = boost::json::parse(inv.payload).as_object();
  std::istringstream in(std::string(payload["scheduled_time"].as_string()));
  date::sys_seconds due;
  in >> date::parse("%Y-%m-%dT%H:%M:%SZ", due);
  return std::chrono::duration<double, std::milli>(started - due).count();
}

int run() {
  const int timers = env_int("TIMERS", 20);
  const int seconds = env_int("DURATION", 20);
  auto dir = std::filesystem::temp_directory_path() / ("nimbus-timer-bench-" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  SystemClock clock;
  auto store = open_store("sqlite:state.db", dir, clock);
  if (!store) {
    std::fprintf(stderr, "%s\n", store.error().message.c_str());
    return 1;
  }
  AppSpec app;
  app.name = "bench";
  app.dir = dir;
  bench::LatencySamples samples;
  std::vector<std::string> names;
  for (int i = 0; i < timers; ++i) {
    FunctionSpec fn;
    fn.name = "t" + std::to_string(i);
    fn.blocking = false;
    TimerTriggerSpec t;
    t.schedule = "* * * * * *";
    fn.triggers.push_back(make_trigger("timer", t));
    app.functions.push_back(fn);
    names.push_back(fn.name);
  }
  int devnull = ::open("/dev/null", O_WRONLY);
  LogSink sink(devnull);
  Logger logger(sink, clock, app.name);
  Metrics metrics(names);
  TimerQueue queue;
  TimerThread thread(clock, queue);
  WorkerThreads workers(2);
  PoolContext ctx{clock, Timers(queue, &thread), workers, metrics};
  FunctionPools pools;
  for (int i = 0; i < timers; ++i) {
    pools.add(std::make_unique<FunctionPool>(app.functions[static_cast<std::size_t>(i)], i, std::make_unique<bench::StampExecutor>(samples, lateness), ctx));
  }
  TimerTrigger trigger(TriggerContext{app, pools, **store, clock, Timers(queue, &thread), logger});
  if (auto st = trigger.start(); !st) {
    std::fprintf(stderr, "%s\n", st.error().message.c_str());
    return 1;
  }
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  trigger.stop_taking_work();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  (*store)->close();
  sink.flush();
  ::close(devnull);
  const std::vector<double> ms = samples.sorted();
  std::printf("{\"timers\":%d,\"seconds\":%d,\"runs\":%zu,\"jitter_p50_ms\":%.3f,\"jitter_p99_ms\":%.3f,\"jitter_max_ms\":%.3f}\n",
              timers, seconds, ms.size(), bench::percentile(ms, 50), bench::percentile(ms, 99), bench::percentile(ms, 100));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return 0;
}

}  // namespace
}  // namespace nimbus

int main() { return nimbus::run(); }
