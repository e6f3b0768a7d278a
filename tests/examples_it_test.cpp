// End to end: every example app, run from a copy.
#include <spawn.h>
#include <sys/wait.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include <openssl/evp.h>

#include "free_port.h"
#include "it_common.h"
#include "jwt_signer.h"
#include "mosquitto_broker.h"

namespace nimbus::testing {
namespace {

// Each example runs from a copy (the host writes .nimbus/ into its app folder).
std::unique_ptr<TempDir> copy_example(const std::string& name) {
  auto dir = std::make_unique<TempDir>();
  std::filesystem::copy(std::filesystem::path(NIMBUS_SOURCE_DIR) / "examples" / name, dir->path(),
                        std::filesystem::copy_options::recursive);
  std::filesystem::remove_all(dir->path() / ".nimbus");
  std::filesystem::remove_all(dir->path() / "showcase" / ".nimbus");
  return dir;
}

// A copy of `from` (its .nimbus/ left out) in `to`, with `over` (when given) copied on top.
void copy_app(const std::filesystem::path& from, const std::filesystem::path& to,
              const std::filesystem::path& over = {}) {
  namespace fs = std::filesystem;
  for (const auto& e : fs::directory_iterator(from)) {
    if (e.path().filename() == ".nimbus") continue;
    fs::copy(e.path(), to / e.path().filename(), fs::copy_options::recursive | fs::copy_options::overwrite_existing);
  }
  if (!over.empty()) fs::copy(over, to, fs::copy_options::recursive | fs::copy_options::overwrite_existing);
}

TEST(Examples, MigrationsRunBeforeTrafficAndAFailedOneAbortsTheDeploy) {
  auto dir = copy_example("migrations");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  const int port = host.http_port();
  EXPECT_TRUE(host.wait_for_output("a migration ran"));
  Response added = request(port, "POST", "/notes", {}, R"({"text": "first"})");
  ASSERT_EQ(added.status, 201) << added.body;
  EXPECT_EQ(request(port, "GET", "/notes").body, R"([{"id": 1, "text": "first"}])");

  // Version 2: its migration adds a column, its code uses it.
  TempDir two;
  copy_app(dir->path(), two.path(), dir->path() / "next");
  CommandResult deployed = run_nimbus({"deploy", two.path().string(), "--to", dir->path().string(), "-m", "tags"}, dir->path());
  ASSERT_EQ(deployed.exit_code, 0) << deployed.err << host.output();
  EXPECT_NE(deployed.out.find("deployed v2"), std::string::npos) << deployed.out;
  EXPECT_EQ(request(port, "GET", "/notes").body, R"([{"id": 1, "text": "first", "tag": "general"}])");
  ASSERT_EQ(request(port, "POST", "/notes", {}, R"({"text": "second", "tag": "ops"})").status, 201);

  // Version 3's migration fails: the deploy is aborted with the database's error, nothing of it
  // is applied, and version 2 serves on.
  TempDir three;
  copy_app(two.path(), three.path());
  three.write("migrations/003_broken.sql", "ALTER TABLE notes ADD COLUMN color TEXT;\nALTER TABLE nope ADD COLUMN x TEXT;\n");
  CommandResult refused = run_nimbus({"deploy", three.path().string(), "--to", dir->path().string()}, dir->path());
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("migration 'migrate' failed"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("no such table: nope"), std::string::npos) << refused.err;
  EXPECT_EQ(request(port, "GET", "/notes").body,
            R"([{"id": 1, "text": "first", "tag": "general"}, {"id": 2, "text": "second", "tag": "ops"}])");
  CommandResult versions = run_nimbus({"versions"}, dir->path());
  EXPECT_EQ(versions.out.find("v3"), std::string::npos) << versions.out;
  // The failed migration's first statement was rolled back with it: version 2 deployed again
  // as a new version with a good 003 adds the column once.
  three.write("migrations/003_broken.sql", "ALTER TABLE notes ADD COLUMN color TEXT;\n");
  ASSERT_EQ(run_nimbus({"deploy", three.path().string(), "--to", dir->path().string()}, dir->path()).exit_code, 0);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Examples, BackgroundJobs) {
  auto dir = copy_example("background-jobs");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  Response r = request(host.http_port(), "POST", "/reports", {}, "{\"title\": \"sales\", \"rows\": 500}");
  ASSERT_EQ(r.status, 202) << r.body;
  std::string id = std::string(parse_object(r.body)["id"].as_string());
  json::object job;
  ASSERT_TRUE(admin.wait([&] {
    job = parse_object(request(host.http_port(), "GET", r.header("location")).body);
    return job["status"].as_string() == "succeeded";
  })) << json::serialize(job) << host.output();
  auto report = parse_object(std::string(job["result"].as_object()["body"].as_string()));
  EXPECT_EQ(report["rows"].as_int64(), 500);
  EXPECT_EQ(report["checksum"].as_string().size(), 16u);
  Response note;
  ASSERT_TRUE(admin.wait([&] {
    note = request(host.http_port(), "GET", "/notifications/" + id);
    return note.status == 200;
  })) << note.body << host.output();
  EXPECT_EQ(parse_object(note.body)["title"].as_string(), "sales");
}

TEST(Examples, AsyncMessaging) {
  auto dir = copy_example("async-messaging");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_EQ(request(host.http_port(), "POST", "/orders", {},
                    "{\"id\": \"v1\", \"vip\": true, \"total\": 120, \"email\": \"a@example.com\", \"items\": [\"x\"]}")
                .status,
            201);
  ASSERT_EQ(request(host.http_port(), "POST", "/orders", {}, "{\"id\": \"s1\", \"total\": 10}").status, 201);
  for (const char* path : {"/seen/email-log/v1", "/seen/reservations/v1", "/seen/loyalty-points/v1",
                           "/seen/email-log/s1", "/seen/reservations/s1"}) {
    ASSERT_TRUE(admin.wait([&] { return request(host.http_port(), "GET", path).status == 200; }))
        << path << host.output();
  }
  EXPECT_EQ(parse_object(request(host.http_port(), "GET", "/seen/loyalty-points/v1").body)["points"].as_int64(), 120);
  EXPECT_EQ(parse_object(request(host.http_port(), "GET", "/seen/reservations/v1").body)["reservedBy"].as_string(),
            "inventory");
  // The filtered subscriber never saw the standard order.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(request(host.http_port(), "GET", "/seen/loyalty-points/s1").status, 404);
}

TEST(Examples, Cqrs) {
  auto dir = copy_example("cqrs");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  Response put = request(host.http_port(), "PUT", "/contacts/c1", {},
                         "{\"name\": \"Ada\", \"email\": \"ada@example.com\", \"street\": \"1 Loop Rd\", "
                         "\"city\": \"Leeds\", \"zip\": \"LS1\"}");
  ASSERT_EQ(put.status, 202) << put.body;
  EXPECT_EQ(parse_object(put.body)["events"].as_int64(), 2);
  json::object model;
  ASSERT_TRUE(admin.wait([&] {
    Response r = request(host.http_port(), "GET", "/contacts/c1");
    if (r.status != 200) return false;
    model = parse_object(r.body);
    return model["version"].as_int64() == 2;
  })) << host.output();
  EXPECT_EQ(model["name"].as_string(), "Ada");
  EXPECT_EQ(model["address"].as_string(), "1 Loop Rd, LS1, Leeds");
  // A second address change updates the flattened model in place.
  ASSERT_EQ(request(host.http_port(), "PUT", "/contacts/c1", {}, "{\"street\": \"2 Ring St\", \"city\": \"York\", \"zip\": \"Y1\"}").status, 202);
  ASSERT_TRUE(admin.wait([&] {
    model = parse_object(request(host.http_port(), "GET", "/contacts/c1").body);
    return model["version"].as_int64() == 3;
  }));
  EXPECT_EQ(model["city"].as_string(), "York");
  EXPECT_EQ(model["name"].as_string(), "Ada");
  EXPECT_EQ(request(host.http_port(), "GET", "/contacts/nobody").status, 404);
}

TEST(Examples, DataPipeline) {
  auto dir = copy_example("data-pipeline");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  std::string lines;
  // ada: 2 x coffee (15.8) + 4 x apple (2.0); bob: 1 x pear (1.25); then three bad lines.
  lines += R"({"id": 1, "customer": "ada", "sku": "coffee", "quantity": 2, "country": "de"})" "\n";
  lines += R"({"id": 2, "customer": "bob", "sku": "pear", "quantity": 1, "country": "us"})" "\n";
  lines += R"({"id": 3, "customer": "ada", "sku": "apple", "quantity": 4, "country": "de"})" "\n";
  lines += R"({"id": 4, "customer": "cy", "sku": "caviar", "quantity": 1, "country": "fr"})" "\n";
  lines += R"({"id": 5, "customer": "cy", "sku": "pear", "quantity": 0, "country": "fr"})" "\n";
  lines += "not json at all\n";
  Response r = request(host.http_port(), "POST", "/orders", {}, lines);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse_object(r.body)["accepted"].as_int64(), 6);
  auto totals = [&](const std::string& c) { return request(host.http_port(), "GET", "/customers/" + c); };
  ASSERT_TRUE(admin.wait([&] {
    Response a = totals("ada");
    return a.status == 200 && parse_object(a.body)["orders"].as_int64() == 2 && totals("bob").status == 200;
  })) << host.output();
  json::object ada = parse_object(totals("ada").body);
  EXPECT_DOUBLE_EQ(ada["spent"].to_number<double>(), 17.8);
  EXPECT_EQ(ada["region"].as_string(), "eu");
  EXPECT_DOUBLE_EQ(ada["by_category"].as_object()["pantry"].to_number<double>(), 15.8);
  EXPECT_DOUBLE_EQ(parse_object(totals("bob").body)["spent"].to_number<double>(), 1.25);
  EXPECT_EQ(totals("cy").status, 404);
  ASSERT_TRUE(admin.wait([&] { return admin.peek("rejected-orders").size() == 3; }));
  std::set<std::string> reasons;
  for (auto& m : admin.peek("rejected-orders")) {
    reasons.insert(std::string(parse_object(std::string(m["payload"].as_string()))["reason"].as_string()));
  }
  EXPECT_TRUE(reasons.count("unknown sku caviar")) << *reasons.begin();
  EXPECT_TRUE(reasons.count("quantity must be a positive whole number"));
  EXPECT_TRUE(reasons.count("not JSON: not json at all"));
  // The stages' groups are all caught up.
  CommandResult groups = run_nimbus({"stream", "groups", "orders-enriched"}, dir->path());
  EXPECT_NE(groups.out.find("store"), std::string::npos) << groups.out;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// `make run` serves the showcase: it starts (building its C++ functions), answers, and its
// stream stages carry an order through to the customer's totals.
TEST(Examples, ShowcaseStartsAndCarriesAnOrderThroughItsStreams) {
  auto dir = copy_example("");  // the showcase names sibling examples' files: copy them all
  Host host(dir->path() / "showcase");
  ASSERT_TRUE(host.started()) << host.errors();
  EXPECT_EQ(request(host.http_port(), "GET", "/hello").body, "Hello, World!");
  Response r = request(host.http_port(), "POST", "/orders", {},
                       R"({"id": 7, "customer": "ada", "sku": "pear", "quantity": 2, "country": "fr"})" "\n");
  ASSERT_EQ(r.status, 200) << r.body;
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] { return request(host.http_port(), "GET", "/customers/ada").status == 200; }, 20000))
      << host.output();
  EXPECT_DOUBLE_EQ(parse_object(request(host.http_port(), "GET", "/customers/ada").body)["spent"].to_number<double>(), 2.5);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Examples, FileTransform) {
  auto dir = copy_example("file-transform");
  std::filesystem::create_directories(dir->path() / "inbox");
  // One file is there before the host starts; the rest are dropped while it runs.
  dir->write("inbox/early.csv", "name,qty\nbolts,10\nnuts,5\n");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  dir->write("inbox/.sales.tmp", "region,units,revenue\nnorth,3,29.7\nsouth,5,49.5\n");
  std::filesystem::rename(dir->path() / "inbox/.sales.tmp", dir->path() / "inbox/sales.csv");
  dir->write("inbox/bad.csv", "a,b\n1,2\n3\n");
  dir->write("inbox/notes.txt", "not a csv: left alone");
  auto exists = [&](const std::string& p) { return std::filesystem::exists(dir->path() / p); };
  Admin admin{host.admin_port(), host.admin_token()};
  ASSERT_TRUE(admin.wait([&] {
    return exists("inbox/processed/sales.csv") && exists("inbox/processed/early.csv") &&
           exists("inbox/failed/bad.csv.reason.json");
  }, 20000)) << host.output();
  json::value rows = json::parse(slurp(dir->path() / "outbox/sales.json"));
  ASSERT_EQ(rows.as_array().size(), 2u);
  EXPECT_EQ(rows.as_array()[1].as_object().at("region").as_string(), "south");
  Response s = request(host.http_port(), "GET", "/summaries/sales.csv");
  ASSERT_EQ(s.status, 200) << s.body;
  json::object summary = parse_object(s.body);
  EXPECT_EQ(summary["rows"].as_int64(), 2);
  EXPECT_DOUBLE_EQ(summary["sums"].as_object()["revenue"].to_number<double>(), 79.2);
  EXPECT_FALSE(summary["sums"].as_object().contains("region"));
  EXPECT_EQ(parse_object(request(host.http_port(), "GET", "/summaries/early.csv").body)["rows"].as_int64(), 2);
  json::object reason = parse_object(slurp(dir->path() / "inbox/failed/bad.csv.reason.json"));
  EXPECT_EQ(reason["error_type"].as_string(), "ValueError");
  EXPECT_NE(reason["message"].as_string().find("line 3 has 1 fields, the header has 2"), std::string::npos)
      << reason["message"];
  EXPECT_EQ(reason["attempts"].as_int64(), 2);
  EXPECT_FALSE(exists("outbox/bad.json"));
  EXPECT_TRUE(exists("inbox/notes.txt"));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

TEST(Examples, Pipeline) {
  auto dir = copy_example("pipeline");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  Response r = request(host.http_port(), "POST", "/ingest", {}, "apple,3,0.5\npear,2,1.25\nnot a record\n");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse_object(r.body)["accepted"].as_int64(), 3);
  ASSERT_TRUE(admin.wait([&] { return admin.peek("enriched-records").size() == 2 && admin.peek("raw-records.dead").size() == 1; }))
      << host.output();
  std::map<std::string, double> totals;
  for (auto& m : admin.peek("enriched-records")) {
    auto rec = parse_object(std::string(m["payload"].as_string()));
    totals[std::string(rec["sku"].as_string())] = rec["total"].to_number<double>();
  }
  EXPECT_EQ(totals, (std::map<std::string, double>{{"apple", 1.5}, {"pear", 2.5}}));
  auto dead = admin.peek("raw-records.dead");
  EXPECT_EQ(dead[0]["payload"].as_string(), "not a record");
  EXPECT_EQ(dead[0]["deliveries"].as_int64(), 3);
  EXPECT_NE(dead[0]["error"].as_string().find("ValueError"), std::string::npos) << dead[0]["error"];
}

// A durable orchestration: a small order ships; a large one waits for approval (an external
// event) and then ships; a declined card and an approval that never comes are compensated.
TEST(Examples, OrderWorkflow) {
  auto dir = copy_example("order-workflow");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  auto start = [&](const std::string& id, const std::string& body) {
    Response r = request(host.http_port(), "POST", "/_nimbus/orchestrations/order?instance=" + id, {}, body);
    EXPECT_EQ(r.status, 202) << r.body;
  };
  auto status = [&](const std::string& id) {
    return parse_object(request(host.http_port(), "GET", "/_nimbus/orchestrations/order/instances/" + id).body);
  };
  auto finished = [&](const std::string& id) {
    json::object s;
    EXPECT_TRUE(admin.wait([&] {
      s = status(id);
      return s["runtimeStatus"].as_string() == "Completed";
    })) << json::serialize(s) << host.output();
    return s["output"].as_object();
  };
  start("small", R"({"id": "small", "amount": 20, "card": "ok"})");
  start("large", R"({"id": "large", "amount": 2500, "card": "ok"})");
  start("declined", R"({"id": "declined", "amount": 20, "card": "declined"})");
  start("ignored", R"({"id": "ignored", "amount": 5000, "card": "ok", "approval_timeout_ms": 300})");

  auto small = finished("small");
  EXPECT_EQ(small["status"].as_string(), "shipped");
  EXPECT_EQ(json::serialize(small["steps"]), R"(["reserved","charged receipt-small","shipped track-small"])");

  json::object waiting;
  ASSERT_TRUE(admin.wait([&] {
    waiting = status("large");
    return waiting["customStatus"].is_object() && waiting["customStatus"].as_object().contains("waiting_for");
  })) << json::serialize(waiting);
  Response approve = request(host.http_port(), "POST", "/_nimbus/orchestrations/order/instances/large/events/approval",
                             {}, R"({"approved": true, "by": "ann"})");
  EXPECT_EQ(approve.status, 202) << approve.body;
  auto large = finished("large");
  EXPECT_EQ(large["status"].as_string(), "shipped");
  EXPECT_EQ(large["steps"].as_array()[1].as_string(), "approved by ann");

  auto declined = finished("declined");
  EXPECT_EQ(declined["status"].as_string(), "cancelled");
  EXPECT_NE(std::string(declined["reason"].as_string()).find("card declined"), std::string::npos) << json::serialize(declined);
  EXPECT_EQ(json::serialize(declined["steps"]), R"(["reserved","released"])");

  auto ignored = finished("ignored");
  EXPECT_EQ(ignored["status"].as_string(), "cancelled");
  EXPECT_EQ(ignored["reason"].as_string(), "no approval in time");
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A monitor loop on a durable timer with continue-as-new: it checks until the job is done,
// and its history holds one iteration however many it ran (the generation counts them).
TEST(Examples, Monitor) {
  auto dir = copy_example("monitor");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  Response r = request(host.http_port(), "POST", "/_nimbus/orchestrations/watch?instance=w1", {},
                       R"({"job": "nightly", "every_ms": 50})");
  ASSERT_EQ(r.status, 202) << r.body;
  auto status = [&] {
    return parse_object(request(host.http_port(), "GET", "/_nimbus/orchestrations/watch/instances/w1").body);
  };
  json::object s;
  ASSERT_TRUE(admin.wait([&] {
    s = status();
    return s["generation"].as_int64() >= 4;
  })) << json::serialize(s);
  EXPECT_EQ(s["runtimeStatus"].as_string(), "Running");
  EXPECT_LE(s["historyEvents"].as_int64(), 8) << "continue-as-new keeps one iteration's history";
  ASSERT_EQ(request(host.http_port(), "POST", "/jobs/nightly/done").status, 200);
  ASSERT_TRUE(admin.wait([&] {
    s = status();
    return s["runtimeStatus"].as_string() == "Completed";
  })) << json::serialize(s);
  EXPECT_EQ(s["output"].as_object()["job"].as_string(), "nightly");
  EXPECT_GE(s["output"].as_object()["checks"].as_int64(), 5);
  EXPECT_EQ(s["output"].as_object()["checks"].as_int64(), s["generation"].as_int64() + 1);
  Response history = request(host.http_port(), "GET", "/_nimbus/orchestrations/watch/instances/w1?history=true");
  EXPECT_LE(parse_object(history.body)["history"].as_array().size(), 8u) << history.body;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// Durable entities: counters incremented by four clients at once while a rollup reads and
// resets them inside a critical section: what the rollup counted plus what the counters hold
// afterwards is every increment, once.
TEST(Examples, CounterEntity) {
  auto dir = copy_example("counter-entity");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  const int port = host.http_port();
  const std::vector<std::string> pages = {"home", "docs", "pricing"};
  std::vector<std::thread> clients;
  std::atomic<int> sent{0}, accepted{0};
  std::mutex mu;
  std::map<std::string, int64_t> per_page;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&, c] {
      for (int i = 0; i < 150; ++i) {
        const std::string& page = pages[(c + i) % pages.size()];
        Response r = request(port, "POST", "/_nimbus/entities/counter/" + page + "/add", {}, "1");
        ++sent;
        if (r.status != 202) continue;
        ++accepted;
        std::lock_guard lock(mu);
        ++per_page[page];
      }
    });
  }
  ASSERT_TRUE(admin.wait([&] { return sent.load() >= 200; }));
  Response r = request(port, "POST", "/_nimbus/orchestrations/rollup?instance=r1", {}, R"(["home", "docs", "pricing"])");
  ASSERT_EQ(r.status, 202) << r.body;
  for (auto& t : clients) t.join();
  EXPECT_EQ(accepted.load(), 600);
  json::object rolled;
  ASSERT_TRUE(admin.wait([&] {
    auto s = parse_object(request(port, "GET", "/_nimbus/orchestrations/rollup/instances/r1").body);
    if (!s.if_contains("runtimeStatus") || s["runtimeStatus"].as_string() != "Completed") return false;
    rolled = s["output"].as_object();
    return true;
  }, 30000));
  auto value = [&](const std::string& page) -> int64_t {
    Response got = request(port, "POST", "/_nimbus/entities/counter/" + page + "/get?call=true");
    auto o = parse_object(got.body);
    return o.if_contains("result") && o["result"].is_int64() ? o["result"].as_int64() : 0;
  };
  int64_t counted = 0;
  for (const auto& page : pages) {
    const int64_t before = rolled.if_contains(page) && rolled[page].is_int64() ? rolled[page].as_int64() : 0;
    counted += before;
    EXPECT_TRUE(admin.wait([&] { return before + value(page) == per_page[page]; }))
        << page << ": rolled up " << before << ", now " << value(page) << ", sent " << per_page[page];
  }
  EXPECT_GT(counted, 0) << "the rollup ran before any increment: it proved nothing";
  Response state = request(port, "GET", "/_nimbus/entities/counter/home");
  EXPECT_EQ(state.status, 200) << state.body;
  Response bad = request(port, "POST", "/_nimbus/entities/counter/home/multiply?call=true", {}, "2");
  EXPECT_EQ(bad.status, 500) << bad.body;
  EXPECT_NE(bad.body.find("has no operation 'multiply'"), std::string::npos) << bad.body;
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// Fan-out / fan-in: a JavaScript orchestrator scores 500 items in parallel (Python activity)
// and aggregates them.
TEST(Examples, FanOut) {
  auto dir = copy_example("fan-out");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  json::array items;
  int64_t total = 0;
  for (int i = 0; i < 500; ++i) {
    const std::string word = "item" + std::to_string(i);
    items.push_back(json::value(word));
    for (std::size_t k = 0; k < word.size(); ++k) total += static_cast<int64_t>(k + 1) * (word[k] % 32);
  }
  Response r = request(host.http_port(), "POST", "/_nimbus/orchestrations/batch?instance=b1", {},
                       json::serialize(json::object{{"items", items}}));
  ASSERT_EQ(r.status, 202) << r.body;
  json::object s;
  ASSERT_TRUE(admin.wait([&] {
    s = parse_object(request(host.http_port(), "GET", "/_nimbus/orchestrations/batch/instances/b1").body);
    return s["runtimeStatus"].as_string() == "Completed";
  }, 60000)) << json::serialize(s);
  auto out = s["output"].as_object();
  EXPECT_EQ(out["count"].as_int64(), 500);
  EXPECT_EQ(out["total"].as_int64(), total);
  EXPECT_EQ(s["customStatus"].as_object()["phase"].as_string(), "done");
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A long job behind 202 and a status URL: 202 with progress while it runs, 200 with the
// result once done.
TEST(Examples, AsyncHttpApi) {
  auto dir = copy_example("async-http-api");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  Admin admin{host.admin_port(), host.admin_token()};
  Response r = request(host.http_port(), "POST", "/_nimbus/orchestrations/report", {},
                       R"({"regions": ["north", "south"], "work_ms": 600})");
  ASSERT_EQ(r.status, 202) << r.body;
  const std::string location = r.header("location");
  ASSERT_EQ(location.rfind("http://", 0), 0u) << location;
  const std::string path = location.substr(location.find('/', 7));
  Response running = request(host.http_port(), "GET", path);
  EXPECT_EQ(running.status, 202) << running.body;
  EXPECT_FALSE(running.header("location").empty());
  Response done;
  ASSERT_TRUE(admin.wait([&] {
    done = request(host.http_port(), "GET", path);
    return done.status == 200;
  })) << done.body;
  auto s = parse_object(done.body);
  EXPECT_EQ(s["runtimeStatus"].as_string(), "Completed");
  EXPECT_EQ(s["output"].as_object()["total"].as_int64(), 1000);
  EXPECT_EQ(s["customStatus"].as_object()["progress"].as_string(), "done");
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// A web front end and its API on one host, in a real browser: headless Chromium (Debian's),
// driven through puppeteer-core by tests/browser/web_app.mjs, adds items through the page of
// examples/web-app, ticks one done, reloads, deletes the other and provokes the API's error.
// Then the API itself, over plain HTTP, must hold what the browser made. The screenshot is kept
// in BUILD_DIR/test-artifacts/web-app.png for a human to look at.
TEST(Examples, WebAppInHeadlessChromium) {
  const std::filesystem::path source(NIMBUS_SOURCE_DIR);
  const char* chromium_env = std::getenv("CHROMIUM");
  const std::filesystem::path chromium = chromium_env && *chromium_env ? chromium_env : "/usr/bin/chromium";
  ASSERT_TRUE(std::filesystem::exists(chromium))
      << "no Chromium at " << chromium << ": run scripts/setup.sh (it installs Debian's chromium)";
  ASSERT_TRUE(std::filesystem::exists(source / "tests/browser/node_modules/puppeteer-core"))
      << "puppeteer-core is not installed: run scripts/setup.sh (npm ci in tests/browser)";

  auto dir = copy_example("web-app");
  Host host(dir->path());
  ASSERT_TRUE(host.started()) << host.errors();
  TempDir out;
  const std::filesystem::path shot = out.path() / "web-app.png";
  BrowserLock one_browser;
  CommandResult run = run_shell("env -u NODE_EXTRA_CA_CERTS node " +
                                shell_quoted((source / "tests/browser/web_app.mjs").string()) + " http://127.0.0.1:" +
                                std::to_string(host.http_port()) + " " + shell_quoted(shot.string()) + " 2>" +
                                shell_quoted((out.path() / "driver.err").string()));
  run.err = out.read("driver.err");
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err
                              << (run.exit_code == 127 ? "no node: run scripts/setup.sh\n" : "") << host.output();

  // A real PNG, not an empty page: kept where a human can find it.
  const std::string png = out.read("web-app.png");
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_GT(png.size(), 10u * 1024) << "a screenshot this small shows next to nothing";
  const std::filesystem::path artifacts = std::filesystem::path(NIMBUS_BINARY).parent_path() / "test-artifacts";
  std::error_code ec;
  std::filesystem::create_directories(artifacts, ec);
  std::filesystem::copy_file(shot, artifacts / "web-app.png", std::filesystem::copy_options::overwrite_existing, ec);
  EXPECT_FALSE(ec) << "cannot keep the screenshot in " << artifacts << ": " << ec.message();

  // What the browser saw, as the driver's last line of JSON.
  const std::string last_line = run.out.substr(run.out.find_last_of('\n', run.out.size() - 2) + 1);
  json::object seen = parse_object(last_line);
  ASSERT_TRUE(seen.contains("created") && seen.contains("deleted")) << run.out;
  const json::object created = seen["created"].as_object();
  const std::string created_id(created.at("id").as_string());
  const std::string deleted_id(seen["deleted"].as_object().at("id").as_string());
  EXPECT_EQ(seen["error_shown"].as_object()["code"].as_string(), "invalid_title") << run.out;

  // The server's side: the list (the app started empty) holds exactly the item the browser
  // kept, done; the one it deleted is gone.
  Response list = request(host.http_port(), "GET", "/api/items");
  ASSERT_EQ(list.status, 200) << list.body;
  json::array items = parse_object(list.body)["items"].as_array();
  ASSERT_EQ(items.size(), 1u) << list.body;
  json::object item = items[0].as_object();
  EXPECT_EQ(item["id"].as_string(), created_id) << list.body;
  EXPECT_EQ(item["title"], created.at("title")) << list.body;
  EXPECT_EQ(item["done"], json::value(true)) << list.body;
  Response one = request(host.http_port(), "GET", "/api/items/" + created_id);
  EXPECT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(one.header("etag"), "\"" + std::string(item["etag"].as_string()) + "\"");
  EXPECT_EQ(request(host.http_port(), "GET", "/api/items/" + deleted_id).status, 404);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// The legacy app of examples/strangler, run as its own process on a free port.
class Monolith {
 public:
  explicit Monolith(const std::filesystem::path& dir) : port_(free_port()) {
    std::string script = (dir / "monolith.py").string();
    std::string env_port = "MONOLITH_PORT=" + std::to_string(port_);
    const char* argv[] = {"/usr/bin/python3", script.c_str(), nullptr};
    const char* envp[] = {env_port.c_str(), "PATH=/usr/bin:/bin", nullptr};
    if (::posix_spawn(&pid_, argv[0], nullptr, nullptr, const_cast<char**>(argv), const_cast<char**>(envp)) != 0) pid_ = -1;
    for (int i = 0; i < 500 && pid_ > 0; ++i) {
      int fd = connect_to(port_);
      if (fd >= 0) {
        ::close(fd);
        ready_ = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~Monolith() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  bool ready() const { return ready_; }
  int port() const { return port_; }
  std::vector<std::string> seen() const {
    std::vector<std::string> out;
    json::object o = parse_object(request(port_, "GET", "/_seen").body);
    for (const auto& s : o["seen"].as_array()) out.emplace_back(s.as_string());
    return out;
  }

 private:
  int port_;
  pid_t pid_ = -1;
  bool ready_ = false;
};

TEST(Examples, StranglerMovesPathsToFunctionsAndAThirdOneWithAReloadWithoutDroppingARequest) {
  auto dir = copy_example("strangler");
  Monolith monolith(dir->path());
  ASSERT_TRUE(monolith.ready());
  ::setenv("MONOLITH_PORT", std::to_string(monolith.port()).c_str(), 1);
  Host host(dir->path());
  ::unsetenv("MONOLITH_PORT");
  ASSERT_TRUE(host.started()) << host.errors();

  auto source = [](const Response& r) { return std::string(parse_object(r.body)["source"].as_string()); };
  Response r = request(host.http_port(), "GET", "/api/orders/17");
  ASSERT_EQ(r.status, 200) << r.body << host.output();
  EXPECT_EQ(source(r), "function");
  EXPECT_EQ(parse_object(r.body)["order"].as_string(), "17");
  r = request(host.http_port(), "POST", "/api/quotes", {{"Content-Type", "application/json"}},
              R"({"items":[{"sku":"a","qty":2,"price":5}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(source(r), "function");
  EXPECT_DOUBLE_EQ(parse_object(r.body)["total"].to_number<double>(), 10.8);
  // Not moved: the monolith, with the route's response header and the client's address.
  r = request(host.http_port(), "GET", "/api/inventory/sku-1");
  EXPECT_EQ(source(r), "monolith");
  EXPECT_EQ(r.header("x-served-by"), "monolith");
  EXPECT_EQ(parse_object(r.body)["forwarded_for"].as_string(), "127.0.0.1");
  r = request(host.http_port(), "POST", "/api/orders/17", {}, "legacy write");
  EXPECT_EQ(source(r), "monolith");
  EXPECT_EQ(parse_object(r.body)["body_bytes"].as_int64(), 12);
  EXPECT_EQ(source(request(host.http_port(), "GET", "/catalog?page=2")), "monolith");

  // The monolith saw exactly the rest.
  std::vector<std::string> expected = {"GET /api/inventory/sku-1", "POST /api/orders/17", "GET /catalog?page=2"};
  auto seen = monolith.seen();
  for (const auto& s : seen) EXPECT_NE(s.find("/api/quotes"), 0u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), std::set<std::string>(expected.begin(), expected.end()));

  // Move /api/inventory while a client keeps asking for it: every request is answered 200,
  // first by the monolith, then by the function; none fails across the swap.
  std::atomic<bool> stop{false};
  std::atomic<int> sent{0}, failed{0}, by_function{0};
  std::thread client([&] {
    while (!stop) {
      Response x = request(host.http_port(), "GET", "/api/inventory/sku-" + std::to_string(sent.load()));
      ++sent;
      if (x.status != 200) ++failed;
      else if (parse_object(x.body)["source"].as_string() == "function") ++by_function;
    }
  });
  while (sent < 50) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  std::string manifest = dir->read("nimbus.yaml");
  const std::string commented = "    # - {path: \"/api/inventory/{sku}\"";
  ASSERT_NE(manifest.find(commented), std::string::npos);
  manifest.replace(manifest.find(commented), commented.size(), "    - {path: \"/api/inventory/{sku}\"");
  dir->write("nimbus.yaml", manifest);
  CommandResult reload = run_nimbus({"reload", "--dir", dir->path().string()}, dir->path());
  EXPECT_EQ(reload.exit_code, 0) << reload.out << reload.err;
  EXPECT_NE(reload.out.find("reloaded"), std::string::npos);
  const int at_swap = sent;
  while (sent < at_swap + 50) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  stop = true;
  client.join();
  EXPECT_EQ(failed, 0);
  EXPECT_GE(by_function, 50);
  const int monolith_inventory_before = static_cast<int>(std::count_if(seen.begin(), seen.end(), [](const std::string& s) {
    return s.find("/api/inventory/") != std::string::npos;
  }));
  seen = monolith.seen();
  const int monolith_inventory = static_cast<int>(std::count_if(seen.begin(), seen.end(), [](const std::string& s) {
    return s.find("/api/inventory/") != std::string::npos;
  }));
  // Each request went to exactly one of the two.
  EXPECT_EQ(monolith_inventory - monolith_inventory_before + by_function, sent.load());
  EXPECT_EQ(source(request(host.http_port(), "GET", "/api/inventory/sku-9")), "function");

  // A change outside gateway: is refused, and the host serves on as it was.
  dir->write("nimbus.yaml", manifest + "  extra:\n    runtime: python\n    handler: functions/shop.py:quote\n    triggers: []\n");
  reload = run_nimbus({"reload", "--dir", dir->path().string()}, dir->path());
  EXPECT_NE(reload.exit_code, 0);
  EXPECT_NE((reload.out + reload.err).find("changed outside gateway"), std::string::npos) << reload.out << reload.err;
  // A manifest with a problem: refused, naming it.
  dir->write("nimbus.yaml", manifest + "gateway_typo: 1\n");
  reload = run_nimbus({"reload", "--dir", dir->path().string()}, dir->path());
  EXPECT_NE(reload.exit_code, 0);
  EXPECT_NE((reload.out + reload.err).find("gateway_typo"), std::string::npos) << reload.out << reload.err;
  EXPECT_EQ(source(request(host.http_port(), "GET", "/api/inventory/sku-9")), "function");
  EXPECT_EQ(source(request(host.http_port(), "GET", "/elsewhere")), "monolith");
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// A JSON string's text; "" for anything else.
std::string text_of(const json::value& v) { return v.is_string() ? std::string(v.as_string()) : std::string(); }

// The `error.code` of a JSON error reply; "" when it is not one.
std::string error_code_of(const Response& r) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  if (ec || !v.is_object()) return "";
  const json::value* error = v.as_object().if_contains("error");
  const json::value* code = error && error->is_object() ? error->as_object().if_contains("code") : nullptr;
  return code && code->is_string() ? std::string(code->as_string()) : "";
}

// The claims of a JWS compact token, decoded without checking anything.
json::object jwt_claims(const std::string& token) {
  const auto dot1 = token.find('.');
  const auto dot2 = dot1 == std::string::npos ? dot1 : token.find('.', dot1 + 1);
  if (dot2 == std::string::npos) return {};
  std::string part = token.substr(dot1 + 1, dot2 - dot1 - 1);
  for (auto& c : part) c = c == '-' ? '+' : c == '_' ? '/' : c;
  auto text = base64_decode(part);
  return text ? parse_object(*text) : json::object{};
}

std::string to_hex(const unsigned char* bytes, std::size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 15];
  }
  return out;
}

std::string from_hex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
    out += static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16));
  }
  return out;
}

// The back end of a phone app (examples/mobile-backend), driven as two phones would: register,
// log in, keep notes. Each user sees and changes only their own notes (the other's ids are 404,
// whatever the client sends as claims); forged and expired tokens are refused with a Bearer
// challenge; passwords are stored only as PBKDF2 hashes; each user's MQTT client gets that
// user's change pushes and never the other's; logins and /me routes are rate limited.
TEST(Examples, MobileBackendKeepsEachUsersNotesToThemselvesAndPushesTheirChangesToTheirOwnTopic) {
  auto dir = copy_example("mobile-backend");
  MosquittoBroker broker(dir->path() / "broker");
  ASSERT_TRUE(broker.start()) << broker.error();
  const std::string secret = "mobile-backend-test-secret-0123456789abcdef";  // gateway.jwt wants 32 bytes or more
  ::setenv("JWT_SECRET", secret.c_str(), 1);  // the manifest's ${JWT_SECRET} and ${MQTT_URL:-...}
  ::setenv("MQTT_URL", broker.url().c_str(), 1);
  Host host(dir->path());
  ::unsetenv("JWT_SECRET");
  ::unsetenv("MQTT_URL");
  ASSERT_TRUE(host.started()) << host.errors();
  ASSERT_TRUE(host.wait_for_output("\"msg\":\"mqtt broker connected\"")) << host.output();
  const int port = host.http_port();
  auto as = [](const std::string& token) {
    return std::map<std::string, std::string>{{"Authorization", "Bearer " + token}};
  };
  auto credentials = [](const std::string& username, const std::string& password) {
    return json::serialize(json::object{{"username", username}, {"password", password}});
  };

  // Two accounts; a taken name (in any letter case) and a short password are refused.
  Response r = request(port, "POST", "/auth/register", {}, credentials("Ada", "correct horse battery"));
  ASSERT_EQ(r.status, 201) << r.body << host.output();
  json::object ada = parse_object(r.body);
  EXPECT_EQ(ada["username"], "ada");
  const std::string ada_id = text_of(ada["id"]);
  r = request(port, "POST", "/auth/register", {}, credentials("bob", "hunter2hunter2"));
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string bob_id = text_of(parse_object(r.body)["id"]);
  ASSERT_FALSE(ada_id.empty() || bob_id.empty());
  EXPECT_NE(ada_id, bob_id);
  r = request(port, "POST", "/auth/register", {}, credentials("ADA", "another password"));
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(error_code_of(r), "username_taken");
  r = request(port, "POST", "/auth/register", {}, credentials("cyd", "short"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(error_code_of(r), "invalid_password");

  // The store holds PBKDF2-HMAC-SHA256 hashes with a salt of each user's own, never a password
  // (read the way any part reads it, beside the running host).
  {
    ManualClock clock;
    auto store = open_store("sqlite:.nimbus/state.db", dir->path(), clock);
    ASSERT_TRUE(store.ok()) << store.error().message;
    auto ada_record = (*store)->get("credentials", "ada");
    auto bob_record = (*store)->get("credentials", "bob");
    (*store)->close();
    ASSERT_TRUE(ada_record.ok() && ada_record->has_value() && bob_record.ok() && bob_record->has_value());
    const std::string& stored = (*ada_record)->value;
    EXPECT_EQ(stored.find("correct horse"), std::string::npos) << stored;
    json::object record = parse_object(stored);
    EXPECT_EQ(record["algorithm"], "pbkdf2_sha256");
    EXPECT_EQ(text_of(record["user"]), ada_id);
    ASSERT_TRUE(record["iterations"].is_int64() && record["salt"].is_string() && record["hash"].is_string()) << stored;
    EXPECT_GE(record["iterations"].as_int64(), 600000);
    const std::string salt = from_hex(text_of(record["salt"]));
    EXPECT_EQ(salt.size(), 16u);
    const std::string password = "correct horse battery";
    unsigned char derived[32];
    ASSERT_EQ(PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                                reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()),
                                static_cast<int>(record["iterations"].as_int64()), EVP_sha256(),
                                static_cast<int>(sizeof derived), derived),
              1);
    EXPECT_EQ(text_of(record["hash"]), to_hex(derived, sizeof derived));
    EXPECT_NE(parse_object((*bob_record)->value)["salt"], record["salt"]);
  }

  // Log in: an HS256 JWT for an hour, its subject the user's id. A wrong password and an
  // unknown user get the same answer.
  auto login = [&](const std::string& username, const std::string& password) {
    return request(port, "POST", "/auth/login", {}, credentials(username, password));
  };
  auto token_of = [](const Response& reply) { return text_of(parse_object(reply.body)["token"]); };
  r = login("ada", "correct horse battery");
  ASSERT_EQ(r.status, 200) << r.body << host.output();
  EXPECT_EQ(parse_object(r.body)["expires_in"], 3600);
  EXPECT_EQ(r.header("cache-control"), "no-store");
  const std::string ada_token = token_of(r);
  json::object claims = jwt_claims(ada_token);
  EXPECT_EQ(text_of(claims["sub"]), ada_id);
  EXPECT_EQ(claims["iss"], "mobile-backend");
  EXPECT_EQ(claims["aud"], "mobile-app");
  ASSERT_TRUE(claims["exp"].is_int64() && claims["iat"].is_int64()) << json::serialize(claims);
  EXPECT_EQ(claims["exp"].as_int64() - claims["iat"].as_int64(), 3600);
  r = login("bob", "hunter2hunter2");
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string bob_token = token_of(r);
  Response wrong = login("bob", "hunter3hunter3");
  Response nobody = login("nobody", "hunter2hunter2");
  EXPECT_EQ(wrong.status, 401) << wrong.body;
  EXPECT_EQ(error_code_of(wrong), "invalid_credentials");
  EXPECT_EQ(nobody.status, 401) << nobody.body;
  EXPECT_EQ(nobody.body, wrong.body) << "a reply must not tell which part was wrong";

  // Each phone subscribes to its own topic before anything changes.
  MqttTestClient ada_phone(broker.port());
  MqttTestClient bob_phone(broker.port());
  ASSERT_TRUE(ada_phone.connected() && bob_phone.connected());
  const std::string ada_topic = "users/" + ada_id + "/changes", bob_topic = "users/" + bob_id + "/changes";
  ASSERT_TRUE(ada_phone.subscribe(ada_topic));
  ASSERT_TRUE(bob_phone.subscribe(bob_topic));

  r = request(port, "GET", "/me", as(ada_token));
  ASSERT_EQ(r.status, 200) << r.body << host.output();
  EXPECT_EQ(text_of(parse_object(r.body)["id"]), ada_id);
  EXPECT_EQ(parse_object(r.body)["username"], "ada");

  // Notes: Ada makes two, changes one (a stale If-Match is 412) and deletes the other; Bob makes one.
  auto create = [&](const std::string& token, const std::string& title) {
    Response made = request(port, "POST", "/me/notes", as(token), json::serialize(json::object{{"title", title}}));
    EXPECT_EQ(made.status, 201) << made.body;
    EXPECT_EQ(made.header("etag"), "\"1\"") << made.body;
    return text_of(parse_object(made.body)["id"]);
  };
  const std::string a1 = create(ada_token, "Buy milk");
  const std::string a2 = create(ada_token, "Call mum");
  const std::string b1 = create(bob_token, "Bob's secret");
  ASSERT_FALSE(a1.empty() || a2.empty() || b1.empty());
  auto with = [](std::map<std::string, std::string> headers, const std::string& name, const std::string& value) {
    headers[name] = value;
    return headers;
  };
  r = request(port, "PUT", "/me/notes/" + a1, with(as(ada_token), "If-Match", "\"1\""), R"({"title": "Buy oat milk"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse_object(r.body)["version"], 2);
  r = request(port, "PUT", "/me/notes/" + a1, with(as(ada_token), "If-Match", "\"1\""), R"({"title": "stale"})");
  EXPECT_EQ(r.status, 412) << r.body;
  r = request(port, "DELETE", "/me/notes/" + a2, as(ada_token));
  EXPECT_EQ(r.status, 204) << r.body;
  r = request(port, "POST", "/me/notes", as(ada_token), R"({"title": )");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(error_code_of(r), "invalid_json");

  // The other's notes are not there for them: 404, and nothing changes.
  for (const auto& [method, body] : {std::pair{"PUT", R"({"title": "mine now"})"}, std::pair{"DELETE", ""}}) {
    r = request(port, method, "/me/notes/" + a1, as(bob_token), body);
    EXPECT_EQ(r.status, 404) << method << " " << r.body;
    EXPECT_EQ(error_code_of(r), "not_found");
    r = request(port, method, "/me/notes/" + b1, as(ada_token), body);
    EXPECT_EQ(r.status, 404) << method << " " << r.body;
  }
  auto notes_of = [&](const std::map<std::string, std::string>& headers) {
    Response list = request(port, "GET", "/me/notes", headers);
    EXPECT_EQ(list.status, 200) << list.body;
    std::vector<std::string> out;
    json::object o = parse_object(list.body);
    if (!o["notes"].is_array()) return out;
    for (const auto& n : o["notes"].as_array()) {
      const json::object& note = n.as_object();
      out.push_back(text_of(note.at("id")) + " " + text_of(note.at("title")) + " v" +
                    std::to_string(note.at("version").to_number<int64_t>()));
    }
    return out;
  };
  EXPECT_EQ(notes_of(as(ada_token)), std::vector<std::string>{a1 + " Buy oat milk v2"});
  EXPECT_EQ(notes_of(as(bob_token)), std::vector<std::string>{b1 + " Bob's secret v1"});
  // Claims a client sends itself never pass: the gateway's come from the verified token.
  EXPECT_EQ(notes_of(with(as(bob_token), "X-Nimbus-Claims", "{\"sub\": \"" + ada_id + "\"}")),
            std::vector<std::string>{b1 + " Bob's secret v1"});

  // Tokens: none, one signed with another secret, an expired one: 401 with a Bearer challenge.
  const int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  json::object valid{{"sub", ada_id}, {"iss", "mobile-backend"}, {"aud", "mobile-app"}, {"iat", now}, {"exp", now + 600}};
  r = request(port, "GET", "/me/notes");
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_EQ(r.header("www-authenticate").rfind("Bearer realm=", 0), 0u) << r.header("www-authenticate");
  EXPECT_EQ(request(port, "GET", "/me/notes", {{"X-Nimbus-Claims", "{\"sub\": \"" + ada_id + "\"}"}}).status, 401);
  r = request(port, "GET", "/me/notes", as(hs256_token("not-the-server-secret-but-as-long-as-one", valid)));
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_NE(r.header("www-authenticate").find("error=\"invalid_token\""), std::string::npos) << r.header("www-authenticate");
  json::object old = valid;
  old["iat"] = now - 7200;
  old["exp"] = now - 3600;
  r = request(port, "GET", "/me/notes", as(hs256_token(secret, old)));
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_NE(r.header("www-authenticate").find("error=\"invalid_token\""), std::string::npos) << r.header("www-authenticate");
  EXPECT_NE(r.body.find("expired"), std::string::npos) << r.body;
  // The same claims, unexpired and signed with the server's secret, pass: the refusals were
  // about the signature and the time, nothing else.
  EXPECT_EQ(request(port, "GET", "/me", as(hs256_token(secret, valid))).status, 200);

  // Pushes: Ada's phone gets her four changes, Bob's his one; neither gets the other's.
  std::vector<MqttMessage> to_ada = ada_phone.wait_messages(4);
  std::vector<MqttMessage> to_bob = bob_phone.wait_messages(1);
  ASSERT_EQ(to_ada.size(), 4u) << host.output();
  ASSERT_EQ(to_bob.size(), 1u) << host.output();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(ada_phone.wait_messages(5, 0).size(), 4u);
  EXPECT_EQ(bob_phone.wait_messages(2, 0).size(), 1u);
  auto changes = [](const std::vector<MqttMessage>& got, const std::string& topic) {
    std::multiset<std::string> out;
    for (const auto& m : got) {
      EXPECT_EQ(m.topic, topic);
      json::object change = parse_object(m.payload);
      out.insert(text_of(change["type"]) + " " + text_of(change["id"]));
    }
    return out;
  };
  EXPECT_EQ(changes(to_ada, ada_topic), (std::multiset<std::string>{"note.created " + a1, "note.created " + a2,
                                                                    "note.updated " + a1, "note.deleted " + a2}));
  EXPECT_EQ(changes(to_bob, bob_topic), (std::multiset<std::string>{"note.created " + b1}));

  // Rate limits. /me routes count per token: one token over its burst is refused while Ada's
  // own goes on. Logins count per address: 5 at once, then 10 a minute.
  const std::string busy = hs256_token(secret, valid);
  Response limited;
  for (int i = 0; i < 60 && limited.status != 429; ++i) limited = request(port, "GET", "/me", as(busy));
  EXPECT_EQ(limited.status, 429) << limited.body;
  EXPECT_EQ(request(port, "GET", "/me", as(ada_token)).status, 200);
  limited = Response{};
  for (int i = 0; i < 10 && limited.status != 429; ++i) limited = login("ada", "guess number " + std::to_string(i));
  ASSERT_EQ(limited.status, 429) << limited.body;
  EXPECT_EQ(error_code_of(limited), "rate_limited");
  EXPECT_FALSE(limited.header("retry-after").empty());
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing
