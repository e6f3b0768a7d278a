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
    // (the reply goes out before the invocation is recorded)
    ASSERT_TRUE(admin.wait([&] { return invocations(admin, "").size() == 3; }));

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
    ASSERT_TRUE(admin.wait([&] { return invocations(admin, "?function=boom").size() == 1; }));
    std::vector<json::object> kept;
    ASSERT_TRUE(admin.wait([&] {
      kept = invocations(admin, "?function=hello&limit=100");
      return !kept.empty() && str(kept[0], "trace_id") == trace_of(11);
    }));
    ASSERT_EQ(kept.size(), 5u);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(str(kept[static_cast<std::size_t>(i)], "trace_id"), trace_of(11 - i));
    EXPECT_EQ(invocations(admin, "?function=boom").size(), 1u);  // each function has its own ring
    EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  }
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  for (int i = 12; i < 15; ++i) ASSERT_EQ(request(host.http_port(), "GET", "/hello", traced(i)).status, 200);
  std::vector<json::object> kept;
  ASSERT_TRUE(admin.wait([&] {
    kept = invocations(admin, "?function=hello&limit=100");
    return !kept.empty() && str(kept[0], "trace_id") == trace_of(14);
  }));
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

  // Nothing comes for a function with no lines: the poll answers empty when its time is up.
  const auto asked = std::chrono::steady_clock::now();
  Response quiet = admin.call("GET", "/admin/logs?function=nobody&wait_ms=300&after=" + got.header("x-nimbus-log-next"));
  EXPECT_EQ(quiet.status, 200);
  EXPECT_TRUE(quiet.body.empty()) << quiet.body;
  EXPECT_GE(std::chrono::steady_clock::now() - asked, std::chrono::milliseconds(250));
  EXPECT_LT(std::chrono::steady_clock::now() - asked, std::chrono::seconds(5));

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

// What a scrape reads when it asks (observe/host_metrics.h, the timers, the store's writer,
// the fleet), checked by promtool and by the Prometheus Python client's parser.
TEST(Metrics, QueuesStreamsTimersStoreWorkersProcessAndBuildPassPromtool) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: metered\nstreams:\n  clicks: {partitions: 2}\nfunctions:\n"
            "  failing:\n    runtime: native\n    handler: " + fn("thrower") + "\n    retry: {max_attempts: 1}\n"
            "    triggers: [{queue: {name: jobs}}]\n"
            "  reader:\n    runtime: python\n    handler: app.py:hello\n    triggers: [{stream: {name: clicks, group: g1}}]\n"
            "  tick:\n    runtime: python\n    handler: app.py:hello\n"
            "    triggers: [{timer: {schedule: \"0 0 1 1 *\"}}, {timer: {schedule: \"0 0 2 1 *\"}}]\n"
            "  crash:\n    runtime: python\n    handler: app.py:crash\n    triggers: [{http: {route: /crash}}]\n"
            "  slow:\n    runtime: python\n    handler: app.py:slow\n    timeout: 300ms\n    triggers: [{http: {route: /slow}}]\n"
            // Traces on (to a port nothing listens on): their counters are on the dashboard too.
            "observe: {otlp: {endpoint: \"http://127.0.0.1:9/v1/traces\"}}\n");
  dir.write("app.py", kPythonHandlers);
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  for (int i = 0; i < 3; ++i) ASSERT_EQ(admin.call("POST", "/admin/queues/waiting/messages", "x").status, 201);
  ASSERT_EQ(admin.call("POST", "/admin/queues/jobs/messages", "x").status, 201);
  for (int i = 0; i < 4; ++i) {
    ASSERT_EQ(admin.call("POST", "/admin/streams/clicks/records", "c", {{"x-key", "k" + std::to_string(i)}}).status, 201);
  }
  EXPECT_EQ(request(host.http_port(), "GET", "/crash").status, 502);
  EXPECT_EQ(request(host.http_port(), "GET", "/slow?s=5").status, 504);  // its worker is killed for the overrun
  // A deploy, so that the per-version families are there (deploy/grafana charts them).
  CommandResult deployed = run_nimbus({"deploy", "."}, dir.path());
  ASSERT_EQ(deployed.exit_code, 0) << deployed.err;
  std::string text;
  auto has = [&](const std::string& line) { return text.find(line) != std::string::npos; };
  ASSERT_TRUE(admin.wait([&] {
    text = request(host.admin_port(), "GET", "/metrics").body;
    // The group has read every record: a lag line per partition it checkpointed, all 0.
    int lag_lines = 0;
    int64_t lag = 0;
    const std::string lag_key = "nimbus_stream_lag_records{stream=\"clicks\",group=\"g1\",partition=";
    for (auto at = text.find(lag_key); at != std::string::npos; at = text.find(lag_key, at + 1)) {
      ++lag_lines;
      lag += std::stoll(text.substr(text.find("} ", at) + 2));
    }
    return has("nimbus_queue_dead_letters{queue=\"jobs\"} 1\n") && lag_lines > 0 && lag == 0 &&
           has("nimbus_worker_exits_total{function=\"crash\",reason=\"crashed\"} 1\n") &&
           has("nimbus_worker_exits_total{function=\"slow\",reason=\"timeout\"} 1\n");
  })) << text;
  EXPECT_TRUE(has("nimbus_queue_messages{queue=\"waiting\",state=\"ready\"} 3\n")) << text;
  EXPECT_TRUE(has("nimbus_queue_messages{queue=\"waiting\",state=\"in_flight\"} 0\n")) << text;
  int64_t records = 0;
  for (const char* p : {"0", "1"}) {
    const std::string key = std::string("nimbus_stream_next_offset{stream=\"clicks\",partition=\"") + p + "\"} ";
    if (auto at = text.find(key); at != std::string::npos) records += std::stoll(text.substr(at + key.size()));
  }
  EXPECT_EQ(records, 4) << text;
  // Two timers on one function: a series each.
  EXPECT_TRUE(has("nimbus_timer_last_run_timestamp_seconds{function=\"tick\",timer=\"0\",schedule=\"0 0 1 1 *\"} 0\n")) << text;
  EXPECT_TRUE(has("nimbus_timer_last_run_timestamp_seconds{function=\"tick\",timer=\"1\",schedule=\"0 0 2 1 *\"} 0\n")) << text;
  const std::string next_key = "nimbus_timer_next_run_timestamp_seconds{function=\"tick\",timer=\"0\",schedule=\"0 0 1 1 *\"} ";
  ASSERT_TRUE(has(next_key)) << text;
  EXPECT_GT(std::stoll(text.substr(text.find(next_key) + next_key.size())), ::time(nullptr));
  EXPECT_TRUE(has("nimbus_timer_skipped_runs_total{function=\"tick\",timer=\"1\",schedule=\"0 0 2 1 *\"} 0\n")) << text;
  EXPECT_TRUE(has("nimbus_worker_exits_total{function=\"crash\",reason=\"timeout\"} 0\n")) << text;  // every reason, from 0
  const std::string batches_key = "nimbus_store_commit_batches_count ";
  ASSERT_TRUE(has(batches_key)) << text;
  EXPECT_GT(std::stoll(text.substr(text.find(batches_key) + batches_key.size())), 0);
  EXPECT_TRUE(has("nimbus_store_commit_duration_seconds_bucket{le=\"+Inf\"}")) << text;
  EXPECT_TRUE(has("nimbus_build_info{version=\"" NIMBUS_VERSION_TEXT "\"} 1\n")) << text;
  const std::string start_key = "\nprocess_start_time_seconds ";
  ASSERT_TRUE(has(start_key)) << text;
  EXPECT_NEAR(std::stod(text.substr(text.find(start_key) + start_key.size())), static_cast<double>(::time(nullptr)), 120.0);
  for (const char* family : {"process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds ",
                             "process_max_fds ", "process_threads ", "process_virtual_memory_bytes "}) {
    EXPECT_TRUE(has(family)) << family;
  }

  TempDir scratch;
  scratch.write("metrics.txt", text);
  const std::string file = (scratch.path() / "metrics.txt").string();
  EXPECT_EQ(check_prometheus_text(text), "") << text;
  EXPECT_EQ(std::system(("promtool check metrics < " + file + " > " + file + ".out 2>&1").c_str()), 0)
      << slurp(file + ".out") << "\n(promtool comes with Debian's prometheus package: scripts/setup.sh installs it)";
  EXPECT_EQ(std::system(("/usr/bin/python3 " NIMBUS_SOURCE_DIR "/tests/check_prometheus.py < " + file + " > /dev/null").c_str()), 0);

  // Every metric the Grafana dashboard charts is one this host serves (tests/deploy_check.sh
  // checks its queries are PromQL).
  std::set<std::string> families;
  for (std::size_t at = text.find("# TYPE "); at != std::string::npos; at = text.find("# TYPE ", at + 1)) {
    const std::size_t start = at + 7;
    families.insert(text.substr(start, text.find(' ', start) - start));
  }
  const std::string dashboard = slurp(NIMBUS_SOURCE_DIR "/deploy/grafana/nimbus-dashboard.json");
  ASSERT_FALSE(dashboard.empty());
  std::regex name(R"(\b(nimbus_[a-z_]+|process_[a-z_]+)\b)");
  std::set<std::string> charted;
  for (auto it = std::sregex_iterator(dashboard.begin(), dashboard.end(), name); it != std::sregex_iterator(); ++it) {
    std::string n = (*it)[1];
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string sfx(suffix);
      if (n.size() > sfx.size() && n.compare(n.size() - sfx.size(), sfx.size(), sfx) == 0 && !families.count(n)) {
        n.resize(n.size() - sfx.size());
      }
    }
    charted.insert(n);
  }
  EXPECT_GE(charted.size(), 25u);
  for (const auto& n : charted) {
    if (n.rfind("nimbus:", 0) == 0) continue;
    EXPECT_TRUE(families.count(n)) << "deploy/grafana/nimbus-dashboard.json charts " << n << ", which the host does not serve";
  }
}

// A scrape never waits for the store: with every store read taking 2 s, /metrics still answers
// at once (the store's part comes from the last read made off the scrape).
TEST(Metrics, AScrapeDoesNotWaitForASlowStore) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: slowstore\nfunctions:\n  hello:\n    runtime: native\n    handler: " + fn("hello") +
                               "\n    triggers: [{http: {route: /hello}}]\n");
  Host host(dir.path(), {"--inject-store-latency", "2s"});
  ASSERT_TRUE(host.started()) << host.errors();
  for (int i = 0; i < 3; ++i) {
    const auto asked = std::chrono::steady_clock::now();
    Response m = request(host.admin_port(), "GET", "/metrics");
    EXPECT_EQ(m.status, 200);
    EXPECT_LT(std::chrono::steady_clock::now() - asked, std::chrono::milliseconds(1500)) << "scrape " << i;
    EXPECT_NE(m.body.find("nimbus_build_info"), std::string::npos);
  }
  // The store's part arrives by itself, from a read made off the scrapes.
  EXPECT_TRUE(eventually([&] {
    return request(host.admin_port(), "GET", "/metrics").body.find("process_open_fds ") != std::string::npos;
  }, 20000));
}

// The dashboard on the admin listener, in a real browser: headless Chromium (Debian's) driven
// through puppeteer-core by tests/browser/dashboard.mjs signs in with the token, watches a
// function's counters move under load, replays a dead letter and opens a trace as a tree. The
// screenshots are kept in BUILD_DIR/test-artifacts/dashboard-*.png.
TEST(Dashboard, SignsInWatchesCountersReplaysADeadLetterAndOpensATrace) {
  const std::filesystem::path source(NIMBUS_SOURCE_DIR);
  ASSERT_TRUE(std::filesystem::exists(source / "tests/browser/node_modules/puppeteer-core"))
      << "puppeteer-core is not installed: run scripts/setup.sh (npm ci in tests/browser)";
  TempDir dir;
  dir.write("nimbus.yaml", "name: dash\nfunctions:\n" + relay_stage("front", "{http: {route: /front}}", "{queue: chain}") +
                               relay_stage("back", "{queue: {name: chain}}", "{queue: sink}") +
                               "  failing:\n    runtime: native\n    handler: " + fn("thrower") +
                               "\n    retry: {max_attempts: 1}\n    triggers: [{queue: {name: jobs}}]\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  const std::string trace = trace_of(42);
  ASSERT_EQ(request(host.http_port(), "GET", "/front", traced(42)).status, 200);
  ASSERT_EQ(admin.call("POST", "/admin/queues/jobs/messages", "x").status, 201);
  ASSERT_TRUE(admin.wait([&] {
    return invocations(admin, "?trace=" + trace).size() == 2 && invocations(admin, "?function=failing").size() == 1;
  }));
  ASSERT_TRUE(admin.wait([&] { return admin.peek("jobs.dead").size() == 1; }));

  TempDir out;
  BrowserLock one_browser;
  CommandResult run = run_shell("env -u NODE_EXTRA_CA_CERTS node " + shell_quoted((source / "tests/browser/dashboard.mjs").string()) +
                                " http://127.0.0.1:" + std::to_string(host.admin_port()) + " " + shell_quoted(host.admin_token()) +
                                " http://127.0.0.1:" + std::to_string(host.http_port()) + " " + trace + " " +
                                shell_quoted(out.path().string()) + " 2>" + shell_quoted((out.path() / "driver.err").string()));
  ASSERT_EQ(run.exit_code, 0) << run.out << out.read("driver.err") << (run.exit_code == 127 ? "no node: run scripts/setup.sh\n" : "");
  const std::string last_line = run.out.substr(run.out.find_last_of('\n', run.out.size() - 2) + 1);
  json::object seen = parse_object(last_line);
  const auto& front = seen["front"].as_object();
  EXPECT_GE(front.at("after").to_number<int64_t>(), front.at("before").to_number<int64_t>() + 60) << run.out;
  EXPECT_GT(front.at("rate").to_number<double>(), 0.0) << run.out;

  // What the page did, seen from the API: the replayed letter ran again (and failed again).
  EXPECT_TRUE(admin.wait([&] { return invocations(admin, "?function=failing").size() == 2; }));

  const std::filesystem::path artifacts = std::filesystem::path(NIMBUS_BINARY).parent_path() / "test-artifacts";
  std::error_code ec;
  std::filesystem::create_directories(artifacts, ec);
  for (const char* name : {"functions.png", "queues.png", "trace.png"}) {
    const std::string png = out.read(name);
    EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << name;
    EXPECT_GT(png.size(), 10u * 1024) << name << ": a screenshot this small shows next to nothing";
    std::filesystem::copy_file(out.path() / name, artifacts / (std::string("dashboard-") + name),
                               std::filesystem::copy_options::overwrite_existing, ec);
  }

  // The page itself holds nothing: no token, no data; its policy allows only its own script.
  Response page = request(host.admin_port(), "GET", "/dashboard");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.header("content-security-policy").find("script-src 'self'"), std::string::npos);
  EXPECT_EQ(page.body.find(host.admin_token()), std::string::npos);
  EXPECT_EQ(request(host.admin_port(), "GET", "/admin/queues").status, 401);
}

}  // namespace
}  // namespace nimbus::testing
