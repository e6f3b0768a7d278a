#pragma once
// A real PostgreSQL server for tests and benchmarks: initdb into a folder of its own, started
// with pg_ctl on a free loopback port (and a socket in that folder), stopped at the end. As
// root (initdb refuses to run as root) the server runs as the user `postgres` that Debian's
// package creates. Tests share one server per ctest run (started by the `postgres` fixture,
// tests/CMakeLists.txt) and take a fresh database each; a test binary run on its own starts
// its own server.
#include <sys/types.h>

#include <filesystem>
#include <string>
#include <vector>

namespace nimbus::testing {

class PostgresServer {
 public:
  // A server in `dir` (created; initdb'd by start()) on `port` (0: a free one).
  explicit PostgresServer(std::filesystem::path dir, int port = 0);
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // initdb (once) and start; waits until it takes connections. False with error() when
  // PostgreSQL is not installed or does not come up.
  bool start();
  void stop();        // a fast shutdown (pg_ctl stop -m fast)
  void kill_hard();   // SIGKILL to the postmaster: a crash (the next start recovers)
  int port() const { return port_; }
  const std::filesystem::path& dir() const { return dir_; }
  // postgres://nimbus@127.0.0.1:PORT/DB
  std::string url(const std::string& database = "postgres") const;
  // A new empty database; its URL (empty with error() on failure).
  std::string create_database();
  const std::string& error() const { return error_; }

 private:
  bool run(const std::string& what, const std::vector<std::string>& argv);

  std::filesystem::path dir_;
  int port_;
  std::string error_;
  bool started_ = false;
};

// The server this test process uses: the one the ctest fixture started (its folder in
// $NIMBUS_TEST_PG), else one started now for this process (stopped when it exits). Null with
// `why` set when there is none.
PostgresServer* shared_postgres(std::string* why);

// The folder where PostgreSQL's programs are (initdb, pg_ctl, postgres); empty when not installed.
std::filesystem::path postgres_bin_dir();

}  // namespace nimbus::testing
