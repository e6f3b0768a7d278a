#pragma once
// A real HTTP/1.1 server on a loopback port for the gateway's tests: keep-alive, one thread
// per connection, and paths that misbehave on purpose.
//   /slow?ms=N      replies after N ms          /reset      closes with RST, no reply
//   /garbage        replies with non-HTTP bytes  /status/N   replies with status N
//   /healthz        200, or 503 while set_healthy(false)
//   /big?bytes=N    a body of N bytes            anything else: 200 with a JSON echo
//   /chunked?bytes=N  N bytes, chunked          /truncated?bytes=N  promises N, sends N/2, closes
//   /events?n=N&ms=M  N server-sent events, M ms apart (chunked)
//   Upgrade: websocket on any path but /refuse-upgrade: a WebSocket echo (TestUpstream::websocket)
//   /wrong-upgrade  101 to h2c, whatever was asked
//   /upload         takes a body of any size (Content-Length or chunked) piece by piece, keeping
//                   only its count (upload_bytes(), as it arrives) and FNV-1a; replies
//                   {"bytes", "fnv", "chunked"}; a body cut short ends the connection
//   /refuse-upload  413 at once, without reading the body (then drains it and closes)
// The echo: {"server", "method", "target", "headers": {lower-case name: value}, "body", "connection"}.
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace nimbus::testing {

class TestUpstream {
 public:
  explicit TestUpstream(std::string name, int port = 0);
  ~TestUpstream();
  int port() const { return port_; }
  void stop();                 // closes the listener and every connection: "upstream down"
  void set_healthy(bool ok) { healthy_ = ok; }
  // GET `path` answers `status` with `body` (JSON) from now on.
  void set_reply(const std::string& path, int status, std::string body) {
    std::lock_guard lock(mu_);
    fixed_[path] = {status, std::move(body)};
  }
  struct Seen {
    std::string method, target;
    std::map<std::string, std::string> headers;
    std::string body;
    int connection = 0;
  };
  std::vector<Seen> seen();     // requests so far, in order (health checks excluded)
  int requests() { return static_cast<int>(seen().size()); }
  int connections() const { return connections_.load(); }
  int health_checks() const { return health_checks_.load(); }
  int websockets() const { return websockets_.load(); }
  int64_t upload_bytes() const { return upload_bytes_.load(); }  // /upload bytes received so far (all uploads)

 private:
  void accept_loop();
  void serve(int fd, int connection);
  void websocket(int fd, std::string buf, const std::string& key);
  std::string name_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> healthy_{true};
  std::atomic<int> connections_{0};
  std::atomic<int> health_checks_{0};
  std::atomic<int> websockets_{0};
  std::atomic<int64_t> upload_bytes_{0};
  std::mutex mu_;
  std::vector<Seen> seen_;
  std::map<std::string, std::pair<int, std::string>> fixed_;
  std::set<int> open_fds_;
  std::thread acceptor_;
  std::vector<std::thread> threads_;
};

}  // namespace nimbus::testing
