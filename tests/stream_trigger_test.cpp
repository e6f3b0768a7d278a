// Stream triggers against a real (SQLite) store: order within a partition while batches of
// other partitions run concurrently, checkpoints committed with outputs, retries on the
// injected clock then a dead-lettered batch, a group starting at the end, and a replay.
#include "triggers/kind.h"
#include "triggers/stream/stream_trigger.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <boost/json.hpp>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "observe/log.h"
#include "observe/metrics.h"
#include "pool/function_pools.h"
#include "pool/worker_threads.h"
#include "store/store.h"
#include "trigger_test_env.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

// What the function saw: every batch, and whether two batches of one partition overlapped.
struct Seen {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<json::array> batches;
  std::map<int64_t, int> in_flight;  // per partition
  bool overlapped = false;
  int records = 0;

  bool wait_records(int n) {
    std::unique_lock l(mu);
    return cv.wait_for(l, 20s, [&] { return records >= n; });
  }
};

// Takes a batch; sleeps a little at random (so partitions interleave); fails on "poison";
// writes each record's data to its output `copy` when the function declares one.
class BatchFunction final : public Executor {
 public:
  explicit BatchFunction(Seen& seen) : seen_(seen) {}
  Mode mode() const override { return Mode::synchronous; }
  Result call(const Invocation& inv) override {
    json::array batch = json::parse(inv.payload).as_array();
    const int64_t partition = batch.at(0).as_object().at("partition").as_int64();
    {
      std::lock_guard l(seen_.mu);
      if (seen_.in_flight[partition]++ > 0) seen_.overlapped = true;
    }
    thread_local std::mt19937 rng{std::random_device{}()};
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 500));
    bool poison = false;
    Result r;
    for (const auto& rec : batch) {
      const auto& o = rec.as_object();
      std::string data = o.at("data").is_string() ? std::string(o.at("data").as_string()) : json::serialize(o.at("data"));
      if (data == "poison") poison = true;
      r.outputs.push_back({"copy", data, {}});
    }
    std::lock_guard l(seen_.mu);
    --seen_.in_flight[partition];
    seen_.batches.push_back(batch);
    if (poison) return Result::failure(Outcome::error, "ValueError", "poison record");
    seen_.records += static_cast<int>(batch.size());
    seen_.cv.notify_all();
    return r;
  }

 private:
  Seen& seen_;
};

class StreamTriggerTest : public TriggerTest {
 protected:
  void SetUp() override {
    set_up("nimbus-stream-");
    if (HasFatalFailure()) return;
    clock_.on_advance([this] { thread_->wake(); });
    app_.streams.push_back(StreamSpec{"readings", 4, {}, 0});
    FunctionSpec fn;
    fn.name = "agg";
    fn.timeout = 5s;
    fn.concurrency = 8;  // batches of different partitions may run at once
    fn.retry.max_attempts = 2;
    fn.retry.initial = 1s;
    fn.retry.jitter = 0;
    StreamTriggerSpec t;
    t.name = "readings";
    t.group = "agg";
    t.batch_size = 7;
    fn.triggers.push_back(make_trigger("stream", t));
    fn.outputs.push_back(OutputSpec{"copy", OutputSpec::Kind::queue, "copies", 1});
    app_.functions.push_back(fn);
  }
  void TearDown() override {
    trigger_.reset();
    workers_.reset();
    pools_.reset();
    TriggerTest::TearDown();
  }
  void start(std::unique_ptr<Executor> executor = nullptr) {
    workers_ = std::make_unique<WorkerThreads>(4);
    ctx_ = std::make_unique<PoolContext>(PoolContext{clock_, Timers(timers_, thread_.get()), *workers_, metrics_});
    pools_ = std::make_unique<FunctionPools>();
    if (!executor) executor = std::make_unique<BatchFunction>(seen_);
    pools_->add(std::make_unique<FunctionPool>(app_.functions[0], 0, std::move(executor), *ctx_));
    trigger_ = std::make_unique<StreamTrigger>(TriggerContext{app_, *pools_, *store_, clock_, Timers(timers_, thread_.get()), *logger_});
    auto st = trigger_->start();
    ASSERT_TRUE(st.ok()) << st.error().message;
  }
  void append(const std::vector<std::pair<std::string, std::string>>& records) {
    Batch b;
    for (const auto& [key, data] : records) {
      Batch::Append a;
      a.stream = "readings";
      a.partitions = 4;
      a.key = key;
      a.record.payload = data;
      b.appends.push_back(std::move(a));
    }
    ASSERT_TRUE(store_->commit_sync(std::move(b)).ok());
  }
  std::map<int, int64_t> checkpoints(const std::string& group = "agg") {
    std::map<int, int64_t> out;
    auto cps = store_->stream_checkpoints("readings");
    EXPECT_TRUE(cps.ok());
    for (const auto& c : *cps)
      if (c.group == group) out[c.partition] = c.offset;
    return out;
  }
  int64_t queued(const std::string& queue) {
    auto stats = store_->stats();
    EXPECT_TRUE(stats.ok());
    for (const auto& q : *stats)
      if (q.queue == queue) return q.ready + q.delayed + q.in_flight;
    return 0;
  }
  template <class F>
  bool eventually(F f) {
    for (int i = 0; i < 2000; ++i) {
      if (f()) return true;
      std::this_thread::sleep_for(5ms);
    }
    return f();
  }

  Metrics metrics_{{"agg"}};
  std::unique_ptr<WorkerThreads> workers_;
  std::unique_ptr<PoolContext> ctx_;
  std::unique_ptr<FunctionPools> pools_;
  std::unique_ptr<StreamTrigger> trigger_;
  Seen seen_;
};

TEST_F(StreamTriggerTest, EachPartitionIsReadInOrderOneBatchAtATimeWhileOthersRun) {
  start();
  // 10 keys over 4 partitions; appended in several commits while the trigger already runs.
  constexpr int kRecords = 400;
  for (int i = 0; i < kRecords; i += 50) {
    std::vector<std::pair<std::string, std::string>> chunk;
    for (int j = i; j < i + 50; ++j) chunk.push_back({"device-" + std::to_string(j % 10), std::to_string(j)});
    append(chunk);
  }
  ASSERT_TRUE(seen_.wait_records(kRecords)) << seen_.records;
  std::lock_guard l(seen_.mu);
  EXPECT_FALSE(seen_.overlapped) << "two batches of one partition ran at once";
  std::map<int64_t, int64_t> next_offset;           // per partition: offsets come in order, no gap
  std::map<std::string, int> last_of_key;           // per key: its records in append order
  std::set<std::string> delivered;
  for (const auto& batch : seen_.batches) {
    EXPECT_LE(batch.size(), 7u);
    for (const auto& rec : batch) {
      const auto& o = rec.as_object();
      const int64_t p = o.at("partition").as_int64();
      EXPECT_EQ(o.at("offset").as_int64(), next_offset[p]++) << "partition " << p;
      const std::string key(o.at("key").as_string());
      const int value = static_cast<int>(o.at("data").as_int64());
      EXPECT_GT(value, last_of_key.count(key) ? last_of_key[key] : -1) << key;
      last_of_key[key] = value;
      EXPECT_TRUE(delivered.insert(std::to_string(value)).second) << "record " << value << " delivered twice";
    }
  }
  EXPECT_EQ(delivered.size(), static_cast<std::size_t>(kRecords));
  // The checkpoints end where the partitions end, and every output was committed with them.
  ASSERT_TRUE(eventually([&] {
    int64_t sum = 0;
    for (auto [p, o] : checkpoints()) sum += o;
    return sum == kRecords;
  }));
  EXPECT_EQ(queued("copies"), kRecords);
}

TEST_F(StreamTriggerTest, AFailingBatchIsRetriedThenDeadLetteredAndThePartitionMovesOn) {
  start();
  append({{"k", "1"}, {"k", "poison"}, {"k", "3"}});
  // The first attempt fails at once; the retry waits for its backoff on the injected clock.
  ASSERT_TRUE(eventually([&] {
    std::lock_guard l(seen_.mu);
    return seen_.batches.size() == 1;
  }));
  EXPECT_TRUE(checkpoints().empty()) << "a failed batch moved the checkpoint";
  EXPECT_EQ(queued("copies"), 0) << "outputs of a failed batch were committed";
  // The retry is armed when the failed result is back on the partition's thread, which may be
  // after the batch was seen: advance past its backoff until it has run.
  const std::string dead = "readings.agg.dead";
  ASSERT_TRUE(eventually([&] {
    if (queued(dead) == 1) return true;
    clock_.advance(1500ms);
    return false;
  }));
  {
    std::lock_guard l(seen_.mu);
    EXPECT_EQ(seen_.batches.size(), 2u);  // max_attempts: 2
  }
  auto peek = store_->peek(dead, 1);
  ASSERT_TRUE(peek.ok());
  ASSERT_EQ(peek->size(), 1u);
  EXPECT_NE(find_header(peek->at(0).metadata, "error")->find("poison record"), std::string::npos);
  EXPECT_EQ(json::parse(peek->at(0).payload).as_array().size(), 3u);
  EXPECT_EQ(checkpoints()[stream_partition("k", 4)], 3);
  // The partition goes on with what comes next.
  append({{"k", "4"}});
  ASSERT_TRUE(seen_.wait_records(1));
  EXPECT_TRUE(eventually([&] { return checkpoints()[stream_partition("k", 4)] == 4; }));
  EXPECT_EQ(queued("copies"), 1);
}

TEST_F(StreamTriggerTest, AStopWhileABatchWaitsForItsRetryDoesNotWaitForIt) {
  app_.functions[0].retry.initial = std::chrono::hours(1);
  start();
  append({{"k", "poison"}});
  ASSERT_TRUE(eventually([&] {
    std::lock_guard l(seen_.mu);
    return seen_.batches.size() == 1;
  }));
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(trigger_->stop(10s)) << "a batch waiting for its retry is not in flight";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_TRUE(checkpoints().empty());
}

TEST_F(StreamTriggerTest, ANewGroupAtLatestSkipsWhatIsThereAndAReplayReadsItAgain) {
  append({{"a", "1"}, {"a", "2"}});
  {
    StreamTriggerSpec t = *app_.functions[0].triggers[0].as<StreamTriggerSpec>();
    t.from_latest = true;
    app_.functions[0].triggers[0] = make_trigger("stream", t);
  }
  start();
  append({{"a", "3"}});
  ASSERT_TRUE(seen_.wait_records(1));
  const int p = stream_partition("a", 4);
  ASSERT_TRUE(eventually([&] { return checkpoints()[p] == 3; }));
  {
    std::lock_guard l(seen_.mu);
    ASSERT_EQ(seen_.batches.size(), 1u);
    EXPECT_EQ(seen_.batches[0].size(), 1u);
    EXPECT_EQ(seen_.batches[0][0].as_object().at("data").as_int64(), 3);
  }
  // A replay moves the committed checkpoint back; the idle partition notices and reads again.
  Batch replay;
  replay.checkpoints.push_back({"agg", "readings", p, 0, std::nullopt});
  ASSERT_TRUE(store_->commit_sync(std::move(replay)).ok());
  // Past max_wait the idle partition looks again (its wait may be armed after the checkpoint
  // was seen: advance until it has).
  ASSERT_TRUE(eventually([&] {
    {
      std::lock_guard l(seen_.mu);
      if (seen_.records >= 4) return true;
    }
    clock_.advance(2s);
    return false;
  }));
  EXPECT_TRUE(eventually([&] { return checkpoints()[p] == 3; }));
}

TEST_F(StreamTriggerTest, RetentionTrimsEveryMinuteByCountAndByAge) {
  app_.streams[0].max_records = 2;
  app_.streams[0].retention = 1h;
  start();
  append({{"k", "1"}, {"k", "2"}, {"k", "3"}, {"k", "4"}, {"k", "5"}});
  auto kept = [&] {
    auto info = store_->stream_info("readings");
    int64_t n = 0;
    for (const auto& p : *info) n += p.records;
    return n;
  };
  EXPECT_EQ(kept(), 5);
  clock_.advance(61s);  // the minute's trim: the newest 2 of the partition stay
  ASSERT_TRUE(eventually([&] { return kept() == 2; })) << kept();
  clock_.advance(2h);  // older than the retention: gone
  ASSERT_TRUE(eventually([&] { return kept() == 0; })) << kept();
}

// Found under AddressSanitizer (make test): a batch's completion, arriving on a pool thread
// after the trigger was destroyed, posted to the trigger's freed task thread. It now posts to
// a closed one, which drops it.
TEST_F(StreamTriggerTest, ACompletionAfterTheTriggerIsGoneGoesNowhere) {
  struct Gate final : Executor {
    std::promise<void> entered;
    std::shared_future<void> release;
    std::atomic<bool> once{false};
    Mode mode() const override { return Mode::synchronous; }
    Result call(const Invocation&) override {
      if (!once.exchange(true)) entered.set_value();
      release.wait();
      return Result{};
    }
  };
  std::promise<void> open;
  auto gate = std::make_unique<Gate>();
  gate->release = open.get_future().share();
  auto entered = gate->entered.get_future();
  start(std::move(gate));
  append({{"k", "1"}});
  ASSERT_EQ(entered.wait_for(20s), std::future_status::ready);
  trigger_.reset();  // the batch is still running
  open.set_value();
  workers_.reset();  // joins the pool's threads: the completion has run
  SUCCEED();
}

TEST_F(StreamTriggerTest, AStoreWithMorePartitionsThanTheManifestIsAClearStartError) {
  Batch b;
  Batch::Append a;
  a.stream = "readings";
  a.partitions = 16;
  a.key = "x";
  a.record.payload = "1";
  b.appends.push_back(a);
  ASSERT_TRUE(store_->commit_sync(std::move(b)).ok());
  ASSERT_GE(stream_partition("x", 16), 4) << "pick a key that lands beyond partition 3";
  workers_ = std::make_unique<WorkerThreads>(1);
  ctx_ = std::make_unique<PoolContext>(PoolContext{clock_, Timers(timers_, thread_.get()), *workers_, metrics_});
  pools_ = std::make_unique<FunctionPools>();
  trigger_ = std::make_unique<StreamTrigger>(TriggerContext{app_, *pools_, *store_, clock_, Timers(timers_, thread_.get()), *logger_});
  auto st = trigger_->start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("stream 'readings'"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("4 partitions"), std::string::npos) << st.error().message;
}

TEST(StreamPayload, JsonTextAndBinaryDataEachKeepTheirForm) {
  std::vector<StreamRecord> records(3);
  records[0].payload = R"({"t": 21.5})";
  records[1].payload = "plain text";
  records[2].payload = std::string("\xff\x00\x01", 3);
  json::array out = json::parse(stream_batch_payload(records)).as_array();
  EXPECT_EQ(out[0].as_object().at("data").as_object().at("t").as_double(), 21.5);
  EXPECT_EQ(out[1].as_object().at("data").as_string(), "plain text");
  EXPECT_EQ(out[2].as_object().at("data_base64").as_string(), "/wAB");
  EXPECT_FALSE(out[2].as_object().contains("data"));
}

// Found by fuzz/stream_fuzz.cpp: 1e999 is a JSON number that parses as infinity, and the
// batch said `Infinity`, which no JSON reader takes: every consumer of the batch failed.
TEST(StreamPayload, NumbersBeyondADoubleStayValidJson) {
  std::vector<StreamRecord> records(3);
  records[0].payload = "1e999";
  records[1].payload = R"({"t": [-1e999, 2]})";
  records[2].payload = "1e300";
  boost::system::error_code ec;
  json::value batch = json::parse(stream_batch_payload(records), ec);
  ASSERT_FALSE(ec) << stream_batch_payload(records);
  const json::array& out = batch.as_array();
  EXPECT_EQ(out[0].as_object().at("data").as_string(), "1e999") << "passed on as its text";
  EXPECT_EQ(out[1].as_object().at("data").as_string(), R"({"t": [-1e999, 2]})");
  EXPECT_EQ(out[2].as_object().at("data").as_double(), 1e300) << "finite numbers stay numbers";
}

// Found by fuzz/stream_fuzz.cpp (random seed): a 34-digit integer was parsed into a double
// and written back as 2.2222222222222222E33, so a reader that keeps integers exact (Python)
// got other digits than were appended. A JSON payload now reaches the batch as its own text.
TEST(StreamPayload, BigIntegersReachTheBatchDigitForDigit) {
  std::vector<StreamRecord> records(2);
  records[0].payload = " 2222222222222222222222222222222222";
  records[1].payload = R"({"id": 18446744073709551617, "x": 0.1000000000000000055511151231257827})";
  const std::string batch = stream_batch_payload(records);
  boost::system::error_code ec;
  json::value v = json::parse(batch, ec);
  ASSERT_FALSE(ec) << batch;
  EXPECT_NE(batch.find(R"("data": 2222222222222222222222222222222222})"), std::string::npos) << batch;
  EXPECT_NE(batch.find("18446744073709551617"), std::string::npos) << batch;
  EXPECT_NE(batch.find("0.1000000000000000055511151231257827"), std::string::npos) << batch;
  EXPECT_TRUE(v.as_array().at(1).as_object().at("data").is_object());
}

// Found by fuzz/stream_fuzz.cpp: a key or attribute that is not UTF-8 (an x-key header holds
// any bytes) went into the batch as it was, and no JSON reader took the batch.
TEST(StreamPayload, KeysAndAttributesThatAreNotUtf8StayValidJson) {
  std::vector<StreamRecord> records(1);
  records[0].key = "k\xff";
  records[0].type = "t\xc3";
  records[0].subject = "\xed\xa0\x80";
  records[0].id = "\xc3\xa9";
  records[0].metadata = {{"n\xfe", "v\xff"}};
  records[0].payload = "1";
  boost::system::error_code ec;
  json::value batch = json::parse(stream_batch_payload(records), ec);
  ASSERT_FALSE(ec) << "not JSON: " << ec.message();
  const json::object& o = batch.as_array().at(0).as_object();
  EXPECT_EQ(o.at("key").as_string(), "k\xef\xbf\xbd") << "a stray byte becomes U+FFFD";
  EXPECT_EQ(o.at("type").as_string(), "t\xef\xbf\xbd");
  EXPECT_EQ(o.at("subject").as_string(), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(o.at("id").as_string(), "\xc3\xa9") << "UTF-8 passes through";
  EXPECT_EQ(o.at("metadata").as_object().at("n\xef\xbf\xbd").as_string(), "v\xef\xbf\xbd");
}

}  // namespace
}  // namespace nimbus
