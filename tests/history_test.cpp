// The invocation history's own promises (observe/history.h) on a real embedded store: hosts
// that share a store fill one ring of exactly `keep` records; the lines kept per invocation
// and in waiting are bounded; cut text stays valid UTF-8 and JSON.
#include "store_conformance.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/json.hpp>

#include "core/text.h"
#include "observe/history.h"
#include "observe/log.h"

namespace nimbus {
namespace {

namespace json = boost::json;

struct Fixture {
  Fixture() : dir(fresh_dir()), null_fd(::open("/dev/null", O_WRONLY)), sink(null_fd), logger(sink, clock, "t") {
    auto s = open_store("sqlite:state.db", dir, clock);
    EXPECT_TRUE(s.ok());
    store = std::move(*s);
  }
  ~Fixture() {
    store->close();
    ::close(null_fd);
  }
  void record(InvocationHistory& h, const std::string& fn, const std::string& id, Outcome outcome = Outcome::success) {
    clock.advance(std::chrono::milliseconds(1));
    InvocationRecord r{fn, TriggerKind::http, id, "", outcome, 200, std::chrono::milliseconds(3), "", "", clock.wall()};
    h.record(r, clock.wall());
  }
  std::vector<json::object> query(InvocationHistory& h, HistoryQuery q) {
    auto text = h.query(q);
    EXPECT_TRUE(text.ok()) << (text.ok() ? "" : text.error().message);
    std::vector<json::object> out;
    if (!text.ok()) return out;
    boost::system::error_code ec;
    json::value v = json::parse(*text, ec);
    EXPECT_FALSE(ec) << *text;
    if (ec) return out;
    for (auto& x : v.at("invocations").as_array()) out.push_back(x.as_object());
    return out;
  }
  fs::path dir;
  int null_fd;
  ManualClock clock;
  LogSink sink;
  Logger logger;
  std::unique_ptr<Store> store;
};

TEST(History, TwoHostsOnOneStoreFillOneRingOfExactlyKeep) {
  Fixture f;
  InvocationHistory a(*f.store, f.clock, 10, f.logger), b(*f.store, f.clock, 10, f.logger);
  int n = 0;
  auto id = [](int i) { return "id-" + std::to_string(i); };
  for (int i = 0; i < 7; ++i) f.record(a, "fn", id(n++));
  for (int i = 0; i < 7; ++i) f.record(b, "fn", id(n++));
  a.flush();
  b.flush();  // reads the counter a left: its records go on after a's
  for (int i = 0; i < 4; ++i) f.record(a, "fn", id(n++));
  a.flush();  // a's idea of the counter is stale: the conflict makes it read again
  for (int i = 0; i < 3; ++i) f.record(b, "fn", id(n++));
  b.flush();
  HistoryQuery q;
  q.function = "fn";
  q.limit = 100;
  auto kept = f.query(a, q);
  ASSERT_EQ(kept.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(kept[static_cast<std::size_t>(i)].at("invocation_id").as_string(), id(n - 1 - i));
  EXPECT_EQ(f.query(b, q).size(), 10u);
  std::string metrics;
  a.metrics_text(metrics);
  EXPECT_NE(metrics.find("nimbus_history_records_written_total 11"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("nimbus_history_records_dropped_total 0"), std::string::npos) << metrics;
}

// A store that refuses the batch (here: closed): the records are dropped and counted, and
// recording never waits for it.
TEST(History, RecordsTheStoreRefusesAreDroppedAndCounted) {
  Fixture f;
  InvocationHistory h(*f.store, f.clock, 10, f.logger);
  f.record(h, "fn", "before");
  h.flush();  // the ring's counter is known from here on
  f.store->close();
  for (int i = 0; i < 3; ++i) f.record(h, "fn", "after-" + std::to_string(i));
  h.flush();
  std::string metrics;
  h.metrics_text(metrics);
  EXPECT_NE(metrics.find("nimbus_history_records_written_total 1\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("nimbus_history_records_dropped_total 3\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("nimbus_history_write_failures_total 1\n"), std::string::npos) << metrics;
}

TEST(History, LinesAreBoundedPerInvocationAndWhileWaiting) {
  Fixture f;
  InvocationHistory h(*f.store, f.clock, 100, f.logger);
  for (int i = 0; i < 150; ++i) h.user_line(LogLevel::info, "fn", "busy", "line " + std::to_string(i), f.clock.wall());
  f.record(h, "fn", "busy");
  // Lines of invocations that never finish: past 8 MiB, the oldest go.
  const std::string big(4000, 'x');
  for (int i = 0; i < 2500; ++i) h.user_line(LogLevel::info, "fn", "open-" + std::to_string(i), big, f.clock.wall());
  f.record(h, "fn", "open-0");
  f.record(h, "fn", "open-2499");
  HistoryQuery q;
  q.invocation_id = "busy";
  auto busy = f.query(h, q);
  ASSERT_EQ(busy.size(), 1u);
  const auto& lines = busy[0].at("logs").as_array();
  ASSERT_EQ(lines.size(), InvocationHistory::kMaxLinesPerInvocation);
  EXPECT_EQ(lines.front().at("msg").as_string(), "line 0");
  EXPECT_EQ(lines.back().at("msg").as_string(), "line 99");
  q.invocation_id = "open-0";
  auto evicted = f.query(h, q);
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_TRUE(evicted[0].at("logs").as_array().empty());
  q.invocation_id = "open-2499";
  auto last = f.query(h, q);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].at("logs").as_array().size(), 1u);
}

TEST(History, LongTextIsCutOnACharacterAndFailuresFilter) {
  Fixture f;
  InvocationHistory h(*f.store, f.clock, 100, f.logger);
  // One byte, then 3-byte characters, quotes and newlines: the bound falls inside a character.
  std::string message = "x";
  while (message.size() < 2 * InvocationHistory::kMaxLineBytes) message += "€\"\n";
  h.user_line(LogLevel::warn, "fn", "long", message, f.clock.wall());
  f.record(h, "fn", "long", Outcome::error);
  f.record(h, "fn", "fine");
  HistoryQuery q;
  q.failed_only = true;
  auto failed = f.query(h, q);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].at("invocation_id").as_string(), "long");
  const std::string kept(failed[0].at("logs").as_array().at(0).at("msg").as_string());
  EXPECT_TRUE(valid_utf8(kept));
  EXPECT_EQ(kept.find("\xef\xbf\xbd"), std::string::npos);  // no U+FFFD: nothing was cut mid-character
  EXPECT_LE(kept.size(), InvocationHistory::kMaxLineBytes + 3);
  EXPECT_EQ(kept.rfind("…"), kept.size() - 3);  // says it was cut
}

}  // namespace
}  // namespace nimbus
