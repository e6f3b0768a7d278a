// The native runtime: loads the test function libraries (built like users' ones) and checks
// what crosses the C ABI both ways, and that every load failure says what and where.
#include "runtime/native/native_runtime.h"
#include "nimbus/abi.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "observe/log.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

const fs::path kFunctions = NIMBUS_TEST_FUNCTIONS;

class NativeRuntimeTest : public ::testing::Test {
 protected:
  NativeRuntimeTest() {
    static std::atomic<int> n{0};
    log_path_ = fs::temp_directory_path() /
                ("nimbus_native_test_" + std::to_string(::getpid()) + "_" + std::to_string(n.fetch_add(1)) +
                 "_" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ".log");
    fd_ = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    sink_ = std::make_unique<LogSink>(fd_);
    logger_ = std::make_unique<Logger>(*sink_, clock_, "test-app", LogLevel::debug);
  }
  ~NativeRuntimeTest() override {
    logger_.reset();
    sink_.reset();
    ::close(fd_);
    std::error_code ec;
    fs::remove(log_path_, ec);
  }

  Expected<std::unique_ptr<Executor>> load(const std::string& name, const fs::path& library) {
    FunctionSpec spec;
    spec.name = name;
    return load_native_function(spec, library, clock_, *logger_);
  }

  std::unique_ptr<Executor> must_load(const std::string& name) {
    auto fn = load(name, kFunctions / (name + ".so"));
    EXPECT_TRUE(fn.ok()) << (fn.ok() ? "" : fn.error().message);
    if (!fn.ok()) return nullptr;
    return std::move(fn).value();
  }

  Invocation http_inv(const std::string& function, std::string method, std::string path,
                      std::string query = "") {
    Invocation inv;
    inv.id = "0123456789abcdef0123456789abcdef";
    inv.function = function;
    inv.trigger = TriggerKind::http;
    inv.time = clock_.wall();
    inv.started = clock_.now();
    inv.deadline = clock_.now() + 30s;
    inv.http = HttpRequest{};
    inv.http->method = std::move(method);
    inv.http->path = std::move(path);
    inv.http->query = std::move(query);
    return inv;
  }

  std::vector<std::string> log_lines() {
    sink_->flush();
    std::ifstream in(log_path_, std::ios::binary);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }

  ManualClock clock_;
  fs::path log_path_;
  int fd_ = -1;
  std::unique_ptr<LogSink> sink_;
  std::unique_ptr<Logger> logger_;
};

const std::string* header(const HttpReply& reply, std::string_view name) {
  return find_header(reply.headers, name);
}

TEST_F(NativeRuntimeTest, HelloReplies) {
  auto fn = must_load("hello");
  ASSERT_NE(fn, nullptr);
  EXPECT_EQ(fn->mode(), Executor::Mode::synchronous);
  Result r = fn->call(http_inv("hello", "GET", "/hello"));
  EXPECT_EQ(r.outcome, Outcome::success);
  ASSERT_TRUE(r.http.has_value());
  EXPECT_EQ(r.http->status, 200);
  EXPECT_EQ(r.http->body, "Hello, World!");
  ASSERT_NE(header(*r.http, "Content-Type"), nullptr);
  EXPECT_EQ(*header(*r.http, "content-type"), "text/plain; charset=utf-8");
}

TEST_F(NativeRuntimeTest, HelloCanBeCalledManyTimes) {
  auto fn = must_load("hello");
  ASSERT_NE(fn, nullptr);
  for (int i = 0; i < 100; ++i) {
    Result r = fn->call(http_inv("hello", "GET", "/hello"));
    ASSERT_EQ(r.outcome, Outcome::success);
    ASSERT_EQ(r.http->body, "Hello, World!");
  }
}

TEST_F(NativeRuntimeTest, EchoSeesWhatTheHostPassed) {
  auto fn = must_load("echo");
  ASSERT_NE(fn, nullptr);
  Invocation inv = http_inv("echo", "POST", "/orders/42/items/a%20b", "x=1&y=two%20words");
  inv.http->headers = {{"X-Custom", "v1"}, {"Accept", "application/json"}};
  inv.http->params = {{"id", "42"}, {"item", "a b"}};
  inv.payload = "hello body";
  Result r = fn->call(inv);
  ASSERT_EQ(r.outcome, Outcome::success) << r.error.message;
  ASSERT_TRUE(r.http.has_value());
  EXPECT_EQ(r.http->status, 200);
  ASSERT_NE(header(*r.http, "x-echo"), nullptr);
  EXPECT_EQ(*header(*r.http, "x-echo"), "yes");
  EXPECT_EQ(*header(*r.http, "content-type"), "application/json");

  json::object o = json::parse(r.http->body).as_object();
  EXPECT_EQ(o.at("method").as_string(), "POST");
  EXPECT_EQ(o.at("path").as_string(), "/orders/42/items/a%20b");
  EXPECT_EQ(o.at("query").as_string(), "x=1&y=two%20words");
  EXPECT_EQ(o.at("trigger").as_string(), "http");
  EXPECT_EQ(o.at("invocation_id").as_string(), inv.id);
  const auto& params = o.at("params").as_object();
  EXPECT_EQ(params.at("id").as_string(), "42");
  EXPECT_EQ(params.at("item").as_string(), "a b");
  EXPECT_FALSE(params.contains("path"));
  const auto& headers = o.at("headers").as_object();
  EXPECT_EQ(headers.size(), 2u);
  EXPECT_EQ(headers.at("X-Custom").as_string(), "v1");
  EXPECT_EQ(headers.at("Accept").as_string(), "application/json");
  EXPECT_EQ(o.at("body_size").as_int64(), static_cast<int64_t>(inv.payload.size()));
}

TEST_F(NativeRuntimeTest, EchoPassesManyHeadersAndParams) {
  // More than the host's inline arrays hold (32 headers, 8 params).
  auto fn = must_load("echo");
  ASSERT_NE(fn, nullptr);
  Invocation inv = http_inv("echo", "GET", "/x");
  for (int i = 0; i < 40; ++i) inv.http->headers.push_back({"h" + std::to_string(i), "v" + std::to_string(i)});
  for (int i = 0; i < 10; ++i) inv.http->params.push_back({"p" + std::to_string(i), std::to_string(i)});
  inv.http->params.push_back({"path", "last/param"});
  Result r = fn->call(inv);
  ASSERT_EQ(r.outcome, Outcome::success) << r.error.message;
  json::object o = json::parse(r.http->body).as_object();
  const auto& headers = o.at("headers").as_object();
  ASSERT_EQ(headers.size(), 40u);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(headers.at("h" + std::to_string(i)).as_string(), "v" + std::to_string(i));
  EXPECT_EQ(o.at("params").as_object().at("path").as_string(), "last/param");
}

TEST_F(NativeRuntimeTest, EchoKeepsBinaryBodiesByteForByte) {
  auto fn = must_load("echo");
  ASSERT_NE(fn, nullptr);
  Invocation inv = http_inv("echo", "PUT", "/blob", "raw=1");
  std::string body;
  for (int i = 0; i < 256; ++i) body.push_back(static_cast<char>(i));
  body += std::string("\0\0tail\0", 7);
  inv.payload = body;
  Result r = fn->call(inv);
  ASSERT_EQ(r.outcome, Outcome::success) << r.error.message;
  ASSERT_TRUE(r.http.has_value());
  EXPECT_EQ(r.http->body.size(), body.size());
  EXPECT_EQ(r.http->body, body);
  EXPECT_EQ(*header(*r.http, "content-type"), "application/octet-stream");
}

TEST_F(NativeRuntimeTest, EchoStatusIsPassedAndInvalidStatusIsAnError) {
  auto fn = must_load("echo");
  ASSERT_NE(fn, nullptr);
  Result r = fn->call(http_inv("echo", "GET", "/x", "status=404"));
  EXPECT_EQ(r.outcome, Outcome::success) << "a 404 reply is still a function that ran";
  ASSERT_TRUE(r.http.has_value());
  EXPECT_EQ(r.http->status, 404);

  Result bad = fn->call(http_inv("echo", "GET", "/x", "status=700"));
  EXPECT_EQ(bad.outcome, Outcome::error);
  EXPECT_EQ(bad.error.type, "invalid_reply");
  EXPECT_NE(bad.error.message.find("700"), std::string::npos) << bad.error.message;
  EXPECT_FALSE(bad.http.has_value());
}

TEST_F(NativeRuntimeTest, NonHttpInvocationPassesMetadataAsHeaders) {
  auto fn = must_load("echo");
  ASSERT_NE(fn, nullptr);
  Invocation inv;
  inv.id = "fedcba9876543210fedcba9876543210";
  inv.function = "echo";
  inv.trigger = TriggerKind::named("timer");
  inv.metadata = {{"schedule", "*/5 * * * *"}};
  inv.payload = "tick";
  Result r = fn->call(inv);
  ASSERT_EQ(r.outcome, Outcome::success) << r.error.message;
  json::object o = json::parse(r.http->body).as_object();
  EXPECT_EQ(o.at("trigger").as_string(), "timer");
  EXPECT_EQ(o.at("method").as_string(), "");
  EXPECT_EQ(o.at("headers").as_object().at("schedule").as_string(), "*/5 * * * *");
  EXPECT_EQ(o.at("body_size").as_int64(), 4);
}

TEST_F(NativeRuntimeTest, ThrowerIsAnErrorWithTheMessage) {
  auto fn = must_load("thrower");
  ASSERT_NE(fn, nullptr);
  Invocation inv = http_inv("thrower", "GET", "/boom");
  Result r = fn->call(inv);
  EXPECT_EQ(r.outcome, Outcome::error);
  EXPECT_EQ(r.error.type, "exception");
  EXPECT_NE(r.error.message.find("hunter2"), std::string::npos) << r.error.message;
  EXPECT_FALSE(r.http.has_value());

  // What the function logged before throwing is a user line tagged with the invocation.
  bool found = false;
  for (const auto& line : log_lines()) {
    json::object o = json::parse(line).as_object();
    if (o.at("msg").as_string() != "about to fail") continue;
    found = true;
    EXPECT_EQ(o.at("level").as_string(), "warn");
    EXPECT_EQ(o.at("function").as_string(), "thrower");
    EXPECT_EQ(o.at("invocation_id").as_string(), inv.id);
    EXPECT_EQ(o.at("source").as_string(), "user");
  }
  EXPECT_TRUE(found) << "the function's log line did not arrive";
}

TEST_F(NativeRuntimeTest, MissingEntryPointNamesFileAndSymbol) {
  const fs::path lib = kFunctions / "no_entry.so";
  auto fn = load("no_entry", lib);
  ASSERT_FALSE(fn.ok());
  const std::string& msg = fn.error().message;
  EXPECT_NE(msg.find(lib.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("nimbus_invoke_v1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("NIMBUS_FUNCTION"), std::string::npos) << msg;
  EXPECT_NE(msg.find("function 'no_entry'"), std::string::npos) << msg;
}

TEST_F(NativeRuntimeTest, OtherAbiVersionNamesBothVersions) {
  const fs::path lib = kFunctions / "old_abi.so";
  auto fn = load("old_abi", lib);
  ASSERT_FALSE(fn.ok());
  const std::string& msg = fn.error().message;
  EXPECT_NE(msg.find(lib.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("version 99"), std::string::npos) << msg;
  EXPECT_NE(msg.find("speaks version " + std::to_string(NIMBUS_ABI_VERSION)), std::string::npos) << msg;
  EXPECT_NE(msg.find("rebuild"), std::string::npos) << msg;
}

TEST_F(NativeRuntimeTest, ALibraryBuiltForTheOldestVersionSpokenStillLoadsAndRuns) {
  auto fn = must_load("abi_v2");
  ASSERT_NE(fn, nullptr);
  Invocation inv = http_inv("abi_v2", "GET", "/");
  inv.traceparent = "00-" + std::string(32, 'a') + "-" + std::string(16, 'b') + "-01";
  inv.tracestate = "v=1";
  Result r = fn->call(std::move(inv));
  ASSERT_EQ(r.outcome, Outcome::success) << r.error.message;
  EXPECT_EQ(r.http->body, "00-" + std::string(32, 'a') + "-" + std::string(16, 'b') + "-01");
}

TEST_F(NativeRuntimeTest, TheTraceContextReachesTheFunctionWithItsHeadersForOutgoingCalls) {
  auto fn = must_load("echo");
  ASSERT_NE(fn, nullptr);
  const std::string tp = "00-" + std::string(32, 'a') + "-" + std::string(16, 'b') + "-01";
  Invocation inv = http_inv("echo", "GET", "/", "trace=1");
  inv.traceparent = tp;
  inv.tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
  Result r = fn->call(std::move(inv));
  ASSERT_EQ(r.outcome, Outcome::success) << r.error.message;
  EXPECT_EQ(r.http->body, "{\"traceparent\":\"" + tp + "\",\"tracestate\":\"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7\"," +
                              "\"trace_headers\":[[\"traceparent\",\"" + tp +
                              "\"],[\"tracestate\",\"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7\"]]}");
  // Without a tracestate, only the traceparent goes on.
  Invocation plain = http_inv("echo", "GET", "/", "trace=1");
  plain.traceparent = tp;
  r = fn->call(std::move(plain));
  EXPECT_EQ(r.http->body, "{\"traceparent\":\"" + tp + "\",\"tracestate\":\"\",\"trace_headers\":[[\"traceparent\",\"" +
                              tp + "\"]]}");
}

TEST_F(NativeRuntimeTest, MissingFileIsClear) {
  const fs::path lib = kFunctions / "does_not_exist.so";
  auto fn = load("ghost", lib);
  ASSERT_FALSE(fn.ok());
  const std::string& msg = fn.error().message;
  EXPECT_NE(msg.find("no such file"), std::string::npos) << msg;
  EXPECT_NE(msg.find(lib.string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("function 'ghost'"), std::string::npos) << msg;
}

TEST_F(NativeRuntimeTest, FileThatIsNotALibraryCannotBeLoaded) {
  fs::path bogus = log_path_;
  bogus += ".so";
  {
    std::ofstream out(bogus);
    out << "not an ELF file\n";
  }
  auto fn = load("bogus", bogus);
  std::error_code ec;
  fs::remove(bogus, ec);
  ASSERT_FALSE(fn.ok());
  EXPECT_NE(fn.error().message.find("cannot be loaded"), std::string::npos) << fn.error().message;
  EXPECT_NE(fn.error().message.find(bogus.string()), std::string::npos) << fn.error().message;
}

}  // namespace
}  // namespace nimbus
