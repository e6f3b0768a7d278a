// File-drop triggers on real files in a temporary folder, a real (SQLite) store for outputs and
// a ManualClock for retry backoff: a dropped file runs once and lands in processed/ after its
// outputs are committed; other names are left alone; files already there and files a crash
// left in .processing/ run on start; failures retry per the policy, then land in failed/ with
// a reason; two hosts on one folder never take the same file.
#include "triggers/kind.h"
#include "triggers/file/file_trigger.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/private_file.h"
#include "trigger_test_env.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct Call {
  std::string subject, payload;
  Headers metadata;
  int attempt = 0;
  TriggerKind trigger = TriggerKind::http;
};

// Every invocation; while `failing` they all fail, else each emits its payload to "next".
struct Calls : Recorded<Call> {
  bool failing = false;
};

class Recorder final : public Executor {
 public:
  explicit Recorder(Calls& calls) : calls_(calls) {}
  Mode mode() const override { return Mode::synchronous; }
  Result call(const Invocation& inv) override {
    std::lock_guard l(calls_.mu);
    calls_.list.push_back({inv.subject, inv.payload, inv.metadata, inv.attempt, inv.trigger});
    calls_.cv.notify_all();
    if (calls_.failing) return Result::failure(Outcome::error, "exception", "row 3 has no price");
    Result r;
    r.outputs.push_back({"next", "parsed:" + inv.payload, {}});
    return r;
  }

 private:
  Calls& calls_;
};

// Polls (bounded) for a file-system effect of the trigger's own thread.
template <class Pred>
bool eventually(Pred pred) {
  for (int i = 0; i < 2000; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

void write(const fs::path& file, const std::string& content) { std::ofstream(file, std::ios::binary) << content; }

// Written under a .tmp name and renamed, as a careful writer does.
void drop(const fs::path& dir, const std::string& name, const std::string& content) {
  write(dir / (name + ".tmp"), content);
  fs::rename(dir / (name + ".tmp"), dir / name);
}

std::set<std::string> names_in(const fs::path& dir) {
  std::set<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file()) out.insert(e.path().filename().string());
  }
  return out;
}

class FileTriggerTest : public TriggerTest {
 protected:
  void SetUp() override {
    set_up("nimbus-files-");
    inbox_ = dir_ / "inbox";
    fs::create_directories(inbox_);
    FunctionSpec fn;
    fn.name = "ingest";
    fn.retry.max_attempts = 3;
    fn.retry.exponential = false;
    fn.retry.initial = 10s;
    fn.retry.jitter = 0;
    fn.outputs.push_back({"next", OutputSpec::Kind::queue, "parsed"});
    FileTriggerSpec t;
    t.path = inbox_;
    t.pattern = "*.csv";
    fn.triggers.push_back(make_trigger("file", t));
    app_.functions.push_back(fn);
  }
  std::unique_ptr<HostParts<FileTrigger>> host() { return host_of<FileTrigger>(std::make_unique<Recorder>(calls_)); }
  std::unique_ptr<HostParts<FileTrigger>> started() {
    auto h = host();
    auto st = h->trigger->start();
    EXPECT_TRUE(st.ok()) << st.error().message;
    return h;
  }
  bool in(const char* sub, const std::string& name) const { return fs::exists(inbox_ / sub / name); }
  // The retry the last failure armed: due within the 10 s backoff (the pool's deadline
  // timers are 30 s out).
  bool retry_armed() {
    TimePoint due;
    return timers_.next_due(&due) && due <= clock_.now() + 10s;
  }
  // Waits for that retry, then moves the clock past its backoff.
  void advance_past_backoff() {
    ASSERT_TRUE(eventually([&] { return retry_armed(); })) << "no retry was armed";
    advance(10s);
  }

  fs::path inbox_;
  Calls calls_;
};

TEST_F(FileTriggerTest, DroppedCsvRunsOnceWithItsContentsThenMovesToProcessedAfterItsOutputs) {
  auto h = started();
  drop(inbox_, "orders.csv", "id,price\n1,9.50\n");
  ASSERT_TRUE(eventually([&] { return in("processed", "orders.csv"); }));
  // Its output was committed before the move, so it is in the queue now.
  auto parsed = store_->peek("parsed", 10);
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->size(), 1u);
  EXPECT_EQ((*parsed)[0].payload, "parsed:id,price\n1,9.50\n");

  ASSERT_EQ(calls_.count(), 1u);
  const Call& c = calls_.list[0];
  EXPECT_EQ(c.trigger, TriggerKind::named("file"));
  EXPECT_EQ(c.subject, "orders.csv");
  EXPECT_EQ(c.payload, "id,price\n1,9.50\n");
  EXPECT_EQ(c.attempt, 1);
  ASSERT_NE(find_header(c.metadata, "file.name"), nullptr);
  EXPECT_EQ(*find_header(c.metadata, "file.name"), "orders.csv");
  EXPECT_EQ(*find_header(c.metadata, "file.path"), (inbox_ / "orders.csv").string());
  EXPECT_EQ(*find_header(c.metadata, "file.size"), "16");
  EXPECT_FALSE(fs::exists(inbox_ / "orders.csv"));
  EXPECT_TRUE(names_in(inbox_ / ".processing").empty());
  EXPECT_EQ(fs::file_size(inbox_ / "processed" / "orders.csv"), 16u);
}

TEST_F(FileTriggerTest, OtherNamesHiddenFilesAndFilesBeingWrittenAreLeftAlone) {
  auto h = started();
  write(inbox_ / "notes.txt", "not a csv");
  write(inbox_ / ".hidden.csv", "hidden");
  write(inbox_ / "half.csv.part", "being written");
  write(inbox_ / "half.csv.tmp", "being written");
  drop(inbox_, "real.csv", "x");
  ASSERT_TRUE(eventually([&] { return in("processed", "real.csv"); }));
  EXPECT_EQ(calls_.count(), 1u);
  EXPECT_EQ(names_in(inbox_), (std::set<std::string>{"notes.txt", ".hidden.csv", "half.csv.part", "half.csv.tmp"}));
}

TEST_F(FileTriggerTest, FilesAlreadyThereAtStartAreProcessed) {
  write(inbox_ / "a.csv", "a");
  write(inbox_ / "b.csv", "b");
  auto h = started();
  ASSERT_TRUE(eventually([&] { return in("processed", "a.csv") && in("processed", "b.csv"); }));
  EXPECT_EQ(calls_.count(), 2u);
}

TEST_F(FileTriggerTest, FilesACrashLeftInProcessingRunAgainOnStart) {
  fs::create_directories(inbox_ / ".processing");
  write(inbox_ / ".processing" / "left.csv", "half done");
  auto h = started();
  ASSERT_TRUE(eventually([&] { return in("processed", "left.csv"); }));
  ASSERT_EQ(calls_.count(), 1u);
  EXPECT_EQ(calls_.list[0].payload, "half done");
  EXPECT_TRUE(names_in(inbox_ / ".processing").empty());
}

TEST_F(FileTriggerTest, FailuresRetryAfterTheBackoffThenTheFileLandsInFailedWithItsReason) {
  calls_.failing = true;
  auto h = started();
  drop(inbox_, "bad.csv", "id,price\n3,\n");
  ASSERT_TRUE(calls_.wait_for(1));
  advance_past_backoff();
  ASSERT_TRUE(calls_.wait_for(2));
  EXPECT_TRUE(in(".processing", "bad.csv"));  // held while it waits for its retries
  advance_past_backoff();
  ASSERT_TRUE(calls_.wait_for(3));
  ASSERT_TRUE(eventually([&] { return in("failed", "bad.csv.reason.json"); }));
  EXPECT_EQ(calls_.count(), 3u);  // max_attempts: 3, then no more
  for (int i = 0; i < 3; ++i) EXPECT_EQ(calls_.list[i].attempt, i + 1);
  EXPECT_TRUE(in("failed", "bad.csv"));
  EXPECT_FALSE(in("processed", "bad.csv"));
  EXPECT_TRUE(names_in(inbox_ / ".processing").empty());
  auto text = read_file(inbox_ / "failed" / "bad.csv.reason.json");
  ASSERT_TRUE(text.ok());
  auto reason = boost::json::parse(*text).as_object();
  EXPECT_EQ(reason["function"].as_string(), "ingest");
  EXPECT_EQ(reason["error_type"].as_string(), "exception");
  EXPECT_EQ(reason["message"].as_string(), "row 3 has no price");
  EXPECT_EQ(reason["attempts"].as_int64(), 3);
  EXPECT_FALSE(reason["failed_at"].as_string().empty());
  auto parsed = store_->peek("parsed", 10);  // a failed run's outputs are never committed
  ASSERT_TRUE(parsed.ok());
  EXPECT_TRUE(parsed->empty());
}

TEST_F(FileTriggerTest, OversizedFileFailsWithoutRunning) {
  {
    FileTriggerSpec t = *app_.functions[0].triggers[0].as<FileTriggerSpec>();
    t.max_size = 8;
    app_.functions[0].triggers[0] = make_trigger("file", t);
  }
  auto h = started();
  drop(inbox_, "huge.csv", "more than eight bytes");
  ASSERT_TRUE(eventually([&] { return in("failed", "huge.csv.reason.json"); }));
  EXPECT_EQ(calls_.count(), 0u);
  auto reason = boost::json::parse(*read_file(inbox_ / "failed" / "huge.csv.reason.json")).as_object();
  EXPECT_EQ(reason["error_type"].as_string(), "too_large");
  EXPECT_NE(reason["message"].as_string().find("max_size"), boost::json::string::npos);
}

TEST_F(FileTriggerTest, ANameAlreadyInProcessedGetsATimeStamp) {
  fs::create_directories(inbox_ / "processed");
  write(inbox_ / "processed" / "daily.csv", "yesterday");
  auto h = started();
  drop(inbox_, "daily.csv", "today");
  ASSERT_TRUE(eventually([&] { return names_in(inbox_ / "processed").size() == 2; }));
  EXPECT_EQ(*read_file(inbox_ / "processed" / "daily.csv"), "yesterday");
  for (const auto& name : names_in(inbox_ / "processed")) {
    if (name == "daily.csv") continue;
    EXPECT_TRUE(name.rfind("daily.", 0) == 0 && name.size() > 10 && name.substr(name.size() - 4) == ".csv") << name;
    EXPECT_EQ(*read_file(inbox_ / "processed" / name), "today");
  }
}

TEST_F(FileTriggerTest, TwoHostsOnOneFolderNeverTakeTheSameFile) {
  auto a = started();
  auto b = started();
  constexpr int kFiles = 40;
  for (int i = 0; i < kFiles; ++i) drop(inbox_, std::to_string(i).append(".csv"), std::to_string(i));
  ASSERT_TRUE(eventually([&] { return names_in(inbox_ / "processed").size() == kFiles; }));
  EXPECT_EQ(calls_.count(), static_cast<std::size_t>(kFiles));
  std::set<std::string> seen;
  for (const auto& c : calls_.list) EXPECT_TRUE(seen.insert(c.subject).second) << c.subject << " ran twice";
}

TEST_F(FileTriggerTest, AStopLeavesAFileWaitingForItsRetryInProcessing) {
  calls_.failing = true;
  auto h = started();
  drop(inbox_, "later.csv", "x");
  ASSERT_TRUE(calls_.wait_for(1));
  ASSERT_TRUE(eventually([&] { return retry_armed(); }));
  h.reset();
  advance(10s);
  EXPECT_EQ(calls_.count(), 1u);
  EXPECT_TRUE(in(".processing", "later.csv"));
}

TEST_F(FileTriggerTest, APathThatIsAFileIsAStartErrorNamingTheFunction) {
  write(dir_ / "plain", "x");
  {
    FileTriggerSpec t = *app_.functions[0].triggers[0].as<FileTriggerSpec>();
    t.path = dir_ / "plain";
    app_.functions[0].triggers[0] = make_trigger("file", t);
  }
  auto h = host();
  auto st = h->trigger->start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("function 'ingest'"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("is a file"), std::string::npos) << st.error().message;
}

}  // namespace
}  // namespace nimbus
