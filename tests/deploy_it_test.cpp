// Versions and deployments end to end (deploy/): `nimbus deploy` to a running host, traffic
// weights, pins, sticky users, rollback and swap under load with no failed request, a refused
// deploy that leaves the old version serving, versions kept across a restart, and queue
// consumers that switch versions (kill -9 in the middle included) losing and repeating nothing.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "it_common.h"
#include "observe/metrics.h"

namespace nimbus::testing {
namespace {

namespace fs = std::filesystem;

const char* kApp = R"(name: versions
functions:
  hello:
    runtime: python
    handler: app.py:hello
    triggers: [{http: {route: /hello}}]
  work:
    runtime: python
    handler: app.py:work
    triggers: [{queue: {name: jobs, batch_size: 16, lease: 2s}}]
    outputs: {done: {queue: done}}
)";

std::string app_code(const std::string& version) {
  return "import time\nVERSION = '" + version + R"('

def hello(req, ctx):
    return VERSION

def work(req, ctx):
    time.sleep(0.005)  # a backlog is still being worked when the host is killed
    ctx.output("done", VERSION + ":" + req.text())
)";
}

// Writes the app as version `name` into `dir`.
void write_app(const TempDir& dir, const std::string& name) {
  dir.write("nimbus.yaml", kApp);
  dir.write("app.py", app_code(name));
}

std::string hello(int port, const std::map<std::string, std::string>& headers = {}) {
  Response r = request(port, "GET", "/hello", headers);
  return r.status == 200 ? r.body : std::to_string(r.status) + " " + r.body;
}

// Requests from a few threads until stopped: how many, and every one that did not get a 200.
class Load {
 public:
  explicit Load(int port) {
    for (int t = 0; t < 3; ++t) {
      threads_.emplace_back([this, port] {
        while (!stop_.load()) {
          Response r = request(port, "GET", "/hello");
          ++count_;
          if (r.status != 200) {
            std::lock_guard lock(mu_);
            failures_.push_back(std::to_string(r.status) + " " + r.body);
          }
        }
      });
    }
  }
  ~Load() { finish(); }
  void finish() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  int count() const { return count_.load(); }
  std::vector<std::string> failures() {
    std::lock_guard lock(mu_);
    return failures_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> count_{0};
  std::mutex mu_;
  std::vector<std::string> failures_;
  std::vector<std::thread> threads_;
};


TEST(Deploy, ANewVersionTakesTrafficByWeightPinsStickyUsersRollbackAndSwapWithNoFailedRequest) {
  TempDir dir, two, bad;
  write_app(dir, "one");
  write_app(two, "two");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const int port = host.http_port();
  EXPECT_EQ(hello(port), "one");
  CommandResult none = run_nimbus({"versions"}, dir.path());
  EXPECT_EQ(none.exit_code, 0) << none.err;
  EXPECT_NE(none.out.find("nothing is deployed yet"), std::string::npos) << none.out;

  // Deployed under load: the folder becomes v1, the new code v2, and not one request fails.
  Load load(port);
  CommandResult deployed = run_nimbus({"deploy", two.path().string(), "--to", dir.path().string(), "-m", "second & last?"}, dir.path());
  ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
  EXPECT_NE(deployed.out.find("deployed v2"), std::string::npos) << deployed.out;
  EXPECT_NE(deployed.out.find("live = v2 100%"), std::string::npos) << deployed.out;
  EXPECT_EQ(hello(port), "two") << "the deploy answered before traffic moved";
  CommandResult listed = run_nimbus({"versions"}, dir.path());
  EXPECT_NE(listed.out.find("v1"), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("live:100%"), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("second & last?"), std::string::npos) << listed.out;

  // Weights: 10,000 requests split 90/10 within 2%.
  CommandResult split = run_nimbus({"traffic", "set", "live", "v1=90", "v2=10"}, dir.path());
  ASSERT_EQ(split.exit_code, 0) << split.err;
  load.finish();
  EXPECT_TRUE(load.failures().empty()) << load.failures().front();
  EXPECT_GT(load.count(), 0);
  std::map<std::string, int> seen;
  {
    std::mutex mu;
    std::vector<std::thread> clients;
    for (int c = 0; c < 4; ++c) {
      clients.emplace_back([&] {
        std::map<std::string, int> mine;
        for (int i = 0; i < 2500; ++i) ++mine[hello(port)];
        std::lock_guard lock(mu);
        for (auto& [k, n] : mine) seen[k] += n;
      });
    }
    for (auto& t : clients) t.join();
  }
  EXPECT_EQ(seen["one"] + seen["two"], 10000) << "other answers: " << seen.size();
  EXPECT_NEAR(seen["one"], 9000, 200);
  EXPECT_NEAR(seen["two"], 1000, 200);

  // A pin by header, for trying a version; one the host does not run says so.
  EXPECT_EQ(hello(port, {{"Nimbus-Version", "v2"}}), "two");
  EXPECT_EQ(hello(port, {{"Nimbus-Version", "v1"}}), "one");
  // Each invocation's log line names the version that ran it; none did before the first deploy.
  // (The log is written off the loop: the last lines may still be on their way.)
  EXPECT_TRUE(eventually([&] {
    return lines_with(host.output(), {"\"msg\":\"invocation\"", "\"version\":\"v1\""}) >= seen["one"] + 1 &&
           lines_with(host.output(), {"\"msg\":\"invocation\"", "\"version\":\"v2\""}) >= seen["two"] + 1;
  }, 10000)) << "fewer invocation lines name v1 or v2 than requests they answered";
  EXPECT_GE(lines_with(host.output(), {"\"msg\":\"invocation\"", "\"function\":\"hello\""}) -
                lines_with(host.output(), {"\"msg\":\"invocation\"", "\"version\":\"v"}), 1)
      << "the request before the first deploy names a version";
  Response unknown = request(port, "GET", "/hello", {{"Nimbus-Version", "v7"}});
  EXPECT_EQ(unknown.status, 503) << unknown.body;
  EXPECT_NE(unknown.body.find("does not run"), std::string::npos) << unknown.body;

  // Sticky: a user keeps one version; users split by the weights.
  ASSERT_EQ(run_nimbus({"traffic", "set", "live", "v1=50", "v2=50", "--sticky", "header:x-user"}, dir.path()).exit_code, 0);
  std::map<std::string, int> users;
  for (int u = 0; u < 200; ++u) {
    const std::map<std::string, std::string> h{{"x-user", "user-" + std::to_string(u)}};
    const std::string first = hello(port, h);
    for (int k = 0; k < 3; ++k) ASSERT_EQ(hello(port, h), first) << "user " << u << " moved between versions";
    ++users[first];
  }
  EXPECT_GT(users["one"], 60);
  EXPECT_GT(users["two"], 60);

  // Rollback and a blue/green swap, under load: no request fails.
  Load again(port);
  ASSERT_EQ(run_nimbus({"traffic", "set", "live", "v2"}, dir.path()).exit_code, 0);
  CommandResult back = run_nimbus({"rollback"}, dir.path());
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_NE(back.out.find("live = v1 50%, v2 50%"), std::string::npos) << back.out;
  ASSERT_EQ(run_nimbus({"traffic", "set", "live", "v1"}, dir.path()).exit_code, 0);
  ASSERT_EQ(run_nimbus({"traffic", "set", "staging", "v2"}, dir.path()).exit_code, 0);
  EXPECT_EQ(hello(port), "one");
  EXPECT_EQ(hello(port, {{"Nimbus-Version", "staging"}}), "two");
  CommandResult swapped = run_nimbus({"swap", "staging", "live"}, dir.path());
  ASSERT_EQ(swapped.exit_code, 0) << swapped.err;
  for (int i = 0; i < 20; ++i) ASSERT_EQ(hello(port), "two");
  EXPECT_EQ(hello(port, {{"Nimbus-Version", "staging"}}), "one");
  again.finish();
  EXPECT_TRUE(again.failures().empty()) << again.failures().size() << " failed, first: " << again.failures().front();
  EXPECT_GT(again.count(), 20);

  // A version that changes the triggers cannot run on this host: refused, saying what differs;
  // the old version goes on serving.
  bad.write("nimbus.yaml", std::string(kApp).replace(std::string(kApp).find("/hello"), 6, "/howdy"));
  bad.write("app.py", app_code("bad"));
  CommandResult refused = run_nimbus({"deploy", bad.path().string(), "--to", dir.path().string()}, dir.path());
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("function 'hello' changes its triggers"), std::string::npos) << refused.err;
  EXPECT_EQ(hello(port), "two");
  // And an app with problems is refused before anything is sent.
  bad.write("nimbus.yaml", "name: versions\nfunctions:\n  hello:\n    runtime: cobol\n");
  CommandResult broken = run_nimbus({"deploy", bad.path().string(), "--to", dir.path().string()}, dir.path());
  EXPECT_NE(broken.exit_code, 0);
  EXPECT_NE(broken.err.find("runtime"), std::string::npos) << broken.err;

  // Restarted from its folder (v1, which live no longer names): the folder is live again, and
  // v2 is still a version the host can be pointed at.
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  Host restarted(dir.path());
  ASSERT_TRUE(restarted.started()) << restarted.errors();
  EXPECT_EQ(hello(restarted.http_port()), "one");
  EXPECT_EQ(hello(restarted.http_port(), {{"Nimbus-Version", "staging"}}), "one");
  ASSERT_EQ(run_nimbus({"traffic", "set", "live", "v2"}, dir.path()).exit_code, 0);
  EXPECT_EQ(hello(restarted.http_port()), "two");
  EXPECT_EQ(restarted.signal_and_wait(SIGTERM), 0);
  // With --deployed, a host serves what live names, whatever its folder holds.
  Host deployed_host(dir.path(), {"--deployed"});
  ASSERT_TRUE(deployed_host.started()) << deployed_host.errors();
  EXPECT_EQ(hello(deployed_host.http_port()), "two");
  EXPECT_EQ(deployed_host.signal_and_wait(SIGTERM), 0);
}

// Queue consumers follow the alias: while 600 messages are worked through, live moves between
// two versions, and the host is killed (-9) in the middle and started again. Every message is
// handled exactly once, some by each version.
TEST(Deploy, QueueConsumersSwitchVersionsWithoutLossOrDuplicatesEvenAcrossAKill) {
  constexpr int kMessages = 600;
  TempDir dir, two;
  write_app(dir, "one");
  write_app(two, "two");
  auto host = std::make_unique<Host>(dir.path(), std::vector<std::string>{"--deployed"});
  ASSERT_TRUE(host->started()) << host->errors();
  ASSERT_EQ(run_nimbus({"deploy", two.path().string(), "--to", dir.path().string(), "--weight", "50"}, dir.path()).exit_code, 0);
  auto admin = [&] { return Admin{host->admin_port(), host->admin_token()}; };
  auto enqueue = [&](int from, int to) {
    for (int i = from; i < to; ++i) {
      Response r = admin().call("POST", "/admin/queues/jobs/messages", std::to_string(i));
      ASSERT_EQ(r.status, 201) << r.body;
    }
  };
  enqueue(0, kMessages / 3);
  ASSERT_EQ(run_nimbus({"traffic", "set", "live", "v2"}, dir.path()).exit_code, 0);
  enqueue(kMessages / 3, kMessages / 2);
  ASSERT_EQ(run_nimbus({"traffic", "set", "live", "v1=30", "v2=70"}, dir.path()).exit_code, 0);
  // Killed while it works; started again, it serves what live names (v1 and v2).
  ASSERT_EQ(host->signal_and_wait(SIGKILL), 128 + SIGKILL);
  host = std::make_unique<Host>(dir.path(), std::vector<std::string>{"--deployed"});
  ASSERT_TRUE(host->started()) << host->errors();
  enqueue(kMessages / 2, kMessages);
  ASSERT_EQ(run_nimbus({"traffic", "set", "live", "v1"}, dir.path()).exit_code, 0);
  std::vector<json::object> done;
  ASSERT_TRUE(admin().wait([&] {
    done = admin().peek("done");
    return done.size() >= static_cast<std::size_t>(kMessages) && admin().peek("jobs").empty();
  }, 60000)) << done.size() << " of " << kMessages << " done";
  std::map<std::string, int> times;
  std::map<std::string, int> by_version;
  for (const auto& m : done) {
    const std::string payload(m.at("payload").as_string());
    const auto colon = payload.find(':');
    ++times[payload.substr(colon + 1)];
    ++by_version[payload.substr(0, colon)];
  }
  EXPECT_EQ(done.size(), static_cast<std::size_t>(kMessages));
  for (int i = 0; i < kMessages; ++i) EXPECT_EQ(times[std::to_string(i)], 1) << "message " << i;
  EXPECT_GT(by_version["one"], 0);
  EXPECT_GT(by_version["two"], 0);
  // The queue's invocation lines name their version too.
  EXPECT_GT(lines_with(host->output(), {"\"trigger\":\"queue\"", "\"version\":\"v1\""}), 0) << host->output();
  EXPECT_EQ(host->signal_and_wait(SIGTERM), 0);
}

// Deploying the folder the host runs is the folder's version (nothing to load, no migration
// again); a version may add a migration function the running app does not have, which runs
// (in the version's folder, with NIMBUS_APP_DIR the host's) before the version takes traffic.
TEST(Deploy, TheFolderItselfDeploysAndAVersionMayBringAMigrationOfItsOwn) {
  TempDir dir, two;
  write_app(dir, "one");
  two.write("nimbus.yaml", std::string(kApp) + "  setup:\n    runtime: python\n    handler: app.py:setup\n    migration: true\n");
  two.write("app.py", app_code("two") + R"(
import os

def setup(req, ctx):
    with open(os.path.join(os.environ["NIMBUS_APP_DIR"], "migrated"), "w") as f:
        f.write(req.text())
    return "done"
)");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  CommandResult itself = run_nimbus({"deploy", dir.path().string()}, dir.path());
  ASSERT_EQ(itself.exit_code, 0) << itself.err << host.output();
  EXPECT_NE(itself.out.find("deployed v1"), std::string::npos) << itself.out;
  EXPECT_EQ(hello(host.http_port()), "one");
  CommandResult deployed = run_nimbus({"deploy", two.path().string(), "--to", dir.path().string()}, dir.path());
  ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
  EXPECT_EQ(hello(host.http_port()), "two");
  EXPECT_NE(dir.read("migrated").find("\"version\""), std::string::npos) << "the migration did not run in the host's folder";
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// `deploy: {canary}` in a version's manifest: a deploy moves traffic to it in steps while it
// stays healthy, and rolls itself back when its error rate or its p99 crosses the bound. Every
// step and rollback is logged, shown by `nimbus status` and in the per-version metrics.
TEST(Deploy, ACanaryStepsUpWhileHealthyAndRollsItselfBackOnErrorsOrLatency) {
  const std::string canary = std::string(kApp) +
                             "deploy:\n  canary: {steps: [20, 60, 100], interval: 1s, max_error_rate: 5%, "
                             "max_p99: 250ms, min_requests: 20}\n";
  TempDir dir, good, failing, slow;
  write_app(dir, "one");
  good.write("nimbus.yaml", canary);
  good.write("app.py", app_code("two"));
  failing.write("nimbus.yaml", canary);
  failing.write("app.py", app_code("three") + "\ndef hello(req, ctx):\n    raise RuntimeError('broken')\n");
  slow.write("nimbus.yaml", canary);
  slow.write("app.py", app_code("four") + "\ndef hello(req, ctx):\n    time.sleep(0.6)\n    return VERSION\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const int port = host.http_port();
  auto only = [&](const std::string& version) {
    for (int i = 0; i < 30; ++i) {
      if (hello(port) != version) return false;
    }
    return true;
  };

  Load load(port);
  CommandResult deployed = run_nimbus({"deploy", good.path().string(), "--to", dir.path().string()}, dir.path());
  ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
  EXPECT_NE(deployed.out.find("live = v1 80%, v2 20%"), std::string::npos) << deployed.out;
  EXPECT_TRUE(host.wait_for_output("\"canary: completed\"", 30000)) << host.output();
  EXPECT_TRUE(only("two"));
  EXPECT_NE(host.output().find("\"weight\":60"), std::string::npos) << "the 60% step was skipped";
  CommandResult status = run_nimbus({"status"}, dir.path());
  EXPECT_NE(status.out.find("version  live = v2 100%"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("canary   v2 at 100%: completed"), std::string::npos) << status.out;
  load.finish();
  EXPECT_TRUE(load.failures().empty()) << load.failures().front();

  // A version that fails: rolled back by itself to what live named before.
  Load errors(port);
  ASSERT_EQ(run_nimbus({"deploy", failing.path().string(), "--to", dir.path().string()}, dir.path()).exit_code, 0);
  EXPECT_TRUE(host.wait_for_output("rolled back: error rate", 30000)) << host.output();
  errors.finish();
  EXPECT_TRUE(only("two"));
  status = run_nimbus({"status"}, dir.path());
  EXPECT_NE(status.out.find("canary   v3 at 20%: rolled back: error rate"), std::string::npos) << status.out;
  Response metrics = request(host.admin_port(), "GET", "/metrics");
  EXPECT_EQ(check_prometheus_text(metrics.body), "") << metrics.body;
  EXPECT_NE(metrics.body.find("nimbus_version_invocations_total{function=\"hello\",version=\"v3\",result=\"error\"} "),
            std::string::npos) << metrics.body;
  EXPECT_NE(metrics.body.find("nimbus_version_weight{alias=\"live\",version=\"v2\"} 100"), std::string::npos) << metrics.body;

  // A version that is slow: rolled back on its p99.
  Load latency(port);
  ASSERT_EQ(run_nimbus({"deploy", slow.path().string(), "--to", dir.path().string()}, dir.path()).exit_code, 0);
  EXPECT_TRUE(host.wait_for_output("rolled back: p99 above", 90000)) << host.output();
  latency.finish();
  EXPECT_TRUE(latency.failures().empty()) << latency.failures().front();
  EXPECT_TRUE(only("two"));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// versioning: {on_mismatch: keep_old}: an instance that started on one version's orchestrator
// finishes on that code after a deploy changed it, while a new instance runs the new code; and
// after a restart that leaves only the newest version named, the host loads the old one back
// for the instance that needs it.
TEST(Deploy, OrchestrationsInFlightKeepTheCodeTheyStartedOn) {
  auto app = [](const std::string& tag) {
    return std::pair<std::string, std::string>{
        "name: flows\nfunctions:\n  flow:\n    runtime: python\n    handler: orch.py:flow\n"
        "    triggers: [{orchestration: {auth: anonymous, versioning: {on_mismatch: keep_old}}}]\n",
        "from nimbus import durable\n\nTAG = '" + tag + "'\n\n@durable.orchestrator\ndef flow(ctx):\n"
        "    yield ctx.wait_for_external_event('go')\n    return TAG\n"};
  };
  TempDir dir, two, three;
  for (auto [d, tag] : {std::pair{&dir, "one"}, {&two, "two"}, {&three, "three"}}) {
    auto [manifest, code] = app(tag);
    d->write("nimbus.yaml", manifest);
    d->write("orch.py", code);
  }
  auto host = std::make_unique<Host>(dir.path(), std::vector<std::string>{"--deployed"});
  ASSERT_TRUE(host->started()) << host->errors();
  auto start = [&](const std::string& id) {
    return request(host->http_port(), "POST", "/_nimbus/orchestrations/flow?instance=" + id, {}, "").status;
  };
  auto go = [&](const std::string& id) {
    return request(host->http_port(), "POST", "/_nimbus/orchestrations/flow/instances/" + id + "/events/go", {}, "{}").status;
  };
  auto output = [&](const std::string& id) -> std::string {
    Response r = request(host->http_port(), "GET", "/_nimbus/orchestrations/flow/instances/" + id);
    if (r.status != 200) return "";
    auto o = json::parse(r.body).as_object();
    return o.if_contains("output") && o.at("output").is_string() ? std::string(o.at("output").as_string()) : json::serialize(o);
  };
  auto waiting = [&](const std::string& id) {
    return eventually([&] {
      Response r = request(host->http_port(), "GET", "/_nimbus/orchestrations/flow/instances/" + id);
      return r.status == 202 && r.body.find("\"Running\"") != std::string::npos;
    });
  };
  // v2 deployed; instance a starts on it and waits.
  ASSERT_EQ(run_nimbus({"deploy", two.path().string(), "--to", dir.path().string()}, dir.path()).exit_code, 0);
  ASSERT_EQ(start("a"), 202);
  ASSERT_TRUE(waiting("a"));
  // v3 deployed: a new instance b runs v3; a, raised now, finishes on v2's code.
  ASSERT_EQ(run_nimbus({"deploy", three.path().string(), "--to", dir.path().string()}, dir.path()).exit_code, 0);
  ASSERT_EQ(start("b"), 202);
  ASSERT_TRUE(waiting("b"));
  ASSERT_EQ(start("c"), 202);  // waits across the restart below
  ASSERT_TRUE(waiting("c"));
  ASSERT_EQ(go("a"), 202);
  ASSERT_EQ(go("b"), 202);
  EXPECT_TRUE(eventually([&] { return output("a") == "two"; })) << output("a");
  EXPECT_TRUE(eventually([&] { return output("b") == "three"; })) << output("b");
  // Instance d starts on v3 too; then live goes back to v2, and the host restarts serving what
  // is deployed: only v2 is named, so d's v3 is loaded back when d's next step comes.
  ASSERT_EQ(start("d"), 202);
  ASSERT_TRUE(waiting("d"));
  ASSERT_EQ(run_nimbus({"traffic", "set", "live", "v2"}, dir.path()).exit_code, 0);
  EXPECT_EQ(host->signal_and_wait(SIGTERM), 0);
  host = std::make_unique<Host>(dir.path(), std::vector<std::string>{"--deployed"});
  ASSERT_TRUE(host->started()) << host->errors();
  ASSERT_EQ(go("c"), 202);
  ASSERT_EQ(go("d"), 202);
  EXPECT_TRUE(eventually([&] { return output("c") == "three"; }, 20000)) << output("c") << host->output();
  EXPECT_TRUE(eventually([&] { return output("d") == "three"; }, 20000)) << output("d");
  EXPECT_TRUE(host->wait_for_output("loaded for the orchestrations that started on it"));
  ASSERT_EQ(start("e"), 202);  // live is v2 now
  ASSERT_TRUE(waiting("e"));
  ASSERT_EQ(go("e"), 202);
  EXPECT_TRUE(eventually([&] { return output("e") == "two"; })) << output("e");
  EXPECT_EQ(host->signal_and_wait(SIGTERM), 0);
}

// keep_old, when the code an instance started on will not load here (the host was restarted
// from a folder whose triggers differ from that version's, so the version cannot be loaded
// beside it): the step waits, warned once with the reason, retried later each time (not every
// second with an error each time); once the host runs from a folder that can load it again,
// the instance finishes on its own code.
TEST(Deploy, AnInstanceWhoseCodeWillNotLoadWaitsWithoutAnErrorEverySecond) {
  const std::string manifest =
      "name: flows\nfunctions:\n  flow:\n    runtime: python\n    handler: orch.py:flow\n"
      "    triggers: [{orchestration: {auth: anonymous, versioning: {on_mismatch: keep_old}}}]\n";
  const std::string extra_trigger = "  ping:\n    runtime: python\n    handler: orch.py:ping\n"
                                    "    triggers: [{http: {route: /ping}}]\n";
  auto code = [](const std::string& tag) {
    return "from nimbus import durable\n\nTAG = '" + tag + "'\n\n@durable.orchestrator\ndef flow(ctx):\n"
           "    yield ctx.wait_for_external_event('go')\n    return TAG\n\ndef ping(req, ctx):\n    return 'pong'\n";
  };
  TempDir dir, two;
  dir.write("nimbus.yaml", manifest);
  dir.write("orch.py", code("one"));
  two.write("nimbus.yaml", manifest);
  two.write("orch.py", code("two"));
  auto host = std::make_unique<Host>(dir.path());
  ASSERT_TRUE(host->started()) << host->errors();
  auto status = [&](const std::string& id) {
    Response r = request(host->http_port(), "GET", "/_nimbus/orchestrations/flow/instances/" + id);
    return r.status == 200 || r.status == 202 ? json::parse(r.body).as_object() : json::object{};
  };
  ASSERT_EQ(run_nimbus({"deploy", two.path().string(), "--to", dir.path().string()}, dir.path()).exit_code, 0);
  ASSERT_EQ(request(host->http_port(), "POST", "/_nimbus/orchestrations/flow?instance=a", {}, "").status, 202);
  ASSERT_TRUE(eventually([&] {
    auto o = status("a");
    return o.if_contains("runtimeStatus") && o.at("runtimeStatus").as_string() == "Running";
  }));
  EXPECT_EQ(host->signal_and_wait(SIGTERM), 0);
  // The folder gains a trigger: v2 (without it) cannot be loaded beside it.
  dir.write("nimbus.yaml", manifest + extra_trigger);
  host = std::make_unique<Host>(dir.path());
  ASSERT_TRUE(host->started()) << host->errors();
  ASSERT_EQ(request(host->http_port(), "POST", "/_nimbus/orchestrations/flow/instances/a/events/go", {}, "{}").status, 202);
  ASSERT_TRUE(host->wait_for_output("waits for the code its instance started on", 10000)) << host->output();
  // Over the next 4.5 s a retry every second would have said so 4 more times.
  std::this_thread::sleep_for(std::chrono::milliseconds(4500));
  const std::string out = host->output();
  EXPECT_EQ(lines_with(out, {"waits for the code its instance started on"}), 1) << out;
  EXPECT_EQ(lines_with(out, {"cannot run an orchestration step"}), 0) << out;
  EXPECT_NE(out.find("cannot be loaded"), std::string::npos) << "the version's load failure names why\n" << out;
  EXPECT_EQ(status("a").at("runtimeStatus").as_string(), "Running");
  EXPECT_EQ(host->signal_and_wait(SIGTERM), 0);
  // Back to a folder v2 can be loaded beside: the instance finishes on v2's code.
  dir.write("nimbus.yaml", manifest);
  host = std::make_unique<Host>(dir.path());
  ASSERT_TRUE(host->started()) << host->errors();
  EXPECT_TRUE(eventually([&] {
    auto o = status("a");
    return o.if_contains("output") && o.at("output").is_string() && o.at("output").as_string() == "two";
  }, 90000)) << json::serialize(status("a")) << host->output();
  EXPECT_EQ(host->signal_and_wait(SIGTERM), 0);
}

// A canary stops when its alias is changed by hand (the hand wins); a migration that fails at a
// start keeps the host from starting, saying which and why.
TEST(Deploy, AHandOnTheAliasStopsACanaryAndAFailedMigrationStopsAStart) {
  TempDir dir, good, broken;
  write_app(dir, "one");
  good.write("nimbus.yaml", std::string(kApp) + "deploy:\n  canary: {steps: [10, 100], interval: 10m, min_requests: 1}\n");
  good.write("app.py", app_code("two"));
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  CommandResult deployed = run_nimbus({"deploy", good.path().string(), "--to", dir.path().string()}, dir.path());
  ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
  EXPECT_NE(deployed.out.find("live = v1 90%, v2 10%"), std::string::npos) << deployed.out;
  ASSERT_EQ(run_nimbus({"traffic", "set", "live", "v1"}, dir.path()).exit_code, 0);
  EXPECT_TRUE(host.wait_for_output("canary: stopped: the alias was changed by hand", 15000)) << host.output();
  for (int i = 0; i < 20; ++i) ASSERT_EQ(hello(host.http_port()), "one");
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);

  broken.write("nimbus.yaml", std::string(kApp) + "  setup:\n    runtime: python\n    handler: app.py:setup\n    migration: true\n");
  broken.write("app.py", app_code("one") + "\ndef setup(req, ctx):\n    raise RuntimeError('no schema today')\n");
  Host refused(broken.path());
  EXPECT_FALSE(refused.started());
  EXPECT_NE(refused.errors().find("migration 'setup' failed"), std::string::npos) << refused.errors();
  EXPECT_NE(refused.errors().find("no schema today"), std::string::npos) << refused.errors();
}

// How many processes run with `dir` as their HOME (a Python worker of the version unpacked there).
int workers_of(const fs::path& dir) {
  const std::string needle = "HOME=" + dir.string() + std::string(1, '\0');
  int n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "environ", std::ios::binary);
    std::string env((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (env.find(needle) != std::string::npos) ++n;
  }
  return n;
}

// deploy: {unload_after}: a version no alias names any more, idle that long, is unloaded (its
// worker instances end, its metrics go, `loaded` says false), while the folder's version and
// what live names stay; named again (a rollback), it is loaded from its package and serves.
TEST(Deploy, AVersionNoAliasNamesIsUnloadedOnceIdleAndLoadedAgainWhenNamed) {
  TempDir dir, two, three;
  dir.write("nimbus.yaml", std::string(kApp) + "deploy: {unload_after: 2s}\n");
  dir.write("app.py", app_code("one"));
  write_app(two, "two");
  write_app(three, "three");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const int port = host.http_port();
  Admin admin{host.admin_port(), host.admin_token()};
  auto versions = [&] {
    std::map<std::string, json::object> out;
    Response r = admin.call("GET", "/admin/versions");
    if (r.status != 200) return out;
    const json::value body = json::parse(r.body);
    for (const auto& v : body.as_object().at("versions").as_array()) {
      out[std::string(v.as_object().at("version").as_string())] = v.as_object();
    }
    return out;
  };
  ASSERT_EQ(run_nimbus({"deploy", two.path().string(), "--to", dir.path().string()}, dir.path()).exit_code, 0);
  EXPECT_EQ(hello(port), "two");
  const fs::path v2_dir = dir.path() / ".nimbus" / "versions" / std::string(versions()["v2"].at("digest").as_string());
  EXPECT_GE(workers_of(v2_dir), 1) << "v2's worker is not found by its HOME " << v2_dir;
  ASSERT_EQ(run_nimbus({"deploy", three.path().string(), "--to", dir.path().string()}, dir.path()).exit_code, 0);
  EXPECT_EQ(hello(port), "three");
  EXPECT_TRUE(versions()["v2"].at("loaded").as_bool()) << "unloaded before it was idle for 2 s";

  ASSERT_TRUE(host.wait_for_output("\"versions: an idle version no alias names is unloaded\",\"version\":\"v2\"", 20000))
      << host.output();
  EXPECT_TRUE(eventually([&] { return workers_of(v2_dir) == 0; }, 15000)) << "v2's worker outlived its version";
  auto after = versions();
  EXPECT_FALSE(after["v2"].at("loaded").as_bool());
  EXPECT_TRUE(after["v3"].at("loaded").as_bool()) << "what live names was unloaded";
  EXPECT_TRUE(after["v1"].at("loaded").as_bool()) << "the folder's version was unloaded";
  Response metrics = request(host.admin_port(), "GET", "/metrics");
  EXPECT_EQ(metrics.body.find("version=\"v2\""), std::string::npos) << "an unloaded version's metrics stay";
  EXPECT_NE(metrics.body.find("version=\"v3\""), std::string::npos) << metrics.body;
  for (int i = 0; i < 5; ++i) EXPECT_EQ(hello(port), "three");

  // Named again: loaded from its package before live moves, and serving.
  CommandResult back = run_nimbus({"rollback"}, dir.path());
  ASSERT_EQ(back.exit_code, 0) << back.err << host.output();
  EXPECT_EQ(hello(port), "two");
  EXPECT_TRUE(versions()["v2"].at("loaded").as_bool());
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A canary is judged on every host's traffic: hosts behind a load balancer share what the
// versions they split served, and the host that took the deploy adds it up. Here only the
// other host is sent requests: the failing version is rolled back all the same, and a healthy
// one steps up to 100%.
TEST(Deploy, ACanaryIsJudgedOnTheTrafficOfEveryHostOnTheStore) {
  const std::string url = store_url("postgres");
  ASSERT_FALSE(url.empty());
  const std::string canary = on_store(kApp, url) + "deploy:\n  canary: {steps: [30, 100], interval: 1s, max_error_rate: 5%, min_requests: 20}\n";
  TempDir a, b, failing, good;
  for (const TempDir* d : {&a, &b}) {
    d->write("nimbus.yaml", on_store(kApp, url));
    d->write("app.py", app_code("one"));
  }
  failing.write("nimbus.yaml", canary);
  failing.write("app.py", app_code("two") + "\ndef hello(req, ctx):\n    raise RuntimeError('broken')\n");
  good.write("nimbus.yaml", canary);
  good.write("app.py", app_code("three"));
  Host ha(a.path(), {"--deployed"}), hb(b.path(), {"--deployed"});
  ASSERT_TRUE(ha.started() && hb.started()) << ha.errors() << hb.errors();

  {
    Load on_b(hb.http_port());  // errors only where host a does not see them
    ASSERT_EQ(run_nimbus({"deploy", failing.path().string(), "--to", a.path().string()}, a.path()).exit_code, 0);
    EXPECT_TRUE(ha.wait_for_output("rolled back: error rate", 30000)) << ha.output() << hb.output();
  }
  // Host b follows the rollback (a second later at most): only v1 answers there.
  EXPECT_TRUE(eventually([&] {
    for (int i = 0; i < 40; ++i) {
      if (hello(hb.http_port()) != "one") return false;
    }
    return true;
  }, 10000));
  {
    Load on_b(hb.http_port());
    ASSERT_EQ(run_nimbus({"deploy", good.path().string(), "--to", a.path().string()}, a.path()).exit_code, 0);
    EXPECT_TRUE(ha.wait_for_output("\"canary: completed\"", 30000)) << ha.output();
    on_b.finish();
    EXPECT_TRUE(on_b.failures().empty()) << on_b.failures().front();
  }
  EXPECT_TRUE(eventually([&] { return hello(hb.http_port()) == "three"; }, 10000));
  EXPECT_EQ(ha.signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(hb.signal_and_wait(SIGTERM), 0);
}

// Hosts on one shared store run the same versions: a deploy sent to one host reaches the
// other (it reads the aliases every second, and loads and warms a version before routing to
// it), and so does a change of weights or a rollback. On PostgreSQL and on Redis.
TEST(Deploy, EveryHostOnASharedStoreRunsTheVersionsAnyOfThemWasSent) {
  for (const std::string backend : {"postgres", "redis"}) {
    SCOPED_TRACE(backend);
    const std::string url = store_url(backend);
    ASSERT_FALSE(url.empty());
    TempDir a, b, two;
    for (const TempDir* d : {&a, &b}) {
      d->write("nimbus.yaml", on_store(kApp, url));
      d->write("app.py", app_code("one"));
    }
    two.write("nimbus.yaml", on_store(kApp, url));
    two.write("app.py", app_code("two"));
    Host ha(a.path(), {"--deployed"}), hb(b.path(), {"--deployed"});
    ASSERT_TRUE(ha.started() && hb.started()) << ha.errors() << hb.errors();
    CommandResult deployed = run_nimbus({"deploy", two.path().string(), "--to", a.path().string()}, a.path());
    ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
    EXPECT_EQ(hello(ha.http_port()), "two");
    EXPECT_TRUE(eventually([&] { return hello(hb.http_port()) == "two"; }, 10000)) << hb.output();
    // Weights set through host b reach host a.
    ASSERT_EQ(run_nimbus({"traffic", "set", "live", "v1=50", "v2=50"}, b.path()).exit_code, 0);
    EXPECT_TRUE(eventually([&] {
      std::set<std::string> seen;
      for (int i = 0; i < 60; ++i) seen.insert(hello(ha.http_port()));
      return seen == std::set<std::string>{"one", "two"};
    }, 10000));
    ASSERT_EQ(run_nimbus({"traffic", "set", "live", "v1"}, a.path()).exit_code, 0);
    EXPECT_TRUE(eventually([&] { return hello(hb.http_port()) == "one"; }, 10000));
    EXPECT_EQ(ha.signal_and_wait(SIGTERM), 0);
    EXPECT_EQ(hb.signal_and_wait(SIGTERM), 0);
  }
}

}  // namespace
}  // namespace nimbus::testing
