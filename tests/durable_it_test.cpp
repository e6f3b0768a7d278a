// Durable orchestrations end to end (issue 15): the real host, Python orchestrators and
// activities, driven through the management routes on the public listener: chaining,
// fan-out/fan-in, an activity's failure caught and compensated, sub-orchestrations, an
// external event (also one raised before the orchestrator waits for it), terminate, suspend
// and resume, purge, the history, and non-determinism after a changed orchestrator; further
// down, the same patterns (and continue-as-new) with Node and C++ orchestrators.
#include <atomic>
#include <future>
#include <numeric>

#include "it_common.h"

namespace nimbus::testing {
namespace {

const char* kOrchestrators = R"(from nimbus import durable

@durable.orchestrator
def chain(ctx):
    out = []
    for city in ctx.input:
        out.append((yield ctx.call_activity("say_hello", city)))
    return out

@durable.orchestrator
def fan(ctx):
    tasks = [ctx.call_activity("double", i) for i in range(ctx.input)]
    results = yield ctx.when_all(tasks)
    return sum(results)

@durable.orchestrator
def careful(ctx):
    try:
        yield ctx.call_activity("flaky", "x")
        return "not reached"
    except durable.ActivityFailed as failed:
        undone = yield ctx.call_activity("say_hello", "compensation")
        return {"compensated": undone, "because": str(failed)}

@durable.orchestrator
def approval(ctx):
    ctx.set_custom_status("waiting")
    deadline = ctx.current_time_ms + 3600 * 1000
    winner = yield ctx.when_any([ctx.wait_for_external_event("approve"), ctx.create_timer(deadline)])
    if winner.result is None:
        return "timed out"
    ctx.set_custom_status("approved")
    return "approved by " + winner.result["by"]

@durable.orchestrator
def parent(ctx):
    child = yield ctx.call_sub_orchestration("chain", ["Lima", "Quito"])
    return {"child": child, "guid": ctx.new_guid()}

@durable.orchestrator
def early(ctx):
    first = yield ctx.call_activity("say_hello", "first")
    data = yield ctx.wait_for_external_event("go")
    return [first, data]
)";

// The same chain in Node, calling the Python activity (runtimes mix freely).
const char* kNodeOrchestrators = R"(const durable = require('nimbus/durable');
module.exports.nodechain = durable.orchestrator(function* (ctx) {
  const out = [];
  for (const city of ctx.input) out.push(yield ctx.callActivity('say_hello', city));
  const [a, b] = yield ctx.whenAll([ctx.callActivity('double', 1), ctx.callActivity('double', 2)]);
  ctx.setCustomStatus({ step: 'done' });
  return { out, sum: a + b };
});
)";

const char* kActivities = R"(def say_hello(req, ctx):
    return "Hello " + req.json()

def double(req, ctx):
    return req.json() * 2

def flaky(req, ctx):
    raise RuntimeError("the payment service said no")
)";

std::string app_manifest() {
  std::string m = "name: durable\nfunctions:\n";
  for (const char* o : {"chain", "fan", "careful", "approval", "parent", "early"}) {
    m += std::string("  ") + o + ":\n    runtime: python\n    handler: orch.py:" + o +
         "\n    triggers: [{orchestration: {auth: anonymous}}]\n";
  }
  m += "  nodechain:\n    runtime: node\n    handler: orch.js:nodechain\n"
       "    triggers: [{orchestration: {auth: anonymous}}]\n";
  for (const char* a : {"say_hello", "double", "flaky"}) {
    m += std::string("  ") + a + ":\n    runtime: python\n    handler: acts.py:" + a +
         "\n    concurrency: 16\n    retry: {max_attempts: 2, initial: 10ms}\n    triggers: [{activity: {}}]\n";
  }
  return m;
}

struct DurableApp {
  DurableApp() {
    dir.write("nimbus.yaml", app_manifest());
    dir.write("orch.py", kOrchestrators);
    dir.write("acts.py", kActivities);
    dir.write("orch.js", kNodeOrchestrators);
    host = std::make_unique<Host>(dir.path());
  }
  int port() const { return host->http_port(); }

  // Starts an instance; its id.
  std::string start(const std::string& name, const std::string& input, const std::string& id = "") {
    Response r = request(port(), "POST", "/_nimbus/orchestrations/" + name + (id.empty() ? "" : "?instance=" + id),
                         {{"content-type", "application/json"}}, input);
    EXPECT_EQ(r.status, 202) << r.body;
    if (r.status != 202) return "";
    EXPECT_NE(r.header("location").find("/_nimbus/orchestrations/" + name + "/instances/"), std::string::npos);
    return std::string(json::parse(r.body).as_object().at("id").as_string());
  }
  json::object status(const std::string& name, const std::string& id, bool history = false) {
    Response r = request(port(), "GET", "/_nimbus/orchestrations/" + name + "/instances/" + id + (history ? "?history=true" : ""));
    if (r.status != 200 && r.status != 202) return json::object{{"http", r.status}, {"body", r.body}};
    json::object o = json::parse(r.body).as_object();
    o["http"] = r.status;
    return o;
  }
  // Waits until the instance's runtimeStatus is `want`; the status.
  json::object wait_for(const std::string& name, const std::string& id, const std::string& want, int timeout_ms = 30000) {
    json::object last;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < until) {
      last = status(name, id);
      if (last.if_contains("runtimeStatus") && last.at("runtimeStatus").as_string() == want) return last;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << name << "/" << id << " never became " << want << ": " << json::serialize(last);
    return last;
  }
  Response post(const std::string& path, const std::string& body = "") {
    return request(port(), "POST", "/_nimbus/orchestrations/" + path, {{"content-type", "application/json"}}, body);
  }

  TempDir dir;
  std::unique_ptr<Host> host;
};

TEST(Durable, ChainingFanOutCompensationAndSubOrchestrationsComplete) {
  DurableApp app;
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const std::string chain = app.start("chain", R"(["Tokyo", "Seattle", "London"])");
  const std::string fan = app.start("fan", "50");
  const std::string careful = app.start("careful", "");
  const std::string parent = app.start("parent", "");
  const std::string node = app.start("nodechain", R"(["Oslo"])");

  auto done = app.wait_for("chain", chain, "Completed");
  EXPECT_EQ(done.at("http").as_int64(), 200);
  EXPECT_EQ(json::serialize(done.at("output")), R"(["Hello Tokyo","Hello Seattle","Hello London"])");
  EXPECT_EQ(json::serialize(done.at("input")), R"(["Tokyo","Seattle","London"])");

  EXPECT_EQ(app.wait_for("fan", fan, "Completed").at("output").as_int64(), 2 * (49 * 50 / 2));

  auto comp = app.wait_for("careful", careful, "Completed").at("output").as_object();
  EXPECT_EQ(comp.at("compensated").as_string(), "Hello compensation");
  EXPECT_NE(std::string(comp.at("because").as_string()).find("the payment service said no"), std::string::npos)
      << json::serialize(comp);

  auto p = app.wait_for("parent", parent, "Completed").at("output").as_object();
  EXPECT_EQ(json::serialize(p.at("child")), R"(["Hello Lima","Hello Quito"])");
  EXPECT_EQ(p.at("guid").as_string().size(), 36u);
  // The child is an instance of its own, with its parent named.
  auto child = app.status("chain", parent + ":0");
  EXPECT_EQ(child.at("runtimeStatus").as_string(), "Completed") << json::serialize(child);
  EXPECT_EQ(child.at("parentInstanceId").as_string(), parent);

  auto n = app.wait_for("nodechain", node, "Completed");
  EXPECT_EQ(json::serialize(n.at("output")), R"({"out":["Hello Oslo"],"sum":6})");
  EXPECT_EQ(json::serialize(n.at("customStatus")), R"({"step":"done"})");

  // The history, in order: started, three activities scheduled and completed one by one.
  auto h = app.status("chain", chain, true).at("history").as_array();
  std::vector<std::string> types;
  for (auto& e : h) {
    const std::string t(e.as_object().at("type").as_string());
    if (t != "orchestrator_started") types.push_back(t);
  }
  EXPECT_EQ(types, (std::vector<std::string>{"execution_started", "task_scheduled", "task_completed", "task_scheduled",
                                             "task_completed", "task_scheduled", "task_completed",
                                             "execution_completed"}));

  // Listing by status; starting an id twice is a conflict; unknown ids are 404.
  Response list = request(app.port(), "GET", "/_nimbus/orchestrations/chain/instances?status=completed");
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_EQ(json::parse(list.body).at("instances").as_array().size(), 2u) << list.body;  // its own and the child
  Response again = app.post("chain?instance=" + chain, "[]");
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_EQ(request(app.port(), "GET", "/_nimbus/orchestrations/chain/instances/nope").status, 404);
  Response bad = app.post("chain", "{not json");
  EXPECT_EQ(bad.status, 400) << bad.body;

  // Purge: a finished instance's record and history are gone.
  Response purged = request(app.port(), "DELETE", "/_nimbus/orchestrations/chain/instances/" + chain);
  EXPECT_EQ(purged.status, 200) << purged.body;
  EXPECT_EQ(request(app.port(), "GET", "/_nimbus/orchestrations/chain/instances/" + chain).status, 404);
  EXPECT_EQ(app.host->signal_and_wait(SIGTERM), 0);
}

// ?wait= on a start or a status request: answered when the instance finishes (200 with its
// output), or when the wait is over (what it would have answered without waiting: 202).
TEST(Durable, AStartOrAStatusRequestCanWaitForTheInstanceToFinish) {
  DurableApp app;
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  // Start and wait: the chain finishes within the request.
  Response r = request(app.port(), "POST", "/_nimbus/orchestrations/chain?instance=w1&wait=20s",
                       {{"content-type", "application/json"}}, R"(["Oslo", "Rome"])");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body).at("runtimeStatus").as_string(), "Completed");
  EXPECT_EQ(json::parse(r.body).at("output"), json::parse(R"(["Hello Oslo", "Hello Rome"])"));
  // A status request waits while the instance waits for its event; the event ends both.
  app.start("approval", "", "w2");
  app.wait_for("approval", "w2", "Running");
  auto waiting = std::async(std::launch::async, [&] {
    const auto t0 = std::chrono::steady_clock::now();
    Response s = request(app.port(), "GET", "/_nimbus/orchestrations/approval/instances/w2?wait=20s");
    return std::make_pair(s, std::chrono::steady_clock::now() - t0);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(request(app.port(), "POST", "/_nimbus/orchestrations/approval/instances/w2/events/approve", {},
                    R"({"by": "ann"})").status,
            202);
  auto [answer, took] = waiting.get();
  EXPECT_EQ(answer.status, 200) << answer.body;
  EXPECT_EQ(json::parse(answer.body).at("output").as_string(), "approved by ann") << answer.body;
  EXPECT_GE(took, std::chrono::milliseconds(300)) << "answered before the instance finished";
  // A wait that ends first: 202 and the status, as without waiting; a start's: its links.
  app.start("approval", "", "w3");
  app.wait_for("approval", "w3", "Running");
  const auto t0 = std::chrono::steady_clock::now();
  Response late = request(app.port(), "GET", "/_nimbus/orchestrations/approval/instances/w3?wait=300ms");
  const auto late_took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(late.status, 202) << late.body;
  EXPECT_EQ(json::parse(late.body).at("runtimeStatus").as_string(), "Running");
  EXPECT_GE(late_took, std::chrono::milliseconds(300));
  EXPECT_LT(late_took, std::chrono::seconds(5));
  Response started = request(app.port(), "POST", "/_nimbus/orchestrations/approval?instance=w4&wait=200ms", {}, "");
  EXPECT_EQ(started.status, 202) << started.body;
  EXPECT_TRUE(json::parse(started.body).as_object().contains("statusQueryGetUri")) << started.body;
  // Not a duration (or past five minutes): 400 naming it.
  Response bad = request(app.port(), "GET", "/_nimbus/orchestrations/approval/instances/w3?wait=forever");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.body.find("wait"), std::string::npos) << bad.body;
  EXPECT_EQ(request(app.port(), "GET", "/_nimbus/orchestrations/approval/instances/w3?wait=10m").status, 400);
  // A host that stops answers the requests that wait (503: it will not see the instance finish).
  auto held = std::async(std::launch::async, [&] {
    return request(app.port(), "GET", "/_nimbus/orchestrations/approval/instances/w3?wait=60s");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto stopping = std::chrono::steady_clock::now();
  EXPECT_EQ(app.host->signal_and_wait(SIGTERM), 0);
  Response cut = held.get();
  EXPECT_EQ(cut.status, 503) << cut.body;
  EXPECT_LT(std::chrono::steady_clock::now() - stopping, std::chrono::seconds(10));
}

TEST(Durable, ExternalEventsTerminateSuspendAndResume) {
  DurableApp app;
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const std::string a = app.start("approval", "", "order-17");
  EXPECT_EQ(a, "order-17");
  auto waiting = app.wait_for("approval", a, "Running");
  for (int i = 0; i < 200 && waiting.at("customStatus") != json::value("waiting"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    waiting = app.status("approval", a);
  }
  EXPECT_EQ(waiting.at("customStatus").as_string(), "waiting");
  EXPECT_EQ(waiting.at("http").as_int64(), 202);
  Response raised = app.post("approval/instances/" + a + "/events/approve", R"({"by": "ann"})");
  EXPECT_EQ(raised.status, 202) << raised.body;
  auto done = app.wait_for("approval", a, "Completed");
  EXPECT_EQ(done.at("output").as_string(), "approved by ann");
  EXPECT_EQ(done.at("customStatus").as_string(), "approved");
  EXPECT_EQ(app.post("approval/instances/" + a + "/events/approve", "{}").status, 410) << "finished";

  // An event raised before the orchestrator waits for it is kept for it.
  const std::string e = app.start("early", "");
  EXPECT_EQ(app.post("early/instances/" + e + "/events/go", "42").status, 202);
  EXPECT_EQ(json::serialize(app.wait_for("early", e, "Completed").at("output")), R"(["Hello first",42])");

  // Terminate.
  const std::string t = app.start("approval", "");
  app.wait_for("approval", t, "Running");
  EXPECT_EQ(app.post("approval/instances/" + t + "/terminate?reason=cancelled").status, 202);
  auto term = app.wait_for("approval", t, "Terminated");
  EXPECT_NE(std::string(term.at("error").as_string()).find("cancelled"), std::string::npos);

  // Suspend: an event that arrives meanwhile waits; resume runs it.
  const std::string s = app.start("approval", "");
  app.wait_for("approval", s, "Running");
  EXPECT_EQ(app.post("approval/instances/" + s + "/suspend").status, 202);
  app.wait_for("approval", s, "Suspended");
  EXPECT_EQ(app.post("approval/instances/" + s + "/events/approve", R"({"by": "bo"})").status, 202);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(app.status("approval", s).at("runtimeStatus").as_string(), "Suspended");
  EXPECT_EQ(app.post("approval/instances/" + s + "/resume").status, 202);
  EXPECT_EQ(app.wait_for("approval", s, "Completed").at("output").as_string(), "approved by bo");
  EXPECT_EQ(app.host->signal_and_wait(SIGTERM), 0);
}

// A deploy that changes an orchestrator under an instance in flight: its replay no longer
// matches the history, and the instance fails saying where and how (never silently).
TEST(Durable, AChangedOrchestratorFailsItsInstancesInFlightWithANonDeterminismError) {
  auto app = std::make_unique<DurableApp>();
  ASSERT_TRUE(app->host->started()) << app->host->errors();
  const std::string e = app->start("early", "");
  app->wait_for("early", e, "Running");
  // Wait until the first activity is done and it waits for the event.
  for (int i = 0; i < 300; ++i) {
    auto h = app->status("early", e, true).at("history").as_array();
    if (std::any_of(h.begin(), h.end(), [](auto& ev) { return ev.as_object().at("type") == "task_completed"; })) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(app->host->signal_and_wait(SIGTERM), 0);
  std::string changed = kOrchestrators;
  const std::string from = R"(first = yield ctx.call_activity("say_hello", "first"))";
  changed.replace(changed.find(from), from.size(), R"(first = yield ctx.call_activity("double", 1))");
  app->dir.write("orch.py", changed);
  app->host = std::make_unique<Host>(app->dir.path());
  ASSERT_TRUE(app->host->started()) << app->host->errors();
  EXPECT_EQ(app->post("early/instances/" + e + "/events/go", "1").status, 202);
  auto failed = app->wait_for("early", e, "Failed");
  const std::string error(failed.at("error").as_string());
  EXPECT_NE(error.find("non-determinism"), std::string::npos) << error;
  EXPECT_NE(error.find("call_activity 'say_hello'"), std::string::npos) << error;
  EXPECT_NE(error.find("call_activity 'double'"), std::string::npos) << error;
  EXPECT_EQ(app->host->signal_and_wait(SIGTERM), 0);
}

// A fan-out of 1,000 activities whose effect is an output committed with the call's ack; the
// host is killed with SIGKILL three times while it runs. Restarted, the instance completes
// with the right sum, and every activity's committed effect is there exactly once.
class DurableOnEveryBackend : public ::testing::TestWithParam<std::string> {};

TEST_P(DurableOnEveryBackend, KillNineDuringAFanOutOfAThousandLosesNoStepAndKeepsEachEffectOnce) {
  constexpr int kItems = 1000;
  TempDir dir;
  const std::string url = store_url(GetParam());
  ASSERT_FALSE(url.empty());
  dir.write("nimbus.yaml", on_store("name: fanout\nfunctions:\n", url) +
                               "  fan:\n    runtime: python\n    handler: orch.py:fan\n"
                               "    triggers: [{orchestration: {auth: anonymous, lease: 2s}}]\n"
                               "  work:\n    runtime: python\n    handler: acts.py:work\n    concurrency: 32\n"
                               "    triggers: [{activity: {lease: 2s, batch_size: 64}}]\n"
                               "    outputs: {effect: {queue: effects}}\n");
  dir.write("orch.py", R"(from nimbus import durable

@durable.orchestrator
def fan(ctx):
    results = yield ctx.when_all([ctx.call_activity("work", i) for i in range(ctx.input)])
    return sum(results)
)");
  dir.write("acts.py", R"(import time

def work(req, ctx):
    time.sleep(0.02)  # so that the kills find it at work (a round that did it all proves nothing)
    i = req.json()
    ctx.output("effect", str(i))
    return i * 3
)");
  std::string id;
  auto effects = [](const Admin& admin) { return admin.peek("effects").size(); };
  int kills_mid_work = 0;
  for (int round = 0; round < 3; ++round) {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    Admin admin{host.admin_port(), host.admin_token()};
    if (id.empty()) {
      Response r = request(host.http_port(), "POST", "/_nimbus/orchestrations/fan?instance=big", {}, std::to_string(kItems));
      ASSERT_EQ(r.status, 202) << r.body;
      id = "big";
    }
    const std::size_t before = effects(admin);
    // Kill it once some more work committed (or after a few seconds: a round that waited out leases).
    // (A small step, so that a fast round still leaves work for the next kill.)
    admin.wait([&] { return effects(admin) >= before + 60; }, 8000);
    if (effects(admin) < static_cast<std::size_t>(kItems)) ++kills_mid_work;
    EXPECT_EQ(host.signal_and_wait(SIGKILL), 128 + SIGKILL);
  }
  EXPECT_GE(kills_mid_work, 2) << "the fan-out finished before the kills: they proved nothing";
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  json::object status;
  ASSERT_TRUE(admin.wait([&] {
    Response r = request(host.http_port(), "GET", "/_nimbus/orchestrations/fan/instances/big");
    if (r.status != 200) return false;
    status = json::parse(r.body).as_object();
    return true;
  }, 90000)) << host.output().substr(0, 4000);
  EXPECT_EQ(status.at("runtimeStatus").as_string(), "Completed") << json::serialize(status);
  EXPECT_EQ(status.at("output").as_int64(), 3 * (kItems - 1) * kItems / 2);
  auto out = admin.peek("effects");
  std::set<std::string> seen;
  for (auto& m : out) seen.insert(std::string(m["payload"].as_string()));
  EXPECT_EQ(out.size(), static_cast<std::size_t>(kItems)) << "an activity's committed effect twice, or one lost";
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kItems));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// 2,000 signals to one entity, all accepted (202) before the host is killed with SIGKILL
// twice while it works through them: restarted, the count is exactly 2,000 (each operation's
// state change and its ack are one commit: none lost, none applied twice).
TEST_P(DurableOnEveryBackend, KillNineWhileAnEntityWorksThroughSignalsLosesNoneAndAppliesEachOnce) {
  constexpr int kSignals = 2000;
  TempDir dir;
  const std::string url = store_url(GetParam());
  ASSERT_FALSE(url.empty());
  dir.write("nimbus.yaml", on_store("name: tally\nfunctions:\n", url) +
                               "  counter:\n    runtime: python\n    handler: ent.py:counter\n"
                               "    triggers: [{entity: {auth: anonymous, batch_size: 16, lease: 2s}}]\n");
  dir.write("ent.py", R"(import time
from nimbus import durable

@durable.entity
def counter(ctx):
    time.sleep(0.01)  # so that the kills find it at work: 2,000 take 20 s, sending them a few
    value = ctx.get_state(lambda: 0) + ctx.get_input()
    ctx.set_state(value)
    return value
)");
  auto count = [](const Host& host) -> int64_t {
    Response r = request(host.http_port(), "GET", "/_nimbus/entities/counter/total");
    return r.status == 200 ? json::parse(r.body).at("state").as_int64() : 0;
  };
  int kills_mid_work = 0;
  for (int round = 0; round < 2; ++round) {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    Admin admin{host.admin_port(), host.admin_token()};
    if (round == 0) {
      for (int i = 0; i < kSignals; ++i) {
        Response r = request(host.http_port(), "POST", "/_nimbus/entities/counter/total/add", {}, "1");
        ASSERT_EQ(r.status, 202) << r.body;
      }
    }
    const int64_t before = count(host);
    admin.wait([&] { return count(host) >= before + 200; }, 8000);
    if (count(host) < kSignals) ++kills_mid_work;
    EXPECT_EQ(host.signal_and_wait(SIGKILL), 128 + SIGKILL);
  }
  EXPECT_GE(kills_mid_work, 1) << "the entity finished before the kills: they proved nothing";
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  EXPECT_TRUE(admin.wait([&] { return count(host) >= kSignals; }, 90000)) << count(host);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // nothing more may arrive
  EXPECT_EQ(count(host), kSignals) << "a signal applied twice, or one lost";
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, DurableOnEveryBackend, ::testing::ValuesIn(backends()),
                         [](const auto& info) { return info.param; });

// Two hosts on one PostgreSQL run the same orchestrations: an instance's events go to either
// host, so each host's cached view of an instance is often stale. The record's ETag fences
// every step: a step built on a stale view loses its commit, its events run again, and every
// instance still completes with the right result and each activity's effect once.
TEST(Durable, TwoHostsOnOneStoreAdvanceEachInstanceOneStepAtATime) {
  const std::string url = store_url("postgres");
  ASSERT_FALSE(url.empty());
  TempDir dir, other;  // each host reads the app from a folder of its own
  // No invocation history: its writes are relaxed too, and would pass for the steps' below.
  dir.write("nimbus.yaml", on_store("name: two\nobserve: {history: {keep: 0}}\nfunctions:\n", url) +
                               "  fan:\n    runtime: python\n    handler: orch.py:fan\n"
                               "    triggers: [{orchestration: {auth: anonymous, batch_size: 4}}]\n"
                               "  work:\n    runtime: python\n    handler: acts.py:work\n    concurrency: 8\n"
                               "    triggers: [{activity: {}}]\n    outputs: {effect: {queue: effects}}\n");
  dir.write("orch.py", R"(from nimbus import durable

@durable.orchestrator
def fan(ctx):
    first = yield ctx.when_all([ctx.call_activity("work", [ctx.instance_id, i]) for i in range(ctx.input)])
    second = yield ctx.call_activity("work", [ctx.instance_id, 1000])
    return sum(first) + second
)");
  dir.write("acts.py", R"(def work(req, ctx):
    name, i = req.json()
    ctx.output("effect", f"{name}/{i}")
    return i
)");
  for (const char* f : {"nimbus.yaml", "orch.py", "acts.py"}) other.write(f, dir.read(f));
  Host a(dir.path()), b(other.path());
  ASSERT_TRUE(a.started() && b.started()) << a.errors() << b.errors();
  constexpr int kInstances = 10, kItems = 30;
  for (int i = 0; i < kInstances; ++i) {
    Host& via = i % 2 ? a : b;
    Response r = request(via.http_port(), "POST", "/_nimbus/orchestrations/fan?instance=i" + std::to_string(i), {},
                         std::to_string(kItems));
    ASSERT_EQ(r.status, 202) << r.body;
  }
  Admin admin{a.admin_port(), a.admin_token()};
  for (int i = 0; i < kInstances; ++i) {
    json::object st;
    ASSERT_TRUE(admin.wait([&] {
      Response r = request(i % 2 ? b.http_port() : a.http_port(), "GET", "/_nimbus/orchestrations/fan/instances/i" + std::to_string(i));
      if (r.status != 200) return false;
      st = json::parse(r.body).as_object();
      return true;
    }, 60000)) << "instance " << i << " did not finish";
    EXPECT_EQ(st.at("runtimeStatus").as_string(), "Completed") << json::serialize(st);
    EXPECT_EQ(st.at("output").as_int64(), kItems * (kItems - 1) / 2 + 1000) << json::serialize(st);
  }
  auto out = admin.peek("effects");
  std::set<std::string> seen;
  for (auto& m : out) seen.insert(std::string(m["payload"].as_string()));
  EXPECT_EQ(out.size(), static_cast<std::size_t>(kInstances * (kItems + 1))) << "an effect twice, or one lost";
  EXPECT_EQ(seen.size(), out.size());
  const std::string logs = a.output() + b.output();
  std::size_t lost = 0;
  for (std::size_t at = 0; (at = logs.find("lost to another one", at)) != std::string::npos; ++at) ++lost;
  std::cerr << "steps that lost to the other host's: " << lost << "\n";
  // Steps that leave an instance running did not wait for the disk (durability: process).
  EXPECT_GT(metric_value(a.admin_port(), "nimbus_store_unflushed_commits_total{kind=\"relaxed\"}"), 0);
  EXPECT_EQ(a.signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(b.signal_and_wait(SIGTERM), 0);
}

// A durable timer is a delayed message in the store: a host killed while an instance waits on
// one, and started again, fires it on time and the instance goes on.
TEST(Durable, ATimerSurvivesAHostKilledWhileItWaits) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: timers\nfunctions:\n  nap:\n    runtime: python\n    handler: orch.py:nap\n"
                           "    triggers: [{orchestration: {auth: anonymous, lease: 1s}}]\n");
  dir.write("orch.py", R"(from nimbus import durable

@durable.orchestrator
def nap(ctx):
    due = ctx.current_time_ms + ctx.input
    yield ctx.create_timer(due)
    return {"due": due, "woke": ctx.current_time_ms}
)");
  auto host = std::make_unique<Host>(dir.path());
  ASSERT_TRUE(host->started()) << host->errors();
  const auto started = std::chrono::steady_clock::now();
  ASSERT_EQ(request(host->http_port(), "POST", "/_nimbus/orchestrations/nap?instance=n1", {}, "1500").status, 202);
  Admin admin{host->admin_port(), host->admin_token()};
  ASSERT_TRUE(admin.wait([&] {
    return parse_object(request(host->http_port(), "GET", "/_nimbus/orchestrations/nap/instances/n1?history=true").body)["history"]
               .as_array()
               .size() >= 3;  // started, and the timer created
  }));
  EXPECT_EQ(host->signal_and_wait(SIGKILL), 128 + SIGKILL);
  host = std::make_unique<Host>(dir.path());
  ASSERT_TRUE(host->started()) << host->errors();
  json::object s;
  Admin again{host->admin_port(), host->admin_token()};
  ASSERT_TRUE(again.wait([&] {
    s = parse_object(request(host->http_port(), "GET", "/_nimbus/orchestrations/nap/instances/n1").body);
    return s["runtimeStatus"].as_string() == "Completed";
  }, 20000)) << json::serialize(s);
  const auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_GE(waited, std::chrono::milliseconds(1400)) << "the timer fired early";
  auto out = s["output"].as_object();
  EXPECT_GE(out["woke"].as_int64(), out["due"].as_int64()) << "its step ran before the timer was due";
  EXPECT_EQ(host->signal_and_wait(SIGTERM), 0);
}

// A history past 10,000 events (a fan-out of 5,000, then one more call) replays correctly: the
// last step sees every result, in order.
TEST(Durable, AHistoryOfMoreThanTenThousandEventsReplays) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: big\nfunctions:\n  big:\n    runtime: python\n    handler: orch.py:big\n"
                           "    timeout: 60s\n    triggers: [{orchestration: {auth: anonymous, batch_size: 1000}}]\n"
                           "  hello:\n    runtime: native\n    handler: " + fn("hello") + "\n"
                           "    triggers: [{activity: {batch_size: 256}}]\n");
  dir.write("orch.py", R"(from nimbus import durable

@durable.orchestrator
def big(ctx):
    results = yield ctx.when_all([ctx.call_activity("hello", i) for i in range(ctx.input)])
    last = yield ctx.call_activity("hello", "last")
    return {"n": len(results), "same": len(set(results)), "last": last}
)");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  ASSERT_EQ(request(host.http_port(), "POST", "/_nimbus/orchestrations/big?instance=b", {}, "5000").status, 202);
  Admin admin{host.admin_port(), host.admin_token()};
  json::object s;
  ASSERT_TRUE(admin.wait([&] {
    s = parse_object(request(host.http_port(), "GET", "/_nimbus/orchestrations/big/instances/b").body);
    return s["runtimeStatus"].as_string() != "Running" && s["runtimeStatus"].as_string() != "Pending";
  }, 120000)) << json::serialize(s);
  EXPECT_EQ(s["runtimeStatus"].as_string(), "Completed") << json::serialize(s);
  EXPECT_GT(s["historyEvents"].as_int64(), 10000);
  EXPECT_EQ(json::serialize(s["output"]), R"({"n":5000,"same":1,"last":"Hello, World!"})");
  Response h = request(host.http_port(), "GET", "/_nimbus/orchestrations/big/instances/b?history=true");
  EXPECT_EQ(static_cast<int64_t>(parse_object(h.body)["history"].as_array().size()), s["historyEvents"].as_int64());
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// `nimbus orch` drives instances through the admin API: start, status, raise, history, ls,
// terminate, purge; errors are one clear line.
TEST(Durable, TheCliStartsWatchesAndSteersInstances) {
  DurableApp app;
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const auto dir = app.dir.path();
  CommandResult started = run_nimbus({"orch", "start", "approval", "--id", "cli-1"}, dir);
  ASSERT_EQ(started.exit_code, 0) << started.err;
  EXPECT_EQ(started.out, "cli-1\n");
  app.wait_for("approval", "cli-1", "Running");
  CommandResult raised = run_nimbus({"orch", "raise", "cli-1", "approve", "--data", R"({"by": "cli"})"}, dir);
  EXPECT_EQ(raised.exit_code, 0) << raised.err;
  app.wait_for("approval", "cli-1", "Completed");
  CommandResult status = run_nimbus({"orch", "status", "cli-1"}, dir);
  EXPECT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find("Completed"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("\"approved by cli\""), std::string::npos) << status.out;
  CommandResult history = run_nimbus({"orch", "history", "cli-1"}, dir);
  EXPECT_NE(history.out.find("event_raised name=\"approve\" data={\"by\":\"cli\"}"), std::string::npos) << history.out;
  EXPECT_NE(history.out.find("execution_completed"), std::string::npos) << history.out;

  CommandResult chain = run_nimbus({"orch", "start", "chain", "--input", R"(["Rome"])", "--id", "cli-2"}, dir);
  ASSERT_EQ(chain.exit_code, 0) << chain.err;
  app.wait_for("chain", "cli-2", "Completed");
  CommandResult ls = run_nimbus({"orch", "ls", "--status", "completed"}, dir);
  EXPECT_NE(ls.out.find("cli-1"), std::string::npos) << ls.out;
  EXPECT_NE(ls.out.find("cli-2"), std::string::npos) << ls.out;
  CommandResult only = run_nimbus({"orch", "ls", "--name", "chain"}, dir);
  EXPECT_EQ(only.out.find("cli-1"), std::string::npos) << only.out;

  ASSERT_EQ(run_nimbus({"orch", "start", "approval", "--id", "cli-3"}, dir).exit_code, 0);
  app.wait_for("approval", "cli-3", "Running");
  CommandResult purge_running = run_nimbus({"orch", "purge", "cli-3"}, dir);
  EXPECT_NE(purge_running.exit_code, 0);
  EXPECT_NE(purge_running.err.find("terminate it before purging"), std::string::npos) << purge_running.err;
  EXPECT_EQ(run_nimbus({"orch", "terminate", "cli-3", "--reason", "no longer needed"}, dir).exit_code, 0);
  auto t = app.wait_for("approval", "cli-3", "Terminated");
  EXPECT_NE(std::string(t.at("error").as_string()).find("no longer needed"), std::string::npos);
  EXPECT_EQ(run_nimbus({"orch", "purge", "cli-3"}, dir).exit_code, 0);
  CommandResult gone = run_nimbus({"orch", "status", "cli-3"}, dir);
  EXPECT_NE(gone.exit_code, 0);
  EXPECT_NE(gone.err.find("no instance 'cli-3'"), std::string::npos) << gone.err;
  CommandResult unknown = run_nimbus({"orch", "start", "nope"}, dir);
  EXPECT_NE(unknown.err.find("no function has an orchestration trigger named 'nope'"), std::string::npos) << unknown.err;
  EXPECT_EQ(app.host->signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

const char* kEntities = R"(from nimbus import durable

@durable.entity
def counter(ctx):
    value = ctx.get_state(lambda: 0)
    op = ctx.operation_name
    if op == "add":
        value += ctx.get_input()
        ctx.set_state(value)
        return value
    if op == "get":
        return value
    if op == "boom":
        ctx.set_state(-1000)
        raise ValueError("boom is not an operation of a counter")
    if op == "delete":
        ctx.delete_state()

@durable.orchestrator
def bank(ctx):
    ctx.signal_entity("counter", "acct", "add", 5)
    a = yield ctx.call_entity("counter", "acct", "add", 10)
    b = yield ctx.call_entity("ncounter", "acct", "add", 7)
    try:
        yield ctx.call_entity("counter", "acct", "boom")
        failed = None
    except durable.ActivityFailed as e:
        failed = str(e)
    after = yield ctx.call_entity("counter", "acct", "get")
    return {"a": a, "b": b, "failed": failed, "after": after}

@durable.orchestrator
def stray(ctx):
    yield ctx.call_entity("nobody", "k", "get")
)";

const char* kNodeEntity = R"(const durable = require('nimbus/durable');
module.exports.ncounter = durable.entity((ctx) => {
  const value = ctx.getState(() => 0) + (ctx.operationName === 'add' ? ctx.getInput() : 0);
  ctx.setState(value);
  ctx.setResult(value);
});
module.exports.nbank = durable.orchestrator(function* (ctx) {
  ctx.signalEntity('ncounter', 'n', 'add', 1);
  return yield ctx.callEntity('counter', 'n', 'add', 2);
});
)";

TEST(DurableEntities, RunOneOperationAtATimePerKeyKeepStateAndAnswerOrchestrations) {
  TempDir dir;
  dir.write("nimbus.yaml", R"(name: entities
functions:
  counter:
    runtime: python
    handler: ent.py:counter
    concurrency: 8
    triggers: [{entity: {auth: anonymous, batch_size: 8}}]
  ncounter:
    runtime: node
    handler: ent.js:ncounter
    triggers: [{entity: {auth: anonymous}}]
  bank:
    runtime: python
    handler: ent.py:bank
    triggers: [{orchestration: {auth: anonymous}}]
  stray:
    runtime: python
    handler: ent.py:stray
    triggers: [{orchestration: {auth: anonymous}}]
  nbank:
    runtime: node
    handler: ent.js:nbank
    triggers: [{orchestration: {auth: anonymous}}]
)");
  dir.write("ent.py", kEntities);
  dir.write("ent.js", kNodeEntity);
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const int port = host.http_port();
  Admin admin{host.admin_port(), host.admin_token()};
  auto state = [&](const std::string& path) -> json::value {
    Response r = request(port, "GET", "/_nimbus/entities/" + path);
    return r.status == 200 ? json::parse(r.body).at("state") : json::value(r.status);
  };

  // Signals from four clients at once, to two keys: every one applied, none lost to a race
  // (a step per key at a time, batches of 8, a pool of 8 workers).
  EXPECT_EQ(request(port, "GET", "/_nimbus/entities/counter/hits").status, 404);
  std::vector<std::thread> clients;
  std::atomic<int> accepted{0};
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 100; ++i) {
        Response r = request(port, "POST", "/_nimbus/entities/counter/" + std::string(c % 2 ? "hits" : "misses") + "/add",
                             {{"content-type", "application/json"}}, "1");
        if (r.status == 202) ++accepted;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(accepted.load(), 400);
  EXPECT_TRUE(admin.wait([&] { return state("counter/hits") == json::value(200) && state("counter/misses") == json::value(200); }))
      << json::serialize(state("counter/hits")) << " " << json::serialize(state("counter/misses"));

  // Bad requests name what is wrong; an entity's delete leaves no state.
  Response bad_key = request(port, "POST", "/_nimbus/entities/counter/a%20b/add", {}, "1");
  EXPECT_EQ(bad_key.status, 400) << bad_key.body;
  Response bad_input = request(port, "POST", "/_nimbus/entities/counter/hits/add", {}, "{nope");
  EXPECT_EQ(bad_input.status, 400) << bad_input.body;
  EXPECT_NE(bad_input.body.find("not JSON"), std::string::npos) << bad_input.body;
  EXPECT_EQ(request(port, "POST", "/_nimbus/entities/counter/misses/delete").status, 202);
  EXPECT_EQ(request(port, "POST", "/_nimbus/entities/counter/misses/__unlock").status, 400);
  EXPECT_EQ(request(port, "POST", "/_nimbus/entities/counter/misses/add?call=true&timeout_ms=0", {}, "1").status, 400);

  // A client's call waits for the operation's result; a failing operation answers 500.
  Response called = request(port, "POST", "/_nimbus/entities/counter/calls/add?call=true", {}, "3");
  EXPECT_EQ(called.status, 200) << called.body;
  EXPECT_EQ(called.body, R"({"result":3})");
  called = request(port, "POST", "/_nimbus/entities/counter/calls/add?call=true", {}, "4");
  EXPECT_EQ(called.body, R"({"result":7})");
  Response boom = request(port, "POST", "/_nimbus/entities/counter/calls/boom?call=true");
  EXPECT_EQ(boom.status, 500) << boom.body;
  EXPECT_NE(boom.body.find("boom is not an operation of a counter"), std::string::npos) << boom.body;
  EXPECT_TRUE(admin.wait([&] { return state("counter/misses") == json::value(404); }));

  // From an orchestration: a signal and then calls, in order; a failing operation fails only
  // its call (the state stays as it was before it); a Node entity and a Node orchestrator.
  Response started = request(port, "POST", "/_nimbus/orchestrations/bank?instance=b1", {}, "");
  ASSERT_EQ(started.status, 202) << started.body;
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/nbank?instance=n1", {}, "").status, 202);
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/stray?instance=s1", {}, "").status, 202);
  json::object out;
  ASSERT_TRUE(admin.wait([&] {
    Response r = request(port, "GET", "/_nimbus/orchestrations/bank/instances/b1");
    if (r.status != 200) return false;
    out = json::parse(r.body).as_object();
    return true;
  }, 30000)) << host.output().substr(0, 3000);
  ASSERT_EQ(out.at("runtimeStatus").as_string(), "Completed") << json::serialize(out);
  const json::object& o = out.at("output").as_object();
  EXPECT_EQ(o.at("a").as_int64(), 15) << json::serialize(o);  // the signal (5) came first
  EXPECT_EQ(o.at("b").as_int64(), 7);
  EXPECT_NE(std::string(o.at("failed").as_string()).find("boom is not an operation"), std::string::npos) << json::serialize(o);
  EXPECT_EQ(o.at("after").as_int64(), 15) << "a failed operation's state change was kept";
  EXPECT_EQ(state("counter/acct"), json::value(15));
  EXPECT_EQ(state("ncounter/acct"), json::value(7));

  json::object n;
  ASSERT_TRUE(admin.wait([&] {
    Response r = request(port, "GET", "/_nimbus/orchestrations/nbank/instances/n1");
    if (r.status != 200) return false;
    n = json::parse(r.body).as_object();
    return true;
  }));
  EXPECT_EQ(n.at("output").as_int64(), 2) << json::serialize(n);
  EXPECT_TRUE(admin.wait([&] { return state("ncounter/n") == json::value(1); }));

  // Calling an entity no function provides fails the instance, naming it.
  json::object s;
  ASSERT_TRUE(admin.wait([&] {
    Response r = request(port, "GET", "/_nimbus/orchestrations/stray/instances/s1");
    if (r.status != 200) return false;
    s = json::parse(r.body).as_object();
    return true;
  }));
  EXPECT_EQ(s.at("runtimeStatus").as_string(), "Failed");
  EXPECT_NE(std::string(s.at("error").as_string()).find("entity 'nobody'"), std::string::npos) << json::serialize(s);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

const char* kAccounts = R"(from nimbus import durable

@durable.entity
def account(ctx):
    balance = ctx.get_state(lambda: 0)
    if ctx.operation_name == "add":
        ctx.set_state(balance + ctx.get_input())
    return balance

@durable.orchestrator
def transfer(ctx):
    src, dst, amount = ctx.input
    yield ctx.lock_entities([("account", src), ("account", dst)])
    balance = yield ctx.call_entity("account", src, "get")
    if balance < amount:
        ctx.unlock_entities()
        return False
    yield ctx.call_entity("account", src, "add", -amount)
    yield ctx.call_entity("account", dst, "add", amount)
    ctx.unlock_entities()
    return True

@durable.orchestrator
def hold(ctx):
    yield ctx.lock_entities([("account", ctx.input or "c")])
    yield ctx.wait_for_external_event("go")
    return "done"

@durable.orchestrator
def impatient(ctx):
    # Gives up waiting for a lock, lets go of the request, and asks again.
    first = ctx.lock_entities([("account", "d")])
    winner = yield ctx.when_any([first, ctx.create_timer(ctx.current_time_ms + 300)])
    if winner is first:
        return "unexpected"
    ctx.unlock_entities()
    yield ctx.lock_entities([("account", "d")])
    ctx.set_custom_status("holding")
    yield ctx.wait_for_external_event("done")
    ctx.unlock_entities()
    return "ok"

@durable.orchestrator
def stray(ctx):
    yield ctx.lock_entities([("account", "e")])
    yield ctx.call_entity("account", "f", "get")
    return "never"
)";

const char* kBank = R"(name: bank
functions:
  account:
    runtime: python
    handler: bank.py:account
    triggers: [{entity: {auth: anonymous}}]
  transfer:
    runtime: python
    handler: bank.py:transfer
    concurrency: 4
    triggers: [{orchestration: {auth: anonymous}}]
  hold:
    runtime: python
    handler: bank.py:hold
    triggers: [{orchestration: {auth: anonymous}}]
  impatient:
    runtime: python
    handler: bank.py:impatient
    triggers: [{orchestration: {auth: anonymous}}]
  stray:
    runtime: python
    handler: bank.py:stray
    triggers: [{orchestration: {auth: anonymous}}]
)";

// An account entity as a client reads it ({"http": status} when that is not 200).
json::object account_entity(int port, const std::string& key) {
  Response r = request(port, "GET", "/_nimbus/entities/account/" + key);
  return r.status == 200 ? json::parse(r.body).as_object() : json::object{{"http", r.status}};
}

// Critical sections: twenty transfers of 30 out of an account holding 100 run at once; each
// checks the balance and moves the money inside a lock on both accounts, so exactly three
// succeed and no money is made or lost. Others' operations on a locked entity wait (parked in
// its document) and run once the instance that holds it ends, even without unlocking.
TEST(DurableEntities, CriticalSectionsLockEntitiesAndOthersWaitTheirTurn) {
  TempDir dir;
  dir.write("nimbus.yaml", kBank);
  dir.write("bank.py", kAccounts);
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const int port = host.http_port();
  Admin admin{host.admin_port(), host.admin_token()};
  auto entity = [&](const std::string& key) { return account_entity(port, key); };
  auto balance = [&](const std::string& key) -> int64_t {
    auto e = entity(key);
    return e.if_contains("state") ? e.at("state").as_int64() : -1;
  };
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/account/a/add", {}, "100").status, 202);
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/account/b/add", {}, "0").status, 202);
  ASSERT_TRUE(admin.wait([&] { return balance("a") == 100 && balance("b") == 0; }));

  constexpr int kTransfers = 20;
  for (int i = 0; i < kTransfers; ++i) {
    Response r = request(port, "POST", "/_nimbus/orchestrations/transfer?instance=t" + std::to_string(i), {},
                         R"(["a", "b", 30])");
    ASSERT_EQ(r.status, 202) << r.body;
  }
  int succeeded = 0, finished = 0;
  for (int i = 0; i < kTransfers; ++i) {
    json::object st;
    ASSERT_TRUE(admin.wait([&] {
      Response r = request(port, "GET", "/_nimbus/orchestrations/transfer/instances/t" + std::to_string(i));
      if (r.status != 200) return false;
      st = json::parse(r.body).as_object();
      return true;
    }, 60000)) << "transfer " << i << " never finished";
    ASSERT_EQ(st.at("runtimeStatus").as_string(), "Completed") << json::serialize(st);
    ++finished;
    if (st.at("output").as_bool()) ++succeeded;
  }
  EXPECT_EQ(finished, kTransfers);
  EXPECT_EQ(succeeded, 3) << "a transfer saw a balance another one was changing";
  EXPECT_EQ(balance("a"), 10);
  EXPECT_EQ(balance("b"), 90);
  EXPECT_FALSE(entity("a").if_contains("lockedBy")) << json::serialize(entity("a"));

  // An entity held by an instance: a client's signal waits, parked, until the instance ends.
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/account/c/add", {}, "1").status, 202);
  ASSERT_TRUE(admin.wait([&] { return balance("c") == 1; }));
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/hold?instance=h1", {}, "").status, 202);
  ASSERT_TRUE(admin.wait([&] { return entity("c").if_contains("lockedBy"); })) << json::serialize(entity("c"));
  EXPECT_EQ(entity("c").at("lockedBy").as_string(), "h1");
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/account/c/add", {}, "5").status, 202);
  ASSERT_TRUE(admin.wait([&] {
    auto e = entity("c");
    return e.if_contains("parked") && e.at("parked").as_int64() == 1;
  })) << json::serialize(entity("c"));
  EXPECT_EQ(balance("c"), 1) << "an operation ran on an entity another instance holds";
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/hold/instances/h1/events/go", {}, "{}").status, 202);
  EXPECT_TRUE(admin.wait([&] { return balance("c") == 6; })) << json::serialize(entity("c"));
  EXPECT_FALSE(entity("c").if_contains("lockedBy"));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// (And: a locked entity's waiting operations are bounded.)
// A lock request abandoned before its grant (the instance stopped waiting and asked again):
// the late grant is released by its own token, never the newer request's, so the entity stays
// held and others' operations wait. A call inside a critical section to an entity it did not
// lock fails the instance with the reason (it could wait for ever).
TEST(DurableEntities, ALateGrantNeverReleasesANewerSectionCallsStayInTheLockedSetAndWaitingOperationsAreBounded) {
  TempDir dir;
  dir.write("nimbus.yaml", kBank);
  dir.write("bank.py", kAccounts);
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const int port = host.http_port();
  Admin admin{host.admin_port(), host.admin_token()};
  auto entity = [&](const std::string& key) { return account_entity(port, key); };
  auto status = [&](const std::string& fn, const std::string& id) -> json::object {
    Response r = request(port, "GET", "/_nimbus/orchestrations/" + fn + "/instances/" + id);
    return r.status == 200 || r.status == 202 ? json::parse(r.body).as_object() : json::object{};
  };
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/account/d/add", {}, "1").status, 202);
  ASSERT_TRUE(admin.wait([&] { return entity("d").if_contains("state"); }));
  // h holds d; the impatient instance's first request waits behind it, times out, and a
  // second request waits too. Then h lets go: the first request's grant comes, is refused and
  // released; the second holds d.
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/hold?instance=h", {}, "\"d\"").status, 202);
  ASSERT_TRUE(admin.wait([&] { return entity("d").if_contains("lockedBy"); }));
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/impatient?instance=i", {}, "").status, 202);
  ASSERT_TRUE(admin.wait([&] {
    auto e = entity("d");
    return e.if_contains("parked") && e.at("parked").as_int64() == 2;
  })) << json::serialize(entity("d"));
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/hold/instances/h/events/go", {}, "{}").status, 202);
  ASSERT_TRUE(admin.wait([&] {
    auto st = status("impatient", "i");
    return st.if_contains("customStatus") && st.at("customStatus") == json::value("holding");
  })) << json::serialize(status("impatient", "i"));
  // For a while after, d stays held by i (the late grant's release named its own request).
  for (int k = 0; k < 30; ++k) {
    auto e = entity("d");
    ASSERT_TRUE(e.if_contains("lockedBy") && e.at("lockedBy") == json::value("i")) << "at " << k << ": " << json::serialize(e);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // A client's operation waits for i's section to end.
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/account/d/add", {}, "10").status, 202);
  ASSERT_TRUE(admin.wait([&] {
    auto e = entity("d");
    return e.if_contains("parked") && e.at("parked").as_int64() == 1;
  })) << json::serialize(entity("d"));
  EXPECT_EQ(entity("d").at("state").as_int64(), 1);
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/impatient/instances/i/events/done", {}, "{}").status, 202);
  EXPECT_TRUE(admin.wait([&] { return entity("d").at("state").as_int64() == 11; })) << json::serialize(entity("d"));
  EXPECT_EQ(status("impatient", "i")["output"], json::value("ok"));

  // A call outside the locked set: the instance fails, saying so, and lets e go.
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/stray?instance=s", {}, "").status, 202);
  json::object st;
  ASSERT_TRUE(admin.wait([&] {
    st = status("stray", "s");
    return st.if_contains("runtimeStatus") && st.at("runtimeStatus") == json::value("Failed");
  })) << json::serialize(st);
  EXPECT_NE(json::serialize(st).find("did not lock it"), std::string::npos) << json::serialize(st);
  EXPECT_TRUE(admin.wait([&] { return !entity("e").if_contains("lockedBy"); })) << json::serialize(entity("e"));

  // A locked entity keeps at most 1,000 others' operations waiting; past that they go to the
  // dead letters (saying why) instead of growing its document without end.
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/account/g/add", {}, "0").status, 202);
  ASSERT_TRUE(admin.wait([&] { return entity("g").if_contains("state"); }));
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/hold?instance=g", {}, "\"g\"").status, 202);
  ASSERT_TRUE(admin.wait([&] { return entity("g").if_contains("lockedBy"); }));
  for (int k = 0; k < 1005; ++k) ASSERT_EQ(request(port, "POST", "/_nimbus/entities/account/g/add", {}, "1").status, 202);
  ASSERT_TRUE(admin.wait([&] {
    auto e = entity("g");
    return e.if_contains("parked") && e.at("parked").as_int64() == 1000 && admin.peek("_entity/account.dead").size() == 5;
  }, 30000)) << json::serialize(entity("g")) << " dead: " << admin.peek("_entity/account.dead").size();
  EXPECT_NE(json::serialize(admin.peek("_entity/account.dead").front()).find("operations already wait"), std::string::npos);
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/hold/instances/g/events/go", {}, "{}").status, 202);
  EXPECT_TRUE(admin.wait([&] {
    auto e = entity("g");
    return e.if_contains("state") && e.at("state").as_int64() == 1000;
  }, 30000)) << json::serialize(entity("g"));

  // An instance id purged and started again is another instance: its lock request is not the
  // old one's, even with the same generation and task. p's first request waits behind q; p is
  // terminated and purged and started again, asking for r the same way. When q lets go, the old
  // request's grant is released by its own token and the new p holds r, and goes on holding it.
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/account/r/add", {}, "0").status, 202);
  ASSERT_TRUE(admin.wait([&] { return entity("r").if_contains("state"); }));
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/hold?instance=q", {}, "\"r\"").status, 202);
  ASSERT_TRUE(admin.wait([&] { return entity("r").if_contains("lockedBy"); }));
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/hold?instance=p", {}, "\"r\"").status, 202);
  ASSERT_TRUE(admin.wait([&] {
    auto e = entity("r");
    return e.if_contains("parked") && e.at("parked").as_int64() == 1;
  })) << json::serialize(entity("r"));
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/hold/instances/p/terminate?reason=again", {}, "").status, 202);
  ASSERT_TRUE(admin.wait([&] { return status("hold", "p")["runtimeStatus"] == json::value("Terminated"); }));
  ASSERT_EQ(request(port, "DELETE", "/_nimbus/orchestrations/hold/instances/p").status, 200);
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/hold?instance=p", {}, "\"r\"").status, 202);
  ASSERT_TRUE(admin.wait([&] {
    auto e = entity("r");
    return e.if_contains("parked") && e.at("parked").as_int64() == 2;
  })) << json::serialize(entity("r"));
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/hold/instances/q/events/go", {}, "{}").status, 202);
  ASSERT_TRUE(admin.wait([&] {
    auto e = entity("r");
    return e.if_contains("lockedBy") && e.at("lockedBy") == json::value("p") &&
           (!e.if_contains("parked") || e.at("parked").as_int64() == 0);
  })) << json::serialize(entity("r"));
  for (int k = 0; k < 30; ++k) {
    auto e = entity("r");
    ASSERT_TRUE(e.if_contains("lockedBy") && e.at("lockedBy") == json::value("p")) << "at " << k << ": " << json::serialize(e);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/hold/instances/p/events/go", {}, "{}").status, 202);
  EXPECT_TRUE(admin.wait([&] { return !entity("r").if_contains("lockedBy"); })) << json::serialize(entity("r"));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// One operation that crashes its worker takes its whole batch down with it. The batch is tried
// again whole; on its last attempt its operations run one at a time, in order, each on the
// state the ones before it left, so only the crashing one meets its dead letter and the others'
// effects are kept, in the order they came.
TEST(DurableEntities, AnOperationThatCrashesItsBatchIsFoundAloneAndTheOthersRunInOrder) {
  TempDir dir;
  dir.write("nimbus.yaml", R"(name: fragile
functions:
  fragile:
    runtime: python
    handler: fragile.py:fragile
    retry: {max_attempts: 2, initial: 200ms}
    triggers: [{entity: {auth: anonymous, batch_size: 16}}]
)");
  dir.write("fragile.py", R"(import os, time
from nimbus import durable

@durable.entity
def fragile(ctx):
    value = ctx.get_state(lambda: [])
    if ctx.operation_name == "slow":
        time.sleep(0.5)
    elif ctx.operation_name == "crash":
        os._exit(3)
    elif ctx.operation_name == "append":
        ctx.set_state(value + [ctx.get_input()])
)");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const int port = host.http_port();
  Admin admin{host.admin_port(), host.admin_token()};
  auto state = [&] {
    Response r = request(port, "GET", "/_nimbus/entities/fragile/k");
    if (r.status != 200) return std::string("none");
    auto o = json::parse(r.body).as_object();
    return o.if_contains("state") ? json::serialize(o.at("state")) : std::string("none");
  };
  // The slow one holds the key while the rest arrive: they come to the next step together.
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/fragile/k/slow", {}, "").status, 202);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/fragile/k/append", {}, "1").status, 202);
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/fragile/k/append", {}, "2").status, 202);
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/fragile/k/crash", {}, "").status, 202);
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/fragile/k/append", {}, "3").status, 202);
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/fragile/k/append", {}, "4").status, 202);
  ASSERT_TRUE(admin.wait([&] { return admin.peek("_entity/fragile.dead").size() == 1 && state() == "[1,2,3,4]"; }, 30000))
      << "state " << state() << ", dead letters " << admin.peek("_entity/fragile.dead").size() << "\n" << host.output();
  auto dead = admin.peek("_entity/fragile.dead");
  EXPECT_NE(json::serialize(dead.front()).find("'crash' failed when run alone"), std::string::npos)
      << json::serialize(dead.front());
  EXPECT_TRUE(host.wait_for_output("its operations are run one at a time"));
  // And the key goes on: a later operation runs as usual (nothing loops, nothing is left held).
  ASSERT_EQ(request(port, "POST", "/_nimbus/entities/fragile/k/append", {}, "5").status, 202);
  EXPECT_TRUE(admin.wait([&] { return state() == "[1,2,3,4,5]"; })) << state();
  EXPECT_EQ(admin.peek("_entity/fragile.dead").size(), 1u);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// Two hosts on one PostgreSQL: clients call one entity through either host. The state's ETag
// fences the steps of the two hosts, so the calls run one at a time: their results are 1 to
// 40, each once. A call run by the other host reaches its client through the store.
TEST(DurableEntities, TwoHostsRunOneKeysOperationsOneAtATimeAndAnswerCallsThroughEither) {
  const std::string url = store_url("postgres");
  ASSERT_FALSE(url.empty());
  TempDir dir, other;
  // No invocation history: its writes are relaxed too, and would pass for the steps' below.
  dir.write("nimbus.yaml", on_store("name: two\nobserve: {history: {keep: 0}}\nfunctions:\n", url) +
                               "  counter:\n    runtime: python\n    handler: ent.py:counter\n"
                               "    triggers: [{entity: {auth: anonymous}}]\n");
  dir.write("ent.py", kEntities);
  for (const char* f : {"nimbus.yaml", "ent.py"}) other.write(f, dir.read(f));
  Host a(dir.path()), b(other.path());
  ASSERT_TRUE(a.started() && b.started()) << a.errors() << b.errors();
  std::vector<std::thread> clients;
  std::mutex mu;
  std::vector<int64_t> results;
  std::vector<std::string> failures;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 10; ++i) {
        Response r = request((c + i) % 2 ? a.http_port() : b.http_port(), "POST",
                             "/_nimbus/entities/counter/shared/add?call=true", {}, "1");
        std::lock_guard lock(mu);
        if (r.status == 200) {
          results.push_back(json::parse(r.body).at("result").as_int64());
        } else {
          failures.push_back(std::to_string(r.status) + " " + r.body);
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_TRUE(failures.empty()) << failures.front();
  std::sort(results.begin(), results.end());
  std::vector<int64_t> want(40);
  std::iota(want.begin(), want.end(), 1);
  EXPECT_EQ(results, want) << "two operations on one key ran at once, or a call got another's answer";
  EXPECT_EQ(a.signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(b.signal_and_wait(SIGTERM), 0);
}

// A status request that waits on one host for an instance another host finishes is answered
// when that host commits (its wake crosses the store), not at the next poll.
TEST(Durable, AWaitOnOneHostEndsWhenAnotherHostFinishesTheInstance) {
  const std::string url = store_url("postgres");
  ASSERT_FALSE(url.empty());
  TempDir dir, other;
  // No invocation history: its writes are relaxed too, and would pass for the steps' below.
  dir.write("nimbus.yaml", on_store("name: two\nobserve: {history: {keep: 0}}\nfunctions:\n", url) +
                               "  gate:\n    runtime: python\n    handler: orch.py:gate\n"
                               "    triggers: [{orchestration: {auth: anonymous}}]\n");
  dir.write("orch.py", R"(from nimbus import durable

@durable.orchestrator
def gate(ctx):
    data = yield ctx.wait_for_external_event("open")
    return data
)");
  for (const char* f : {"nimbus.yaml", "orch.py"}) other.write(f, dir.read(f));
  // a's store is slow (100 ms a call): b takes the steps, and a only waits.
  Host a(dir.path(), {"--inject-store-latency", "100ms"}), b(other.path());
  ASSERT_TRUE(a.started() && b.started()) << a.errors() << b.errors();
  std::vector<double> ms;
  for (int i = 0; i < 6; ++i) {
    const std::string id = "g" + std::to_string(i);
    ASSERT_EQ(request(b.http_port(), "POST", "/_nimbus/orchestrations/gate?instance=" + id, {}, "").status, 202);
    ASSERT_TRUE(eventually([&] {
      Response r = request(b.http_port(), "GET", "/_nimbus/orchestrations/gate/instances/" + id);
      return r.body.find("\"Running\"") != std::string::npos;
    }));
    auto waiting = std::async(std::launch::async, [&] {
      return request(a.http_port(), "GET", "/_nimbus/orchestrations/gate/instances/" + id + "?wait=30s");
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // a's read (100 ms) is done: it waits
    const auto raised = std::chrono::steady_clock::now();
    ASSERT_EQ(request(b.http_port(), "POST", "/_nimbus/orchestrations/gate/instances/" + id + "/events/open", {},
                      std::to_string(i)).status,
              202);
    Response r = waiting.get();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - raised).count());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(json::parse(r.body).at("output").as_int64(), i);
  }
  std::sort(ms.begin(), ms.end());
  // b's step and commit, then a's read of the status (100 ms). A poll would add up to a second.
  EXPECT_LT(ms[ms.size() / 2], 600) << "median " << ms[ms.size() / 2] << " ms: the waits ended at a poll";
  EXPECT_EQ(a.signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(b.signal_and_wait(SIGTERM), 0);
}

// A call made through one host and run by another is answered as soon as the other host
// commits it: its step wakes the call by name and the store tells every host. Host A's store
// is 100 ms slow (--inject-store-latency), so host B takes the operations; without the wake A
// would learn of each reply only from its one-second poll.
TEST(DurableEntities, ACallRunByAnotherHostIsAnsweredWhenItCommitsNotAtTheNextPoll) {
  const std::string url = store_url("postgres");
  ASSERT_FALSE(url.empty());
  TempDir dir, other;
  // No invocation history: its writes are relaxed too, and would pass for the steps' below.
  dir.write("nimbus.yaml", on_store("name: two\nobserve: {history: {keep: 0}}\nfunctions:\n", url) +
                               "  counter:\n    runtime: python\n    handler: ent.py:counter\n"
                               "    triggers: [{entity: {auth: anonymous}}]\n");
  dir.write("ent.py", R"(import sys
from nimbus import durable

@durable.entity
def counter(ctx):
    value = ctx.get_state(lambda: 0) + ctx.get_input()
    ctx.set_state(value)
    print("ran-" + ctx.entity_key, file=sys.stderr, flush=True)
    return value
)");
  for (const char* f : {"nimbus.yaml", "ent.py"}) other.write(f, dir.read(f));
  Host a(dir.path(), {"--inject-store-latency", "100ms"}), b(other.path());
  ASSERT_TRUE(a.started() && b.started()) << a.errors() << b.errors();
  ASSERT_EQ(request(b.http_port(), "POST", "/_nimbus/entities/counter/warm/add?call=true", {}, "1").status, 200);
  std::vector<double> ms;
  for (int i = 1; i <= 8; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    Response r = request(a.http_port(), "POST", "/_nimbus/entities/counter/remote/add?call=true", {}, "1");
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(json::parse(r.body).at("result").as_int64(), i);
  }
  std::sort(ms.begin(), ms.end());
  // Through A: its enqueue (100 ms), B's step, A's read of the reply (100 ms). A poll would
  // add most of a second to each.
  EXPECT_LT(ms[ms.size() / 2], 700) << "median " << ms[ms.size() / 2] << " ms: the calls waited for a poll";
  EXPECT_EQ(a.signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(b.signal_and_wait(SIGTERM), 0);
  // B ran the operations (A's slow store lost it the leases), so the answers crossed hosts.
  const std::string out = b.output();
  std::size_t ran = 0;
  for (std::size_t at = 0; (at = out.find("ran-remote", at)) != std::string::npos; ++at) ++ran;
  EXPECT_GE(ran, 6u) << "host b ran " << ran << " of the 8 operations\n" << out;
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// Per-call retry policies: a failed call is tried again after a durable timer, as many times
// as the policy says, in Python and in Node; the waits are in the history.
TEST(Durable, RetryPoliciesTryACallAgainOnDurableTimers) {
  TempDir dir;
  dir.write("nimbus.yaml", R"(name: retries
functions:
  retrying:
    runtime: python
    handler: orch.py:retrying
    triggers: [{orchestration: {auth: anonymous}}]
  noderetrying:
    runtime: node
    handler: orch.js:noderetrying
    triggers: [{orchestration: {auth: anonymous}}]
  attempts:
    runtime: python
    handler: acts.py:attempts
    retry: {max_attempts: 1}
    triggers: [{activity: {}}]
)");
  dir.write("orch.py", R"(from nimbus import durable

@durable.orchestrator
def retrying(ctx):
    policy = durable.RetryPolicy(max_attempts=5, first_interval_ms=200, backoff=1.5)
    third = yield ctx.call_activity("attempts", {"key": ctx.instance_id + "-a", "succeed_on": 3}, retry=policy)
    try:
        yield ctx.call_activity("attempts", {"key": ctx.instance_id + "-b", "succeed_on": 9},
                                retry=durable.RetryPolicy(max_attempts=2, first_interval_ms=10))
        gave_up = None
    except durable.ActivityFailed as e:
        gave_up = str(e)
    return {"third": third, "gave_up": gave_up}
)");
  dir.write("orch.js", R"(const durable = require('nimbus/durable');
module.exports.noderetrying = durable.orchestrator(function* (ctx) {
  return yield ctx.callActivity('attempts', { key: ctx.instanceId, succeed_on: 2 },
                                { retry: { maxAttempts: 3, firstIntervalMs: 50 } });
});
)");
  dir.write("acts.py", R"(def attempts(req, ctx):
    a = req.json()
    path = "attempts-" + a["key"] + ".txt"
    with open(path, "a") as f:
        f.write("x")
    with open(path) as f:
        n = len(f.read())
    if n < a["succeed_on"]:
        raise RuntimeError(f"attempt {n} failed")
    return n
)");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const int port = host.http_port();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/retrying?instance=r1", {}, "").status, 202);
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/noderetrying?instance=n1", {}, "").status, 202);
  auto finished = [&](const std::string& name, const std::string& id) {
    json::object st;
    EXPECT_TRUE(admin.wait([&] {
      Response r = request(port, "GET", "/_nimbus/orchestrations/" + name + "/instances/" + id + "?history=true");
      if (r.status != 200) return false;
      st = json::parse(r.body).as_object();
      return true;
    }, 30000)) << name << "/" << id;
    return st;
  };
  json::object r1 = finished("retrying", "r1");
  ASSERT_EQ(r1.at("runtimeStatus").as_string(), "Completed") << json::serialize(r1);
  EXPECT_EQ(r1.at("output").at("third").as_int64(), 3);
  EXPECT_EQ(std::string(r1.at("output").at("gave_up").as_string()).rfind("attempt 2 failed", 0), 0u)
      << json::serialize(r1.at("output"));
  // The first call: failed, timer, failed, timer, completed; the waits were 200 and 300 ms.
  std::vector<std::string> types;
  int64_t first_failed = -1, completed = -1, step_time = 0;
  for (const auto& e : r1.at("history").as_array()) {
    const std::string type(e.at("type").as_string());
    if (type == "orchestrator_started") {
      step_time = e.at("time_ms").as_int64();
      continue;
    }
    types.push_back(type);
    if (type == "task_failed" && first_failed < 0) first_failed = step_time;
    if (type == "task_completed" && completed < 0) completed = step_time;
  }
  ASSERT_GE(types.size(), 11u);
  EXPECT_EQ(std::vector<std::string>(types.begin(), types.begin() + 11),
            (std::vector<std::string>{"execution_started", "task_scheduled", "task_failed", "timer_created", "timer_fired",
                                      "task_scheduled", "task_failed", "timer_created", "timer_fired", "task_scheduled",
                                      "task_completed"}));
  EXPECT_GE(completed - first_failed, 500) << "the retries did not wait out their intervals";

  json::object n1 = finished("noderetrying", "n1");
  ASSERT_EQ(n1.at("runtimeStatus").as_string(), "Completed") << json::serialize(n1);
  EXPECT_EQ(n1.at("output").as_int64(), 2);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// `retention`: a finished instance is purged (record and history) that long after it
// finished, by a delayed event of its own; one still running is kept.
TEST(Durable, FinishedInstancesArePurgedAfterTheirRetention) {
  TempDir dir;
  dir.write("nimbus.yaml", R"(name: retention
functions:
  chain:
    runtime: python
    handler: orch.py:chain
    triggers: [{orchestration: {auth: anonymous, retention: 600ms}}]
  waiter:
    runtime: python
    handler: orch.py:waiter
    triggers: [{orchestration: {auth: anonymous, retention: 100ms}}]
  say_hello:
    runtime: python
    handler: acts.py:say_hello
    triggers: [{activity: {}}]
)");
  dir.write("orch.py", std::string(kOrchestrators) + R"(
@durable.orchestrator
def waiter(ctx):
    return (yield ctx.wait_for_external_event("go"))
)");
  dir.write("acts.py", kActivities);
  std::chrono::steady_clock::time_point done_at;
  {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    const int port = host.http_port();
    Admin admin{host.admin_port(), host.admin_token()};
    ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/chain?instance=c1", {}, R"(["Oslo", "Rome"])").status, 202);
    ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/waiter?instance=w1", {}, "").status, 202);
    ASSERT_TRUE(admin.wait([&] { return request(port, "GET", "/_nimbus/orchestrations/chain/instances/c1").status == 200; }));
    done_at = std::chrono::steady_clock::now();
    ASSERT_TRUE(admin.wait([&] { return request(port, "GET", "/_nimbus/orchestrations/chain/instances/c1").status == 404; }, 10000));
    EXPECT_GE(std::chrono::steady_clock::now() - done_at, std::chrono::milliseconds(450)) << "purged before its retention";
    // A running instance is not purged, however long it runs.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(request(port, "GET", "/_nimbus/orchestrations/waiter/instances/w1").status, 202);
    ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/waiter/instances/w1/events/go", {}, "1").status, 202);
    EXPECT_TRUE(admin.wait([&] { return request(port, "GET", "/_nimbus/orchestrations/waiter/instances/w1").status == 404; }));
    EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  }
  // Nothing of them is left in the store.
  ManualClock clock;
  auto store = open_store("sqlite:.nimbus/state.db", dir.path(), clock);
  ASSERT_TRUE(store.ok()) << store.error().message;
  for (const char* id : {"c1", "w1"}) {
    auto pages = (*store)->scan("_orch_history", std::string(id) + "/", 1000);
    ASSERT_TRUE(pages.ok());
    EXPECT_TRUE(pages->empty()) << id << " kept " << pages->size() << " history pages";
    auto record = (*store)->get("_orch", id);
    ASSERT_TRUE(record.ok());
    EXPECT_FALSE(record->has_value()) << id;
  }
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// Versioning: each instance records the version of its orchestrator's code it started on (a
// hash of the handler's file, or the trigger's `version:`). After a deploy that changes the
// file, `versioning: {on_mismatch: fail}` fails the instance in flight naming both versions;
// the default replays on the new code (a compatible change completes); an explicit version
// that did not change is no mismatch.
TEST(Durable, VersioningFailsInstancesOfAnotherVersionByPolicy) {
  TempDir dir;
  auto manifest = [](const std::string& pinned) {
    std::string m = "name: versions\nfunctions:\n";
    m += "  strict:\n    runtime: python\n    handler: strict.py:waits\n"
         "    triggers: [{orchestration: {auth: anonymous, versioning: {on_mismatch: fail}}}]\n";
    m += "  lenient:\n    runtime: python\n    handler: lenient.py:waits\n"
         "    triggers: [{orchestration: {auth: anonymous}}]\n";
    m += "  pinned:\n    runtime: python\n    handler: pinned.py:waits\n"
         "    triggers: [{orchestration: {auth: anonymous, version: \"" + pinned + "\", versioning: {on_mismatch: fail}}}]\n";
    return m;
  };
  const std::string code = R"(from nimbus import durable

@durable.orchestrator
def waits(ctx):
    data = yield ctx.wait_for_external_event("go")
    return data
)";
  dir.write("nimbus.yaml", manifest("1"));
  for (const char* f : {"strict.py", "lenient.py", "pinned.py"}) dir.write(f, code);
  std::string started_on;
  {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    Admin admin{host.admin_port(), host.admin_token()};
    for (const char* name : {"strict", "lenient", "pinned"}) {
      ASSERT_EQ(request(host.http_port(), "POST", std::string("/_nimbus/orchestrations/") + name + "?instance=" + name + "-1", {}, "").status, 202);
      ASSERT_TRUE(admin.wait([&] {
        Response r = request(host.http_port(), "GET", std::string("/_nimbus/orchestrations/") + name + "/instances/" + name + "-1");
        return r.body.find("\"Running\"") != std::string::npos;
      }));
    }
    Response st = request(host.http_port(), "GET", "/_nimbus/orchestrations/strict/instances/strict-1");
    started_on = std::string(json::parse(st.body).at("version").as_string());
    EXPECT_EQ(started_on.size(), 16u) << st.body;
    Response pinned = request(host.http_port(), "GET", "/_nimbus/orchestrations/pinned/instances/pinned-1");
    EXPECT_EQ(json::parse(pinned.body).at("version").as_string(), "1") << pinned.body;
    EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  }
  // The deploy: every file changes (compatibly: a comment), the pinned version stays "1".
  for (const char* f : {"strict.py", "lenient.py", "pinned.py"}) dir.write(f, "# v2: reviewed\n" + code);
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  std::map<std::string, json::object> done;
  for (const char* name : {"strict", "lenient", "pinned"}) {
    ASSERT_EQ(request(host.http_port(), "POST", std::string("/_nimbus/orchestrations/") + name + "/instances/" + name + "-1/events/go", {}, "7").status, 202);
    ASSERT_TRUE(admin.wait([&] {
      Response r = request(host.http_port(), "GET", std::string("/_nimbus/orchestrations/") + name + "/instances/" + name + "-1");
      if (r.status != 200) return false;
      done[name] = json::parse(r.body).as_object();
      return true;
    })) << name;
  }
  EXPECT_EQ(done["strict"].at("runtimeStatus").as_string(), "Failed") << json::serialize(done["strict"]);
  const std::string error(done["strict"].at("error").as_string());
  EXPECT_NE(error.find("version mismatch"), std::string::npos) << error;
  EXPECT_NE(error.find(started_on), std::string::npos) << error;
  EXPECT_EQ(done["lenient"].at("runtimeStatus").as_string(), "Completed") << json::serialize(done["lenient"]);
  EXPECT_EQ(done["pinned"].at("runtimeStatus").as_string(), "Completed") << json::serialize(done["pinned"]);
  EXPECT_EQ(done["pinned"].at("output").as_int64(), 7);
  // A new instance records the new version and runs.
  ASSERT_EQ(request(host.http_port(), "POST", "/_nimbus/orchestrations/strict?instance=v2", {}, "").status, 202);
  ASSERT_EQ(request(host.http_port(), "POST", "/_nimbus/orchestrations/strict/instances/v2/events/go", {}, "8").status, 202);
  json::object v2;
  ASSERT_TRUE(admin.wait([&] {
    Response r = request(host.http_port(), "GET", "/_nimbus/orchestrations/strict/instances/v2");
    if (r.status != 200) return false;
    v2 = json::parse(r.body).as_object();
    return true;
  }));
  EXPECT_EQ(v2.at("runtimeStatus").as_string(), "Completed") << json::serialize(v2);
  EXPECT_NE(v2.at("version").as_string(), started_on);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// The status at `path` once its instance has finished (the route answers 200), or an empty
// object after 30 s.
json::object finished_status(Admin& admin, int port, const std::string& path) {
  json::object st;
  admin.wait([&] {
    Response r = request(port, "GET", path);
    if (r.status != 200) return false;
    st = json::parse(r.body).as_object();
    return true;
  }, 30000);
  return st;
}

// A C++ orchestrator (a coroutine: co_await ctx.call_activity(...)) and a C++ entity
// (tests/functions/durable_cpp.cpp) run with Python activities: chaining, fan-out, a retry
// policy that gives up, a signal and a call to the entity, a timer, an external event raced
// against a timer, custom status and a deterministic guid; replayed at every step.
TEST(Durable, ACppOrchestratorAndEntityRunOnCoroutines) {
  TempDir dir;
  std::string m = "name: cpp\nfunctions:\n";
  m += "  cppchain:\n    runtime: native\n    handler: " + fn("durable_cpp") +
       "\n    triggers: [{orchestration: {auth: anonymous}}]\n";
  m += "  cppcounter:\n    runtime: native\n    handler: " + fn("durable_cpp_entity") +
       "\n    triggers: [{entity: {auth: anonymous}}]\n";
  for (const char* a : {"say_hello", "double", "flaky"}) {
    m += std::string("  ") + a + ":\n    runtime: python\n    handler: acts.py:" + a +
         "\n    retry: {max_attempts: 1}\n    triggers: [{activity: {}}]\n";
  }
  dir.write("nimbus.yaml", m);
  dir.write("acts.py", kActivities);
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const int port = host.http_port();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/cppchain?instance=c1", {}, R"(["Tokyo", "Lima"])").status, 202);
  // It waits for "go" after its timer: raise it once it waits.
  ASSERT_TRUE(admin.wait([&] {
    Response r = request(port, "GET", "/_nimbus/orchestrations/cppchain/instances/c1?history=true");
    return r.body.find("timer_fired") != std::string::npos;  // the first timer: it waits for "go" now
  }, 30000)) << host.output().substr(0, 3000) << request(port, "GET", "/_nimbus/orchestrations/cppchain/instances/c1?history=true").body;
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/cppchain/instances/c1/events/go", {}, "1").status, 202);
  const json::object st = finished_status(admin, port, "/_nimbus/orchestrations/cppchain/instances/c1");
  ASSERT_FALSE(st.empty()) << "c1 did not finish";
  ASSERT_EQ(st.at("runtimeStatus").as_string(), "Completed") << json::serialize(st);
  const json::object& out = st.at("output").as_object();
  EXPECT_EQ(json::serialize(out.at("hellos")), R"(["Hello Tokyo","Hello Lima"])");
  EXPECT_EQ(out.at("sum").as_int64(), 110);
  EXPECT_NE(std::string(out.at("failure").as_string()).find("the payment service said no"), std::string::npos)
      << json::serialize(out);
  EXPECT_EQ(out.at("counted").as_int64(), 7) << "the signal (5) and the call (2), in order";
  EXPECT_EQ(out.at("go").as_string(), "event");
  EXPECT_EQ(out.at("guid").as_string().size(), 36u);
  EXPECT_EQ(out.at("child").as_string(), "Hello Oslo") << "a sub-orchestration's result";
  EXPECT_EQ(st.at("customStatus").as_string(), "fanned out");
  // The retry policy tried the failing call twice, with a timer between.
  Response h = request(port, "GET", "/_nimbus/orchestrations/cppchain/instances/c1?history=true");
  std::size_t failed = 0;
  for (std::size_t at = 0; (at = h.body.find("\"task_failed\"", at)) != std::string::npos; ++at) ++failed;
  EXPECT_EQ(failed, 2u) << h.body.substr(0, 2000);
  // The entity from a client: a call's result, and a failing operation that leaves the state.
  Response called = request(port, "POST", "/_nimbus/entities/cppcounter/k/add?call=true", {}, "3");
  EXPECT_EQ(called.body, R"({"result":10})");
  Response boom = request(port, "POST", "/_nimbus/entities/cppcounter/k/boom?call=true");
  EXPECT_EQ(boom.status, 500) << boom.body;
  EXPECT_NE(boom.body.find("no such operation"), std::string::npos) << boom.body;
  Response state = request(port, "GET", "/_nimbus/entities/cppcounter/k");
  EXPECT_EQ(json::parse(state.body).at("state").as_int64(), 10) << state.body;

  // Continue-as-new: a first round waits on a timer, then the instance starts over with a new
  // input and a fresh history (whose run is a child's: one activity).
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/cppchain?instance=c2", {},
                    R"({"round": 0, "then": {"child": "Quito"}})").status, 202);
  const json::object again = finished_status(admin, port, "/_nimbus/orchestrations/cppchain/instances/c2?history=true");
  ASSERT_FALSE(again.empty()) << "c2 did not finish";
  ASSERT_EQ(again.at("runtimeStatus").as_string(), "Completed") << json::serialize(again);
  EXPECT_EQ(again.at("output").as_string(), "Hello Quito");
  EXPECT_EQ(json::serialize(again.at("input")), R"({"child":"Quito"})");
  EXPECT_EQ(json::serialize(again.at("history")).find("timer_fired"), std::string::npos)
      << "the first round's timer is not in the new history: " << json::serialize(again.at("history"));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0) << host.errors().substr(0, 6000);
}

// The same patterns with a Node orchestrator (generators, sdk/node/lib/nimbus/durable.js) and
// Python activities: a first round on a timer that continues as new, chaining, fan-out, a
// retry policy that gives up and a caught failure, a sub-orchestration, a signal and a call to
// a Node entity, a critical section over it, an external event raced against a timer, custom
// status and a deterministic guid.
const char* kNodePatterns = R"(const durable = require('nimbus/durable');
module.exports.nodeall = durable.orchestrator(function* (ctx) {
  if (ctx.input.round === 0) {
    yield ctx.createTimer(ctx.currentTimeMs + 20);
    ctx.continueAsNew({ round: 1, cities: ctx.input.cities });
  }
  const hellos = [];
  for (const city of ctx.input.cities) hellos.push(yield ctx.callActivity('say_hello', city));
  const doubled = yield ctx.whenAll([1, 2, 3, 4].map((i) => ctx.callActivity('double', i)));
  let failure = '';
  try {
    yield ctx.callActivity('flaky', 'x', { retry: { maxAttempts: 2, firstIntervalMs: 20 } });
  } catch (e) {
    if (!(e instanceof durable.ActivityFailed)) throw e;
    failure = e.message;
  }
  const child = yield ctx.callSubOrchestration('nodechild', 'Oslo');
  ctx.signalEntity('nodecounter', 'k', 'add', 5);
  const counted = yield ctx.callEntity('nodecounter', 'k', 'add', 2);
  yield ctx.lockEntities([['nodecounter', 'k']]);
  const held = yield ctx.callEntity('nodecounter', 'k', 'add', 0);
  ctx.unlockEntities();
  ctx.setCustomStatus('waiting for go');
  const winner = yield ctx.whenAny([ctx.waitForExternalEvent('go'), ctx.createTimer(ctx.currentTimeMs + 3600000)]);
  return { round: ctx.input.round, hellos, sum: doubled.reduce((a, b) => a + b, 0), failure, child, counted, held,
           go: winner.result, guid: ctx.newGuid() };
});
module.exports.nodechild = durable.orchestrator(function* (ctx) {
  return yield ctx.callActivity('say_hello', ctx.input);
});
module.exports.nodecounter = durable.entity((ctx) => {
  ctx.setState(ctx.getState(() => 0) + ctx.getInput());
  return ctx.getState();
});
)";

TEST(Durable, ANodeOrchestratorRunsEveryPattern) {
  TempDir dir;
  std::string m = "name: nodeall\nfunctions:\n";
  for (const char* o : {"nodeall", "nodechild"}) {
    m += std::string("  ") + o + ":\n    runtime: node\n    handler: all.js:" + o +
         "\n    triggers: [{orchestration: {auth: anonymous}}]\n";
  }
  m += "  nodecounter:\n    runtime: node\n    handler: all.js:nodecounter\n    triggers: [{entity: {auth: anonymous}}]\n";
  for (const char* a : {"say_hello", "double", "flaky"}) {
    m += std::string("  ") + a + ":\n    runtime: python\n    handler: acts.py:" + a +
         "\n    retry: {max_attempts: 1}\n    triggers: [{activity: {}}]\n";
  }
  dir.write("nimbus.yaml", m);
  dir.write("acts.py", kActivities);
  dir.write("all.js", kNodePatterns);
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const int port = host.http_port();
  Admin admin{host.admin_port(), host.admin_token()};
  const std::string path = "/_nimbus/orchestrations/nodeall/instances/n1";
  ASSERT_EQ(request(port, "POST", "/_nimbus/orchestrations/nodeall?instance=n1", {},
                    R"({"round": 0, "cities": ["Tokyo", "Lima"]})").status, 202);
  // Raised once it waits for it (the second round, past its critical section).
  ASSERT_TRUE(admin.wait([&] {
    Response r = request(port, "GET", path);
    return r.status == 202 && r.body.find("\"waiting for go\"") != std::string::npos;
  }, 30000)) << host.output().substr(0, 3000) << request(port, "GET", path + "?history=true").body;
  ASSERT_EQ(request(port, "POST", path + "/events/go", {}, R"("yes")").status, 202);
  const json::object st = finished_status(admin, port, path + "?history=true");
  ASSERT_FALSE(st.empty()) << "n1 did not finish";
  ASSERT_EQ(st.at("runtimeStatus").as_string(), "Completed") << json::serialize(st);
  const json::object& out = st.at("output").as_object();
  EXPECT_EQ(out.at("round").as_int64(), 1) << "continued as new";
  EXPECT_EQ(json::serialize(st.at("input")), R"({"round":1,"cities":["Tokyo","Lima"]})");
  EXPECT_EQ(json::serialize(out.at("hellos")), R"(["Hello Tokyo","Hello Lima"])");
  EXPECT_EQ(out.at("sum").as_int64(), 20);
  EXPECT_NE(std::string(out.at("failure").as_string()).find("the payment service said no"), std::string::npos)
      << json::serialize(out);
  EXPECT_EQ(out.at("child").as_string(), "Hello Oslo");
  EXPECT_EQ(out.at("counted").as_int64(), 7) << "the signal (5) and the call (2), in order";
  EXPECT_EQ(out.at("held").as_int64(), 7);
  EXPECT_EQ(out.at("go").as_string(), "yes");
  EXPECT_EQ(out.at("guid").as_string().size(), 36u);
  EXPECT_EQ(st.at("customStatus").as_string(), "waiting for go");
  const std::string history = json::serialize(st.at("history"));
  std::size_t failed = 0;
  for (std::size_t at = 0; (at = history.find("\"task_failed\"", at)) != std::string::npos; ++at) ++failed;
  EXPECT_EQ(failed, 2u) << "the retry policy tried twice: " << history.substr(0, 2000);
  Response state = request(port, "GET", "/_nimbus/entities/nodecounter/k");
  EXPECT_EQ(json::parse(state.body).at("state").as_int64(), 7) << state.body;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0) << host.errors().substr(0, 6000);
}

}  // namespace
}  // namespace nimbus::testing
