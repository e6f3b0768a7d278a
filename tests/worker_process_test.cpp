// The Python worker library against the real protocol: a real python3 process, a real
// socket, frames encoded and decoded by the host's codec.
#include "runtime/process/worker_process.h"

#include <signal.h>

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <future>
#include <random>
#include <thread>

#include "runtime/native/native_build.h"
#include "triggers/http/server.h"
#include "worker_seen.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

class PythonWorkerTest : public ::testing::Test {
 public:  // for the helpers below
  void SetUp() override {
    std::random_device rd;
    dir_ = fs::temp_directory_path() / ("nimbus-pyw-" + std::to_string(rd()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "handlers.py") << R"PY(
import asyncio, sys

def hello(req, ctx):
    ctx.log.info("hi from " + ctx.invocation_id)
    print("to stdout")
    return "Hello, " + req.query.get("name", "World") + "!"

def echo(req, ctx):
    from nimbus import Response
    return Response(req.body, status=201, headers={"x-path": req.path, "x-id": req.params.get("id", "")},
                    content_type="application/octet-stream")

def data(req, ctx):
    return {"method": req.method, "n": len(req.body)}

def boom(req, ctx):
    raise ValueError("no such order")

async def slow(req, ctx):
    await asyncio.sleep(float(req.query.get("s", "0")))
    return req.query.get("tag", "")

def ran(req, ctx):
    open("ran-" + req.query["tag"], "w").close()
    return "ran"

async def aran(req, ctx):
    return ran(req, ctx)
)PY";
  }
  void TearDown() override {
    worker_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void start(const std::string& handler, int protocol = kWorkerProtocolVersion) {
    WorkerSpawn spec;
    spec.argv = {"/usr/bin/python3", "-m", "nimbus"};
    spec.env = {"PYTHONPATH=" NIMBUS_SOURCE_DIR "/sdk/python", "PATH=/usr/bin:/bin"};
    spec.cwd = dir_;
    auto w = WorkerProcess::spawn(spec, seen_.callbacks());
    ASSERT_TRUE(w.ok()) << w.error().message;
    worker_ = std::move(*w);
    ASSERT_TRUE(worker_->send(FrameType::init, {{"protocol", protocol}, {"function", "f"}, {"handler", handler}, {"runtime", "python"}}).ok());
  }
  json::object invoke_header(const std::string& id, const std::string& query = "", const std::string& method = "GET") {
    return {{"id", id},
            {"trigger", "http"},
            {"attempt", 1},
            {"deadline_ms", 0},
            {"traceparent", ""},
            {"http", {{"method", method}, {"path", "/orders/7"}, {"query", query}, {"headers", json::array{json::array{"Host", "x"}}}, {"params", {{"id", "7"}}}}}};
  }
  fs::path dir_;
  Seen seen_;
  std::unique_ptr<WorkerProcess> worker_;
};

// An invocation reached after its deadline (it waited behind init while the worker started)
// is answered DeadlineExceeded without running, by sync and async workers alike.
// Two invocations of a handler that leaves a file ran-TAG: "late" (its deadline long past)
// and "timely" (five minutes left).
std::pair<json::object, json::object> late_and_timely(PythonWorkerTest& t) {
  auto late = t.invoke_header("late", "tag=late");
  late["deadline_ms"] = 1000;  // 1970
  auto timely = t.invoke_header("timely", "tag=timely");
  timely["deadline_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch() + std::chrono::minutes(5)).count();
  return {late, timely};
}

// "late" is answered DeadlineExceeded; "timely" runs and answers `body`.
void expect_late_skipped_and_timely_answered(Seen& seen, const std::string& body) {
  auto r = seen.wait_frame(FrameType::result, "late");
  ASSERT_TRUE(r) << seen.why;
  EXPECT_EQ(r->header.at("status").as_string(), "error") << r->header;
  EXPECT_EQ(r->header.at("error").as_object().at("type").as_string(), "DeadlineExceeded");
  auto ok = seen.wait_frame(FrameType::result, "timely");
  ASSERT_TRUE(ok) << seen.why;
  EXPECT_EQ(ok->header.at("status").as_string(), "ok") << ok->header;
  EXPECT_EQ(ok->body, body);
}

void expect_only_timely_ran(Seen& seen, const fs::path& dir) {
  expect_late_skipped_and_timely_answered(seen, "ran");
  EXPECT_FALSE(fs::exists(dir / "ran-late"));
  EXPECT_TRUE(fs::exists(dir / "ran-timely"));
}

TEST_F(PythonWorkerTest, WorkReachedAfterItsDeadlineIsNotRun) {
  for (const char* handler : {"handlers.py:ran", "handlers.py:aran"}) {  // sync, then async
    SCOPED_TRACE(handler);
    start(handler);
    auto [late, timely] = late_and_timely(*this);
    ASSERT_TRUE(worker_->send(FrameType::invoke, late).ok());
    ASSERT_TRUE(worker_->send(FrameType::invoke, timely).ok());
    expect_only_timely_ran(seen_, dir_);
    worker_.reset();
    std::lock_guard l(seen_.mu);
    seen_.frames.clear();
    seen_.exited = false;
    fs::remove(dir_ / "ran-timely");
  }
}

TEST_F(PythonWorkerTest, ReadyThenHelloWithLogsTaggedAndStdoutCaptured) {
  start("handlers.py:hello");
  auto ready = seen_.wait_frame(FrameType::ready);
  ASSERT_TRUE(ready) << seen_.why;
  EXPECT_EQ(ready->header.at("protocol").as_int64(), 1);
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("inv1", "name=Py")).ok());
  auto result = seen_.wait_frame(FrameType::result, "inv1");
  ASSERT_TRUE(result);
  EXPECT_EQ(result->header.at("status").as_string(), "ok");
  EXPECT_EQ(result->header.at("http").as_object().at("status").as_int64(), 200);
  EXPECT_EQ(result->body, "Hello, Py!");
  auto log = seen_.wait_frame(FrameType::log, "inv1");
  ASSERT_TRUE(log);
  EXPECT_EQ(log->header.at("message").as_string(), "hi from inv1");
  std::unique_lock l(seen_.mu);
  EXPECT_TRUE(seen_.cv.wait_for(l, 20s, [&] { return !seen_.lines.empty(); }));
  EXPECT_EQ(seen_.lines.front(), "to stdout");
}

TEST_F(PythonWorkerTest, BinaryBodiesStatusHeadersAndParamsPassThrough) {
  start("handlers.py:echo");
  ASSERT_TRUE(seen_.wait_frame(FrameType::ready));
  std::string body("\0\1\2\xff binary", 11);
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("e1", "", "POST"), body).ok());
  auto r = seen_.wait_frame(FrameType::result, "e1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, body);
  const auto& http = r->header.at("http").as_object();
  EXPECT_EQ(http.at("status").as_int64(), 201);
  std::map<std::string, std::string> headers;
  for (const auto& h : http.at("headers").as_array()) headers[std::string(h.as_array()[0].as_string())] = h.as_array()[1].as_string();
  EXPECT_EQ(headers["x-path"], "/orders/7");
  EXPECT_EQ(headers["x-id"], "7");
  EXPECT_EQ(headers["content-type"], "application/octet-stream");
}

TEST_F(PythonWorkerTest, ReturnedDictIsJson) {
  start("handlers.py:data");
  ASSERT_TRUE(seen_.wait_frame(FrameType::ready));
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("d1", "", "PUT"), "abc").ok());
  auto r = seen_.wait_frame(FrameType::result, "d1");
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body), json::parse(R"({"method":"PUT","n":3})"));
}

TEST_F(PythonWorkerTest, AsyncHandlersRunConcurrentlyInOneWorker) {
  start("handlers.py:slow");
  ASSERT_TRUE(seen_.wait_frame(FrameType::ready));
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("long", "s=1.5&tag=long")).ok());
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("short", "s=0&tag=short")).ok());
  auto short_result = seen_.wait_frame(FrameType::result, "short");
  ASSERT_TRUE(short_result);
  EXPECT_EQ(short_result->body, "short");
  {
    // The short one finished while the long one was still in flight: they overlapped.
    std::lock_guard l(seen_.mu);
    bool long_done = false;
    for (const auto& f : seen_.frames)
      if (f.type == FrameType::result && f.header.at("id").as_string() == "long") long_done = true;
    EXPECT_FALSE(long_done);
  }
  auto long_result = seen_.wait_frame(FrameType::result, "long");
  ASSERT_TRUE(long_result);
  EXPECT_EQ(long_result->body, "long");
}

TEST_F(PythonWorkerTest, ExceptionIsAnErrorResultWithTypeMessageAndStack) {
  start("handlers.py:boom");
  ASSERT_TRUE(seen_.wait_frame(FrameType::ready));
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("b1")).ok());
  auto r = seen_.wait_frame(FrameType::result, "b1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header.at("status").as_string(), "error");
  const auto& e = r->header.at("error").as_object();
  EXPECT_EQ(e.at("type").as_string(), "ValueError");
  EXPECT_EQ(e.at("message").as_string(), "no such order");
  EXPECT_NE(std::string(e.at("stack").as_string()).find("handlers.py"), std::string::npos);
  // The worker lives on.
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("b2")).ok());
  EXPECT_TRUE(seen_.wait_frame(FrameType::result, "b2"));
}

TEST_F(PythonWorkerTest, ProtocolMismatchIsFatalNamingBothVersions) {
  start("handlers.py:hello", /*protocol=*/2);
  auto fatal = seen_.wait_frame(FrameType::fatal);
  ASSERT_TRUE(fatal);
  std::string message(fatal->header.at("message").as_string());
  EXPECT_NE(message.find("protocol 1"), std::string::npos) << message;
  EXPECT_NE(message.find("2"), std::string::npos) << message;
  EXPECT_TRUE(seen_.wait_exit());
  EXPECT_NE(seen_.code, 0);
}

TEST_F(PythonWorkerTest, MissingHandlerIsFatalWithTheReason) {
  start("handlers.py:nope");
  auto fatal = seen_.wait_frame(FrameType::fatal);
  ASSERT_TRUE(fatal);
  EXPECT_NE(std::string(fatal->header.at("message").as_string()).find("no function 'nope'"), std::string::npos);
  EXPECT_TRUE(seen_.wait_exit());
  EXPECT_EQ(seen_.code, 1);
}

TEST_F(PythonWorkerTest, ShutdownEndsTheWorkerCleanly) {
  start("handlers.py:hello");
  ASSERT_TRUE(seen_.wait_frame(FrameType::ready));
  ASSERT_TRUE(worker_->send(FrameType::shutdown, {{"grace_ms", 1000}}).ok());
  ASSERT_TRUE(seen_.wait_exit());
  EXPECT_EQ(seen_.code, 0) << seen_.why;
}

// A "worker" that writes a frame claiming a 1 GiB length (the limit is 1 MiB), then waits.
WorkerSpawn oversized_frame_writer() {
  WorkerSpawn spec;
  spec.argv = {"/usr/bin/python3", "-c",
               "import os,struct,time; os.write(4, struct.pack('>I', 1<<30) + b'x'*16); time.sleep(30)"};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.max_frame = 1 << 20;
  return spec;
}

TEST(WorkerProcessTest, MalformedFrameGetsTheWorkerKilledWithTheReason) {
  Seen seen;
  auto w = WorkerProcess::spawn(oversized_frame_writer(), seen.callbacks());
  ASSERT_TRUE(w.ok()) << w.error().message;
  ASSERT_TRUE(seen.wait_exit());
  EXPECT_NE(seen.why.find("malformed frame"), std::string::npos) << seen.why;
  EXPECT_NE(seen.why.find("over the limit"), std::string::npos) << seen.why;
}

TEST(WorkerProcessTest, FramesTravelOnTwoPipesNamedInTheEnvironmentAndSigpipeIsTheWorkersDefault) {
  Seen seen;
  WorkerSpawn spec;
  spec.argv = {"/bin/sh", "-c",
               "echo in=$NIMBUS_WORKER_FD out=$NIMBUS_WORKER_OUT_FD; "
               "stat -L -c %F /proc/self/fd/3 /proc/self/fd/4; grep SigIgn /proc/self/status"};
  spec.env = {"PATH=/usr/bin:/bin", "NIMBUS_WORKER_FD=9"};  // the host's layout wins
  auto w = WorkerProcess::spawn(spec, seen.callbacks());
  ASSERT_TRUE(w.ok()) << w.error().message;
  ASSERT_TRUE(seen.wait_exit());
  std::unique_lock l(seen.mu);
  // Printed lines come on the output thread, which may hand them over after the exit.
  seen.cv.wait_for(l, 20s, [&] { return seen.lines.size() >= 4; });
  ASSERT_EQ(seen.lines.size(), 4u);
  EXPECT_EQ(seen.lines[0], "in=3 out=4");
  EXPECT_EQ(seen.lines[1], "fifo");
  EXPECT_EQ(seen.lines[2], "fifo");
  // The host ignores SIGPIPE (a write to a dead worker fails instead of ending the host); an
  // ignored signal would stay ignored across exec, so the worker gets the default back.
  struct sigaction host {};
  ::sigaction(SIGPIPE, nullptr, &host);
  EXPECT_EQ(host.sa_handler, SIG_IGN);
  const uint64_t ignored = std::stoull(seen.lines[3].substr(seen.lines[3].find_first_of("0123456789abcdef")), nullptr, 16);
  EXPECT_EQ(ignored & (1ull << (SIGPIPE - 1)), 0u) << seen.lines[3];
}

// The host's threads block SIGINT and SIGTERM (it takes them with sigwait); a worker must not
// start with them blocked, or a `runtime: process` program's SIGTERM handler would never run.
TEST(WorkerProcessTest, AWorkerStartsWithNoSignalBlocked) {
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  ::pthread_sigmask(SIG_BLOCK, &block, &old);
  Seen seen;
  WorkerSpawn spec;
  spec.argv = {"/bin/sh", "-c", "grep SigBlk /proc/self/status"};
  spec.env = {"PATH=/usr/bin:/bin"};
  auto w = WorkerProcess::spawn(spec, seen.callbacks());
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_TRUE(w.ok()) << w.error().message;
  ASSERT_TRUE(seen.wait_exit());
  std::unique_lock l(seen.mu);
  seen.cv.wait_for(l, 20s, [&] { return !seen.lines.empty(); });
  ASSERT_EQ(seen.lines.size(), 1u);
  EXPECT_EQ(seen.lines[0], "SigBlk:\t0000000000000000");
}

TEST(WorkerProcessTest, WritingToAWorkerThatEndedFailsAndTheHostLivesOn) {
  Seen seen;
  WorkerSpawn spec;
  spec.argv = {"/bin/true"};
  spec.env = {"PATH=/usr/bin:/bin"};
  auto w = WorkerProcess::spawn(spec, seen.callbacks());
  ASSERT_TRUE(w.ok()) << w.error().message;
  ASSERT_TRUE(seen.wait_exit());
  Status st = (*w)->send(FrameType::heartbeat, {});
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("Broken pipe"), std::string::npos) << st.error().message;
}

TEST(WorkerProcessTest, CrashIsReportedWithItsSignal) {
  Seen seen;
  WorkerSpawn spec;
  spec.argv = {"/usr/bin/python3", "-c", "import os,signal; os.kill(os.getpid(), signal.SIGSEGV)"};
  spec.env = {"PATH=/usr/bin:/bin"};
  auto w = WorkerProcess::spawn(spec, seen.callbacks());
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(seen.wait_exit());
  EXPECT_EQ(seen.code, 128 + SIGSEGV);
  EXPECT_NE(seen.why.find("signal"), std::string::npos) << seen.why;
}

// Read on an event loop (how the host runs workers): no reader thread; frames and the exit
// arrive on the loop's thread, every frame written before the end comes before the exit.
TEST(WorkerProcessTest, OnAnEventLoopFramesThenTheExitArriveOnTheLoopThread) {
  EventLoops loops(1);
  loops.start();
  std::promise<std::thread::id> loop_id;
  loops.post(0, [&] { loop_id.set_value(std::this_thread::get_id()); });
  const auto loop_thread = loop_id.get_future().get();
  Seen seen;
  std::atomic<int> off_loop{0};
  WorkerCallbacks callbacks = seen.callbacks();
  auto frame = callbacks.frame;
  auto exited = callbacks.exited;
  callbacks.frame = [&, frame](Frame&& f) {
    if (std::this_thread::get_id() != loop_thread) ++off_loop;
    frame(std::move(f));
  };
  callbacks.exited = [&, exited](int code, const std::string& why) {
    if (std::this_thread::get_id() != loop_thread) ++off_loop;
    exited(code, why);
  };
  WorkerSpawn spec;
  // 200 frames in one burst (more than one read's worth), then exit 7 at once.
  spec.argv = {"/usr/bin/python3", "-c",
               "import os,struct,json\n"
               "out=b''\n"
               "for i in range(200):\n"
               "  h=json.dumps({'id':str(i),'pad':'x'*400}).encode()\n"
               "  out+=struct.pack('>IBI',1+4+len(h),5,len(h))+h\n"
               "os.write(4,out)\n"
               "os._exit(7)"};
  spec.env = {"PATH=/usr/bin:/bin"};
  auto w = WorkerProcess::spawn(spec, callbacks, &loops.reactor(0));
  ASSERT_TRUE(w.ok()) << w.error().message;
  ASSERT_TRUE(seen.wait_exit());
  {
    std::lock_guard l(seen.mu);
    ASSERT_EQ(seen.frames.size(), 200u);
    for (std::size_t i = 0; i < seen.frames.size(); ++i) {
      EXPECT_EQ(seen.frames[i].header.at("id").as_string(), std::to_string(i));
    }
    EXPECT_EQ(seen.code, 7);
    EXPECT_EQ(seen.why, "exited with code 7");
  }
  EXPECT_EQ(off_loop.load(), 0);
  w->reset();
  loops.drain();  // returns: no watch is left behind
}

TEST(WorkerProcessTest, OnAnEventLoopAMalformedFrameKillsTheWorkerAndDestroyingOneStopsIt) {
  EventLoops loops(1);
  loops.start();
  {
    Seen seen;
    auto w = WorkerProcess::spawn(oversized_frame_writer(), seen.callbacks(), &loops.reactor(0));
    ASSERT_TRUE(w.ok()) << w.error().message;
    ASSERT_TRUE(seen.wait_exit());
    EXPECT_NE(seen.why.find("malformed frame"), std::string::npos) << seen.why;
  }
  {
    // A worker that would run for a minute: destroying its WorkerProcess kills and reaps it.
    Seen seen;
    WorkerSpawn spec;
    spec.argv = {"/usr/bin/python3", "-c", "import time; time.sleep(60)"};
    spec.env = {"PATH=/usr/bin:/bin"};
    auto w = WorkerProcess::spawn(spec, seen.callbacks(), &loops.reactor(0));
    ASSERT_TRUE(w.ok()) << w.error().message;
    const pid_t pid = (*w)->pid();
    auto t0 = std::chrono::steady_clock::now();
    w->reset();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
    EXPECT_NE(::kill(pid, 0), 0);  // reaped: no such process any more
  }
  loops.drain();
}

TEST(WorkerProcessTest, AMissingProgramIsAClearError) {
  Seen seen;
  WorkerSpawn spec;
  spec.argv = {"/nowhere/worker"};
  auto w = WorkerProcess::spawn(spec, seen.callbacks());
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.error().message.find("/nowhere/worker"), std::string::npos);
}

}  // namespace
}  // namespace nimbus

namespace nimbus {
namespace {

class NodeWorkerTest : public PythonWorkerTest {
 protected:
  void SetUp() override {
    PythonWorkerTest::SetUp();
    std::ofstream(dir_ / "handlers.js") << R"JS(
const { Response } = require('nimbus');
exports.hello = (req, ctx) => { ctx.log.info('hi from ' + ctx.invocationId); console.log('to stdout'); return 'Hello, ' + (req.query.name || 'World') + '!'; };
exports.echo = (req) => new Response(req.body, { status: 201, headers: { 'x-id': req.params.id }, contentType: 'application/octet-stream' });
exports.slow = async (req) => { await new Promise(r => setTimeout(r, Number(req.query.ms || 0))); return req.query.tag; };
exports.boom = () => { throw new TypeError('bad order'); };
exports.net = () => String(process.moduleLoadList.includes('NativeModule net'));
exports.big = (req) => 'y'.repeat(Number(req.query.n));
exports.ran = (req) => { require('fs').writeFileSync('ran-' + req.query.tag, 'x'); return 'ran'; };
)JS";
  }
  // Starts the worker with `behind` (encoded invoke frames) written in one piece with init,
  // as the host does for a start from zero.
  void start_node(const std::string& handler, const std::string& behind) {
    start_node(handler, /*send_init=*/false);
    std::string wire;
    encode_frame(FrameType::init, {{"protocol", 1}, {"function", "f"}, {"handler", handler}, {"runtime", "node"}}, {}, wire);
    wire += behind;
    ASSERT_TRUE(worker_->send_raw(wire));
  }
  void start_node(const std::string& handler, bool send_init = true) {
    WorkerSpawn spec;
    spec.argv = {"/usr/bin/node", NIMBUS_SOURCE_DIR "/sdk/node/worker.js"};
    spec.env = {"NODE_PATH=" NIMBUS_SOURCE_DIR "/sdk/node/lib", "PATH=/usr/bin:/bin"};
    spec.cwd = dir_;
    auto w = WorkerProcess::spawn(spec, seen_.callbacks());
    ASSERT_TRUE(w.ok()) << w.error().message;
    worker_ = std::move(*w);
    if (!send_init) return;
    ASSERT_TRUE(worker_->send(FrameType::init, {{"protocol", 1}, {"function", "f"}, {"handler", handler}, {"runtime", "node"}}).ok());
  }
  std::string invoke_frame(json::object header, std::string_view body = {}) {
    std::string wire;
    encode_frame(FrameType::invoke, header, body, wire);
    return wire;
  }
};

TEST_F(NodeWorkerTest, HelloWithLogAndStdout) {
  start_node("handlers.js:hello");
  ASSERT_TRUE(seen_.wait_frame(FrameType::ready)) << seen_.why;
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("n1", "name=Node")).ok());
  auto r = seen_.wait_frame(FrameType::result, "n1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "Hello, Node!");
  auto log = seen_.wait_frame(FrameType::log, "n1");
  ASSERT_TRUE(log);
  EXPECT_EQ(log->header.at("message").as_string(), "hi from n1");
}

TEST_F(NodeWorkerTest, AnEsModuleHandlerIsImported) {
  std::ofstream(dir_ / "handlers.mjs") << "export const hello = (req) => 'Hello from ESM, ' + (req.query.name || 'World');\n";
  start_node("handlers.mjs:hello");
  ASSERT_TRUE(seen_.wait_frame(FrameType::ready)) << seen_.why;
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("m1", "name=Node")).ok());
  auto r = seen_.wait_frame(FrameType::result, "m1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "Hello from ESM, Node");
}

// What the host sends behind init (a start on demand) is answered before the event loop has
// turned, without the `net` module (several ms of a cold start); what comes later goes over
// the sockets, which are open by then.
TEST_F(NodeWorkerTest, WorkSentBehindInitIsAnsweredBeforeNetIsLoadedAndLaterWorkOverSockets) {
  start_node("handlers.js:net", invoke_frame(invoke_header("first")));
  ASSERT_TRUE(seen_.wait_frame(FrameType::ready)) << seen_.why;
  auto first = seen_.wait_frame(FrameType::result, "first");
  ASSERT_TRUE(first) << seen_.why;
  EXPECT_EQ(first->body, "false");
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("later")).ok());
  auto later = seen_.wait_frame(FrameType::result, "later");
  ASSERT_TRUE(later) << seen_.why;
  EXPECT_EQ(later->body, "true");
}

// Before the first turn of the event loop replies are written without blocking; one bigger
// than the pipe holds (64 KiB) is finished over the socket, opened for it, and what follows
// comes after it, whole and in order. A request bigger than one read arrives whole too.
TEST_F(NodeWorkerTest, BigFramesBehindInitTravelWholeAndInOrder) {
  start_node("handlers.js:big",
             invoke_frame(invoke_header("big", "n=300000")) + invoke_frame(invoke_header("small", "n=3")));
  auto r = seen_.wait_frame(FrameType::result, "big");
  ASSERT_TRUE(r) << seen_.why;
  EXPECT_EQ(r->body, std::string(300000, 'y'));
  auto s = seen_.wait_frame(FrameType::result, "small");
  ASSERT_TRUE(s) << seen_.why;
  EXPECT_EQ(s->body, "yyy");
  {
    std::lock_guard l(seen_.mu);
    std::vector<std::string> order;
    for (const auto& f : seen_.frames) {
      if (f.type == FrameType::result) order.push_back(std::string(f.header.at("id").as_string()));
    }
    EXPECT_EQ(order, (std::vector<std::string>{"big", "small"}));
  }
}

TEST_F(NodeWorkerTest, ARequestBiggerThanOneReadArrivesWhole) {
  start_node("handlers.js:echo");
  std::string big(300 * 1024, 'x');
  for (std::size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('a' + i % 26);
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("in", "", "POST"), big).ok());
  auto e = seen_.wait_frame(FrameType::result, "in");
  ASSERT_TRUE(e) << seen_.why;
  EXPECT_EQ(e->body, big);
}

// An invocation reached after its deadline (it waited behind init while the worker started)
// is answered DeadlineExceeded without running: the host has answered its caller already.
TEST_F(NodeWorkerTest, WorkReachedAfterItsDeadlineIsNotRun) {
  auto [late, timely] = late_and_timely(*this);
  start_node("handlers.js:ran", invoke_frame(late) + invoke_frame(timely));
  expect_only_timely_ran(seen_, dir_);
}

// An ES module loads asynchronously: the frames behind init wait for it.
TEST_F(NodeWorkerTest, WorkSentBehindTheInitOfAnEsModuleWaitsForItsImport) {
  std::ofstream(dir_ / "handlers.mjs") << "export const hello = (req) => 'Hello from ESM, ' + (req.query.name || 'World');\n";
  start_node("handlers.mjs:hello", invoke_frame(invoke_header("m1", "name=early")));
  ASSERT_TRUE(seen_.wait_frame(FrameType::ready)) << seen_.why;
  auto r = seen_.wait_frame(FrameType::result, "m1");
  ASSERT_TRUE(r) << seen_.why;
  EXPECT_EQ(r->header.at("status").as_string(), "ok") << r->header;
  EXPECT_EQ(r->body, "Hello from ESM, early");
}

TEST_F(NodeWorkerTest, ResponseObjectCarriesBinaryBodyStatusAndHeaders) {
  start_node("handlers.js:echo");
  ASSERT_TRUE(seen_.wait_frame(FrameType::ready)) << seen_.why;
  std::string body("\0\1\xfe", 3);
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("n2", "", "POST"), body).ok());
  auto r = seen_.wait_frame(FrameType::result, "n2");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, body);
  EXPECT_EQ(r->header.at("http").as_object().at("status").as_int64(), 201);
}

TEST_F(NodeWorkerTest, PromisesRunConcurrentlyInOneWorker) {
  start_node("handlers.js:slow");
  ASSERT_TRUE(seen_.wait_frame(FrameType::ready)) << seen_.why;
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("long", "ms=1500&tag=long")).ok());
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("short", "ms=0&tag=short")).ok());
  auto s = seen_.wait_frame(FrameType::result, "short");
  ASSERT_TRUE(s);
  {
    std::lock_guard l(seen_.mu);
    for (const auto& f : seen_.frames)
      EXPECT_FALSE(f.type == FrameType::result && f.header.at("id").as_string() == "long") << "no overlap";
  }
  EXPECT_TRUE(seen_.wait_frame(FrameType::result, "long"));
}

TEST_F(NodeWorkerTest, ThrownErrorIsAnErrorResultWithTypeAndStack) {
  start_node("handlers.js:boom");
  ASSERT_TRUE(seen_.wait_frame(FrameType::ready)) << seen_.why;
  ASSERT_TRUE(worker_->send(FrameType::invoke, invoke_header("b")).ok());
  auto r = seen_.wait_frame(FrameType::result, "b");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header.at("status").as_string(), "error");
  EXPECT_EQ(r->header.at("error").as_object().at("type").as_string(), "TypeError");
  EXPECT_NE(std::string(r->header.at("error").as_object().at("stack").as_string()).find("handlers.js"), std::string::npos);
}

// The native worker (isolation: process) likewise skips work reached after its deadline: the
// late invocation of `sleepy` is answered DeadlineExceeded, the timely one runs.
class NativeWorkerTest : public PythonWorkerTest {};

TEST_F(NativeWorkerTest, WorkReachedAfterItsDeadlineIsNotRun) {
  WorkerSpawn spec;
  spec.argv = {native_worker_program().string()};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.cwd = dir_;
  auto w = WorkerProcess::spawn(spec, seen_.callbacks());
  ASSERT_TRUE(w.ok()) << w.error().message;
  worker_ = std::move(*w);
  auto [late, timely] = late_and_timely(*this);
  late["http"].as_object()["query"] = "ms=0";
  timely["http"].as_object()["query"] = "ms=0";
  std::string wire;
  encode_frame(FrameType::init, {{"protocol", kWorkerProtocolVersion}, {"function", "sleepy"},
                                 {"handler", NIMBUS_TEST_FUNCTIONS "/sleepy.so"}, {"runtime", "native"}}, {}, wire);
  encode_frame(FrameType::invoke, late, {}, wire);
  encode_frame(FrameType::invoke, timely, {}, wire);
  ASSERT_TRUE(worker_->send_raw(wire));
  expect_late_skipped_and_timely_answered(seen_, "slept");
}

TEST_F(NodeWorkerTest, MissingExportIsFatal) {
  start_node("handlers.js:nope");
  auto fatal = seen_.wait_frame(FrameType::fatal);
  ASSERT_TRUE(fatal);
  EXPECT_NE(std::string(fatal->header.at("message").as_string()).find("no export 'nope'"), std::string::npos);
  EXPECT_TRUE(seen_.wait_exit());
  EXPECT_EQ(seen_.code, 1);
}

}  // namespace
}  // namespace nimbus
