// End to end: Python, Node, any-language and isolated native workers, and the sandbox around them.
#include "it_common.h"

namespace nimbus::testing {
namespace {

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


}  // namespace
}  // namespace nimbus::testing
