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
    ForwardingStore::receive(std::move(q), max, lease, std::move(done));
  }
  std::atomic<int> receives{0};
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
  void make_feed(int capacity) {
    LeasedFeed::Options o;
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

}  // namespace
}  // namespace nimbus
