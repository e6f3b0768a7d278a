#include "test_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <boost/json.hpp>
#include <cctype>
#include <functional>
#include <chrono>
#include <optional>
#include <stdexcept>

namespace nimbus::testing {
namespace {

bool send_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string query_value(const std::string& target, const std::string& key) {
  auto q = target.find('?');
  if (q == std::string::npos) return {};
  std::string query = target.substr(q + 1);
  std::size_t at = 0;
  while (at < query.size()) {
    auto amp = query.find('&', at);
    std::string pair = query.substr(at, amp == std::string::npos ? std::string::npos : amp - at);
    auto eq = pair.find('=');
    if (pair.substr(0, eq) == key) return eq == std::string::npos ? "" : pair.substr(eq + 1);
    if (amp == std::string::npos) break;
    at = amp + 1;
  }
  return {};
}

// A chunked body from `fd` (what is already read first, in `buf`), each piece to `take`; no
// trailers. What follows the body stays in `buf`. False when the connection ends first.
bool read_chunked(int fd, std::string& buf, const std::function<void(const char*, std::size_t)>& take) {
  char chunk[65536];
  auto more = [&] {
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buf.append(chunk, static_cast<std::size_t>(n));
    return true;
  };
  while (true) {
    std::size_t eol;
    while ((eol = buf.find("\r\n")) == std::string::npos)
      if (!more()) return false;
    const std::size_t size = std::stoul(buf.substr(0, eol), nullptr, 16);
    buf.erase(0, eol + 2);
    while (buf.size() < size + 2)
      if (!more()) return false;
    take(buf.data(), size);
    buf.erase(0, size + 2);
    if (size == 0) return true;
  }
}

std::string reply(int status, const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\nX-Upstream-Secret: hidden\r\n" + extra + "\r\n" + body;
}

// RFC 6455 4.2.2: base64(SHA-1(key + the protocol's GUID)).
std::string websocket_accept(const std::string& key) {
  const std::string text = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  unsigned char out[64];
  int n = EVP_EncodeBlock(out, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<char*>(out), static_cast<std::size_t>(n));
}

// One unmasked frame from the server.
std::string frame(int opcode, const std::string& payload) {
  std::string f(1, static_cast<char>(0x80 | opcode));
  if (payload.size() < 126) {
    f += static_cast<char>(payload.size());
  } else if (payload.size() < 65536) {
    f += static_cast<char>(126);
    f += static_cast<char>(payload.size() >> 8);
    f += static_cast<char>(payload.size() & 0xff);
  } else {
    f += static_cast<char>(127);
    for (int i = 7; i >= 0; --i) f += static_cast<char>((static_cast<uint64_t>(payload.size()) >> (8 * i)) & 0xff);
  }
  return f + payload;
}

}  // namespace

// A WebSocket that greets first ("hello from NAME", sent with the 101 head), then echoes each
// text or binary message as "echo:" + message, answers pings, and closes when asked; a text
// message "close-now" makes the server close.
void TestUpstream::websocket(int fd, std::string buf, const std::string& key) {
  std::string head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: " + websocket_accept(key) + "\r\nX-Upstream: " + name_ + "\r\n\r\n";
  ++websockets_;  // before the greeting: a client that has read it may count at once
  if (!send_all(fd, head + frame(1, "hello from " + name_))) return;
  char chunk[16384];
  std::string message;
  int message_opcode = 0;
  while (!stopping_) {
    // A whole frame in buf, or read more.
    auto need = [&](std::size_t n) {
      while (buf.size() < n) {
        ssize_t got = ::recv(fd, chunk, sizeof chunk, 0);
        if (got <= 0) return false;
        buf.append(chunk, static_cast<std::size_t>(got));
      }
      return true;
    };
    if (!need(2)) return;
    const bool fin = (buf[0] & 0x80) != 0;
    const int opcode = buf[0] & 0x0f;
    uint64_t len = static_cast<unsigned char>(buf[1]) & 0x7f;
    std::size_t at = 2;
    if (len == 126) {
      if (!need(4)) return;
      len = (static_cast<unsigned char>(buf[2]) << 8) | static_cast<unsigned char>(buf[3]);
      at = 4;
    } else if (len == 127) {
      if (!need(10)) return;
      len = 0;
      for (int i = 0; i < 8; ++i) len = (len << 8) | static_cast<unsigned char>(buf[2 + i]);
      at = 10;
    }
    if (!need(at + 4 + len)) return;
    const std::string mask = buf.substr(at, 4);
    std::string payload = buf.substr(at + 4, len);
    for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(payload[i] ^ mask[i % 4]);
    buf.erase(0, at + 4 + len);
    if (opcode == 8) {  // close: answer it, then end
      send_all(fd, frame(8, payload.substr(0, 2)));
      return;
    }
    if (opcode == 9) {
      if (!send_all(fd, frame(10, payload))) return;
      continue;
    }
    if (opcode == 1 || opcode == 2) message_opcode = opcode;
    message += payload;
    if (!fin) continue;
    if (message == "close-now") {
      send_all(fd, frame(8, std::string("\x03\xe8", 2)));
      return;
    }
    if (!send_all(fd, frame(message_opcode, "echo:" + message))) return;
    message.clear();
  }
}

TestUpstream::TestUpstream(std::string name, int port) : name_(std::move(name)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_fd_, 4096) != 0) {
    throw std::runtime_error("test upstream cannot listen");
  }
  socklen_t len = sizeof a;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

TestUpstream::~TestUpstream() {
  stop();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

void TestUpstream::stop() {
  if (stopping_.exchange(true)) return;
  ::shutdown(listen_fd_, SHUT_RDWR);
  ::close(listen_fd_);
  if (acceptor_.joinable()) acceptor_.join();
  std::lock_guard lock(mu_);
  for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
}

std::vector<TestUpstream::Seen> TestUpstream::seen() {
  std::lock_guard lock(mu_);
  return seen_;
}

void TestUpstream::accept_loop() {
  while (!stopping_) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopping_) return;
      continue;
    }
    int id = ++connections_;
    std::lock_guard lock(mu_);
    open_fds_.insert(fd);
    threads_.emplace_back([this, fd, id] { serve(fd, id); });
  }
}

void TestUpstream::serve(int fd, int connection) {
  std::string buf;
  char chunk[16384];
  auto done = [&] {
    std::lock_guard lock(mu_);
    open_fds_.erase(fd);
    ::close(fd);
  };
  while (!stopping_) {
    std::size_t end;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
      ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n <= 0) return done();
      buf.append(chunk, static_cast<std::size_t>(n));
    }
    Seen s;
    s.connection = connection;
    std::string head = buf.substr(0, end);
    buf.erase(0, end + 4);
    auto line_end = head.find("\r\n");
    std::string start = head.substr(0, line_end);
    auto sp1 = start.find(' '), sp2 = start.rfind(' ');
    s.method = start.substr(0, sp1);
    s.target = start.substr(sp1 + 1, sp2 - sp1 - 1);
    std::size_t at = line_end == std::string::npos ? head.size() : line_end + 2;
    while (at < head.size()) {
      auto e = head.find("\r\n", at);
      std::string line = head.substr(at, e == std::string::npos ? std::string::npos : e - at);
      auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        s.headers[lower(line.substr(0, colon))] = value;
      }
      if (e == std::string::npos) break;
      at = e + 2;
    }
    const std::string upload_path = s.target.substr(0, s.target.find('?'));
    if (upload_path == "/refuse-upload") {
      {
        std::lock_guard lock(mu_);
        seen_.push_back(s);
      }
      send_all(fd, reply(413, "{\"error\":\"too big for me\"}", "Connection: close\r\n"));
      ::shutdown(fd, SHUT_WR);  // a lingering close: the reply is not lost to a reset
      timeval tv{2, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      while (::recv(fd, chunk, sizeof chunk, 0) > 0) {
      }
      return done();
    }
    if (upload_path == "/upload") {
      // Taken piece by piece: only the count and a hash are kept.
      uint64_t fnv = 1469598103934665603ull;
      int64_t bytes = 0;
      auto take = [&](const char* p, std::size_t n) {
        for (std::size_t i = 0; i < n; ++i) fnv = (fnv ^ static_cast<unsigned char>(p[i])) * 1099511628211ull;
        bytes += static_cast<int64_t>(n);
        upload_bytes_.fetch_add(static_cast<int64_t>(n));
      };
      auto more = [&] {
        ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
        if (n <= 0) return false;
        buf.append(chunk, static_cast<std::size_t>(n));
        return true;
      };
      const bool chunked = lower(s.headers["transfer-encoding"]).find("chunked") != std::string::npos;
      if (chunked) {
        if (!read_chunked(fd, buf, take)) return done();
      } else {
        std::size_t left = s.headers.count("content-length") ? std::stoul(s.headers["content-length"]) : 0;
        while (left > 0) {
          if (buf.empty() && !more()) return done();
          const std::size_t n = std::min(left, buf.size());
          take(buf.data(), n);
          buf.erase(0, n);
          left -= n;
        }
      }
      {
        std::lock_guard lock(mu_);
        seen_.push_back(s);
      }
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv));
      const std::string body = boost::json::serialize(boost::json::object{{"bytes", bytes}, {"fnv", hex}, {"chunked", chunked}});
      if (!send_all(fd, reply(200, body, ""))) return done();
      continue;
    }
    if (lower(s.headers["transfer-encoding"]).find("chunked") != std::string::npos) {
      // A chunked body (an OpenTelemetry SDK's export, say), read whole.
      if (!read_chunked(fd, buf, [&](const char* p, std::size_t n) { s.body.append(p, n); })) return done();
    } else {
      std::size_t length = s.headers.count("content-length") ? std::stoul(s.headers["content-length"]) : 0;
      while (buf.size() < length) {
        ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
        if (n <= 0) return done();
        buf.append(chunk, static_cast<std::size_t>(n));
      }
      s.body = buf.substr(0, length);
      buf.erase(0, length);
    }
    std::string path = s.target.substr(0, s.target.find('?'));
    if (path == "/wrong-upgrade") {  // switches to a protocol nobody asked for
      send_all(fd, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n");
      return done();
    }
    if (lower(s.headers["upgrade"]) == "websocket" && path != "/refuse-upgrade") {
      {
        std::lock_guard lock(mu_);
        seen_.push_back(s);
      }
      websocket(fd, std::move(buf), s.headers["sec-websocket-key"]);
      return done();
    }
    if (path == "/healthz") {
      ++health_checks_;
      bool ok = healthy_;
      if (!send_all(fd, reply(ok ? 200 : 503, ok ? "{\"ok\":true}" : "{\"ok\":false}"))) return done();
      continue;
    }
    {
      std::lock_guard lock(mu_);
      seen_.push_back(s);
    }
    if (path == "/reset") {
      linger l{1, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
      return done();
    }
    if (path == "/garbage") {
      send_all(fd, "THIS IS NOT HTTP AT ALL\r\n\r\n");
      return done();
    }
    if (path == "/slow") {
      int ms = std::atoi(query_value(s.target, "ms").c_str());
      for (int waited = 0; waited < ms && !stopping_; waited += 10) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::optional<std::pair<int, std::string>> fixed;
    {
      std::lock_guard lock(mu_);
      if (auto it = fixed_.find(path); it != fixed_.end()) fixed = it->second;
    }
    if (fixed) {
      if (!send_all(fd, reply(fixed->first, fixed->second))) return done();
      continue;
    }
    if (path == "/chunked") {  // N bytes of 'c' in chunks of 10,000, no Content-Length; one write up to 10,000
      std::size_t left = static_cast<std::size_t>(std::atol(query_value(s.target, "bytes").c_str()));
      std::string out = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
      while (left > 0) {
        std::size_t n = std::min<std::size_t>(left, 10000);
        char size[16];
        std::snprintf(size, sizeof size, "%zx\r\n", n);
        out += size + std::string(n, 'c') + "\r\n";
        left -= n;
        if (left == 0) break;  // the last chunk goes with the end
        if (!send_all(fd, out)) return done();
        out.clear();
      }
      if (!send_all(fd, out + "0\r\n\r\n")) return done();
      continue;
    }
    if (path == "/events") {  // server-sent events: N of them, MS apart, chunked
      const int n = std::atoi(query_value(s.target, "n").c_str()), ms = std::atoi(query_value(s.target, "ms").c_str());
      if (!send_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")) return done();
      for (int i = 0; i < n && !stopping_; ++i) {
        if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
        const std::string event = "data: event " + std::to_string(i) + "\n\n";
        char size[16];
        std::snprintf(size, sizeof size, "%zx\r\n", event.size());
        if (!send_all(fd, size + event + "\r\n")) return done();
      }
      if (!send_all(fd, "0\r\n\r\n")) return done();
      continue;
    }
    if (path == "/truncated") {  // promises N bytes, sends half, closes
      std::size_t n = static_cast<std::size_t>(std::atol(query_value(s.target, "bytes").c_str()));
      send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(n) + "\r\n\r\n" + std::string(n / 2, 't'));
      return done();
    }
    int status = 200;
    if (path.rfind("/status/", 0) == 0) status = std::atoi(path.c_str() + 8);
    std::string body;
    if (path == "/big") {
      body.assign(static_cast<std::size_t>(std::atol(query_value(s.target, "bytes").c_str())), 'x');
    } else {
      boost::json::object headers;
      for (const auto& [k, v] : s.headers) headers[k] = v;
      body = boost::json::serialize(boost::json::object{{"server", name_},
                                                        {"method", s.method},
                                                        {"target", s.target},
                                                        {"headers", std::move(headers)},
                                                        {"body", s.body},
                                                        {"connection", connection}});
    }
    std::string out = reply(status, body, "Connection: keep-alive, X-Hop\r\nX-Hop: drop-me\r\n");
    if (s.method == "HEAD") out.resize(out.size() - body.size());  // the head a GET would have, no body
    if (!send_all(fd, out)) return done();
  }
  done();
}

}  // namespace nimbus::testing
