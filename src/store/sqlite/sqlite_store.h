#pragma once
// The embedded SQLite store, inside the store part (store.h and open_store are its interface):
// the statement wrapper and row readers its files share, and the SqliteStore class.
// sqlite_store.cpp opens the database and runs the writer thread (group commit) and the queue
// operations; sqlite_batch.cpp applies a Batch inside the writing transaction;
// sqlite_reads.cpp answers reads on reader connections.
#include <sqlite3.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/thread_role.h"
#include "store/backend.h"
#include "store/blob_files.h"
#include "store/commit_queue.h"
#include "store/store.h"

namespace nimbus {

// sqlite:PATH[?blobs=DIR] (relative to `base`): the backend open_store (store/open_store.cpp)
// picks for it. Blob bytes live as files under DIR, by default blobs/ beside the database.
struct SqliteLocation {
  std::filesystem::path database;
  std::filesystem::path blobs;
};
Expected<SqliteLocation> parse_sqlite_url(const std::string& url, const std::filesystem::path& base);
Expected<std::unique_ptr<Store>> open_sqlite_store(const std::string& url, const std::filesystem::path& base,
                                                   const Clock& clock, StoreOptions options);
Expected<StoreFiles> sqlite_store_files(const std::string& url, const std::filesystem::path& base);

}  // namespace nimbus

namespace nimbus::sqlite {

class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr) != SQLITE_OK) {
      error_ = sqlite3_errmsg(db);
      s_ = nullptr;
    }
  }
  ~Stmt() { sqlite3_finalize(s_); }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  bool ok() const { return s_ != nullptr; }
  const std::string& error() const { return error_; }
  sqlite3_stmt* get() { return s_; }
  // Resets and binds in order: strings as text, std::string_view payloads as blobs via bind_blob.
  Stmt& reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
    n_ = 0;
    return *this;
  }
  Stmt& text(const std::string& v) {
    sqlite3_bind_text(s_, ++n_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& blob(const std::string& v) {
    sqlite3_bind_blob(s_, ++n_, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& integer(int64_t v) {
    sqlite3_bind_int64(s_, ++n_, v);
    return *this;
  }
  Stmt& null() {
    sqlite3_bind_null(s_, ++n_);
    return *this;
  }
  int step() { return sqlite3_step(s_); }
  std::string col_text(int i) {
    auto* t = reinterpret_cast<const char*>(sqlite3_column_text(s_, i));
    return t ? std::string(t, static_cast<std::size_t>(sqlite3_column_bytes(s_, i))) : std::string();
  }
  std::string col_blob(int i) {
    auto* b = static_cast<const char*>(sqlite3_column_blob(s_, i));
    return b ? std::string(b, static_cast<std::size_t>(sqlite3_column_bytes(s_, i))) : std::string();
  }
  int64_t col_int(int i) { return sqlite3_column_int64(s_, i); }
  Headers col_headers(int i) { return decode_headers(sqlite3_column_blob(s_, i), sqlite3_column_bytes(s_, i)); }
  bool col_null(int i) { return sqlite3_column_type(s_, i) == SQLITE_NULL; }

 private:
  sqlite3_stmt* s_ = nullptr;
  std::string error_;
  int n_ = 0;
};

inline constexpr const char* kMessageColumns =
    "id, event_id, queue, type, source, subject, metadata, payload, deliveries, enqueued, due, lease, error, "
    "first_failed, last_failed";

// A deleted blob keeps its row (deleted=1, no file) so that its name's versions count on.
inline constexpr const char* kBlobColumns = "name, version, size, content_type, sha256, created, updated, metadata, file";

Message read_message(Stmt& st);
BlobInfo read_blob_info(Stmt& st, const std::string& container);
BlobInfo blob_named(const std::string& container, const std::string& name);
Error read_error(sqlite3* db, const char* what);
Error conflict(std::string message);

class SqliteStore final : public Store {
 public:
  SqliteStore(SqliteLocation location, const Clock& clock, StoreOptions options)
      : path_(std::move(location.database)), blob_dir_(std::move(location.blobs)), clock_(clock), options_(options) {}
  ~SqliteStore() override;
  Status open();

  // ---- writes -----------------------------------------------------------------------------
  void commit(Batch batch, CommitDone done) override;
  void receive(std::string queue, int max, int64_t lease_ms, ReceiveDone done) override;
  void extend(std::vector<LeaseRef> refs, int64_t lease_ms, std::function<void(Status)> done) override;
  void subscribe(Subscription s, std::function<void(Status)> done) override;
  void purge(std::string queue, std::function<void(Expected<int64_t>)> done) override;
  void replay_dead(std::string queue, std::function<void(Expected<int64_t>)> done) override;
  void trim_stream(std::string stream, int64_t before_ms, int64_t keep_last,
                   std::function<void(Expected<int64_t>)> done) override;
  void set_blob_subscriptions(std::vector<BlobSubscription> subs, std::function<void(Status)> done) override;

  // ---- reads ------------------------------------------------------------------------------
  Expected<std::optional<BlobInfo>> head_blob(const std::string& container, const std::string& name) override;
  Expected<std::optional<Blob>> get_blob(const std::string& container, const std::string& name) override;
  Expected<BlobPage> list_blobs(const std::string& container, const std::string& prefix, const std::string& after,
                                int limit) override;
  Expected<std::vector<StreamRecord>> read_stream(const std::string& stream, int partition, int64_t from,
                                                  int max) override;
  Expected<std::vector<StreamPartitionInfo>> stream_info(const std::string& stream) override;
  Expected<std::vector<StreamCheckpoint>> stream_checkpoints(const std::string& stream) override;
  Expected<int64_t> stream_offset_at(const std::string& stream, int partition, int64_t time_ms) override;
  Expected<std::optional<StateEntry>> get(const std::string& store, const std::string& key) override;
  Expected<std::vector<StateEntry>> scan(const std::string& store, const std::string& prefix, int limit) override;
  Expected<std::vector<Message>> peek(const std::string& queue, int limit) override;
  Expected<std::vector<QueueStats>> stats() override;
  Expected<int64_t> next_due(const std::string& queue) override;
  void close() override;

 private:
  // The commit itself, blob files included, on the calling thread (an I/O thread when the
  // batch has blobs).
  void commit_here(Batch batch, CommitDone done);
  // WAL growth wakes the checkpointer thread (its own connection), which runs the checkpoints
  // off the writer's path.
  static int on_wal(void* self, sqlite3*, const char*, int pages);
  void checkpoint_loop();

  struct Op {
    std::function<Status(std::vector<std::string>& woken)> apply;  // on the writer, in a savepoint
    std::function<void(Status)> done;                              // after the commit
    Status outcome = ok_status();
    bool savepoint = false;  // several statements that must fail together
  };

  // A blob file, by container and id: written for a put, or replaced by a commit.
  struct WrittenBlob {
    std::string container;
    std::string file;
    std::string sha256;
    int64_t size = 0;
  };
  Status open_blob_files();

  // Checks every blob operation of `batch` and writes the puts' bytes to new files (their
  // data is dropped from the batch: the files hold it). On a failure nothing is left behind.
  Status write_blob_files(Batch& batch, std::vector<WrittenBlob>& written);

  // The live row of a blob and its file's id.
  Expected<std::optional<std::pair<BlobInfo, std::string>>> blob_row(const std::string& container,
                                                                      const std::string& name);
  Status fail(const std::string& what, const std::string& detail) const;
  Status open_connection(sqlite3** db);
  Status exec(sqlite3* db, const char* sql);
  Error sql_error(const char* what) const;
  Stmt& stmt(const std::string& sql);
  void submit(std::function<Status(std::vector<std::string>&)> apply, std::function<void(Status)> done,
              bool needs_savepoint = false);
  // A reader connection with its prepared statements (a read prepares nothing after the
  // first time); every statement a read used is reset before the connection goes back, so no
  // idle reader holds a snapshot that would keep the WAL from being checkpointed.
  struct Reader {
    sqlite3* db = nullptr;
    std::map<std::string, std::unique_ptr<Stmt>, std::less<>> statements;
    std::vector<Stmt*> used;
    Stmt& stmt(std::string_view sql) {
      auto it = statements.find(sql);
      if (it == statements.end()) {
        const std::string text(sql);
        it = statements.emplace(text, std::make_unique<Stmt>(db, text.c_str())).first;
      }
      Stmt& st = *it->second;
      if (st.ok()) st.reset();
      used.push_back(&st);
      return st;
    }
    ~Reader() {
      statements.clear();
      if (db) sqlite3_close_v2(db);
    }
  };
  template <class T, class F>
  Expected<T> read(F&& fn) {
    check_may_block("a store read");
    std::unique_ptr<Reader> r;
    {
      std::lock_guard lock(readers_mu_);
      if (!readers_.empty()) {
        r = std::move(readers_.back());
        readers_.pop_back();
      }
    }
    if (!r) {
      r = std::make_unique<Reader>();
      if (auto st = open_connection(&r->db); !st) return st.error();
    }
    Expected<T> out = fn(*r);
    for (Stmt* st : r->used) {
      if (st->ok()) st->reset();
    }
    r->used.clear();
    std::lock_guard lock(readers_mu_);
    readers_.push_back(std::move(r));
    return out;
  }
  void write_loop();
  Status run_group(std::vector<Op>& group, std::vector<std::string>& woken);
  Status insert_message(const std::string& queue, const NewMessage& m, const std::string& id, int64_t now,
                        std::vector<std::string>& woken);

  // Read inside the writing transaction every time: another process on the same store may
  // have added subscriptions, and a cached list could outlive a rolled-back subscribe.
  std::vector<Subscription> subscriptions(const std::string& topic);
  Status apply(const Batch& b, BatchResult& result, std::vector<std::string>& woken,
               const std::vector<WrittenBlob>& written, std::vector<WrittenBlob>& replaced);

  // A blob as a write in this transaction sees it: its row (a deleted one too: its version
  // counts on) and file, once the write's ETag condition holds.
  struct BlobNow {
    BlobInfo info;
    bool live = false;
    std::string file;
  };
  Expected<BlobNow> blob_for_write(const char* what, const std::string& container, const std::string& name,
                                   const std::optional<std::string>& if_match);
  Status apply_blobs(const Batch& b, BatchResult& result, std::vector<std::string>& woken,
                     const std::vector<WrittenBlob>& written, std::vector<WrittenBlob>& replaced, int64_t now);

  // One message per subscribed queue whose pattern matches (the first matching subscription
  // of a queue gives its captures); read inside the writing transaction, like topics.
  Status emit_blob_events(const BlobInfo& info, BlobEvent event, const std::string& traceparent,
                          const std::string& tracestate, int64_t now,
                          std::vector<std::string>& woken);
  std::filesystem::path path_;
  std::filesystem::path blob_dir_;
  const Clock& clock_;
  StoreOptions options_;
  std::unique_ptr<BlobFiles> blob_files_;
  std::map<std::string, BlobPattern> patterns_;  // parsed blob subscription patterns (writer thread)
  sqlite3* db_ = nullptr;  // the writer's connection (writer thread only, after open)
  std::map<std::string, std::unique_ptr<Stmt>> statements_;
  CommitQueue<Op> queue_;
  std::thread writer_;
  std::mutex readers_mu_;
  std::vector<std::unique_ptr<Reader>> readers_;
  static constexpr int kCheckpointPages = 1000;
  sqlite3* checkpoint_db_ = nullptr;
  std::thread checkpointer_;
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool checkpoint_wanted_ = false;
  int wal_pages_asked_ = 0;  // writer thread
  bool checkpoint_stop_ = false;
};

}  // namespace nimbus::sqlite
