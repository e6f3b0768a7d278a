// The store conformance suite, part 1: queues, leases, delays, retries and dead letters, batches, topics, state, watches. Instantiated here for every backend.
#include "store_conformance.h"

namespace nimbus {
namespace {

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

// A commit of many enqueues (a function's 1,000 outputs) keeps their order and bytes; one id
// that exists already, or twice in the commit, fails the whole commit and names it.
TEST_P(StoreConformance, ManyEnqueuesInOneCommitKeepTheirOrderAndADuplicateIdFailsThemAll) {
  Batch many;
  for (int i = 0; i < 300; ++i) {
    NewMessage m = msg(std::string("payload ") + std::to_string(i) + std::string("\0\xff\\\"{}", 6), "type \"" + std::to_string(i));
    m.metadata = {{"n", std::to_string(i)}, {"quote", "a\"b\\c,{d}"}};
    if (i % 50 == 0) m.delay_ms = 1000;
    many.enqueues.push_back({i % 2 ? "odd" : "even", std::move(m)});
  }
  auto r = commit(many);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->message_ids.size(), 300u);
  auto even = receive("even", 1000);
  ASSERT_EQ(even.size(), 144u);  // 150, less the six delayed (0, 50, ..., 250)
  int last = -1;
  for (const auto& m : even) {
    const int n = std::stoi(meta(m, "n"));
    EXPECT_GT(n, last) << "out of order";
    last = n;
    EXPECT_EQ(m.payload, std::string("payload ") + std::to_string(n) + std::string("\0\xff\\\"{}", 6));
    EXPECT_EQ(m.type, "type \"" + std::to_string(n));
    EXPECT_EQ(meta(m, "quote"), "a\"b\\c,{d}");
    EXPECT_EQ(m.id, r->message_ids[static_cast<std::size_t>(n)]);
  }
  EXPECT_EQ(stats_of("even").delayed, 6);

  Batch dup;
  NewMessage a = msg("a");
  a.id = "fixed-1";
  dup.enqueues.push_back({"q", a});
  NewMessage b = msg("b");
  b.id = r->message_ids[1];  // exists
  dup.enqueues.push_back({"q", b});
  auto failed = commit(dup);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().code, store_error::conflict);
  EXPECT_NE(failed.error().message.find(r->message_ids[1]), std::string::npos) << failed.error().message;
  EXPECT_TRUE(store_->peek("q", 10)->empty()) << "part of a failed commit was kept";
  Batch twice;
  twice.enqueues.push_back({"q", a});
  twice.enqueues.push_back({"q", a});
  failed = commit(twice);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.error().message.find("fixed-1"), std::string::npos) << failed.error().message;
  EXPECT_TRUE(store_->peek("q", 10)->empty());
}

// A consumer that acknowledges a message and enqueues its successor under the same id (a
// deduplicating id, say) in one commit: the ack removes it first, so the id is free again.
TEST_P(StoreConformance, AnAckedMessagesIdMayBeUsedAgainInTheSameCommit) {
  NewMessage first = msg("first");
  first.id = "order-17";
  enqueue("in", first);
  auto got = receive("in", 1);
  ASSERT_EQ(got.size(), 1u);
  Batch b = ack(got[0]);
  NewMessage next = msg("next");
  next.id = "order-17";
  b.enqueues.push_back({"in", next});
  auto r = commit(b);
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto again = receive("in", 5);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].id, "order-17");
  EXPECT_EQ(again[0].payload, "next");
  // A retried (not acked) message still holds its id.
  Batch held;
  held.retries.push_back({{again[0].id, again[0].lease}, 0, "again", false});
  held.enqueues.push_back({"in", next});
  auto refused = commit(held);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, store_error::conflict);
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

// Completions submitted in a burst share a commit: one with a stale lease among them fails
// alone, and every other is acknowledged.
TEST_P(StoreConformance, AStaleAckAmongABurstOfAcksFailsAloneAndTheRestAreAcked) {
  for (int i = 0; i < 20; ++i) enqueue("burst", msg(std::to_string(i)));
  auto got = receive("burst", 20);
  ASSERT_EQ(got.size(), 20u);
  std::mutex mu;
  std::condition_variable cv;
  int answered = 0, ok = 0, conflicts = 0;
  for (int i = 0; i < 20; ++i) {
    Batch b = ack(got[static_cast<std::size_t>(i)]);
    if (i == 7) b.acks[0].lease = "stale";
    store_->commit(std::move(b), [&](Expected<BatchResult> r) {
      std::lock_guard l(mu);
      ++answered;
      if (r.ok()) ++ok;
      else if (r.error().code == store_error::conflict) ++conflicts;
      cv.notify_all();
    });
  }
  std::unique_lock l(mu);
  ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return answered == 20; }));
  EXPECT_EQ(ok, 19);
  EXPECT_EQ(conflicts, 1);
  l.unlock();
  auto left = store_->peek("burst", 100);
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].payload, "7");
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
  // The bounds of a prefix: "a0" is the first string after every "a/..." one; "a." and "a" are before.
  Batch edges;
  for (const char* k : {"a", "a.", "a/", "a/z", "a0", "b"}) edges.puts.push_back({"edges", k, k, std::nullopt, 0});
  ASSERT_TRUE(commit(edges).ok());
  auto bounded = store_->scan("edges", "a/", 10);
  ASSERT_TRUE(bounded.ok());
  ASSERT_EQ(bounded->size(), 2u);
  EXPECT_EQ((*bounded)[0].key, "a/");
  EXPECT_EQ((*bounded)[1].key, "a/z");
  EXPECT_EQ(store_->scan("edges", "a", 10)->size(), 5u);

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


// A batch's wakes are told like a filled queue: to this store's watchers and, on a backend
// hosts share, to the other hosts' (a waiter there hears at once of a reply written here);
// a batch that fails tells nothing.
TEST_P(StoreConformance, ABatchsWakesAreHeardOnEveryHostOnlyWhenItCommits) {
  std::unique_ptr<Store> other;  // a second host on the same data (the embedded store has none)
  if (url_.rfind("sqlite", 0) != 0) {
    auto s = open_store(url_, dir_, clock_);
    ASSERT_TRUE(s.ok()) << s.error().message;
    other = std::move(*s);
  }
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> here, there;
  auto listen = [&](std::vector<std::string>& into) {
    return [&, into = &into](const std::vector<std::string>& names) {
      std::lock_guard l(mu);
      into->insert(into->end(), names.begin(), names.end());
      cv.notify_all();
    };
  };
  auto watch_here = store_->watch_changes(listen(here));
  auto watch_there = other ? other->watch_changes(listen(there)) : nullptr;
  auto heard = [](const std::vector<std::string>& v, const char* name) {
    return std::find(v.begin(), v.end(), name) != v.end();
  };
  if (other) {
    // The other host listens once its notification connection is up (as after a reconnect,
    // what is told before that is not heard): wait for it to hear one.
    bool ready = false;
    for (int i = 0; i < 200 && !ready; ++i) {
      Batch probe;
      probe.wakes.push_back("ready");
      ASSERT_TRUE(commit(probe).ok());
      std::unique_lock l(mu);
      ready = cv.wait_for(l, 50ms, [&] { return heard(there, "ready"); });
    }
    ASSERT_TRUE(ready) << "the other host never heard a wake";
  }

  Batch refused;  // fails on its ETag condition
  refused.puts.push_back({"s", "k", "v", std::string("7"), 0});
  refused.wakes.push_back("reply/refused");
  EXPECT_FALSE(commit(refused).ok());
  Batch b;
  b.puts.push_back({"s", "k", "v", std::nullopt, 0});
  b.wakes.push_back("reply/42");
  ASSERT_TRUE(commit(b).ok());
  Batch only;  // wakes alone are a batch too
  only.wakes.push_back("reply/43");
  ASSERT_TRUE(commit(only).ok());

  std::unique_lock l(mu);
  EXPECT_TRUE(cv.wait_for(l, 10s, [&] { return heard(here, "reply/42") && heard(here, "reply/43"); }))
      << "this store's watcher did not hear the wakes";
  if (other) {
    EXPECT_TRUE(cv.wait_for(l, 10s, [&] { return heard(there, "reply/42") && heard(there, "reply/43"); }))
        << "the other host did not hear the wakes";
  }
  EXPECT_FALSE(heard(here, "reply/refused")) << "a batch that failed told its wakes";
  EXPECT_FALSE(heard(there, "reply/refused")) << "a batch that failed told its wakes";
}


INSTANTIATE_TEST_SUITE_P(Backends, StoreConformance, ::testing::Values("sqlite:store.db", "postgres", "redis"),
                         [](const auto& info) { return info.param.substr(0, info.param.find(':')); });

}  // namespace
}  // namespace nimbus
