#pragma once
// A real Redis server for tests and benchmarks: redis-server from Debian on a free loopback
// port, its append-only file in a folder of its own, stopped at the end (and killed with the
// process that started it, should that one die). Each test takes a key prefix of its own
// (redis://127.0.0.1:PORT/0?prefix=...), so one server per test process serves them all.
#include <sys/types.h>

#include <filesystem>
#include <string>

namespace nimbus::testing {

class RedisServer {
 public:
  // A server keeping its files in `dir` (created) on `port` (0: a free one), with this
  // appendfsync (always, everysec or no).
  explicit RedisServer(std::filesystem::path dir, int port = 0, std::string appendfsync = "always");
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Starts it (again: it reads back its append-only file) and waits until it answers PING.
  // False with error() when redis-server is not installed or does not come up.
  bool start();
  void stop();       // SIGTERM: it finishes its file and exits
  void kill_hard();  // SIGKILL: a crash
  int port() const { return port_; }
  const std::filesystem::path& dir() const { return dir_; }
  // redis://127.0.0.1:PORT/0?prefix=<a new one each call>
  std::string create_url();
  const std::string& error() const { return error_; }

 private:
  std::filesystem::path dir_;
  int port_;
  std::string appendfsync_;
  pid_t pid_ = -1;
  std::string error_;
};

// The server this test process uses, started on first use and stopped when it exits. Null
// with `why` set when there is none.
RedisServer* shared_redis(std::string* why);

}  // namespace nimbus::testing
