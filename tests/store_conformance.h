#pragma once
// The store conformance suite's fixture and helpers: every backend must pass the whole suite
// unchanged (parameterized by store URL; sqlite now, redis:// and postgres:// when they exist).
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
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

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
    reopen();
  }
  void TearDown() override {
    store_.reset();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  void reopen() {
    store_.reset();
    auto s = open_store(GetParam(), dir_, clock_);
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
  b.blob_deletes.push_back({std::move(container), std::move(name), std::move(if_match)});
  return b;
}

inline int64_t now_ms(const ManualClock& clock) { return unix_ms(clock); }

inline std::string meta(const Message& m, const std::string& key) {
  const std::string* v = find_header(m.metadata, key);
  return v ? *v : "(none)";
}

}  // namespace nimbus
