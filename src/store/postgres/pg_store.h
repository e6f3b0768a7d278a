#pragma once
// The PostgreSQL store (store: postgres://USER@HOST:PORT/DB): the same contract as the
// embedded one (tests/store_conformance.h), for many hosts on one database.
//
// - Writes: one writer thread and connection per host takes every operation submitted since
//   its last commit and runs them in one transaction (group commit); if one fails (a stale
//   lease, an ETag mismatch) the group runs again with a savepoint around each operation, so
//   that one is rolled back alone.
// - Queues: a receive leases with FOR UPDATE SKIP LOCKED, so hosts competing for one queue
//   never take the same message and never wait for each other.
// - Conditional writes (ETags, create-only, checkpoints at an offset) are single statements
//   whose WHERE clause is the condition: correct under concurrency across hosts.
// - Wake-ups: a commit that made work receivable NOTIFYs the names inside its transaction
//   (delivered only if it commits); each host LISTENs on a connection of its own and tells
//   its watchers. Its own commits it tells at once.
// - Reads: on the calling thread (the store's I/O threads; never an event loop), from a pool
//   of connections.
// - Blobs: bytes in the database, in chunks of 1 MiB (blob_chunks), committed with their
//   metadata in one transaction.
// - Times come from the host's injected clock, never the server's.
// - Schema: created by the first host (under an advisory lock), versioned in nimbus_meta; a
//   database written by a newer Nimbus is refused at open.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/thread_role.h"
#include "store/commit_queue.h"
#include "store/connection_pool.h"
#include "store/postgres/pg_conn.h"
#include "store/store.h"

namespace nimbus {

// postgres://USER@HOST:PORT/DB (or postgresql://): the backend open_store picks for it.
Expected<std::unique_ptr<Store>> open_postgres_store(const std::string& url, const std::filesystem::path& base,
                                                     const Clock& clock, StoreOptions options);
Expected<StoreFiles> postgres_store_files(const std::string& url, const std::filesystem::path& base);

namespace pg {

// A message from the row's columns at `col` on, in the order of kMessageColumns.
Message read_message(const Rows& rows, int row, int col);

class PgStore final : public Store {
 public:
  PgStore(std::string url, const Clock& clock, StoreOptions options);
  ~PgStore() override;
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
  // The base's, and nimbus_store_unflushed_commits_total{kind}: transactions committed without
  // waiting for the WAL flush (lease: leases only; relaxed: relaxed work under durability: process).
  void commit_metrics_text(std::string& out) const override;

 private:
  using Apply = std::function<Status(Connection&, std::vector<std::string>& woken)>;
  struct Op {
    Apply apply;
    std::function<void(Status)> done;
    Status outcome = ok_status();
    // A commit that only acknowledges (a consumer's usual completion): the optimistic pass
    // deletes every such op's messages in one statement instead of running each.
    std::vector<LeaseRef> acks_only;
    // Only takes or extends leases: a group of these alone does not wait for the disk (below).
    bool lease_only = false;
    // A relaxed batch (Batch::relaxed) under `durability: process`: need not wait either.
    bool relaxed = false;
  };
  void submit(Apply apply, std::function<void(Status)> done, std::vector<LeaseRef> acks_only = {},
              bool lease_only = false, bool relaxed = false);
  // The optimistic pass's one statement for every acks-only op, deferred to go with the next
  // round trip: a stale lease fails the pass.
  void ack_all(Connection& c, const std::vector<Op>& group);
  void write_loop();
  Status run_group(std::vector<Op>& group, std::vector<std::string>& woken);
  // One try at a group: `alone` (one operation, no savepoint), `optimistic` (several, none;
  // always pipelined), `savepoints` (one around each operation). `pipelined`: statements go
  // deferred (Connection::pipelining), and any failure rolls back and sets `retry`.
  enum class Pass { alone, optimistic, savepoints };
  Status run_pass(std::vector<Op>& group, std::vector<std::string>& woken, Pass pass, bool& retry, bool pipelined);
  // Runs `work` on a pooled connection; once more on a fresh one if the connection was lost.
  template <class T>
  Expected<T> read(const std::function<Expected<T>(Connection&)>& work);
  void listen_loop_with(Connection& conn);

  // The batch inside the writer's transaction (pg_batch.cpp).
  // `claims`: one per enqueue (reserve_claims); a claimed message is inserted leased to it.
  Status apply(Connection& c, const Batch& b, BatchResult& result, std::vector<std::string>& woken,
               const std::vector<Claim>& claims);
  // Many enqueues in one statement (unnest of arrays): a commit of 1,000 outputs is one round trip.
  Status insert_messages(Connection& c, const std::vector<Batch::Enqueue>& enqueues, const std::vector<std::string>& ids,
                         int64_t now, std::vector<std::string>& woken, const std::vector<Claim>& claims);
  Status insert_message(Connection& c, const std::string& queue, const NewMessage& m, const std::string& id,
                        int64_t now, std::vector<std::string>& woken, const Claim* claim = nullptr);
  Status apply_state(Connection& c, const Batch& b, BatchResult& result, int64_t now);
  // Puts [from, to) of b.puts, unconditional and of distinct keys, as one statement.
  Status upsert_many(Connection& c, const Batch& b, std::size_t from, std::size_t to, BatchResult& result, int64_t now);
  Status apply_streams(Connection& c, const Batch& b, BatchResult& result, std::vector<std::string>& woken, int64_t now);
  Status apply_blobs(Connection& c, const Batch& b, BatchResult& result, std::vector<std::string>& woken, int64_t now);
  Status emit_blob_events(Connection& c, const BlobInfo& info, BlobEvent event, const std::string& traceparent,
                          const std::string& tracestate,
                          int64_t now, std::vector<std::string>& woken);

  std::string url_;
  const Clock& clock_;
  StoreOptions options_;
  std::unique_ptr<Connection> writer_conn_;  // the writer thread's, after open
  std::atomic<uint64_t> unflushed_leases_{0};   // lease-only transactions, synchronous_commit off
  std::atomic<uint64_t> unflushed_relaxed_{0};  // ones with relaxed batches (Batch::relaxed)
  std::atomic<int> writer_pid_{0};           // its backend, whose NOTIFYs the listener skips

  CommitQueue<Op> queue_;
  std::thread writer_;

  ConnectionPool<Connection> pool_;

  std::thread listener_;
  int stop_pipe_[2] = {-1, -1};
};

// Reads block on the network: only on threads that may wait (core/thread_role.h).
template <class T>
inline Expected<T> PgStore::read(const std::function<Expected<T>(Connection&)>& work) {
  check_may_block("a store read");
  std::unique_ptr<Connection> conn = pool_.take();
  if (!conn) conn = std::make_unique<Connection>(url_);
  Expected<T> out = work(*conn);
  if (!out && conn->last_error().connection_lost) {
    conn = std::make_unique<Connection>(url_);
    out = work(*conn);
    if (!out && conn->last_error().connection_lost) set_health(HealthSource::work, false, out.error().message, unix_ms(clock_));
  }
  if (conn->connected()) pool_.give(std::move(conn));
  return out;
}

}  // namespace pg
}  // namespace nimbus
