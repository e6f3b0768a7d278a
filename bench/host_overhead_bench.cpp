// The host's own work per HTTP request, without the network: routing, the Invocation,
// the inline pool, the native call through the C ABI, metrics and the per-invocation JSON log
// line (to /dev/null through the real batching sink). The issue's budget for all of this is
// roughly 10% of a request's cost at nginx speed: well under a microsecond.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>

#include "triggers/kind.h"
#include "triggers/http/http_spec.h"
#include "core/app_spec.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "pool/function_pools.h"
#include "pool/worker_threads.h"
#include "runtime/native/native_runtime.h"
#include "triggers/http/http_trigger.h"

namespace nimbus {
namespace {

class FakeRequest final : public IncomingRequest {
 public:
  std::string_view method() const override { return "GET"; }
  std::string_view target() const override { return "/hello"; }
  std::optional<std::string_view> header(std::string_view name) const override {
    if (name == "host" || name == "Host") return std::string_view("127.0.0.1:18090");
    return std::nullopt;
  }
  void for_each_header(const std::function<void(std::string_view, std::string_view)>& fn) const override {
    fn("Host", "127.0.0.1:18090");
  }
  std::size_t header_count() const override { return 1; }
  std::string take_body() override { return {}; }
};

void BM_HttpTriggerInlineHello(benchmark::State& state) {
  AppSpec app;
  app.name = "bench";
  app.dir = std::filesystem::temp_directory_path();
  FunctionSpec fn;
  fn.name = "hello";
  fn.handler = NIMBUS_TEST_FUNCTIONS "/hello.so";
  fn.blocking = false;
  HttpTriggerSpec t;
  t.route = "/hello";
  t.methods = {"GET"};
  fn.triggers.push_back(make_trigger("http", t));
  app.functions.push_back(fn);

  SystemClock clock;
  int devnull = ::open("/dev/null", O_WRONLY);
  LogSink sink(devnull);
  Logger logger(sink, clock, app.name);
  Metrics metrics({"hello"});
  TimerQueue timers;
  WorkerThreads workers(1);
  PoolContext ctx{clock, Timers(timers, nullptr), workers, metrics};
  auto executor = load_native_function(fn, fn.handler, clock, logger);
  if (!executor) {
    state.SkipWithError(executor.error().message.c_str());
    return;
  }
  FunctionPools pools;
  pools.add(std::make_unique<FunctionPool>(fn, 0, std::move(*executor), ctx));
  EventLoops loops(1);
  HttpTrigger trigger(app, pools, FunctionKeys(), loops, logger, metrics, clock, {});
  auto reply = std::make_shared<HttpReply>();
  FakeRequest request;
  for (auto _ : state) {
    trigger.handle(request, detached_responder(reply));
    benchmark::DoNotOptimize(reply->status);
  }
  if (reply->status != 200 || reply->body != "Hello, World!") state.SkipWithError("unexpected reply");
  sink.flush();
  ::close(devnull);
}
BENCHMARK(BM_HttpTriggerInlineHello);

}  // namespace
}  // namespace nimbus

BENCHMARK_MAIN();
