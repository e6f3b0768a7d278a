#pragma once
// The Redis store (store: redis://HOST:PORT[/DB]): the same contract as the embedded one
// (tests/store_conformance.h), for hosts that want speed and accept Redis's durability
// (docs/redis.md says what each appendfsync setting keeps).
//
// - Every operation is one call of a Lua script (store.lua, loaded once, run by EVALSHA):
//   Redis runs a script whole before anything else, so a commit (acks, outputs, state,
//   checkpoints, blobs) is atomic. The script checks every condition first and writes only
//   when all pass (Redis has no rollback).
// - Writes: one writer thread per host sends every operation submitted since its last round
//   trip in one pipeline (group commit); with appendfsync always they share one fsync.
// - Queues: a sorted set per queue by due time; a receive leases in the script, so hosts
//   competing for a queue never take the same message.
// - Streams are Redis Streams, one per partition, entry id 0-(offset+1).
// - Blobs: bytes in a Redis string. A put is prepared by the host from what it read (the
//   version, the blob subscriptions) and the script refuses it if either moved since; the
//   writer then reads again and retries.
// - Wake-ups: a commit's script PUBLISHes what it made receivable; each host SUBSCRIBEs on a
//   connection of its own (which is also the store's health probe). Its own commits it tells at once.
// - Reads: scripts on a pool of connections, on the calling thread (never an event loop).
// - Times come from the host's injected clock, never the server's.
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "store/commit_queue.h"
#include "store/connection_pool.h"
#include "store/redis/redis_conn.h"
#include "store/store.h"

namespace nimbus {

Expected<std::unique_ptr<Store>> open_redis_store(const std::string& url, const std::filesystem::path& base,
                                                  const Clock& clock, StoreOptions options);
Expected<StoreFiles> redis_store_files(const std::string& url, const std::filesystem::path& base);

namespace rd {

class RedisStore final : public Store {
 public:
  RedisStore(std::string url, Address address, const Clock& clock, StoreOptions options);
  ~RedisStore() override;
  Status open();

  void commit(Batch batch, CommitDone done) override;
  void receive(std::string queue, int max, int64_t lease_ms, ReceiveDone done) override;
  void extend(std::vector<LeaseRef> refs, int64_t lease_ms, std::function<void(Status)> done) override;
  void subscribe(Subscription s, std::function<void(Status)> done) override;
  void purge(std::string queue, std::function<void(Expected<int64_t>)> done) override;
  void replay_dead(std::string queue, std::function<void(Expected<int64_t>)> done) override;
  void trim_stream(std::string stream, int64_t before_ms, int64_t keep_last,
                   std::function<void(Expected<int64_t>)> done) override;
  void set_blob_subscriptions(std::vector<BlobSubscription> subscriptions, std::function<void(Status)> done) override;

  Expected<std::optional<StateEntry>> get(const std::string& store, const std::string& key) override;
  Expected<std::vector<StateEntry>> scan(const std::string& store, const std::string& prefix, int limit) override;
  Expected<std::vector<Message>> peek(const std::string& queue, int limit) override;
  Expected<std::vector<QueueStats>> stats() override;
  Expected<int64_t> next_due(const std::string& queue) override;
  Expected<std::vector<StreamRecord>> read_stream(const std::string& stream, int partition, int64_t from,
                                                  int max) override;
  Expected<std::vector<StreamPartitionInfo>> stream_info(const std::string& stream) override;
  Expected<std::vector<StreamCheckpoint>> stream_checkpoints(const std::string& stream) override;
  Expected<int64_t> stream_offset_at(const std::string& stream, int partition, int64_t time_ms) override;
  Expected<std::optional<BlobInfo>> head_blob(const std::string& container, const std::string& name) override;
  Expected<std::optional<Blob>> get_blob(const std::string& container, const std::string& name) override;
  Expected<BlobPage> list_blobs(const std::string& container, const std::string& prefix, const std::string& after,
                                int limit) override;

  void close() override;

  // Tests only: runs on the writer thread between a group's blob preparation and its sending
  // (where another host's commit may land). Set before the first commit.
  void set_after_prepare_for_test(std::function<void()> hook) { after_prepare_ = std::move(hook); }

  // One operation for the writer: its script arguments (after the operation's name), built
  // each time it is sent; what it makes of the reply; and, for blobs, what it must read first.
  struct Op {
    std::string name;  // the script's operation
    std::function<Status(Connection&, int64_t now)> prepare;  // optional
    std::function<void(int64_t now, std::vector<std::string>& argv)> args;
    // The reply: ok, an error for the caller, or `stale` (prepare again and resend).
    std::function<Status(const Value& reply, std::vector<std::string>& woken)> finish;
    std::function<void(Status)> done;
    Status refused = ok_status();  // refused before it is sent (a bad name, a blob too large)
    // A commit that only acknowledges: sent with the group's others in one call ("acks").
    std::vector<LeaseRef> acks_only;
    // The blobs it writes (container NUL name): one op per blob in a round trip.
    std::vector<std::string> blob_keys;
    int stale = 0;  // times its preparation went stale
  };

 private:
  void submit(Op op);
  void write_loop();
  void run_group(std::vector<Op>& group);
  void listen_loop();
  Status load_script(Connection& c);
  std::vector<std::string> command(const std::string& op, int64_t now) const;
  // A read-only operation of the script on a pooled connection.
  Expected<Value> read(const std::string& op, const std::vector<std::string>& args);
  Op commit_op(Batch batch, CommitDone done);

  std::string url_;
  Address address_;
  const Clock& clock_;
  StoreOptions options_;
  std::string origin_;  // this store's name in wake-ups (its own are skipped by its listener)
  std::string sha_;     // of store.lua
  std::function<void()> after_prepare_;

  std::unique_ptr<Connection> writer_conn_;
  CommitQueue<Op> queue_;
  std::thread writer_;

  ConnectionPool<Connection> pool_;

  std::thread listener_;
  std::atomic<bool> stopping_{false};
  int stop_pipe_[2] = {-1, -1};  // wakes the listener to stop
};

}  // namespace rd
}  // namespace nimbus
