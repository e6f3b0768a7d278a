#pragma once
// HAProxy from Debian as the tests' real load balancer, TCP proxy and TLS terminator.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

extern char** environ;

namespace nimbus::testing {

// HAProxy on loopback `port` with `proxies` (its frontends and backends), until stop() or
// destruction.
class Haproxy {
 public:
  Haproxy(const std::filesystem::path& dir, int port, const std::string& proxies) : port_(port) {
    const auto file = dir / ("haproxy-" + std::to_string(port) + ".cfg");
    std::ofstream(file) << "global\n  maxconn 2000\ndefaults\n  timeout connect 1s\n  timeout client 30s\n"
                           "  timeout server 30s\n"
                        << proxies;
    std::string bin = "/usr/sbin/haproxy", f = "-f", path = file.string(), db = "-db";
    char* argv[] = {bin.data(), f.data(), path.data(), db.data(), nullptr};
    if (::posix_spawn(&pid_, bin.c_str(), nullptr, nullptr, argv, environ) != 0) pid_ = -1;
    for (int i = 0; i < 500 && pid_ > 0; ++i) {  // until it listens
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(static_cast<uint16_t>(port_));
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
      ::close(fd);
      if (up) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~Haproxy() { stop(); }
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);  // its connections end at once, as in a network failure
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  bool running() const { return pid_ > 0 && ::kill(pid_, 0) == 0; }
  int port() const { return port_; }

 private:
  int port_;
  pid_t pid_ = -1;
};

}  // namespace nimbus::testing
