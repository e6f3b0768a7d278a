// Faults with hosts on one PostgreSQL behind a real load balancer (HAProxy from Debian,
// checking /readyz), under load: a host killed with SIGKILL (its leases move to the others
// within the lease time), the database stopped for 10 s, one host cut off from the database.
// In each, nothing accepted is lost and nothing is emitted twice.
#include "free_port.h"
#include "haproxy.h"
#include "it_common.h"

namespace nimbus::testing {
namespace {

// The load balancer in front of the hosts' `ports`: it checks /readyz every 200 ms and retries
// a request on another host only when its connection failed (a POST that reached a host which
// died before answering may have committed: retrying it elsewhere would accept it twice; its
// client gets a 502 and decides).
std::unique_ptr<Haproxy> balancer(const std::filesystem::path& dir, const std::vector<int>& ports) {
  const int port = free_port();
  std::string cfg = "frontend public\n  mode http\n  bind 127.0.0.1:" + std::to_string(port) +
                    "\n  default_backend hosts\nbackend hosts\n  mode http\n  retries 3\n  option redispatch\n"
                    "  retry-on conn-failure\n  balance roundrobin\n  option httpchk GET /readyz\n"
                    "  default-server inter 200ms fall 1 rise 2\n";
  for (std::size_t i = 0; i < ports.size(); ++i) {
    cfg += "  server h" + std::to_string(i) + " 127.0.0.1:" + std::to_string(ports[i]) + " check\n";
  }
  return std::make_unique<Haproxy>(dir, port, cfg);
}

// A TCP proxy on `port` to `target`: a host's way to its database, cut by stopping it.
std::unique_ptr<Haproxy> tcp_proxy(const std::filesystem::path& dir, int port, int target) {
  return std::make_unique<Haproxy>(dir, port,
                                   "listen pg\n  mode tcp\n  timeout client 1h\n  timeout server 1h\n  bind 127.0.0.1:" +
                                       std::to_string(port) + "\n  server db 127.0.0.1:" + std::to_string(target) + "\n");
}

// The app both tests run: ingest (POST /orders puts the order on a queue, committed before
// the 200) and ship (takes it from the queue, lease 1 s, and emits it to `shipped`).
std::string order_app(const std::string& url, const std::string& ship_extra = "") {
  return "name: orders\nstore: \"" + url + "\"\nfunctions:\n" + "  ingest:\n    runtime: native\n    handler: " +
         test_function("relay").string() +
         "\n    triggers: [{http: {route: /orders, methods: [POST]}}]\n    outputs: {next: {queue: orders}}\n" +
         relay_stage("ship", "{queue: {name: orders, lease: 1s, batch_size: 8}}", "{queue: shipped}", ship_extra);
}

// Orders posted to `port` one after another from a thread of its own until finish(): which
// were accepted (answered 200), and each answer's status to `on_status`.
class OrderLoad {
 public:
  explicit OrderLoad(int port, std::function<void(int)> on_status = {})
      : thread_([this, port, on_status = std::move(on_status)] {
          for (int i = 0; !stop_.load(); ++i) {
            const std::string body = "order-" + std::to_string(i);
            Response r = request(port, "POST", "/orders", {}, body);
            if (on_status) on_status(r.status);
            if (r.status == 200) {
              std::lock_guard l(mu_);
              accepted_.insert(body);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
          }
        }) {}
  ~OrderLoad() { finish(); }
  void finish() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::size_t count() const {
    std::lock_guard l(mu_);
    return accepted_.size();
  }
  std::set<std::string> accepted() const {
    std::lock_guard l(mu_);
    return accepted_;
  }

 private:
  mutable std::mutex mu_;
  std::set<std::string> accepted_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Waits until every accepted order is shipped, then checks each was shipped exactly once and
// nothing was shipped twice.
void expect_shipped_once(const Admin& admin, const std::set<std::string>& accepted) {
  ASSERT_TRUE(admin.wait([&] { return admin.peek("orders").empty() && admin.peek("shipped").size() >= accepted.size(); },
                         30000))
      << admin.call("GET", "/admin/queues").body;
  std::multiset<std::string> shipped;
  for (auto& m : admin.peek("shipped")) {
    std::string payload(m["payload"].as_string());
    shipped.insert(payload.substr(0, payload.find('|')));
  }
  for (const auto& body : accepted) {
    ASSERT_EQ(shipped.count(body), 1u) << body << " was accepted and shipped " << shipped.count(body) << " times";
  }
  for (const auto& body : shipped) EXPECT_EQ(shipped.count(body), 1u) << body << " shipped twice";
}

TEST(ClusterFaults, AHostKilledUnderLoadLosesNothingAcceptedAndEmitsNothingTwice) {
  const std::string url = store_url("postgres");
  ASSERT_FALSE(url.empty());
  const std::string text = order_app(url, "    concurrency: 8\n");
  std::vector<std::unique_ptr<TempDir>> dirs;
  std::vector<std::unique_ptr<Host>> hosts;
  std::vector<int> ports;
  for (int i = 0; i < 3; ++i) {
    dirs.push_back(std::make_unique<TempDir>());
    dirs.back()->write("nimbus.yaml", text);
    hosts.push_back(std::make_unique<Host>(dirs.back()->path()));
    ASSERT_TRUE(hosts.back()->started()) << hosts.back()->errors();
    ports.push_back(hosts.back()->http_port());
  }
  TempDir lb_dir;
  auto balanced = balancer(lb_dir.path(), ports);
  Haproxy& lb = *balanced;
  ASSERT_TRUE(lb.running()) << "haproxy did not start (scripts/setup.sh installs it)";

  // Load through the balancer from two clients; host 1 is killed a third of the way in.
  constexpr int kOrders = 900;
  std::mutex mu;
  std::set<std::string> accepted;  // answered 200: must be shipped exactly once
  int failed = 0;
  std::atomic<int> sent{0};
  std::atomic<bool> killed{false};
  auto client = [&](int first) {
    for (int i = first; i < kOrders; i += 2) {
      const std::string body = "order-" + std::to_string(i);
      Response r = request(lb.port(), "POST", "/orders", {}, body);
      std::lock_guard l(mu);
      if (r.status == 200) accepted.insert(body);
      else ++failed;
      if (++sent == kOrders / 3 && !killed.exchange(true)) {
        EXPECT_EQ(hosts[1]->signal_and_wait(SIGKILL), 128 + SIGKILL);
      }
    }
  };
  std::thread c0(client, 0), c1(client, 1);
  c0.join();
  c1.join();
  ASSERT_TRUE(killed.load());
  EXPECT_GE(accepted.size(), static_cast<std::size_t>(kOrders - 10)) << failed << " requests failed";

  // Everything accepted is shipped once, by the two hosts left, within the lease time and some.
  Admin admin{hosts[0]->admin_port(), hosts[0]->admin_token()};
  expect_shipped_once(admin, accepted);
  EXPECT_GT(invocations_succeeded(hosts[0]->admin_port(), "ship") + invocations_succeeded(hosts[2]->admin_port(), "ship"), 0);
  EXPECT_EQ(hosts[0]->signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(hosts[2]->signal_and_wait(SIGTERM), 0);
}

// The database stops for 10 s while two hosts behind the balancer take orders: both report it
// (/readyz 503, so the balancer answers 503 itself), nothing is answered 200 that was not
// committed, and once the database is back both carry on by themselves: every accepted order
// is shipped exactly once.
TEST(ClusterFaults, TheDatabaseStoppedForTenSecondsUnderLoad) {
  TempDir pg_dir;
  PostgresServer server(pg_dir.path() / "pg");
  ASSERT_TRUE(server.start()) << server.error();
  const std::string text = order_app(server.url("postgres"));
  TempDir a_dir, b_dir;
  a_dir.write("nimbus.yaml", text);
  b_dir.write("nimbus.yaml", text);
  Host a(a_dir.path()), b(b_dir.path());
  ASSERT_TRUE(a.started() && b.started()) << a.errors() << b.errors();
  TempDir lb_dir;
  auto balanced = balancer(lb_dir.path(), {a.http_port(), b.http_port()});
  Haproxy& lb = *balanced;
  ASSERT_TRUE(lb.running());

  std::mutex mu;
  std::map<int, int> statuses;  // while the database was down
  std::atomic<int> phase{0};    // 0 before, 1 down, 2 back
  OrderLoad load(lb.port(), [&](int status) {
    std::lock_guard l(mu);
    if (phase.load() == 1) ++statuses[status];
  });
  std::this_thread::sleep_for(std::chrono::seconds(1));
  server.stop();
  phase = 1;
  Admin admin_a{a.admin_port(), a.admin_token()};
  EXPECT_TRUE(admin_a.wait([&] { return request(a.http_port(), "GET", "/readyz").status == 503; }));
  EXPECT_TRUE(admin_a.wait([&] { return request(b.http_port(), "GET", "/readyz").status == 503; }));
  std::this_thread::sleep_for(std::chrono::seconds(10));
  {
    std::lock_guard l(mu);
    EXPECT_EQ(statuses.count(200), 0u) << "an order was accepted with no database to keep it";
    EXPECT_GT(statuses.count(503), 0u) << "the balancer never saw both hosts unready";
  }
  ASSERT_TRUE(server.start()) << server.error();
  phase = 2;
  ASSERT_TRUE(admin_a.wait([&] { return request(lb.port(), "GET", "/readyz").status == 200; }, 20000)) << a.output();
  const std::size_t before_back = load.count();
  ASSERT_TRUE(admin_a.wait([&] { return load.count() >= before_back + 50; }, 20000))
      << "no orders accepted after the database came back";
  load.finish();
  expect_shipped_once(admin_a, load.accepted());
  EXPECT_EQ(a.signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(b.signal_and_wait(SIGTERM), 0);
  server.stop();
}

// One host cut off from the database (its connections go through a TCP proxy that is killed,
// as in a network partition): it reports it and takes no more work, while the other, which
// still reaches the database, carries on alone; once the way is back, the cut-off host
// rejoins by itself. Every accepted order is shipped exactly once.
TEST(ClusterFaults, AHostCutOffFromTheDatabaseStopsTakingWorkAndTheOtherCarriesOn) {
  std::string why;
  PostgresServer* db = shared_postgres(&why);
  ASSERT_NE(db, nullptr) << why;
  const std::string url = db->create_database();
  ASSERT_FALSE(url.empty()) << db->error();
  TempDir lb_dir;
  const int proxy_port = free_port();
  auto way = tcp_proxy(lb_dir.path(), proxy_port, db->port());
  ASSERT_TRUE(way->running());
  std::string via_proxy = url;
  via_proxy.replace(via_proxy.find(":" + std::to_string(db->port()) + "/"), std::to_string(db->port()).size() + 1,
                    ":" + std::to_string(proxy_port));
  TempDir a_dir, b_dir;
  a_dir.write("nimbus.yaml", order_app(url));
  b_dir.write("nimbus.yaml", order_app(via_proxy));
  Host a(a_dir.path()), b(b_dir.path());
  ASSERT_TRUE(a.started() && b.started()) << a.errors() << b.errors();
  auto balanced = balancer(lb_dir.path(), {a.http_port(), b.http_port()});
  Haproxy& lb = *balanced;
  ASSERT_TRUE(lb.running());

  OrderLoad load(lb.port());
  Admin admin_a{a.admin_port(), a.admin_token()};
  ASSERT_TRUE(admin_a.wait([&] { return invocations_succeeded(b.admin_port(), "ship") > 0; }))
      << "host b took no work before the partition";

  way->stop();  // the partition
  ASSERT_TRUE(admin_a.wait([&] { return request(b.http_port(), "GET", "/readyz").status == 503; })) << b.output();
  EXPECT_EQ(request(a.http_port(), "GET", "/readyz").status, 200) << "host a still reaches the database";
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // what b held when cut is settled
  const int64_t b_ingest = invocations_succeeded(b.admin_port(), "ingest");
  const int64_t b_ship = invocations_succeeded(b.admin_port(), "ship");
  const std::size_t accepted_at_cut = load.count();
  ASSERT_TRUE(admin_a.wait([&] { return load.count() >= accepted_at_cut + 100; }, 20000))
      << "host a did not carry on alone";
  EXPECT_EQ(invocations_succeeded(b.admin_port(), "ingest"), b_ingest) << "the cut-off host accepted orders";
  EXPECT_EQ(invocations_succeeded(b.admin_port(), "ship"), b_ship) << "the cut-off host shipped orders";

  way = tcp_proxy(lb_dir.path(), proxy_port, db->port());  // the way back
  ASSERT_TRUE(way->running());
  ASSERT_TRUE(admin_a.wait([&] { return request(b.http_port(), "GET", "/readyz").status == 200; }, 20000)) << b.output();
  ASSERT_TRUE(admin_a.wait([&] { return invocations_succeeded(b.admin_port(), "ingest") > b_ingest; }, 20000))
      << "the host did not rejoin";
  load.finish();
  expect_shipped_once(admin_a, load.accepted());
  EXPECT_EQ(a.signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(b.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing
