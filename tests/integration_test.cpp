// End-to-end: the real `nimbus` binary on port 0, real HTTP over loopback.
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <fstream>
#include <future>
#include <gtest/gtest.h>
#include <random>
#include <regex>
#include <map>
#include <set>

#include "core/text.h"
#include "harness.h"
#include "observe/metrics.h"
#include "store/store.h"

namespace nimbus::testing {
namespace {

namespace json = boost::json;

std::string fn(const std::string& name) { return test_function(name).string(); }

// A manifest with the test functions; `extra` lands under the top level, `fn_extra` maps
// function name -> extra lines (already indented by 4).
std::string manifest(const std::string& extra = "", std::map<std::string, std::string> fn_extra = {}) {
  auto f = [&](const std::string& name, const std::string& lib, const std::string& triggers) {
    return "  " + name + ":\n    runtime: native\n    handler: " + fn(lib) + "\n" + fn_extra[name] +
           "    triggers:\n" + triggers;
  };
  return "name: it\n" + extra + "functions:\n" +
         f("hello", "hello", "      - http: {route: /hello, methods: [GET]}\n") +
         f("echo", "echo", "      - http: {route: \"/orders/{id}\"}\n      - http: {route: \"/files/{*path}\", methods: [PUT]}\n") +
         f("secure", "echo", "      - http: {route: /secure, auth: function}\n") +
         f("sleepy", "sleepy", "      - http: {route: /sleep}\n") +
         f("thrower", "thrower", "      - http: {route: /boom}\n");
}

struct App {
  explicit App(const std::string& text, std::vector<std::string> extra = {}) {
    dir.write("nimbus.yaml", text);
    host = std::make_unique<Host>(dir.path(), std::move(extra));
  }
  TempDir dir;
  std::unique_ptr<Host> host;
  int port() const { return host->http_port(); }
  int admin() const { return host->admin_port(); }
};

std::string slurp(const std::filesystem::path& file) {
  std::ifstream in(file);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

json::object parse_object(const std::string& s);
bool wait_count(App& app, const std::string& function, const char* field, int want);
bool wait_running(App& app, const std::string& function, int running) {
  return wait_count(app, function, "running", running);
}

json::object parse_object(const std::string& s) {
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  EXPECT_FALSE(ec) << s;
  return ec || !v.is_object() ? json::object{} : v.as_object();
}

// Waits until the admin API reports `want` as `field` ("running" or "waiting") of `function`.
bool wait_count(App& app, const std::string& function, const char* field, int want) {
  for (int i = 0; i < 2000; ++i) {
    auto r = request(app.admin(), "GET", "/admin/functions", {{"Authorization", "Bearer " + app.host->admin_token()}});
    auto o = parse_object(r.body);
    for (const auto& f : o["functions"].as_array()) {
      if (f.as_object().at("name").as_string() == function && f.as_object().at(field).as_int64() == want) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

TEST(Http, ServesHelloAndLogsOneJsonLinePerInvocation) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = request(app.port(), "GET", "/hello");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "Hello, World!");
  EXPECT_EQ(r.header("content-type"), "text/plain; charset=utf-8");
  ASSERT_TRUE(app.host->wait_for_output("\"msg\":\"invocation\""));
  std::string log = app.host->output();
  int lines = 0;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find("\"msg\":\"invocation\"") == std::string::npos) continue;
    ++lines;
    auto o = parse_object(line);
    EXPECT_EQ(o["app"].as_string(), "it");
    EXPECT_EQ(o["function"].as_string(), "hello");
    EXPECT_EQ(o["trigger"].as_string(), "http");
    EXPECT_EQ(o["status"].as_int64(), 200);
    EXPECT_EQ(o["outcome"].as_string(), "success");
    EXPECT_EQ(o["invocation_id"].as_string().size(), 32u);
    EXPECT_TRUE(o.contains("time"));
    EXPECT_TRUE(o.contains("duration_ms"));
  }
  EXPECT_EQ(lines, 1);
}

TEST(Http, RoutesPathParamsQueryHeadersAndKeepAlive) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = request(app.port(), "POST", "/orders/a%20b?x=1&y=two", {{"X-Custom", "v1"}}, "hello");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-echo"), "yes");
  auto o = parse_object(r.body);
  EXPECT_EQ(o["method"].as_string(), "POST");
  EXPECT_EQ(o["path"].as_string(), "/orders/a%20b");
  EXPECT_EQ(o["query"].as_string(), "x=1&y=two");
  EXPECT_EQ(o["params"].as_object()["id"].as_string(), "a b");
  EXPECT_EQ(o["headers"].as_object()["X-Custom"].as_string(), "v1");
  EXPECT_EQ(o["body_size"].as_int64(), 5);

  Response rest = request(app.port(), "PUT", "/files/a/b/c.txt", {}, "x");
  EXPECT_EQ(parse_object(rest.body)["params"].as_object()["path"].as_string(), "a/b/c.txt");

  // Two requests on one keep-alive connection.
  std::string two = "GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  std::string raw = send_raw(app.port(), two);
  size_t count = 0;
  for (size_t p = raw.find("Hello, World!"); p != std::string::npos; p = raw.find("Hello, World!", p + 1)) ++count;
  EXPECT_EQ(count, 2u) << raw;
}

TEST(Http, BinaryBodiesRoundTripExactly) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  std::string body;
  for (int i = 0; i < 4096; ++i) body.push_back(static_cast<char>(i % 256));
  Response r = request(app.port(), "POST", "/orders/1?raw=1", {{"Content-Type", "application/octet-stream"}}, body);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, body);
  Response status = request(app.port(), "GET", "/orders/1?raw=1&status=201");
  EXPECT_EQ(status.status, 201);
}

TEST(Http, UnknownRouteIs404AndWrongMethodIs405WithAllow) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response nf = request(app.port(), "GET", "/nope");
  EXPECT_EQ(nf.status, 404);
  EXPECT_EQ(nf.header("content-type"), "application/json");
  auto err = parse_object(nf.body)["error"].as_object();
  EXPECT_EQ(err["code"].as_string(), "not_found");
  EXPECT_EQ(err["invocation_id"].as_string().size(), 32u);
  Response na = request(app.port(), "DELETE", "/hello");
  EXPECT_EQ(na.status, 405);
  EXPECT_EQ(na.header("allow"), "GET, HEAD");
  EXPECT_EQ(parse_object(na.body)["error"].as_object()["code"].as_string(), "method_not_allowed");
  Response head = request(app.port(), "HEAD", "/hello");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("content-length"), "13");
}

TEST(Http, FunctionKeyIsRequiredWhereAuthIsFunction) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto keys = parse_object(slurp(app.dir.path() / ".nimbus" / "keys.json"));
  std::string key = std::string(keys["functions"].as_object()["secure"].as_string());
  std::string other = std::string(keys["functions"].as_object()["hello"].as_string());
  std::string host_key = std::string(keys["host"].as_string());

  Response missing = request(app.port(), "GET", "/secure");
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(parse_object(missing.body)["error"].as_object()["code"].as_string(), "unauthorized");
  EXPECT_EQ(request(app.port(), "GET", "/secure", {{"x-functions-key", "wrong"}}).status, 401);
  EXPECT_EQ(request(app.port(), "GET", "/secure", {{"x-functions-key", other}}).status, 401);
  EXPECT_EQ(request(app.port(), "GET", "/secure", {{"x-functions-key", key}}).status, 200);
  EXPECT_EQ(request(app.port(), "GET", "/secure?code=" + key).status, 200);
  EXPECT_EQ(request(app.port(), "GET", "/secure", {{"x-functions-key", host_key}}).status, 200);
  EXPECT_EQ(request(app.port(), "GET", "/hello").status, 200);  // anonymous stays open
  auto mode = std::filesystem::status(app.dir.path() / ".nimbus" / "keys.json").permissions();
  EXPECT_EQ(mode & std::filesystem::perms::all, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

TEST(Http, ExpectContinueGetsTheGoAheadAndFunctionsCannotSetFraming) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  int fd = connect_to(app.port());
  ASSERT_GE(fd, 0);
  std::string head = "POST /orders/1?raw=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
  ASSERT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
  char buf[256];
  ssize_t n = ::recv(fd, buf, sizeof buf, 0);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_EQ(::send(fd, "hello", 5, MSG_NOSIGNAL), 5);
  n = ::recv(fd, buf, sizeof buf, 0);
  ::close(fd);
  Response r = parse_response(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))));
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello");
}

TEST(Http, MalformedRequestIs400AndTheHostLivesOn) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = parse_response(send_raw(app.port(), "GET /hello HTTP/1.1\r\nHost x\r\n\r\n"));
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "bad_request");
  EXPECT_EQ(request(app.port(), "GET", "/hello").status, 200);
}

TEST(Http, BodyOverTheLimitIs413) {
  App app(manifest("http:\n  max_body: 1KiB\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  EXPECT_EQ(request(app.port(), "POST", "/orders/1", {}, std::string(1024, 'x')).status, 200);
  Response r = request(app.port(), "POST", "/orders/1", {}, std::string(1025, 'x'));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "payload_too_large");
}

TEST(Http, HeadersOverTheLimitAre431) {
  App app(manifest("http:\n  max_header: 1KiB\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = request(app.port(), "GET", "/hello", {{"X-Big", std::string(2000, 'a')}});
  EXPECT_EQ(r.status, 431);
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "header_fields_too_large");
}

// A request-target that alone passes the header limit is 414 (URI Too Long), not 431.
TEST(Http, ARequestLineOverTheLimitIs414) {
  App app(manifest("http:\n  max_header: 1KiB\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = request(app.port(), "GET", "/hello?q=" + std::string(2000, 'a'));
  EXPECT_EQ(r.status, 414) << r.body;
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "uri_too_long");
  EXPECT_EQ(request(app.port(), "GET", "/hello?q=" + std::string(500, 'a')).status, 200);
}

// A transfer coding other than chunked cannot be undone by the server: 501, and nothing runs.
TEST(Http, AnUnknownTransferCodingIs501) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = parse_response(send_raw(app.port(),
                                       "POST /orders/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                                       "5\r\nhello\r\n0\r\n\r\n"));
  EXPECT_EQ(r.status, 501) << r.body;
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "not_implemented");
  EXPECT_NE(r.body.find("gzip"), std::string::npos) << r.body;
  Response ok = parse_response(send_raw(app.port(),
                                        "POST /orders/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                        "Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"));
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST(Http, SlowClientIs408AndIdleConnectionsClose) {
  App app(manifest("http:\n  read_timeout: 300ms\n  idle_timeout: 300ms\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  // Half a request, then silence: the server answers 408 and closes.
  auto start = std::chrono::steady_clock::now();
  Response r = parse_response(send_raw(app.port(), "GET /hello HTTP/1.1\r\nHost: x\r\n", 5000));
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.status, 408);
  EXPECT_LT(took, std::chrono::seconds(3));
  // Nothing at all: the connection is closed without a reply.
  EXPECT_EQ(send_raw(app.port(), "", 5000), "");
}

TEST(Http, FunctionOverItsTimeoutIs504) {
  App app(manifest("", {{"sleepy", "    timeout: 200ms\n"}}));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto start = std::chrono::steady_clock::now();
  Response r = request(app.port(), "GET", "/sleep?ms=3000");
  EXPECT_EQ(r.status, 504);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2500));
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "timeout");
  EXPECT_EQ(request(app.port(), "GET", "/sleep?ms=1").status, 200);
}

TEST(Http, ConcurrencyLimitWithFullWaitQueueIs503WithRetryAfter) {
  App app(manifest("", {{"sleepy", "    concurrency: 1\n    wait_queue: 1\n"}}));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto first = std::async(std::launch::async, [&] { return request(app.port(), "GET", "/sleep?ms=1500"); });
  ASSERT_TRUE(wait_running(app, "sleepy", 1));
  auto second = std::async(std::launch::async, [&] { return request(app.port(), "GET", "/sleep?ms=1"); });
  // The second waits in the queue; the third finds the queue full.
  ASSERT_TRUE(wait_count(app, "sleepy", "waiting", 1));
  Response third = request(app.port(), "GET", "/sleep?ms=1");
  EXPECT_EQ(third.status, 503);
  EXPECT_EQ(third.header("retry-after"), "1");
  EXPECT_EQ(parse_object(third.body)["error"].as_object()["code"].as_string(), "overloaded");
  EXPECT_EQ(first.get().status, 200);
  EXPECT_EQ(second.get().status, 200);
}

TEST(Http, ThrowingFunctionIs500WithInvocationIdAndDetailsOnlyInTheLog) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = request(app.port(), "GET", "/boom");
  EXPECT_EQ(r.status, 500);
  auto err = parse_object(r.body)["error"].as_object();
  EXPECT_EQ(err["code"].as_string(), "function_error");
  std::string id(err["invocation_id"].as_string());
  EXPECT_EQ(id.size(), 32u);
  EXPECT_EQ(r.body.find("hunter2"), std::string::npos);
  ASSERT_TRUE(app.host->wait_for_output("hunter2"));
  std::string log = app.host->output();
  // Both the user's log line and the failure line carry the invocation id.
  std::regex user_line("\"msg\":\"about to fail\"[^\\n]*\"invocation_id\":\"" + id + "\"");
  std::regex fail_line("\"invocation_id\":\"" + id + "\"[^\\n]*\"outcome\":\"error\"[^\\n]*hunter2");
  EXPECT_TRUE(std::regex_search(log, user_line)) << log;
  EXPECT_TRUE(std::regex_search(log, fail_line)) << log;
}

// Python functions through the process runtime, end to end.
std::string python_app(const std::string& extra_fn_keys = "") {
  return "name: py\nfunctions:\n"
         "  hello:\n    runtime: python\n    handler: app.py:hello\n    timeout: 5s\n" + extra_fn_keys +
         "    triggers: [{http: {route: /hello}}]\n"
         "  boom:\n    runtime: python\n    handler: app.py:boom\n    triggers: [{http: {route: /boom}}]\n"
         "  crash:\n    runtime: python\n    handler: app.py:crash\n    triggers: [{http: {route: /crash}}]\n"
         "  slow:\n    runtime: python\n    handler: app.py:slow\n    timeout: 300ms\n    triggers: [{http: {route: /slow}}]\n";
}
const char* kPythonHandlers = R"PY(
import os, time
def hello(req, ctx):
    ctx.log.info("hello from python " + ctx.invocation_id)
    return "Hello, " + req.query.get("name", "World") + "!"
def boom(req, ctx):
    raise KeyError("secret-detail")
def crash(req, ctx):
    os._exit(3)
def slow(req, ctx):
    time.sleep(float(req.query.get("s", "5")))
    return "late"
)PY";

TEST(Python, ColdStartFromZeroThenServesWithLogsTagged) {
  TempDir dir;
  dir.write("nimbus.yaml", python_app());
  dir.write("app.py", kPythonHandlers);
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Response r = request(host.http_port(), "GET", "/hello?name=Py");  // no instance yet: waits for one
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "Hello, Py!");
  EXPECT_EQ(request(host.http_port(), "GET", "/hello").body, "Hello, World!");
  // The query string is form-decoded: %XX as UTF-8, '+' as a space, a bad escape kept as is.
  EXPECT_EQ(request(host.http_port(), "GET", "/hello?x=1&name=J%C3%BCrgen+K%2Z").body, "Hello, J\xC3\xBCrgen K%2Z!");
  ASSERT_TRUE(host.wait_for_output("hello from python"));
  std::regex tagged("\"msg\":\"hello from python ([0-9a-f]{32})\"[^\\n]*\"invocation_id\":\"\\1\"");
  EXPECT_TRUE(std::regex_search(host.output(), tagged)) << host.output();
  Response m = request(host.admin_port(), "GET", "/metrics");
  EXPECT_NE(m.body.find("nimbus_cold_starts_total{function=\"hello\"} 1\n"), std::string::npos) << m.body;
  EXPECT_NE(m.body.find("nimbus_instances{function=\"hello\"} 1\n"), std::string::npos) << m.body;
  EXPECT_NE(m.body.find("nimbus_instances{function=\"boom\"} 0\n"), std::string::npos) << m.body;
  // The first request waited for the cold start: one queue-wait observation.
  EXPECT_NE(m.body.find("nimbus_queue_wait_seconds_count{function=\"hello\"} 1\n"), std::string::npos) << m.body;
  EXPECT_EQ(check_prometheus_text(m.body), "");
}

TEST(Python, ExceptionIs500CrashIs502OverrunIs504AndTheFunctionRecovers) {
  TempDir dir;
  dir.write("nimbus.yaml", python_app());
  dir.write("app.py", kPythonHandlers);
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Response boom = request(host.http_port(), "GET", "/boom");
  EXPECT_EQ(boom.status, 500);
  EXPECT_EQ(boom.body.find("secret-detail"), std::string::npos);
  ASSERT_TRUE(host.wait_for_output("secret-detail"));  // type, message and stack go to the log
  EXPECT_NE(host.output().find("KeyError"), std::string::npos);

  Response crash = request(host.http_port(), "GET", "/crash");
  EXPECT_EQ(crash.status, 502);
  EXPECT_EQ(parse_object(crash.body)["error"].as_object()["code"].as_string(), "worker_failed");
  EXPECT_NE(parse_object(crash.body)["error"].as_object()["message"].as_string().find("crash"), std::string::npos);
  ASSERT_TRUE(host.wait_for_output("exited with code 3"));

  // The 300 ms deadline counts from the request's arrival, cold start included: warm the
  // function first, so that the overrun below is the handler's and not a slow start's.
  auto quick = [&] {
    Response r;
    for (int i = 0; i < 20 && r.status != 200; ++i) r = request(host.http_port(), "GET", "/slow?s=0");
    return r;
  };
  ASSERT_EQ(quick().status, 200);
  auto start = std::chrono::steady_clock::now();
  Response slow = request(host.http_port(), "GET", "/slow");
  EXPECT_EQ(slow.status, 504);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  ASSERT_TRUE(host.wait_for_output("overran a deadline"));
  // A fresh worker replaces the killed one.
  Response again = quick();
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(again.body, "late");
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Python, HeaderBytesThatAreNotUtf8ArriveReplacedAndTheWorkerLives) {
  // A client's Latin-1 header value once made an invoke frame the Python worker could not
  // read: it died, and everything in flight on it failed.
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: py\nfunctions:\n  echo:\n    runtime: python\n    handler: app.py:echo\n"
            "    triggers: [{http: {route: /echo}}]\n");
  dir.write("app.py", "import os\ndef echo(req, ctx):\n    return req.headers.get('x-bad', '') + ' ' + str(os.getpid())\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Response first = parse_response(
      send_raw(host.http_port(), "GET /echo HTTP/1.1\r\nHost: x\r\nX-Bad: caf\xe9 ok\r\nConnection: close\r\n\r\n"));
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.body.substr(0, first.body.find(' ', 7)), "caf\xef\xbf\xbd ok");
  Response second = request(host.http_port(), "GET", "/echo", {{"X-Bad", "fine"}});
  ASSERT_EQ(second.status, 200);
  // The same worker answered both.
  EXPECT_EQ(first.body.substr(first.body.rfind(' ')), second.body.substr(second.body.rfind(' ')));
}

TEST(Python, BrokenHandlerWithMinInstancesIsAStartupError) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: py\nfunctions:\n  f:\n    runtime: python\n    handler: app.py:missing\n"
                           "    min_instances: 1\n    triggers: [{http: {route: /f}}]\n");
  dir.write("app.py", kPythonHandlers);
  CommandResult r = run_nimbus({"start", ".", "--port", "0", "--admin-port", "0"}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no function 'missing'"), std::string::npos) << r.err;
}

TEST(Python, LimitsWorkingDirAndAnExplicitEnvironment) {
  ::setenv("NIMBUS_IT_ALLOWED", "passed", 1);
  ::setenv("NIMBUS_IT_NOT_ALLOWED", "leaked", 1);
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: lim\nfunctions:\n"
            "  greedy:\n    runtime: python\n    handler: fns/app.py:greedy\n    memory_limit: 64MiB\n"
            "    triggers: [{http: {route: /greedy}}]\n"
            "  spin:\n    runtime: python\n    handler: fns/app.py:spin\n    cpu_limit: 1s\n    timeout: 20s\n"
            "    triggers: [{http: {route: /spin}}]\n"
            "  probe:\n    runtime: python\n    handler: fns/app.py:probe\n    working_dir: data\n"
            "    env_allow: [NIMBUS_IT_ALLOWED]\n    env: {OWN: mine}\n    open_files: 64\n"
            "    triggers: [{http: {route: /probe}}]\n");
  dir.write("fns/app.py", R"PY(
import os, resource
def greedy(req, ctx):
    hog = bytearray(256 * 1024 * 1024)
    return str(len(hog))
def spin(req, ctx):
    while True:
        pass
def probe(req, ctx):
    return {"cwd": os.getcwd(), "env": sorted(os.environ.keys()), "allowed": os.environ.get("NIMBUS_IT_ALLOWED"),
            "own": os.environ.get("OWN"), "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
)PY");
  dir.write("data/.keep", "");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();

  Response greedy = request(host.http_port(), "GET", "/greedy");
  EXPECT_EQ(greedy.status, 500) << greedy.body;  // MemoryError inside the worker
  ASSERT_TRUE(host.wait_for_output("MemoryError")) << host.output();

  Response spin = request(host.http_port(), "GET", "/spin");
  EXPECT_EQ(spin.status, 502) << spin.body;  // SIGXCPU ends the worker
  ASSERT_TRUE(host.wait_for_output("cpu_limit 1 s")) << host.output();

  Response probe = request(host.http_port(), "GET", "/probe");
  ASSERT_EQ(probe.status, 200) << probe.body;
  auto o = parse_object(probe.body);
  EXPECT_EQ(std::filesystem::path(std::string(o["cwd"].as_string())).filename(), "data");
  EXPECT_EQ(o["allowed"].as_string(), "passed");
  EXPECT_EQ(o["own"].as_string(), "mine");
  EXPECT_EQ(o["nofile"].as_int64(), 64);
  for (const auto& k : o["env"].as_array()) {
    EXPECT_NE(k.as_string(), "NIMBUS_IT_NOT_ALLOWED");  // nothing of the host's leaks in
  }
}

TEST(Node, ServesThroughHttpWithConcurrentRequestsInOneWorker) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: js\nfunctions:\n  wait:\n    runtime: node\n    handler: fn.js:wait\n    max_instances: 1\n"
            "    concurrency: 8\n    triggers: [{http: {route: \"/wait/{tag}\"}}]\n");
  dir.write("fn.js",
            "exports.wait = async (req, ctx) => { await new Promise(r => setTimeout(r, Number(req.query.ms || 0)));\n"
            "  ctx.log.info('waited ' + req.params.tag); return { tag: req.params.tag }; };\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  ASSERT_EQ(request(host.http_port(), "GET", "/wait/warm").status, 200);  // the cold start, outside the timing
  auto start = std::chrono::steady_clock::now();
  auto a = std::async(std::launch::async, [&] { return request(host.http_port(), "GET", "/wait/a?ms=2000"); });
  auto b = std::async(std::launch::async, [&] { return request(host.http_port(), "GET", "/wait/b?ms=2000"); });
  Response ra = a.get(), rb = b.get();
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(ra.body, "{\"tag\":\"a\"}");
  EXPECT_EQ(rb.body, "{\"tag\":\"b\"}");
  // One instance, two 2 s waits: overlapped, well under the 4 s they take in turn.
  EXPECT_LT(took, std::chrono::milliseconds(3500));
  ASSERT_TRUE(host.wait_for_output("waited b"));
}

// An output is one-way: the host sends no host_result for it, even to a call_id (a reply per
// output once filled both pipes while a sync worker wrote outputs and read nothing).
TEST(Process, TheHostSendsNoReplyToAnOutput) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: out\nfunctions:\n  out:\n    runtime: process\n    command: [python3, " +
                               (std::filesystem::path(NIMBUS_SOURCE_DIR) / "tests/workers/output_worker.py").string() +
                               "]\n    max_instances: 1\n    triggers: [{http: {route: /out}}]\n"
                               "    outputs: {out: {queue: outs}}\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  ASSERT_EQ(request(host.http_port(), "GET", "/out").body, "host_results 0");
  // The first output's reply, had there been one, was written before this invocation.
  EXPECT_EQ(request(host.http_port(), "GET", "/out").body, "host_results 0");
  EXPECT_EQ(request(host.http_port(), "GET", "/out").body, "host_results 0");
}

// runtime: process: a worker in any language, here one written from the protocol page alone.
TEST(Process, AWorkerWrittenFromTheProtocolPageServesHttp) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: raw\nfunctions:\n  raw:\n    runtime: process\n    command: [python3, " +
                               (std::filesystem::path(NIMBUS_SOURCE_DIR) / "tests/workers/raw_worker.py").string() +
                               "]\n    env: {GREETING: hi}\n    triggers: [{http: {route: \"/raw/{id}\"}}]\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Response r = request(host.http_port(), "POST", "/raw/7?x=1", {}, "pay\x01load");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.header("x-worker"), "raw");
  auto o = parse_object(r.body);
  EXPECT_EQ(o["trigger"].as_string(), "http");
  EXPECT_EQ(o["method"].as_string(), "POST");
  EXPECT_EQ(o["query"].as_string(), "x=1");
  EXPECT_EQ(o["params"].as_object()["id"].as_string(), "7");
  EXPECT_EQ(o["body"].as_string(), "pay\x01load");
  EXPECT_EQ(o["env"].as_string(), "hi");
  // Its own log frame carries the invocation id; what it prints is tagged with the instance.
  ASSERT_TRUE(host.wait_for_output("raw worker saw /raw/7"));
  ASSERT_TRUE(host.wait_for_output("raw worker ready for raw handler"));  // stdout: read by another thread
  std::regex printed("\"msg\":\"raw worker ready for raw handler \"[^\\n]*\"function\":\"raw\",\"instance\":1");
  EXPECT_TRUE(std::regex_search(host.output(), printed)) << host.output();
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Process, AWorkerThatNeverSpeaksTheProtocolIsAClearError) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: raw\nfunctions:\n  cat:\n    runtime: process\n    command: [cat]\n"
                           "    triggers: [{http: {route: /cat}}]\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Response r = request(host.http_port(), "GET", "/cat");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("the worker of function 'cat'"), std::string::npos) << r.body;
}

// isolation: process runs a native function in its own worker: a crash takes only the worker.
TEST(Isolation, NativeFunctionInAWorkerCrashesAloneAndIsReplaced) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: iso\nfunctions:\n"
                           "  c:\n    runtime: native\n    handler: " + fn("crasher") + "\n    isolation: process\n"
                           "    triggers: [{http: {route: /c}}]\n"
                           "  boxed:\n    runtime: native\n    handler: " + fn("echo") + "\n    isolation: sandbox\n"
                           "    triggers: [{http: {route: /boxed}}]\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Response first = request(host.http_port(), "GET", "/c");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_NE(first.body, std::to_string(host.pid()));  // not the host's address space
  std::regex tagged("\"msg\":\"serving from pid " + first.body + "\"[^\\n]*\"invocation_id\":\"[0-9a-f]{32}\"");
  ASSERT_TRUE(host.wait_for_output("serving from pid " + first.body));
  EXPECT_TRUE(std::regex_search(host.output(), tagged)) << host.output();

  Response crash = request(host.http_port(), "GET", "/c?crash=1");
  EXPECT_EQ(crash.status, 502) << crash.body;
  EXPECT_NE(crash.body.find("'c'"), std::string::npos) << crash.body;
  Response again = request(host.http_port(), "GET", "/c");
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_NE(again.body, first.body);  // a new worker

  // A reply header that is not UTF-8 crosses the protocol as U+FFFD: the host once refused
  // the frame as malformed and killed the worker (502).
  Response latin1 = request(host.http_port(), "GET", "/boxed?latin1=1");
  ASSERT_EQ(latin1.status, 200) << latin1.body;
  EXPECT_EQ(latin1.header("x-latin1"), "caf\xef\xbf\xbd");

  Response boxed = request(host.http_port(), "POST", "/boxed", {}, "in a box");
  ASSERT_EQ(boxed.status, 200) << boxed.body;
  auto echoed = parse_object(boxed.body);  // the request crossed into the sandboxed worker whole
  EXPECT_EQ(echoed["path"].as_string(), "/boxed");
  EXPECT_EQ(echoed["body_size"].as_int64(), 8);
  EXPECT_EQ(echoed["headers"].as_object()["Content-Length"].as_string(), "8");
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// isolation: sandbox: read-only root, a private /tmp, and no network unless network: true.
TEST(Isolation, SandboxBlocksWritesOutsideTmpAndTheNetworkUnlessAllowed) {
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 16), 0);
  socklen_t len = sizeof addr;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string port = std::to_string(ntohs(addr.sin_port));

  TempDir dir;
  dir.write("nimbus.yaml", "name: box\nfunctions:\n"
                           "  jail:\n    runtime: python\n    handler: app.py:probe\n    isolation: sandbox\n"
                           "    triggers: [{http: {route: /jail}}]\n"
                           "  online:\n    runtime: python\n    handler: app.py:probe\n    isolation: sandbox\n"
                           "    network: true\n    triggers: [{http: {route: /online}}]\n");
  dir.write("app.py", R"PY(
import os, socket
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return e.strerror or str(e)
def probe(req, ctx):
    here = os.path.dirname(os.path.abspath(__file__))
    return {
        "tmp": attempt(lambda: open(req.query["scratch"], "w").write("x")),
        "outside": attempt(lambda: open(os.path.join(here, "escaped.txt"), "w").write("x")),
        "net": attempt(lambda: socket.create_connection(("127.0.0.1", int(req.query["port"])), timeout=2).close()),
    }
)PY");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  const std::string scratch = "/tmp/nimbus-sandbox-" + dir.path().filename().string();
  Response jail = request(host.http_port(), "GET", "/jail?port=" + port + "&scratch=" + scratch);
  ASSERT_EQ(jail.status, 200) << jail.body;
  auto j = parse_object(jail.body);
  EXPECT_EQ(j["tmp"].as_string(), "ok");
  EXPECT_EQ(j["outside"].as_string(), "Read-only file system");
  EXPECT_NE(j["net"].as_string(), "ok");
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "escaped.txt"));
  EXPECT_FALSE(std::filesystem::exists(scratch));  // the sandbox's /tmp is its own

  Response online = request(host.http_port(), "GET", "/online?port=" + port + "&scratch=" + scratch);
  ASSERT_EQ(online.status, 200) << online.body;
  auto o = parse_object(online.body);
  EXPECT_EQ(o["net"].as_string(), "ok");  // network: true shares the host's network
  EXPECT_EQ(o["outside"].as_string(), "Read-only file system");
  ::close(listener);
}

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
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(host.output().find("s3cr3t-value"), std::string::npos);
  EXPECT_EQ(host.errors().find("s3cr3t-value"), std::string::npos);
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

TEST(Native, LibraryWithoutEntryPointIsAClearStartupError) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: bad\nfunctions:\n  broken:\n    runtime: native\n    handler: " + fn("no_entry") +
                               "\n    triggers: [{http: {route: /x}}]\n");
  CommandResult r = run_nimbus({"start", ".", "--port", "0", "--admin-port", "0"}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(fn("no_entry")), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("nimbus_invoke_v1"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("function 'broken'"), std::string::npos) << r.err;

  dir.write("nimbus.yaml", "name: bad\nfunctions:\n  gone:\n    runtime: native\n    handler: /nowhere/missing.so\n");
  r = run_nimbus({"start", ".", "--port", "0", "--admin-port", "0"}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("/nowhere/missing.so"), std::string::npos) << r.err;
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

// ---- Queues and topics: durable messaging through the real host ------------------------------

namespace nimbus::testing {
namespace {

struct Admin {
  int port;
  std::string token;
  Response call(const std::string& method, const std::string& target, const std::string& body = "",
                std::map<std::string, std::string> headers = {}) const {
    headers["authorization"] = "Bearer " + token;
    return request(port, method, target, headers, body);
  }
  std::vector<json::object> peek(const std::string& queue, int limit = 100000) const {
    Response r = call("GET", "/admin/queues/" + queue + "/messages?limit=" + std::to_string(limit));
    std::vector<json::object> out;
    if (r.status != 200) return out;
    json::object body = parse_object(r.body);  // the range below must not outlive it
    for (auto& m : body["messages"].as_array()) out.push_back(m.as_object());
    return out;
  }
  // Polls (bounded, real time: the host runs on the system clock) until `pred` holds.
  template <class Pred>
  bool wait(Pred pred, int timeout_ms = 15000) const {
    for (int waited = 0; waited < timeout_ms; waited += 20) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return pred();
  }
};

std::string relay_stage(const std::string& name, const std::string& trigger, const std::string& output,
                        const std::string& extra = "") {
  return "  " + name + ":\n    runtime: native\n    handler: " + test_function("relay").string() + "\n    triggers: [" +
         trigger + "]\n    outputs: {next: " + output + "}\n" + extra;
}

TEST(Queue, APipelineWithTopicsFiltersRetriesAndDeadLetters) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: pipe\nfunctions:\n" +
                relay_stage("stage1", "{queue: {name: in}}", "{queue: mid}",
                            "    retry: {max_attempts: 2, backoff: fixed, initial: 10ms, jitter: 0}\n") +
                relay_stage("stage2", "{queue: {name: mid, batch_size: 2}}", "{topic: results}") +
                relay_stage("audit", "{topic: {name: results}}", "{queue: audited}") +
                relay_stage("flagged", "{topic: {name: results, filter: {subject_prefix: vip/}}}", "{queue: vips}"));
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  for (auto [payload, subject] : {std::pair{"a", "vip/1"}, {"b", "std/2"}, {"flaky", "std/3"}, {"poison", "std/4"}}) {
    Response r = admin.call("POST", "/admin/queues/in/messages", payload, {{"ce-subject", subject}, {"ce-type", "order"}});
    ASSERT_EQ(r.status, 201) << r.body;
  }
  // audit and flagged are two subscribers of the topic, each on its own queue: wait for both.
  ASSERT_TRUE(admin.wait([&] {
    return admin.peek("audited").size() == 3 && admin.peek("in.dead").size() == 1 && !admin.peek("vips").empty();
  })) << host.output();
  std::set<std::string> audited;
  for (auto& m : admin.peek("audited")) audited.insert(std::string(m["payload"].as_string()));
  EXPECT_EQ(audited, (std::set<std::string>{"a|stage1|stage2|audit", "b|stage1|stage2|audit",
                                            "flaky|stage1|stage2|audit"}));
  auto vips = admin.peek("vips");
  ASSERT_EQ(vips.size(), 1u) << "only the vip/ subject passes the filter";
  EXPECT_EQ(vips[0]["payload"].as_string(), "a|stage1|stage2|flagged");
  // The flaky one took two deliveries at stage1 (its output says so), then went on.
  for (auto& m : admin.peek("audited")) {
    if (m["payload"].as_string().starts_with("flaky")) {
      EXPECT_EQ(m["type"].as_string(), "relayed");
    }
  }
  auto dead = admin.peek("in.dead");
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0]["payload"].as_string(), "poison");
  EXPECT_EQ(dead[0]["deliveries"].as_int64(), 2);
  EXPECT_NE(dead[0]["error"].as_string().find("cannot digest poison"), std::string::npos) << dead[0]["error"];
  EXPECT_GT(dead[0]["last_failed_ms"].as_int64(), 0);
  ASSERT_TRUE(host.wait_for_output("moved to the dead-letter queue"));

  // The operator's view and tools: nimbus queue ls / peek / dlq replay / purge.
  CommandResult ls = run_nimbus({"queue", "ls", "--dir", dir.path().string()}, dir.path());
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
  std::regex in_row("\\nin +0 +0 +0 +1\\n");
  EXPECT_TRUE(std::regex_search(ls.out, in_row)) << ls.out;
  CommandResult replay = run_nimbus({"dlq", "replay", "in"}, dir.path());
  EXPECT_EQ(replay.exit_code, 0) << replay.err;
  EXPECT_NE(replay.out.find("replayed 1"), std::string::npos) << replay.out;
  ASSERT_TRUE(admin.wait([&] { return admin.peek("in.dead").size() == 1 && admin.peek("in.dead")[0]["deliveries"].as_int64() == 2; }));
  CommandResult purge = run_nimbus({"queue", "purge", "audited"}, dir.path());
  EXPECT_EQ(purge.exit_code, 0) << purge.err;
  EXPECT_TRUE(admin.peek("audited").empty());
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A message's attributes are any bytes a client sent; the admin API's listing of it is still
// JSON (UTF-8), with the bytes that are not UTF-8 replaced (found by the admin fuzz target).
TEST(Queue, AttributesThatAreNotUtf8AreListedAsValidJson) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Admin admin{app.admin(), app.host->admin_token()};
  Response posted = admin.call("POST", "/admin/queues/raw/messages", "x",
                               {{"ce-type", "caf\xe9"}, {"ce-subject", "s\xff"}, {"content-type", "text/\xc3"}});
  ASSERT_EQ(posted.status, 201) << posted.body;
  Response listed = admin.call("GET", "/admin/queues/raw/messages");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_TRUE(valid_utf8(listed.body)) << listed.body;
  auto messages = admin.peek("raw");
  ASSERT_EQ(messages.size(), 1u) << listed.body;
  EXPECT_EQ(messages[0]["type"].as_string(), "caf\xEF\xBF\xBD");
  EXPECT_EQ(messages[0]["subject"].as_string(), "s\xEF\xBF\xBD");
}

TEST(Queue, HttpFunctionsOutputsAreCommittedBeforeTheReply) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: web\nfunctions:\n"
                           "  api:\n    runtime: native\n    handler: " + test_function("relay").string() + "\n"
                           "    triggers: [{http: {route: /api}}]\n    outputs: {next: {queue: jobs}}\n"
                           "  py:\n    runtime: python\n    handler: app.py:save\n"
                           "    triggers: [{http: {route: /py}}]\n    outputs: {view: {state: views}, bad: {queue: x}}\n");
  dir.write("app.py", R"PY(
def save(req, ctx):
    if req.query.get("undeclared"):
        ctx.output("nope", "x")
    ctx.output("view", {"saw": req.text()}, {"key": "k1"})
    return "saved"
)PY");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  Response r = request(host.http_port(), "POST", "/api", {}, "job-1");
  ASSERT_EQ(r.status, 200) << r.body;
  auto jobs = admin.peek("jobs");  // no waiting: it was committed before the reply
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["payload"].as_string(), "job-1|api");

  Response py = request(host.http_port(), "POST", "/py", {}, "hello");
  ASSERT_EQ(py.status, 200) << py.body;
  Response bad = request(host.http_port(), "POST", "/py?undeclared=1", {}, "x");
  EXPECT_EQ(bad.status, 500) << bad.body;
  ASSERT_TRUE(host.wait_for_output("does not declare"));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  // The state output is in the store (read it the way any part does).
  ManualClock clock;
  auto store = open_store("sqlite:.nimbus/state.db", dir.path(), clock);
  ASSERT_TRUE(store.ok()) << store.error().message;
  auto entry = (*store)->get("views", "k1");
  ASSERT_TRUE(entry.ok() && entry->has_value());
  EXPECT_EQ((*entry)->value, "{\"saw\": \"hello\"}");
}

// kill -9 at random moments while a 10,000-message, two-stage pipeline runs; after restarts,
// every message was processed and every output emitted exactly once.
TEST(Queue, KillNineAtRandomMomentsLosesNothingAndEmitsNothingTwice) {
  constexpr int kMessages = 10000;
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: crash\nfunctions:\n" +
                relay_stage("stage1", "{queue: {name: in, lease: 1s, batch_size: 64}}", "{queue: mid}",
                            "    concurrency: 64\n") +
                relay_stage("stage2", "{queue: {name: mid, lease: 1s, batch_size: 64}}", "{queue: out}",
                            "    concurrency: 64\n"));
  {
    ManualClock clock;
    auto store = open_store("sqlite:.nimbus/state.db", dir.path(), clock);
    ASSERT_TRUE(store.ok()) << store.error().message;
    Batch b;
    for (int i = 0; i < kMessages; ++i) {
      NewMessage m;
      m.payload = std::to_string(i);
      b.enqueues.push_back({"in", std::move(m)});
    }
    ASSERT_TRUE((*store)->commit_sync(std::move(b)).ok());
  }
  auto done_count = [](const Admin& admin) -> int64_t {
    Response r = admin.call("GET", "/admin/queues");
    json::object body = parse_object(r.body);
    for (auto& q : body["queues"].as_array()) {
      auto o = q.as_object();
      if (o["queue"].as_string() == "out") return o["ready"].as_int64();
    }
    return 0;
  };
  std::mt19937 rng(std::random_device{}());
  int kills_mid_work = 0;
  for (int round = 0; round < 4; ++round) {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    Admin admin{host.admin_port(), host.admin_token()};
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 60));
    int64_t before = done_count(admin);
    EXPECT_EQ(host.signal_and_wait(SIGKILL), 128 + SIGKILL);
    if (before < kMessages) ++kills_mid_work;
  }
  EXPECT_GE(kills_mid_work, 2) << "the pipeline finished before the kills: they proved nothing";
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] { return done_count(admin) >= kMessages; }, 60000)) << admin.call("GET", "/admin/queues").body;
  auto out = admin.peek("out");
  std::set<std::string> payloads;
  for (auto& m : out) payloads.insert(std::string(m["payload"].as_string()));
  EXPECT_EQ(out.size(), static_cast<std::size_t>(kMessages)) << "an output emitted twice, or one lost";
  EXPECT_EQ(payloads.size(), static_cast<std::size_t>(kMessages));
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE(payloads.count(std::to_string(i) + "|stage1|stage2")) << "message " << i << " lost";
  }
  EXPECT_TRUE(admin.peek("in").empty());
  EXPECT_TRUE(admin.peek("mid").empty());
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A legacy system drops files: the good one's output reaches the queue and the file moves to
// processed/; the bad one lands in failed/ with its reason once its one attempt fails.
TEST(Files, ADroppedFileRunsTheFunctionItsOutputIsQueuedAndTheFileMovesOn) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: drop\nfunctions:\n" +
                               relay_stage("ingest", "{file: {path: inbox, pattern: \"*.csv\"}}", "{queue: rows}",
                                           "    retry: {max_attempts: 1}\n"));
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  const std::filesystem::path inbox = dir.path() / "inbox";
  ASSERT_TRUE(std::filesystem::is_directory(inbox / "processed"));  // made at start
  dir.write("inbox/orders.csv.tmp", "1,apple");
  std::filesystem::rename(inbox / "orders.csv.tmp", inbox / "orders.csv");
  dir.write("inbox/notes.txt", "ignored");
  dir.write("inbox/poison.csv", "poison");
  ASSERT_TRUE(admin.wait([&] {
    return std::filesystem::exists(inbox / "processed" / "orders.csv") &&
           std::filesystem::exists(inbox / "failed" / "poison.csv.reason.json");
  })) << host.output();
  auto rows = admin.peek("rows");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["payload"].as_string(), "1,apple|ingest");
  EXPECT_EQ(rows[0]["subject"].as_string(), "orders.csv");
  auto reason = parse_object(slurp(inbox / "failed" / "poison.csv.reason.json"));
  EXPECT_EQ(reason["function"].as_string(), "ingest");
  EXPECT_NE(reason["message"].as_string().find("cannot digest poison"), json::string::npos) << reason;
  EXPECT_EQ(reason["attempts"].as_int64(), 1);
  EXPECT_TRUE(std::filesystem::exists(inbox / "failed" / "poison.csv"));
  EXPECT_TRUE(std::filesystem::exists(inbox / "notes.txt"));
  EXPECT_TRUE(host.wait_for_output("\"trigger\":\"file\""));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A blob-triggered function that logs every event to a queue and writes an upper-cased copy
// to the blob output "copy" (copies/{name}.txt); PUT /up/... is its upload route.
std::string blob_app(const std::string& fn_extra = "", const std::string& lease = "5s") {
  return "name: blobs\nfunctions:\n  copier:\n    runtime: native\n    handler: " + test_function("blob_copy").string() +
         "\n" + fn_extra +
         "    triggers:\n"
         "      - blob: {path: \"uploads/{name}.csv\", events: [created, updated, deleted], lease: " + lease + "}\n"
         "      - http: {route: \"/up/{*path}\", auth: function, upload: {container: uploads}}\n"
         "    outputs: {log: {queue: log}, copy: {blob: \"copies/{name}.txt\"}}\n";
}

std::vector<std::string> payloads_of(const Admin& admin, const std::string& queue) {
  std::vector<std::string> out;
  for (auto& m : admin.peek(queue)) out.push_back(std::string(m["payload"].as_string()));
  return out;
}

TEST(Blob, TheTriggerFiresOncePerVersionAndItsOutputWritesABlob) {
  TempDir dir;
  dir.write("nimbus.yaml", blob_app());
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  auto put = [&](const std::string& path, const std::string& data) {
    CommandResult r = run_nimbus({"blob", "put", path, "--data", data}, dir.path());
    EXPECT_EQ(r.exit_code, 0) << r.err;
  };
  auto logged = [&](std::size_t n) { return admin.wait([&] { return payloads_of(admin, "log").size() >= n; }); };
  // Each step waits for its event, so the payload read at delivery is that version's bytes.
  put("uploads/a.csv", "v1");
  ASSERT_TRUE(logged(1)) << host.output();
  CommandResult copy = run_nimbus({"blob", "get", "copies/a.txt"}, dir.path());
  EXPECT_EQ(copy.exit_code, 0) << copy.err;
  EXPECT_EQ(copy.out, "V1") << "the blob output binding, named from the trigger's {name}";
  put("uploads/a.csv", "v2");
  ASSERT_TRUE(logged(2));
  put("uploads/a.csv", "v2");  // the same bytes again: a new version, a new event
  ASSERT_TRUE(logged(3));
  put("uploads/notes.txt", "not a csv");  // matches no trigger
  CommandResult rm = run_nimbus({"blob", "rm", "uploads/a.csv"}, dir.path());
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  ASSERT_TRUE(logged(4));
  ASSERT_TRUE(admin.wait([&] { return admin.peek("_blobs.copier").empty(); }));
  EXPECT_EQ(payloads_of(admin, "log"),
            (std::vector<std::string>{"created 1 a v1", "updated 2 a v2", "updated 3 a v2", "deleted 3 a "}));
  EXPECT_TRUE(admin.peek("_blobs.copier.dead").empty());
  Response copied = admin.call("GET", "/admin/blobs/copies/a.txt");
  EXPECT_EQ(copied.status, 200);
  EXPECT_EQ(copied.body, "V2");
  EXPECT_EQ(copied.header("x-blob-version"), "3") << "one output per event";
  EXPECT_EQ(copied.header("content-type"), "text/plain");

  // The upload route: the function's key, then the body is a blob and its trigger fires.
  auto keys = parse_object(slurp(dir.path() / ".nimbus" / "keys.json"));
  const std::string key(keys["functions"].as_object()["copier"].as_string());
  EXPECT_EQ(request(host.http_port(), "PUT", "/up/b.csv", {}, "hello").status, 401);
  Response up = request(host.http_port(), "PUT", "/up/b.csv", {{"x-functions-key", key}, {"content-type", "text/csv"}}, "hello");
  ASSERT_EQ(up.status, 201) << up.body;
  auto stored = parse_object(up.body);
  EXPECT_EQ(stored["path"].as_string(), "uploads/b.csv");
  EXPECT_EQ(stored["version"].as_int64(), 1);
  EXPECT_EQ(stored["content_type"].as_string(), "text/csv");
  EXPECT_EQ(up.header("etag"), "\"1\"");
  Response again = request(host.http_port(), "POST", "/up/b.csv", {{"x-functions-key", key}, {"if-none-match", "*"}}, "x");
  EXPECT_EQ(again.status, 412) << again.body;
  ASSERT_TRUE(logged(5));
  EXPECT_EQ(payloads_of(admin, "log").back(), "created 1 b hello");
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// The event is in the commit of the put: a host killed right after acknowledging puts runs
// every one of them after its restart, and none twice (outputs and ack commit together).
TEST(Blob, KillNineRightAfterPutsLosesNoEventAndRunsNoneTwice) {
  constexpr int kBlobs = 20;
  TempDir dir;
  dir.write("nimbus.yaml", blob_app("    concurrency: 1\n", "1s"));
  {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    Admin admin{host.admin_port(), host.admin_token()};
    for (int i = 0; i < kBlobs; ++i) {
      Response r = admin.call("PUT", "/admin/blobs/uploads/k" + std::to_string(i) + ".csv", "slow" + std::to_string(i));
      ASSERT_EQ(r.status, 201) << r.body;
    }
    EXPECT_EQ(host.signal_and_wait(SIGKILL), 128 + SIGKILL);
  }
  {
    ManualClock clock;
    auto store = open_store("sqlite:.nimbus/state.db", dir.path(), clock);
    ASSERT_TRUE(store.ok()) << store.error().message;
    auto log = (*store)->peek("log", 1000);
    ASSERT_TRUE(log.ok());
    EXPECT_LT(log->size(), static_cast<std::size_t>(kBlobs)) << "every event ran before the kill: it proved nothing";
  }
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] { return payloads_of(admin, "log").size() >= kBlobs && admin.peek("_blobs.copier").empty(); }))
      << host.output();
  auto log = payloads_of(admin, "log");
  std::multiset<std::string> got(log.begin(), log.end()), want;
  for (int i = 0; i < kBlobs; ++i) want.insert("created 1 k" + std::to_string(i) + " slow" + std::to_string(i));
  EXPECT_EQ(got, want);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Blob, CliPutGetLsRmRoundTripTheBytesAndSayWhatIsWrong) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const auto& dir = app.dir.path();
  std::string bytes;
  for (int i = 0; i < 512; ++i) bytes.push_back(static_cast<char>(i % 256));
  app.dir.write("in.bin", bytes);
  CommandResult put = run_nimbus({"blob", "put", "uploads/2024/in.bin", "in.bin", "--content-type", "application/x-thing"}, dir);
  EXPECT_EQ(put.exit_code, 0) << put.err;
  EXPECT_NE(put.out.find("uploads/2024/in.bin version 1, 512 bytes"), std::string::npos) << put.out;
  EXPECT_EQ(run_nimbus({"blob", "put", "uploads/name with space.txt", "--data", "hi"}, dir).exit_code, 0);
  CommandResult get = run_nimbus({"blob", "get", "uploads/2024/in.bin", "-o", "out.bin"}, dir);
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(slurp(dir / "out.bin"), bytes);
  EXPECT_EQ(run_nimbus({"blob", "get", "uploads/name with space.txt"}, dir).out, "hi");
  CommandResult ls = run_nimbus({"blob", "ls", "uploads"}, dir);
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_TRUE(std::regex_search(ls.out, std::regex("\\n2024/in.bin +512 +1 +\\S+ +application/x-thing\\n"))) << ls.out;
  EXPECT_NE(ls.out.find("name with space.txt"), std::string::npos) << ls.out;
  CommandResult under = run_nimbus({"blob", "ls", "uploads/2024/"}, dir);
  EXPECT_EQ(under.out.find("name with space"), std::string::npos) << under.out;

  CommandResult twice = run_nimbus({"blob", "put", "uploads/2024/in.bin", "--data", "x", "--create-only"}, dir);
  EXPECT_EQ(twice.exit_code, 1);
  EXPECT_NE(twice.err.find("create-only"), std::string::npos) << twice.err;
  CommandResult bad = run_nimbus({"blob", "put", "uploads/a/../b", "--data", "x"}, dir);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("'..'"), std::string::npos) << bad.err;
  CommandResult neither = run_nimbus({"blob", "put", "uploads/x"}, dir);
  EXPECT_EQ(neither.exit_code, 1);
  EXPECT_NE(neither.err.find("give a FILE or --data"), std::string::npos) << neither.err;

  CommandResult rm = run_nimbus({"blob", "rm", "uploads/2024/in.bin"}, dir);
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_NE(rm.out.find("deleted uploads/2024/in.bin (version 1)"), std::string::npos) << rm.out;
  CommandResult gone = run_nimbus({"blob", "get", "uploads/2024/in.bin"}, dir);
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_NE(gone.err.find("no blob uploads/2024/in.bin"), std::string::npos) << gone.err;
  EXPECT_EQ(run_nimbus({"blob", "rm", "uploads/2024/in.bin"}, dir).exit_code, 1);
  EXPECT_EQ(app.host->signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

TEST(HostServices, StateWithETagsPublishAndInvokeFromEveryRuntime) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: svc\nfunctions:\n"
            "  counter:\n    runtime: native\n    handler: " + test_function("counter").string() + "\n"
            "    concurrency: 8\n    triggers: [{http: {route: /count}}]\n"
            "  py:\n    runtime: python\n    handler: app.py:handle\n    triggers: [{http: {route: /py}}]\n"
            "  js:\n    runtime: node\n    handler: app.js:handle\n    triggers: [{http: {route: /js}}]\n"
            "  listener:\n    runtime: native\n    handler: " + test_function("relay").string() + "\n"
            "    triggers: [{topic: {name: news}}]\n    outputs: {next: {queue: heard}}\n"
            "  relayer:\n    runtime: native\n    handler: " + test_function("relay").string() + "\n"
            "    triggers: [{http: {route: /relayer}}]\n    outputs: {next: {queue: invoked}}\n");
  dir.write("app.py", R"PY(
from nimbus import HostError
def handle(req, ctx):
    first = ctx.state_put("docs", "a", "one", if_match="")
    try:
        ctx.state_put("docs", "a", "again", if_match="")
        second = "no conflict?"
    except HostError as e:
        second = "conflict" if e.conflict else str(e)
    value, etag = ctx.state_get("docs", "a")
    missing = ctx.state_get("docs", "nothing")
    counted = ctx.invoke("counter", "").decode()
    return {"first": first, "second": second, "value": value.decode(), "etag": etag, "missing": missing,
            "counted": counted}
)PY");
  dir.write("app.js", R"JS(
exports.handle = async (req, ctx) => {
  await ctx.statePut('docs', 'js', 'from node');
  const got = await ctx.stateGet('docs', 'js');
  const eventId = await ctx.publish('news', 'extra', { type: 'headline', subject: 'js/1' });
  await ctx.invoke('relayer', 'via-invoke');
  let conflict = false;
  try { await ctx.statePut('docs', 'js', 'x', { ifMatch: 'stale' }); } catch (e) { conflict = e.conflict; }
  return { value: got.value.toString(), eventId, conflict };
};
)JS");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();

  // 24 increments from 8 at a time: the ETag loop loses no update.
  std::vector<std::future<Response>> calls;
  for (int i = 0; i < 24; ++i) {
    calls.push_back(std::async(std::launch::async, [&] { return request(host.http_port(), "GET", "/count?key=k"); }));
  }
  std::set<std::string> seen;
  for (auto& c : calls) {
    Response r = c.get();
    ASSERT_EQ(r.status, 200) << r.body;
    seen.insert(r.body);
  }
  EXPECT_EQ(seen.size(), 24u) << "every increment saw a different count";
  EXPECT_EQ(request(host.http_port(), "GET", "/count?key=k").body, "25");

  Response py = request(host.http_port(), "GET", "/py");
  ASSERT_EQ(py.status, 200) << py.body << host.output();
  auto p = parse_object(py.body);
  EXPECT_EQ(p["first"].as_string(), "1");
  EXPECT_EQ(p["second"].as_string(), "conflict");
  EXPECT_EQ(p["value"].as_string(), "one");
  EXPECT_EQ(p["etag"].as_string(), "1");
  EXPECT_TRUE(p["missing"].is_null());
  EXPECT_EQ(p["counted"].as_string(), "1") << "invoke ran the native counter (key 'default')";

  Response js = request(host.http_port(), "GET", "/js");
  ASSERT_EQ(js.status, 200) << js.body << host.output();
  auto j = parse_object(js.body);
  EXPECT_EQ(j["value"].as_string(), "from node");
  EXPECT_TRUE(j["conflict"].as_bool());
  EXPECT_EQ(j["eventId"].as_string().size(), 32u);
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] { return admin.peek("heard").size() == 1; }));
  EXPECT_EQ(admin.peek("heard")[0]["payload"].as_string(), "extra|listener");
  auto invoked = admin.peek("invoked");  // an invoked function's outputs are committed too
  ASSERT_EQ(invoked.size(), 1u);
  EXPECT_EQ(invoked[0]["payload"].as_string(), "via-invoke|relayer");
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

TEST(AsyncHttp, AcceptedWith202AndTheStatusUrlReportsTheOutcome) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: jobs\nfunctions:\n"
            "  render:\n    runtime: python\n    handler: app.py:render\n"
            "    triggers: [{http: {route: \"/render/{id}\", methods: [POST], async: true}}]\n"
            "  broken:\n    runtime: python\n    handler: app.py:broken\n    retry: {max_attempts: 2, initial: 10ms}\n"
            "    triggers: [{http: {route: /broken, async: true}}]\n");
  dir.write("app.py", R"PY(
def render(req, ctx):
    return {"got": req.text(), "id": req.params["id"], "q": req.query.get("size"), "h": req.headers.get("x-tag")}
def broken(req, ctx):
    raise ValueError("secret detail")
)PY");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Response accepted = request(host.http_port(), "POST", "/render/7?size=xl", {{"x-tag", "blue"}}, "payload");
  ASSERT_EQ(accepted.status, 202) << accepted.body;
  auto a = parse_object(accepted.body);
  std::string url = std::string(a["status_url"].as_string());
  EXPECT_EQ(accepted.header("location"), url);
  EXPECT_EQ(url, "/_nimbus/jobs/" + std::string(a["id"].as_string()));
  Admin admin{host.admin_port(), host.admin_token()};
  json::object job;
  ASSERT_TRUE(admin.wait([&] {
    job = parse_object(request(host.http_port(), "GET", url).body);
    return job["status"].as_string() == "succeeded";
  })) << json::serialize(job);
  auto result = job["result"].as_object();
  EXPECT_EQ(result["status"].as_int64(), 200);
  auto body = parse_object(std::string(result["body"].as_string()));
  EXPECT_EQ(body["got"].as_string(), "payload");
  EXPECT_EQ(body["id"].as_string(), "7");
  EXPECT_EQ(body["q"].as_string(), "xl");
  EXPECT_EQ(body["h"].as_string(), "blue");
  EXPECT_EQ(job["attempts"].as_int64(), 1);

  Response b = request(host.http_port(), "GET", "/broken");
  ASSERT_EQ(b.status, 202) << b.body;
  std::string burl = std::string(parse_object(b.body)["status_url"].as_string());
  ASSERT_TRUE(admin.wait([&] {
    job = parse_object(request(host.http_port(), "GET", burl).body);
    return job["status"].as_string() == "failed";
  })) << json::serialize(job);
  EXPECT_EQ(job["error"].as_string(), "ValueError");
  EXPECT_EQ(job["attempts"].as_int64(), 2);
  EXPECT_EQ(json::serialize(job).find("secret detail"), std::string::npos) << "details stay in the log";
  EXPECT_EQ(admin.peek("_async.broken.dead").size(), 1u);
  EXPECT_EQ(request(host.http_port(), "GET", "/_nimbus/jobs/0123").status, 404);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// Each example runs from a copy (the host writes .nimbus/ into its app folder).
std::unique_ptr<TempDir> copy_example(const std::string& name) {
  auto dir = std::make_unique<TempDir>();
  std::filesystem::copy(std::filesystem::path(NIMBUS_SOURCE_DIR) / "examples" / name, dir->path(),
                        std::filesystem::copy_options::recursive);
  std::filesystem::remove_all(dir->path() / ".nimbus");
  std::filesystem::remove_all(dir->path() / "showcase" / ".nimbus");
  return dir;
}

TEST(Examples, BackgroundJobs) {
  auto dir = copy_example("background-jobs");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  Response r = request(host.http_port(), "POST", "/reports", {}, "{\"title\": \"sales\", \"rows\": 500}");
  ASSERT_EQ(r.status, 202) << r.body;
  std::string id = std::string(parse_object(r.body)["id"].as_string());
  json::object job;
  ASSERT_TRUE(admin.wait([&] {
    job = parse_object(request(host.http_port(), "GET", r.header("location")).body);
    return job["status"].as_string() == "succeeded";
  })) << json::serialize(job) << host.output();
  auto report = parse_object(std::string(job["result"].as_object()["body"].as_string()));
  EXPECT_EQ(report["rows"].as_int64(), 500);
  EXPECT_EQ(report["checksum"].as_string().size(), 16u);
  Response note;
  ASSERT_TRUE(admin.wait([&] {
    note = request(host.http_port(), "GET", "/notifications/" + id);
    return note.status == 200;
  })) << note.body << host.output();
  EXPECT_EQ(parse_object(note.body)["title"].as_string(), "sales");
}

TEST(Examples, AsyncMessaging) {
  auto dir = copy_example("async-messaging");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_EQ(request(host.http_port(), "POST", "/orders", {},
                    "{\"id\": \"v1\", \"vip\": true, \"total\": 120, \"email\": \"a@example.com\", \"items\": [\"x\"]}")
                .status,
            201);
  ASSERT_EQ(request(host.http_port(), "POST", "/orders", {}, "{\"id\": \"s1\", \"total\": 10}").status, 201);
  for (const char* path : {"/seen/email-log/v1", "/seen/reservations/v1", "/seen/loyalty-points/v1",
                           "/seen/email-log/s1", "/seen/reservations/s1"}) {
    ASSERT_TRUE(admin.wait([&] { return request(host.http_port(), "GET", path).status == 200; }))
        << path << host.output();
  }
  EXPECT_EQ(parse_object(request(host.http_port(), "GET", "/seen/loyalty-points/v1").body)["points"].as_int64(), 120);
  EXPECT_EQ(parse_object(request(host.http_port(), "GET", "/seen/reservations/v1").body)["reservedBy"].as_string(),
            "inventory");
  // The filtered subscriber never saw the standard order.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(request(host.http_port(), "GET", "/seen/loyalty-points/s1").status, 404);
}

TEST(Examples, Cqrs) {
  auto dir = copy_example("cqrs");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  Response put = request(host.http_port(), "PUT", "/contacts/c1", {},
                         "{\"name\": \"Ada\", \"email\": \"ada@example.com\", \"street\": \"1 Loop Rd\", "
                         "\"city\": \"Leeds\", \"zip\": \"LS1\"}");
  ASSERT_EQ(put.status, 202) << put.body;
  EXPECT_EQ(parse_object(put.body)["events"].as_int64(), 2);
  json::object model;
  ASSERT_TRUE(admin.wait([&] {
    Response r = request(host.http_port(), "GET", "/contacts/c1");
    if (r.status != 200) return false;
    model = parse_object(r.body);
    return model["version"].as_int64() == 2;
  })) << host.output();
  EXPECT_EQ(model["name"].as_string(), "Ada");
  EXPECT_EQ(model["address"].as_string(), "1 Loop Rd, LS1, Leeds");
  // A second address change updates the flattened model in place.
  ASSERT_EQ(request(host.http_port(), "PUT", "/contacts/c1", {}, "{\"street\": \"2 Ring St\", \"city\": \"York\", \"zip\": \"Y1\"}").status, 202);
  ASSERT_TRUE(admin.wait([&] {
    model = parse_object(request(host.http_port(), "GET", "/contacts/c1").body);
    return model["version"].as_int64() == 3;
  }));
  EXPECT_EQ(model["city"].as_string(), "York");
  EXPECT_EQ(model["name"].as_string(), "Ada");
  EXPECT_EQ(request(host.http_port(), "GET", "/contacts/nobody").status, 404);
}

TEST(Examples, DataPipeline) {
  auto dir = copy_example("data-pipeline");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  std::string lines;
  // ada: 2 x coffee (15.8) + 4 x apple (2.0); bob: 1 x pear (1.25); then three bad lines.
  lines += R"({"id": 1, "customer": "ada", "sku": "coffee", "quantity": 2, "country": "de"})" "\n";
  lines += R"({"id": 2, "customer": "bob", "sku": "pear", "quantity": 1, "country": "us"})" "\n";
  lines += R"({"id": 3, "customer": "ada", "sku": "apple", "quantity": 4, "country": "de"})" "\n";
  lines += R"({"id": 4, "customer": "cy", "sku": "caviar", "quantity": 1, "country": "fr"})" "\n";
  lines += R"({"id": 5, "customer": "cy", "sku": "pear", "quantity": 0, "country": "fr"})" "\n";
  lines += "not json at all\n";
  Response r = request(host.http_port(), "POST", "/orders", {}, lines);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse_object(r.body)["accepted"].as_int64(), 6);
  auto totals = [&](const std::string& c) { return request(host.http_port(), "GET", "/customers/" + c); };
  ASSERT_TRUE(admin.wait([&] {
    Response a = totals("ada");
    return a.status == 200 && parse_object(a.body)["orders"].as_int64() == 2 && totals("bob").status == 200;
  })) << host.output();
  json::object ada = parse_object(totals("ada").body);
  EXPECT_DOUBLE_EQ(ada["spent"].to_number<double>(), 17.8);
  EXPECT_EQ(ada["region"].as_string(), "eu");
  EXPECT_DOUBLE_EQ(ada["by_category"].as_object()["pantry"].to_number<double>(), 15.8);
  EXPECT_DOUBLE_EQ(parse_object(totals("bob").body)["spent"].to_number<double>(), 1.25);
  EXPECT_EQ(totals("cy").status, 404);
  ASSERT_TRUE(admin.wait([&] { return admin.peek("rejected-orders").size() == 3; }));
  std::set<std::string> reasons;
  for (auto& m : admin.peek("rejected-orders")) {
    reasons.insert(std::string(parse_object(std::string(m["payload"].as_string()))["reason"].as_string()));
  }
  EXPECT_TRUE(reasons.count("unknown sku caviar")) << *reasons.begin();
  EXPECT_TRUE(reasons.count("quantity must be a positive whole number"));
  EXPECT_TRUE(reasons.count("not JSON: not json at all"));
  // The stages' groups are all caught up.
  CommandResult groups = run_nimbus({"stream", "groups", "orders-enriched"}, dir->path());
  EXPECT_NE(groups.out.find("store"), std::string::npos) << groups.out;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// `make run` serves the showcase: it starts (building its C++ functions), answers, and its
// stream stages carry an order through to the customer's totals.
TEST(Examples, ShowcaseStartsAndCarriesAnOrderThroughItsStreams) {
  auto dir = copy_example("");  // the showcase names sibling examples' files: copy them all
  Host host(dir->path() / "showcase");
  ASSERT_TRUE(host.started()) << host.errors();
  EXPECT_EQ(request(host.http_port(), "GET", "/hello").body, "Hello, World!");
  Response r = request(host.http_port(), "POST", "/orders", {},
                       R"({"id": 7, "customer": "ada", "sku": "pear", "quantity": 2, "country": "fr"})" "\n");
  ASSERT_EQ(r.status, 200) << r.body;
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] { return request(host.http_port(), "GET", "/customers/ada").status == 200; }, 20000))
      << host.output();
  EXPECT_DOUBLE_EQ(parse_object(request(host.http_port(), "GET", "/customers/ada").body)["spent"].to_number<double>(), 2.5);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Examples, FileTransform) {
  auto dir = copy_example("file-transform");
  std::filesystem::create_directories(dir->path() / "inbox");
  // One file is there before the host starts; the rest are dropped while it runs.
  dir->write("inbox/early.csv", "name,qty\nbolts,10\nnuts,5\n");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  dir->write("inbox/.sales.tmp", "region,units,revenue\nnorth,3,29.7\nsouth,5,49.5\n");
  std::filesystem::rename(dir->path() / "inbox/.sales.tmp", dir->path() / "inbox/sales.csv");
  dir->write("inbox/bad.csv", "a,b\n1,2\n3\n");
  dir->write("inbox/notes.txt", "not a csv: left alone");
  auto exists = [&](const std::string& p) { return std::filesystem::exists(dir->path() / p); };
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] {
    return exists("inbox/processed/sales.csv") && exists("inbox/processed/early.csv") &&
           exists("inbox/failed/bad.csv.reason.json");
  }, 20000)) << host.output();
  json::value rows = json::parse(slurp(dir->path() / "outbox/sales.json"));
  ASSERT_EQ(rows.as_array().size(), 2u);
  EXPECT_EQ(rows.as_array()[1].as_object().at("region").as_string(), "south");
  Response s = request(host.http_port(), "GET", "/summaries/sales.csv");
  ASSERT_EQ(s.status, 200) << s.body;
  json::object summary = parse_object(s.body);
  EXPECT_EQ(summary["rows"].as_int64(), 2);
  EXPECT_DOUBLE_EQ(summary["sums"].as_object()["revenue"].to_number<double>(), 79.2);
  EXPECT_FALSE(summary["sums"].as_object().contains("region"));
  EXPECT_EQ(parse_object(request(host.http_port(), "GET", "/summaries/early.csv").body)["rows"].as_int64(), 2);
  json::object reason = parse_object(slurp(dir->path() / "inbox/failed/bad.csv.reason.json"));
  EXPECT_EQ(reason["error_type"].as_string(), "ValueError");
  EXPECT_NE(reason["message"].as_string().find("line 3 has 1 fields, the header has 2"), std::string::npos)
      << reason["message"];
  EXPECT_EQ(reason["attempts"].as_int64(), 2);
  EXPECT_FALSE(exists("outbox/bad.json"));
  EXPECT_TRUE(exists("inbox/notes.txt"));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Examples, Pipeline) {
  auto dir = copy_example("pipeline");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  Response r = request(host.http_port(), "POST", "/ingest", {}, "apple,3,0.5\npear,2,1.25\nnot a record\n");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse_object(r.body)["accepted"].as_int64(), 3);
  ASSERT_TRUE(admin.wait([&] { return admin.peek("enriched-records").size() == 2 && admin.peek("raw-records.dead").size() == 1; }))
      << host.output();
  std::map<std::string, double> totals;
  for (auto& m : admin.peek("enriched-records")) {
    auto rec = parse_object(std::string(m["payload"].as_string()));
    totals[std::string(rec["sku"].as_string())] = rec["total"].to_number<double>();
  }
  EXPECT_EQ(totals, (std::map<std::string, double>{{"apple", 1.5}, {"pear", 2.5}}));
  auto dead = admin.peek("raw-records.dead");
  EXPECT_EQ(dead[0]["payload"].as_string(), "not a record");
  EXPECT_EQ(dead[0]["deliveries"].as_int64(), 3);
  EXPECT_NE(dead[0]["error"].as_string().find("ValueError"), std::string::npos) << dead[0]["error"];
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

TEST(Store, ADamagedStoreFileStopsTheStartWithItsName) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: st\nfunctions:\n  h:\n    runtime: native\n    handler: " + test_function("hello").string() +
                               "\n    triggers: [{http: {route: /h}}]\n");
  dir.write(".nimbus/state.db", "definitely not an SQLite database, but someone's notes");
  CommandResult r = run_nimbus({"start", ".", "--port", "0", "--admin-port", "0"}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(".nimbus/state.db"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("not a database"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(dir.path() / ".nimbus/state.db"), "definitely not an SQLite database, but someone's notes");
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// The same ETag loop from a native function in a worker process: host calls cross the
// protocol, answered on the worker's reader thread (concurrency 1) or to waiting runner
// threads (concurrency 4).
TEST(HostServices, NativeFunctionsInWorkerProcessesReachThemToo) {
  TempDir dir;
  std::string lib = test_function("counter").string();
  dir.write("nimbus.yaml", "name: iso\nfunctions:\n"
                           "  one:\n    runtime: native\n    handler: " + lib + "\n    isolation: process\n"
                           "    max_instances: 1\n    concurrency: 1\n    triggers: [{http: {route: /one}}]\n"
                           "  many:\n    runtime: native\n    handler: " + lib + "\n    isolation: process\n"
                           "    max_instances: 1\n    concurrency: 4\n    triggers: [{http: {route: /many}}]\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  for (const char* route : {"/one", "/many"}) {
    std::vector<std::future<Response>> calls;
    for (int i = 0; i < 12; ++i) {
      calls.push_back(std::async(std::launch::async, [&, route] {
        return request(host.http_port(), "GET", std::string(route) + "?key=shared");
      }));
    }
    for (auto& c : calls) {
      Response r = c.get();
      ASSERT_EQ(r.status, 200) << route << ": " << r.body << host.output();
    }
  }
  EXPECT_EQ(request(host.http_port(), "GET", "/one?key=shared").body, "25") << "24 increments, none lost";
  EXPECT_EQ(request(host.http_port(), "GET", "/many?invoke=one").body, "1") << "invoke crosses too (key 'default')";
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// Host services over loopback HTTP with the instance's own token: what a worker in any
// language can use without speaking host_call frames.
TEST(HostServices, TheLoopbackApiServesWorkersWithTheirInstanceToken) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: api\nfunctions:\n  f:\n    runtime: python\n    handler: app.py:handle\n"
                           "    triggers: [{http: {route: /f}}]\n");
  dir.write("app.py", R"PY(
import os, urllib.request, urllib.error
def call(op, query, body=b"", token=None):
    url = os.environ["NIMBUS_API"] + "/v1/" + op + "?" + query
    headers = {"authorization": "Bearer " + (token or os.environ["NIMBUS_API_TOKEN"])}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST", headers=headers)) as r:
            return [r.status, r.headers.get("x-nimbus-etag"), r.read().decode()]
    except urllib.error.HTTPError as e:
        return [e.code, None, e.read().decode()]
def handle(req, ctx):
    return {"put": call("state.put", "store=s&key=k", b"v1"),
            "create_only": call("state.put", "store=s&key=k&if_match=", b"v2")[0],
            "get": call("state.get", "store=s&key=k"),
            "stranger": call("state.get", "store=s&key=k", token="not-a-token")[0],
            "unknown_op": call("teleport", "x=1")[0]}
)PY");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Response r = request(host.http_port(), "GET", "/f");
  ASSERT_EQ(r.status, 200) << r.body << host.output();
  auto o = parse_object(r.body);
  EXPECT_EQ(o["put"].as_array()[0].as_int64(), 200);
  EXPECT_EQ(o["put"].as_array()[1].as_string(), "1");
  EXPECT_EQ(o["create_only"].as_int64(), 409);
  EXPECT_EQ(o["get"].as_array()[2].as_string(), "v1");
  EXPECT_EQ(o["stranger"].as_int64(), 401);
  EXPECT_EQ(o["unknown_op"].as_int64(), 400);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// A function that outlives its lease keeps its message (the lease is renewed while it runs),
// and the consumer never leases more than the pool can run (concurrency 2: at most 2 leased).
TEST(Queue, LeasesAreRenewedWhileFunctionsRunAndPrefetchIsBoundedByCapacity) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: lease\nfunctions:\n  slow:\n    runtime: native\n    handler: " +
                               test_function("sleepy").string() +
                               "\n    concurrency: 2\n    wait_queue: 0\n"
                               "    triggers: [{queue: {name: work, lease: 300ms, batch_size: 50}}]\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  // Leased, ready and in-flight counts of `work`; nullopt once it is gone (all acked).
  auto counts = [&]() -> std::optional<std::pair<int64_t, int64_t>> {
    json::object body = parse_object(admin.call("GET", "/admin/queues").body);
    for (auto& q : body["queues"].as_array()) {
      auto o = q.as_object();
      if (o["queue"].as_string() == "work") return std::pair{o["in_flight"].as_int64(), o["ready"].as_int64()};
    }
    return std::nullopt;
  };
  std::regex invocation_line("\"msg\":\"invocation\",\"function\":\"slow\"");
  auto runs = [&] {
    std::string log = host.output();
    return std::distance(std::sregex_iterator(log.begin(), log.end(), invocation_line), std::sregex_iterator());
  };

  // One message, a free slot, a 1 s run against a 300 ms lease: without renewal the consumer
  // would lease it again at 300 ms and run it twice.
  ASSERT_EQ(admin.call("POST", "/admin/queues/work/messages", "1000").status, 201);
  ASSERT_TRUE(admin.wait([&] { return !counts().has_value(); })) << host.output();
  ASSERT_TRUE(admin.wait([&] { return runs() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_EQ(runs(), 1) << host.output();
  EXPECT_EQ(host.output().find("lease was lost"), std::string::npos) << host.output();

  for (int i = 0; i < 6; ++i) ASSERT_EQ(admin.call("POST", "/admin/queues/work/messages", "m" + std::to_string(i)).status, 201);
  int64_t most = 0;
  ASSERT_TRUE(admin.wait([&] {
    auto c = counts();
    if (c) most = std::max(most, c->first);
    return !c.has_value();
  })) << host.output();
  EXPECT_LE(most, 2) << "never more leased than the pool can run";
  EXPECT_GE(most, 1);
  ASSERT_TRUE(admin.wait([&] { return runs() == 7; })) << host.output();
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

TEST(Timer, ASecondlyScheduleRunsAndNimbusTimersListsIt) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: tick\nfunctions:\n  tick:\n    runtime: python\n    handler: app.py:tick\n"
                           "    triggers: [{timer: {schedule: \"* * * * * *\", time_zone: Europe/Berlin, run_on_startup: true}}]\n"
                           "    outputs: {ticks: {queue: ticks}}\n");
  dir.write("app.py", "def tick(req, ctx):\n    ctx.output('ticks', req.json())\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] { return admin.peek("ticks").size() >= 3; }, 10000)) << host.output();
  auto ticks = admin.peek("ticks");
  std::set<std::string> times;
  for (auto& m : ticks) {
    auto t = parse_object(std::string(m["payload"].as_string()));
    EXPECT_EQ(t["schedule"].as_string(), "* * * * * *");
    EXPECT_EQ(t["time_zone"].as_string(), "Europe/Berlin");
    times.insert(std::string(t["scheduled_time"].as_string()));
  }
  EXPECT_EQ(times.size(), ticks.size()) << "each due time ran once";
  CommandResult list = run_nimbus({"timers"}, dir.path());
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("tick"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("Europe/Berlin"), std::string::npos) << list.out;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// Per partition: how many records of stream `events` the outputs in `out` cover (each output
// is a relayed batch: the batch's JSON array, then "|sink").
std::map<int64_t, int64_t> covered(const std::vector<json::object>& out, std::multiset<std::string>* values = nullptr) {
  std::map<int64_t, int64_t> n;
  for (const auto& m : out) {
    std::string payload(m.at("payload").as_string());
    payload = payload.substr(0, payload.rfind('|'));
    const json::value batch = json::parse(payload);  // held: a range-for over a temporary's member dangles
    for (const auto& rec : batch.as_array()) {
      ++n[rec.as_object().at("partition").as_int64()];
      if (values) values->insert(json::serialize(rec.as_object().at("data")));
    }
  }
  return n;
}

TEST(Stream, KillNineNeverLeavesACheckpointAheadOfItsOutputsAndLosesNothing) {
  constexpr int kRecords = 20000;
  TempDir dir;
  dir.write("nimbus.yaml", "name: crash\nstreams:\n  events: {partitions: 4}\nfunctions:\n  sink:\n"
                           "    runtime: native\n    handler: " + test_function("relay").string() + "\n"
                           "    concurrency: 8\n"
                           "    triggers: [{stream: {name: events, batch_size: 16}}]\n    outputs: {next: {queue: out}}\n");
  auto with_store = [&](auto fn) {
    ManualClock clock;
    auto store = open_store("sqlite:.nimbus/state.db", dir.path(), clock);
    ASSERT_TRUE(store.ok()) << store.error().message;
    fn(**store);
  };
  with_store([&](Store& store) {
    Batch b;
    for (int i = 0; i < kRecords; ++i) {
      Batch::Append a;
      a.stream = "events";
      a.partitions = 4;
      a.key = "k" + std::to_string(i % 97);
      a.record.payload = std::to_string(i);
      b.appends.push_back(std::move(a));
    }
    ASSERT_TRUE(store.commit_sync(std::move(b)).ok());
  });
  // After each kill, with the host gone: every checkpoint equals what the outputs cover.
  auto check = [&](int64_t* processed) {
    with_store([&](Store& store) {
      auto out = store.peek("out", 1000000);
      ASSERT_TRUE(out.ok());
      std::vector<json::object> msgs;
      for (const auto& m : *out) msgs.push_back(json::object{{"payload", m.payload}});
      auto n = covered(msgs);
      auto cps = store.stream_checkpoints("events");
      ASSERT_TRUE(cps.ok());
      std::map<int64_t, int64_t> at;
      for (const auto& c : *cps) at[c.partition] = c.offset;
      *processed = 0;
      for (int p = 0; p < 4; ++p) {
        EXPECT_EQ(at[p], n[p]) << "partition " << p << ": checkpoint and committed outputs disagree";
        *processed += at[p];
      }
    });
  };
  std::mt19937 rng(std::random_device{}());
  int kills_mid_work = 0;
  for (int round = 0; round < 4; ++round) {
    {
      Host host(dir.path());
      ASSERT_TRUE(host.started()) << host.errors();
      std::this_thread::sleep_for(std::chrono::milliseconds(20 + rng() % 80));
      EXPECT_EQ(host.signal_and_wait(SIGKILL), 128 + SIGKILL);
    }
    int64_t processed = 0;
    check(&processed);
    if (processed > 0 && processed < kRecords) ++kills_mid_work;
  }
  EXPECT_GE(kills_mid_work, 2) << "the kills did not land mid-stream: they proved nothing";
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] {
    int64_t sum = 0;
    for (auto [p, c] : covered(admin.peek("out"))) sum += c;
    return sum >= kRecords;
  }, 60000));
  std::multiset<std::string> values;
  covered(admin.peek("out"), &values);
  EXPECT_EQ(values.size(), static_cast<std::size_t>(kRecords)) << "a record processed twice, or lost";
  for (int i = 0; i < kRecords; i += 997) EXPECT_EQ(values.count(std::to_string(i)), 1u) << i;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Stream, PythonProducerAndConsumerWithTheCli) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: iot\nstreams:\n  readings: {partitions: 2}\nfunctions:\n"
            "  ingest:\n    runtime: python\n    handler: app.py:ingest\n"
            "    triggers: [{http: {route: /readings, methods: [POST]}}]\n    outputs: {out: {stream: readings}}\n"
            "  total:\n    runtime: python\n    handler: app.py:total\n"
            "    triggers: [{stream: {name: readings, batch_size: 10, max_wait: 100ms}}]\n"
            "    outputs: {sums: {queue: sums}}\n");
  dir.write("app.py", R"PY(
import json
def ingest(req, ctx):
    r = req.json()
    ctx.output("out", r, {"key": r["device"]})
    return {"ok": True}
def total(req, ctx):
    batch = req.json()
    ctx.output("sums", {"device_keys": sorted({r["key"] for r in batch}),
                        "sum": sum(r["data"]["value"] for r in batch),
                        "offsets": [[r["partition"], r["offset"]] for r in batch]})
)PY");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  for (int i = 1; i <= 6; ++i) {
    Response r = request(host.http_port(), "POST", "/readings", {{"content-type", "application/json"}},
                         "{\"device\": \"d" + std::to_string(i % 3) + "\", \"value\": " + std::to_string(i) + "}");
    ASSERT_EQ(r.status, 200) << r.body;
  }
  CommandResult append = run_nimbus({"stream", "append", "readings", "--key", "d9", "--data", "{\"value\": 100}"}, dir.path());
  ASSERT_EQ(append.exit_code, 0) << append.err;
  EXPECT_NE(append.out.find("offset"), std::string::npos) << append.out;
  auto sum_all = [&] {
    int64_t sum = 0;
    for (auto& m : admin.peek("sums")) sum += parse_object(std::string(m["payload"].as_string()))["sum"].as_int64();
    return sum;
  };
  ASSERT_TRUE(admin.wait([&] { return sum_all() == 121; }, 15000)) << sum_all() << host.output();
  CommandResult tail = run_nimbus({"stream", "tail", "readings"}, dir.path());
  ASSERT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_NE(tail.out.find("key d9"), std::string::npos) << tail.out;
  CommandResult groups = run_nimbus({"stream", "groups", "readings"}, dir.path());
  ASSERT_EQ(groups.exit_code, 0) << groups.err;
  EXPECT_NE(groups.out.find("total"), std::string::npos) << groups.out;
  // Replaying the group from offset 0 processes every record again.
  CommandResult replay = run_nimbus({"stream", "replay", "readings", "total", "--from-offset", "0"}, dir.path());
  ASSERT_EQ(replay.exit_code, 0) << replay.err;
  ASSERT_TRUE(admin.wait([&] { return sum_all() == 242; }, 15000)) << sum_all();
  // And from a time: every partition from its first record appended at or after it.
  replay = run_nimbus({"stream", "replay", "readings", "total", "--from-time-ms", "1"}, dir.path());
  ASSERT_EQ(replay.exit_code, 0) << replay.err;
  ASSERT_TRUE(admin.wait([&] { return sum_all() == 363; }, 15000)) << sum_all();
  CommandResult ls = run_nimbus({"stream", "ls"}, dir.path());
  EXPECT_NE(ls.out.find("readings"), std::string::npos) << ls.out;
  Response unknown = admin.call("GET", "/admin/streams/nope");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_NE(unknown.body.find("readings"), std::string::npos) << unknown.body;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing
