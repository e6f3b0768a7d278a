// No thread of the host's waits on a worker or on the store: a worker that writes 100,000
// outputs, one that stops reading its input, a store that answers slowly, and a shutdown past
// its grace period leave the routes that do not involve them answering at once.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <fstream>
#include <future>
#include <gtest/gtest.h>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace nimbus::testing {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::string lib(const std::string& name) { return test_function(name).string(); }

// How long GET /hello may take while the host is loaded: 250 ms, which a shared CI machine
// running two test binaries at once can still reach now and then for a hello that did not wait
// on anything. An ASan build runs the host several times slower, so there the bound is 500 ms.
// A blocked loop (a worker it waits on, an injected store read, a batch of 100,000 built in
// place) waits for seconds, well above either. The injected store latency stays well above the
// bound in either build.
#ifdef NIMBUS_SANITIZED_BUILD
constexpr int64_t kHelloBoundMs = 500;
constexpr int64_t kStoreLatencyMs = 1000;
#else
constexpr int64_t kHelloBoundMs = 250;
constexpr int64_t kStoreLatencyMs = 600;
#endif

int64_t ms_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

// GET /hello over and over until `done` is ready; returns the slowest answer's latency in ms
// (and fails the test on any answer that is not 200).
template <class Future>
int64_t probe_hello_until(int port, Future& done, std::chrono::seconds bound) {
  int64_t worst = 0;
  auto give_up = Clock::now() + bound;
  int probes = 0;
  while (done.wait_for(10ms) != std::future_status::ready && Clock::now() < give_up) {
    auto t0 = Clock::now();
    Response r = request(port, "GET", "/hello");
    worst = std::max(worst, ms_since(t0));
    EXPECT_EQ(r.status, 200) << r.body;
    ++probes;
  }
  EXPECT_GT(probes, 3) << "too few probes to say anything";
  return worst;
}

int64_t queue_ready(int admin_port, const std::string& token, const std::string& queue) {
  Response r = request(admin_port, "GET", "/admin/queues", {{"authorization", "Bearer " + token}});
  boost::system::error_code ec;
  auto v = json::parse(r.body, ec);
  if (ec || !v.is_object()) return -1;
  for (const auto& q : v.as_object().at("queues").as_array()) {
    if (q.as_object().at("queue").as_string() == queue) return q.as_object().at("ready").as_int64();
  }
  return 0;
}

// ---- 100,000 outputs from one invocation --------------------------------------------------

struct Emitter {
  const char* name;
  std::string keys;  // the function's manifest keys (indented by 4)
};

void PrintTo(const Emitter& e, std::ostream* out) { *out << e.name; }

class HundredThousandOutputs : public ::testing::TestWithParam<Emitter> {};

// The fault this guards against: the host answered each output with a reply frame, written
// blocking from the event loop, while a sync worker wrote outputs and read nothing; both
// pipes filled and worker and loop waited on each other for ever.
TEST_P(HundredThousandOutputs, OneInvocationCompletesWhileHelloKeepsAnswering) {
  constexpr int kOutputs = 100'000;
  TempDir dir;
  dir.write("nimbus.yaml", "name: flood\nfunctions:\n"
                           "  hello:\n    runtime: native\n    handler: " + lib("hello") +
                           "\n    triggers: [{http: {route: /hello, methods: [GET]}}]\n"
                           "  emit:\n" + GetParam().keys +
                           "    timeout: 90s\n    max_instances: 1\n"
                           "    triggers: [{http: {route: /emit}}]\n    outputs: {out: {queue: work}}\n");
  dir.write("app.py",
            "def emit(req, ctx):\n"
            "    n = int(req.query.get('n', '0'))\n"
            "    for i in range(n):\n"
            "        ctx.output('out', str(i))\n"
            "    return str(n)\n"
            "async def emit_async(req, ctx):\n"
            "    return emit(req, ctx)\n");
  dir.write("app.js",
            "exports.emit = async (req, ctx) => {\n"
            "  const n = Number(req.query.n || 0);\n"
            "  for (let i = 0; i < n; i++) ctx.output('out', String(i));\n"
            "  return String(n);\n"
            "};\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  // Warm: the worker is started, and the route works.
  Response warm = request(host.http_port(), "GET", "/emit?n=3");
  ASSERT_EQ(warm.status, 200) << warm.body << host.output();
  ASSERT_EQ(request(host.http_port(), "GET", "/hello").status, 200);

  auto t0 = Clock::now();
  auto flood = std::async(std::launch::async, [&] {
    // (Its own timeout is 90 s: a loaded, sanitized build takes more than a request's usual 10 s.)
    return request(host.http_port(), "GET", "/emit?n=" + std::to_string(kOutputs), {}, "", 100'000);
  });
  int64_t worst = probe_hello_until(host.http_port(), flood, 120s);
  ASSERT_EQ(flood.wait_for(0s), std::future_status::ready) << "the invocation never answered";
  Response r = flood.get();
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, std::to_string(kOutputs));
  EXPECT_LT(ms_since(t0), 90'000) << "over its timeout";
  EXPECT_LT(worst, kHelloBoundMs) << "GET /hello waited " << worst << " ms while the outputs were written";
  // Every output was committed (with the 3 of the warm-up).
  EXPECT_EQ(queue_ready(host.admin_port(), host.admin_token(), "work"), kOutputs + 3);
}

INSTANTIATE_TEST_SUITE_P(
    NeverBlocks, HundredThousandOutputs,
    ::testing::Values(Emitter{"PythonSync", "    runtime: python\n    handler: app.py:emit\n"},
                      Emitter{"PythonAsync", "    runtime: python\n    handler: app.py:emit_async\n"},
                      Emitter{"Node", "    runtime: node\n    handler: app.js:emit\n"},
                      Emitter{"NativeIsolated", "    runtime: native\n    handler: " + lib("emitter") +
                                                    "\n    isolation: process\n"}),
    [](const ::testing::TestParamInfo<Emitter>& info) { return std::string(info.param.name); });

// ---- a worker that stops reading ----------------------------------------------------------

const char* kDeaf = R"PY(
import os, time
def deaf(req, ctx):
    # A sync worker reads nothing while its handler runs: this one never returns.
    open("deaf.pid", "w").write(str(os.getpid()))
    time.sleep(120)
    return "never"
)PY";

std::string deaf_app(const std::string& top = "") {
  return "name: deaf\n" + top + "functions:\n"
         "  hello:\n    runtime: native\n    handler: " + lib("hello") +
         "\n    triggers: [{http: {route: /hello, methods: [GET]}}]\n"
         "  deaf:\n    runtime: python\n    handler: app.py:deaf\n    timeout: 2s\n"
         "    max_instances: 1\n    concurrency: 8\n    triggers: [{http: {route: /deaf}}]\n";
}

pid_t read_pid(const std::filesystem::path& file) {
  for (int i = 0; i < 2000; ++i) {
    std::ifstream in(file);
    pid_t pid = 0;
    if (in >> pid && pid > 0) return pid;
    std::this_thread::sleep_for(5ms);
  }
  return -1;
}

// Gone: no such process, or a zombie (a worker whose host exited is reaped by whoever
// inherits it, which in a container may be nobody).
bool dead(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

bool gone_within(pid_t pid, std::chrono::milliseconds bound) {
  auto until = Clock::now() + bound;
  while (Clock::now() < until) {
    if (dead(pid)) return true;
    std::this_thread::sleep_for(5ms);
  }
  return dead(pid);
}

// Invocations sent to a worker that reads nothing wait in its outbox (8 x 512 KiB: far more
// than its pipe holds): the event loop that sent them goes on serving, every caller hears 504
// at the deadline, and the worker is killed.
TEST(NeverBlocks, AWorkerThatStopsReadingIsKilledAtItsDeadline) {
  TempDir dir;
  dir.write("nimbus.yaml", deaf_app());
  dir.write("app.py", kDeaf);
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  ASSERT_EQ(request(host.http_port(), "GET", "/hello").status, 200);
  std::vector<std::future<Response>> calls;
  calls.push_back(std::async(std::launch::async, [&] { return request(host.http_port(), "POST", "/deaf", {}, "first"); }));
  const pid_t worker = read_pid(dir.path() / "deaf.pid");
  ASSERT_GT(worker, 0) << host.output();
  auto t0 = Clock::now();
  const std::string big(512 * 1024, 'b');
  for (int i = 0; i < 7; ++i) {
    calls.push_back(std::async(std::launch::async, [&] { return request(host.http_port(), "POST", "/deaf", {}, big); }));
  }
  int64_t worst = probe_hello_until(host.http_port(), calls.back(), 20s);
  for (std::size_t i = 0; i < calls.size(); ++i) {
    ASSERT_EQ(calls[i].wait_for(10s), std::future_status::ready);
    Response r = calls[i].get();
    if (i == 0) {
      EXPECT_EQ(r.status, 504) << r.body;  // the one over its timeout
    } else {
      // Behind it in the worker's input: a timeout too, or the worker's end (it was killed for
      // the first), each said plainly.
      EXPECT_TRUE(r.status == 504 || r.status == 502) << r.status << " " << r.body;
      EXPECT_TRUE(r.body.find("\"timeout\"") != std::string::npos || r.body.find("\"worker_failed\"") != std::string::npos)
          << r.body;
    }
  }
  EXPECT_LT(ms_since(t0), 4000) << "the callers waited past the 2 s deadline";
  EXPECT_LT(worst, kHelloBoundMs) << "GET /hello waited " << worst << " ms behind a worker that does not read";
  EXPECT_TRUE(gone_within(worker, 3s)) << "the worker was not killed";
  EXPECT_TRUE(host.wait_for_output("overran a deadline")) << host.output();
}

// ---- shutdown -----------------------------------------------------------------------------

// Past shutdown_grace the host is gone within a second, and so are its workers (this one
// does not even read the shutdown frame).
TEST(NeverBlocks, PastItsGraceTheHostExitsWithinASecondAndKillsItsWorkers) {
  TempDir dir;
  dir.write("nimbus.yaml", deaf_app("shutdown_grace: 500ms\n"));
  dir.write("app.py", kDeaf);
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  auto call = std::async(std::launch::async, [&] { return request(host.http_port(), "POST", "/deaf", {}, "x"); });
  const pid_t worker = read_pid(dir.path() / "deaf.pid");
  ASSERT_GT(worker, 0) << host.output();
  auto t0 = Clock::now();
  ::kill(host.pid(), SIGTERM);
  host.wait_exit();
  EXPECT_LT(ms_since(t0), 1500) << "500 ms of grace, then a second at most";
  EXPECT_TRUE(gone_within(worker, 1s)) << "the worker outlived its host";
  call.wait_for(10s);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// ---- a slow store ------------------------------------------------------------------------

// Every store read and write 200 ms slower (the host's fault injection), and a load that uses
// the store from every side: async job status reads, admin reads (queues, timers, streams),
// state reads by a worker, queue messages, a timer every second. GET /hello uses none of it,
// and answers as fast as ever: no event loop waits on the store.
TEST(NeverBlocks, ASlowStoreLeavesRoutesThatDoNotUseItUnaffected) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: slow\nfunctions:\n"
            "  hello:\n    runtime: native\n    handler: " + lib("hello") +
            "\n    triggers: [{http: {route: /hello, methods: [GET]}}]\n"
            "  job:\n    runtime: native\n    handler: " + lib("echo") +
            "\n    triggers: [{http: {route: /job, methods: [POST], async: true}}]\n"
            "  tick:\n    runtime: native\n    handler: " + lib("hello") +
            "\n    triggers: [{timer: {schedule: \"* * * * * *\"}}]\n"
            "  relay:\n    runtime: native\n    handler: " + lib("relay") +
            "\n    triggers: [{queue: {name: in}}]\n    outputs: {next: {queue: out}}\n"
            "  reader:\n    runtime: python\n    handler: app.py:read\n"
            "    triggers: [{http: {route: /read}}]\n");
  dir.write("app.py",
            "def read(req, ctx):\n"
            "    return 'found' if ctx.state_get('docs', 'a') else 'none'\n");
  Host host(dir.path(), {"--inject-store-latency", std::to_string(kStoreLatencyMs) + "ms"});
  ASSERT_TRUE(host.started()) << host.errors();
  ASSERT_NE(host.errors().find("fault injection"), std::string::npos) << host.errors();
  const std::string auth = "Bearer " + host.admin_token();
  // The store really is slow: a job's status is a read.
  Response accepted = request(host.http_port(), "POST", "/job", {}, "x");
  ASSERT_EQ(accepted.status, 202) << accepted.body;
  const std::string status_url = accepted.header("location");
  auto t0 = Clock::now();
  EXPECT_EQ(request(host.http_port(), "GET", status_url).status, 200);
  EXPECT_GE(ms_since(t0), kStoreLatencyMs) << "the injected latency is not there";
  ASSERT_EQ(request(host.http_port(), "GET", "/read").status, 200);  // the worker is warm

  std::atomic<bool> stop{false};
  std::atomic<int> loaded{0};
  auto load = [&](auto call) {
    return std::async(std::launch::async, [&, call] {
      while (!stop.load()) {
        call();
        ++loaded;
        std::this_thread::sleep_for(5ms);  // steady, not a CPU hog: latency here is waiting, not a busy core
      }
    });
  };
  std::vector<std::future<void>> loads;
  loads.push_back(load([&] { request(host.http_port(), "GET", status_url); }));
  loads.push_back(load([&] { request(host.admin_port(), "GET", "/admin/queues", {{"authorization", auth}}); }));
  loads.push_back(load([&] { request(host.admin_port(), "GET", "/admin/timers", {{"authorization", auth}}); }));
  loads.push_back(load([&] { request(host.http_port(), "GET", "/read"); }));
  loads.push_back(load([&] {
    request(host.admin_port(), "POST", "/admin/queues/in/messages", {{"authorization", auth}}, "m");
  }));
  std::promise<void> never;
  auto window = never.get_future();
  for (int i = 0; i < 1000 && loaded.load() < 5; ++i) std::this_thread::sleep_for(5ms);  // the load is under way
  auto probes_start = Clock::now();
  int64_t worst = probe_hello_until(host.http_port(), window, 4s);
  stop.store(true);
  for (auto& l : loads) l.wait();
  EXPECT_GE(ms_since(probes_start), 3900);
  EXPECT_GT(loaded.load(), 10) << "the load did not run";  // (each store read takes kStoreLatencyMs)
  EXPECT_LT(worst, kHelloBoundMs) << "GET /hello waited " << worst << " ms behind the slow store";
}

}  // namespace
}  // namespace nimbus::testing
