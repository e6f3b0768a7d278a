#pragma once
// The store: what every durable part of Nimbus keeps, behind one interface with one backend
// per URL scheme (sqlite: now; redis:// and postgres:// later, passing the same conformance
// suite in tests/store_conformance_test.cpp).
//
// - Queues: enqueue (optionally delayed), receive with a lease (a visibility timeout: until it
//   expires nobody else receives the message), extend a lease, ack, nack with a new due time,
//   move to the dead-letter queue `<queue>.dead`, peek, stats, purge. Competing consumers.
// - Topics: a publish puts one copy in every subscription whose filter matches; a
//   subscription is a queue named `<topic>/<subscription>`.
// - State: key/value documents in named stores, with ETags for optimistic concurrency, TTL,
//   prefix scans, and multi-key transactions (a Batch).
// - Streams: partitioned append-only logs. A record's key picks its partition
//   (stream_partition); offsets count up from 0 in each partition and are never reused, even
//   after retention drops old records. Consumer groups keep a checkpoint per partition (the
//   next offset to read), committed in the same Batch as the outputs of the work it covers.
// - Blobs: bytes under a name (a path such as 2024/a.csv) in a container, with metadata (version,
//   ETag, size, content type, SHA-256, times, user metadata). A put or delete is part of a Batch;
//   in the same commit it enqueues one event per matching blob subscription (blob triggers), so
//   an acknowledged put never loses its events. Versions count up per name, across deletes.
// - A Batch is one atomic commit: the ack of an input and every output of its invocation go
//   together, so a crash can neither lose the input nor emit an output twice.
//
// Times are wall-clock milliseconds since the Unix epoch, taken from the injected Clock.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/blob_path.h"
#include "core/clock.h"
#include "core/expected.h"
#include "core/invocation.h"

namespace nimbus {

// A message as it is sent: the store gives it an id (unless set) and an enqueue time.
struct NewMessage {
  std::string id;         // empty: the store makes one (32 hex)
  std::string event_id;   // the CloudEvents id the function sees; empty: same as id
  std::string type;       // CloudEvents type
  std::string source;     // CloudEvents source
  std::string subject;    // CloudEvents subject
  Headers metadata;
  std::string payload;    // bytes
  int64_t delay_ms = 0;   // not receivable before now + delay
};

struct Message {
  std::string id;
  std::string event_id;
  std::string queue;
  std::string type, source, subject;
  Headers metadata;
  std::string payload;
  int deliveries = 0;        // how many times it was received (this delivery included)
  int64_t enqueued_ms = 0;
  int64_t due_ms = 0;        // receivable from (while leased: when the lease expires)
  std::string lease;         // the token of the current lease; empty when not leased
  std::string last_error;    // from the last failed attempt (dead letters keep it)
  int64_t first_failed_ms = 0;
  int64_t last_failed_ms = 0;
};

struct QueueStats {
  std::string queue;
  int64_t ready = 0;      // receivable now
  int64_t delayed = 0;    // due later (delayed or waiting for a retry)
  int64_t in_flight = 0;  // leased
};

// What a received message is acknowledged with: its id and the lease token of that delivery.
struct LeaseRef {
  std::string id;
  std::string lease;
};

struct StateEntry {
  std::string key;
  std::string value;
  std::string etag;
  int64_t expires_ms = 0;  // 0 = never
};

struct Subscription {
  std::string topic;
  std::string name;            // the queue is <topic>/<name>
  std::string type;            // filters: exact CloudEvents type, empty = any
  std::string source;          // exact source, empty = any
  std::string subject_prefix;  // subject starts with, empty = any
};

struct StreamRecord {
  std::string stream;
  int partition = 0;
  int64_t offset = 0;
  std::string key;
  std::string id;  // the CloudEvents id
  std::string type, source, subject;
  Headers metadata;
  std::string payload;
  int64_t time_ms = 0;  // when it was appended
};

struct StreamPartitionInfo {
  std::string stream;
  int partition = 0;
  int64_t first_offset = 0;  // the oldest record kept (== next_offset when empty)
  int64_t next_offset = 0;   // the offset the next append gets
  int64_t records = 0;
};

struct StreamCheckpoint {
  std::string group;
  std::string stream;
  int partition = 0;
  int64_t offset = 0;  // the next offset the group reads
  int64_t updated_ms = 0;
};

struct BlobInfo {
  std::string container;
  std::string name;
  int64_t version = 0;  // 1 for a name's first put; every put adds one, a delete does not reset it
  std::string etag;     // changes with every put (the version, as text)
  int64_t size = 0;
  std::string content_type;
  std::string sha256;  // 64 hex
  int64_t created_ms = 0;  // the first put since the name last did not exist
  int64_t updated_ms = 0;
  Headers metadata;  // the user's
};

struct Blob {
  BlobInfo info;
  std::string data;
};

struct BlobPage {
  std::vector<BlobInfo> blobs;  // by name
  std::string next_after;       // pass as `after` for the next page; empty when this was the last
};

// Where the events of blobs in `container` whose names match `pattern` (core/blob_path.h) go:
// one message per blob version into `queue`, id `<queue>/<container>/<name>#<version>`
// (`...#<version>:deleted` for a delete). Several subscriptions of one queue that match the
// same blob give one message (the first one's captures).
struct BlobSubscription {
  std::string queue;
  std::string container;
  std::string pattern;
  unsigned events = kBlobCreated | kBlobUpdated;  // BlobEvent bits
};

// What every backend enqueues for a blob event: type nimbus.blob.<event>, source
// /blobs/<container>, subject the name, and metadata blob.container, blob.name (the capture
// {name} when the pattern has one, else the blob's name), blob.path (container/name),
// blob.event, blob.version, blob.etag, blob.size, blob.content_type, blob.sha256 and
// blob.<capture> for every other capture, and the writer's traceparent (and tracestate) when it
// had one. The payload stays empty: the bytes are read at delivery.
NewMessage blob_event_message(const BlobInfo& info, BlobEvent event, const Headers& captures,
                              const std::string& traceparent = {}, const std::string& tracestate = {});
std::string blob_event_id(const std::string& queue, const BlobInfo& info, BlobEvent event);

// The partition of `key` among `partitions`: FNV-1a, stable across versions and hosts.
int stream_partition(std::string_view key, int partitions);

// One atomic commit. Every operation applies or none does; a stale lease or an ETag that does
// not match fails the whole batch with StoreError::conflict and changes nothing.
struct Batch {
  struct Enqueue {
    std::string queue;
    NewMessage message;
  };
  struct Publish {
    std::string topic;
    NewMessage message;
  };
  struct Retry {  // nack: receivable again at due_ms, with the error kept
    LeaseRef ref;
    int64_t due_ms = 0;
    std::string error;
    bool release = false;  // handed back unrun (a stopping host): the delivery does not count
  };
  struct DeadLetter {  // to <queue>.dead, with the error
    LeaseRef ref;
    std::string error;
  };
  struct Put {
    std::string store, key, value;
    std::optional<std::string> if_match;  // ETag it must have; "" = must not exist
    int64_t ttl_ms = 0;                   // 0 = keep
  };
  struct Delete {
    std::string store, key;
    std::optional<std::string> if_match;
  };
  struct Append {  // to partition stream_partition(key, partitions); key empty: by record id
    std::string stream;
    int partitions = 1;
    std::string key;
    NewMessage record;
  };
  struct Checkpoint {
    std::string group, stream;
    int partition = 0;
    int64_t offset = 0;                  // the next offset to read
    std::optional<int64_t> if_at;        // the checkpoint it must still be at (fencing)
  };
  struct BlobPut {
    std::string container, name;
    std::string data;
    std::string content_type;                // empty: application/octet-stream
    Headers metadata;
    std::optional<std::string> if_match;  // ETag it must have; "" = must not exist (create only)
    std::string traceparent;  // the writer's: carried by the blob events it causes (not stored)
    std::string tracestate;   // as traceparent
  };
  struct BlobDelete {
    std::string container, name;
    std::optional<std::string> if_match;
    std::string traceparent;  // as BlobPut's
    std::string tracestate;
  };
  std::vector<LeaseRef> acks;
  std::vector<Retry> retries;
  std::vector<DeadLetter> dead;
  std::vector<Enqueue> enqueues;
  std::vector<Publish> publishes;
  std::vector<Put> puts;
  std::vector<Delete> deletes;
  std::vector<Append> appends;
  std::vector<Checkpoint> checkpoints;
  std::vector<BlobPut> blob_puts;
  std::vector<BlobDelete> blob_deletes;
  // Names the commit tells change watchers on every host sharing the store, as a filled queue
  // is told (nothing is stored): a waiter elsewhere hears at once of what the batch wrote.
  std::vector<std::string> wakes;
  // Work that only the platform's own machinery sees until it leads to something a client is
  // told (an orchestration's intermediate step, an activity's result, an entity's signalled
  // operation): under `durability: process`, a backend may acknowledge it before it is on
  // disk. A database crash may then take it back, never part of it and never without what was
  // committed after it (the log is one sequence; the next flushed commit flushes it), and its
  // messages are delivered again. Everything a client is answered on is committed flushed.
  bool relaxed = false;

  bool empty() const {
    return acks.empty() && retries.empty() && dead.empty() && enqueues.empty() && publishes.empty() && puts.empty() &&
           deletes.empty() && appends.empty() && checkpoints.empty() && blob_puts.empty() && blob_deletes.empty() &&
           wakes.empty();
  }
};

// What a commit says about each put, in order (the new ETags), and the ids it gave.
struct BatchResult {
  std::vector<std::string> etags;        // one per Put
  std::vector<std::string> message_ids;  // one per Enqueue, then one per Publish (its event id)
  struct Position {
    int partition = 0;
    int64_t offset = 0;
  };
  std::vector<Position> appended;        // one per Append
  std::vector<BlobInfo> blobs;           // one per BlobPut: what it wrote
  std::vector<int64_t> blobs_deleted;    // one per BlobDelete: the version it deleted, 0 = there was none
};

// The name a commit that appended to a stream partition reports to change watchers.
std::string stream_wake_name(const std::string& stream, int partition);

// Error codes a caller can act on (Error::message says the rest).
namespace store_error {
inline constexpr const char* conflict = "conflict";  // stale lease or ETag mismatch: re-read, retry
inline constexpr const char* io = "io";              // the disk said no (full, read-only, failing)
inline constexpr const char* invalid = "invalid";    // a name or argument that can never work (a bad blob name)
inline constexpr const char* too_large = "too_large";  // a blob above StoreOptions::max_blob_size
}  // namespace store_error

using CommitDone = std::function<void(Expected<BatchResult>)>;
using ReceiveDone = std::function<void(Expected<std::vector<Message>>)>;

class Store {
 public:
  Store();
  virtual ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Runs `work` on one of the store's own I/O threads, where the blocking reads below may be
  // called. Event loops, the timer thread and the writer never call a read themselves: they
  // hand it here and answer from there (a Responder or a completion may be called from any
  // thread). From an I/O thread it runs at once. Work handed over once close() has begun runs
  // on the caller's thread.
  void run_blocking(std::function<void()> work);

  // --- writes: run on the store's writer, grouped with others into one transaction. The
  // callback runs once the commit is durable, on the writer thread (or, for a batch that
  // replaced or removed blob files, on an I/O thread once they are gone); keep it short.
  virtual void commit(Batch batch, CommitDone done) = 0;
  // Leases up to `max` due messages of `queue` for `lease_ms`; fewer (or none) when fewer are due.
  virtual void receive(std::string queue, int max, int64_t lease_ms, ReceiveDone done) = 0;
  // Pushes the leases' expiry to now + lease_ms; refs whose lease is gone are skipped.
  virtual void extend(std::vector<LeaseRef> refs, int64_t lease_ms, std::function<void(Status)> done) = 0;
  virtual void subscribe(Subscription subscription, std::function<void(Status)> done) = 0;
  virtual void purge(std::string queue, std::function<void(Expected<int64_t>)> done) = 0;
  // Moves every message of `<queue>.dead` back to `queue` (deliveries reset); returns how many.
  virtual void replay_dead(std::string queue, std::function<void(Expected<int64_t>)> done) = 0;
  // Retention: drops records of `stream` appended before `before_ms` (0 = no age limit) and
  // all but the newest `keep_last` of each partition (0 = no count limit); returns how many.
  virtual void trim_stream(std::string stream, int64_t before_ms, int64_t keep_last,
                           std::function<void(Expected<int64_t>)> done) = 0;
  // Replaces every blob subscription with these (one store serves one app: its manifest's
  // blob triggers are the whole set). Patterns that do not parse fail it with `invalid`.
  virtual void set_blob_subscriptions(std::vector<BlobSubscription> subscriptions, std::function<void(Status)> done) = 0;

  // --- reads: they block until the backend answers, and see committed data. They run on the
  // store's own I/O threads (run_blocking), on a thread of a trigger's own that may wait, or
  // in tools and tests; never on an event loop, the timer thread or the writer (a checked
  // build stops the process if one does: core/thread_role.h).
  virtual Expected<std::optional<StateEntry>> get(const std::string& store, const std::string& key) = 0;
  virtual Expected<std::vector<StateEntry>> scan(const std::string& store, const std::string& prefix, int limit) = 0;
  virtual Expected<std::vector<Message>> peek(const std::string& queue, int limit) = 0;
  virtual Expected<std::vector<QueueStats>> stats() = 0;
  // The earliest due time of a message in `queue` that is not receivable yet; 0 when none.
  virtual Expected<int64_t> next_due(const std::string& queue) = 0;
  // Up to `max` records of one partition from offset `from` on, in offset order.
  virtual Expected<std::vector<StreamRecord>> read_stream(const std::string& stream, int partition, int64_t from,
                                                          int max) = 0;
  // Every partition of `stream` that has had an append (none: the stream is empty).
  virtual Expected<std::vector<StreamPartitionInfo>> stream_info(const std::string& stream) = 0;
  // The checkpoints of every consumer group of `stream` ("" = of every stream).
  virtual Expected<std::vector<StreamCheckpoint>> stream_checkpoints(const std::string& stream) = 0;
  // The first offset in the partition appended at or after `time_ms` (next_offset if none).
  virtual Expected<int64_t> stream_offset_at(const std::string& stream, int partition, int64_t time_ms) = 0;

  // Blobs: nullopt when there is none. get_blob reads the bytes of the version it reports.
  virtual Expected<std::optional<BlobInfo>> head_blob(const std::string& container, const std::string& name) = 0;
  virtual Expected<std::optional<Blob>> get_blob(const std::string& container, const std::string& name) = 0;
  // Up to `limit` blobs of `container` whose names start with `prefix`, by name, after `after`.
  virtual Expected<BlobPage> list_blobs(const std::string& container, const std::string& prefix, const std::string& after,
                                        int limit) = 0;

  // Change notification: a commit made messages receivable in these queues, or appended to
  // stream partitions (named by stream_wake_name). Consumers watch instead of polling. The
  // listener runs where the backend learns of the change (SQLite: its writer thread, right
  // after the commit; a backend across the network: its notification connection) and must not
  // block. The watch lasts as long as its handle (a call already under way may still finish).
  using ChangeListener = std::function<void(const std::vector<std::string>& names)>;
  class ChangeWatch {
   public:
    virtual ~ChangeWatch() = default;
  };
  [[nodiscard]] virtual std::unique_ptr<ChangeWatch> watch_changes(ChangeListener listener);

  // Local hand-off: a consumer on this host may take a message in the commit that makes it
  // (leased to it there, handed over once the commit is in) instead of hearing of the commit
  // and leasing the message in a transaction of its own: a store round trip and two wake-ups
  // fewer per hop of a chain (an orchestration's steps and its activities). Only messages due
  // now, to a consumer with room. A backend that does not hand off (the default) commits them
  // unleased, and the consumer hears of them as ever.
  class Claimant {
   public:
    virtual ~Claimant() = default;
    // Room for one more, kept for it until claimed() or unclaimed(): the lease in ms; 0: none.
    virtual int64_t reserve() = 0;
    // The commit is in: these are leased to it (on the writer thread; hand them off).
    virtual void claimed(std::vector<Message> messages) = 0;
    // The commit failed, or the backend did not lease them: `n` reservations are let go.
    virtual void unclaimed(int n) = 0;
  };
  // Offers `claimant` the messages commits make in `queue`, as long as the handle lives.
  [[nodiscard]] std::unique_ptr<ChangeWatch> offer_claims(const std::string& queue, std::weak_ptr<Claimant> claimant);

  // Whether the backend can reach its data now. The embedded store always can; a backend
  // across the network loses its server (the PostgreSQL one says why and since when). The
  // host answers /readyz 503 while it cannot, and logs each change.
  struct Health {
    bool available = true;
    std::string problem;   // why not, while not
    int64_t since_ms = 0;  // when it last changed (unix ms, the host's clock); 0 = never
  };
  Health health() const;
  // Called on each change of health, on the backend's thread that saw it; must not block.
  void on_health_change(std::function<void(const Health&)> listener);

  // Finishes what was submitted, then stops the writer.
  virtual void close() = 0;

  // The writer's transactions in the Prometheus text format: histograms of their time
  // (nimbus_store_commit_duration_seconds) and of the batches each grouped
  // (nimbus_store_commit_batches).
  virtual void commit_metrics_text(std::string& out) const;

  // Blocking conveniences for tools and tests (and the store's I/O threads).
  Expected<BatchResult> commit_sync(Batch batch);
  Expected<std::vector<Message>> receive_sync(std::string queue, int max, int64_t lease_ms);
  Status extend_sync(std::vector<LeaseRef> refs, int64_t lease_ms);
  Status subscribe_sync(Subscription subscription);
  Expected<int64_t> purge_sync(std::string queue);
  Expected<int64_t> replay_dead_sync(std::string queue);
  Expected<int64_t> trim_stream_sync(std::string stream, int64_t before_ms, int64_t keep_last);
  Status set_blob_subscriptions_sync(std::vector<BlobSubscription> subscriptions);

 protected:
  // Backends call this first in close(): runs the work handed to run_blocking, then joins its
  // threads (their work may still commit, so before the writer stops).
  void close_io();
  static bool on_io_thread();
  // A backend calls this with the names a commit woke (deduplicated).
  void notify_changes(const std::vector<std::string>& names) const;
  // A backend says it can (or cannot, and why) reach its data; only changes are passed on.
  void set_health(bool available, const std::string& problem, int64_t now_ms);
  // What a backend across the network knows its health from: its probe (the connection it
  // hears other hosts' commits on) and its work (commits, reads). It is available while both
  // are: a probe that is lost keeps it unavailable however many commits go through (no
  // flapping) until the probe is back, which clears a failed work too (the server answers).
  enum class HealthSource : uint8_t { probe, work };
  void set_health(HealthSource source, bool ok, const std::string& problem, int64_t now_ms);
  // A backend's writer calls this after each transaction (one writer: no contention).
  void record_commit(std::chrono::nanoseconds took, std::size_t batches);
  // A backend that hands off (offer_claims): one entry per enqueue of `batch`, reserved with
  // the consumer that takes it (none for delayed messages or queues nobody here offered for).
  struct Claim {
    std::shared_ptr<Claimant> to;
    int64_t lease_ms = 0;
    std::string lease;  // the lease token the commit gives the message
  };
  std::vector<Claim> reserve_claims(const Batch& batch) const;
  // Once the commit is over: each claimed message to its consumer (`result`: the commit's,
  // null when it failed: the reservations are let go). Takes the messages' bytes from `batch`.
  static void settle_claims(std::vector<Claim>& claims, Batch& batch, const BatchResult* result, int64_t now_ms);

 private:
  struct CommitStats;
  std::unique_ptr<CommitStats> commits_;
  struct IoThreads;
  std::unique_ptr<IoThreads> io_;
  struct Watchers;
  std::shared_ptr<Watchers> watchers_;
  struct HealthState;
  std::unique_ptr<HealthState> health_;
  struct Claimants;
  std::shared_ptr<Claimants> claimants_;
};

// What an acknowledged commit survives: the promise a user picks (the manifest's
// `durability`); each backend keeps it in its own way (docs/guarantees.md).
enum class Durability : uint8_t {
  process,  // survives a killed host: committed data is out of the host's hands; the default
  fsync,    // survives power loss too: every commit waits for stable storage
};

// What every backend takes. What only one backend has (SQLite's blob folder) is in its URL,
// read by the backend itself.
struct StoreOptions {
  Durability durability = Durability::process;
  std::size_t max_blob_size = 256u << 20;  // a larger put fails with store_error::too_large
};

// Opens the store a URL names; its scheme picks the backend (store/open_store.cpp):
// sqlite:PATH[?blobs=DIR] (relative to `base`). Errors name the store and what is wrong
// with it (not a database, corrupt, unreadable, locked; an unknown scheme or option).
Expected<std::unique_ptr<Store>> open_store(const std::string& url, const std::filesystem::path& base,
                                            const Clock& clock, StoreOptions options = {});

// The URL with its password (if any) replaced by "***", for log lines, errors and status.
std::string redact_store_url(const std::string& url);

// The files and folders on this machine that the store a URL names keeps its data in (a
// sandbox hides them from functions); none for a store across the network.
struct StoreFiles {
  std::vector<std::filesystem::path> files;
  std::vector<std::filesystem::path> folders;
};
Expected<StoreFiles> store_files(const std::string& url, const std::filesystem::path& base);

// Headers (message and blob metadata) as backends keep them: length-prefixed pairs,
// binary-safe, no parser needed.
std::string encode_headers(const Headers& headers);
Headers decode_headers(const void* data, int size);

// Does `subscription` take a message with these CloudEvents attributes?
bool subscription_matches(const Subscription& subscription, const NewMessage& message);

}  // namespace nimbus
