// LeasedFeed (triggers/dispatch/leased_feed.h): when it asks the store for work. Every look
// is a receive, and a receive is a store write on every backend (a transaction on PostgreSQL),
// so a completion must not look by itself: work that arrived meanwhile woke the feed already.
// It looks again when it had no room the last time it wanted to, or when a message went back
// to the queue (its due time may be sooner than the wake-up the feed armed).
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <future>

#include "bench/forwarding_store.h"
#include "observe/log.h"
#include "store_conformance.h"
#include "triggers/dispatch/leased_feed.h"
#include "triggers/task_thread.h"

namespace nimbus {
namespace {

class CountingStore final : public ForwardingStore {
 public:
  using ForwardingStore::ForwardingStore;
  void receive(std::string q, int max, int64_t lease, ReceiveDone done) override {
    ++receives;
    std::unique_lock lock(park_mu);
    if (park) {  // held until go(): a receive under way
      parked = [this, q = std::move(q), max, lease, done = std::move(done)]() mutable {
        ForwardingStore::receive(std::move(q), max, lease, std::move(done));
      };
      return;
    }
    lock.unlock();
    ForwardingStore::receive(std::move(q), max, lease, std::move(done));
  }
  // Lets the parked receive go on, and receives go straight on from now.
  void go() {
    std::function<void()> run;
    {
      std::lock_guard lock(park_mu);
      park = false;
      run = std::move(parked);
    }
    if (run) run();
  }
  std::atomic<int> receives{0};
  std::mutex park_mu;
  bool park = false;  // the next receive waits for go()
  std::function<void()> parked;
  // Who would take each enqueue of `b`, were this store to hand off (reserved for real).
  std::vector<Claim> claims_of(const Batch& b) const { return reserve_claims(b); }
};

struct Fixture {
  Fixture() : dir(fresh_dir()), null_fd(::open("/dev/null", O_WRONLY)), sink(null_fd), logger(sink, clock, "t") {
    auto s = open_store("sqlite:state.db", dir, clock);
    EXPECT_TRUE(s.ok()) << s.error().message;
    inner = std::move(*s);
    store = std::make_unique<CountingStore>(*inner);
  }
  ~Fixture() {
    if (feed) feed->stop();
    thread->close();
    store.reset();
    inner.reset();
    ::close(null_fd);
    fs::remove_all(dir);
  }

  // A feed on queue "q" whose deliveries land in `delivered`; its timers never fire (no timer
  // thread, a clock nobody moves), so every look is one it chose to make.
  void make_feed(int capacity, bool hand_off = false) {
    LeasedFeed::Options o;
    o.hand_off = hand_off;
    o.queue = "q";
    o.batch_size = capacity;
    o.capacity = capacity;
    o.owner = "fn";
    feed = std::make_shared<LeasedFeed>(o, *store, clock, Timers(timers, nullptr), logger, thread,
                                        [this](std::vector<Message> batch) {
                                          std::lock_guard lock(mu);
                                          for (auto& m : batch) delivered.push_back(std::move(m));
                                          cv.notify_all();
                                        });
  }
  void enqueue(int n) {
    Batch b;
    for (int i = 0; i < n; ++i) b.enqueues.push_back({"q", NewMessage{}});
    ASSERT_TRUE(store->commit_sync(std::move(b)).ok());
  }
  // Hands the feed message `id` as a commit that took its reservation would (claimed()).
  void hand_over(const std::string& id) {
    Message m;
    m.id = id;
    m.lease = id + ".h";
    m.queue = "q";
    feed->claimed({m});
  }
  // Waits until `n` messages were delivered and no receive is under way.
  bool delivered_at_least(std::size_t n) {
    std::unique_lock lock(mu);
    if (!cv.wait_for(lock, std::chrono::seconds(10), [&] { return delivered.size() >= n; })) return false;
    lock.unlock();
    return settled();
  }
  // No receive under way: the one in flight (if any) has come back.
  bool settled() {
    std::promise<void> p;
    thread->post([&] { p.set_value(); });
    p.get_future().wait();
    // A receive is one writer-thread round; a no-op commit behind it on the same writer
    // returns after it.
    return store->commit_sync(Batch{}).ok();
  }
  // Acks the message's lease in the store (as a completion does), then tells the feed.
  void complete(const Message& m, bool requeued = false) {
    Batch b;
    if (requeued) {
      b.retries.push_back({{m.id, m.lease}, 0, "again", false});
    } else {
      b.acks.push_back({m.id, m.lease});
    }
    ASSERT_TRUE(store->commit_sync(std::move(b)).ok());
    feed->forget({m.id}, requeued);
    settled();
  }

  ManualClock clock;
  fs::path dir;
  int null_fd;
  LogSink sink;
  Logger logger;
  std::unique_ptr<Store> inner;
  std::unique_ptr<CountingStore> store;
  TimerQueue timers;
  std::shared_ptr<TaskThread> thread = std::make_shared<TaskThread>();
  std::shared_ptr<LeasedFeed> feed;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Message> delivered;
};

TEST(LeasedFeed, ACompletionDoesNotLookForMoreByItself) {
  Fixture f;
  f.make_feed(16);
  f.enqueue(1);
  f.feed->pump();
  ASSERT_TRUE(f.delivered_at_least(1));
  const int before = f.store->receives.load();
  EXPECT_EQ(before, 1) << "one message, fewer than asked for: the queue is drained after one look";
  f.complete(f.delivered[0]);
  EXPECT_EQ(f.store->receives.load(), before) << "a completion with room to spare made a store receive";
  // Work that arrives is what wakes it.
  f.enqueue(1);
  f.feed->pump();
  ASSERT_TRUE(f.delivered_at_least(2));
  EXPECT_EQ(f.store->receives.load(), before + 1);
}

TEST(LeasedFeed, AFeedThatHadNoRoomLooksWhenRoomIsMade) {
  Fixture f;
  f.make_feed(1);
  f.enqueue(2);
  f.feed->pump();
  ASSERT_TRUE(f.delivered_at_least(1));
  // It received as many as it asked for, so it wanted more at once, but had no room.
  f.feed->pump();  // a wake-up while full: no room, no look
  ASSERT_TRUE(f.settled());
  const int full = f.store->receives.load();
  f.complete(f.delivered[0]);
  ASSERT_TRUE(f.delivered_at_least(2)) << "the second message waited for room and was never leased";
  EXPECT_EQ(f.store->receives.load(), full + 1);
}

TEST(LeasedFeed, AMessageThatWentBackToTheQueueIsLookedForAgain) {
  Fixture f;
  f.make_feed(16);
  f.enqueue(1);
  f.feed->pump();
  ASSERT_TRUE(f.delivered_at_least(1));
  const Message first = f.delivered[0];
  f.complete(first, /*requeued=*/true);  // a retry due now: no wake-up of its own
  ASSERT_TRUE(f.delivered_at_least(2)) << "the retried message was not received again";
  EXPECT_EQ(f.delivered[1].id, first.id);
}

// Hand-off (Store::offer_claims): a feed takes messages a commit here makes only while it has
// room for them (what it holds and what it promised count) and once its last look found the
// queue drained: a backlog is served in its order first. What it takes is held (its lease
// renewed, its completion awaited) and delivered like what it receives.
TEST(LeasedFeed, AHandOffIsTakenOnlyWithRoomAndOnceTheQueueWasFoundDrained) {
  Fixture f;
  f.make_feed(2, /*hand_off=*/true);
  EXPECT_EQ(f.feed->reserve(), 0) << "took a hand-off before it ever looked at the queue";
  f.enqueue(3);
  f.feed->pump();
  ASSERT_TRUE(f.delivered_at_least(2));
  EXPECT_EQ(f.feed->reserve(), 0) << "took a hand-off with a backlog (and no room)";
  f.complete(f.delivered[0]);
  f.complete(f.delivered[1]);
  ASSERT_TRUE(f.delivered_at_least(3));  // the third: fewer than it wanted, so drained now
  // Room for one more beside the one it holds.
  EXPECT_EQ(f.feed->reserve(), f.feed->lease_ms());
  EXPECT_EQ(f.feed->reserve(), 0) << "promised more room than it has";
  f.hand_over("taken");
  ASSERT_TRUE(f.delivered_at_least(4));
  EXPECT_EQ(f.delivered[3].id, "taken");
  EXPECT_EQ(f.feed->reserve(), 0) << "full: it holds two";
  EXPECT_FALSE(f.feed->wait_idle(std::chrono::steady_clock::now())) << "a taken message is not held";
  f.feed->forget({"taken"});
  EXPECT_EQ(f.feed->reserve(), f.feed->lease_ms());
  // A promise the commit did not need is given back.
  f.feed->unclaimed(1);
  f.complete(f.delivered[2]);
  EXPECT_TRUE(f.feed->wait_idle(std::chrono::steady_clock::now() + std::chrono::seconds(5)));
  f.feed->stop();
  EXPECT_EQ(f.feed->reserve(), 0) << "a stopped feed took a hand-off";
}

// A receive under way may be about to find older messages, and its batch is not counted in
// what the feed holds yet: no hand-off is taken until it is back.
TEST(LeasedFeed, NoHandOffIsTakenWhileAReceiveIsUnderWay) {
  Fixture f;
  f.make_feed(4, /*hand_off=*/true);
  f.feed->pump();
  ASSERT_TRUE(f.settled());  // found the queue empty: drained
  ASSERT_EQ(f.feed->reserve(), f.feed->lease_ms());
  f.feed->unclaimed(1);
  {
    std::lock_guard lock(f.store->park_mu);
    f.store->park = true;
  }
  f.enqueue(1);
  f.feed->pump();  // a wake-up: the receive is parked, under way
  EXPECT_EQ(f.feed->reserve(), 0) << "took a hand-off while a receive was under way";
  f.store->go();
  ASSERT_TRUE(f.delivered_at_least(1));
  EXPECT_EQ(f.feed->reserve(), f.feed->lease_ms()) << "the receive is back (and found the queue drained)";
  f.feed->unclaimed(1);
}

// After a step (orchestrations, entities), a feed whose store hands its work over does not
// look (a receive per step, for nothing), unless the step put work in its queue for later (a
// durable timer, a retry), which would wake nobody; a feed that is not handed work looks.
TEST(LeasedFeed, AfterAStepAFeedHandedItsWorkLooksOnlyForWorkDueLater) {
  Fixture f;
  f.make_feed(4, /*hand_off=*/true);
  f.feed->pump();
  ASSERT_TRUE(f.settled());
  int looks = f.store->receives.load();
  f.feed->step_over();
  ASSERT_TRUE(f.settled());
  EXPECT_EQ(f.store->receives.load(), looks + 1) << "nothing was handed over yet: a step's answers are looked for";
  ASSERT_EQ(f.feed->reserve(), f.feed->lease_ms());
  f.hand_over("taken");
  ASSERT_TRUE(f.delivered_at_least(1));
  looks = f.store->receives.load();
  f.feed->step_over();
  ASSERT_TRUE(f.settled());
  EXPECT_EQ(f.store->receives.load(), looks) << "looked after a step although its answers are handed over";
  f.feed->step_over(/*due_later=*/true);
  ASSERT_TRUE(f.settled());
  EXPECT_EQ(f.store->receives.load(), looks + 1) << "a step that set a timer did not look (re-arm its wake-up)";
  f.feed->forget({"taken"});
}

// A feed that offers registers with its store, and stops offering when it stops.
TEST(LeasedFeed, AFeedOffersToItsStoreWhileItRunsAndNotAfter) {
  Fixture f;
  f.make_feed(4, /*hand_off=*/true);
  f.feed->pump();
  ASSERT_TRUE(f.settled());
  // The offer is with the store the feed leases from (the wrapper): seen through its claims.
  Batch b;
  b.enqueues.push_back({"q", NewMessage{}});
  b.enqueues.push_back({"other", NewMessage{}});
  auto claims = f.store->claims_of(b);
  ASSERT_EQ(claims.size(), 2u);
  EXPECT_NE(claims[0].to, nullptr) << "the feed did not offer for its queue";
  EXPECT_EQ(claims[1].to, nullptr);
  claims[0].to->unclaimed(1);
  f.feed->stop();
  claims = f.store->claims_of(b);
  EXPECT_EQ(claims[0].to, nullptr) << "a stopped feed still offered";
}

}  // namespace
}  // namespace nimbus
