// End to end: several hosts (real `nimbus` processes, each with its own app folder) on one
// PostgreSQL database: they share a queue as competing consumers and emit each output once,
// and each due time of a timer runs once among them.
#include "it_common.h"

namespace nimbus::testing {
namespace {

namespace fs = std::filesystem;

// The same app in two folders of its own (keys, tokens, native builds are per host), on `url`.
struct TwoHosts {
  TwoHosts(const std::string& url, const std::string& functions) {
    const std::string text = "name: shared\nstore: \"" + url + "\"\nfunctions:\n" + functions;
    a_dir.write("nimbus.yaml", text);
    b_dir.write("nimbus.yaml", text);
    a = std::make_unique<Host>(a_dir.path());
    b = std::make_unique<Host>(b_dir.path());
  }
  TempDir a_dir, b_dir;
  std::unique_ptr<Host> a, b;
};

TEST(MultiHost, TwoHostsShareAQueueAndEmitEachOutputOnce) {
  constexpr int kMessages = 4000;
  const std::string url = store_url("postgres");
  ASSERT_FALSE(url.empty());
  TwoHosts hosts(url, relay_stage("stage1", "{queue: {name: in, batch_size: 16}}", "{queue: out}", "    concurrency: 8\n"));
  ASSERT_TRUE(hosts.a->started()) << hosts.a->errors();
  ASSERT_TRUE(hosts.b->started()) << hosts.b->errors();
  // One commit from outside both hosts: its NOTIFY wakes both at once.
  ASSERT_EQ(enqueue_numbered(url, "", "in", kMessages), "");
  Admin admin{hosts.a->admin_port(), hosts.a->admin_token()};
  ASSERT_TRUE(admin.wait([&] { return admin.peek("out").size() >= static_cast<std::size_t>(kMessages); }, 60000))
      << admin.call("GET", "/admin/queues").body;
  auto out = admin.peek("out");
  std::set<std::string> payloads;
  for (auto& m : out) payloads.insert(std::string(m["payload"].as_string()));
  EXPECT_EQ(out.size(), static_cast<std::size_t>(kMessages)) << "an output emitted twice";
  for (int i = 0; i < kMessages; ++i) ASSERT_TRUE(payloads.count(std::to_string(i) + "|stage1")) << "message " << i << " lost";
  EXPECT_TRUE(admin.peek("in").empty());
  const int64_t on_a = invocations_succeeded(hosts.a->admin_port(), "stage1");
  const int64_t on_b = invocations_succeeded(hosts.b->admin_port(), "stage1");
  EXPECT_EQ(on_a + on_b, kMessages) << "a message ran on both hosts (a " << on_a << ", b " << on_b << ")";
  EXPECT_GT(on_a, 0) << "host a took no share";
  EXPECT_GT(on_b, 0) << "host b took no share";
  EXPECT_EQ(hosts.a->signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(hosts.b->signal_and_wait(SIGTERM), 0);
}

TEST(MultiHost, EachDueTimeOfATimerRunsOnceAmongTheHosts) {
  const std::string url = store_url("postgres");
  ASSERT_FALSE(url.empty());
  TwoHosts hosts(url, relay_stage("tick", "{timer: {schedule: \"* * * * * *\"}}", "{queue: ticks}"));
  ASSERT_TRUE(hosts.a->started()) << hosts.a->errors();
  ASSERT_TRUE(hosts.b->started()) << hosts.b->errors();
  Admin admin{hosts.b->admin_port(), hosts.b->admin_token()};
  ASSERT_TRUE(admin.wait([&] { return admin.peek("ticks").size() >= 4; }, 15000)) << hosts.a->output();
  EXPECT_EQ(hosts.a->signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(hosts.b->signal_and_wait(SIGTERM), 0);
  ManualClock clock;
  auto store = open_store(url, "", clock);
  ASSERT_TRUE(store.ok()) << store.error().message;
  auto all = (*store)->peek("ticks", 1000);
  ASSERT_TRUE(all.ok()) << all.error().message;
  std::multiset<std::string> times;
  for (const auto& m : *all) {
    const std::string payload = m.payload.substr(0, m.payload.rfind('|'));
    times.insert(std::string(parse_object(payload)["scheduled_time"].as_string()));
  }
  ASSERT_GE(times.size(), 4u);
  for (const auto& t : times) EXPECT_EQ(times.count(t), 1u) << "due time " << t << " ran on both hosts";
}

// Every host writes a record of itself to the store: each sees the others (GET /admin/cluster,
// nimbus status), one running another manifest is said in the log and the status, and a host
// killed with SIGKILL drops out by itself when its record's time to live runs out.
TEST(MultiHost, TheHostsKnowEachOtherAndADifferentManifestIsSaid) {
  const std::string url = store_url("postgres");
  ASSERT_FALSE(url.empty());
  const std::string text = "name: shared\nstore: \"" + url + "\"\nfunctions:\n" + relay_stage("stage1", "{queue: {name: in}}", "{queue: out}");
  TempDir a_dir, b_dir;
  a_dir.write("nimbus.yaml", text);
  b_dir.write("nimbus.yaml", text + relay_stage("stage2", "{queue: {name: out}}", "{queue: done}"));
  Host a(a_dir.path()), b(b_dir.path());
  ASSERT_TRUE(a.started() && b.started()) << a.errors() << b.errors();
  Admin admin{a.admin_port(), a.admin_token()};
  auto hosts = [&] {
    json::object o = parse_object(admin.call("GET", "/admin/cluster").body);
    return o.contains("hosts") ? o["hosts"].as_array() : json::array{};
  };
  ASSERT_TRUE(admin.wait([&] { return hosts().size() == 2; })) << admin.call("GET", "/admin/cluster").body;
  int selves = 0, differing = 0;
  for (const auto& h : hosts()) {
    selves += h.as_object().at("self").as_bool() ? 1 : 0;
    differing += h.as_object().at("same_manifest").as_bool() ? 0 : 1;
    EXPECT_FALSE(std::string(h.as_object().at("http").as_string()).empty());
  }
  EXPECT_EQ(selves, 1);
  EXPECT_EQ(differing, 1);
  EXPECT_TRUE(admin.wait([&] { return a.output().find("another host on this store runs a different manifest") != std::string::npos; }))
      << a.output();
  CommandResult status = run_nimbus({"status"}, a_dir.path());
  EXPECT_NE(status.out.find("hosts on this store (2)"), std::string::npos) << status.out << status.err;
  EXPECT_NE(status.out.find("MANIFEST DIFFERS"), std::string::npos) << status.out;
  EXPECT_NE(admin.call("GET", "/admin/status").body.find("\"manifest_differs_on\":[{"), std::string::npos);

  EXPECT_EQ(b.signal_and_wait(SIGKILL), 128 + SIGKILL);
  EXPECT_TRUE(admin.wait([&] { return hosts().size() == 1; }, 15000)) << "the dead host never dropped out";
  EXPECT_EQ(a.signal_and_wait(SIGTERM), 0);
}

// Rate limits and API key quotas count one bucket for every host of a shared store: what one
// host let through, the other refuses, within one merge (gateway.rate_limits.sync). Without
// the sharing, the second host would let its own whole burst through.
TEST(MultiHost, RateLimitsAndKeyQuotasAreOneBucketForAllTheHosts) {
  for (const std::string backend : {"postgres", "redis"}) {
    SCOPED_TRACE(backend);
    const std::string url = store_url(backend);
    ASSERT_FALSE(url.empty());
    constexpr int kBurst = 30;
    const std::string text = "name: shared\nstore: \"" + url + "\"\ngateway:\n  routes:\n" +
                             "    - {path: /limited, function: echo, rate_limit: {rate: 1/h, burst: " + std::to_string(kBurst) +
                             ", per: route}}\n" + "    - {path: /keyed, function: echo, auth: api_key}\n" +
                             "functions:\n  echo:\n    runtime: native\n    handler: " + fn("echo") + "\n    triggers: []\n";
    TempDir a_dir, b_dir;
    a_dir.write("nimbus.yaml", text);
    b_dir.write("nimbus.yaml", text);
    Host a(a_dir.path()), b(b_dir.path());
    ASSERT_TRUE(a.started() && b.started()) << a.errors() << b.errors();
    Admin admin_a{a.admin_port(), a.admin_token()}, admin_b{b.admin_port(), b.admin_token()};
    auto merged = [](Admin& admin) {
      json::object o = parse_object(admin.call("GET", "/admin/rate-limits").body);
      EXPECT_TRUE(o["shared"].as_bool());
      return o.contains("merged") ? o["merged"].as_int64() : int64_t{0};
    };
    // Host a lets the whole burst through and merges it.
    for (int i = 0; i < kBurst; ++i) ASSERT_EQ(request(a.http_port(), "GET", "/limited").status, 200) << i;
    EXPECT_EQ(request(a.http_port(), "GET", "/limited").status, 429);
    ASSERT_TRUE(admin_a.wait([&] { return merged(admin_a) >= 1; })) << admin_a.call("GET", "/admin/rate-limits").body;
    ASSERT_TRUE(admin_a.wait([&] { return admin_a.call("GET", "/admin/rate-limits").body.find("\"failures\":0") != std::string::npos; }));
    // Host b has never seen the route's bucket: it lets one through on trust, learns the
    // bucket at once, and refuses from then on.
    int through_b = 0;
    Response last;
    for (int i = 0; i < kBurst + 5 && (last = request(b.http_port(), "GET", "/limited")).status == 200; ++i) {
      ++through_b;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // pacing: a client, not a flood
    }
    EXPECT_EQ(last.status, 429) << last.body;
    EXPECT_EQ(last.header("ratelimit-remaining"), "0");
    // Shared: one on trust, and what came before the merge landed (a few, more on a slow or
    // sanitized build); each host counting its own would let the whole burst through.
    EXPECT_LE(through_b, kBurst / 2) << "host b let through " << through_b << " of a bucket host a had emptied";
    EXPECT_GE(merged(admin_b), 1);

    // A key's quota (20 an hour) is spent on host a, then refused on host b: one on trust and
    // the few that came before the merge landed; counting its own, b would let all 20 through.
    constexpr int kQuota = 20;
    CommandResult made = run_nimbus({"keys", "--dir", a_dir.path().string(), "create", "trial", "--quota",
                                     std::to_string(kQuota) + "/h"}, a_dir.path());
    ASSERT_EQ(made.exit_code, 0) << made.err;
    const std::string key = made.out.substr(0, made.out.find('\n'));
    Response r;
    ASSERT_TRUE(eventually([&] { return (r = request(a.http_port(), "GET", "/keyed", {{"X-Api-Key", key}})).status != 401; }, 5000));
    EXPECT_EQ(r.status, 200);
    for (int i = 1; i < kQuota; ++i) EXPECT_EQ(request(a.http_port(), "GET", "/keyed", {{"X-Api-Key", key}}).status, 200) << i;
    EXPECT_EQ(request(a.http_port(), "GET", "/keyed", {{"X-Api-Key", key}}).status, 429);
    const int64_t before = merged(admin_a);
    ASSERT_TRUE(admin_a.wait([&] { return merged(admin_a) > before; }));
    ASSERT_TRUE(eventually([&] { return (r = request(b.http_port(), "GET", "/keyed", {{"X-Api-Key", key}})).status != 401; }, 5000));
    int keyed_through_b = r.status == 200 ? 1 : 0;
    for (int i = 0; i < kQuota + 5 && r.status == 200; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // pacing: a client, not a flood
      if ((r = request(b.http_port(), "GET", "/keyed", {{"X-Api-Key", key}})).status == 200) ++keyed_through_b;
    }
    EXPECT_EQ(r.status, 429) << r.body;
    EXPECT_LE(keyed_through_b, kQuota / 2) << "host b let through " << keyed_through_b << " of a spent quota of " << kQuota;
    EXPECT_EQ(a.signal_and_wait(SIGTERM), 0);
    EXPECT_EQ(b.signal_and_wait(SIGTERM), 0);
  }
}

// Stream partitions are dealt among the hosts by leases: one host holds all four; a second
// that joins gets half; one killed with SIGKILL loses its leases when they expire and the
// other takes them; one that stops gives them back at once. Through it all every record is
// processed once (the outputs cover each record exactly once).
TEST(MultiHost, StreamPartitionsAreDealtByLeasesAndMoveWhenAHostJoinsDiesOrLeaves) {
  const std::string url = store_url("postgres");
  ASSERT_FALSE(url.empty());
  const std::string text = "name: shared\nstore: \"" + url + "\"\nstreams:\n  events: {partitions: 4}\nfunctions:\n"
                           "  sink:\n    runtime: native\n    handler: " + test_function("relay").string() + "\n"
                           "    triggers: [{stream: {name: events, batch_size: 16, max_wait: 200ms}}]\n"
                           "    outputs: {next: {queue: out}}\n";
  TempDir a_dir, b_dir, c_dir;
  for (auto* d : {&a_dir, &b_dir, &c_dir}) d->write("nimbus.yaml", text);
  auto a = std::make_unique<Host>(a_dir.path());
  ASSERT_TRUE(a->started()) << a->errors();
  Admin admin{a->admin_port(), a->admin_token()};
  // Each live host's id and how many partitions it holds, as /admin/cluster says.
  auto held = [](Admin& on) {
    std::map<std::string, std::size_t> out;
    json::object o = parse_object(on.call("GET", "/admin/cluster").body);
    if (!o.contains("hosts")) return out;
    for (const auto& h : o["hosts"].as_array()) {
      out[std::string(h.as_object().at("id").as_string())] = h.as_object().at("partitions").as_array().size();
    }
    return out;
  };
  auto dealt = [&](Admin& on, std::vector<std::size_t> want) {
    auto h = held(on);
    std::vector<std::size_t> got;
    for (auto& [id, n] : h) got.push_back(n);
    std::sort(got.begin(), got.end());
    return got == want;
  };
  ASSERT_TRUE(admin.wait([&] { return dealt(admin, {4}); }, 15000)) << admin.call("GET", "/admin/cluster").body;

  int appended = 0;
  auto append = [&](int n) {
    ManualClock clock;
    auto store = open_store(url, "", clock);
    ASSERT_TRUE(store.ok()) << store.error().message;
    Batch b;
    for (int i = 0; i < n; ++i, ++appended) {
      Batch::Append rec;
      rec.stream = "events";
      rec.partitions = 4;
      rec.key = "k" + std::to_string(appended % 61);
      rec.record.payload = std::to_string(appended);
      b.appends.push_back(std::move(rec));
    }
    ASSERT_TRUE((*store)->commit_sync(std::move(b)).ok());
  };
  // Every record appended so far is covered by exactly one output.
  auto all_once = [&](Admin& on) {
    std::multiset<std::string> values;
    for (auto& m : on.peek("out")) {
      std::string payload(m["payload"].as_string());
      const json::value batch = json::parse(payload.substr(0, payload.rfind('|')));
      for (const auto& rec : batch.as_array()) values.insert(json::serialize(rec.as_object().at("data")));
    }
    if (values.size() < static_cast<std::size_t>(appended)) return false;
    for (int i = 0; i < appended; ++i) EXPECT_EQ(values.count(std::to_string(i)), 1u) << "record " << i;
    EXPECT_EQ(values.size(), static_cast<std::size_t>(appended)) << "a record was processed twice";
    return true;
  };

  auto b = std::make_unique<Host>(b_dir.path());
  ASSERT_TRUE(b->started()) << b->errors();
  ASSERT_TRUE(admin.wait([&] { return dealt(admin, {2, 2}); }, 15000)) << admin.call("GET", "/admin/cluster").body;
  CommandResult status = run_nimbus({"status"}, a_dir.path());
  EXPECT_NE(status.out.find("stream partitions 2 (events/"), std::string::npos) << status.out << status.err;
  append(2000);
  ASSERT_TRUE(admin.wait([&] { return all_once(admin); }, 30000));
  const int64_t on_b = invocations_succeeded(b->admin_port(), "sink");
  EXPECT_GT(on_b, 0) << "host b read none of its partitions";

  // Killed: its leases expire (5 s) and its registry record too (6 s); then a takes them.
  EXPECT_EQ(b->signal_and_wait(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(admin.wait([&] { return dealt(admin, {4}); }, 20000)) << admin.call("GET", "/admin/cluster").body;
  append(1000);
  ASSERT_TRUE(admin.wait([&] { return all_once(admin); }, 30000));

  // A third joins, then the first stops: it gives its leases back at once.
  auto c = std::make_unique<Host>(c_dir.path());
  ASSERT_TRUE(c->started()) << c->errors();
  Admin admin_c{c->admin_port(), c->admin_token()};
  ASSERT_TRUE(admin_c.wait([&] { return dealt(admin_c, {2, 2}); }, 15000)) << admin_c.call("GET", "/admin/cluster").body;
  EXPECT_EQ(a->signal_and_wait(SIGTERM), 0);
  const auto stopped = std::chrono::steady_clock::now();
  ASSERT_TRUE(admin_c.wait([&] { return dealt(admin_c, {4}); }, 15000)) << admin_c.call("GET", "/admin/cluster").body;
  EXPECT_LT(std::chrono::steady_clock::now() - stopped, std::chrono::seconds(4))
      << "the leases of a host that stopped were not given back: they had to expire";
  append(1000);
  ASSERT_TRUE(admin_c.wait([&] { return all_once(admin_c); }, 30000));
  EXPECT_EQ(c->signal_and_wait(SIGTERM), 0);
}

// A file-drop folder watched by two hosts on one store: each file runs once (the first to
// rename it into its own .processing/<host id>/ takes it); a host killed with files in hand
// leaves them in its folder, and the other hands them back and runs them once the killed
// host is out of the registry and its folder has been still for 10 s.
TEST(MultiHost, AFileDropFolderSharedByTwoHostsRunsEachFileOnceAndTakesBackAKilledHostsFiles) {
  const std::string url = store_url("postgres");
  ASSERT_FALSE(url.empty());
  TempDir inbox, a_dir, b_dir;
  const std::string text = "name: shared\nstore: \"" + url + "\"\nfunctions:\n  sink:\n    runtime: native\n    handler: " +
                           test_function("sleepy").string() + "\n    concurrency: 2\n    triggers: [{file: {path: \"" +
                           inbox.path().string() + "\", pattern: \"*.txt\"}}]\n";
  a_dir.write("nimbus.yaml", text);
  b_dir.write("nimbus.yaml", text);
  auto a = std::make_unique<Host>(a_dir.path());
  Host b(b_dir.path());
  ASSERT_TRUE(a->started() && b.started()) << a->errors() << b.errors();
  auto drop = [&](const std::string& name, const std::string& content) {
    inbox.write(name + ".tmp", content);
    fs::rename(inbox.path() / (name + ".tmp"), inbox.path() / name);
  };
  auto processed = [&] {
    std::size_t n = 0;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(inbox.path() / "processed", ec)) n += e.is_regular_file() ? 1 : 0;
    return n;
  };
  for (int i = 0; i < 20; ++i) drop("f" + std::to_string(i) + ".txt", "50");
  Admin admin{b.admin_port(), b.admin_token()};
  ASSERT_TRUE(admin.wait([&] { return processed() == 20; }, 30000)) << a->output() << b.output();
  const int64_t on_a = invocations_succeeded(a->admin_port(), "sink");
  const int64_t on_b = invocations_succeeded(b.admin_port(), "sink");
  EXPECT_EQ(on_a + on_b, 20) << "a file ran on both hosts (a " << on_a << ", b " << on_b << ")";

  // Host a's id, and its folder under .processing/.
  Admin admin_a{a->admin_port(), a->admin_token()};
  std::string a_id;
  json::object cluster = parse_object(admin_a.call("GET", "/admin/cluster").body);  // held: a range-for over a temporary's member dangles
  for (const auto& h : cluster["hosts"].as_array()) {
    if (h.as_object().at("self").as_bool()) a_id = std::string(h.as_object().at("id").as_string());
  }
  ASSERT_FALSE(a_id.empty());
  const fs::path a_folder = inbox.path() / ".processing" / a_id;
  for (int i = 0; i < 6; ++i) drop("slow" + std::to_string(i) + ".txt", "3000");
  ASSERT_TRUE(admin.wait([&] {
    std::error_code ec;
    return fs::exists(a_folder, ec) && !fs::is_empty(a_folder, ec);
  }, 10000)) << "host a took none of the slow files";
  EXPECT_EQ(a->signal_and_wait(SIGKILL), 128 + SIGKILL);
  a.reset();
  ASSERT_TRUE(admin.wait([&] { return processed() == 26; }, 60000))
      << "the killed host's files were not taken back\n" << b.output();
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(fs::exists(inbox.path() / "processed" / ("slow" + std::to_string(i) + ".txt")));
  EXPECT_FALSE(fs::exists(a_folder)) << "the killed host's folder was left behind";
  EXPECT_NE(b.output().find("taking again a file an earlier run left in .processing/"), std::string::npos);
  EXPECT_EQ(b.signal_and_wait(SIGTERM), 0);
}

// The database stops under a running host (its own server here: the run's shared one stays
// up): /readyz answers 503 naming the store, the log says so once, `nimbus status` shows it,
// work that needs the store is refused rather than accepted and lost; when the database is
// back the host says so and carries on by itself, without a restart.
TEST(PostgresHost, ADatabaseThatStopsIsReportedAndTheHostResumesByItself) {
  TempDir pg_dir;
  PostgresServer server(pg_dir.path() / "pg");
  ASSERT_TRUE(server.start()) << server.error();
  TempDir dir;
  dir.write("nimbus.yaml", "name: resume\nstore: \"" + server.url("postgres") + "\"\nfunctions:\n" +
                               relay_stage("stage1", "{queue: {name: in}}", "{queue: out}"));
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_EQ(admin.call("POST", "/admin/queues/in/messages", "one").status, 201);
  ASSERT_TRUE(admin.wait([&] { return admin.peek("out").size() == 1; })) << host.output();
  EXPECT_EQ(request(host.http_port(), "GET", "/readyz").status, 200);

  server.stop();
  Response ready;
  ASSERT_TRUE(admin.wait([&] {
    ready = request(host.http_port(), "GET", "/readyz");
    return ready.status == 503;
  })) << ready.body;
  EXPECT_NE(ready.body.find("\"status\":\"store_unavailable\""), std::string::npos) << ready.body;
  EXPECT_NE(ready.body.find("PostgreSQL"), std::string::npos) << ready.body;
  EXPECT_EQ(request(host.admin_port(), "GET", "/readyz").status, 503);
  Response refused = admin.call("POST", "/admin/queues/in/messages", "two");
  EXPECT_NE(refused.status, 201) << "accepted with no store to keep it";
  CommandResult status = run_nimbus({"status"}, dir.path());
  EXPECT_NE(status.out.find("UNAVAILABLE"), std::string::npos) << status.out << status.err;
  EXPECT_TRUE(admin.wait([&] { return host.output().find("store unavailable") != std::string::npos; })) << host.output();

  ASSERT_TRUE(server.start()) << server.error();
  ASSERT_TRUE(admin.wait([&] { return request(host.http_port(), "GET", "/readyz").status == 200; }, 20000))
      << host.output();
  // The line follows the change of state that /readyz reads: wait for it too.
  EXPECT_TRUE(admin.wait([&] { return host.output().find("store available again") != std::string::npos; }))
      << host.output();
  ASSERT_EQ(admin.call("POST", "/admin/queues/in/messages", "three").status, 201);
  ASSERT_TRUE(admin.wait([&] { return admin.peek("out").size() == 2; }, 20000)) << host.output();
  std::set<std::string> out;
  for (auto& m : admin.peek("out")) out.insert(std::string(m["payload"].as_string()));
  EXPECT_EQ(out, (std::set<std::string>{"one|stage1", "three|stage1"}));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
  server.stop();
}

}  // namespace
}  // namespace nimbus::testing
