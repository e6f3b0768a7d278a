#pragma once
// Two hosts on one shared store (PostgreSQL or Redis): what each backend's own tests check of
// them, said once.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "store/store.h"

namespace nimbus::testing {

// `a` and `b` are two stores opened on one database or server. A commit on b wakes a's
// watcher (once a listens: a wake is sent until a hears one, as a host's polls would cover a
// wake told before it listened), and the two take one queue of 400 messages between them as
// competing consumers: every message is leased by exactly one, and each takes a share.
inline void expect_two_hosts_hear_each_other_and_share_a_queue(Store& a, Store& b) {
  using namespace std::chrono_literals;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> heard;
  auto watch = a.watch_changes([&](const std::vector<std::string>& names) {
    std::lock_guard l(mu);
    heard.insert(heard.end(), names.begin(), names.end());
    cv.notify_all();
  });
  const auto heard_of = [&](const std::string& name) { return std::count(heard.begin(), heard.end(), name) > 0; };
  bool ready = false;
  for (int i = 0; i < 200 && !ready; ++i) {
    Batch probe;
    probe.wakes.push_back("ready");
    ASSERT_TRUE(b.commit_sync(std::move(probe)).ok());
    std::unique_lock l(mu);
    ready = cv.wait_for(l, 50ms, [&] { return heard_of("ready"); });
  }
  ASSERT_TRUE(ready) << "host a never heard a wake from host b";

  Batch one;
  for (int i = 0; i < 400; ++i) {
    NewMessage m;
    m.payload = std::to_string(i);
    one.enqueues.push_back({"work", m});
  }
  ASSERT_TRUE(b.commit_sync(std::move(one)).ok());
  {
    std::unique_lock l(mu);
    ASSERT_TRUE(cv.wait_for(l, 10s, [&] { return heard_of("work"); })) << "host a never heard of host b's commit";
  }

  std::set<std::string> seen_a, seen_b;
  // Each takes its first lease before either goes on (a loaded machine may otherwise run one
  // thread to the end before the other starts); from then on they compete freely.
  std::atomic<int> started{0};
  auto drain = [&started](Store& s, std::set<std::string>& seen) {
    for (bool first = true;; first = false) {
      auto got = s.receive_sync("work", 7, 60000);
      if (first) {
        started.fetch_add(1);
        for (int i = 0; i < 10000 && started.load() < 2; ++i) std::this_thread::sleep_for(1ms);
      }
      if (!got.ok() || got->empty()) return;
      Batch acks;
      for (auto& m : *got) {
        seen.insert(m.id);
        acks.acks.push_back({m.id, m.lease});
      }
      if (!s.commit_sync(std::move(acks)).ok()) return;
    }
  };
  std::thread ta([&] { drain(a, seen_a); });
  std::thread tb([&] { drain(b, seen_b); });
  ta.join();
  tb.join();
  EXPECT_EQ(seen_a.size() + seen_b.size(), 400u);
  for (const auto& id : seen_a) EXPECT_EQ(seen_b.count(id), 0u) << id << " went to both hosts";
  EXPECT_GT(seen_a.size(), 0u) << "host a took no share of the queue";
  EXPECT_GT(seen_b.size(), 0u) << "host b took no share of the queue";
}

}  // namespace nimbus::testing
