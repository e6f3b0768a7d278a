#include "postgres_server.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <vector>

#include "free_port.h"

namespace nimbus::testing {
namespace fs = std::filesystem;

fs::path postgres_bin_dir() {
  for (const char* v : {"17", "16", "15", "14", "13"}) {
    fs::path dir = fs::path("/usr/lib/postgresql") / v / "bin";
    if (::access((dir / "initdb").c_str(), X_OK) == 0) return dir;
  }
  return {};
}

PostgresServer::PostgresServer(fs::path dir, int port) : dir_(std::move(dir)), port_(port > 0 ? port : free_port()) {
  fs::create_directories(dir_);
}

PostgresServer::~PostgresServer() {
  if (started_) stop();
}

// Runs a PostgreSQL program, as the user postgres when we are root; its output to tools.log (the server logs to data/postgres.log).
bool PostgresServer::run(const std::string& what, const std::vector<std::string>& argv) {
  const passwd* pg = ::geteuid() == 0 ? ::getpwnam("postgres") : nullptr;
  if (::geteuid() == 0 && !pg) {
    error_ = "running as root, and there is no user 'postgres' to run PostgreSQL as (apt-get install postgresql)";
    return false;
  }
  if (pg) {
    // The server's user owns its folder (initdb refuses a folder it cannot own).
    (void)!::chown(dir_.c_str(), pg->pw_uid, pg->pw_gid);
  }
  const std::string log = (dir_ / "tools.log").string();
  pid_t child = ::fork();
  if (child == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0666);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    if (pg && (::setgid(pg->pw_gid) != 0 || ::setuid(pg->pw_uid) != 0)) ::_exit(126);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    // A clean environment: no locale or PG* variables of the caller's.
    char path[] = "PATH=/usr/bin:/bin";
    char lang[] = "LC_ALL=C";
    char* env[] = {path, lang, nullptr};
    ::execve(args[0], args.data(), env);
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  if (text.size() > 2000) text = text.substr(text.size() - 2000);
  error_ = what + " failed (status " + std::to_string(status) + "): " + text;
  return false;
}

bool PostgresServer::start() {
  const fs::path bin = postgres_bin_dir();
  if (bin.empty()) {
    error_ = "PostgreSQL is not installed; run scripts/setup.sh (apt-get install postgresql)";
    return false;
  }
  const fs::path data = dir_ / "data";
  if (!fs::exists(data / "PG_VERSION")) {
    if (!run("initdb", {(bin / "initdb").string(), "-D", data.string(), "-U", "nimbus", "-A", "trust", "-E", "UTF8",
                        "--locale=C", "--no-sync"})) {
      return false;
    }
  }
  // Tests simulate killed hosts and restarted servers, never power loss: no fsync, unless
  // NIMBUS_PG_FSYNC=on asks for the server's defaults (benchmarks against peers that keep them).
  const char* keep_fsync = std::getenv("NIMBUS_PG_FSYNC");
  const bool fsync = keep_fsync && std::string(keep_fsync) == "on";
  const std::string options = "-p " + std::to_string(port_) + " -k " + dir_.string() +
                              " -c listen_addresses=127.0.0.1" + (fsync ? "" : " -c fsync=off -c full_page_writes=off") +
                              " -c max_connections=300 -c shared_buffers=32MB";
  if (!run("pg_ctl start", {(bin / "pg_ctl").string(), "-D", data.string(), "-l", (data / "postgres.log").string(), "-w",
                            "-t", "60", "-o", options, "start"})) {
    return false;
  }
  started_ = true;
  return true;
}

void PostgresServer::stop() {
  if (!started_) return;
  started_ = false;
  run("pg_ctl stop", {(postgres_bin_dir() / "pg_ctl").string(), "-D", (dir_ / "data").string(), "-m", "fast", "-w", "stop"});
}

void PostgresServer::kill_hard() {
  std::ifstream pidfile(dir_ / "data" / "postmaster.pid");
  pid_t pid = 0;
  if (pidfile >> pid && pid > 0) ::kill(pid, SIGKILL);
  // Its backends end when they find the postmaster gone; wait for the pid file's lock to go.
  for (int i = 0; i < 500 && pid > 0 && ::kill(pid, 0) == 0; ++i) ::usleep(10000);
  started_ = false;
}

std::string PostgresServer::url(const std::string& database) const {
  return "postgres://nimbus@127.0.0.1:" + std::to_string(port_) + "/" + database;
}

std::string PostgresServer::create_database() {
  std::random_device rd;
  const std::string name = "t" + std::to_string(rd()) + std::to_string(rd());
  PGconn* c = PQconnectdb(url().c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    error_ = std::string("cannot connect to the test server: ") + PQerrorMessage(c);
    PQfinish(c);
    return {};
  }
  PGresult* r = PQexec(c, ("CREATE DATABASE " + name).c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) error_ = std::string("CREATE DATABASE failed: ") + PQerrorMessage(c);
  PQclear(r);
  PQfinish(c);
  return ok ? url(name) : std::string();
}

PostgresServer* shared_postgres(std::string* why) {
  static std::mutex mu;
  static std::unique_ptr<PostgresServer> server;
  static std::string failed;
  std::lock_guard lock(mu);
  if (server) return server.get();
  if (!failed.empty()) {
    *why = failed;
    return nullptr;
  }
  if (const char* dir = std::getenv("NIMBUS_TEST_PG"); dir && *dir) {
    std::ifstream in(fs::path(dir) / "port");
    int port = 0;
    if (in >> port && port > 0) {
      server = std::make_unique<PostgresServer>(dir, port);  // not started_: this process does not stop it
      return server.get();
    }
  }
  std::random_device rd;
  auto own = std::make_unique<PostgresServer>(fs::temp_directory_path() / ("nimbus-pg-" + std::to_string(rd())));
  if (!own->start()) {
    failed = own->error();
    *why = failed;
    return nullptr;
  }
  server = std::move(own);
  // Stopped when the process exits normally (a forked child leaves with _exit and does not).
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
