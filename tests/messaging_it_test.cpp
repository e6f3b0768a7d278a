// End to end: queues, topics, file drops and blobs through the real host, kill -9 included.
#include "it_common.h"

// ---- Queues and topics: durable messaging through the real host ------------------------------

namespace nimbus::testing {
namespace {


TEST(Queue, APipelineWithTopicsFiltersRetriesAndDeadLetters) {
  TempDir dir;
  dir.write("nimbus.yaml",
            "name: pipe\nfunctions:\n" +
                relay_stage("stage1", "{queue: {name: in}}", "{queue: mid}",
                            "    retry: {max_attempts: 2, backoff: fixed, initial: 10ms, jitter: 0}\n") +
                relay_stage("stage2", "{queue: {name: mid, batch_size: 2}}", "{topic: results}") +
                relay_stage("audit", "{topic: {name: results}}", "{queue: audited}") +
                relay_stage("flagged", "{topic: {name: results, filter: {subject_prefix: vip/}}}", "{queue: vips}"));
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  for (auto [payload, subject] : {std::pair{"a", "vip/1"}, {"b", "std/2"}, {"flaky", "std/3"}, {"poison", "std/4"}}) {
    Response r = admin.call("POST", "/admin/queues/in/messages", payload, {{"ce-subject", subject}, {"ce-type", "order"}});
    ASSERT_EQ(r.status, 201) << r.body;
  }
  // audit and flagged are two subscribers of the topic, each on its own queue: wait for both.
  ASSERT_TRUE(admin.wait([&] {
    return admin.peek("audited").size() == 3 && admin.peek("in.dead").size() == 1 && !admin.peek("vips").empty();
  })) << host.output();
  std::set<std::string> audited;
  for (auto& m : admin.peek("audited")) audited.insert(std::string(m["payload"].as_string()));
  EXPECT_EQ(audited, (std::set<std::string>{"a|stage1|stage2|audit", "b|stage1|stage2|audit",
                                            "flaky|stage1|stage2|audit"}));
  auto vips = admin.peek("vips");
  ASSERT_EQ(vips.size(), 1u) << "only the vip/ subject passes the filter";
  EXPECT_EQ(vips[0]["payload"].as_string(), "a|stage1|stage2|flagged");
  // The flaky one took two deliveries at stage1 (its output says so), then went on.
  for (auto& m : admin.peek("audited")) {
    if (m["payload"].as_string().starts_with("flaky")) {
      EXPECT_EQ(m["type"].as_string(), "relayed");
    }
  }
  auto dead = admin.peek("in.dead");
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0]["payload"].as_string(), "poison");
  EXPECT_EQ(dead[0]["deliveries"].as_int64(), 2);
  EXPECT_NE(dead[0]["error"].as_string().find("cannot digest poison"), std::string::npos) << dead[0]["error"];
  EXPECT_GT(dead[0]["last_failed_ms"].as_int64(), 0);
  ASSERT_TRUE(host.wait_for_output("moved to the dead-letter queue"));

  // The operator's view and tools: nimbus queue ls / peek / dlq replay / purge.
  CommandResult ls = run_nimbus({"queue", "ls", "--dir", dir.path().string()}, dir.path());
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
  std::regex in_row("\\nin +0 +0 +0 +1\\n");
  EXPECT_TRUE(std::regex_search(ls.out, in_row)) << ls.out;
  CommandResult replay = run_nimbus({"dlq", "replay", "in"}, dir.path());
  EXPECT_EQ(replay.exit_code, 0) << replay.err;
  EXPECT_NE(replay.out.find("replayed 1"), std::string::npos) << replay.out;
  ASSERT_TRUE(admin.wait([&] { return admin.peek("in.dead").size() == 1 && admin.peek("in.dead")[0]["deliveries"].as_int64() == 2; }));
  CommandResult purge = run_nimbus({"queue", "purge", "audited"}, dir.path());
  EXPECT_EQ(purge.exit_code, 0) << purge.err;
  EXPECT_TRUE(admin.peek("audited").empty());
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A message's attributes are any bytes a client sent; the admin API's listing of it is still
// JSON (UTF-8), with the bytes that are not UTF-8 replaced (found by the admin fuzz target).
TEST(Queue, AttributesThatAreNotUtf8AreListedAsValidJson) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Admin admin{app.admin(), app.host->admin_token()};
  Response posted = admin.call("POST", "/admin/queues/raw/messages", "x",
                               {{"ce-type", "caf\xe9"}, {"ce-subject", "s\xff"}, {"content-type", "text/\xc3"}});
  ASSERT_EQ(posted.status, 201) << posted.body;
  Response listed = admin.call("GET", "/admin/queues/raw/messages");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_TRUE(valid_utf8(listed.body)) << listed.body;
  auto messages = admin.peek("raw");
  ASSERT_EQ(messages.size(), 1u) << listed.body;
  EXPECT_EQ(messages[0]["type"].as_string(), "caf\xEF\xBF\xBD");
  EXPECT_EQ(messages[0]["subject"].as_string(), "s\xEF\xBF\xBD");
}

TEST(Queue, HttpFunctionsOutputsAreCommittedBeforeTheReply) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: web\nfunctions:\n"
                           "  api:\n    runtime: native\n    handler: " + test_function("relay").string() + "\n"
                           "    triggers: [{http: {route: /api}}]\n    outputs: {next: {queue: jobs}}\n"
                           "  py:\n    runtime: python\n    handler: app.py:save\n"
                           "    triggers: [{http: {route: /py}}]\n    outputs: {view: {state: views}, bad: {queue: x}}\n");
  dir.write("app.py", R"PY(
def save(req, ctx):
    if req.query.get("undeclared"):
        ctx.output("nope", "x")
    ctx.output("view", {"saw": req.text()}, {"key": "k1"})
    return "saved"
)PY");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  Response r = request(host.http_port(), "POST", "/api", {}, "job-1");
  ASSERT_EQ(r.status, 200) << r.body;
  auto jobs = admin.peek("jobs");  // no waiting: it was committed before the reply
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0]["payload"].as_string(), "job-1|api");

  Response py = request(host.http_port(), "POST", "/py", {}, "hello");
  ASSERT_EQ(py.status, 200) << py.body;
  Response bad = request(host.http_port(), "POST", "/py?undeclared=1", {}, "x");
  EXPECT_EQ(bad.status, 500) << bad.body;
  ASSERT_TRUE(host.wait_for_output("does not declare"));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  // The state output is in the store (read it the way any part does).
  ManualClock clock;
  auto store = open_store("sqlite:.nimbus/state.db", dir.path(), clock);
  ASSERT_TRUE(store.ok()) << store.error().message;
  auto entry = (*store)->get("views", "k1");
  ASSERT_TRUE(entry.ok() && entry->has_value());
  EXPECT_EQ((*entry)->value, "{\"saw\": \"hello\"}");
}

// kill -9 at random moments while a 10,000-message, two-stage pipeline runs; after restarts,
// every message was processed and every output emitted exactly once.
// On every backend (the store's conformance suite has the store's own kill -9 tests; this is
// the host's, through the dispatcher).
class QueueOnEveryBackend : public ::testing::TestWithParam<std::string> {};

TEST_P(QueueOnEveryBackend, KillNineAtRandomMomentsLosesNothingAndEmitsNothingTwice) {
  constexpr int kMessages = 10000;
  TempDir dir;
  const std::string url = store_url(GetParam());
  ASSERT_FALSE(url.empty());
  dir.write("nimbus.yaml",
            on_store("name: crash\nfunctions:\n", url) +
                relay_stage("stage1", "{queue: {name: in, lease: 1s, batch_size: 64}}", "{queue: mid}",
                            "    concurrency: 64\n") +
                relay_stage("stage2", "{queue: {name: mid, lease: 1s, batch_size: 64}}", "{queue: out}",
                            "    concurrency: 64\n"));
  ASSERT_EQ(enqueue_numbered(url, dir.path(), "in", kMessages), "");
  auto done_count = [](const Admin& admin) -> int64_t {
    Response r = admin.call("GET", "/admin/queues");
    json::object body = parse_object(r.body);
    for (auto& q : body["queues"].as_array()) {
      auto o = q.as_object();
      if (o["queue"].as_string() == "out") return o["ready"].as_int64();
    }
    return 0;
  };
  std::mt19937 rng(std::random_device{}());
  int kills_mid_work = 0;
  for (int round = 0; round < 4; ++round) {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    Admin admin{host.admin_port(), host.admin_token()};
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 60));
    int64_t before = done_count(admin);
    EXPECT_EQ(host.signal_and_wait(SIGKILL), 128 + SIGKILL);
    if (before < kMessages) ++kills_mid_work;
  }
  EXPECT_GE(kills_mid_work, 2) << "the pipeline finished before the kills: they proved nothing";
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] { return done_count(admin) >= kMessages; }, 60000)) << admin.call("GET", "/admin/queues").body;
  auto out = admin.peek("out");
  std::set<std::string> payloads;
  for (auto& m : out) payloads.insert(std::string(m["payload"].as_string()));
  EXPECT_EQ(out.size(), static_cast<std::size_t>(kMessages)) << "an output emitted twice, or one lost";
  EXPECT_EQ(payloads.size(), static_cast<std::size_t>(kMessages));
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE(payloads.count(std::to_string(i) + "|stage1|stage2")) << "message " << i << " lost";
  }
  EXPECT_TRUE(admin.peek("in").empty());
  EXPECT_TRUE(admin.peek("mid").empty());
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, QueueOnEveryBackend, ::testing::ValuesIn(backends()),
                         [](const auto& info) { return info.param; });

// A legacy system drops files: the good one's output reaches the queue and the file moves to
// processed/; the bad one lands in failed/ with its reason once its one attempt fails.
TEST(Files, ADroppedFileRunsTheFunctionItsOutputIsQueuedAndTheFileMovesOn) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: drop\nfunctions:\n" +
                               relay_stage("ingest", "{file: {path: inbox, pattern: \"*.csv\"}}", "{queue: rows}",
                                           "    retry: {max_attempts: 1}\n"));
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  const std::filesystem::path inbox = dir.path() / "inbox";
  ASSERT_TRUE(std::filesystem::is_directory(inbox / "processed"));  // made at start
  dir.write("inbox/orders.csv.tmp", "1,apple");
  std::filesystem::rename(inbox / "orders.csv.tmp", inbox / "orders.csv");
  dir.write("inbox/notes.txt", "ignored");
  dir.write("inbox/poison.csv", "poison");
  ASSERT_TRUE(admin.wait([&] {
    return std::filesystem::exists(inbox / "processed" / "orders.csv") &&
           std::filesystem::exists(inbox / "failed" / "poison.csv.reason.json");
  })) << host.output();
  auto rows = admin.peek("rows");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0]["payload"].as_string(), "1,apple|ingest");
  EXPECT_EQ(rows[0]["subject"].as_string(), "orders.csv");
  auto reason = parse_object(slurp(inbox / "failed" / "poison.csv.reason.json"));
  EXPECT_EQ(reason["function"].as_string(), "ingest");
  EXPECT_NE(reason["message"].as_string().find("cannot digest poison"), json::string::npos) << reason;
  EXPECT_EQ(reason["attempts"].as_int64(), 1);
  EXPECT_TRUE(std::filesystem::exists(inbox / "failed" / "poison.csv"));
  EXPECT_TRUE(std::filesystem::exists(inbox / "notes.txt"));
  EXPECT_TRUE(host.wait_for_output("\"trigger\":\"file\""));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A blob-triggered function that logs every event to a queue and writes an upper-cased copy
// to the blob output "copy" (copies/{name}.txt); PUT /up/... is its upload route.
std::string blob_app(const std::string& fn_extra = "", const std::string& lease = "5s") {
  return "name: blobs\nfunctions:\n  copier:\n    runtime: native\n    handler: " + test_function("blob_copy").string() +
         "\n" + fn_extra +
         "    triggers:\n"
         "      - blob: {path: \"uploads/{name}.csv\", events: [created, updated, deleted], lease: " + lease + "}\n"
         "      - http: {route: \"/up/{*path}\", auth: function, upload: {container: uploads}}\n"
         "    outputs: {log: {queue: log}, copy: {blob: \"copies/{name}.txt\"}}\n";
}

std::vector<std::string> payloads_of(const Admin& admin, const std::string& queue) {
  std::vector<std::string> out;
  for (auto& m : admin.peek(queue)) out.push_back(std::string(m["payload"].as_string()));
  return out;
}

TEST(Blob, TheTriggerFiresOncePerVersionAndItsOutputWritesABlob) {
  TempDir dir;
  dir.write("nimbus.yaml", blob_app());
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  auto put = [&](const std::string& path, const std::string& data) {
    CommandResult r = run_nimbus({"blob", "put", path, "--data", data}, dir.path());
    EXPECT_EQ(r.exit_code, 0) << r.err;
  };
  auto logged = [&](std::size_t n) { return admin.wait([&] { return payloads_of(admin, "log").size() >= n; }); };
  // Each step waits for its event, so the payload read at delivery is that version's bytes.
  put("uploads/a.csv", "v1");
  ASSERT_TRUE(logged(1)) << host.output();
  CommandResult copy = run_nimbus({"blob", "get", "copies/a.txt"}, dir.path());
  EXPECT_EQ(copy.exit_code, 0) << copy.err;
  EXPECT_EQ(copy.out, "V1") << "the blob output binding, named from the trigger's {name}";
  put("uploads/a.csv", "v2");
  ASSERT_TRUE(logged(2));
  put("uploads/a.csv", "v2");  // the same bytes again: a new version, a new event
  ASSERT_TRUE(logged(3));
  put("uploads/notes.txt", "not a csv");  // matches no trigger
  CommandResult rm = run_nimbus({"blob", "rm", "uploads/a.csv"}, dir.path());
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  ASSERT_TRUE(logged(4));
  ASSERT_TRUE(admin.wait([&] { return admin.peek("_blobs.copier").empty(); }));
  EXPECT_EQ(payloads_of(admin, "log"),
            (std::vector<std::string>{"created 1 a v1", "updated 2 a v2", "updated 3 a v2", "deleted 3 a "}));
  EXPECT_TRUE(admin.peek("_blobs.copier.dead").empty());
  Response copied = admin.call("GET", "/admin/blobs/copies/a.txt");
  EXPECT_EQ(copied.status, 200);
  EXPECT_EQ(copied.body, "V2");
  EXPECT_EQ(copied.header("x-blob-version"), "3") << "one output per event";
  EXPECT_EQ(copied.header("content-type"), "text/plain");

  // The upload route: the function's key, then the body is a blob and its trigger fires.
  auto keys = parse_object(slurp(dir.path() / ".nimbus" / "keys.json"));
  const std::string key(keys["functions"].as_object()["copier"].as_string());
  EXPECT_EQ(request(host.http_port(), "PUT", "/up/b.csv", {}, "hello").status, 401);
  Response up = request(host.http_port(), "PUT", "/up/b.csv", {{"x-functions-key", key}, {"content-type", "text/csv"}}, "hello");
  ASSERT_EQ(up.status, 201) << up.body;
  auto stored = parse_object(up.body);
  EXPECT_EQ(stored["path"].as_string(), "uploads/b.csv");
  EXPECT_EQ(stored["version"].as_int64(), 1);
  EXPECT_EQ(stored["content_type"].as_string(), "text/csv");
  EXPECT_EQ(up.header("etag"), "\"1\"");
  Response again = request(host.http_port(), "POST", "/up/b.csv", {{"x-functions-key", key}, {"if-none-match", "*"}}, "x");
  EXPECT_EQ(again.status, 412) << again.body;
  ASSERT_TRUE(logged(5));
  EXPECT_EQ(payloads_of(admin, "log").back(), "created 1 b hello");
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// The event is in the commit of the put: a host killed right after acknowledging puts runs
// every one of them after its restart, and none twice (outputs and ack commit together).
class BlobOnEveryBackend : public ::testing::TestWithParam<std::string> {};

TEST_P(BlobOnEveryBackend, KillNineRightAfterPutsLosesNoEventAndRunsNoneTwice) {
  constexpr int kBlobs = 20;
  TempDir dir;
  const std::string url = store_url(GetParam());
  ASSERT_FALSE(url.empty());
  dir.write("nimbus.yaml", on_store(blob_app("    concurrency: 1\n", "1s"), url));
  {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    Admin admin{host.admin_port(), host.admin_token()};
    for (int i = 0; i < kBlobs; ++i) {
      Response r = admin.call("PUT", "/admin/blobs/uploads/k" + std::to_string(i) + ".csv", "slow" + std::to_string(i));
      ASSERT_EQ(r.status, 201) << r.body;
    }
    EXPECT_EQ(host.signal_and_wait(SIGKILL), 128 + SIGKILL);
  }
  {
    ManualClock clock;
    auto store = open_store(url, dir.path(), clock);
    ASSERT_TRUE(store.ok()) << store.error().message;
    auto log = (*store)->peek("log", 1000);
    ASSERT_TRUE(log.ok());
    EXPECT_LT(log->size(), static_cast<std::size_t>(kBlobs)) << "every event ran before the kill: it proved nothing";
  }
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] { return payloads_of(admin, "log").size() >= kBlobs && admin.peek("_blobs.copier").empty(); }))
      << host.output();
  auto log = payloads_of(admin, "log");
  std::multiset<std::string> got(log.begin(), log.end()), want;
  for (int i = 0; i < kBlobs; ++i) want.insert("created 1 k" + std::to_string(i) + " slow" + std::to_string(i));
  EXPECT_EQ(got, want);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, BlobOnEveryBackend, ::testing::ValuesIn(backends()),
                         [](const auto& info) { return info.param; });

TEST(Blob, CliPutGetLsRmRoundTripTheBytesAndSayWhatIsWrong) {
  App app(manifest());
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const auto& dir = app.dir.path();
  std::string bytes;
  for (int i = 0; i < 512; ++i) bytes.push_back(static_cast<char>(i % 256));
  app.dir.write("in.bin", bytes);
  CommandResult put = run_nimbus({"blob", "put", "uploads/2024/in.bin", "in.bin", "--content-type", "application/x-thing"}, dir);
  EXPECT_EQ(put.exit_code, 0) << put.err;
  EXPECT_NE(put.out.find("uploads/2024/in.bin version 1, 512 bytes"), std::string::npos) << put.out;
  EXPECT_EQ(run_nimbus({"blob", "put", "uploads/name with space.txt", "--data", "hi"}, dir).exit_code, 0);
  CommandResult get = run_nimbus({"blob", "get", "uploads/2024/in.bin", "-o", "out.bin"}, dir);
  EXPECT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(slurp(dir / "out.bin"), bytes);
  EXPECT_EQ(run_nimbus({"blob", "get", "uploads/name with space.txt"}, dir).out, "hi");
  CommandResult ls = run_nimbus({"blob", "ls", "uploads"}, dir);
  EXPECT_EQ(ls.exit_code, 0) << ls.err;
  EXPECT_TRUE(std::regex_search(ls.out, std::regex("\\n2024/in.bin +512 +1 +\\S+ +application/x-thing\\n"))) << ls.out;
  EXPECT_NE(ls.out.find("name with space.txt"), std::string::npos) << ls.out;
  CommandResult under = run_nimbus({"blob", "ls", "uploads/2024/"}, dir);
  EXPECT_EQ(under.out.find("name with space"), std::string::npos) << under.out;

  CommandResult twice = run_nimbus({"blob", "put", "uploads/2024/in.bin", "--data", "x", "--create-only"}, dir);
  EXPECT_EQ(twice.exit_code, 1);
  EXPECT_NE(twice.err.find("create-only"), std::string::npos) << twice.err;
  CommandResult bad = run_nimbus({"blob", "put", "uploads/a/../b", "--data", "x"}, dir);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("'..'"), std::string::npos) << bad.err;
  CommandResult neither = run_nimbus({"blob", "put", "uploads/x"}, dir);
  EXPECT_EQ(neither.exit_code, 1);
  EXPECT_NE(neither.err.find("give a FILE or --data"), std::string::npos) << neither.err;

  CommandResult rm = run_nimbus({"blob", "rm", "uploads/2024/in.bin"}, dir);
  EXPECT_EQ(rm.exit_code, 0) << rm.err;
  EXPECT_NE(rm.out.find("deleted uploads/2024/in.bin (version 1)"), std::string::npos) << rm.out;
  CommandResult gone = run_nimbus({"blob", "get", "uploads/2024/in.bin"}, dir);
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_NE(gone.err.find("no blob uploads/2024/in.bin"), std::string::npos) << gone.err;
  EXPECT_EQ(run_nimbus({"blob", "rm", "uploads/2024/in.bin"}, dir).exit_code, 1);
  EXPECT_EQ(app.host->signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// A function that outlives its lease keeps its message (the lease is renewed while it runs),
// and the consumer never leases more than the pool can run (concurrency 2: at most 2 leased).
TEST(Queue, LeasesAreRenewedWhileFunctionsRunAndPrefetchIsBoundedByCapacity) {
  TempDir dir;
  dir.write("nimbus.yaml", "name: lease\nfunctions:\n  slow:\n    runtime: native\n    handler: " +
                               test_function("sleepy").string() +
                               "\n    concurrency: 2\n    wait_queue: 0\n"
                               "    triggers: [{queue: {name: work, lease: 300ms, batch_size: 50}}]\n");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  // Leased, ready and in-flight counts of `work`; nullopt once it is gone (all acked).
  auto counts = [&]() -> std::optional<std::pair<int64_t, int64_t>> {
    json::object body = parse_object(admin.call("GET", "/admin/queues").body);
    for (auto& q : body["queues"].as_array()) {
      auto o = q.as_object();
      if (o["queue"].as_string() == "work") return std::pair{o["in_flight"].as_int64(), o["ready"].as_int64()};
    }
    return std::nullopt;
  };
  std::regex invocation_line("\"msg\":\"invocation\",\"function\":\"slow\"");
  auto runs = [&] {
    std::string log = host.output();
    return std::distance(std::sregex_iterator(log.begin(), log.end(), invocation_line), std::sregex_iterator());
  };

  // One message, a free slot, a 1 s run against a 300 ms lease: without renewal the consumer
  // would lease it again at 300 ms and run it twice.
  ASSERT_EQ(admin.call("POST", "/admin/queues/work/messages", "1000").status, 201);
  ASSERT_TRUE(admin.wait([&] { return !counts().has_value(); })) << host.output();
  ASSERT_TRUE(admin.wait([&] { return runs() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(150));
  EXPECT_EQ(runs(), 1) << host.output();
  EXPECT_EQ(host.output().find("lease was lost"), std::string::npos) << host.output();

  for (int i = 0; i < 6; ++i) ASSERT_EQ(admin.call("POST", "/admin/queues/work/messages", "m" + std::to_string(i)).status, 201);
  int64_t most = 0;
  ASSERT_TRUE(admin.wait([&] {
    auto c = counts();
    if (c) most = std::max(most, c->first);
    return !c.has_value();
  })) << host.output();
  EXPECT_LE(most, 2) << "never more leased than the pool can run";
  EXPECT_GE(most, 1);
  ASSERT_TRUE(admin.wait([&] { return runs() == 7; })) << host.output();
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing
