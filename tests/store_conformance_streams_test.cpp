// The store conformance suite, part 2: streams, checkpoints, retention, blobs and blob events.
#include "store_conformance.h"

namespace nimbus {
namespace {

TEST_P(StoreConformance, StreamsKeepOrderPerKeyAndOffsetsPerPartition) {
  // Keys spread over partitions by hash; each key's records stay in one partition, in order.
  Batch b;
  for (int i = 0; i < 40; ++i) b.appends.push_back(append_to("telemetry", 4, "device-" + std::to_string(i % 5), std::to_string(i)));
  auto r = commit(b);
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->appended.size(), 40u);
  std::map<int, int64_t> next;  // per partition, offsets count from 0 with no gap
  for (int i = 0; i < 40; ++i) {
    const auto& pos = r->appended[static_cast<std::size_t>(i)];
    EXPECT_EQ(pos.partition, stream_partition("device-" + std::to_string(i % 5), 4));
    EXPECT_EQ(pos.offset, next[pos.partition]++);
  }
  int64_t total = 0;
  auto info = store_->stream_info("telemetry");
  ASSERT_TRUE(info.ok());
  for (const auto& p : *info) {
    auto records = store_->read_stream("telemetry", p.partition, 0, 1000);
    ASSERT_TRUE(records.ok());
    EXPECT_EQ(static_cast<int64_t>(records->size()), p.next_offset);
    std::map<std::string, int> last;  // payloads of one key only ever grow
    for (const auto& rec : *records) {
      EXPECT_EQ(stream_partition(rec.key, 4), p.partition);
      EXPECT_GT(std::stoi(rec.payload), last.count(rec.key) ? last[rec.key] : -1);
      last[rec.key] = std::stoi(rec.payload);
      EXPECT_EQ(rec.type, "reading");
      EXPECT_EQ(rec.metadata.at(0).value, "C");
    }
    total += p.records;
  }
  EXPECT_EQ(total, 40);
  // Reading from an offset returns that offset on.
  const int p0 = r->appended[0].partition;
  auto tail = store_->read_stream("telemetry", p0, 2, 2);
  ASSERT_TRUE(tail.ok());
  ASSERT_EQ(tail->size(), 2u);
  EXPECT_EQ(tail->at(0).offset, 2);
  EXPECT_EQ(tail->at(1).offset, 3);
}

TEST_P(StoreConformance, CheckpointsCommitWithOutputsAndAreFencedByTheirPreviousValue) {
  Batch first;
  first.appends.push_back(append_to("s", 1, "k", "a"));
  first.appends.push_back(append_to("s", 1, "k", "b"));
  ASSERT_TRUE(commit(first).ok());
  // Processing offsets 0..1 of group g: the checkpoint and the output go together.
  Batch done;
  done.checkpoints.push_back({"g", "s", 0, 2, int64_t{0}});
  done.enqueues.push_back({"out", msg("processed a,b")});
  ASSERT_TRUE(commit(done).ok());
  // A second consumer that read from 0 as well is fenced: its batch (and output) is refused.
  Batch stale;
  stale.checkpoints.push_back({"g", "s", 0, 2, int64_t{0}});
  stale.enqueues.push_back({"out", msg("processed a,b again")});
  auto r = commit(stale);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, store_error::conflict);
  EXPECT_EQ(stats_of("out").ready, 1);
  auto cps = store_->stream_checkpoints("s");
  ASSERT_TRUE(cps.ok());
  ASSERT_EQ(cps->size(), 1u);
  EXPECT_EQ(cps->at(0).group, "g");
  EXPECT_EQ(cps->at(0).offset, 2);
  reopen();
  cps = store_->stream_checkpoints("");
  ASSERT_TRUE(cps.ok());
  ASSERT_EQ(cps->size(), 1u);
  EXPECT_EQ(cps->at(0).offset, 2);
}

TEST_P(StoreConformance, RetentionDropsOldRecordsButNeverReusesOffsets) {
  for (int i = 0; i < 5; ++i) {
    Batch b;
    b.appends.push_back(append_to("r", 1, "k", std::to_string(i)));
    ASSERT_TRUE(commit(b).ok());
    clock_.advance(1s);
  }
  const int64_t third = unix_ms(clock_) - 3000;  // records 2, 3, 4 are at or after this time
  auto at = store_->stream_offset_at("r", 0, third);
  ASSERT_TRUE(at.ok());
  EXPECT_EQ(*at, 2);
  auto trimmed = store_->trim_stream_sync("r", third, 0);
  ASSERT_TRUE(trimmed.ok());
  EXPECT_EQ(*trimmed, 2);
  trimmed = store_->trim_stream_sync("r", 0, 2);  // keep the newest two
  ASSERT_TRUE(trimmed.ok());
  EXPECT_EQ(*trimmed, 1);
  auto info = store_->stream_info("r");
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info->size(), 1u);
  EXPECT_EQ(info->at(0).first_offset, 3);
  EXPECT_EQ(info->at(0).next_offset, 5);
  // Everything trimmed: the next append still gets a new offset.
  ASSERT_TRUE(store_->trim_stream_sync("r", unix_ms(clock_) + 1, 0).ok());
  Batch b;
  b.appends.push_back(append_to("r", 1, "k", "new"));
  auto r = commit(b);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->appended.at(0).offset, 5);
}

TEST_P(StoreConformance, ListenersHearWhichStreamPartitionsGotRecords) {
  std::mutex mu;
  std::vector<std::string> heard;
  auto watch = store_->watch_changes([&](const std::vector<std::string>& names) {
    std::lock_guard l(mu);
    heard.insert(heard.end(), names.begin(), names.end());
  });
  Batch b;
  b.appends.push_back(append_to("s", 8, "alpha", "x"));
  ASSERT_TRUE(commit(b).ok());
  std::lock_guard l(mu);
  EXPECT_EQ(heard, std::vector<std::string>{stream_wake_name("s", stream_partition("alpha", 8))});
}

// --- blobs ---------------------------------------------------------------------------------





TEST_P(StoreConformance, BlobsPutGetHeadListAndDelete) {
  Batch::BlobPut p = blob_put("uploads", "2024/a.csv", std::string("abc"));
  p.content_type = "text/csv";
  p.metadata = {{"owner", "ann"}};
  auto put = commit(put_batch(p));
  ASSERT_TRUE(put.ok()) << put.error().message;
  ASSERT_EQ(put->blobs.size(), 1u);
  const BlobInfo& info = put->blobs[0];
  EXPECT_EQ(info.version, 1);
  EXPECT_FALSE(info.etag.empty());
  EXPECT_EQ(info.size, 3);
  EXPECT_EQ(info.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");  // FIPS 180-2 "abc"
  EXPECT_EQ(info.created_ms, now_ms(clock_));

  auto got = store_->get_blob("uploads", "2024/a.csv");
  ASSERT_TRUE(got.ok() && got->has_value()) << (got.ok() ? "none" : got.error().message);
  EXPECT_EQ((*got)->data, "abc");
  EXPECT_EQ((*got)->info.content_type, "text/csv");
  EXPECT_EQ((*got)->info.etag, info.etag);
  ASSERT_EQ((*got)->info.metadata.size(), 1u);
  EXPECT_EQ((*got)->info.metadata[0].value, "ann");
  auto head = store_->head_blob("uploads", "2024/a.csv");
  ASSERT_TRUE(head.ok() && head->has_value());
  EXPECT_EQ((*head)->sha256, info.sha256);
  auto missing = store_->get_blob("uploads", "2024/b.csv");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());

  // Binary bytes, and the empty blob, round-trip exactly.
  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "2024/b.bin", std::string("\0\xff\n", 3)))).ok());
  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "2024/c", ""))).ok());
  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "2025/d", "d"))).ok());
  ASSERT_TRUE(commit(put_batch(blob_put("other", "2024/e", "e"))).ok());
  EXPECT_EQ((*store_->get_blob("uploads", "2024/b.bin"))->data, std::string("\0\xff\n", 3));
  EXPECT_EQ((*store_->get_blob("uploads", "2024/c"))->info.size, 0);

  // Paged listing by prefix, in name order.
  auto page = store_->list_blobs("uploads", "2024/", "", 2);
  ASSERT_TRUE(page.ok()) << page.error().message;
  ASSERT_EQ(page->blobs.size(), 2u);
  EXPECT_EQ(page->blobs[0].name, "2024/a.csv");
  EXPECT_EQ(page->blobs[1].name, "2024/b.bin");
  ASSERT_FALSE(page->next_after.empty());
  auto rest = store_->list_blobs("uploads", "2024/", page->next_after, 2);
  ASSERT_TRUE(rest.ok());
  ASSERT_EQ(rest->blobs.size(), 1u);
  EXPECT_EQ(rest->blobs[0].name, "2024/c");
  EXPECT_TRUE(rest->next_after.empty());
  EXPECT_EQ(store_->list_blobs("uploads", "", "", 100)->blobs.size(), 4u);

  auto del = commit(delete_batch("uploads", "2024/a.csv"));
  ASSERT_TRUE(del.ok()) << del.error().message;
  EXPECT_EQ(del->blobs_deleted, std::vector<int64_t>{1});
  EXPECT_FALSE(store_->get_blob("uploads", "2024/a.csv")->has_value());
  EXPECT_FALSE(store_->head_blob("uploads", "2024/a.csv")->has_value());
  EXPECT_EQ(store_->list_blobs("uploads", "2024/", "", 100)->blobs.size(), 2u);
  auto again = commit(delete_batch("uploads", "2024/a.csv"));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->blobs_deleted, std::vector<int64_t>{0}) << "deleting what is not there deletes nothing";

  reopen();
  EXPECT_EQ((*store_->get_blob("uploads", "2025/d"))->data, "d") << "after a reopen";
}

TEST_P(StoreConformance, BlobVersionsCountOnAcrossDeletesAndConditionalPutsConflict) {
  ASSERT_TRUE(commit(put_batch(blob_put("c", "x", "one"))).ok());
  const int64_t created = now_ms(clock_);
  clock_.advance(5s);
  auto v2 = commit(put_batch(blob_put("c", "x", "one")));  // the same bytes again: a new version
  ASSERT_TRUE(v2.ok());
  EXPECT_EQ(v2->blobs[0].version, 2);
  EXPECT_EQ(v2->blobs[0].created_ms, created);
  EXPECT_EQ(v2->blobs[0].updated_ms, created + 5000);
  const std::string etag2 = v2->blobs[0].etag;

  auto create_only = commit(put_batch(blob_put("c", "x", "two", "")));
  ASSERT_FALSE(create_only.ok());
  EXPECT_EQ(create_only.error().code, store_error::conflict);
  EXPECT_NE(create_only.error().message.find("c/x"), std::string::npos) << create_only.error().message;
  auto stale = commit(put_batch(blob_put("c", "x", "two", "no-such-etag")));
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.error().code, store_error::conflict);
  EXPECT_EQ((*store_->get_blob("c", "x"))->data, "one") << "a refused put changes nothing";

  auto v3 = commit(put_batch(blob_put("c", "x", "three", etag2)));
  ASSERT_TRUE(v3.ok()) << v3.error().message;
  EXPECT_EQ(v3->blobs[0].version, 3);
  EXPECT_NE(v3->blobs[0].etag, etag2);
  auto stale_delete = commit(delete_batch("c", "x", etag2));
  ASSERT_FALSE(stale_delete.ok());
  EXPECT_EQ(stale_delete.error().code, store_error::conflict);
  ASSERT_TRUE(commit(delete_batch("c", "x", v3->blobs[0].etag)).ok());

  clock_.advance(1s);
  auto v4 = commit(put_batch(blob_put("c", "x", "four", "")));  // create-only works once it is gone
  ASSERT_TRUE(v4.ok()) << v4.error().message;
  EXPECT_EQ(v4->blobs[0].version, 4) << "versions never repeat for a name, even across a delete";
  EXPECT_EQ(v4->blobs[0].created_ms, now_ms(clock_));

  // A batch is atomic with its blobs too: a stale ack fails the put beside it.
  Batch mixed = put_batch(blob_put("c", "y", "never"));
  mixed.acks.push_back({"no-such-message", "no-lease"});
  ASSERT_FALSE(commit(mixed).ok());
  EXPECT_FALSE(store_->get_blob("c", "y")->has_value());
}

// Hundreds of puts of one name submitted at once (they share commit groups): each is a
// version of its own, none fails.
TEST_P(StoreConformance, ManyPutsOfOneBlobAtOnceEachMakeAVersion) {
  constexpr int kPuts = 300;
  std::mutex mu;
  std::condition_variable cv;
  int done = 0;
  std::vector<std::string> errors;
  std::set<int64_t> versions;
  for (int i = 0; i < kPuts; ++i) {
    store_->commit(put_batch(blob_put("c", "hot", "v" + std::to_string(i))), [&](Expected<BatchResult> r) {
      std::lock_guard lock(mu);
      if (!r.ok()) errors.push_back(r.error().message);
      else versions.insert(r->blobs.at(0).version);
      ++done;
      cv.notify_all();
    });
  }
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 60s, [&] { return done == kPuts; }));
  EXPECT_TRUE(errors.empty()) << errors.size() << " failed, the first: " << errors.front();
  EXPECT_EQ(versions.size(), static_cast<std::size_t>(kPuts));
  EXPECT_EQ(*versions.rbegin(), kPuts);
  EXPECT_EQ((*store_->head_blob("c", "hot"))->version, kPuts);
}

TEST_P(StoreConformance, BadBlobNamesAndOversizedBlobsAreRefusedClearly) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"../etc/passwd", "'..'"}, {"a/../b", "'..'"},     {"/abs", "starts with '/'"},
      {"a//b", "empty segment"}, {"a/./b", "'.'"},       {std::string("a\0b", 3), "control character"},
      {"dir/", "ends with '/'"}, {"", "is empty"},       {std::string(2000, 'n'), "at most 1024"}};
  for (const auto& [name, why] : bad) {
    auto r = commit(put_batch(blob_put("uploads", name, "x")));
    ASSERT_FALSE(r.ok()) << "accepted " << name;
    EXPECT_EQ(r.error().code, store_error::invalid);
    EXPECT_NE(r.error().message.find(why), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("uploads"), std::string::npos) << r.error().message;
  }
  auto container = commit(put_batch(blob_put("Up Loads", "a", "x")));
  ASSERT_FALSE(container.ok());
  EXPECT_EQ(container.error().code, store_error::invalid);
  EXPECT_NE(container.error().message.find("container"), std::string::npos) << container.error().message;
  EXPECT_TRUE(store_->list_blobs("uploads", "", "", 10)->blobs.empty());

  store_.reset();
  StoreOptions small;
  small.max_blob_size = 4;
  auto s = open_store(url_, dir_, clock_, small);
  ASSERT_TRUE(s.ok()) << s.error().message;
  store_ = std::move(*s);
  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "fits", "1234"))).ok());
  auto big = commit(put_batch(blob_put("uploads", "too-big", "12345")));
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, store_error::too_large);
  EXPECT_NE(big.error().message.find("at most 4"), std::string::npos) << big.error().message;
}


TEST_P(StoreConformance, BlobPutsEnqueueOneEventPerMatchingSubscriptionInTheSameCommit) {
  ASSERT_TRUE(store_
                  ->set_blob_subscriptions_sync({{"csv", "uploads", "{name}.csv", kBlobCreated | kBlobUpdated},
                                                 {"csv", "uploads", "{name}", kBlobCreated},  // same queue: one event
                                                 {"all", "uploads", "{year}/{rest*}",
                                                  kBlobCreated | kBlobUpdated | kBlobDeleted},
                                                 {"elsewhere", "other", "{name}", kBlobCreated}})
                  .ok());
  auto bad = store_->set_blob_subscriptions_sync({{"q", "uploads", "{unclosed", kBlobCreated}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, store_error::invalid);

  std::mutex mu;
  std::vector<std::string> heard;
  auto watch = store_->watch_changes([&](const std::vector<std::string>& q) {
    std::lock_guard l(mu);
    heard.insert(heard.end(), q.begin(), q.end());
  });
  Batch::BlobPut a = blob_put("uploads", "a.csv", "1,2");
  a.content_type = "text/csv";
  ASSERT_TRUE(commit(put_batch(a)).ok());
  auto csv = receive("csv", 10);
  ASSERT_EQ(csv.size(), 1u) << "two subscriptions of one queue matched: one event";
  EXPECT_EQ(csv[0].type, "nimbus.blob.created");
  EXPECT_EQ(csv[0].source, "/blobs/uploads");
  EXPECT_EQ(csv[0].subject, "a.csv");
  EXPECT_EQ(meta(csv[0], "blob.name"), "a") << "the {name} capture";
  EXPECT_EQ(meta(csv[0], "blob.path"), "uploads/a.csv");
  EXPECT_EQ(meta(csv[0], "blob.container"), "uploads");
  EXPECT_EQ(meta(csv[0], "blob.version"), "1");
  EXPECT_EQ(meta(csv[0], "blob.size"), "3");
  EXPECT_EQ(meta(csv[0], "blob.content_type"), "text/csv");
  EXPECT_EQ(meta(csv[0], "blob.event"), "created");
  EXPECT_TRUE(csv[0].payload.empty()) << "the bytes stay in the blob";
  ASSERT_TRUE(commit(ack(csv[0])).ok());
  EXPECT_TRUE(receive("all", 10).empty()) << "{year}/{rest*} needs a '/'";
  {
    std::lock_guard l(mu);
    EXPECT_EQ(heard, std::vector<std::string>{"csv"});
  }

  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "2024/05/b.csv", "b"))).ok());
  EXPECT_TRUE(receive("csv", 10).empty()) << "{name} spans one segment only";
  auto all = receive("all", 10);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(meta(all[0], "blob.year"), "2024");
  EXPECT_EQ(meta(all[0], "blob.rest"), "05/b.csv");
  EXPECT_EQ(meta(all[0], "blob.name"), "2024/05/b.csv") << "no {name} capture: the blob's name";
  ASSERT_TRUE(commit(ack(all[0])).ok());

  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "a.csv", "1,2"))).ok());  // same bytes: version 2
  auto updated = receive("csv", 10);
  ASSERT_EQ(updated.size(), 1u);
  EXPECT_EQ(updated[0].type, "nimbus.blob.updated");
  EXPECT_EQ(meta(updated[0], "blob.version"), "2");
  ASSERT_TRUE(commit(ack(updated[0])).ok());

  ASSERT_TRUE(commit(delete_batch("uploads", "a.csv")).ok());
  EXPECT_TRUE(receive("csv", 10).empty()) << "csv did not ask for deletes";
  ASSERT_TRUE(commit(delete_batch("uploads", "2024/05/b.csv")).ok());
  auto deleted = receive("all", 10);
  ASSERT_EQ(deleted.size(), 1u);
  EXPECT_EQ(deleted[0].type, "nimbus.blob.deleted");
  EXPECT_EQ(meta(deleted[0], "blob.version"), "1") << "the version it deleted";
  EXPECT_TRUE(receive("elsewhere", 10).empty());

  // A failed batch emits nothing; a refused conditional put neither.
  Batch mixed = put_batch(blob_put("uploads", "c.csv", "c"));
  mixed.acks.push_back({"no-such-message", "no-lease"});
  ASSERT_FALSE(commit(mixed).ok());
  ASSERT_TRUE(commit(put_batch(blob_put("uploads", "d.csv", "d"))).ok());
  ASSERT_FALSE(commit(put_batch(blob_put("uploads", "d.csv", "d2", ""))).ok());
  auto after = receive("csv", 10);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(after[0].subject, "d.csv");
  EXPECT_EQ(meta(after[0], "blob.version"), "1");
}


}  // namespace
}  // namespace nimbus
