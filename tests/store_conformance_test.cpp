// The store conformance suite: every backend must pass all of it unchanged (parameterized by
// store URL; sqlite now, redis:// and postgres:// when they exist). Time is a ManualClock, so
// leases, delays and TTLs expire when the test says.
#include <gtest/gtest.h>

#include <limits>
#include <signal.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "store/store.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

fs::path fresh_dir() {
  std::random_device rd;
  fs::path dir = fs::temp_directory_path() / ("nimbus-store-" + std::to_string(rd()) + std::to_string(rd()));
  fs::create_directories(dir);
  return dir;
}

class StoreConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fresh_dir();
    reopen();
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void reopen() {
    store_.reset();
    auto s = open_store(GetParam(), dir_, clock_);
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(*s);
  }
  static NewMessage msg(std::string payload, std::string type = "t", std::string subject = "") {
    NewMessage m;
    m.payload = std::move(payload);
    m.type = std::move(type);
    m.source = "/tests";
    m.subject = std::move(subject);
    return m;
  }
  std::string enqueue(const std::string& queue, NewMessage m) {
    Batch b;
    b.enqueues.push_back({queue, std::move(m)});
    auto r = store_->commit_sync(std::move(b));
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? r->message_ids.at(0) : std::string();
  }
  Expected<BatchResult> commit(Batch b) { return store_->commit_sync(std::move(b)); }
  std::vector<Message> receive(const std::string& queue, int max, int64_t lease_ms = 30000) {
    auto r = store_->receive_sync(queue, max, lease_ms);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? *r : std::vector<Message>{};
  }
  QueueStats stats_of(const std::string& queue) {
    auto all = store_->stats();
    EXPECT_TRUE(all.ok());
    for (auto& q : *all)
      if (q.queue == queue) return q;
    return QueueStats{queue};
  }
  static Batch ack(const Message& m) {
    Batch b;
    b.acks.push_back({m.id, m.lease});
    return b;
  }

  fs::path dir_;
  ManualClock clock_;
  std::unique_ptr<Store> store_;
};

TEST_P(StoreConformance, EnqueueReceiveAckInOrderWithEverythingKept) {
  NewMessage first = msg(std::string("bin\0ary\xff", 8), "order.created", "orders/1");
  first.metadata = {{"k", "v"}, {"k", "second"}, {"empty", ""}};
  std::string id1 = enqueue("q", first);
  std::string id2 = enqueue("q", msg("two"));
  std::string id3 = enqueue("q", msg("three"));
  EXPECT_EQ(id1.size(), 32u);
  EXPECT_NE(id1, id2);

  auto got = receive("q", 2);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].id, id1);
  EXPECT_EQ(got[1].id, id2);
  const Message& m = got[0];
  EXPECT_EQ(m.payload, std::string("bin\0ary\xff", 8));
  EXPECT_EQ(m.type, "order.created");
  EXPECT_EQ(m.source, "/tests");
  EXPECT_EQ(m.subject, "orders/1");
  EXPECT_EQ(m.event_id, id1);
  ASSERT_EQ(m.metadata.size(), 3u);
  EXPECT_EQ(m.metadata[1].value, "second");
  EXPECT_EQ(m.deliveries, 1);
  EXPECT_EQ(m.queue, "q");
  EXPECT_FALSE(m.lease.empty());
  EXPECT_EQ(m.enqueued_ms, std::chrono::duration_cast<std::chrono::milliseconds>(clock_.wall().time_since_epoch()).count());

  QueueStats s = stats_of("q");
  EXPECT_EQ(s.ready, 1);
  EXPECT_EQ(s.in_flight, 2);
  ASSERT_TRUE(commit(ack(got[0])).ok());
  ASSERT_TRUE(commit(ack(got[1])).ok());
  s = stats_of("q");
  EXPECT_EQ(s.ready, 1);
  EXPECT_EQ(s.in_flight, 0);
  auto last = receive("q", 10);
  ASSERT_EQ(last.size(), 1u);
  EXPECT_EQ(last[0].id, id3);
  EXPECT_TRUE(receive("other", 10).empty());
}

TEST_P(StoreConformance, AnExpiredLeaseRedeliversAndTheOldLeaseCanNoLongerAck) {
  std::string id = enqueue("q", msg("x"));
  auto first = receive("q", 1, 1000);
  ASSERT_EQ(first.size(), 1u);
  clock_.advance(999ms);
  EXPECT_TRUE(receive("q", 1).empty()) << "leased: nobody else gets it";
  clock_.advance(2ms);
  auto second = receive("q", 1, 1000);
  ASSERT_EQ(second.size(), 1u);
  EXPECT_EQ(second[0].id, id);
  EXPECT_EQ(second[0].deliveries, 2);
  auto stale = commit(ack(first[0]));
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, store_error::conflict);
  EXPECT_TRUE(commit(ack(second[0])).ok());
}

TEST_P(StoreConformance, ExtendingALeaseKeepsTheMessage) {
  enqueue("q", msg("x"));
  auto got = receive("q", 1, 1000);
  clock_.advance(900ms);
  ASSERT_TRUE(store_->extend_sync({{got[0].id, got[0].lease}}, 1000).ok());
  clock_.advance(900ms);
  EXPECT_TRUE(receive("q", 1).empty());
  EXPECT_TRUE(commit(ack(got[0])).ok());
}

TEST_P(StoreConformance, DelayedMessagesWaitForTheirTime) {
  NewMessage m = msg("later");
  m.delay_ms = 5000;
  enqueue("q", m);
  EXPECT_TRUE(receive("q", 1).empty());
  EXPECT_EQ(stats_of("q").delayed, 1);
  auto due = store_->next_due("q");
  ASSERT_TRUE(due.ok());
  EXPECT_EQ(*due, std::chrono::duration_cast<std::chrono::milliseconds>(clock_.wall().time_since_epoch()).count() + 5000);
  clock_.advance(5s);
  EXPECT_EQ(receive("q", 1).size(), 1u);
}

// Found by fuzz/admin_fuzz.cpp: an x-delay-ms header (or a function's delay_ms or ttl_ms)
// is any int64, and now + it overflowed: the "delayed" message was due at once.
TEST_P(StoreConformance, DelaysAndTtlsBeyondTheEndOfTimeDoNotOverflow) {
  constexpr int64_t kForever = std::numeric_limits<int64_t>::max();
  NewMessage m = msg("never");
  m.delay_ms = kForever;
  enqueue("q", m);
  EXPECT_TRUE(receive("q", 1).empty());
  EXPECT_EQ(stats_of("q").delayed, 1);
  auto due = store_->next_due("q");
  ASSERT_TRUE(due.ok());
  EXPECT_EQ(*due, kForever);

  Batch put;
  put.puts.push_back({"docs", "k", "kept", std::nullopt, kForever});
  ASSERT_TRUE(commit(put).ok());
  auto entry = store_->get("docs", "k");
  ASSERT_TRUE(entry.ok());
  EXPECT_TRUE(entry->has_value()) << "a ttl beyond the end of time keeps the entry";
}

TEST_P(StoreConformance, RetryKeepsTheErrorAndDeadLettersMoveWithIt) {
  std::string id = enqueue("q", msg("poison"));
  auto got = receive("q", 1);
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(clock_.wall().time_since_epoch()).count();
  Batch retry;
  retry.retries.push_back({{got[0].id, got[0].lease}, now + 2000, "KeyError: first"});
  ASSERT_TRUE(commit(retry).ok());
  EXPECT_TRUE(receive("q", 1).empty()) << "not before its retry time";
  clock_.advance(2s);
  got = receive("q", 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].deliveries, 2);
  EXPECT_EQ(got[0].last_error, "KeyError: first");
  EXPECT_EQ(got[0].first_failed_ms, now);

  Batch dead;
  dead.dead.push_back({{got[0].id, got[0].lease}, "KeyError: last"});
  ASSERT_TRUE(commit(dead).ok());
  EXPECT_TRUE(receive("q", 1).empty());
  auto dl = store_->peek("q.dead", 10);
  ASSERT_TRUE(dl.ok());
  ASSERT_EQ(dl->size(), 1u);
  EXPECT_EQ((*dl)[0].id, id);
  EXPECT_EQ((*dl)[0].last_error, "KeyError: last");
  EXPECT_EQ((*dl)[0].deliveries, 2);
  EXPECT_EQ((*dl)[0].first_failed_ms, now);
  EXPECT_EQ((*dl)[0].last_failed_ms, now + 2000);
  EXPECT_EQ((*dl)[0].payload, "poison");

  auto replayed = store_->replay_dead_sync("q");
  ASSERT_TRUE(replayed.ok());
  EXPECT_EQ(*replayed, 1);
  got = receive("q", 1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].deliveries, 1) << "a replay starts the attempts again";
}

TEST_P(StoreConformance, ABatchAppliesWhollyOrNotAtAll) {
  enqueue("in", msg("input"));
  auto got = receive("in", 1);
  Batch ok_put;
  ok_put.puts.push_back({"s", "k", "v1", std::nullopt, 0});
  auto put = commit(ok_put);
  ASSERT_TRUE(put.ok());
  std::string etag = put->etags.at(0);

  Batch b;
  b.acks.push_back({got[0].id, got[0].lease});
  b.enqueues.push_back({"out", msg("output")});
  b.puts.push_back({"s", "k", "v2", std::string("not-" + etag), 0});  // fails the batch
  auto r = commit(b);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, store_error::conflict);
  EXPECT_EQ(stats_of("in").in_flight, 1) << "the ack did not happen";
  EXPECT_TRUE(receive("out", 1).empty()) << "the output did not happen";
  EXPECT_EQ((*store_->get("s", "k"))->value, "v1");

  b.puts.back().if_match = etag;
  r = commit(b);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(stats_of("in").in_flight, 0);
  EXPECT_EQ(receive("out", 1).size(), 1u);
  EXPECT_EQ((*store_->get("s", "k"))->value, "v2");
}

TEST_P(StoreConformance, OneFailingCommitDoesNotFailOthersInTheSameGroup) {
  std::vector<std::thread> threads;
  std::atomic<int> ok{0}, conflicts{0};
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      Batch b;
      b.puts.push_back({"s", "key" + std::to_string(i), "v", i % 2 ? std::optional<std::string>("wrong") : std::nullopt, 0});
      auto r = store_->commit_sync(std::move(b));
      (r.ok() ? ok : conflicts)++;
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4);
  EXPECT_EQ(conflicts.load(), 4);
  auto all = store_->scan("s", "key", 100);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 4u);
}

TEST_P(StoreConformance, TopicsCopyToEveryMatchingSubscription) {
  ASSERT_TRUE(store_->subscribe_sync({"orders", "audit", "", "", ""}).ok());
  ASSERT_TRUE(store_->subscribe_sync({"orders", "created", "order.created", "", ""}).ok());
  ASSERT_TRUE(store_->subscribe_sync({"orders", "eu", "", "", "eu/"}).ok());
  ASSERT_TRUE(store_->subscribe_sync({"other", "x", "", "", ""}).ok());
  Batch b;
  b.publishes.push_back({"orders", msg("1", "order.created", "eu/7")});
  b.publishes.push_back({"orders", msg("2", "order.paid", "us/8")});
  auto r = commit(b);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->message_ids.size(), 2u);

  auto audit = receive("orders/audit", 10);
  ASSERT_EQ(audit.size(), 2u);
  EXPECT_EQ(audit[0].event_id, r->message_ids[0]);
  EXPECT_EQ(audit[1].event_id, r->message_ids[1]);
  auto created = receive("orders/created", 10);
  ASSERT_EQ(created.size(), 1u);
  EXPECT_EQ(created[0].payload, "1");
  EXPECT_EQ(created[0].event_id, audit[0].event_id) << "every copy carries the event's id";
  auto eu = receive("orders/eu", 10);
  ASSERT_EQ(eu.size(), 1u);
  EXPECT_EQ(eu[0].subject, "eu/7");
  EXPECT_TRUE(receive("other/x", 10).empty());
}

TEST_P(StoreConformance, StateHasETagsTtlPrefixScansAndConditionalWrites) {
  Batch put;
  put.puts.push_back({"docs", "a/1", "one", std::string(""), 0});  // create only
  auto r = commit(put);
  ASSERT_TRUE(r.ok());
  std::string e1 = r->etags[0];
  auto again = commit(put);
  ASSERT_FALSE(again.ok()) << "create-only on an existing key";
  EXPECT_EQ(again.error().code, store_error::conflict);

  Batch update;
  update.puts.push_back({"docs", "a/1", "uno", e1, 0});
  r = commit(update);
  ASSERT_TRUE(r.ok());
  EXPECT_NE(r->etags[0], e1);
  EXPECT_FALSE(commit(update).ok()) << "the old ETag no longer matches";

  Batch more;
  more.puts.push_back({"docs", "a/2", "two", std::nullopt, 0});
  more.puts.push_back({"docs", "b/1", "other", std::nullopt, 0});
  more.puts.push_back({"docs", "a/3", "brief", std::nullopt, 1000});
  more.puts.push_back({"elsewhere", "a/9", "x", std::nullopt, 0});
  ASSERT_TRUE(commit(more).ok());
  auto scan = store_->scan("docs", "a/", 10);
  ASSERT_TRUE(scan.ok());
  ASSERT_EQ(scan->size(), 3u);
  EXPECT_EQ((*scan)[0].key, "a/1");
  EXPECT_EQ((*scan)[0].value, "uno");
  EXPECT_EQ((*scan)[2].key, "a/3");
  EXPECT_EQ(store_->scan("docs", "a/", 2)->size(), 2u);
  EXPECT_EQ(store_->scan("docs", "", 10)->size(), 4u);

  clock_.advance(1001ms);
  EXPECT_FALSE(store_->get("docs", "a/3")->has_value()) << "expired";
  EXPECT_EQ(store_->scan("docs", "a/", 10)->size(), 2u);

  auto cur = store_->get("docs", "a/2");
  Batch del;
  del.deletes.push_back({"docs", "a/2", std::string("stale")});
  EXPECT_FALSE(commit(del).ok());
  del.deletes.back().if_match = (*cur)->etag;
  ASSERT_TRUE(commit(del).ok());
  EXPECT_FALSE(store_->get("docs", "a/2")->has_value());
  EXPECT_FALSE(store_->get("docs", "missing")->has_value());
}

TEST_P(StoreConformance, CompetingConsumersNeverShareAMessage) {
  constexpr int kMessages = 400;
  Batch b;
  for (int i = 0; i < kMessages; ++i) b.enqueues.push_back({"work", msg(std::to_string(i))});
  ASSERT_TRUE(commit(b).ok());
  std::mutex mu;
  std::set<std::string> seen;
  std::atomic<int> duplicates{0};
  std::vector<std::thread> consumers;
  for (int c = 0; c < 4; ++c) {
    consumers.emplace_back([&] {
      for (;;) {
        auto got = store_->receive_sync("work", 7, 60000);
        if (!got.ok() || got->empty()) return;
        Batch acks;
        for (auto& m : *got) {
          std::lock_guard l(mu);
          if (!seen.insert(m.id).second) ++duplicates;
          acks.acks.push_back({m.id, m.lease});
        }
        EXPECT_TRUE(store_->commit_sync(std::move(acks)).ok());
      }
    });
  }
  for (auto& t : consumers) t.join();
  EXPECT_EQ(duplicates.load(), 0);
  EXPECT_EQ(seen.size(), static_cast<std::size_t>(kMessages));
}

TEST_P(StoreConformance, PeekPurgeAndStatsAndWhatSurvivesAReopen) {
  enqueue("a", msg("1"));
  enqueue("a", msg("2"));
  enqueue("b", msg("3"));
  Batch put;
  put.puts.push_back({"s", "k", "kept", std::nullopt, 0});
  ASSERT_TRUE(commit(put).ok());
  reopen();
  auto peek = store_->peek("a", 10);
  ASSERT_TRUE(peek.ok());
  ASSERT_EQ(peek->size(), 2u);
  EXPECT_TRUE((*peek)[0].lease.empty()) << "peeking leases nothing";
  EXPECT_EQ(stats_of("a").ready, 2);
  EXPECT_EQ((*store_->get("s", "k"))->value, "kept");
  auto purged = store_->purge_sync("a");
  ASSERT_TRUE(purged.ok());
  EXPECT_EQ(*purged, 2);
  EXPECT_TRUE(receive("a", 10).empty());
  EXPECT_EQ(receive("b", 10).size(), 1u);
}

TEST_P(StoreConformance, ListenersHearWhichQueuesGotWork) {
  std::mutex mu;
  std::vector<std::string> heard;
  auto watch = store_->watch_changes([&](const std::vector<std::string>& queues) {
    std::lock_guard l(mu);
    heard.insert(heard.end(), queues.begin(), queues.end());
  });
  NewMessage later = msg("later");
  later.delay_ms = 1000;
  Batch b;
  b.enqueues.push_back({"now", msg("x")});
  b.enqueues.push_back({"delayed", later});
  ASSERT_TRUE(commit(b).ok());
  std::lock_guard l(mu);
  EXPECT_EQ(heard, std::vector<std::string>{"now"});
}

// Watches are handles: each hears every change while it lives, and nothing once dropped (the
// seam a multi-host backend fills with LISTEN/NOTIFY or pub/sub).
TEST_P(StoreConformance, EachWatchHearsChangesUntilItsHandleIsDropped) {
  std::mutex mu;
  std::vector<std::string> first, second;
  auto a = store_->watch_changes([&](const std::vector<std::string>& q) {
    std::lock_guard l(mu);
    first.insert(first.end(), q.begin(), q.end());
  });
  auto b = store_->watch_changes([&](const std::vector<std::string>& q) {
    std::lock_guard l(mu);
    second.insert(second.end(), q.begin(), q.end());
  });
  Batch one;
  one.enqueues.push_back({"q1", msg("x")});
  ASSERT_TRUE(commit(one).ok());
  a.reset();
  Batch two;
  two.enqueues.push_back({"q2", msg("y")});
  ASSERT_TRUE(commit(two).ok());
  std::lock_guard l(mu);
  EXPECT_EQ(first, std::vector<std::string>{"q1"});
  EXPECT_EQ(second, (std::vector<std::string>{"q1", "q2"}));
}

Batch::Append append_to(const std::string& stream, int partitions, std::string key, std::string payload) {
  Batch::Append a;
  a.stream = stream;
  a.partitions = partitions;
  a.key = std::move(key);
  a.record.payload = std::move(payload);
  a.record.type = "reading";
  a.record.source = "/devices";
  a.record.metadata = {{"unit", "C"}};
  return a;
}

TEST_P(StoreConformance, StreamsKeepOrderPerKeyAndOffsetsPerPartition) {
  // Keys spread over partitions by hash; each key's records stay in one partition, in order.
  Batch b;
  for (int i = 0; i < 40; ++i) b.appends.push_back(append_to("telemetry", 4, "device-" + std::to_string(i % 5), std::to_string(i)));
  auto r = commit(b);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->appended.size(), 40u);
  std::map<int, int64_t> next;  // per partition, offsets count from 0 with no gap
  for (int i = 0; i < 40; ++i) {
    const auto& pos = r->appended[static_cast<std::size_t>(i)];
    EXPECT_EQ(pos.partition, stream_partition("device-" + std::to_string(i % 5), 4));
    EXPECT_EQ(pos.offset, next[pos.partition]++);
  }
  int64_t total = 0;
  auto info = store_->stream_info("telemetry");
  ASSERT_TRUE(info.ok());
  for (const auto& p : *info) {
    auto records = store_->read_stream("telemetry", p.partition, 0, 1000);
    ASSERT_TRUE(records.ok());
    EXPECT_EQ(static_cast<int64_t>(records->size()), p.next_offset);
    std::map<std::string, int> last;  // payloads of one key only ever grow
    for (const auto& rec : *records) {
      EXPECT_EQ(stream_partition(rec.key, 4), p.partition);
      EXPECT_GT(std::stoi(rec.payload), last.count(rec.key) ? last[rec.key] : -1);
      last[rec.key] = std::stoi(rec.payload);
      EXPECT_EQ(rec.type, "reading");
      EXPECT_EQ(rec.metadata.at(0).value, "C");
    }
    total += p.records;
  }
  EXPECT_EQ(total, 40);
  // Reading from an offset returns that offset on.
  const int p0 = r->appended[0].partition;
  auto tail = store_->read_stream("telemetry", p0, 2, 2);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->size(), 2u);
  EXPECT_EQ(tail->at(0).offset, 2);
  EXPECT_EQ(tail->at(1).offset, 3);
}

TEST_P(StoreConformance, CheckpointsCommitWithOutputsAndAreFencedByTheirPreviousValue) {
  Batch first;
  first.appends.push_back(append_to("s", 1, "k", "a"));
  first.appends.push_back(append_to("s", 1, "k", "b"));
  ASSERT_TRUE(commit(first).ok());
  // Processing offsets 0..1 of group g: the checkpoint and the output go together.
  Batch done;
  done.checkpoints.push_back({"g", "s", 0, 2, int64_t{0}});
  done.enqueues.push_back({"out", msg("processed a,b")});
  ASSERT_TRUE(commit(done).ok());
  // A second consumer that read from 0 as well is fenced: its batch (and output) is refused.
  Batch stale;
  stale.checkpoints.push_back({"g", "s", 0, 2, int64_t{0}});
  stale.enqueues.push_back({"out", msg("processed a,b again")});
  auto r = commit(stale);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, store_error::conflict);
  EXPECT_EQ(stats_of("out").ready, 1);
  auto cps = store_->stream_checkpoints("s");
  ASSERT_TRUE(cps.ok());
  ASSERT_EQ(cps->size(), 1u);
  EXPECT_EQ(cps->at(0).group, "g");
  EXPECT_EQ(cps->at(0).offset, 2);
  reopen();
  cps = store_->stream_checkpoints("");
  ASSERT_TRUE(cps.ok());
  ASSERT_EQ(cps->size(), 1u);
  EXPECT_EQ(cps->at(0).offset, 2);
}

TEST_P(StoreConformance, RetentionDropsOldRecordsButNeverReusesOffsets) {
  for (int i = 0; i < 5; ++i) {
    Batch b;
    b.appends.push_back(append_to("r", 1, "k", std::to_string(i)));
    ASSERT_TRUE(commit(b).ok());
    clock_.advance(1s);
  }
  const int64_t third = unix_ms(clock_) - 3000;  // records 2, 3, 4 are at or after this time
  auto at = store_->stream_offset_at("r", 0, third);
  ASSERT_TRUE(at.ok());
  EXPECT_EQ(*at, 2);
  auto trimmed = store_->trim_stream_sync("r", third, 0);
  ASSERT_TRUE(trimmed.ok());
  EXPECT_EQ(*trimmed, 2);
  trimmed = store_->trim_stream_sync("r", 0, 2);  // keep the newest two
  ASSERT_TRUE(trimmed.ok());
  EXPECT_EQ(*trimmed, 1);
  auto info = store_->stream_info("r");
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->size(), 1u);
  EXPECT_EQ(info->at(0).first_offset, 3);
  EXPECT_EQ(info->at(0).next_offset, 5);
  // Everything trimmed: the next append still gets a new offset.
  ASSERT_TRUE(store_->trim_stream_sync("r", unix_ms(clock_) + 1, 0).ok());
  Batch b;
  b.appends.push_back(append_to("r", 1, "k", "new"));
  auto r = commit(b);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->appended.at(0).offset, 5);
}

TEST_P(StoreConformance, ListenersHearWhichStreamPartitionsGotRecords) {
  std::mutex mu;
  std::vector<std::string> heard;
  auto watch = store_->watch_changes([&](const std::vector<std::string>& names) {
    std::lock_guard l(mu);
    heard.insert(heard.end(), names.begin(), names.end());
  });
  Batch b;
  b.appends.push_back(append_to("s", 8, "alpha", "x"));
  ASSERT_TRUE(commit(b).ok());
  std::lock_guard l(mu);
  EXPECT_EQ(heard, std::vector<std::string>{stream_wake_name("s", stream_partition("alpha", 8))});
}

// --- blobs ---------------------------------------------------------------------------------

Batch::BlobPut blob_put(std::string container, std::string name, std::string data,
                        std::optional<std::string> if_match = std::nullopt) {
  Batch::BlobPut p;
  p.container = std::move(container);
  p.name = std::move(name);
  p.data = std::move(data);
  p.if_match = std::move(if_match);
  return p;
}

Batch put_batch(Batch::BlobPut p) {
  Batch b;
  b.blob_puts.push_back(std::move(p));
  return b;
}

Batch delete_batch(std::string container, std::string name, std::optional<std::string> if_match = std::nullopt) {
  Batch b;
  b.blob_deletes.push_back({std::move(container), std::move(name), std::move(if_match)});
  return b;
}

int64_t now_ms(const ManualClock& clock) { return unix_ms(clock); }

TEST_P(StoreConformance, BlobsPutGetHeadListAndDelete) {
  Batch::BlobPut p = blob_put("uploads", "2024/a.csv", std::string("abc"));
  p.content_type = "text/csv";
  p.metadata = {{"owner", "ann"}};
  auto put = commit(put_batch(p));
  ASSERT_TRUE(put.ok()) << put.error().message;
  ASSERT_EQ(put->blobs.size(), 1u);
  const BlobInfo& info = put->blobs[0];
  EXPECT_EQ(info.version, 1);
  EXPECT_FALSE(info.etag.empty());
  EXPECT_EQ(info.size, 3);
  EXPECT_EQ(info.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");  // FIPS 180-2 "abc"
  EXPECT_EQ(info.created_ms, now_ms(clock_));

  auto got = store_->get_blob("uploads", "2024/a.csv");
  ASSERT_TRUE(got.ok() && got->has_value()) << (got.ok() ? "none" : got.error().message);
  EXPECT_EQ((*got)->data, "abc");
  EXPECT_EQ((*got)->info.content_type, "text/csv");
  EXPECT_EQ((*got)->info.etag, info.etag);
  ASSERT_EQ((*got)->info.metadata.size(), 1u);
  EXPECT_EQ((*got)->info.metadata[0].value, "ann");
  auto head = store_->head_blob("uploads", "2024/a.csv");
  ASSERT_TRUE(head.ok() && head->has_value());
  EXPECT_EQ((*head)->sha256, info.sha256);
  auto missing = store_->get_blob("uploads", "2024/b.csv");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());

  // Binary bytes, and the empty blob, round-trip exactly.
  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "2024/b.bin", std::string("\0\xff\n", 3)))).ok());
  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "2024/c", ""))).ok());
  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "2025/d", "d"))).ok());
  ASSERT_TRUE(commit(put_batch(blob_put("other", "2024/e", "e"))).ok());
  EXPECT_EQ((*store_->get_blob("uploads", "2024/b.bin"))->data, std::string("\0\xff\n", 3));
  EXPECT_EQ((*store_->get_blob("uploads", "2024/c"))->info.size, 0);

  // Paged listing by prefix, in name order.
  auto page = store_->list_blobs("uploads", "2024/", "", 2);
  ASSERT_TRUE(page.ok()) << page.error().message;
  ASSERT_EQ(page->blobs.size(), 2u);
  EXPECT_EQ(page->blobs[0].name, "2024/a.csv");
  EXPECT_EQ(page->blobs[1].name, "2024/b.bin");
  ASSERT_FALSE(page->next_after.empty());
  auto rest = store_->list_blobs("uploads", "2024/", page->next_after, 2);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->blobs.size(), 1u);
  EXPECT_EQ(rest->blobs[0].name, "2024/c");
  EXPECT_TRUE(rest->next_after.empty());
  EXPECT_EQ(store_->list_blobs("uploads", "", "", 100)->blobs.size(), 4u);

  auto del = commit(delete_batch("uploads", "2024/a.csv"));
  ASSERT_TRUE(del.ok()) << del.error().message;
  EXPECT_EQ(del->blobs_deleted, std::vector<int64_t>{1});
  EXPECT_FALSE(store_->get_blob("uploads", "2024/a.csv")->has_value());
  EXPECT_FALSE(store_->head_blob("uploads", "2024/a.csv")->has_value());
  EXPECT_EQ(store_->list_blobs("uploads", "2024/", "", 100)->blobs.size(), 2u);
  auto again = commit(delete_batch("uploads", "2024/a.csv"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->blobs_deleted, std::vector<int64_t>{0}) << "deleting what is not there deletes nothing";

  reopen();
  EXPECT_EQ((*store_->get_blob("uploads", "2025/d"))->data, "d") << "after a reopen";
}

TEST_P(StoreConformance, BlobVersionsCountOnAcrossDeletesAndConditionalPutsConflict) {
  ASSERT_TRUE(commit(put_batch(blob_put("c", "x", "one"))).ok());
  const int64_t created = now_ms(clock_);
  clock_.advance(5s);
  auto v2 = commit(put_batch(blob_put("c", "x", "one")));  // the same bytes again: a new version
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->blobs[0].version, 2);
  EXPECT_EQ(v2->blobs[0].created_ms, created);
  EXPECT_EQ(v2->blobs[0].updated_ms, created + 5000);
  const std::string etag2 = v2->blobs[0].etag;

  auto create_only = commit(put_batch(blob_put("c", "x", "two", "")));
  ASSERT_FALSE(create_only.ok());
  EXPECT_EQ(create_only.error().code, store_error::conflict);
  EXPECT_NE(create_only.error().message.find("c/x"), std::string::npos) << create_only.error().message;
  auto stale = commit(put_batch(blob_put("c", "x", "two", "no-such-etag")));
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, store_error::conflict);
  EXPECT_EQ((*store_->get_blob("c", "x"))->data, "one") << "a refused put changes nothing";

  auto v3 = commit(put_batch(blob_put("c", "x", "three", etag2)));
  ASSERT_TRUE(v3.ok()) << v3.error().message;
  EXPECT_EQ(v3->blobs[0].version, 3);
  EXPECT_NE(v3->blobs[0].etag, etag2);
  auto stale_delete = commit(delete_batch("c", "x", etag2));
  ASSERT_FALSE(stale_delete.ok());
  EXPECT_EQ(stale_delete.error().code, store_error::conflict);
  ASSERT_TRUE(commit(delete_batch("c", "x", v3->blobs[0].etag)).ok());

  clock_.advance(1s);
  auto v4 = commit(put_batch(blob_put("c", "x", "four", "")));  // create-only works once it is gone
  ASSERT_TRUE(v4.ok()) << v4.error().message;
  EXPECT_EQ(v4->blobs[0].version, 4) << "versions never repeat for a name, even across a delete";
  EXPECT_EQ(v4->blobs[0].created_ms, now_ms(clock_));

  // A batch is atomic with its blobs too: a stale ack fails the put beside it.
  Batch mixed = put_batch(blob_put("c", "y", "never"));
  mixed.acks.push_back({"no-such-message", "no-lease"});
  ASSERT_FALSE(commit(mixed).ok());
  EXPECT_FALSE(store_->get_blob("c", "y")->has_value());
}

TEST_P(StoreConformance, BadBlobNamesAndOversizedBlobsAreRefusedClearly) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"../etc/passwd", "'..'"}, {"a/../b", "'..'"},     {"/abs", "starts with '/'"},
      {"a//b", "empty segment"}, {"a/./b", "'.'"},       {std::string("a\0b", 3), "control character"},
      {"dir/", "ends with '/'"}, {"", "is empty"},       {std::string(2000, 'n'), "at most 1024"}};
  for (const auto& [name, why] : bad) {
    auto r = commit(put_batch(blob_put("uploads", name, "x")));
    ASSERT_FALSE(r.ok()) << "accepted " << name;
    EXPECT_EQ(r.error().code, store_error::invalid);
    EXPECT_NE(r.error().message.find(why), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("uploads"), std::string::npos) << r.error().message;
  }
  auto container = commit(put_batch(blob_put("Up Loads", "a", "x")));
  ASSERT_FALSE(container.ok());
  EXPECT_EQ(container.error().code, store_error::invalid);
  EXPECT_NE(container.error().message.find("container"), std::string::npos) << container.error().message;
  EXPECT_TRUE(store_->list_blobs("uploads", "", "", 10)->blobs.empty());

  store_.reset();
  StoreOptions small;
  small.max_blob_size = 4;
  auto s = open_store(GetParam(), dir_, clock_, small);
  ASSERT_TRUE(s.ok()) << s.error().message;
  store_ = std::move(*s);
  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "fits", "1234"))).ok());
  auto big = commit(put_batch(blob_put("uploads", "too-big", "12345")));
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, store_error::too_large);
  EXPECT_NE(big.error().message.find("at most 4"), std::string::npos) << big.error().message;
}

std::string meta(const Message& m, const std::string& key) {
  const std::string* v = find_header(m.metadata, key);
  return v ? *v : "(none)";
}

TEST_P(StoreConformance, BlobPutsEnqueueOneEventPerMatchingSubscriptionInTheSameCommit) {
  ASSERT_TRUE(store_
                  ->set_blob_subscriptions_sync({{"csv", "uploads", "{name}.csv", kBlobCreated | kBlobUpdated},
                                                 {"csv", "uploads", "{name}", kBlobCreated},  // same queue: one event
                                                 {"all", "uploads", "{year}/{rest*}",
                                                  kBlobCreated | kBlobUpdated | kBlobDeleted},
                                                 {"elsewhere", "other", "{name}", kBlobCreated}})
                  .ok());
  auto bad = store_->set_blob_subscriptions_sync({{"q", "uploads", "{unclosed", kBlobCreated}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, store_error::invalid);

  std::mutex mu;
  std::vector<std::string> heard;
  auto watch = store_->watch_changes([&](const std::vector<std::string>& q) {
    std::lock_guard l(mu);
    heard.insert(heard.end(), q.begin(), q.end());
  });
  Batch::BlobPut a = blob_put("uploads", "a.csv", "1,2");
  a.content_type = "text/csv";
  ASSERT_TRUE(commit(put_batch(a)).ok());
  auto csv = receive("csv", 10);
  ASSERT_EQ(csv.size(), 1u) << "two subscriptions of one queue matched: one event";
  EXPECT_EQ(csv[0].type, "nimbus.blob.created");
  EXPECT_EQ(csv[0].source, "/blobs/uploads");
  EXPECT_EQ(csv[0].subject, "a.csv");
  EXPECT_EQ(meta(csv[0], "blob.name"), "a") << "the {name} capture";
  EXPECT_EQ(meta(csv[0], "blob.path"), "uploads/a.csv");
  EXPECT_EQ(meta(csv[0], "blob.container"), "uploads");
  EXPECT_EQ(meta(csv[0], "blob.version"), "1");
  EXPECT_EQ(meta(csv[0], "blob.size"), "3");
  EXPECT_EQ(meta(csv[0], "blob.content_type"), "text/csv");
  EXPECT_EQ(meta(csv[0], "blob.event"), "created");
  EXPECT_TRUE(csv[0].payload.empty()) << "the bytes stay in the blob";
  ASSERT_TRUE(commit(ack(csv[0])).ok());
  EXPECT_TRUE(receive("all", 10).empty()) << "{year}/{rest*} needs a '/'";
  {
    std::lock_guard l(mu);
    EXPECT_EQ(heard, std::vector<std::string>{"csv"});
  }

  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "2024/05/b.csv", "b"))).ok());
  EXPECT_TRUE(receive("csv", 10).empty()) << "{name} spans one segment only";
  auto all = receive("all", 10);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(meta(all[0], "blob.year"), "2024");
  EXPECT_EQ(meta(all[0], "blob.rest"), "05/b.csv");
  EXPECT_EQ(meta(all[0], "blob.name"), "2024/05/b.csv") << "no {name} capture: the blob's name";
  ASSERT_TRUE(commit(ack(all[0])).ok());

  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "a.csv", "1,2"))).ok());  // same bytes: version 2
  auto updated = receive("csv", 10);
  ASSERT_EQ(updated.size(), 1u);
  EXPECT_EQ(updated[0].type, "nimbus.blob.updated");
  EXPECT_EQ(meta(updated[0], "blob.version"), "2");
  ASSERT_TRUE(commit(ack(updated[0])).ok());

  ASSERT_TRUE(commit(delete_batch("uploads", "a.csv")).ok());
  EXPECT_TRUE(receive("csv", 10).empty()) << "csv did not ask for deletes";
  ASSERT_TRUE(commit(delete_batch("uploads", "2024/05/b.csv")).ok());
  auto deleted = receive("all", 10);
  ASSERT_EQ(deleted.size(), 1u);
  EXPECT_EQ(deleted[0].type, "nimbus.blob.deleted");
  EXPECT_EQ(meta(deleted[0], "blob.version"), "1") << "the version it deleted";
  EXPECT_TRUE(receive("elsewhere", 10).empty());

  // A failed batch emits nothing; a refused conditional put neither.
  Batch mixed = put_batch(blob_put("uploads", "c.csv", "c"));
  mixed.acks.push_back({"no-such-message", "no-lease"});
  ASSERT_FALSE(commit(mixed).ok());
  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "d.csv", "d"))).ok());
  ASSERT_FALSE(commit(put_batch(blob_put("uploads", "d.csv", "d2", ""))).ok());
  auto after = receive("csv", 10);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].subject, "d.csv");
  EXPECT_EQ(meta(after[0], "blob.version"), "1");
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreConformance, ::testing::Values("sqlite:store.db"),
                         [](const auto& info) { return info.param.substr(0, info.param.find(':')); });

// --- the embedded backend's own promises -------------------------------------------------------

// The WAL is copied back into the database while the store runs (it once grew without bound
// until the host stopped: the checkpointer's connection had never read, and did nothing).
TEST(SqliteStore, TheWalIsCheckpointedWhileTheStoreRuns) {
  fs::path dir = fresh_dir();
  ManualClock clock;
  {
    auto s = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(s.ok()) << s.error().message;
    const auto db_size = [&] {
      std::error_code ec;
      auto n = fs::file_size(dir / "state.db", ec);
      return ec ? std::uintmax_t{0} : n;
    };
    // Well past the checkpoint threshold (1,000 pages of 4 KiB).
    for (int round = 0; round < 30; ++round) {
      Batch b;
      for (int i = 0; i < 100; ++i) {
        NewMessage m;
        m.payload = std::string(2000, static_cast<char>('a' + i % 26));
        b.enqueues.push_back({"q", std::move(m)});
      }
      ASSERT_TRUE((*s)->commit_sync(std::move(b)).ok());
    }
    for (int i = 0; i < 1000 && db_size() < 4'000'000; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_GE(db_size(), 4'000'000u) << "the database file holds nothing of the 6 MB committed: no checkpoint ran";
  }
  fs::remove_all(dir);
}

TEST(SqliteStore, ANonDatabaseFileIsAClearStartupError) {
  fs::path dir = fresh_dir();
  std::ofstream(dir / "state.db") << "this is not a database, it is a text file that happens to be here";
  ManualClock clock;
  auto s = open_store("sqlite:state.db", dir, clock);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find((dir / "state.db").string()), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("not a database"), std::string::npos) << s.error().message;
  // Nothing was overwritten.
  std::ifstream in(dir / "state.db");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(text.rfind("this is not a database", 0), 0u);
  fs::remove_all(dir);
}

TEST(SqliteStore, ADamagedDatabaseIsAClearStartupError) {
  fs::path dir = fresh_dir();
  ManualClock clock;
  {
    auto s = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(s.ok());
    Batch b;
    NewMessage m;
    m.payload = std::string(200, 'x');
    for (int i = 0; i < 2000; ++i) b.enqueues.push_back({"q", m});
    ASSERT_TRUE((*s)->commit_sync(std::move(b)).ok());
  }
  {
    // Scribble over pages in the middle of the file (the header stays valid).
    std::fstream f(dir / "state.db", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 * 3);
    std::string junk(4096 * 4, '\x5a');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  auto s = open_store("sqlite:state.db", dir, clock);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("state.db"), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("move it aside"), std::string::npos) << s.error().message;
  fs::remove_all(dir);
}

TEST(SqliteStore, UnknownSchemesAreRefusedClearly) {
  ManualClock clock;
  auto s = open_store("redis://127.0.0.1:6379", fs::temp_directory_path(), clock);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("not available in this build"), std::string::npos);
}

// A full disk: commits fail with an io error that says so, and nothing already committed is
// damaged or lost (a 1 MiB tmpfs; root can mount one, others skip with the reason).
TEST(SqliteStore, AFullDiskFailsCommitsClearlyAndCorruptsNothing) {
  fs::path dir = fresh_dir();
  if (::mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=1m") != 0) {
    fs::remove_all(dir);
    GTEST_SKIP() << "cannot mount a small tmpfs here (" << std::strerror(errno) << "); needs root";
  }
  int64_t committed = 0;
  std::string failure;
  {
    ManualClock clock;
    auto s = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(s.ok()) << s.error().message;
    for (int round = 0; round < 1000 && failure.empty(); ++round) {
      Batch b;
      for (int i = 0; i < 20; ++i) {
        NewMessage m;
        m.payload = std::string(1000, static_cast<char>('a' + round % 26));
        b.enqueues.push_back({"q", m});
      }
      auto r = (*s)->commit_sync(std::move(b));
      if (r.ok()) committed += 20;
      else failure = r.error().message + " [" + r.error().code + "]";
    }
    ASSERT_FALSE(failure.empty()) << "1 MiB never filled up";
    EXPECT_NE(failure.find("full"), std::string::npos) << failure;
    EXPECT_NE(failure.find("[io]"), std::string::npos) << failure;
    // Still usable for reads, and everything it acknowledged is there.
    auto all = (*s)->peek("q", 100000);
    ASSERT_TRUE(all.ok()) << all.error().message;
    EXPECT_EQ(static_cast<int64_t>(all->size()), committed);
  }
  {
    ManualClock clock;
    auto s = open_store("sqlite:state.db", dir, clock);  // quick_check runs at open
    ASSERT_TRUE(s.ok()) << s.error().message;
    auto all = (*s)->peek("q", 100000);
    ASSERT_TRUE(all.ok());
    EXPECT_EQ(static_cast<int64_t>(all->size()), committed) << "after a reopen";
  }
  ::umount(dir.c_str());
  fs::remove_all(dir);
}

// Reads `fd` into `into` until it holds `lines` newlines, the writer is gone, or 30 s pass.
void read_lines_until(int fd, std::string& into, std::size_t lines) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  char buf[4096];
  while (static_cast<std::size_t>(std::count(into.begin(), into.end(), '\n')) < lines &&
         std::chrono::steady_clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return;
    into.append(buf, static_cast<std::size_t>(n));
  }
}

// The default durability: a host killed with SIGKILL loses nothing it was told was committed.
TEST(SqliteStore, KillNineLosesNoAcknowledgedCommit) {
  fs::path dir = fresh_dir();
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(pipefd[0]);
    SystemClock clock;
    auto s = open_store("sqlite:state.db", dir, clock);
    if (!s.ok()) ::_exit(2);
    for (int i = 0;; ++i) {
      Batch b;
      NewMessage m;
      m.id = "m" + std::to_string(i);
      b.enqueues.push_back({"q", m});
      (*s)->commit(std::move(b), [fd = pipefd[1], i](Expected<BatchResult> r) {
        if (r.ok()) {
          std::string line = std::to_string(i) + "\n";
          (void)!::write(fd, line.data(), line.size());  // told committed: must survive
        }
      });
      if (i % 64 == 0) ::usleep(100);
    }
  }
  ::close(pipefd[1]);
  // Kill it at a random moment once it has been told of enough commits to prove something
  // (however slowly it starts: under a sanitizer it can take a while).
  std::string acked;
  read_lines_until(pipefd[0], acked, 101);
  std::this_thread::sleep_for(std::chrono::milliseconds(std::random_device{}() % 300));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) acked.append(buf, static_cast<std::size_t>(n));
  ::close(pipefd[0]);
  std::set<std::string> told;
  std::size_t start = 0, nl;
  while ((nl = acked.find('\n', start)) != std::string::npos) {
    told.insert("m" + acked.substr(start, nl - start));
    start = nl + 1;
  }
  ASSERT_GT(told.size(), 100u) << "the child committed too little to prove anything";

  ManualClock clock;
  auto s = open_store("sqlite:state.db", dir, clock);
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto all = (*s)->peek("q", 10000000);
  ASSERT_TRUE(all.ok());
  std::set<std::string> present;
  for (auto& m : *all) present.insert(m.id);
  for (const auto& id : told) ASSERT_TRUE(present.count(id)) << id << " was acknowledged and then lost";
  s->reset();
  fs::remove_all(dir);
}


std::size_t files_in(const fs::path& dir) {
  std::error_code ec;
  std::size_t n = 0;
  for (const auto& f : fs::directory_iterator(dir, ec)) n += f.is_regular_file() ? 1 : 0;
  return n;
}

// The embedded backend keeps blob bytes in files beside the database: one per live version;
// a replaced or deleted version's file goes with its commit, and files a crash left without
// metadata (written, not yet committed) are removed when the store opens.
TEST(SqliteStore, BlobFilesFollowTheirMetadataAndCrashLeftoversAreRemovedAtOpen) {
  fs::path dir = fresh_dir();
  ManualClock clock;
  {
    auto s = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(s.ok()) << s.error().message;
    for (const char* v : {"v1", "v2", "v3"}) ASSERT_TRUE((*s)->commit_sync(put_batch(blob_put("up", "a/b.txt", v))).ok());
    ASSERT_TRUE((*s)->commit_sync(put_batch(blob_put("up", "gone", "x"))).ok());
    ASSERT_TRUE((*s)->commit_sync(delete_batch("up", "gone")).ok());
    EXPECT_EQ(files_in(dir / "blobs" / "up"), 1u) << "one file per live blob";
    // A refused put leaves no file behind.
    ASSERT_FALSE((*s)->commit_sync(put_batch(blob_put("up", "a/b.txt", "v4", "no"))).ok());
    EXPECT_EQ(files_in(dir / "blobs" / "up"), 1u);
  }
  // What a crash between writing a file and committing its metadata leaves behind.
  std::ofstream(dir / "blobs" / "up" / "0123456789abcdef0123456789abcdef") << "orphan";
  std::ofstream(dir / "blobs" / ".tmp" / "fedcba9876543210fedcba9876543210") << "half-written";
  {
    auto s = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_EQ(files_in(dir / "blobs" / "up"), 1u) << "the orphan is removed at open";
    EXPECT_EQ(files_in(dir / "blobs" / ".tmp"), 0u);
    auto got = (*s)->get_blob("up", "a/b.txt");
    ASSERT_TRUE(got.ok() && got->has_value());
    EXPECT_EQ((*got)->data, "v3");
    // While a store has it open, a second opener removes nothing: the files in flight of a
    // running process are not leftovers.
    std::ofstream(dir / "blobs" / "up" / "00000000000000000000000000000000") << "in flight";
    auto second = open_store("sqlite:state.db", dir, clock);
    ASSERT_TRUE(second.ok()) << second.error().message;
    EXPECT_EQ(files_in(dir / "blobs" / "up"), 2u);
  }
  fs::remove_all(dir);
}

// kill -9 while blobs are put and replaced: after a reopen every committed blob reads back
// whole (its bytes match its SHA-256) and no file is left without metadata.
TEST(SqliteStore, KillNineDuringBlobPutsNeverLeavesMetadataWithoutItsFile) {
  fs::path dir = fresh_dir();
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(pipefd[0]);
    SystemClock clock;
    auto s = open_store("sqlite:state.db", dir, clock);
    if (!s.ok()) ::_exit(2);
    for (int i = 0;; ++i) {
      Batch b = put_batch(blob_put("c", "n" + std::to_string(i % 50), std::string(1000 + i % 4000, static_cast<char>('a' + i % 26))));
      if (i % 7 == 0) b.blob_deletes.push_back({"c", "n" + std::to_string((i + 3) % 50), std::nullopt});
      (*s)->commit(std::move(b), [fd = pipefd[1]](Expected<BatchResult> r) {
        if (r.ok()) (void)!::write(fd, "\n", 1);
      });
      if (i % 16 == 0) ::usleep(200);
    }
  }
  ::close(pipefd[1]);
  std::string committed;
  read_lines_until(pipefd[0], committed, 60);  // enough puts that more than 10 names hold blobs
  std::this_thread::sleep_for(std::chrono::milliseconds(std::random_device{}() % 300));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::close(pipefd[0]);
  ManualClock clock;
  auto s = open_store("sqlite:state.db", dir, clock);
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto page = (*s)->list_blobs("c", "", "", 1000);
  ASSERT_TRUE(page.ok());
  ASSERT_GT(page->blobs.size(), 10u) << "the child committed too little to prove anything";
  for (const auto& info : page->blobs) {
    auto got = (*s)->get_blob("c", info.name);
    ASSERT_TRUE(got.ok()) << got.error().message;
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ(sha256_hex((*got)->data), info.sha256) << info.name;
    EXPECT_EQ(static_cast<int64_t>((*got)->data.size()), info.size);
  }
  EXPECT_EQ(files_in(dir / "blobs" / "c"), page->blobs.size()) << "a file without metadata survived the reopen";
  s->reset();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace nimbus
