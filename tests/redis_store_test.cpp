// The Redis backend's own promises, beyond the conformance suite: hosts on one server hear
// each other's commits (pub/sub) and never share a message; a server killed with SIGKILL
// under appendfsync always loses no acknowledged commit and the store carries on once it is
// back; a server that forgot the script (a restart, SCRIPT FLUSH) gets it again; the layout
// version is checked; durability: fsync is refused on a server that would not keep it; errors
// name the server without its password and a bad option by name.
#include <hiredis/hiredis.h>

#include "free_port.h"
#include "store/delayed/delayed_store.h"
#include "store/redis/redis_store.h"
#include "store_conformance.h"
#include "two_hosts.h"

namespace nimbus {
namespace {

std::string fresh_url() {
  std::string why;
  auto* server = testing::shared_redis(&why);
  if (!server) return "no server: " + why;
  return server->create_url();
}

// Runs one command on the server at `port` (a test's side door); the reply as text.
std::string redis_command(int port, const std::vector<std::string>& argv) {
  redisContext* c = redisConnect("127.0.0.1", port);
  if (!c || c->err) return "cannot connect";
  std::vector<const char*> p;
  std::vector<size_t> n;
  for (const auto& a : argv) {
    p.push_back(a.data());
    n.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(p.size()), p.data(), n.data()));
  std::string out = r && r->str ? std::string(r->str, r->len) : (r ? std::to_string(r->integer) : "no reply");
  if (r) freeReplyObject(r);
  redisFree(c);
  return out;
}

int port_of(const std::string& url) { return std::stoi(url.substr(url.rfind(':') + 1)); }
std::string prefix_of(const std::string& url) { return url.substr(url.find("prefix=") + 7); }

Expected<BatchResult> enqueue(Store& s, const std::string& queue, const std::string& payload) {
  Batch b;
  NewMessage m;
  m.payload = payload;
  b.enqueues.push_back({queue, m});
  return s.commit_sync(std::move(b));
}

TEST(RedisStore, TwoHostsOnOneServerHearEachOthersCommitsAndNeverShareAMessage) {
  const std::string url = fresh_url();
  ASSERT_EQ(url.rfind("redis://", 0), 0u) << url;
  ManualClock clock;
  auto a = open_store(url, "", clock);
  auto b = open_store(url, "", clock);
  ASSERT_TRUE(a.ok() && b.ok()) << (a.ok() ? b.error().message : a.error().message);
  testing::expect_two_hosts_hear_each_other_and_share_a_queue(**a, **b);
}

// redis-server is killed with SIGKILL while commits stream in: every commit the store
// acknowledged is in the append-only file and is there after the restart; meanwhile the
// store says it is unavailable, commits fail with an io error naming Redis, and the same
// store works again once the server is back.
// A conditional put prepared from a live blob that another host deletes before the put is
// sent: the script sees the delete (not only the version, which a delete keeps), the put is
// prepared again and refused for its ETag; it does not bring the blob back.
TEST(RedisStore, ABlobDeletedByAnotherHostBetweenPrepareAndCommitFailsAConditionalPut) {
  const std::string url = fresh_url();
  ManualClock clock;
  auto a = open_store(url, fresh_dir(), clock);
  auto b = open_store(url, fresh_dir(), clock);
  ASSERT_TRUE(a.ok() && b.ok());
  auto first = (*a)->commit_sync(put_batch(blob_put("c", "x", "one")));
  ASSERT_TRUE(first.ok()) << first.error().message;
  const std::string etag = first->blobs.at(0).etag;
  auto* redis_a = dynamic_cast<rd::RedisStore*>(a->get());
  ASSERT_NE(redis_a, nullptr);
  std::atomic<int> deletes{0};
  redis_a->set_after_prepare_for_test([&] {
    if (deletes++ == 0) {
      auto gone = (*b)->commit_sync(delete_batch("c", "x"));
      EXPECT_TRUE(gone.ok()) << gone.error().message;
    }
  });
  auto put = (*a)->commit_sync(put_batch(blob_put("c", "x", "two", etag)));
  ASSERT_FALSE(put.ok()) << "a put conditional on ETag " << etag << " went through after the blob was deleted";
  EXPECT_EQ(put.error().code, store_error::conflict);
  EXPECT_FALSE((*b)->get_blob("c", "x")->has_value()) << "the deleted blob came back";
}

TEST(RedisStore, AServerKilledHardUnderAppendfsyncAlwaysLosesNoAcknowledgedCommit) {
  testing::RedisServer server(fresh_dir(), 0, "always");
  ASSERT_TRUE(server.start()) << server.error();
  const std::string url = "redis://127.0.0.1:" + std::to_string(server.port()) + "/0?timeout=5";
  ManualClock clock;
  auto s = open_store(url, "", clock, StoreOptions{.durability = Durability::fsync});
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::mutex mu;
  std::set<std::string> acknowledged;
  std::atomic<int> failed{0};
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; !stop; ++i) {
      auto r = enqueue(**s, "q", std::to_string(i));
      std::lock_guard l(mu);
      if (r.ok()) {
        acknowledged.insert(std::to_string(i));
      } else {
        ++failed;
        EXPECT_EQ(r.error().code, store_error::io) << r.error().message;
        EXPECT_NE(r.error().message.find("Redis"), std::string::npos) << r.error().message;
        std::this_thread::sleep_for(20ms);
      }
    }
  });
  while ([&] { std::lock_guard l(mu); return acknowledged.size() < 300; }()) std::this_thread::sleep_for(5ms);
  server.kill_hard();
  while (failed == 0) std::this_thread::sleep_for(5ms);
  EXPECT_FALSE((*s)->health().available);
  EXPECT_NE((*s)->health().problem.find("Redis"), std::string::npos) << (*s)->health().problem;
  ASSERT_TRUE(server.start()) << server.error();
  const auto back_by = std::chrono::steady_clock::now() + 20s;
  std::size_t before = 0;
  {
    std::lock_guard l(mu);
    before = acknowledged.size();
  }
  while (std::chrono::steady_clock::now() < back_by && [&] { std::lock_guard l(mu); return acknowledged.size() < before + 50; }()) {
    std::this_thread::sleep_for(10ms);
  }
  stop = true;
  writer.join();
  for (int i = 0; i < 100 && !(*s)->health().available; ++i) std::this_thread::sleep_for(50ms);
  EXPECT_TRUE((*s)->health().available) << "the server is back: so is the store";
  auto all = (*s)->peek("q", 1000000);
  ASSERT_TRUE(all.ok()) << all.error().message;
  std::set<std::string> kept;
  for (const auto& m : *all) kept.insert(m.payload);
  std::lock_guard l(mu);
  EXPECT_GE(acknowledged.size(), before + 50) << "the store did not carry on after the restart";
  for (const auto& p : acknowledged) ASSERT_EQ(kept.count(p), 1u) << "acknowledged commit " << p << " was lost";
  s->reset();
  server.stop();
  std::error_code ec;
  fs::remove_all(server.dir(), ec);
}

// The fault-injection wrapper (--inject-store-latency) passes its store's health on: a host
// on a slow Redis still says when the server is gone and when it is back.
TEST(RedisStore, AStoreBehindInjectedLatencyReportsTheServersHealth) {
  testing::RedisServer server(fresh_dir(), 0, "no");
  ASSERT_TRUE(server.start()) << server.error();
  ManualClock clock;
  auto inner = open_store("redis://127.0.0.1:" + std::to_string(server.port()) + "/0?timeout=2", "", clock);
  ASSERT_TRUE(inner.ok()) << inner.error().message;
  auto s = with_injected_latency(std::move(*inner), std::chrono::milliseconds(1));
  std::atomic<int> changes{0};
  s->on_health_change([&](const Store::Health&) { ++changes; });
  EXPECT_TRUE(s->health().available);
  server.stop();
  for (int i = 0; i < 100 && s->health().available; ++i) std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(s->health().available) << "the server is gone";
  EXPECT_NE(s->health().problem.find("Redis"), std::string::npos) << s->health().problem;
  ASSERT_TRUE(server.start()) << server.error();
  for (int i = 0; i < 100 && !s->health().available; ++i) std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(s->health().available) << "the server is back";
  EXPECT_GE(changes.load(), 2);
  s.reset();
  server.stop();
  std::error_code ec;
  fs::remove_all(server.dir(), ec);
}

TEST(RedisStore, AServerThatForgotTheScriptIsGivenItAgain) {
  const std::string url = fresh_url();
  ManualClock clock;
  auto s = open_store(url, "", clock);
  ASSERT_TRUE(s.ok()) << s.error().message;
  ASSERT_TRUE(enqueue(**s, "q", "one").ok());
  ASSERT_EQ(redis_command(port_of(url), {"SCRIPT", "FLUSH"}), "OK");
  auto r = enqueue(**s, "q", "two");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(redis_command(port_of(url), {"SCRIPT", "FLUSH"}), "OK");
  auto all = (*s)->peek("q", 10);
  ASSERT_TRUE(all.ok()) << all.error().message;
  EXPECT_EQ(all->size(), 2u);
}

TEST(RedisStore, ADatabaseWrittenByANewerNimbusIsRefused) {
  const std::string url = fresh_url();
  ManualClock clock;
  {
    auto s = open_store(url, "", clock);
    ASSERT_TRUE(s.ok()) << s.error().message;
  }
  ASSERT_EQ(redis_command(port_of(url), {"SET", prefix_of(url) + ":schema", "99"}), "OK");
  auto newer = open_store(url, "", clock);
  ASSERT_FALSE(newer.ok());
  EXPECT_NE(newer.error().message.find("written by a newer Nimbus (schema version 99, this build reads up to 1)"),
            std::string::npos)
      << newer.error().message;
}

TEST(RedisStore, AServerThatWouldNotKeepWhatTheStorePromisesIsRefused) {
  testing::RedisServer server(fresh_dir(), 0, "everysec");
  ASSERT_TRUE(server.start()) << server.error();
  ManualClock clock;
  auto s = open_store("redis://127.0.0.1:" + std::to_string(server.port()), "", clock,
                      StoreOptions{.durability = Durability::fsync});
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("appendfsync always"), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("appendfsync everysec"), std::string::npos) << s.error().message;
  auto process = open_store("redis://127.0.0.1:" + std::to_string(server.port()), "", clock);
  EXPECT_TRUE(process.ok()) << "durability: process needs no more than Redis gives";
  process->reset();
  // A server that may evict keys would lose messages: refused, naming the setting.
  ASSERT_EQ(redis_command(server.port(), {"CONFIG", "SET", "maxmemory-policy", "allkeys-lru"}), "OK");
  auto evicting = open_store("redis://127.0.0.1:" + std::to_string(server.port()), "", clock);
  ASSERT_FALSE(evicting.ok());
  EXPECT_NE(evicting.error().message.find("maxmemory-policy allkeys-lru"), std::string::npos) << evicting.error().message;
  server.stop();
  std::error_code ec;
  fs::remove_all(server.dir(), ec);
}

TEST(RedisStore, BadUrlsAndUnreachableServersAreNamedWithoutThePassword) {
  ManualClock clock;
  auto option = open_store("redis://127.0.0.1:6379/0?prefx=a", "", clock);
  ASSERT_FALSE(option.ok());
  EXPECT_NE(option.error().message.find("unknown option 'prefx'"), std::string::npos) << option.error().message;
  auto db = open_store("redis://127.0.0.1:6379/abc", "", clock);
  ASSERT_FALSE(db.ok());
  EXPECT_NE(db.error().message.find("database number"), std::string::npos) << db.error().message;
  const std::string url = "redis://:s3cret@127.0.0.1:" + std::to_string(testing::free_port()) + "?connect_timeout=2";
  auto s = open_store(url, "", clock);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("Redis at 127.0.0.1:"), std::string::npos) << s.error().message;
  EXPECT_EQ(s.error().message.find("s3cret"), std::string::npos) << s.error().message;
}

}  // namespace
}  // namespace nimbus
