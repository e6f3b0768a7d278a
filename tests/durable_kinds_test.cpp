// The activity kind's hooks (durable/kind.cpp): the commit that completes an activity call
// carries the answer to its orchestration, and need not wait for the disk (Batch::relaxed)
// only when it holds nothing else: outputs of the activity's own may be seen by others at once,
// and must not be taken back by a database crash.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "durable/durable.h"
#include "store_conformance.h"
#include "triggers/kind.h"

namespace nimbus {
namespace {

namespace json = boost::json;

struct ActivityCall {
  ActivityCall() : dir(fresh_dir()) {
    auto s = open_store("sqlite:state.db", dir, clock);
    EXPECT_TRUE(s.ok()) << s.error().message;
    store = std::move(*s);
    fn.name = "say_hello";
    fn.triggers.push_back(make_trigger("activity", durable::ActivityTriggerSpec{}));
    const TriggerKindInfo* kind = find_trigger_kind("activity");
    EXPECT_NE(kind, nullptr);
    feed = kind->feed(fn, fn.triggers[0]);
    EXPECT_TRUE(feed && feed->hooks);
  }
  ~ActivityCall() {
    store.reset();
    fs::remove_all(dir);
  }

  // Delivers call `id` (an orchestration's task 3 of instance "i1") to the hooks.
  void deliver(const std::string& id) {
    Message m;
    m.id = id;
    Invocation inv;
    inv.metadata = {{durable::kMetaInstance, "i1"}, {durable::kMetaTask, "3"}, {durable::kMetaReply, "orch-q"}};
    std::shared_ptr<const Headers> trigger_metadata;
    ASSERT_TRUE(feed->hooks->prepare(*store, m, inv, trigger_metadata, 0).ok());
  }
  // Completes call `id` into `b` as the dispatcher does.
  void complete(Batch& b, const std::string& id, Outcome outcome = Outcome::success, bool last = true) {
    Result r;
    r.outcome = outcome;
    feed->hooks->complete(b, id, 1, outcome, last, r, "", 1000);
  }

  ManualClock clock;
  fs::path dir;
  std::unique_ptr<Store> store;
  FunctionSpec fn;
  std::optional<StoreFeed> feed;
};

TEST(ActivityKind, AResultAloneIsRelaxedButNotBesideTheActivitysOwnOutputs) {
  ActivityCall a;
  EXPECT_TRUE(a.feed->hand_off) << "an orchestration's calls are not taken in the commit that makes them";

  a.deliver("m1");
  Batch alone;
  alone.acks.push_back({"m1", "lease"});
  a.complete(alone, "m1");
  ASSERT_EQ(alone.enqueues.size(), 1u) << "no answer to the orchestration";
  EXPECT_EQ(alone.enqueues[0].queue, "orch-q");
  const json::object answer = json::parse(alone.enqueues[0].message.payload).as_object();
  EXPECT_EQ(answer.at("instance").as_string(), "i1");
  EXPECT_EQ(answer.at("event").at("task_id").as_int64(), 3);
  EXPECT_TRUE(alone.relaxed) << "a commit that only answers the orchestration waited for the disk";

  // Each kind of output of the activity's own keeps the commit flushed.
  const std::vector<std::pair<const char*, std::function<void(Batch&)>>> outputs = {
      {"an enqueue", [](Batch& b) { b.enqueues.push_back({"effects", NewMessage{}}); }},
      {"a publish", [](Batch& b) { b.publishes.push_back({"news", NewMessage{}}); }},
      {"a put", [](Batch& b) { b.puts.push_back({"kv", "k", "v", std::nullopt, 0}); }},
      {"a blob", [](Batch& b) {
         Batch::BlobPut p;
         p.container = "bucket";
         p.name = "name";
         p.data = "bytes";
         b.blob_puts.push_back(std::move(p));
       }},
  };
  int n = 0;
  for (const auto& [what, add] : outputs) {
    const std::string id = "o" + std::to_string(++n);
    a.deliver(id);
    Batch b;
    add(b);
    a.complete(b, id);
    EXPECT_FALSE(b.relaxed) << "the result beside " << what << " of the activity's own was not flushed";
    EXPECT_FALSE(b.enqueues.empty());
  }

  // A failure that is retried answers no one yet, and changes nothing of the commit.
  a.deliver("r1");
  Batch retried;
  a.complete(retried, "r1", Outcome::error, /*last=*/false);
  EXPECT_TRUE(retried.enqueues.empty());
  EXPECT_FALSE(retried.relaxed);
}

}  // namespace
}  // namespace nimbus
