#pragma once
// What the end-to-end tests share: the real `nimbus` binary on port 0, real HTTP over
// loopback (harness.h), a manifest of the test functions, an app folder with its host, the
// admin API client, and small waits (bounded, real time: the host runs on the system clock).
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <fstream>
#include <future>
#include <gtest/gtest.h>
#include <random>
#include <regex>
#include <map>
#include <set>

#include "core/text.h"
#include "observe/metrics.h"
#include "store/store.h"
#include <thread>
#include "harness.h"
#include "postgres_server.h"
#include "redis_server.h"

namespace nimbus::testing {

namespace json = boost::json;

// How many lines of `text` hold every one of `parts`.
inline int lines_with(const std::string& text, std::initializer_list<std::string_view> parts) {
  int n = 0;
  std::size_t at = 0;
  while (at < text.size()) {
    std::size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + at, end - at);
    bool all = true;
    for (auto part : parts) all = all && line.find(part) != std::string_view::npos;
    n += all ? 1 : 0;
    at = end + 1;
  }
  return n;
}

// A loopback port nothing listens on, held (bound, not listening) while this lives so that no
// other test's server takes it meanwhile: a connection to it is refused.
class HeldPort {
 public:
  HeldPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof addr;
    if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &length) == 0) {
      port_ = ntohs(addr.sin_port);
    }
  }
  ~HeldPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  HeldPort(const HeldPort&) = delete;
  HeldPort& operator=(const HeldPort&) = delete;
  int port() const { return port_; }  // 0 when none could be bound

 private:
  int fd_ = -1;
  int port_ = 0;
};

inline std::string fn(const std::string& name) { return test_function(name).string(); }

// A manifest with the test functions; `extra` lands under the top level, `fn_extra` maps
// function name -> extra lines (already indented by 4).
inline std::string manifest(const std::string& extra = "", std::map<std::string, std::string> fn_extra = {}) {
  auto f = [&](const std::string& name, const std::string& lib, const std::string& triggers) {
    return "  " + name + ":\n    runtime: native\n    handler: " + fn(lib) + "\n" + fn_extra[name] +
           "    triggers:\n" + triggers;
  };
  return "name: it\n" + extra + "functions:\n" +
         f("hello", "hello", "      - http: {route: /hello, methods: [GET]}\n") +
         f("echo", "echo", "      - http: {route: \"/orders/{id}\"}\n      - http: {route: \"/files/{*path}\", methods: [PUT]}\n") +
         f("secure", "echo", "      - http: {route: /secure, auth: function}\n") +
         f("sleepy", "sleepy", "      - http: {route: /sleep}\n") +
         f("thrower", "thrower", "      - http: {route: /boom}\n");
}

struct App {
  explicit App(const std::string& text, std::vector<std::string> extra = {}) {
    dir.write("nimbus.yaml", text);
    host = std::make_unique<Host>(dir.path(), std::move(extra));
  }
  TempDir dir;
  std::unique_ptr<Host> host;
  int port() const { return host->http_port(); }
  int admin() const { return host->admin_port(); }
};

inline std::string slurp(const std::filesystem::path& file) {
  std::ifstream in(file);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline json::object parse_object(const std::string& s);
inline bool wait_count(App& app, const std::string& function, const char* field, int want);
inline bool wait_running(App& app, const std::string& function, int running) {
  return wait_count(app, function, "running", running);
}

inline json::object parse_object(const std::string& s) {
  boost::system::error_code ec;
  auto v = json::parse(s, ec);
  EXPECT_FALSE(ec) << s;
  return ec || !v.is_object() ? json::object{} : v.as_object();
}

// Waits until the admin API reports `want` as `field` ("running" or "waiting") of `function`.
inline bool wait_count(App& app, const std::string& function, const char* field, int want) {
  for (int i = 0; i < 2000; ++i) {
    auto r = request(app.admin(), "GET", "/admin/functions", {{"Authorization", "Bearer " + app.host->admin_token()}});
    auto o = parse_object(r.body);
    for (const auto& f : o["functions"].as_array()) {
      if (f.as_object().at("name").as_string() == function && f.as_object().at(field).as_int64() == want) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

// Python functions through the process runtime, end to end.
inline std::string python_app(const std::string& extra_fn_keys = "") {
  return "name: py\nfunctions:\n"
         "  hello:\n    runtime: python\n    handler: app.py:hello\n    timeout: 5s\n" + extra_fn_keys +
         "    triggers: [{http: {route: /hello}}]\n"
         "  boom:\n    runtime: python\n    handler: app.py:boom\n    triggers: [{http: {route: /boom}}]\n"
         "  crash:\n    runtime: python\n    handler: app.py:crash\n    triggers: [{http: {route: /crash}}]\n"
         "  slow:\n    runtime: python\n    handler: app.py:slow\n    timeout: 300ms\n    triggers: [{http: {route: /slow}}]\n";
}
inline const char* kPythonHandlers = R"PY(
import os, time
def hello(req, ctx):
    ctx.log.info("hello from python " + ctx.invocation_id)
    return "Hello, " + req.query.get("name", "World") + "!"
def boom(req, ctx):
    raise KeyError("secret-detail")
def crash(req, ctx):
    os._exit(3)
def slow(req, ctx):
    time.sleep(float(req.query.get("s", "5")))
    return "late"
)PY";

struct Admin {
  int port;
  std::string token;
  Response call(const std::string& method, const std::string& target, const std::string& body = "",
                std::map<std::string, std::string> headers = {}) const {
    headers["authorization"] = "Bearer " + token;
    return request(port, method, target, headers, body);
  }
  std::vector<json::object> peek(const std::string& queue, int limit = 100000) const {
    Response r = call("GET", "/admin/queues/" + queue + "/messages?limit=" + std::to_string(limit));
    std::vector<json::object> out;
    if (r.status != 200) return out;
    json::object body = parse_object(r.body);  // the range below must not outlive it
    for (auto& m : body["messages"].as_array()) out.push_back(m.as_object());
    return out;
  }
  // Polls (bounded, real time: the host runs on the system clock) until `pred` holds.
  template <class Pred>
  bool wait(Pred pred, int timeout_ms = 15000) const {
    for (int waited = 0; waited < timeout_ms; waited += 20) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return pred();
  }
};

// The `store:` URL of a test app on `backend`: the embedded file, or a fresh database on the
// run's PostgreSQL server (tests/postgres_server.h). Empty with a test failure if there is none.
inline std::string store_url(const std::string& backend) {
  if (backend == "sqlite") return "sqlite:.nimbus/state.db";
  if (backend == "redis") {
    std::string why;
    RedisServer* server = shared_redis(&why);
    EXPECT_NE(server, nullptr) << why;
    return server ? server->create_url() : std::string();
  }
  std::string why;
  PostgresServer* server = shared_postgres(&why);
  EXPECT_NE(server, nullptr) << why;
  if (!server) return {};
  std::string url = server->create_database();
  EXPECT_FALSE(url.empty()) << server->error();
  return url;
}

// A manifest `text` (starting with its `name:` line) on the store at `url`.
inline std::string on_store(const std::string& text, const std::string& url) {
  const auto first = text.find('\n') + 1;
  return text.substr(0, first) + "store: \"" + url + "\"\n" + text.substr(first);
}

// The backends every kill -9 test of the host runs on.
inline const std::vector<std::string>& backends() {
  static const std::vector<std::string> all = {"sqlite", "postgres", "redis"};
  return all;
}

// Enqueues messages with payloads "0" to "count - 1" into `queue` of the store at `url`, in
// one commit from outside any host; the error, if it failed.
inline std::string enqueue_numbered(const std::string& url, const std::filesystem::path& base, const std::string& queue,
                                    int count) {
  ManualClock clock;
  auto store = open_store(url, base, clock);
  if (!store.ok()) return store.error().message;
  Batch b;
  for (int i = 0; i < count; ++i) {
    NewMessage m;
    m.payload = std::to_string(i);
    b.enqueues.push_back({queue, std::move(m)});
  }
  auto r = (*store)->commit_sync(std::move(b));
  return r.ok() ? std::string() : r.error().message;
}

// The value of one series in a host's /metrics (`name` with its labels as printed, e.g.
// `x_total{kind="a"}`); -1 when it is not there.
inline int64_t metric_value(int admin_port, const std::string& series) {
  Response r = request(admin_port, "GET", "/metrics");
  const std::size_t at = r.body.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stoll(r.body.substr(at + series.size() + 2));
}

// `nimbus_invocations_total` of `function` with outcome success, summed over triggers, from a
// host's /metrics.
inline int64_t invocations_succeeded(int admin_port, const std::string& function) {
  Response r = request(admin_port, "GET", "/metrics");
  int64_t sum = 0;
  const std::string prefix = "nimbus_invocations_total{function=\"" + function + "\",";
  std::size_t at = 0;
  while ((at = r.body.find(prefix, at)) != std::string::npos) {
    const std::size_t end = r.body.find('\n', at);
    const std::string line = r.body.substr(at, end - at);
    at = end;
    if (line.find("outcome=\"success\"") == std::string::npos) continue;
    sum += std::stoll(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

inline std::string relay_stage(const std::string& name, const std::string& trigger, const std::string& output,
                        const std::string& extra = "") {
  return "  " + name + ":\n    runtime: native\n    handler: " + test_function("relay").string() + "\n    triggers: [" +
         trigger + "]\n    outputs: {next: " + output + "}\n" + extra;
}

inline std::string shell_quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs `command` with /bin/sh; its exit code and its standard output.
inline CommandResult run_shell(const std::string& command) {
  CommandResult r;
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// One browser at a time on this machine: two Chromiums at once on two cores (under the
// sanitizers, say) make both slow enough to time out. Held for a browser test's run.
struct BrowserLock {
  BrowserLock() : fd(::open("/tmp/nimbus-browser-tests.lock", O_CREAT | O_RDWR | O_CLOEXEC, 0666)) {
    if (fd >= 0) ::flock(fd, LOCK_EX);
  }
  ~BrowserLock() {
    if (fd >= 0) ::close(fd);
  }
  BrowserLock(const BrowserLock&) = delete;
  BrowserLock& operator=(const BrowserLock&) = delete;
  int fd;
};

}  // namespace nimbus::testing
