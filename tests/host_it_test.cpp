// End to end: the admin API, metrics and health, shutdown, and the CLI.
#include "it_common.h"

namespace nimbus::testing {
namespace {

TEST(Admin, TokenIsRequiredAndFunctionsAreListedWithSecretsMasked) {
  TempDir dir;
  dir.write("nimbus.yaml", manifest("", {{"hello", "    env:\n      PLAIN: visible\n      TOKEN: {value: s3cr3t-value, secret: true}\n"}}));
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  EXPECT_EQ(request(host.admin_port(), "GET", "/admin/functions").status, 401);
  EXPECT_EQ(request(host.admin_port(), "GET", "/admin/functions", {{"Authorization", "Bearer nope"}}).status, 401);
  Response r = request(host.admin_port(), "GET", "/admin/functions", {{"Authorization", "Bearer " + host.admin_token()}});
  ASSERT_EQ(r.status, 200);
  auto o = parse_object(r.body);
  bool found = false;
  for (const auto& f : o["functions"].as_array()) {
    auto fo = f.as_object();
    if (fo["name"].as_string() != "hello") continue;
    found = true;
    EXPECT_EQ(fo["triggers"].as_array()[0].as_object()["route"].as_string(), "/hello");
    EXPECT_EQ(fo["env"].as_object()["PLAIN"].as_string(), "visible");
    EXPECT_EQ(fo["env"].as_object()["TOKEN"].as_string(), "***");
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(r.body.find("s3cr3t-value"), std::string::npos);
  auto mode = std::filesystem::status(dir.path() / ".nimbus" / "admin.token").permissions();
  EXPECT_EQ(mode & std::filesystem::perms::all, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);

  Response inv = request(host.admin_port(), "POST", "/admin/functions/echo/invoke",
                         {{"Authorization", "Bearer " + host.admin_token()}}, "{\"a\":1}");
  ASSERT_EQ(inv.status, 200);
  auto io = parse_object(inv.body);
  EXPECT_EQ(io["status"].as_int64(), 200);
  EXPECT_EQ(parse_object(std::string(io["body"].as_string()))["body_size"].as_int64(), 7);
  Response st = request(host.admin_port(), "GET", "/admin/status", {{"Authorization", "Bearer " + host.admin_token()}});
  EXPECT_EQ(parse_object(st.body)["pid"].as_int64(), host.pid());

  // Routing (a Router, as the public listener's): 404 for no endpoint, 405 with Allow for a
  // method an endpoint does not take, 400 for a path that does not decode, trigger views.
  const std::map<std::string, std::string> bearer{{"Authorization", "Bearer " + host.admin_token()}};
  Response none = request(host.admin_port(), "GET", "/admin/nothing", bearer);
  EXPECT_EQ(none.status, 404);
  EXPECT_EQ(parse_object(none.body)["error"].as_object()["message"].as_string(), "no admin endpoint GET /admin/nothing");
  Response wrong = request(host.admin_port(), "GET", "/admin/functions/echo/invoke", bearer);
  EXPECT_EQ(wrong.status, 405);
  EXPECT_EQ(wrong.header("allow"), "POST");
  EXPECT_EQ(request(host.admin_port(), "DELETE", "/admin/status", bearer).status, 405);
  EXPECT_EQ(request(host.admin_port(), "PUT", "/admin/blobs/c/a%zz", bearer, "x").status, 400);
  EXPECT_EQ(request(host.admin_port(), "GET", "/admin/timers", bearer).status, 200) << "a view the timer trigger adds";
  EXPECT_EQ(request(host.admin_port(), "POST", "/admin/timers", bearer).status, 405);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(host.output().find("s3cr3t-value"), std::string::npos);
  EXPECT_EQ(host.errors().find("s3cr3t-value"), std::string::npos);
}

// The admin listener takes a deploy's package in one body of up to 256 MiB, but only from
// whoever has the token: a request without it is answered 401 from its head, before any of its
// body is read (the body is never sent here: the answer must not wait for it), and the
// connection is closed after the answer. The same for a body sent to any other path.
TEST(Admin, ABodyWithoutTheTokenIsNeverReadTheHeadIsAnsweredAtOnce) {
  TempDir dir;
  dir.write("nimbus.yaml", manifest());
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const auto answered_from_head = [&](const std::string& head) {
    const auto t0 = std::chrono::steady_clock::now();
    std::string raw = send_raw(host.admin_port(), head, 5000);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return std::pair{parse_response(raw), ms};
  };
  for (const std::string& auth : {std::string(), std::string("Authorization: Bearer nope\r\n")}) {
    auto [r, ms] = answered_from_head("POST /admin/deploy HTTP/1.1\r\nHost: x\r\n" + auth +
                                      "Content-Type: application/octet-stream\r\nContent-Length: 200000000\r\n\r\n");
    EXPECT_EQ(r.status, 401) << r.body;
    EXPECT_LT(ms, 4000) << "the 401 waited for a body that never came";
  }
  auto [other, ms] = answered_from_head("POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\n\r\n");
  EXPECT_EQ(other.status, 200);
  EXPECT_LT(ms, 4000);
  // With the token the body is read whole as before.
  Response ok = request(host.admin_port(), "POST", "/admin/functions/echo/invoke",
                        {{"Authorization", "Bearer " + host.admin_token()}}, std::string(100000, 'x'));
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(parse_object(std::string(parse_object(ok.body)["body"].as_string()))["body_size"].as_int64(), 100000);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Observe, MetricsAreValidPrometheusTextAndCountInvocations) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(request(app.port(), "GET", "/hello").status, 200);
  EXPECT_EQ(request(app.port(), "GET", "/boom").status, 500);
  Response m = request(app.admin(), "GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(check_prometheus_text(m.body), "") << m.body;
  EXPECT_NE(m.body.find("nimbus_invocations_total{function=\"hello\",trigger=\"http\",outcome=\"success\"} 3\n"), std::string::npos) << m.body;
  EXPECT_NE(m.body.find("nimbus_invocations_total{function=\"thrower\",trigger=\"http\",outcome=\"error\"} 1\n"), std::string::npos);
  EXPECT_NE(m.body.find("nimbus_invocation_duration_seconds_count{function=\"hello\",trigger=\"http\"} 3\n"), std::string::npos);
  EXPECT_NE(m.body.find("nimbus_invocations_in_flight{function=\"hello\"} 0\n"), std::string::npos);
  EXPECT_NE(m.body.find("nimbus_cold_starts_total{function=\"hello\"} 1\n"), std::string::npos);
  EXPECT_NE(m.body.find("nimbus_http_responses_total{code=\"500\"} 1\n"), std::string::npos);

  // An independent parser (the Prometheus Python client's) accepts every line too.
  TempDir scratch;
  scratch.write("metrics.txt", m.body);
  std::string cmd = "/usr/bin/python3 " NIMBUS_SOURCE_DIR "/tests/check_prometheus.py < " +
                    (scratch.path() / "metrics.txt").string() + " > " + (scratch.path() / "count.txt").string();
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_GT(std::stoi(slurp(scratch.path() / "count.txt")), 20);
}

TEST(Observe, HealthAndReadinessOnBothListeners) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  for (int port : {app.port(), app.admin()}) {
    EXPECT_EQ(request(port, "GET", "/healthz").status, 200);
    EXPECT_EQ(request(port, "GET", "/readyz").status, 200);
  }
}


TEST(Lifecycle, GracefulShutdownFinishesTheRequestInFlight) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto inflight = std::async(std::launch::async, [&] { return request(app.port(), "GET", "/sleep?ms=3000"); });
  ASSERT_TRUE(wait_running(app, "sleepy", 1));
  ::kill(app.host->pid(), SIGTERM);
  // New connections are refused once the listener closes (well before the request ends).
  bool refused = false;
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2500);
  while (!refused && std::chrono::steady_clock::now() < until) {
    int fd = connect_to(app.port());
    if (fd < 0) refused = true;
    else ::close(fd);
    if (!refused) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_TRUE(refused);
  Response r = inflight.get();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "slept");
  EXPECT_EQ(app.host->wait_exit(), 0);
  EXPECT_FALSE(std::filesystem::exists(app.dir.path() / ".nimbus" / "host.json"));
}

TEST(Lifecycle, GracePeriodBoundsShutdown) {
  App app(manifest("shutdown_grace: 200ms\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto inflight = std::async(std::launch::async, [&] { return request(app.port(), "GET", "/sleep?ms=5000"); });
  ASSERT_TRUE(wait_running(app, "sleepy", 1));
  auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(app.host->signal_and_wait(SIGINT), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_NE(app.host->output().find("grace period over"), std::string::npos);
  inflight.get();
}

TEST(Cli, StatusInvokeAndStopFindTheHostFromTheAppFolder) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  CommandResult st = run_nimbus({"status"}, app.dir.path());
  EXPECT_EQ(st.exit_code, 0) << st.err;
  EXPECT_NE(st.out.find("GET /hello"), std::string::npos) << st.out;
  CommandResult inv = run_nimbus({"invoke", "hello"}, app.dir.path());
  EXPECT_EQ(inv.exit_code, 0) << inv.err;
  EXPECT_EQ(inv.out, "Hello, World!\n");
  app.dir.write("payload.json", "{\"k\":\"v\"}");
  CommandResult data = run_nimbus({"invoke", "echo", "--data", "@payload.json"}, app.dir.path());
  EXPECT_NE(data.out.find("\"body_size\":9"), std::string::npos) << data.out;
  CommandResult boom = run_nimbus({"invoke", "thrower"}, app.dir.path());
  EXPECT_EQ(boom.exit_code, 1);
  EXPECT_NE(boom.err.find("answered 500"), std::string::npos) << boom.err;
  CommandResult stop = run_nimbus({"stop"}, app.dir.path());
  EXPECT_EQ(stop.exit_code, 0) << stop.err;
  EXPECT_EQ(app.host->wait_exit(), 0);
  CommandResult after = run_nimbus({"status"}, app.dir.path());
  EXPECT_EQ(after.exit_code, 1);
  EXPECT_NE(after.err.find("no host is running"), std::string::npos) << after.err;
}

// A host.json whose process lives but whose admin port has no listener: one plain line, no
// Boost internals.
TEST(Cli, AHostThatDoesNotAnswerIsOnePlainLine) {
  TempDir dir;
  dir.write("nimbus.yaml", manifest());
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  ::close(fd);  // bound once, now nobody listens there
  dir.write(".nimbus/host.json", "{\"pid\":" + std::to_string(::getpid()) + ",\"admin\":\"http://127.0.0.1:" +
                                     std::to_string(port) + "\"}\n");
  dir.write(".nimbus/admin.token", "t\n");
  CommandResult st = run_nimbus({"status"}, dir.path());
  EXPECT_EQ(st.exit_code, 1);
  EXPECT_EQ(st.err, "nimbus: no host is running for this app at 127.0.0.1:" + std::to_string(port) +
                        " (connection refused)\n");
}

TEST(Cli, SecondHostForTheSameAppIsRefused) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  CommandResult second = run_nimbus({"start", ".", "--port", "0", "--admin-port", "0"}, app.dir.path());
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_NE(second.err.find("already running"), std::string::npos) << second.err;
  EXPECT_EQ(request(app.port(), "GET", "/hello").status, 200);  // the first one is untouched
}

TEST(Cli, PortInUseIsOneClearLine) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  TempDir other;
  other.write("nimbus.yaml", manifest());
  CommandResult r = run_nimbus({"start", ".", "--port", std::to_string(app.port()), "--admin-port", "0"}, other.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot listen on 127.0.0.1:" + std::to_string(app.port())), std::string::npos) << r.err;
}

TEST(Cli, ValidateReportsEveryProblemWithItsPlace) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: shop\nfunctions:\n  orders:\n    runtime: native\n    handler: x.so\n    timout: 5s\n"
            "    triggers:\n      - http:\n          route: orders\n");
  CommandResult r = run_nimbus({"validate", "."}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nimbus.yaml:6:5: functions.orders.timout: unknown key 'timout'; did you mean 'timeout'?"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("nimbus.yaml:9:18: functions.orders.triggers[0].http.route: 'orders' does not start with '/'"),
            std::string::npos)
      << r.err;
  dir.write("nimbus.yaml", manifest());
  r = run_nimbus({"validate"}, dir.path());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ok"), std::string::npos);
}

TEST(Cli, EveryCommandHasHelpAndBadUsageFailsWithOneLine) {
  TempDir dir;
  for (std::string cmd : {"init", "new", "validate", "start", "invoke", "status", "stop"}) {
    CommandResult r = run_nimbus({cmd, "--help"}, dir.path());
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << cmd << r.out;
  }
  CommandResult bad = run_nimbus({"frobnicate"}, dir.path());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << bad.err;
  CommandResult none = run_nimbus({"invoke", "hello"}, dir.path());
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_EQ(std::count(none.err.begin(), none.err.end(), '\n'), 1) << none.err;
}

TEST(Cli, InitNewStartServesScaffoldedFunctionsBuiltOnStart) {
  TempDir dir;
  CommandResult init = run_nimbus({"init", "app"}, dir.path());
  ASSERT_EQ(init.exit_code, 0) << init.err;
  std::filesystem::path app = dir.path() / "app";
  CommandResult add = run_nimbus({"new", "greet", "--runtime", "native", "--trigger", "http"}, app);
  ASSERT_EQ(add.exit_code, 0) << add.err;
  CommandResult py = run_nimbus({"new", "pyfn", "--runtime", "python", "--trigger", "http"}, app);
  ASSERT_EQ(py.exit_code, 0) << py.err;
  CommandResult js = run_nimbus({"new", "jsfn", "--runtime", "node"}, app);
  ASSERT_EQ(js.exit_code, 0) << js.err;
  CommandResult wrong = run_nimbus({"new", "other", "--runtime", "process"}, app);
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("not available"), std::string::npos);
  {
    Host host(app);
    ASSERT_TRUE(host.started()) << host.errors();
    Response hello = request(host.http_port(), "GET", "/hello");
    EXPECT_EQ(hello.status, 200);
    EXPECT_EQ(hello.body, "Hello, World!");
    EXPECT_EQ(request(host.http_port(), "GET", "/hello?name=Nimbus").body, "Hello, Nimbus!");
    Response greet = request(host.http_port(), "GET", "/greet");
    EXPECT_EQ(greet.status, 200);
    EXPECT_EQ(greet.body, "{\"function\":\"greet\"}");
    Response pyfn = request(host.http_port(), "GET", "/pyfn");
    EXPECT_EQ(pyfn.status, 200);
    EXPECT_EQ(pyfn.body, "{\"function\": \"pyfn\"}");
    Response jsfn = request(host.http_port(), "GET", "/jsfn");
    EXPECT_EQ(jsfn.status, 200);
    EXPECT_EQ(jsfn.body, "{\"function\":\"jsfn\"}");
    EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  }
  // Nothing changed: the second start does not rebuild.
  Host again(app);
  ASSERT_TRUE(again.started()) << again.errors();
  EXPECT_EQ(again.errors().find("building native functions"), std::string::npos) << again.errors();
}

}  // namespace
}  // namespace nimbus::testing
