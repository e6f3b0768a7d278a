// Structured logs: every line is one JSON object, fields are escaped, lines from many threads
// all arrive whole, and levels below the minimum are dropped.
#include "observe/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <boost/json.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

namespace nimbus {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

// A temp file the sink writes to; read back after flush().
class LogFile {
 public:
  LogFile() {
    static std::atomic<int> n{0};
    path_ = fs::temp_directory_path() /
            ("nimbus_log_test_" + std::to_string(::getpid()) + "_" + std::to_string(n.fetch_add(1)) + "_" +
             std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ".log");
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_GE(fd_, 0) << path_;
  }
  ~LogFile() {
    if (fd_ >= 0) ::close(fd_);
    std::error_code ec;
    fs::remove(path_, ec);
  }
  int fd() const { return fd_; }
  std::vector<std::string> lines() const {
    std::ifstream in(path_, std::ios::binary);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }
  std::string contents() const {
    std::ifstream in(path_, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  fs::path path_;
  int fd_ = -1;
};

json::object parse_line(const std::string& line) {
  boost::system::error_code ec;
  json::value v = json::parse(line, ec);
  EXPECT_FALSE(ec) << "not JSON: " << line << " (" << ec.message() << ")";
  if (ec || !v.is_object()) {
    ADD_FAILURE() << "not a JSON object: " << line;
    return {};
  }
  return v.as_object();
}

std::string str(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_string()) return "<missing>";
  return std::string(it->value().as_string());
}

// The RFC 3339 UTC stamp the logger should write for `t`, built independently here.
std::string expected_time(WallTime t) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  std::time_t sec = static_cast<std::time_t>(us / 1'000'000);
  std::tm tm{};
  gmtime_r(&sec, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char frac[16];
  std::snprintf(frac, sizeof frac, ".%06lldZ", static_cast<long long>(us % 1'000'000));
  return std::string(buf) + frac;
}

TEST(LogTest, InvocationLineHasEveryField) {
  LogFile file;
  ManualClock clock;
  LogSink sink(file.fd());
  Logger log(sink, clock, "shop");
  log.invocation({.function = "orders",
                  .trigger = TriggerKind::http,
                  .invocation_id = "0123456789abcdef0123456789abcdef",
                  .traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                  .outcome = Outcome::success,
                  .status = 201,
                  .duration = std::chrono::microseconds(12345),
                  .error_type = "",
                  .error_message = ""});
  sink.flush();

  auto lines = file.lines();
  ASSERT_EQ(lines.size(), 1u);
  auto o = parse_line(lines[0]);
  EXPECT_EQ(str(o, "time"), expected_time(clock.wall()));
  EXPECT_EQ(str(o, "level"), "info");
  EXPECT_EQ(str(o, "app"), "shop");
  EXPECT_EQ(str(o, "msg"), "invocation");
  EXPECT_EQ(str(o, "function"), "orders");
  EXPECT_EQ(str(o, "trigger"), "http");
  EXPECT_EQ(str(o, "invocation_id"), "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(str(o, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(str(o, "outcome"), "success");
  ASSERT_TRUE(o.contains("status"));
  EXPECT_EQ(o.at("status").to_number<int64_t>(), 201);
  ASSERT_TRUE(o.contains("duration_ms"));
  EXPECT_DOUBLE_EQ(o.at("duration_ms").to_number<double>(), 12.345);
  EXPECT_FALSE(o.contains("error_type"));
  EXPECT_FALSE(o.contains("error"));
}

TEST(LogTest, FailedInvocationIsAWarningWithItsError) {
  LogFile file;
  ManualClock clock;
  clock.advance(1234567us);  // a stamp with a non-zero fraction
  LogSink sink(file.fd());
  Logger log(sink, clock, "shop");
  log.invocation({.function = "orders",
                  .trigger = TriggerKind::named("queue"),
                  .invocation_id = "id-1",
                  .traceparent = "",
                  .outcome = Outcome::error,
                  .status = 0,
                  .duration = std::chrono::milliseconds(2),
                  .error_type = "exception",
                  .error_message = "boom \"quoted\"\nsecond line"});
  sink.flush();
  auto lines = file.lines();
  ASSERT_EQ(lines.size(), 1u);
  auto o = parse_line(lines[0]);
  EXPECT_EQ(str(o, "time"), expected_time(clock.wall()));
  EXPECT_EQ(str(o, "level"), "warn");
  EXPECT_EQ(str(o, "trigger"), "queue");
  EXPECT_EQ(str(o, "outcome"), "error");
  EXPECT_EQ(str(o, "error_type"), "exception");
  EXPECT_EQ(str(o, "error"), "boom \"quoted\"\nsecond line");
  EXPECT_FALSE(o.contains("status")) << "no status for a non-HTTP invocation";
  EXPECT_FALSE(o.contains("trace_id"));
  EXPECT_DOUBLE_EQ(o.at("duration_ms").to_number<double>(), 2.0);
}

TEST(LogTest, UserLineCarriesTheInvocationId) {
  LogFile file;
  ManualClock clock;
  LogSink sink(file.fd());
  Logger log(sink, clock, "shop");
  log.user(LogLevel::warn, "orders", "inv-42", "stock is low");
  sink.flush();
  auto lines = file.lines();
  ASSERT_EQ(lines.size(), 1u);
  auto o = parse_line(lines[0]);
  EXPECT_EQ(str(o, "level"), "warn");
  EXPECT_EQ(str(o, "app"), "shop");
  EXPECT_EQ(str(o, "msg"), "stock is low");
  EXPECT_EQ(str(o, "function"), "orders");
  EXPECT_EQ(str(o, "invocation_id"), "inv-42");
  EXPECT_EQ(str(o, "source"), "user");
}

TEST(LogTest, HostLineCarriesTextAndNumberFields) {
  LogFile file;
  ManualClock clock;
  LogSink sink(file.fd());
  Logger log(sink, clock, "shop");
  std::string owned = "0.0.0.0";
  log.host(LogLevel::info, "listening", {{"address", owned}, {"port", 8080}, {"big", int64_t{1} << 40}, {"kind", "http"}});
  sink.flush();
  auto lines = file.lines();
  ASSERT_EQ(lines.size(), 1u);
  auto o = parse_line(lines[0]);
  EXPECT_EQ(str(o, "msg"), "listening");
  EXPECT_EQ(str(o, "address"), "0.0.0.0");
  EXPECT_EQ(str(o, "kind"), "http");
  ASSERT_TRUE(o.at("port").is_int64());
  EXPECT_EQ(o.at("port").as_int64(), 8080);
  EXPECT_EQ(o.at("big").to_number<int64_t>(), int64_t{1} << 40);
}

TEST(LogTest, HostileStringsAreEscaped) {
  LogFile file;
  ManualClock clock;
  LogSink sink(file.fd());
  const std::string app = "a\"pp\\";
  Logger log(sink, clock, app);
  std::string hostile = "quote\" backslash\\ newline\n cr\r tab\t nul";
  hostile.push_back('\0');
  hostile += " bell\x07 esc\x1b unit\x1f del\x7f utf8 \xc3\xa9";
  log.user(LogLevel::info, "fn\"x", "id\n1", hostile);
  log.host(LogLevel::error, hostile, {{"k", hostile}});
  sink.flush();

  std::string raw = file.contents();
  auto lines = file.lines();
  ASSERT_EQ(lines.size(), 2u) << "an embedded newline must not split a line: " << raw;
  for (char c : raw) {
    if (c == '\n') continue;
    EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20) << "raw control character in output";
  }
  auto user = parse_line(lines[0]);
  EXPECT_EQ(str(user, "msg"), hostile);
  EXPECT_EQ(str(user, "function"), "fn\"x");
  EXPECT_EQ(str(user, "invocation_id"), "id\n1");
  EXPECT_EQ(str(user, "app"), app);
  auto host = parse_line(lines[1]);
  EXPECT_EQ(str(host, "level"), "error");
  EXPECT_EQ(str(host, "msg"), hostile);
  EXPECT_EQ(str(host, "k"), hostile);
}

TEST(LogTest, AppendJsonEscaped) {
  std::string out = "x";
  append_json_escaped(out, std::string("a\"b\\c\n\r\t\x01\x1f", 10));
  EXPECT_EQ(out, "xa\\\"b\\\\c\\n\\r\\t\\u0001\\u001f");
}

TEST(LogTest, LinesFromManyThreadsAllArriveWhole) {
  LogFile file;
  ManualClock clock;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 3000;
  {
    LogSink sink(file.fd());
    Logger log(sink, clock, "shop");
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&log, t] {
        // Long-ish messages make a torn write easy to see.
        std::string pad(200, static_cast<char>('a' + t));
        for (int i = 0; i < kPerThread; ++i) {
          log.host(LogLevel::info, pad, {{"thread", t}, {"seq", i}});
        }
      });
    }
    for (auto& th : threads) th.join();
    sink.flush();
  }
  auto lines = file.lines();
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(kThreads * kPerThread));
  std::map<int64_t, int64_t> next_seq;
  for (const auto& line : lines) {
    auto o = parse_line(line);
    ASSERT_TRUE(o.contains("thread") && o.contains("seq")) << line;
    int64_t t = o.at("thread").as_int64();
    int64_t seq = o.at("seq").as_int64();
    EXPECT_EQ(str(o, "msg"), std::string(200, static_cast<char>('a' + t)));
    EXPECT_EQ(seq, next_seq[t]) << "lines of one thread arrive in order, none missing";
    next_seq[t] = seq + 1;
  }
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(next_seq[t], kPerThread);
}

TEST(LogTest, DestroyingTheSinkFlushes) {
  LogFile file;
  ManualClock clock;
  {
    LogSink sink(file.fd());
    Logger log(sink, clock, "shop");
    for (int i = 0; i < 10; ++i) log.host(LogLevel::info, "line", {{"i", i}});
  }
  auto lines = file.lines();
  ASSERT_EQ(lines.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(parse_line(lines[i]).at("i").as_int64(), i);
}

TEST(LogTest, WritesThroughAPipe) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ManualClock clock;
  {
    LogSink sink(fds[1]);
    Logger log(sink, clock, "shop");
    log.host(LogLevel::info, "through a pipe");
    sink.flush();
  }
  ::close(fds[1]);
  std::string got;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) got.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back(), '\n');
  EXPECT_EQ(got.find('\n'), got.size() - 1) << "exactly one line";
  EXPECT_EQ(str(parse_line(got.substr(0, got.size() - 1)), "msg"), "through a pipe");
}

TEST(LogTest, LevelsBelowTheMinimumAreDropped) {
  LogFile file;
  ManualClock clock;
  LogSink sink(file.fd());
  Logger log(sink, clock, "shop", LogLevel::warn);
  EXPECT_FALSE(log.enabled(LogLevel::debug));
  EXPECT_FALSE(log.enabled(LogLevel::info));
  EXPECT_TRUE(log.enabled(LogLevel::warn));
  EXPECT_TRUE(log.enabled(LogLevel::error));

  log.host(LogLevel::debug, "dropped-debug");
  log.host(LogLevel::info, "dropped-info");
  log.user(LogLevel::info, "f", "id", "dropped-user");
  InvocationRecord ok{.function = "f", .trigger = TriggerKind::http, .invocation_id = "ok-id",
                      .traceparent = "", .outcome = Outcome::success, .status = 200,
                      .duration = 1ms, .error_type = "", .error_message = ""};
  log.invocation(ok);  // a success is info: dropped
  InvocationRecord slow = ok;
  slow.invocation_id = "timeout-id";
  slow.outcome = Outcome::timeout;
  log.invocation(slow);  // anything else is warn: kept
  log.host(LogLevel::warn, "kept-warn");
  log.user(LogLevel::error, "f", "id", "kept-user");
  sink.flush();

  std::vector<std::string> kept;
  for (const auto& l : file.lines()) {
    auto o = parse_line(l);
    kept.push_back(str(o, "msg") == "invocation" ? str(o, "invocation_id") : str(o, "msg"));
  }
  EXPECT_EQ(kept, (std::vector<std::string>{"timeout-id", "kept-warn", "kept-user"}));

  LogFile debug_file;
  LogSink debug_sink(debug_file.fd());
  Logger debug_log(debug_sink, clock, "shop", LogLevel::debug);
  debug_log.host(LogLevel::debug, "shown");
  debug_sink.flush();
  auto lines = debug_file.lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(str(parse_line(lines[0]), "level"), "debug");
}

TEST(LogTest, LevelNames) {
  EXPECT_EQ(to_string(LogLevel::debug), "debug");
  EXPECT_EQ(to_string(LogLevel::info), "info");
  EXPECT_EQ(to_string(LogLevel::warn), "warn");
  EXPECT_EQ(to_string(LogLevel::error), "error");
}

// The numbered ring `nimbus logs` reads: the last lines, the lines after a number, one
// function's lines, and a gap once lines have left the ring.
TEST(LogTest, RecentLinesAreNumberedFilteredAndBounded) {
  LogFile file;
  LogSink sink(file.fd());
  for (int i = 1; i <= 10; ++i) {
    const std::string fn = i % 2 ? "odd" : "even";
    sink.write_line("{\"msg\":\"line " + std::to_string(i) + "\",\"function\":\"" + fn + "\"}");
  }
  sink.flush();
  auto tail = sink.recent(0, "", 3);
  ASSERT_EQ(tail.lines.size(), 3u);
  EXPECT_NE(tail.lines[0].find("line 8"), std::string::npos);
  EXPECT_NE(tail.lines[2].find("line 10"), std::string::npos);
  EXPECT_EQ(tail.next, 11u);
  auto after = sink.recent(4, "even", 100);
  ASSERT_EQ(after.lines.size(), 3u);  // 6, 8, 10
  EXPECT_NE(after.lines[0].find("line 6"), std::string::npos);
  EXPECT_FALSE(after.gap);
  auto first_two = sink.recent(4, "", 2);  // 5 and 6; ask after 6 next time
  ASSERT_EQ(first_two.lines.size(), 2u);
  EXPECT_EQ(first_two.next, 7u);
  EXPECT_TRUE(sink.recent(10, "", 100).lines.empty());
  EXPECT_TRUE(sink.recent(0, "ev", 100).lines.empty());  // a whole name, not a prefix

  const std::string big(64 * 1024, 'x');
  for (int i = 0; i < 100; ++i) {  // 6.4 MiB: past the ring's 4 MiB
    sink.write_line(big);
    sink.flush();
  }
  auto late = sink.recent(2, "", 1);
  EXPECT_TRUE(late.gap);
  EXPECT_EQ(late.lines.size(), 1u);
  auto all = sink.recent(0, "", 1000);
  EXPECT_LE(all.lines.size() * big.size(), LogSink::kRecentBytes + big.size());
  EXPECT_EQ(all.next, 111u);
}

}  // namespace
}  // namespace nimbus
