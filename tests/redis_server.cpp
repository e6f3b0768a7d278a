#include "redis_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "free_port.h"

namespace nimbus::testing {
namespace fs = std::filesystem;

namespace {

// Whether a server answers PING on 127.0.0.1:port.
bool answers(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 && ::write(fd, "PING\r\n", 6) == 6) {
    char buf[16] = {};
    timeval tv{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ok = ::read(fd, buf, sizeof buf - 1) > 0 && std::string(buf).rfind("+PONG", 0) == 0;
  }
  ::close(fd);
  return ok;
}

}  // namespace

RedisServer::RedisServer(fs::path dir, int port, std::string appendfsync)
    : dir_(std::move(dir)), port_(port > 0 ? port : free_port()), appendfsync_(std::move(appendfsync)) {
  fs::create_directories(dir_);
}

RedisServer::~RedisServer() { stop(); }

bool RedisServer::start() {
  if (pid_ > 0) return true;
  if (::access("/usr/bin/redis-server", X_OK) != 0) {
    error_ = "redis-server is not installed (apt-get install redis-server; scripts/setup.sh does)";
    return false;
  }
  const std::vector<std::string> argv = {
      "/usr/bin/redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1", "--dir", dir_.string(),
      "--appendonly", "yes", "--appendfsync", appendfsync_, "--save", "", "--daemonize", "no", "--logfile",
      (dir_ / "redis.log").string(), "--protected-mode", "no"};
  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // dies with the test that started it
    if (::getppid() != parent) ::_exit(1);
    int null = ::open("/dev/null", O_RDWR);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::dup2(null, 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  for (int i = 0; i < 300; ++i) {  // up to 30 s (loading a large append-only file takes a while)
    if (answers(port_)) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      error_ = "redis-server exited at start; see " + (dir_ / "redis.log").string();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  error_ = "redis-server did not answer on port " + std::to_string(port_) + " within 30 s";
  kill_hard();
  return false;
}

void RedisServer::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void RedisServer::kill_hard() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string RedisServer::create_url() {
  static std::mt19937_64 rng{std::random_device{}()};
  return "redis://127.0.0.1:" + std::to_string(port_) + "/0?prefix=t" + std::to_string(rng());
}

RedisServer* shared_redis(std::string* why) {
  static std::mutex mu;
  static std::unique_ptr<RedisServer> server;
  static std::string failed;
  std::lock_guard lock(mu);
  if (server) return server.get();
  if (!failed.empty()) {
    *why = failed;
    return nullptr;
  }
  std::random_device rd;
  auto own = std::make_unique<RedisServer>(fs::temp_directory_path() / ("nimbus-redis-" + std::to_string(rd())));
  if (!own->start()) {
    failed = own->error();
    *why = failed;
    return nullptr;
  }
  server = std::move(own);
  std::atexit([] {
    if (server) {
      const fs::path dir = server->dir();
      server->stop();
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  });
  return server.get();
}

}  // namespace nimbus::testing
