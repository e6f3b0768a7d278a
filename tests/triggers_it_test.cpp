// End to end: async HTTP jobs, the store at start, timers and streams.
#include "it_common.h"

namespace nimbus::testing {
namespace {

TEST(AsyncHttp, AcceptedWith202AndTheStatusUrlReportsTheOutcome) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: jobs\nfunctions:\n"
            "  render:\n    runtime: python\n    handler: app.py:render\n"
            "    triggers: [{http: {route: \"/render/{id}\", methods: [POST], async: true}}]\n"
            "  broken:\n    runtime: python\n    handler: app.py:broken\n    retry: {max_attempts: 2, initial: 10ms}\n"
            "    triggers: [{http: {route: /broken, async: true}}]\n");
  dir.write("app.py", R"PY(
def render(req, ctx):
    return {"got": req.text(), "id": req.params["id"], "q": req.query.get("size"), "h": req.headers.get("x-tag")}
def broken(req, ctx):
    raise ValueError("secret detail")
)PY");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Response accepted = request(host.http_port(), "POST", "/render/7?size=xl", {{"x-tag", "blue"}}, "payload");
  ASSERT_EQ(accepted.status, 202) << accepted.body;
  auto a = parse_object(accepted.body);
  std::string url = std::string(a["status_url"].as_string());
  EXPECT_EQ(accepted.header("location"), url);
  EXPECT_EQ(url, "/_nimbus/jobs/" + std::string(a["id"].as_string()));
  Admin admin{host.admin_port(), host.admin_token()};
  json::object job;
  ASSERT_TRUE(admin.wait([&] {
    job = parse_object(request(host.http_port(), "GET", url).body);
    return job["status"].as_string() == "succeeded";
  })) << json::serialize(job);
  auto result = job["result"].as_object();
  EXPECT_EQ(result["status"].as_int64(), 200);
  auto body = parse_object(std::string(result["body"].as_string()));
  EXPECT_EQ(body["got"].as_string(), "payload");
  EXPECT_EQ(body["id"].as_string(), "7");
  EXPECT_EQ(body["q"].as_string(), "xl");
  EXPECT_EQ(body["h"].as_string(), "blue");
  EXPECT_EQ(job["attempts"].as_int64(), 1);

  Response b = request(host.http_port(), "GET", "/broken");
  ASSERT_EQ(b.status, 202) << b.body;
  std::string burl = std::string(parse_object(b.body)["status_url"].as_string());
  ASSERT_TRUE(admin.wait([&] {
    job = parse_object(request(host.http_port(), "GET", burl).body);
    return job["status"].as_string() == "failed";
  })) << json::serialize(job);
  EXPECT_EQ(job["error"].as_string(), "ValueError");
  EXPECT_EQ(job["attempts"].as_int64(), 2);
  EXPECT_EQ(json::serialize(job).find("secret detail"), std::string::npos) << "details stay in the log";
  EXPECT_EQ(admin.peek("_async.broken.dead").size(), 1u);
  EXPECT_EQ(request(host.http_port(), "GET", "/_nimbus/jobs/0123").status, 404);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

TEST(Store, ADamagedStoreFileStopsTheStartWithItsName) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: st\nfunctions:\n  h:\n    runtime: native\n    handler: " + test_function("hello").string() +
                               "\n    triggers: [{http: {route: /h}}]\n");
  dir.write(".nimbus/state.db", "definitely not an SQLite database, but someone's notes");
  CommandResult r = run_nimbus({"start", ".", "--port", "0", "--admin-port", "0"}, dir.path());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(".nimbus/state.db"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("not a database"), std::string::npos) << r.err;
  EXPECT_EQ(slurp(dir.path() / ".nimbus/state.db"), "definitely not an SQLite database, but someone's notes");
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

TEST(Timer, ASecondlyScheduleRunsAndNimbusTimersListsIt) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: tick\nfunctions:\n  tick:\n    runtime: python\n    handler: app.py:tick\n"
                           "    triggers: [{timer: {schedule: \"* * * * * *\", time_zone: Europe/Berlin, run_on_startup: true}}]\n"
                           "    outputs: {ticks: {queue: ticks}}\n");
  dir.write("app.py", "def tick(req, ctx):\n    ctx.output('ticks', req.json())\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] { return admin.peek("ticks").size() >= 3; }, 10000)) << host.output();
  auto ticks = admin.peek("ticks");
  std::set<std::string> times;
  for (auto& m : ticks) {
    auto t = parse_object(std::string(m["payload"].as_string()));
    EXPECT_EQ(t["schedule"].as_string(), "* * * * * *");
    EXPECT_EQ(t["time_zone"].as_string(), "Europe/Berlin");
    times.insert(std::string(t["scheduled_time"].as_string()));
  }
  EXPECT_EQ(times.size(), ticks.size()) << "each due time ran once";
  CommandResult list = run_nimbus({"timers"}, dir.path());
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("tick"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("Europe/Berlin"), std::string::npos) << list.out;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// Per partition: how many records of stream `events` the outputs in `out` cover (each output
// is a relayed batch: the batch's JSON array, then "|sink").
std::map<int64_t, int64_t> covered(const std::vector<json::object>& out, std::multiset<std::string>* values = nullptr) {
  std::map<int64_t, int64_t> n;
  for (const auto& m : out) {
    std::string payload(m.at("payload").as_string());
    payload = payload.substr(0, payload.rfind('|'));
    const json::value batch = json::parse(payload);  // held: a range-for over a temporary's member dangles
    for (const auto& rec : batch.as_array()) {
      ++n[rec.as_object().at("partition").as_int64()];
      if (values) values->insert(json::serialize(rec.as_object().at("data")));
    }
  }
  return n;
}

class StreamOnEveryBackend : public ::testing::TestWithParam<std::string> {};

TEST_P(StreamOnEveryBackend, KillNineNeverLeavesACheckpointAheadOfItsOutputsAndLosesNothing) {
  constexpr int kRecords = 20000;
  TempDir dir;
  const std::string url = store_url(GetParam());
  ASSERT_FALSE(url.empty());
  dir.write("nimbus.yaml", on_store("name: crash\nstreams:\n  events: {partitions: 4}\nfunctions:\n  sink:\n"
                           "    runtime: native\n    handler: " + test_function("relay").string() + "\n"
                           "    concurrency: 8\n"
                           "    triggers: [{stream: {name: events, batch_size: 16}}]\n    outputs: {next: {queue: out}}\n", url));
  auto with_store = [&](auto fn) {
    ManualClock clock;
    auto store = open_store(url, dir.path(), clock);
    ASSERT_TRUE(store.ok()) << store.error().message;
    fn(**store);
  };
  with_store([&](Store& store) {
    Batch b;
    for (int i = 0; i < kRecords; ++i) {
      Batch::Append a;
      a.stream = "events";
      a.partitions = 4;
      a.key = "k" + std::to_string(i % 97);
      a.record.payload = std::to_string(i);
      b.appends.push_back(std::move(a));
    }
    ASSERT_TRUE(store.commit_sync(std::move(b)).ok());
  });
  // After each kill, with the host gone: every checkpoint equals what the outputs cover.
  auto check = [&](int64_t* processed) {
    with_store([&](Store& store) {
      auto out = store.peek("out", 1000000);
      ASSERT_TRUE(out.ok());
      std::vector<json::object> msgs;
      for (const auto& m : *out) msgs.push_back(json::object{{"payload", m.payload}});
      auto n = covered(msgs);
      auto cps = store.stream_checkpoints("events");
      ASSERT_TRUE(cps.ok());
      std::map<int64_t, int64_t> at;
      for (const auto& c : *cps) at[c.partition] = c.offset;
      *processed = 0;
      for (int p = 0; p < 4; ++p) {
        EXPECT_EQ(at[p], n[p]) << "partition " << p << ": checkpoint and committed outputs disagree";
        *processed += at[p];
      }
    });
  };
  std::mt19937 rng(std::random_device{}());
  int kills_mid_work = 0;
  int64_t processed = 0;
  for (int round = 0; round < 4; ++round) {
    {
      Host host(dir.path());
      ASSERT_TRUE(host.started()) << host.errors();
      // The kill lands mid-stream: once the host has committed past where it started (a fixed
      // sleep raced a fast machine that had finished by then), a little later or sooner.
      with_store([&](Store& store) {
        for (int i = 0; i < 5000; ++i) {
          auto cps = store.stream_checkpoints("events");
          int64_t at = 0;
          if (cps.ok())
            for (const auto& c : *cps) at += c.offset;
          if (at > processed) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 10));
      EXPECT_EQ(host.signal_and_wait(SIGKILL), 128 + SIGKILL);
    }
    check(&processed);
    if (processed > 0 && processed < kRecords) ++kills_mid_work;
  }
  EXPECT_GE(kills_mid_work, 2) << "the kills did not land mid-stream: they proved nothing";
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] {
    int64_t sum = 0;
    for (auto [p, c] : covered(admin.peek("out"))) sum += c;
    return sum >= kRecords;
  }, 60000));
  std::multiset<std::string> values;
  covered(admin.peek("out"), &values);
  EXPECT_EQ(values.size(), static_cast<std::size_t>(kRecords)) << "a record processed twice, or lost";
  for (int i = 0; i < kRecords; i += 997) EXPECT_EQ(values.count(std::to_string(i)), 1u) << i;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, StreamOnEveryBackend, ::testing::ValuesIn(backends()),
                         [](const auto& info) { return info.param; });

TEST(Stream, PythonProducerAndConsumerWithTheCli) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: iot\nstreams:\n  readings: {partitions: 2}\nfunctions:\n"
            "  ingest:\n    runtime: python\n    handler: app.py:ingest\n"
            "    triggers: [{http: {route: /readings, methods: [POST]}}]\n    outputs: {out: {stream: readings}}\n"
            "  total:\n    runtime: python\n    handler: app.py:total\n"
            "    triggers: [{stream: {name: readings, batch_size: 10, max_wait: 100ms}}]\n"
            "    outputs: {sums: {queue: sums}}\n");
  dir.write("app.py", R"PY(
import json
def ingest(req, ctx):
    r = req.json()
    ctx.output("out", r, {"key": r["device"]})
    return {"ok": True}
def total(req, ctx):
    batch = req.json()
    ctx.output("sums", {"device_keys": sorted({r["key"] for r in batch}),
                        "sum": sum(r["data"]["value"] for r in batch),
                        "offsets": [[r["partition"], r["offset"]] for r in batch]})
)PY");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  for (int i = 1; i <= 6; ++i) {
    Response r = request(host.http_port(), "POST", "/readings", {{"content-type", "application/json"}},
                         "{\"device\": \"d" + std::to_string(i % 3) + "\", \"value\": " + std::to_string(i) + "}");
    ASSERT_EQ(r.status, 200) << r.body;
  }
  CommandResult append = run_nimbus({"stream", "append", "readings", "--key", "d9", "--data", "{\"value\": 100}"}, dir.path());
  ASSERT_EQ(append.exit_code, 0) << append.err;
  EXPECT_NE(append.out.find("offset"), std::string::npos) << append.out;
  auto sum_all = [&] {
    int64_t sum = 0;
    for (auto& m : admin.peek("sums")) sum += parse_object(std::string(m["payload"].as_string()))["sum"].as_int64();
    return sum;
  };
  ASSERT_TRUE(admin.wait([&] { return sum_all() == 121; }, 15000)) << sum_all() << host.output();
  CommandResult tail = run_nimbus({"stream", "tail", "readings"}, dir.path());
  ASSERT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_NE(tail.out.find("key d9"), std::string::npos) << tail.out;
  CommandResult groups = run_nimbus({"stream", "groups", "readings"}, dir.path());
  ASSERT_EQ(groups.exit_code, 0) << groups.err;
  EXPECT_NE(groups.out.find("total"), std::string::npos) << groups.out;
  // Replaying the group from offset 0 processes every record again.
  CommandResult replay = run_nimbus({"stream", "replay", "readings", "total", "--from-offset", "0"}, dir.path());
  ASSERT_EQ(replay.exit_code, 0) << replay.err;
  ASSERT_TRUE(admin.wait([&] { return sum_all() == 242; }, 15000)) << sum_all();
  // And from a time: every partition from its first record appended at or after it.
  replay = run_nimbus({"stream", "replay", "readings", "total", "--from-time-ms", "1"}, dir.path());
  ASSERT_EQ(replay.exit_code, 0) << replay.err;
  ASSERT_TRUE(admin.wait([&] { return sum_all() == 363; }, 15000)) << sum_all();
  CommandResult ls = run_nimbus({"stream", "ls"}, dir.path());
  EXPECT_NE(ls.out.find("readings"), std::string::npos) << ls.out;
  Response unknown = admin.call("GET", "/admin/streams/nope");
  EXPECT_EQ(unknown.status, 404);
  EXPECT_NE(unknown.body.find("readings"), std::string::npos) << unknown.body;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing
