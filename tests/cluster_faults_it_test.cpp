// Faults with three hosts on one PostgreSQL behind a real load balancer (HAProxy from Debian,
// checking /readyz): a host killed with SIGKILL under load loses nothing that was accepted and
// emits no output twice; its leases move to the others within the lease time.
#include <spawn.h>
#include <sys/wait.h>

#include "free_port.h"
#include "it_common.h"

extern char** environ;

namespace nimbus::testing {
namespace {

// HAProxy in front of `ports`, on a free loopback port, until destroyed. It checks /readyz
// every 200 ms and retries a request on another host only when its connection failed (a POST
// that reached a host which died before answering may have committed: retrying it elsewhere
// would accept it twice; its client gets a 502 and decides).
class Haproxy {
 public:
  Haproxy(const std::filesystem::path& dir, const std::vector<int>& ports) : port_(free_port()) {
    std::string cfg =
        "global\n  maxconn 2000\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n"
        "  timeout server 30s\n  retries 3\n  option redispatch\n  retry-on conn-failure\n"
        "frontend public\n  bind 127.0.0.1:" + std::to_string(port_) + "\n  default_backend hosts\n"
        "backend hosts\n  balance roundrobin\n  option httpchk GET /readyz\n"
        "  default-server inter 200ms fall 1 rise 2\n";
    for (std::size_t i = 0; i < ports.size(); ++i) {
      cfg += "  server h" + std::to_string(i) + " 127.0.0.1:" + std::to_string(ports[i]) + " check\n";
    }
    const auto file = dir / "haproxy.cfg";
    std::ofstream(file) << cfg;
    std::string bin = "/usr/sbin/haproxy", f = "-f", path = file.string(), db = "-db";
    char* argv[] = {bin.data(), f.data(), path.data(), db.data(), nullptr};
    if (::posix_spawn(&pid_, bin.c_str(), nullptr, nullptr, argv, environ) != 0) pid_ = -1;
    for (int i = 0; i < 500 && pid_ > 0; ++i) {
      if (request(port_, "GET", "/healthz").status == 200) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~Haproxy() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  bool running() const { return pid_ > 0 && ::kill(pid_, 0) == 0; }
  int port() const { return port_; }

 private:
  int port_;
  pid_t pid_ = -1;
};

// The app both tests run: ingest (POST /orders puts the order on a queue, committed before
// the 200) and ship (takes it from the queue, lease 1 s, and emits it to `shipped`).
std::string order_app(const std::string& url, const std::string& ship_extra = "") {
  return "name: orders\nstore: \"" + url + "\"\nfunctions:\n" + "  ingest:\n    runtime: native\n    handler: " +
         test_function("relay").string() +
         "\n    triggers: [{http: {route: /orders, methods: [POST]}}]\n    outputs: {next: {queue: orders}}\n" +
         relay_stage("ship", "{queue: {name: orders, lease: 1s, batch_size: 8}}", "{queue: shipped}", ship_extra);
}

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
  Haproxy lb(lb_dir.path(), ports);
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
  Haproxy lb(lb_dir.path(), {a.http_port(), b.http_port()});
  ASSERT_TRUE(lb.running());

  std::mutex mu;
  std::set<std::string> accepted;
  std::map<int, int> statuses;  // while the database was down
  std::atomic<int> phase{0};    // 0 before, 1 down, 2 back
  std::atomic<bool> stop{false};
  std::thread client([&] {
    for (int i = 0; !stop.load(); ++i) {
      const std::string body = "order-" + std::to_string(i);
      Response r = request(lb.port(), "POST", "/orders", {}, body);
      std::lock_guard l(mu);
      if (r.status == 200) accepted.insert(body);
      if (phase.load() == 1) ++statuses[r.status];
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
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
  const std::size_t before_back = [&] {
    std::lock_guard l(mu);
    return accepted.size();
  }();
  ASSERT_TRUE(admin_a.wait([&] {
    std::lock_guard l(mu);
    return accepted.size() >= before_back + 50;
  }, 20000)) << "no orders accepted after the database came back";
  stop = true;
  client.join();
  expect_shipped_once(admin_a, accepted);
  EXPECT_EQ(a.signal_and_wait(SIGTERM), 0);
  EXPECT_EQ(b.signal_and_wait(SIGTERM), 0);
  server.stop();
}

}  // namespace
}  // namespace nimbus::testing
