// Rate limits shared by the hosts of one store (gateway/rate_sync.h), on every backend: two
// "hosts" here are two limiters with their own RateLimitSync on one store, on the injected
// clock. They converge on one bucket, a key met for the first time is learnt at once, a debt
// is bounded, idle buckets expire, and merges racing on one key lose no use.
#include <thread>

#include "gateway/rate_sync.h"
#include "store_conformance.h"

namespace nimbus {
namespace {

class SharedRateLimits : public StoreConformance {
 protected:
  static RateLimitSpec spec(double rate, double burst) {
    RateLimitSpec s;
    s.rate = rate;
    s.burst = burst;
    s.text = "test";
    return s;
  }
  struct FakeHost {
    std::shared_ptr<RateLimiter> limiter;
    std::shared_ptr<RateLimitSync> sync;
  };
  FakeHost host(const RateLimitSpec& s, const std::string& id = "route GET /x") {
    FakeHost h{std::make_shared<RateLimiter>(s, clock_, 1000, id), std::make_shared<RateLimitSync>(*store_, clock_)};
    h.sync->add(h.limiter);
    h.sync->start(std::chrono::hours(1));  // new keys are learnt at once; rounds when the test says
    return h;
  }
  // The store's bucket: tokens and when (nullopt: none kept).
  std::optional<double> stored(const std::string& key, const std::string& id = "route GET /x") {
    auto got = store_->get(kRateLimitsStore, RateLimitSync::bucket_key(id, key));
    EXPECT_TRUE(got.ok());
    if (!got.ok() || !*got) return std::nullopt;
    return std::stod((*got)->value);
  }
  // Waits (bounded) for the merge a new key starts on a store I/O thread.
  static bool learnt(const RateLimitSync& sync, int64_t merged) {
    for (int i = 0; i < 500 && sync.stats().merged < merged; ++i) std::this_thread::sleep_for(10ms);
    return sync.stats().merged >= merged;
  }
};

TEST_P(SharedRateLimits, TwoHostsConvergeOnOneBucketAndLearnANewKeyAtOnce) {
  auto a = host(spec(1, 10));  // one a second, ten at once
  auto b = host(spec(1, 10));
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(a.limiter->take("").allowed) << i;
  EXPECT_FALSE(a.limiter->take("").allowed);
  ASSERT_TRUE(learnt(*a.sync, 1));  // a's first take started a merge of the new key
  a.sync->round();                  // and this round merges the rest of its use
  EXPECT_EQ(a.sync->stats().failures, 0) << a.sync->stats().last_failure;
  EXPECT_NEAR(*stored(""), 0, 1e-6);

  // b has never seen the key: its first request is let through on trust and the key learnt
  // at once; from then on b knows a's use.
  EXPECT_TRUE(b.limiter->take("").allowed);
  ASSERT_TRUE(learnt(*b.sync, 1));
  auto refused = b.limiter->take("");
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.remaining, 0);
  EXPECT_EQ(refused.retry_after_s, 2);  // a debt of one: two seconds to a whole token
  b.sync->round();
  EXPECT_NEAR(*stored(""), -1, 1e-6);

  // Three seconds later both hosts refill; each takes one, and once both have merged the
  // store says what the two did together and both refuse the next.
  clock_.advance(3s);
  EXPECT_TRUE(a.limiter->take("").allowed);
  EXPECT_TRUE(b.limiter->take("").allowed);
  a.sync->round();
  b.sync->round();
  EXPECT_NEAR(*stored(""), 0, 1e-6);  // -1 + 3 refilled - 2 taken
  EXPECT_FALSE(b.limiter->take("").allowed);  // b merged last: it knows what both took
  // a merged before b: it learns of b's take at its next merge (the slack of one round).
  EXPECT_TRUE(a.limiter->take("").allowed);
  a.sync->round();
  EXPECT_FALSE(a.limiter->take("").allowed);
  EXPECT_NEAR(*stored(""), -1, 1e-6);
  EXPECT_EQ(a.sync->stats().failures + b.sync->stats().failures, 0);
}

TEST_P(SharedRateLimits, KeysAreBucketsOfTheirOwnDebtsAreBoundedAndIdleBucketsExpire) {
  auto a = host(spec(1, 10));
  EXPECT_TRUE(a.limiter->take("ip:1").allowed);
  EXPECT_TRUE(a.limiter->take("ip:2").allowed);
  a.sync->round();
  ASSERT_TRUE(learnt(*a.sync, 2));
  EXPECT_NEAR(*stored("ip:1"), 9, 1e-6);
  EXPECT_NEAR(*stored("ip:2"), 9, 1e-6);
  // A host that let far too much through (a partition healed): the debt is one burst at most.
  a.sync->merge(*a.limiter, {{"ip:1", 100}});
  EXPECT_NEAR(*stored("ip:1"), -10, 1e-6);
  EXPECT_FALSE(a.limiter->take("ip:1").allowed);
  // The bucket is kept until it would be full again (20 s) and a minute more, then it goes.
  auto entry = store_->get(kRateLimitsStore, RateLimitSync::bucket_key("route GET /x", "ip:1"));
  ASSERT_TRUE(entry.ok() && *entry);
  EXPECT_EQ((*entry)->expires_ms - unix_ms(clock_), 80000);
  clock_.advance(81s);
  EXPECT_FALSE(stored("ip:1").has_value());
  // A bucket that does not parse counts as full.
  Batch garbage;
  garbage.puts.push_back({kRateLimitsStore, RateLimitSync::bucket_key("route GET /x", "ip:3"), "not a bucket", {}, 0});
  ASSERT_TRUE(store_->commit_sync(std::move(garbage)).ok());
  a.sync->merge(*a.limiter, {{"ip:3", 1}});
  EXPECT_NEAR(*stored("ip:3"), 9, 1e-6);
  // A bucket written by a host whose clock runs 10 s ahead: its time is kept (it never goes
  // back, or the next host would refill those 10 s again).
  const std::string ahead = std::to_string(unix_ms(clock_) + 10000);
  const std::string k4 = RateLimitSync::bucket_key("route GET /x", "ip:4");
  Batch future;
  future.puts.push_back({kRateLimitsStore, k4, "5.000000 " + ahead, {}, 0});
  ASSERT_TRUE(store_->commit_sync(std::move(future)).ok());
  a.sync->merge(*a.limiter, {{"ip:4", 1}});
  auto got = store_->get(kRateLimitsStore, k4);
  ASSERT_TRUE(got.ok() && *got);
  EXPECT_EQ((*got)->value, "4.000000 " + ahead);
  // Only refused here (nothing let through): the count is read, nothing written.
  a.sync->merge(*a.limiter, {{"ip:4", 0}});
  auto again = store_->get(kRateLimitsStore, k4);
  ASSERT_TRUE(again.ok() && *again);
  EXPECT_EQ((*again)->etag, (*got)->etag);
}

// Two hosts merging the same key as fast as they can: whatever conflicts happen, every use
// counts once.
TEST_P(SharedRateLimits, MergesRacingOnOneKeyLoseNoUse) {
  auto a = host(spec(1e-9, 100000));  // no refill to speak of
  auto b = host(spec(1e-9, 100000));
  auto run = [](FakeHost& h) {
    for (int i = 0; i < 400; ++i) {
      EXPECT_TRUE(h.limiter->take("").allowed);
      if (i % 8 == 7) h.sync->round();
    }
    h.sync->round();
  };
  std::thread ta(run, std::ref(a));
  std::thread tb(run, std::ref(b));
  ta.join();
  tb.join();
  // A new key's own merge may still be running on an I/O thread: wait for both to settle.
  for (int i = 0; i < 500 && std::abs(*stored("") - (100000 - 800)) > 1e-3; ++i) {
    std::this_thread::sleep_for(10ms);
    a.sync->round();
    b.sync->round();
  }
  EXPECT_NEAR(*stored(""), 100000 - 800, 1e-3)
      << "conflicts a " << a.sync->stats().conflicts << ", b " << b.sync->stats().conflicts;
  EXPECT_EQ(a.sync->stats().failures + b.sync->stats().failures, 0) << a.sync->stats().last_failure
                                                                    << b.sync->stats().last_failure;
  RecordProperty("conflicts", std::to_string(a.sync->stats().conflicts + b.sync->stats().conflicts));
}

// A store that fails keeps the use for the next round: nothing is forgotten.
TEST_P(SharedRateLimits, AFailedMergeKeepsItsUseForTheNextRound) {
  auto a = host(spec(1, 10));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(a.limiter->take("k").allowed);
  ASSERT_TRUE(learnt(*a.sync, 1));
  a.sync->round();
  EXPECT_NEAR(*stored("k"), 6, 1e-6);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(a.limiter->take("k").allowed);
  a.limiter->merge_failed({"k", 2});  // as a failed round hands back: two more to merge
  a.sync->round();
  EXPECT_NEAR(*stored("k"), 1, 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Backends, SharedRateLimits, ::testing::Values("sqlite:store.db", "postgres", "redis"),
                         [](const auto& info) { return info.param.substr(0, info.param.find(':')); });

}  // namespace
}  // namespace nimbus
