// Invocation history and live logs end to end (observe/history.h, admin/observe_endpoints.h):
// the store keeps each function's last N invocations with their ctx.log lines, across
// restarts; `nimbus invocations` filters them; /admin/logs is a long poll that `nimbus logs -f`
// follows across a restart of the host.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <boost/json.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "it_common.h"

extern char** environ;

namespace nimbus::testing {
namespace {

namespace json = boost::json;

const char* kHandlers = R"PY(
def hello(req, ctx):
    ctx.log.info("order " + req.query.get("order", "none") + " looked up")
    ctx.log.warn("second line")
    return "ok"
def boom(req, ctx):
    ctx.log.info("about to fail")
    raise KeyError("no such order")
)PY";

std::string history_app(const std::string& extra = "") {
  return "name: hist\n" + extra +
         "functions:\n"
         "  hello:\n    runtime: python\n    handler: app.py:hello\n    triggers: [{http: {route: /hello}}]\n"
         "  boom:\n    runtime: python\n    handler: app.py:boom\n    triggers: [{http: {route: /boom}}]\n";
}

std::string trace_of(int n) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%032x", n + 0x1000);
  return buf;
}

std::map<std::string, std::string> traced(int n) {
  return {{"traceparent", "00-" + trace_of(n) + "-00f067aa0ba902b7-01"}};
}

std::vector<json::object> invocations(const Admin& admin, const std::string& query) {
  Response r = admin.call("GET", "/admin/invocations" + query);
  EXPECT_EQ(r.status, 200) << r.body;
  std::vector<json::object> out;
  if (r.status != 200) return out;
  json::object body = parse_object(r.body);
  for (auto& v : body["invocations"].as_array()) out.push_back(v.as_object());
  return out;
}

std::string str(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

TEST(History, KeepsEachInvocationWithItsLogLinesTraceAndErrorAcrossARestart) {
  TempDir dir;
  dir.write("nimbus.yaml", history_app());
  dir.write("app.py", kHandlers);
  std::string hello_id;
  {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    Admin admin{host.admin_port(), host.admin_token()};
    EXPECT_EQ(request(host.http_port(), "GET", "/hello?order=A-17", traced(1)).status, 200);
    EXPECT_EQ(request(host.http_port(), "GET", "/hello?order=B-2", traced(2)).status, 200);
    EXPECT_EQ(request(host.http_port(), "GET", "/boom", traced(3)).status, 500);

    // "What happened to order A-17": its trace finds the one invocation, with its lines.
    auto a17 = invocations(admin, "?trace=" + trace_of(1));
    ASSERT_EQ(a17.size(), 1u);
    EXPECT_EQ(str(a17[0], "function"), "hello");
    EXPECT_EQ(str(a17[0], "trigger"), "http");
    EXPECT_EQ(str(a17[0], "outcome"), "success");
    EXPECT_EQ(a17[0].at("status").as_int64(), 200);
    EXPECT_EQ(a17[0].at("attempt").as_int64(), 1);
    EXPECT_GT(a17[0].at("duration_ms").to_number<double>(), 0.0);
    const auto& logs = a17[0].at("logs").as_array();
    ASSERT_EQ(logs.size(), 2u) << json::serialize(a17[0]);
    EXPECT_EQ(logs[0].at("msg").as_string(), "order A-17 looked up");
    EXPECT_EQ(logs[0].at("level").as_string(), "info");
    EXPECT_EQ(logs[1].at("msg").as_string(), "second line");
    EXPECT_EQ(logs[1].at("level").as_string(), "warn");
    hello_id = str(a17[0], "invocation_id");

    // Newest first; --failed keeps the failure, with its error and its line.
    auto all = invocations(admin, "");
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(str(all[0], "function"), "boom");
    EXPECT_EQ(str(all[2], "trace_id"), trace_of(1));
    auto failed = invocations(admin, "?failed=1");
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(str(failed[0], "outcome"), "error");
    EXPECT_EQ(str(failed[0], "error_type"), "KeyError");
    EXPECT_NE(str(failed[0], "error").find("no such order"), std::string::npos);
    EXPECT_EQ(failed[0].at("logs").as_array().at(0).at("msg").as_string(), "about to fail");
    EXPECT_EQ(invocations(admin, "?function=hello").size(), 2u);
    EXPECT_EQ(invocations(admin, "?function=hello&limit=1").size(), 1u);
    EXPECT_EQ(invocations(admin, "?id=" + hello_id).size(), 1u);

    Response bad = admin.call("GET", "/admin/invocations?trace=not-a-trace");
    EXPECT_EQ(bad.status, 400);
    EXPECT_NE(bad.body.find("not a trace id"), std::string::npos) << bad.body;
    EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  }
  // The store kept them: a new run answers the same, and the CLI shows one in full.
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  EXPECT_EQ(invocations(admin, "").size(), 3u);
  CommandResult shown = run_nimbus({"invocations", "--id", hello_id}, dir.path());
  EXPECT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_NE(shown.out.find("order A-17 looked up"), std::string::npos) << shown.out;
  EXPECT_NE(shown.out.find(trace_of(1)), std::string::npos) << shown.out;
  CommandResult listed = run_nimbus({"invocations", "--failed"}, dir.path());
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(lines_with(listed.out, {"boom", "error"}), 1) << listed.out;
  EXPECT_EQ(listed.out.find("hello "), std::string::npos) << listed.out;
  EXPECT_NE(listed.out.find("KeyError"), std::string::npos) << listed.out;
}

TEST(History, KeepsTheLastNOfEachFunctionAndTheRingGoesOnAfterARestart) {
  TempDir dir;
  dir.write("nimbus.yaml", history_app("observe: {history: {keep: 5}}\n"));
  dir.write("app.py", kHandlers);
  {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    Admin admin{host.admin_port(), host.admin_token()};
    for (int i = 0; i < 12; ++i) ASSERT_EQ(request(host.http_port(), "GET", "/hello", traced(i)).status, 200);
    EXPECT_EQ(request(host.http_port(), "GET", "/boom", traced(100)).status, 500);
    auto kept = invocations(admin, "?function=hello&limit=100");
    ASSERT_EQ(kept.size(), 5u);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(str(kept[static_cast<std::size_t>(i)], "trace_id"), trace_of(11 - i));
    EXPECT_EQ(invocations(admin, "?function=boom").size(), 1u);  // each function has its own ring
    EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  }
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  for (int i = 12; i < 15; ++i) ASSERT_EQ(request(host.http_port(), "GET", "/hello", traced(i)).status, 200);
  auto kept = invocations(admin, "?function=hello&limit=100");
  ASSERT_EQ(kept.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(str(kept[static_cast<std::size_t>(i)], "trace_id"), trace_of(14 - i));
  Response metrics = request(host.admin_port(), "GET", "/metrics");
  EXPECT_NE(metrics.body.find("nimbus_history_records_written_total 3"), std::string::npos) << metrics.body;
}

TEST(History, QueueRetriesAreRecordedWithTheirAttempt) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: hist\nfunctions:\n  thrower:\n    runtime: native\n    handler: " + fn("thrower") +
                               "\n    retry: {max_attempts: 3, backoff: fixed, initial: 10ms, jitter: 0}\n"
                               "    triggers: [{queue: {name: work}}]\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_EQ(admin.call("POST", "/admin/queues/work/messages", "x").status, 201);
  std::vector<json::object> tries;
  EXPECT_TRUE(admin.wait([&] {
    tries = invocations(admin, "?function=thrower");
    return tries.size() >= 3;
  }));
  ASSERT_EQ(tries.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(tries[static_cast<std::size_t>(i)].at("attempt").as_int64(), 3 - i);
    EXPECT_EQ(str(tries[static_cast<std::size_t>(i)], "trigger"), "queue");
    EXPECT_NE(str(tries[static_cast<std::size_t>(i)], "outcome"), "success");
  }
}

TEST(History, CanBeTurnedOffAndABadKeepIsAClearError) {
  TempDir dir;
  dir.write("nimbus.yaml", history_app("observe: {history: {keep: 0}}\n"));
  dir.write("app.py", kHandlers);
  {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    Admin admin{host.admin_port(), host.admin_token()};
    EXPECT_EQ(request(host.http_port(), "GET", "/hello").status, 200);
    Response r = admin.call("GET", "/admin/invocations");
    EXPECT_EQ(r.status, 409);
    EXPECT_NE(r.body.find("history is off"), std::string::npos) << r.body;
    EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  }
  dir.write("nimbus.yaml", history_app("observe: {history: {keep: -3}}\n"));
  CommandResult r = run_nimbus({"validate", "."}, dir.path());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE((r.out + r.err).find("observe.history.keep"), std::string::npos) << r.out << r.err;
}

TEST(Logs, TailFiltersByFunctionAndALongPollAnswersWhenALineComes) {
  TempDir dir;
  dir.write("nimbus.yaml", history_app());
  dir.write("app.py", kHandlers);
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  EXPECT_EQ(request(host.http_port(), "GET", "/hello?order=T-1").status, 200);
  EXPECT_EQ(request(host.http_port(), "GET", "/boom").status, 500);
  ASSERT_TRUE(host.wait_for_output("about to fail"));
  std::string next;
  ASSERT_TRUE(admin.wait([&] {
    Response r = admin.call("GET", "/admin/logs?function=hello&limit=2");
    next = r.header("x-nimbus-log-next");
    return r.status == 200 && lines_with(r.body, {"\"function\":\"hello\""}) == 2 &&
           lines_with(r.body, {"\"msg\":\"invocation\""}) == 1;
  }));
  Response tail = admin.call("GET", "/admin/logs?function=hello&limit=2");
  EXPECT_EQ(tail.header("content-type"), "application/x-ndjson");
  EXPECT_EQ(lines_with(tail.body, {"boom"}), 0) << tail.body;
  EXPECT_FALSE(tail.header("x-nimbus-host").empty());
  next = tail.header("x-nimbus-log-next");

  // Nothing new for hello: a poll waits, and answers with the line once it is written.
  auto poll = std::async(std::launch::async, [&] {
    return admin.call("GET", "/admin/logs?function=hello&wait_ms=20000&after=" + next);
  });
  EXPECT_EQ(poll.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);  // still waiting
  EXPECT_EQ(request(host.http_port(), "GET", "/boom").status, 500);  // not hello's: it keeps waiting
  EXPECT_EQ(request(host.http_port(), "GET", "/hello?order=T-2").status, 200);
  Response got = poll.get();
  EXPECT_EQ(got.status, 200);
  EXPECT_NE(got.body.find("order T-2 looked up"), std::string::npos) << got.body;
  EXPECT_EQ(got.body.find("boom"), std::string::npos) << got.body;
  EXPECT_GT(std::stoull(got.header("x-nimbus-log-next")), std::stoull(next));

  // A position from another run of the host: this run's lines, from the first.
  Response other = admin.call("GET", "/admin/logs?after=999999&host=another-run");
  EXPECT_NE(other.body.find("host started"), std::string::npos) << other.body;
}

// `nimbus logs -f` in the background: its stdout goes to a file.
struct Follower {
  Follower(const std::filesystem::path& app_dir, const std::filesystem::path& out) {
    std::string binary = NIMBUS_BINARY;
    std::vector<std::string> args = {binary, "logs", "-f", "hello", "--dir", app_dir.string()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, (out.string() + ".err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    EXPECT_EQ(posix_spawn(&pid, binary.c_str(), &fa, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&fa);
  }
  ~Follower() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      waitpid(pid, nullptr, 0);
    }
  }
  pid_t pid = -1;
};

TEST(Logs, FollowingPrintsNewLinesAndFindsTheHostAgainAfterARestart) {
  TempDir dir;
  TempDir out_dir;
  dir.write("nimbus.yaml", history_app());
  dir.write("app.py", kHandlers);
  const auto out = out_dir.path() / "follow.txt";
  auto host = std::make_unique<Host>(dir.path());
  ASSERT_TRUE(host->started()) << host->errors();
  Follower follower(dir.path(), out);
  auto printed = [&](const std::string& needle) {
    return eventually([&] { return slurp(out).find(needle) != std::string::npos; }, 20000);
  };
  // Lines from before it connected come in its first answer (the last 100), new ones as they come.
  EXPECT_EQ(request(host->http_port(), "GET", "/hello?order=F-1").status, 200);
  EXPECT_TRUE(printed("order F-1 looked up")) << slurp(out);
  EXPECT_EQ(request(host->http_port(), "GET", "/hello?order=before-stop").status, 200);
  EXPECT_TRUE(printed("order before-stop looked up")) << slurp(out);
  EXPECT_EQ(host->signal_and_wait(SIGTERM), 0);
  host.reset();
  EXPECT_TRUE(eventually([&] { return slurp(out_dir.path() / "follow.txt.err").find("waiting for it to start") != std::string::npos; }))
      << slurp(out_dir.path() / "follow.txt.err");

  host = std::make_unique<Host>(dir.path());
  ASSERT_TRUE(host->started()) << host->errors();
  EXPECT_EQ(request(host->http_port(), "GET", "/hello?order=after-restart").status, 200);
  EXPECT_TRUE(printed("order after-restart looked up")) << slurp(out);
  EXPECT_NE(slurp(out_dir.path() / "follow.txt.err").find("the host is back"), std::string::npos);
  // Only hello's lines, each once.
  const std::string text = slurp(out);
  EXPECT_EQ(lines_with(text, {"order before-stop looked up"}), 1) << text;
  EXPECT_EQ(lines_with(text, {"order after-restart looked up"}), 1) << text;
  EXPECT_EQ(text.find("\"function\":\"boom\""), std::string::npos);
}

}  // namespace
}  // namespace nimbus::testing
