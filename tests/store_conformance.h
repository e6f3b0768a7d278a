#pragma once
// The store conformance suite's fixture and helpers: every backend must pass the whole suite
// unchanged (parameterized by backend: sqlite, and postgres on the run's PostgreSQL server;
// and redis on a redis-server this process starts).
// Time is a ManualClock, so leases, delays and TTLs expire when the test says. The suite is
// instantiated once, in store_conformance_test.cpp.
#include <gtest/gtest.h>

#include <limits>
#include <signal.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "postgres_server.h"
#include "redis_server.h"
#include "store/store.h"

namespace nimbus {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

inline fs::path fresh_dir() {
  std::random_device rd;
  fs::path dir = fs::temp_directory_path() / ("nimbus-store-" + std::to_string(rd()) + std::to_string(rd()));
  fs::create_directories(dir);
  return dir;
}

class StoreConformance : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fresh_dir();
    url_ = GetParam();
    if (url_.rfind("postgres", 0) == 0) {
      // A fresh database on the run's PostgreSQL server (tests/postgres_server.h).
      std::string why;
      auto* server = testing::shared_postgres(&why);
      ASSERT_NE(server, nullptr) << why;
      url_ = server->create_database();
      ASSERT_FALSE(url_.empty()) << server->error();
    } else if (url_ == "redis") {
      // A prefix of its own on this process's Redis server (tests/redis_server.h).
      std::string why;
      auto* server = testing::shared_redis(&why);
      ASSERT_NE(server, nullptr) << why;
      url_ = server->create_url();
    }
    reopen();
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void reopen() {
    store_.reset();
    auto s = open_store(url_, dir_, clock_);
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(*s);
  }
  static NewMessage msg(std::string payload, std::string type = "t", std::string subject = "") {
    NewMessage m;
    m.payload = std::move(payload);
    m.type = std::move(type);
    m.source = "/tests";
    m.subject = std::move(subject);
    return m;
  }
  std::string enqueue(const std::string& queue, NewMessage m) {
    Batch b;
    b.enqueues.push_back({queue, std::move(m)});
    auto r = store_->commit_sync(std::move(b));
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? r->message_ids.at(0) : std::string();
  }
  Expected<BatchResult> commit(Batch b) { return store_->commit_sync(std::move(b)); }
  std::vector<Message> receive(const std::string& queue, int max, int64_t lease_ms = 30000) {
    auto r = store_->receive_sync(queue, max, lease_ms);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return r.ok() ? *r : std::vector<Message>{};
  }
  QueueStats stats_of(const std::string& queue) {
    auto all = store_->stats();
    EXPECT_TRUE(all.ok());
    for (auto& q : *all)
      if (q.queue == queue) return q;
    return QueueStats{queue};
  }
  static Batch ack(const Message& m) {
    Batch b;
    b.acks.push_back({m.id, m.lease});
    return b;
  }

  fs::path dir_;
  std::string url_;  // the store this test runs on
  ManualClock clock_;
  std::unique_ptr<Store> store_;
};

inline Batch::Append append_to(const std::string& stream, int partitions, std::string key, std::string payload) {
  Batch::Append a;
  a.stream = stream;
  a.partitions = partitions;
  a.key = std::move(key);
  a.record.payload = std::move(payload);
  a.record.type = "reading";
  a.record.source = "/devices";
  a.record.metadata = {{"unit", "C"}};
  return a;
}

inline Batch::BlobPut blob_put(std::string container, std::string name, std::string data,
                        std::optional<std::string> if_match = std::nullopt) {
  Batch::BlobPut p;
  p.container = std::move(container);
  p.name = std::move(name);
  p.data = std::move(data);
  p.if_match = std::move(if_match);
  return p;
}

inline Batch put_batch(Batch::BlobPut p) {
  Batch b;
  b.blob_puts.push_back(std::move(p));
  return b;
}

inline Batch delete_batch(std::string container, std::string name, std::optional<std::string> if_match = std::nullopt) {
  Batch b;
  b.blob_deletes.push_back({std::move(container), std::move(name), std::move(if_match), {}, {}});
  return b;
}

// Reads `fd` into `into` until it holds `lines` newlines, the writer is gone, or 30 s pass.
inline void read_lines_until(int fd, std::string& into, std::size_t lines) {
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  char buf[4096];
  while (static_cast<std::size_t>(std::count(into.begin(), into.end(), '\n')) < lines &&
         std::chrono::steady_clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return;
    into.append(buf, static_cast<std::size_t>(n));
  }
}

// A host killed with SIGKILL: `work` runs in a forked child on the store at `url` (it writes
// a line to `fd` for each thing it was told is committed), and is killed at a random moment
// once it has told `lines` of them (however slowly it starts: under a sanitizer it can take a
// while). Returns every line it told.
inline std::string run_then_kill(const std::string& url, const fs::path& dir, std::size_t lines,
                                 const std::function<void(Store& store, int fd)>& work) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return {};
  pid_t child = ::fork();
  if (child == 0) {
    ::close(pipefd[0]);
    SystemClock clock;
    auto s = open_store(url, dir, clock);
    if (!s.ok()) ::_exit(2);
    work(**s, pipefd[1]);
    ::_exit(0);
  }
  ::close(pipefd[1]);
  std::string told;
  read_lines_until(pipefd[0], told, lines);
  std::this_thread::sleep_for(std::chrono::milliseconds(std::random_device{}() % 300));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) told.append(buf, static_cast<std::size_t>(n));
  ::close(pipefd[0]);
  return told;
}

// Puts and replaces blobs under 50 names (deleting one every 7th commit) until killed; a line
// per commit it was told of.
inline void put_blobs_forever(Store& s, int fd) {
  for (int i = 0;; ++i) {
    Batch b = put_batch(blob_put("c", "n" + std::to_string(i % 50), std::string(1000 + i % 4000, static_cast<char>('a' + i % 26))));
    if (i % 7 == 0) b.blob_deletes.push_back({"c", "n" + std::to_string((i + 3) % 50), std::nullopt, {}, {}});
    s.commit(std::move(b), [fd](Expected<BatchResult> r) {
      if (r.ok()) (void)!::write(fd, "\n", 1);
    });
    if (i % 16 == 0) ::usleep(200);
  }
}

inline int64_t now_ms(const ManualClock& clock) { return unix_ms(clock); }

inline std::string meta(const Message& m, const std::string& key) {
  const std::string* v = find_header(m.metadata, key);
  return v ? *v : "(none)";
}

}  // namespace nimbus
