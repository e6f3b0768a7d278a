// MQTT publish -> function start latency at a steady rate, through the real parts: a Mosquitto
// broker on loopback (started here, persistence on), the MQTT trigger (the message committed to
// the SQLite store before its PUBACK), the queue trigger, the function pool and an in-process
// function (the native path). A client publishes RATE messages a second with QoS 1, each
// carrying its send time; latency = when the function starts minus that time. There is no
// peer in ../shared/peers for MQTT, so there is nothing to compare with. Prints one JSON object.
// Env: N (5000), RATE (1000 per second).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>

#include "triggers/kind.h"
#include "triggers/mqtt/mqtt_spec.h"
#include "latency_samples.h"
#include "mosquitto_broker.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "pool/function_pools.h"
#include "pool/worker_threads.h"
#include "store/store.h"
#include "triggers/mqtt/mqtt_trigger.h"
#include "triggers/dispatch/dispatcher.h"

namespace nimbus {
namespace {

using Steady = std::chrono::steady_clock;
using bench::env_int;

// The payload is the steady-clock time (nanoseconds) it was published at.
double since_published(const Invocation& inv) {
  const auto sent = std::chrono::nanoseconds(std::stoll(inv.payload));
  return std::chrono::duration<double, std::milli>(Steady::now().time_since_epoch() - sent).count();
}

int run() {
  const int n = env_int("N", 5000);
  const int rate = std::max(env_int("RATE", 1000), 1);
  auto dir = std::filesystem::temp_directory_path() / ("nimbus-mqtt-bench-" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  testing::MosquittoBroker broker(dir / "broker");
  if (!broker.start()) {
    std::fprintf(stderr, "mqtt_bench: %s\n", broker.error().c_str());
    return 1;
  }
  SystemClock clock;
  auto store = open_store("sqlite:state.db", dir, clock);
  if (!store) {
    std::fprintf(stderr, "mqtt_bench: %s\n", store.error().message.c_str());
    return 1;
  }
  AppSpec app;
  app.name = "bench";
  app.dir = dir;
  app.mqtt = MqttBrokerSpec{broker.url(), "127.0.0.1", broker.port(), "nimbus-mqtt-bench", "", "", std::chrono::seconds(30)};
  FunctionSpec fn;
  fn.name = "stamp";
  fn.blocking = false;
  MqttTriggerSpec t;
  t.filter = "bench/+/reading";
  fn.triggers.push_back(make_trigger("mqtt", t));
  app.functions.push_back(fn);

  int devnull = ::open("/dev/null", O_WRONLY);
  LogSink sink(devnull);
  Logger logger(sink, clock, app.name);
  Metrics metrics({fn.name});
  TimerQueue timers;
  TimerThread timer_thread(clock, timers);
  WorkerThreads workers(2);
  PoolContext ctx{clock, Timers(timers, &timer_thread), workers, metrics};
  FunctionPools pools;
  bench::LatencySamples samples;
  pools.add(std::make_unique<FunctionPool>(app.functions[0], 0,
                                           std::make_unique<bench::StampExecutor>(samples, since_published), ctx));
  StoreDispatcher queues(TriggerContext{app, pools, **store, clock, Timers(timers, &timer_thread), logger});
  MqttTrigger mqtt(TriggerContext{app, pools, **store, clock, Timers(timers, &timer_thread), logger});
  if (auto st = queues.start(); !st) {
    std::fprintf(stderr, "mqtt_bench: %s\n", st.error().message.c_str());
    return 1;
  }
  if (auto st = mqtt.start(); !st) {
    std::fprintf(stderr, "mqtt_bench: %s\n", st.error().message.c_str());
    return 1;
  }
  for (int i = 0; i < 500 && !mqtt.connected(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the SUBACK

  testing::MqttTestClient device(broker.port(), "bench-device");
  const auto every = std::chrono::nanoseconds(1'000'000'000LL / rate);
  auto next = Steady::now();
  for (int i = 0; i < n; ++i) {
    std::this_thread::sleep_until(next);
    next += every;
    const auto sent = std::chrono::duration_cast<std::chrono::nanoseconds>(Steady::now().time_since_epoch()).count();
    device.publish("bench/d" + std::to_string(i % 16) + "/reading", std::to_string(sent), 1);
  }
  for (int i = 0; i < 1000 && static_cast<int>(samples.size()) < n; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  mqtt.stop_taking_work();
  queues.stop(std::chrono::seconds(2));
  (*store)->close();
  sink.flush();
  ::close(devnull);
  const std::vector<double> ms = samples.sorted();
  std::printf("{\"rate_per_s\":%d,\"published\":%d,\"started\":%zu,\"latency_p50_ms\":%.3f,\"latency_p99_ms\":%.3f,"
              "\"latency_max_ms\":%.3f}\n",
              rate, n, ms.size(), bench::percentile(ms, 50), bench::percentile(ms, 99), bench::percentile(ms, 100));
  broker.stop();
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return static_cast<int>(ms.size()) == n ? 0 : 1;
}

}  // namespace
}  // namespace nimbus

int main() { return nimbus::run(); }
