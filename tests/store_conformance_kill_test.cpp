// The conformance suite's kill -9 tests, on every backend: a host killed with SIGKILL at a
// random moment loses nothing it was told was committed, and leaves no half-written blob.
#include "store_conformance.h"

namespace nimbus {
namespace {

TEST_P(StoreConformance, AHostKilledWithSigkillLosesNoAcknowledgedCommit) {
  store_.reset();  // the child opens its own
  const std::string acked = run_then_kill(url_, dir_, 101, [](Store& s, int fd) {
    for (int i = 0;; ++i) {
      Batch b;
      NewMessage m;
      m.id = "m" + std::to_string(i);
      b.enqueues.push_back({"q", m});
      s.commit(std::move(b), [fd, i](Expected<BatchResult> r) {
        if (r.ok()) {
          std::string line = std::to_string(i) + "\n";
          (void)!::write(fd, line.data(), line.size());  // told committed: must survive
        }
      });
      if (i % 64 == 0) ::usleep(100);
    }
  });
  std::set<std::string> told;
  std::size_t start = 0, nl;
  while ((nl = acked.find('\n', start)) != std::string::npos) {
    told.insert("m" + acked.substr(start, nl - start));
    start = nl + 1;
  }
  ASSERT_GT(told.size(), 100u) << "the child committed too little to prove anything";
  reopen();
  auto all = store_->peek("q", 10000000);
  ASSERT_TRUE(all.ok()) << all.error().message;
  std::set<std::string> present;
  for (auto& m : *all) present.insert(m.id);
  for (const auto& id : told) ASSERT_TRUE(present.count(id)) << id << " was acknowledged and then lost";
}

// kill -9 while blobs are put and replaced: after a reopen every blob listed reads back whole
// (its bytes match its SHA-256 and size).
TEST_P(StoreConformance, AHostKilledDuringBlobPutsLeavesEveryBlobWhole) {
  store_.reset();
  run_then_kill(url_, dir_, 60, put_blobs_forever);  // enough puts that more than 10 names hold blobs
  reopen();
  auto page = store_->list_blobs("c", "", "", 1000);
  ASSERT_TRUE(page.ok()) << page.error().message;
  ASSERT_GT(page->blobs.size(), 10u) << "the child committed too little to prove anything";
  for (const auto& info : page->blobs) {
    auto got = store_->get_blob("c", info.name);
    ASSERT_TRUE(got.ok()) << got.error().message;
    ASSERT_TRUE(got->has_value());
    EXPECT_EQ(sha256_hex((*got)->data), info.sha256) << info.name;
    EXPECT_EQ(static_cast<int64_t>((*got)->data.size()), info.size);
  }
}

}  // namespace
}  // namespace nimbus
