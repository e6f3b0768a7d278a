// The PostgreSQL backend's own promises, beyond the conformance suite: hosts on one database
// hear each other's commits (LISTEN/NOTIFY) and never share a message, the schema version is
// checked, a server restart is carried through, and errors name the server without its
// password.
#include <libpq-fe.h>

#include "core/invocation.h"
#include "free_port.h"
#include "store/postgres/pg_conn.h"
#include "store_conformance.h"
#include "two_hosts.h"

namespace nimbus {
namespace {

std::string fresh_database() {
  std::string why;
  auto* server = testing::shared_postgres(&why);
  if (!server) return "no server: " + why;
  return server->create_database();
}

bool sql(const std::string& url, const std::string& statement) {
  PGconn* c = PQconnectdb(url.c_str());
  PGresult* r = PQexec(c, statement.c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  PQclear(r);
  PQfinish(c);
  return ok;
}

TEST(PostgresStore, TwoHostsOnOneDatabaseHearEachOthersCommitsAndNeverShareAMessage) {
  const std::string url = fresh_database();
  ASSERT_EQ(url.rfind("postgres://", 0), 0u) << url;
  ManualClock clock;
  auto a = open_store(url, "", clock);
  auto b = open_store(url, "", clock);
  ASSERT_TRUE(a.ok() && b.ok()) << (a.ok() ? b.error().message : a.error().message);
  testing::expect_two_hosts_hear_each_other_and_share_a_queue(**a, **b);
}

// PostgreSQL text is UTF-8 without NUL bytes. A name that is not is refused as invalid before
// it reaches the server (so the commits grouped with it keep theirs), and a function's error
// text that is not still reaches its retry and its dead letter, made printable.
TEST(PostgresStore, TextThatIsNotUtf8IsRefusedAloneAndErrorTextIsKeptPrintable) {
  const std::string url = fresh_database();
  ManualClock clock;
  auto s = open_store(url, "", clock);
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Expected<BatchResult>> results;
  for (const std::string& key : {std::string("good-1"), std::string("bad-\xff"), std::string("nul-\0-x", 7), std::string("good-2")}) {
    Batch b;
    b.puts.push_back({"s", key, "v", std::nullopt, 0});
    (*s)->commit(std::move(b), [&](Expected<BatchResult> r) {
      std::lock_guard l(mu);
      results.push_back(std::move(r));
      cv.notify_all();
    });
  }
  {
    std::unique_lock l(mu);
    ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return results.size() == 4; }));
  }
  int ok = 0, invalid = 0;
  for (const auto& r : results) {
    if (r.ok()) ++ok;
    else if (r.error().code == store_error::invalid) ++invalid;
  }
  EXPECT_EQ(ok, 2);
  EXPECT_EQ(invalid, 2);
  auto all = (*s)->scan("s", "", 10);
  ASSERT_TRUE(all.ok()) << all.error().message;
  EXPECT_EQ(all->size(), 2u);

  Batch e;
  e.enqueues.push_back({"q", NewMessage{}});
  ASSERT_TRUE((*s)->commit_sync(std::move(e)).ok());
  auto got = (*s)->receive_sync("q", 1, 30000);
  ASSERT_TRUE(got.ok() && got->size() == 1);
  Batch dead;
  dead.dead.push_back({{(*got)[0].id, (*got)[0].lease}, std::string("bad \xff bytes") + '\0' + " and a NUL"});
  auto r = (*s)->commit_sync(std::move(dead));
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto dl = (*s)->peek("q.dead", 10);
  ASSERT_TRUE(dl.ok() && dl->size() == 1);
  EXPECT_NE((*dl)[0].last_error.find("bad "), std::string::npos) << (*dl)[0].last_error;
}

// A commit alone in its group: its one statement is the last of the pipeline, and its text is
// checked like every other's (libpq would send a text parameter only up to a NUL: the key
// "nul-" would be written in place of "nul-\0-x").
TEST(PostgresStore, TheLastStatementOfAPipelineIsCheckedForTextToo) {
  const std::string url = fresh_database();
  ManualClock clock;
  auto s = open_store(url, "", clock);
  ASSERT_TRUE(s.ok()) << s.error().message;
  Batch put;
  put.puts.push_back({"s", std::string("nul-\0-x", 7), "v", std::nullopt, 0});
  auto r = (*s)->commit_sync(std::move(put));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, store_error::invalid) << r.error().message;
  Batch enqueue;
  NewMessage m;
  m.type = std::string("t\0u", 3);
  enqueue.enqueues.push_back({"q", m});
  r = (*s)->commit_sync(std::move(enqueue));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, store_error::invalid) << r.error().message;
  auto all = (*s)->scan("s", "", 10);
  ASSERT_TRUE(all.ok()) << all.error().message;
  EXPECT_TRUE(all->empty()) << "a key cut at its NUL was written";
  auto q = (*s)->peek("q", 10);
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(q->empty());
}

TEST(PostgresStore, ADatabaseWrittenByANewerNimbusIsRefusedAndLeftAsItIs) {
  const std::string url = fresh_database();
  ManualClock clock;
  {
    auto s = open_store(url, "", clock);
    ASSERT_TRUE(s.ok()) << s.error().message;
  }
  ASSERT_TRUE(sql(url, "UPDATE nimbus_meta SET value='99' WHERE key='schema'"));
  auto newer = open_store(url, "", clock);
  ASSERT_FALSE(newer.ok());
  EXPECT_NE(newer.error().message.find("written by a newer Nimbus (schema version 99, this build reads up to 1)"),
            std::string::npos)
      << newer.error().message;
}

TEST(PostgresStore, AnUnreachableServerIsNamedWithoutItsPassword) {
  ManualClock clock;
  const std::string url = "postgres://nimbus:s3cret@127.0.0.1:" + std::to_string(testing::free_port()) + "/x?connect_timeout=2";
  auto s = open_store(url, "", clock);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("cannot connect to PostgreSQL at postgres://nimbus:***@127.0.0.1:"), std::string::npos)
      << s.error().message;
  EXPECT_EQ(s.error().message.find("s3cret"), std::string::npos) << s.error().message;
}

// The server stops and comes back (its own folder: the run's shared server stays up): what
// is submitted meanwhile fails with an io error naming PostgreSQL, and the same store works
// again once the server is back, without being reopened. Nothing committed before is lost.
TEST(PostgresStore, TheStoreCarriesOnAfterTheServerRestarts) {
  testing::PostgresServer server(fresh_dir());
  ASSERT_TRUE(server.start()) << server.error();
  const std::string url = server.url("postgres");
  ManualClock clock;
  auto s = open_store(url, "", clock);
  ASSERT_TRUE(s.ok()) << s.error().message;
  auto enqueue = [&](const std::string& payload) {
    Batch b;
    NewMessage m;
    m.payload = payload;
    b.enqueues.push_back({"q", m});
    return (*s)->commit_sync(std::move(b));
  };
  ASSERT_TRUE(enqueue("before").ok());
  server.stop();
  auto down = enqueue("while down");
  ASSERT_FALSE(down.ok());
  EXPECT_EQ(down.error().code, store_error::io);
  EXPECT_NE(down.error().message.find("PostgreSQL"), std::string::npos) << down.error().message;
  auto read_down = (*s)->peek("q", 10);
  EXPECT_FALSE(read_down.ok());
  const Store::Health down_health = (*s)->health();
  EXPECT_FALSE(down_health.available);
  EXPECT_NE(down_health.problem.find("PostgreSQL"), std::string::npos) << down_health.problem;
  ASSERT_TRUE(server.start()) << server.error();
  ASSERT_TRUE(enqueue("after").ok());
  // Available again once its probe (the LISTEN connection, retried every second) is back too.
  for (int i = 0; i < 100 && !(*s)->health().available; ++i) std::this_thread::sleep_for(50ms);
  EXPECT_TRUE((*s)->health().available) << "the server is back: so is the store";
  auto all = (*s)->peek("q", 10);
  ASSERT_TRUE(all.ok()) << all.error().message;
  std::vector<std::string> payloads;
  for (const auto& m : *all) payloads.push_back(m.payload);
  EXPECT_EQ(payloads, (std::vector<std::string>{"before", "after"}));
  s->reset();
  server.stop();
  std::error_code ec;
  fs::remove_all(server.dir(), ec);
}

// --- the writer's connection: statements deferred to travel with the next one ------------------

int64_t count_rows(pg::Connection& c, const std::string& where = "true") {
  auto r = c.run("SELECT count(*) FROM t WHERE " + where);
  return r ? r->integer(0, 0) : -1;
}

// BEGIN deferred to the first statement opens the transaction that statement runs in (a
// rollback undoes it); a change notice deferred to the COMMIT is delivered when it commits.
// A consumer on this host that offers to take a queue's messages (Store::offer_claims) gets
// those a commit here makes, leased to it in that commit: no other host can receive them while
// the lease lasts, its ack is an ordinary ack, an expired lease lets them go to anyone, and a
// consumer without room, a delayed message or a failed commit leave the queue as ever.
TEST(PostgresStore, AMessageCommittedForAConsumerHereIsLeasedToItInThatCommit) {
  const std::string url = fresh_database();
  ASSERT_EQ(url.rfind("postgres://", 0), 0u) << url;
  ManualClock clock;
  auto a = open_store(url, "", clock);
  auto b = open_store(url, "", clock);
  ASSERT_TRUE(a.ok() && b.ok()) << (a.ok() ? b.error().message : a.error().message);

  struct Taker final : Store::Claimant {
    std::mutex mu;
    int room = 0, reserved = 0, let_go = 0;
    std::vector<Message> got;
    int64_t reserve() override {
      std::lock_guard l(mu);
      if (room == 0) return 0;
      --room;
      ++reserved;
      return 30000;
    }
    void claimed(std::vector<Message> messages) override {
      std::lock_guard l(mu);
      reserved -= static_cast<int>(messages.size());
      for (auto& m : messages) got.push_back(std::move(m));
    }
    void unclaimed(int n) override {
      std::lock_guard l(mu);
      reserved -= n;
      let_go += n;
    }
  };
  auto taker = std::make_shared<Taker>();
  taker->room = 1;
  auto offer = (*a)->offer_claims("hop", taker);

  // Room for one: the first message due now is taken; the second and the delayed one are not.
  Batch first;
  NewMessage m1, m2, later;
  m1.payload = "one";
  m1.type = "t.one";
  m1.metadata = {{"traceparent", "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"}};
  m2.payload = "two";
  later.payload = "later";
  later.delay_ms = 60000;
  first.enqueues.push_back({"hop", later});
  first.enqueues.push_back({"hop", m1});
  first.enqueues.push_back({"hop", m2});
  auto committed = (*a)->commit_sync(std::move(first));
  ASSERT_TRUE(committed.ok()) << committed.error().message;
  {
    std::lock_guard l(taker->mu);
    ASSERT_EQ(taker->got.size(), 1u);
    EXPECT_EQ(taker->reserved, 0);
    const Message& m = taker->got[0];
    EXPECT_EQ(m.payload, "one");
    EXPECT_EQ(m.type, "t.one");
    EXPECT_EQ(m.id, committed->message_ids[1]);
    EXPECT_EQ(m.queue, "hop");
    EXPECT_EQ(m.deliveries, 1);
    EXPECT_FALSE(m.lease.empty());
    ASSERT_NE(find_header(m.metadata, "traceparent"), nullptr);
  }
  // Another host receives only the message that was not taken.
  auto other = (*b)->receive_sync("hop", 10, 30000);
  ASSERT_TRUE(other.ok()) << other.error().message;
  ASSERT_EQ(other->size(), 1u);
  EXPECT_EQ((*other)[0].payload, "two");

  // The taken message's lease expires unacknowledged: anyone may receive it (its 2nd delivery).
  clock.advance(31s);
  auto again = (*b)->receive_sync("hop", 10, 30000);
  ASSERT_TRUE(again.ok()) << again.error().message;
  std::vector<std::string> payloads;
  for (const auto& m : *again) payloads.push_back(m.payload);
  ASSERT_EQ(std::count(payloads.begin(), payloads.end(), "one"), 1) << "the lapsed claim was not receivable";
  for (const auto& m : *again) {
    if (m.payload == "one") {
      EXPECT_EQ(m.deliveries, 2);
    }
  }
  // ... and the first delivery's lease no longer acknowledges it.
  Batch stale;
  {
    std::lock_guard l(taker->mu);
    stale.acks.push_back({taker->got[0].id, taker->got[0].lease});
  }
  EXPECT_FALSE((*a)->commit_sync(std::move(stale)).ok());
  Batch done;  // (the second message's lease lapsed too: both came again)
  for (const auto& m : *again) done.acks.push_back({m.id, m.lease});
  ASSERT_TRUE((*b)->commit_sync(std::move(done)).ok());

  // A claim acknowledged with its own lease is gone for good.
  taker->room = 1;
  Batch second;
  NewMessage m3;
  m3.payload = "three";
  second.enqueues.push_back({"hop", m3});
  ASSERT_TRUE((*a)->commit_sync(std::move(second)).ok());
  Batch ack;
  {
    std::lock_guard l(taker->mu);
    ASSERT_EQ(taker->got.size(), 2u);
    ack.acks.push_back({taker->got[1].id, taker->got[1].lease});
  }
  ASSERT_TRUE((*a)->commit_sync(std::move(ack)).ok());
  clock.advance(61s);  // past the lease, and the delayed message is due
  auto left = (*b)->receive_sync("hop", 10, 30000);
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->size(), 1u);
  EXPECT_EQ((*left)[0].payload, "later");

  // A commit that fails lets its reservations go, and leaves nothing.
  taker->room = 1;
  Batch failing;
  NewMessage m4;
  m4.payload = "four";
  failing.enqueues.push_back({"hop", m4});
  failing.puts.push_back({"s", "k", "v", std::string("99"), 0});  // an ETag it does not have
  EXPECT_FALSE((*a)->commit_sync(std::move(failing)).ok());
  {
    std::lock_guard l(taker->mu);
    EXPECT_EQ(taker->got.size(), 2u);
    EXPECT_EQ(taker->let_go, 1);
    EXPECT_EQ(taker->reserved, 0);
  }
  auto none = (*b)->receive_sync("hop", 10, 30000);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->size(), 0u) << "a failed commit's message was kept";

  // Once the offer ends, commits here take nothing.
  offer.reset();
  taker->room = 5;
  Batch third;
  third.enqueues.push_back({"hop", m4});
  ASSERT_TRUE((*a)->commit_sync(std::move(third)).ok());
  EXPECT_EQ(taker->got.size(), 2u);
}

// Relaxed batches (Batch::relaxed) commit without waiting for the WAL flush under
// durability: process, never under durability: fsync, and ordinary batches always wait.
TEST(PostgresStore, RelaxedWorkDoesNotWaitForTheDiskUnderProcessDurabilityOnly) {
  const std::string url = fresh_database();
  ASSERT_EQ(url.rfind("postgres://", 0), 0u) << url;
  ManualClock clock;
  auto unflushed = [](Store& s, const char* kind = "relaxed") {
    std::string text;
    s.commit_metrics_text(text);
    const std::string name = std::string("\nnimbus_store_unflushed_commits_total{kind=\"") + kind + "\"} ";
    const auto at = text.find(name);
    return at == std::string::npos ? int64_t{-1} : std::stoll(text.substr(at + name.size()));
  };
  auto put = [](bool relaxed, int i) {
    Batch b;
    b.relaxed = relaxed;
    b.puts.push_back({"s", "k" + std::to_string(i), "v", std::nullopt, 0});
    return b;
  };
  {
    auto s = open_store(url, "", clock, StoreOptions{Durability::process});
    ASSERT_TRUE(s.ok()) << s.error().message;
    const int64_t before = unflushed(**s), leases = unflushed(**s, "lease");
    ASSERT_GE(before, 0) << "no nimbus_store_unflushed_commits_total{kind=\"relaxed\"}";
    ASSERT_GE(leases, 0) << "no nimbus_store_unflushed_commits_total{kind=\"lease\"}";
    for (int i = 0; i < 3; ++i) ASSERT_TRUE((*s)->commit_sync(put(false, i)).ok());
    EXPECT_EQ(unflushed(**s), before) << "an ordinary commit did not wait for the disk";
    for (int i = 0; i < 3; ++i) ASSERT_TRUE((*s)->commit_sync(put(true, i)).ok());
    EXPECT_EQ(unflushed(**s), before + 3);
    EXPECT_EQ(unflushed(**s, "lease"), leases);
    ASSERT_TRUE((*s)->receive_sync("nothing", 1, 1000).ok());  // a lease: never waits
    EXPECT_EQ(unflushed(**s), before + 3);
    EXPECT_EQ(unflushed(**s, "lease"), leases + 1);
    auto got = (*s)->get("s", "k2");
    ASSERT_TRUE(got.ok() && *got);
    EXPECT_EQ((*got)->value, "v");
  }
  {
    auto s = open_store(url, "", clock, StoreOptions{Durability::fsync});
    ASSERT_TRUE(s.ok()) << s.error().message;
    const int64_t before = unflushed(**s);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE((*s)->commit_sync(put(true, i)).ok());
    EXPECT_EQ(unflushed(**s), before) << "durability: fsync let relaxed work skip the flush";
  }
}

TEST(PgConnection, DeferredStatementsGoWithTheNextOneInItsTransaction) {
  const std::string url = fresh_database();
  ASSERT_TRUE(sql(url, "CREATE TABLE t(x int PRIMARY KEY)")) << url;
  pg::Connection c(url), listener(url);
  ASSERT_TRUE(c.connect().ok());
  ASSERT_TRUE(listener.connect().ok());
  ASSERT_TRUE(listener.exec("LISTEN nimbus_test").ok());

  c.defer("BEGIN");
  ASSERT_TRUE(c.run("INSERT INTO t VALUES($1)", {pg::Param::of(int64_t{1})}).ok());
  c.rollback();
  EXPECT_EQ(count_rows(c), 0) << "the deferred BEGIN did not open a transaction around the insert";

  c.defer("BEGIN");
  c.defer("SET LOCAL synchronous_commit = off");
  ASSERT_TRUE(c.run("INSERT INTO t VALUES($1)", {pg::Param::of(int64_t{2})}).ok());
  auto setting = c.run("SELECT current_setting('synchronous_commit')");
  ASSERT_TRUE(setting.ok()) << setting.error().message;
  EXPECT_EQ(setting->text(0, 0), "off");
  c.defer("SELECT pg_notify($1, $2)", {pg::Param::of("nimbus_test"), pg::Param::of("q1")});
  ASSERT_TRUE(c.commit().ok());
  EXPECT_EQ(count_rows(c, "x=2"), 1);
  auto after = c.run("SELECT current_setting('synchronous_commit')");
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(after->text(0, 0), "on") << "SET LOCAL outlived its transaction";

  std::string heard;
  for (int i = 0; i < 200 && heard.empty(); ++i) {
    PQconsumeInput(listener.raw());
    if (PGnotify* n = PQnotifies(listener.raw())) {
      heard = n->extra;
      PQfreemem(n);
    } else {
      std::this_thread::sleep_for(10ms);
    }
  }
  EXPECT_EQ(heard, "q1");
}

// A deferred statement that fails is the failure of the call it went with; nothing of the
// transaction is kept, and the connection goes on with the next one.
TEST(PgConnection, AFailedDeferredStatementFailsTheCallItWentWithAndKeepsNothing) {
  const std::string url = fresh_database();
  ASSERT_TRUE(sql(url, "CREATE TABLE t(x int PRIMARY KEY)")) << url;
  pg::Connection c(url);
  ASSERT_TRUE(c.connect().ok());

  // Failing at the COMMIT (an empty channel name is refused by pg_notify).
  c.defer("BEGIN");
  ASSERT_TRUE(c.run("INSERT INTO t VALUES($1)", {pg::Param::of(int64_t{1})}).ok());
  c.defer("SELECT pg_notify($1, $2)", {pg::Param::of(""), pg::Param::of("q")});
  auto committed = c.commit();
  ASSERT_FALSE(committed.ok());
  EXPECT_NE(committed.error().message.find("channel name cannot be empty"), std::string::npos)
      << committed.error().message;
  EXPECT_EQ(count_rows(c), 0) << "the insert was committed though its transaction failed";

  // Failing ahead of a statement: the statement does not run, and its failure is the
  // deferred one's.
  c.defer("BEGIN");
  c.defer("SELECT $1::int / 0", {pg::Param::of(int64_t{1})});
  auto inserted = c.run("INSERT INTO t VALUES($1) RETURNING x", {pg::Param::of(int64_t{2})});
  ASSERT_FALSE(inserted.ok());
  EXPECT_NE(inserted.error().message.find("division by zero"), std::string::npos) << inserted.error().message;
  EXPECT_EQ(c.last_error().sqlstate, "22012");
  EXPECT_FALSE(c.last_error().connection_lost);
  c.rollback();

  // The statement prepared in that pipeline was never prepared on the server: it is prepared
  // again when next used, rather than executed under a name the server does not know.
  c.defer("BEGIN");
  auto again = c.run("INSERT INTO t VALUES($1) RETURNING x", {pg::Param::of(int64_t{3})});
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->integer(0, 0), 3);
  ASSERT_TRUE(c.commit().ok());
  EXPECT_EQ(count_rows(c), 1);
  EXPECT_TRUE(c.connected());
}

// A deferred statement's check sees its rows when they come; a check that refuses them is the
// failure of the call they went with (its error, as the check said it), and the transaction is
// rolled back whole by its owner.
TEST(PgConnection, ADeferredStatementsCheckSeesItsRowsAndItsRefusalFailsTheCall) {
  const std::string url = fresh_database();
  ASSERT_TRUE(sql(url, "CREATE TABLE t(x int PRIMARY KEY)")) << url;
  pg::Connection c(url);
  ASSERT_TRUE(c.connect().ok());
  std::vector<int64_t> seen;
  auto expect_one = [&seen](const pg::Rows& r) -> Status {
    if (r.affected() != 1) return Error{"refused: " + std::to_string(r.affected()) + " rows", store_error::conflict};
    seen.push_back(r.integer(0, 0));
    return ok_status();
  };
  const std::string insert = "INSERT INTO t VALUES($1) ON CONFLICT DO NOTHING RETURNING x";
  c.defer("BEGIN");
  c.defer(insert, {pg::Param::of(int64_t{1})}, expect_one);
  c.defer(insert, {pg::Param::of(int64_t{2})}, expect_one);
  EXPECT_TRUE(seen.empty()) << "checked before anything was sent";
  ASSERT_TRUE(c.flush().ok());
  EXPECT_EQ(seen, (std::vector<int64_t>{1, 2}));
  ASSERT_TRUE(c.commit().ok());
  // The second insert finds 1 there: its check refuses, and the flush fails with its error;
  // the third (after it) ran, but nothing is kept once the owner rolls back.
  seen.clear();
  c.defer("BEGIN");
  c.defer(insert, {pg::Param::of(int64_t{3})}, expect_one);
  c.defer(insert, {pg::Param::of(int64_t{1})}, expect_one);
  c.defer(insert, {pg::Param::of(int64_t{4})}, expect_one);
  auto flushed = c.flush();
  ASSERT_FALSE(flushed.ok());
  EXPECT_EQ(flushed.error().message, "refused: 0 rows");
  EXPECT_EQ(flushed.error().code, store_error::conflict);
  EXPECT_EQ(seen, (std::vector<int64_t>{3})) << "a check after the refusal was run";
  c.rollback();
  EXPECT_EQ(count_rows(c), 2);
  // A check on the last deferred statement (the one a flush sends last) is run too, and the
  // next run() sends what was deferred ahead of it, checked.
  c.defer("BEGIN");
  c.defer(insert, {pg::Param::of(int64_t{2})}, expect_one);
  auto ran = c.run("SELECT count(*) FROM t");
  ASSERT_FALSE(ran.ok());
  EXPECT_EQ(ran.error().message, "refused: 0 rows");
  c.rollback();
  EXPECT_TRUE(c.connected());
}

// A group's statements go deferred and are checked before its COMMIT; a failure among them
// is named for its own commit, as when they ran one at a time: an ETag that does not match,
// a message id taken twice, a lease that is not held. Every other commit in the burst lands.
TEST(PostgresStore, AFailureAmongAGroupsDeferredStatementsIsNamedForItsOwnCommitOnly) {
  const std::string url = fresh_database();
  ASSERT_EQ(url.rfind("postgres://", 0), 0u) << url;
  ManualClock clock;
  auto s = open_store(url, "", clock);
  ASSERT_TRUE(s.ok()) << s.error().message;
  Store& store = **s;
  Batch seed;
  seed.puts.push_back({"s", "a", "v", std::nullopt, 0});
  seed.enqueues.push_back({"in", NewMessage{}});
  seed.enqueues.push_back({"in", NewMessage{}});
  ASSERT_TRUE(store.commit_sync(std::move(seed)).ok());
  auto got = store.receive_sync("in", 2, 30000);
  ASSERT_TRUE(got.ok() && got->size() == 2u);
  std::vector<Batch> burst(6);
  burst[0].acks.push_back({(*got)[0].id, (*got)[0].lease});
  burst[0].enqueues.push_back({"out", NewMessage{}});
  burst[0].puts.push_back({"s", "b", "v", std::nullopt, 0});
  burst[1].puts.push_back({"s", "a", "w", std::optional<std::string>("7"), 0});
  for (int i : {2, 3}) {
    NewMessage m;
    m.id = "dup";
    burst[static_cast<std::size_t>(i)].enqueues.push_back({"out", m});
  }
  burst[4].acks.push_back({(*got)[1].id, "stale"});
  burst[5].puts.push_back({"s", "c", "v", std::optional<std::string>(""), 0});
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::optional<Expected<BatchResult>>> answers(burst.size());
  for (std::size_t i = 0; i < burst.size(); ++i) {
    store.commit(std::move(burst[i]), [&, i](Expected<BatchResult> r) {
      std::lock_guard l(mu);
      answers[i] = std::move(r);
      cv.notify_all();
    });
  }
  std::unique_lock l(mu);
  ASSERT_TRUE(cv.wait_for(l, 10s, [&] {
    return std::all_of(answers.begin(), answers.end(), [](const auto& a) { return a.has_value(); });
  }));
  ASSERT_TRUE(answers[0]->ok()) << answers[0]->error().message;
  EXPECT_EQ((*answers[0])->etags, (std::vector<std::string>{"1"}));
  EXPECT_EQ((*answers[0])->message_ids.size(), 1u);
  ASSERT_FALSE(answers[1]->ok());
  EXPECT_EQ(answers[1]->error().message, "state s/a has ETag '1', not '7'");
  EXPECT_EQ(answers[1]->error().code, store_error::conflict);
  EXPECT_NE(answers[2]->ok(), answers[3]->ok()) << "one of the two commits of id dup lands";
  const auto& dup = answers[2]->ok() ? *answers[3] : *answers[2];
  EXPECT_EQ(dup.error().message, "a message with id dup already exists");
  ASSERT_FALSE(answers[4]->ok());
  EXPECT_EQ(answers[4]->error().message, "message " + (*got)[1].id + " is no longer leased by this delivery");
  ASSERT_TRUE(answers[5]->ok()) << answers[5]->error().message;
  EXPECT_EQ((*answers[5])->etags, (std::vector<std::string>{"1"}));
  l.unlock();
  auto out = store.peek("out", 10);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->size(), 2u);
  auto left = store.peek("in", 10);
  ASSERT_TRUE(left.ok());
  ASSERT_EQ(left->size(), 1u) << "the stale ack took its message, or the good one did not";
  EXPECT_EQ((*left)[0].id, (*got)[1].id);
}

// The server ends the connection (pg_terminate_backend) before a pipeline is sent: the call
// fails as a lost connection, the connection says it is not connected (so its owner connects
// again), and connect() gives a working one.
TEST(PgConnection, AConnectionLostUnderAPipelineIsReportedLostAndCanBeRemade) {
  const std::string url = fresh_database();
  ASSERT_TRUE(sql(url, "CREATE TABLE t(x int PRIMARY KEY)")) << url;
  pg::Connection c(url);
  ASSERT_TRUE(c.connect().ok());
  ASSERT_TRUE(sql(url, "SELECT pg_terminate_backend(" + std::to_string(c.backend_pid()) + ")"));
  c.defer("BEGIN");
  auto r = c.run("INSERT INTO t VALUES($1)", {pg::Param::of(int64_t{1})});
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(c.last_error().connection_lost) << r.error().message;
  EXPECT_FALSE(c.connected());
  c.rollback();
  ASSERT_TRUE(c.connect().ok());
  c.defer("BEGIN");
  ASSERT_TRUE(c.run("INSERT INTO t VALUES($1)", {pg::Param::of(int64_t{1})}).ok());
  ASSERT_TRUE(c.commit().ok());
  EXPECT_EQ(count_rows(c), 1);
}

}  // namespace
}  // namespace nimbus
