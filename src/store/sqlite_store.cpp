// The embedded store on SQLite: WAL; one writer thread that takes every operation submitted
// since its last commit and runs them in one transaction (group commit), each inside its own
// savepoint so that one failing operation (a stale lease, an ETag mismatch) is rolled back
// alone; readers on their own connections. Durability::process commits with synchronous=NORMAL
// (a killed process loses nothing: the WAL is in the OS's hands), Durability::fsync with FULL.
// Blob bytes are files (store/blob_files.h) written before the commit that names them; the
// files a commit replaces or deletes are removed once it is durable.
#include <sqlite3.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <map>
#include <deque>
#include <mutex>
#include <set>
#include <thread>

#include "core/ids.h"
#include "store/blob_files.h"
#include "store/store.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;

constexpr int kSchemaVersion = 1;
constexpr const char* kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  event_id TEXT NOT NULL,
  queue TEXT NOT NULL,
  due INTEGER NOT NULL,
  lease TEXT,
  deliveries INTEGER NOT NULL DEFAULT 0,
  enqueued INTEGER NOT NULL,
  type TEXT NOT NULL DEFAULT '',
  source TEXT NOT NULL DEFAULT '',
  subject TEXT NOT NULL DEFAULT '',
  metadata BLOB,
  payload BLOB,
  error TEXT NOT NULL DEFAULT '',
  first_failed INTEGER NOT NULL DEFAULT 0,
  last_failed INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS messages_due ON messages(queue, due, seq);
CREATE TABLE IF NOT EXISTS subscriptions(
  topic TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, source TEXT NOT NULL,
  subject_prefix TEXT NOT NULL, PRIMARY KEY(topic, name));
CREATE TABLE IF NOT EXISTS state(
  store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, etag INTEGER NOT NULL,
  expires INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(store, key));
CREATE TABLE IF NOT EXISTS stream_partitions(
  stream TEXT NOT NULL, partition INTEGER NOT NULL, next_offset INTEGER NOT NULL,
  PRIMARY KEY(stream, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stream_records(
  stream TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
  key TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, source TEXT NOT NULL, subject TEXT NOT NULL,
  metadata BLOB, payload BLOB, time INTEGER NOT NULL,
  PRIMARY KEY(stream, partition, offset));
CREATE INDEX IF NOT EXISTS stream_records_time ON stream_records(stream, partition, time);
CREATE TABLE IF NOT EXISTS stream_checkpoints(
  grp TEXT NOT NULL, stream TEXT NOT NULL, partition INTEGER NOT NULL, offset INTEGER NOT NULL,
  updated INTEGER NOT NULL, PRIMARY KEY(grp, stream, partition)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs(
  container TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, deleted INTEGER NOT NULL,
  file TEXT NOT NULL, size INTEGER NOT NULL, content_type TEXT NOT NULL, sha256 TEXT NOT NULL,
  created INTEGER NOT NULL, updated INTEGER NOT NULL, metadata BLOB,
  PRIMARY KEY(container, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blob_subscriptions(
  queue TEXT NOT NULL, position INTEGER NOT NULL, container TEXT NOT NULL, pattern TEXT NOT NULL,
  events INTEGER NOT NULL, PRIMARY KEY(queue, position));
)SQL";

// Headers as length-prefixed pairs: binary-safe, no parser needed.
std::string encode_headers(const Headers& headers) {
  std::string out;
  auto put = [&out](const std::string& s) {
    uint32_t n = static_cast<uint32_t>(s.size());
    out.append(reinterpret_cast<const char*>(&n), 4);
    out += s;
  };
  for (const auto& h : headers) {
    put(h.name);
    put(h.value);
  }
  return out;
}

Headers decode_headers(const void* data, int size) {
  Headers out;
  const char* p = static_cast<const char*>(data);
  const char* end = p + (size > 0 ? size : 0);
  auto take = [&](std::string& s) {
    uint32_t n;
    if (end - p < 4) return false;
    std::memcpy(&n, p, 4);
    p += 4;
    if (static_cast<uint32_t>(end - p) < n) return false;
    s.assign(p, n);
    p += n;
    return true;
  };
  while (p < end) {
    Header h;
    if (!take(h.name) || !take(h.value)) break;
    out.push_back(std::move(h));
  }
  return out;
}

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

constexpr const char* kMessageColumns =
    "id, event_id, queue, type, source, subject, metadata, payload, deliveries, enqueued, due, lease, error, "
    "first_failed, last_failed";

Message read_message(Stmt& st) {
  Message m;
  m.id = st.col_text(0);
  m.event_id = st.col_text(1);
  m.queue = st.col_text(2);
  m.type = st.col_text(3);
  m.source = st.col_text(4);
  m.subject = st.col_text(5);
  m.metadata = st.col_headers(6);
  m.payload = st.col_blob(7);
  m.deliveries = static_cast<int>(st.col_int(8));
  m.enqueued_ms = st.col_int(9);
  m.due_ms = st.col_int(10);
  m.lease = st.col_text(11);
  m.last_error = st.col_text(12);
  m.first_failed_ms = st.col_int(13);
  m.last_failed_ms = st.col_int(14);
  return m;
}

// A deleted blob keeps its row (deleted=1, no file) so that its name's versions count on.
constexpr const char* kBlobColumns = "name, version, size, content_type, sha256, created, updated, metadata, file";

BlobInfo read_blob_info(Stmt& st, const std::string& container) {
  const int64_t version = st.col_int(1);
  return BlobInfo{.container = container,
                  .name = st.col_text(0),
                  .version = version,
                  .etag = std::to_string(version),
                  .size = st.col_int(2),
                  .content_type = st.col_text(3),
                  .sha256 = st.col_text(4),
                  .created_ms = st.col_int(5),
                  .updated_ms = st.col_int(6),
                  .metadata = st.col_headers(7)};
}

BlobInfo blob_named(const std::string& container, const std::string& name) {
  BlobInfo b;
  b.container = container;
  b.name = name;
  return b;
}

Status check_blob_address(const std::string& container, const std::string& name) {
  if (auto why = check_blob_container(container); !why.empty()) {
    return Error{"blob container '" + container + "' " + why, store_error::invalid};
  }
  if (auto why = check_blob_name(name); !why.empty()) {
    return Error{"blob name '" + name + "' in container " + container + " " + why, store_error::invalid};
  }
  return ok_status();
}

Error read_error(sqlite3* db, const char* what) {
  return Error{std::string(what) + " failed: " + sqlite3_errmsg(db), store_error::io};
}

Error conflict(std::string message) { return Error{std::move(message), store_error::conflict}; }

class SqliteStore final : public Store {
 public:
  SqliteStore(fs::path path, const Clock& clock, StoreOptions options)
      : path_(std::move(path)), clock_(clock), options_(options) {}

  ~SqliteStore() override {
    close();
    for (auto* db : readers_) sqlite3_close_v2(db);
    if (db_) {
      statements_.clear();
      sqlite3_close_v2(db_);
    }
  }

  Status open() {
    std::error_code ec;
    if (path_.has_parent_path()) fs::create_directories(path_.parent_path(), ec);
    auto st = open_connection(&db_);
    if (!st) return st;
    const char* sync = options_.durability == Durability::fsync ? "PRAGMA synchronous=FULL;" : "PRAGMA synchronous=NORMAL;";
    if (auto s = exec(db_, sync); !s) return s;
    // A file that is not a database, or a damaged one, is said now: never run on a store that
    // may silently lose what it holds.
    {
      Stmt check(db_, "PRAGMA quick_check(1)");
      if (!check.ok()) return fail("cannot be checked", check.error());
      int rc = check.step();
      if (rc != SQLITE_ROW) return fail("cannot be checked", sqlite3_errmsg(db_));
      if (auto verdict = check.col_text(0); verdict != "ok") return fail("is damaged", verdict);
    }
    if (auto s = exec(db_, "PRAGMA journal_mode=WAL;"); !s) return s;
    if (auto s = exec(db_, kSchema); !s) return s;
    {
      Stmt v(db_, "SELECT value FROM meta WHERE key='schema'");
      if (v.ok() && v.step() == SQLITE_ROW && std::stoi(v.col_text(0)) > kSchemaVersion) {
        return fail("was written by a newer Nimbus",
                    "schema version " + v.col_text(0) + ", this build reads up to " + std::to_string(kSchemaVersion));
      }
    }
    if (auto s = exec(db_, ("INSERT OR IGNORE INTO meta VALUES('schema','" + std::to_string(kSchemaVersion) + "')").c_str()); !s) {
      return s;
    }
    // Checkpoints (copying the WAL back into the database, with its fsyncs) run on their own
    // thread and connection, so a commit never waits behind one: the writer's hook only says
    // when the WAL has grown.
    if (auto s = open_blob_files(); !s) return s;
    if (auto s = exec(db_, "PRAGMA wal_autocheckpoint=0;"); !s) return s;
    sqlite3_wal_hook(db_, &SqliteStore::on_wal, this);
    if (auto st = open_connection(&checkpoint_db_); !st) return st;
    checkpointer_ = std::thread([this] { checkpoint_loop(); });
    writer_ = std::thread([this] { write_loop(); });
    return ok_status();
  }

  static int on_wal(void* self, sqlite3*, const char*, int pages) {
    // Writer thread only. Asks for a checkpoint each time the WAL grew by kCheckpointPages
    // since the last ask (a checkpointed WAL restarts from the top, and the count with it).
    auto* s = static_cast<SqliteStore*>(self);
    if (pages < s->wal_pages_asked_) s->wal_pages_asked_ = 0;
    if (pages - s->wal_pages_asked_ >= kCheckpointPages) {
      s->wal_pages_asked_ = pages;
      std::lock_guard lock(s->checkpoint_mu_);
      s->checkpoint_wanted_ = true;
      s->checkpoint_cv_.notify_one();
    }
    return SQLITE_OK;
  }

  void checkpoint_loop() {
    std::unique_lock lock(checkpoint_mu_);
    for (;;) {
      checkpoint_cv_.wait_for(lock, std::chrono::seconds(1), [&] { return checkpoint_stop_ || checkpoint_wanted_; });
      if (checkpoint_stop_) return;
      checkpoint_wanted_ = false;
      lock.unlock();
      sqlite3_wal_checkpoint_v2(checkpoint_db_, nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
      lock.lock();
    }
  }

  // ---- writes -----------------------------------------------------------------------------

  void commit(Batch batch, CommitDone done) override {
    auto result = std::make_shared<BatchResult>();
    // Blob bytes go to their files first (on the caller's thread, off the writer's): the
    // metadata that names them commits after, or they are removed again.
    auto written = std::make_shared<std::vector<WrittenBlob>>();
    if (auto st = write_blob_files(batch, *written); !st) {
      submit([st](std::vector<std::string>&) { return st; }, [done = std::move(done)](Status s) { done(s.error()); });
      return;
    }
    auto b = std::make_shared<Batch>(std::move(batch));
    auto replaced = std::make_shared<std::vector<WrittenBlob>>();
    // A batch of one operation that fails changes nothing, so it needs no savepoint of its own.
    const std::size_t ops = b->acks.size() + b->retries.size() + b->dead.size() + b->enqueues.size() +
                            b->publishes.size() * 2 + b->puts.size() + b->deletes.size() +
                            b->appends.size() * 2 + b->checkpoints.size() + b->blob_puts.size() * 2 +
                            b->blob_deletes.size() * 2;
    submit(
        [this, b, result, written, replaced](std::vector<std::string>& woken) {
          return apply(*b, *result, woken, *written, *replaced);
        },
        [this, done = std::move(done), result, written, replaced](Status st) {
          // The files of the losing side go: the new ones when nothing committed, else the old.
          for (const auto& f : st ? *replaced : *written) blob_files_->remove(f.container, f.file);
          if (!st) return done(st.error());
          done(std::move(*result));
        },
        ops > 1);
  }

  void receive(std::string queue, int max, int64_t lease_ms, ReceiveDone done) override {
    auto out = std::make_shared<std::vector<Message>>();
    submit(
        [this, queue = std::move(queue), max, lease_ms, out](std::vector<std::string>&) -> Status {
          int64_t now = unix_ms(clock_);
          auto& pick = stmt("SELECT " + std::string(kMessageColumns) +
                            " FROM messages WHERE queue=? AND due<=? ORDER BY due, seq LIMIT ?");
          pick.reset().text(queue).integer(now).integer(max);
          int rc;
          while ((rc = pick.step()) == SQLITE_ROW) out->push_back(read_message(pick));
          if (rc != SQLITE_DONE) return sql_error("receive");
          auto& lease = stmt("UPDATE messages SET lease=?, due=?, deliveries=deliveries+1 WHERE id=?");
          for (auto& m : *out) {
            m.lease = new_invocation_id();
            m.due_ms = now + lease_ms;
            m.deliveries += 1;
            lease.reset().text(m.lease).integer(m.due_ms).text(m.id);
            if (lease.step() != SQLITE_DONE) return sql_error("receive");
          }
          return ok_status();
        },
        [done = std::move(done), out](Status st) {
          if (!st) return done(st.error());
          done(std::move(*out));
        },
        true);
  }

  void extend(std::vector<LeaseRef> refs, int64_t lease_ms, std::function<void(Status)> done) override {
    submit(
        [this, refs = std::move(refs), lease_ms](std::vector<std::string>&) -> Status {
          auto& up = stmt("UPDATE messages SET due=? WHERE id=? AND lease=?");
          int64_t due = unix_ms(clock_) + lease_ms;
          for (const auto& r : refs) {
            up.reset().integer(due).text(r.id).text(r.lease);
            if (up.step() != SQLITE_DONE) return sql_error("extend");
          }
          return ok_status();
        },
        std::move(done));
  }

  void subscribe(Subscription s, std::function<void(Status)> done) override {
    submit(
        [this, s = std::move(s)](std::vector<std::string>&) -> Status {
          auto& up = stmt("INSERT OR REPLACE INTO subscriptions VALUES(?,?,?,?,?)");
          up.reset().text(s.topic).text(s.name).text(s.type).text(s.source).text(s.subject_prefix);
          if (up.step() != SQLITE_DONE) return sql_error("subscribe");
          return ok_status();
        },
        std::move(done));
  }

  void purge(std::string queue, std::function<void(Expected<int64_t>)> done) override {
    auto n = std::make_shared<int64_t>(0);
    submit(
        [this, queue = std::move(queue), n](std::vector<std::string>&) -> Status {
          auto& del = stmt("DELETE FROM messages WHERE queue=?");
          del.reset().text(queue);
          if (del.step() != SQLITE_DONE) return sql_error("purge");
          *n = sqlite3_changes(db_);
          return ok_status();
        },
        [done = std::move(done), n](Status st) {
          if (!st) return done(st.error());
          done(*n);
        });
  }

  void replay_dead(std::string queue, std::function<void(Expected<int64_t>)> done) override {
    auto n = std::make_shared<int64_t>(0);
    submit(
        [this, queue, n](std::vector<std::string>& woken) -> Status {
          auto& up = stmt("UPDATE messages SET queue=?, due=?, lease=NULL, deliveries=0 WHERE queue=?");
          up.reset().text(queue).integer(unix_ms(clock_)).text(queue + ".dead");
          if (up.step() != SQLITE_DONE) return sql_error("replay");
          *n = sqlite3_changes(db_);
          if (*n > 0) woken.push_back(queue);
          return ok_status();
        },
        [done = std::move(done), n](Status st) {
          if (!st) return done(st.error());
          done(*n);
        });
  }

  void trim_stream(std::string stream, int64_t before_ms, int64_t keep_last,
                   std::function<void(Expected<int64_t>)> done) override {
    auto n = std::make_shared<int64_t>(0);
    submit(
        [this, stream = std::move(stream), before_ms, keep_last, n](std::vector<std::string>&) -> Status {
          if (before_ms > 0) {
            auto& del = stmt("DELETE FROM stream_records WHERE stream=? AND time<?");
            del.reset().text(stream).integer(before_ms);
            if (del.step() != SQLITE_DONE) return sql_error("stream trim");
            *n += sqlite3_changes(db_);
          }
          if (keep_last > 0) {
            auto& del = stmt(
                "DELETE FROM stream_records AS r WHERE r.stream=?1 AND r.offset < "
                "(SELECT p.next_offset - ?2 FROM stream_partitions p WHERE p.stream=r.stream AND p.partition=r.partition)");
            del.reset().text(stream).integer(keep_last);
            if (del.step() != SQLITE_DONE) return sql_error("stream trim");
            *n += sqlite3_changes(db_);
          }
          return ok_status();
        },
        [done = std::move(done), n](Status st) {
          if (!st) return done(st.error());
          done(*n);
        },
        true);
  }

  void set_blob_subscriptions(std::vector<BlobSubscription> subs, std::function<void(Status)> done) override {
    for (const auto& sub : subs) {
      std::string problem;
      if (auto why = check_blob_container(sub.container); !why.empty()) problem = "container '" + sub.container + "' " + why;
      else if (!parse_blob_pattern(sub.pattern, &problem)) problem = "pattern '" + sub.pattern + "' " + problem;
      if (!problem.empty()) {
        Status st = Error{"blob subscription of queue " + sub.queue + ": " + problem, store_error::invalid};
        submit([st](std::vector<std::string>&) { return st; }, std::move(done));
        return;
      }
    }
    submit(
        [this, subs = std::move(subs)](std::vector<std::string>&) -> Status {
          if (stmt("DELETE FROM blob_subscriptions").reset().step() != SQLITE_DONE) return sql_error("blob subscribe");
          auto& ins = stmt("INSERT INTO blob_subscriptions(queue, position, container, pattern, events) VALUES(?,?,?,?,?)");
          int64_t position = 0;
          for (const auto& sub : subs) {
            ins.reset().text(sub.queue).integer(position++).text(sub.container).text(sub.pattern).integer(sub.events);
            if (ins.step() != SQLITE_DONE) return sql_error("blob subscribe");
          }
          return ok_status();
        },
        std::move(done), true);
  }

  // ---- reads ------------------------------------------------------------------------------

  Expected<std::optional<BlobInfo>> head_blob(const std::string& container, const std::string& name) override {
    auto found = blob_row(container, name);
    if (!found) return found.error();
    if (!*found) return std::optional<BlobInfo>();
    return std::optional<BlobInfo>(std::move((*found)->first));
  }

  Expected<std::optional<Blob>> get_blob(const std::string& container, const std::string& name) override {
    // A put that replaces the blob between reading its row and opening its file removes that
    // file: read the row again (a few times; each try sees a newer commit).
    for (int attempt = 0;; ++attempt) {
      auto found = blob_row(container, name);
      if (!found) return found.error();
      if (!*found) return std::optional<Blob>();
      auto data = blob_files_->read(container, (*found)->second);
      if (data) return std::optional<Blob>(Blob{std::move((*found)->first), std::move(*data)});
      if (data.error().code != "gone" || attempt >= 8) return Error{data.error().message, store_error::io};
    }
  }

  Expected<BlobPage> list_blobs(const std::string& container, const std::string& prefix, const std::string& after,
                                int limit) override {
    return read<BlobPage>([&](sqlite3* db) -> Expected<BlobPage> {
      Stmt st(db, ("SELECT " + std::string(kBlobColumns) +
                   " FROM blobs WHERE container=? AND deleted=0 AND name>? AND substr(name, 1, ?)=? ORDER BY name LIMIT ?")
                      .c_str());
      if (!st.ok()) return Error{st.error()};
      st.text(container).text(after).integer(static_cast<int64_t>(prefix.size())).text(prefix).integer(limit + 1);
      BlobPage page;
      int rc;
      while ((rc = st.step()) == SQLITE_ROW) page.blobs.push_back(read_blob_info(st, container));
      if (rc != SQLITE_DONE) return read_error(db, "blob list");
      if (limit >= 0 && page.blobs.size() > static_cast<std::size_t>(limit)) {
        page.blobs.resize(static_cast<std::size_t>(limit));
        page.next_after = page.blobs.empty() ? after : page.blobs.back().name;
      }
      return page;
    });
  }


  Expected<std::vector<StreamRecord>> read_stream(const std::string& stream, int partition, int64_t from,
                                                  int max) override {
    return read<std::vector<StreamRecord>>([&](sqlite3* db) -> Expected<std::vector<StreamRecord>> {
      Stmt st(db,
              "SELECT offset, key, id, type, source, subject, metadata, payload, time FROM stream_records "
              "WHERE stream=? AND partition=? AND offset>=? ORDER BY offset LIMIT ?");
      if (!st.ok()) return Error{st.error()};
      st.text(stream).integer(partition).integer(from).integer(max);
      std::vector<StreamRecord> out;
      int rc;
      while ((rc = st.step()) == SQLITE_ROW) {
        StreamRecord r;
        r.stream = stream;
        r.partition = partition;
        r.offset = st.col_int(0);
        r.key = st.col_text(1);
        r.id = st.col_text(2);
        r.type = st.col_text(3);
        r.source = st.col_text(4);
        r.subject = st.col_text(5);
        r.metadata = st.col_headers(6);
        r.payload = st.col_blob(7);
        r.time_ms = st.col_int(8);
        out.push_back(std::move(r));
      }
      if (rc != SQLITE_DONE) return read_error(db, "stream read");
      return out;
    });
  }

  Expected<std::vector<StreamPartitionInfo>> stream_info(const std::string& stream) override {
    return read<std::vector<StreamPartitionInfo>>([&](sqlite3* db) -> Expected<std::vector<StreamPartitionInfo>> {
      Stmt st(db,
              "SELECT p.partition, p.next_offset, (SELECT min(offset) FROM stream_records r WHERE r.stream=p.stream AND "
              "r.partition=p.partition) FROM stream_partitions p WHERE p.stream=? ORDER BY p.partition");
      if (!st.ok()) return Error{st.error()};
      st.text(stream);
      std::vector<StreamPartitionInfo> out;
      int rc;
      while ((rc = st.step()) == SQLITE_ROW) {
        StreamPartitionInfo info;
        info.stream = stream;
        info.partition = static_cast<int>(st.col_int(0));
        info.next_offset = st.col_int(1);
        info.first_offset = st.col_null(2) ? info.next_offset : st.col_int(2);
        // Retention only ever drops a partition's oldest records, so what is kept is one run of
        // offsets: no count(*) over the partition (this runs at every start).
        info.records = info.next_offset - info.first_offset;
        out.push_back(info);
      }
      if (rc != SQLITE_DONE) return read_error(db, "stream info");
      return out;
    });
  }

  Expected<std::vector<StreamCheckpoint>> stream_checkpoints(const std::string& stream) override {
    return read<std::vector<StreamCheckpoint>>([&](sqlite3* db) -> Expected<std::vector<StreamCheckpoint>> {
      Stmt st(db,
              "SELECT grp, stream, partition, offset, updated FROM stream_checkpoints WHERE ?1='' OR stream=?1 "
              "ORDER BY stream, grp, partition");
      if (!st.ok()) return Error{st.error()};
      st.text(stream);
      std::vector<StreamCheckpoint> out;
      int rc;
      while ((rc = st.step()) == SQLITE_ROW) {
        out.push_back(StreamCheckpoint{st.col_text(0), st.col_text(1), static_cast<int>(st.col_int(2)), st.col_int(3),
                                       st.col_int(4)});
      }
      if (rc != SQLITE_DONE) return read_error(db, "stream checkpoints");
      return out;
    });
  }

  Expected<int64_t> stream_offset_at(const std::string& stream, int partition, int64_t time_ms) override {
    return read<int64_t>([&](sqlite3* db) -> Expected<int64_t> {
      Stmt st(db,
              "SELECT coalesce((SELECT min(offset) FROM stream_records WHERE stream=?1 AND partition=?2 AND time>=?3), "
              "(SELECT next_offset FROM stream_partitions WHERE stream=?1 AND partition=?2), 0)");
      if (!st.ok()) return Error{st.error()};
      st.text(stream).integer(partition).integer(time_ms);
      if (st.step() != SQLITE_ROW) return read_error(db, "stream offset");
      return st.col_int(0);
    });
  }

  Expected<std::optional<StateEntry>> get(const std::string& store, const std::string& key) override {
    return read<std::optional<StateEntry>>([&](sqlite3* db) -> Expected<std::optional<StateEntry>> {
      Stmt st(db, "SELECT value, etag, expires FROM state WHERE store=? AND key=? AND (expires=0 OR expires>?)");
      if (!st.ok()) return Error{st.error()};
      st.text(store).text(key).integer(unix_ms(clock_));
      int rc = st.step();
      if (rc == SQLITE_DONE) return std::optional<StateEntry>();
      if (rc != SQLITE_ROW) return Error{std::string("state read failed: ") + sqlite3_errmsg(db), store_error::io};
      return std::optional<StateEntry>(StateEntry{key, st.col_blob(0), std::to_string(st.col_int(1)), st.col_int(2)});
    });
  }

  Expected<std::vector<StateEntry>> scan(const std::string& store, const std::string& prefix, int limit) override {
    return read<std::vector<StateEntry>>([&](sqlite3* db) -> Expected<std::vector<StateEntry>> {
      Stmt st(db,
              "SELECT key, value, etag, expires FROM state WHERE store=? AND substr(key, 1, ?)=? "
              "AND (expires=0 OR expires>?) ORDER BY key LIMIT ?");
      if (!st.ok()) return Error{st.error()};
      st.text(store).integer(static_cast<int64_t>(prefix.size())).text(prefix).integer(unix_ms(clock_)).integer(limit);
      std::vector<StateEntry> out;
      int rc;
      while ((rc = st.step()) == SQLITE_ROW) {
        out.push_back(StateEntry{st.col_text(0), st.col_blob(1), std::to_string(st.col_int(2)), st.col_int(3)});
      }
      if (rc != SQLITE_DONE) return Error{std::string("state scan failed: ") + sqlite3_errmsg(db), store_error::io};
      return out;
    });
  }

  Expected<std::vector<Message>> peek(const std::string& queue, int limit) override {
    return read<std::vector<Message>>([&](sqlite3* db) -> Expected<std::vector<Message>> {
      Stmt st(db, ("SELECT " + std::string(kMessageColumns) + " FROM messages WHERE queue=? ORDER BY due, seq LIMIT ?").c_str());
      if (!st.ok()) return Error{st.error()};
      st.text(queue).integer(limit);
      std::vector<Message> out;
      int rc;
      while ((rc = st.step()) == SQLITE_ROW) out.push_back(read_message(st));
      if (rc != SQLITE_DONE) return Error{std::string("peek failed: ") + sqlite3_errmsg(db), store_error::io};
      return out;
    });
  }

  Expected<std::vector<QueueStats>> stats() override {
    return read<std::vector<QueueStats>>([&](sqlite3* db) -> Expected<std::vector<QueueStats>> {
      // A leased message whose lease has expired is receivable again: it counts as ready.
      Stmt st(db,
              "SELECT queue, sum(due<=?1), sum(lease IS NULL AND due>?1), sum(lease IS NOT NULL AND due>?1) "
              "FROM messages GROUP BY queue ORDER BY queue");
      if (!st.ok()) return Error{st.error()};
      st.integer(unix_ms(clock_));
      std::vector<QueueStats> out;
      int rc;
      while ((rc = st.step()) == SQLITE_ROW) out.push_back(QueueStats{st.col_text(0), st.col_int(1), st.col_int(2), st.col_int(3)});
      if (rc != SQLITE_DONE) return Error{std::string("stats failed: ") + sqlite3_errmsg(db), store_error::io};
      return out;
    });
  }

  Expected<int64_t> next_due(const std::string& queue) override {
    return read<int64_t>([&](sqlite3* db) -> Expected<int64_t> {
      Stmt st(db, "SELECT min(due) FROM messages WHERE queue=? AND due>?");
      if (!st.ok()) return Error{st.error()};
      st.text(queue).integer(unix_ms(clock_));
      if (st.step() != SQLITE_ROW) return Error{std::string("read failed: ") + sqlite3_errmsg(db), store_error::io};
      return st.col_int(0);
    });
  }

  void on_enqueued(std::function<void(const std::vector<std::string>&)> listener) override {
    set_listener(0, std::move(listener));
  }

  void set_listener(uint64_t slot, std::function<void(const std::vector<std::string>&)> listener) override {
    std::lock_guard lock(mu_);
    if (listener) {
      listeners_[slot] = std::move(listener);
    } else {
      listeners_.erase(slot);
    }
  }

  void close() override {
    {
      std::lock_guard lock(mu_);
      if (closed_) return;
      closed_ = true;
    }
    cv_.notify_all();
    if (writer_.joinable()) writer_.join();
    {
      std::lock_guard lock(checkpoint_mu_);
      checkpoint_stop_ = true;
    }
    checkpoint_cv_.notify_all();
    if (checkpointer_.joinable()) checkpointer_.join();
    if (checkpoint_db_) {
      sqlite3_wal_checkpoint_v2(checkpoint_db_, nullptr, SQLITE_CHECKPOINT_TRUNCATE, nullptr, nullptr);
      sqlite3_close_v2(checkpoint_db_);
      checkpoint_db_ = nullptr;
    }
  }

 private:
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

  Status open_blob_files() {
    std::set<std::pair<std::string, std::string>> referenced;
    {
      Stmt st(db_, "SELECT container, file FROM blobs WHERE deleted=0");
      if (!st.ok()) return fail("cannot be read", st.error());
      int rc;
      while ((rc = st.step()) == SQLITE_ROW) referenced.insert({st.col_text(0), st.col_text(1)});
      if (rc != SQLITE_DONE) return fail("cannot be read", sqlite3_errmsg(db_));
    }
    blob_files_ = std::make_unique<BlobFiles>(path_.parent_path() / "blobs", options_.durability == Durability::fsync);
    auto swept = blob_files_->open([&](const std::string& container, const std::string& file) {
      return referenced.count({container, file}) > 0;
    });
    if (!swept) return swept.error();
    return ok_status();
  }

  // Checks every blob operation of `batch` and writes the puts' bytes to new files (their
  // data is dropped from the batch: the files hold it). On a failure nothing is left behind.
  Status write_blob_files(Batch& batch, std::vector<WrittenBlob>& written) {
    Status st = ok_status();
    for (const auto& d : batch.blob_deletes) {
      if (st = check_blob_address(d.container, d.name); !st) return st;
    }
    for (auto& p : batch.blob_puts) {
      if (st = check_blob_address(p.container, p.name); !st) break;
      if (p.data.size() > options_.max_blob_size) {
        st = Error{"blob " + p.container + "/" + p.name + " is " + std::to_string(p.data.size()) +
                       " bytes; this store takes at most " + std::to_string(options_.max_blob_size),
                   store_error::too_large};
        break;
      }
      auto file = blob_files_->write(p.container, p.data);
      if (!file) {
        st = file.error();
        break;
      }
      written.push_back({p.container, *file, sha256_hex(p.data), static_cast<int64_t>(p.data.size())});
      std::string().swap(p.data);
    }
    if (!st) {
      for (const auto& f : written) blob_files_->remove(f.container, f.file);
      written.clear();
    }
    return st;
  }

  // The live row of a blob and its file's id.
  Expected<std::optional<std::pair<BlobInfo, std::string>>> blob_row(const std::string& container,
                                                                      const std::string& name) {
    using Row = std::optional<std::pair<BlobInfo, std::string>>;
    return read<Row>([&](sqlite3* db) -> Expected<Row> {
      Stmt st(db, ("SELECT " + std::string(kBlobColumns) + " FROM blobs WHERE container=? AND name=? AND deleted=0").c_str());
      if (!st.ok()) return Error{st.error()};
      st.text(container).text(name);
      int rc = st.step();
      if (rc == SQLITE_DONE) return Row();
      if (rc != SQLITE_ROW) return read_error(db, "blob read");
      return Row(std::pair{read_blob_info(st, container), st.col_text(8)});
    });
  }

  Status fail(const std::string& what, const std::string& detail) const {
    return Error{"store " + path_.string() + " " + what + ": " + detail +
                     "; move it aside to start with an empty store, or restore it from a backup",
                 store_error::io};
  }

  Status open_connection(sqlite3** db) {
    int rc = sqlite3_open_v2(path_.c_str(), db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string why = *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc);
      if (*db) sqlite3_close_v2(*db);
      *db = nullptr;
      return fail("cannot be opened", why);
    }
    sqlite3_busy_timeout(*db, 5000);
    sqlite3_extended_result_codes(*db, 1);
    return ok_status();
  }

  Status exec(sqlite3* db, const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string why = err ? err : sqlite3_errmsg(db);
      sqlite3_free(err);
      return fail("cannot be used", why);
    }
    return ok_status();
  }

  Error sql_error(const char* what) const {
    return Error{std::string("store ") + what + " failed: " + sqlite3_errmsg(db_), store_error::io};
  }

  Stmt& stmt(const std::string& sql) {
    auto it = statements_.find(sql);
    if (it == statements_.end()) it = statements_.emplace(sql, std::make_unique<Stmt>(db_, sql.c_str())).first;
    return *it->second;
  }

  void submit(std::function<Status(std::vector<std::string>&)> apply, std::function<void(Status)> done,
              bool needs_savepoint = false) {
    {
      std::lock_guard lock(mu_);
      if (!closed_) {
        pending_.push_back(Op{std::move(apply), std::move(done), ok_status(), needs_savepoint});
        cv_.notify_one();
        return;
      }
    }
    done(Error{"the store is closed", store_error::io});
  }

  template <class T, class F>
  Expected<T> read(F&& fn) {
    sqlite3* db = nullptr;
    {
      std::lock_guard lock(readers_mu_);
      if (!readers_.empty()) {
        db = readers_.back();
        readers_.pop_back();
      }
    }
    if (!db) {
      if (auto st = open_connection(&db); !st) return st.error();
    }
    Expected<T> out = fn(db);
    std::lock_guard lock(readers_mu_);
    readers_.push_back(db);
    return out;
  }

  void write_loop() {
    std::vector<Op> group;
    for (;;) {
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return closed_ || !pending_.empty(); });
        if (pending_.empty()) return;  // closed and drained
        group.assign(std::make_move_iterator(pending_.begin()), std::make_move_iterator(pending_.end()));
        pending_.clear();
      }
      std::vector<std::string> woken;
      Status commit = run_group(group, woken);
      std::vector<std::function<void(const std::vector<std::string>&)>> listeners;
      {
        std::lock_guard lock(mu_);
        for (const auto& [slot, l] : listeners_) listeners.push_back(l);
      }
      if (commit && !listeners.empty() && !woken.empty()) {  // consumers hear of work before committers return
        std::sort(woken.begin(), woken.end());
        woken.erase(std::unique(woken.begin(), woken.end()), woken.end());
        for (const auto& l : listeners) l(woken);
      }
      for (auto& op : group) op.done(commit ? std::move(op.outcome) : commit);
      group.clear();
    }
  }

  Status run_group(std::vector<Op>& group, std::vector<std::string>& woken) {
    if (sqlite3_exec(db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) return sql_error("begin");
    bool rolled_back = false;
    for (auto& op : group) {
      if (rolled_back) {
        // SQLite abandoned the transaction (disk full, I/O error): nothing after may run in
        // autocommit mode and then be reported as failed.
        op.outcome = Error{"store commit abandoned after an earlier failure in the same group", store_error::io};
        continue;
      }
      if (op.savepoint && stmt("SAVEPOINT op").reset().step() != SQLITE_DONE) {
        op.outcome = sql_error("savepoint");
        continue;
      }
      std::size_t mark = woken.size();
      op.outcome = op.apply(woken);
      if (sqlite3_get_autocommit(db_)) {
        rolled_back = true;
        if (op.outcome) op.outcome = Error{"store transaction rolled back by SQLite", store_error::io};
        continue;
      }
      if (!op.outcome) {
        woken.resize(mark);
        if (op.savepoint) stmt("ROLLBACK TO op").reset().step();
      }
      if (op.savepoint) stmt("RELEASE op").reset().step();
    }
    if (rolled_back) {
      woken.clear();
      return Error{"the store rolled back a group commit: " + std::string(sqlite3_errmsg(db_)), store_error::io};
    }
    if (sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      Error e = sql_error("commit");
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      woken.clear();
      return e;
    }
    return ok_status();
  }

  Status insert_message(const std::string& queue, const NewMessage& m, const std::string& id, int64_t now,
                        std::vector<std::string>& woken) {
    auto& ins = stmt(
        "INSERT INTO messages(id, event_id, queue, due, enqueued, type, source, subject, metadata, payload) "
        "VALUES(?,?,?,?,?,?,?,?,?,?)");
    ins.reset()
        .text(id)
        .text(m.event_id.empty() ? id : m.event_id)
        .text(queue)
        .integer(now + std::max<int64_t>(m.delay_ms, 0))
        .integer(now)
        .text(m.type)
        .text(m.source)
        .text(m.subject)
        .blob(encode_headers(m.metadata))
        .blob(m.payload);
    int rc = ins.step();
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
      return conflict("a message with id " + id + " already exists");
    }
    if (rc != SQLITE_DONE) return sql_error("enqueue");
    if (m.delay_ms <= 0) woken.push_back(queue);
    return ok_status();
  }

  // Read inside the writing transaction every time: another process on the same store may
  // have added subscriptions, and a cached list could outlive a rolled-back subscribe.
  std::vector<Subscription> subscriptions(const std::string& topic) {
    std::vector<Subscription> out;
    auto& st = stmt("SELECT topic, name, type, source, subject_prefix FROM subscriptions WHERE topic=? ORDER BY name");
    st.reset().text(topic);
    while (st.step() == SQLITE_ROW) {
      out.push_back(Subscription{st.col_text(0), st.col_text(1), st.col_text(2), st.col_text(3), st.col_text(4)});
    }
    return out;
  }

  Status apply(const Batch& b, BatchResult& result, std::vector<std::string>& woken,
               const std::vector<WrittenBlob>& written, std::vector<WrittenBlob>& replaced) {
    const int64_t now = unix_ms(clock_);
    for (const auto& ref : b.acks) {
      auto& del = stmt("DELETE FROM messages WHERE id=? AND lease=?");
      del.reset().text(ref.id).text(ref.lease);
      if (del.step() != SQLITE_DONE) return sql_error("ack");
      if (sqlite3_changes(db_) != 1) return conflict("message " + ref.id + " is no longer leased by this delivery");
    }
    for (const auto& r : b.retries) {
      if (r.release) {
        auto& up = stmt("UPDATE messages SET lease=NULL, due=?, deliveries=max(deliveries-1, 0) WHERE id=? AND lease=?");
        up.reset().integer(r.due_ms).text(r.ref.id).text(r.ref.lease);
        if (up.step() != SQLITE_DONE) return sql_error("release");
        if (sqlite3_changes(db_) != 1) return conflict("message " + r.ref.id + " is no longer leased by this delivery");
        continue;
      }
      auto& up = stmt(
          "UPDATE messages SET lease=NULL, due=?, error=?, last_failed=?, "
          "first_failed=CASE first_failed WHEN 0 THEN ? ELSE first_failed END WHERE id=? AND lease=?");
      up.reset().integer(r.due_ms).text(r.error).integer(now).integer(now).text(r.ref.id).text(r.ref.lease);
      if (up.step() != SQLITE_DONE) return sql_error("retry");
      if (sqlite3_changes(db_) != 1) return conflict("message " + r.ref.id + " is no longer leased by this delivery");
      if (r.due_ms <= now) {
        Stmt q(db_, "SELECT queue FROM messages WHERE id=?");
        q.text(r.ref.id);
        if (q.step() == SQLITE_ROW) woken.push_back(q.col_text(0));
      }
    }
    for (const auto& d : b.dead) {
      auto& up = stmt(
          "UPDATE messages SET queue=queue||'.dead', lease=NULL, due=?, error=?, last_failed=?, "
          "first_failed=CASE first_failed WHEN 0 THEN ? ELSE first_failed END WHERE id=? AND lease=?");
      up.reset().integer(now).text(d.error).integer(now).integer(now).text(d.ref.id).text(d.ref.lease);
      if (up.step() != SQLITE_DONE) return sql_error("dead-letter");
      if (sqlite3_changes(db_) != 1) return conflict("message " + d.ref.id + " is no longer leased by this delivery");
    }
    for (const auto& e : b.enqueues) {
      std::string id = e.message.id.empty() ? new_invocation_id() : e.message.id;
      if (auto st = insert_message(e.queue, e.message, id, now, woken); !st) return st;
      result.message_ids.push_back(id);
    }
    for (const auto& p : b.publishes) {
      std::string event_id = p.message.event_id.empty() ? (p.message.id.empty() ? new_invocation_id() : p.message.id)
                                                        : p.message.event_id;
      NewMessage copy = p.message;
      copy.event_id = event_id;
      for (const auto& s : subscriptions(p.topic)) {
        if (!subscription_matches(s, copy)) continue;
        // One copy per subscription; ids derive from the event id, so a publish is idempotent.
        std::string id = event_id + "/" + s.name;
        if (auto st = insert_message(p.topic + "/" + s.name, copy, id, now, woken); !st) return st;
      }
      result.message_ids.push_back(event_id);
    }
    for (const auto& p : b.puts) {
      if (p.if_match) {
        Stmt cur(db_, "SELECT etag FROM state WHERE store=? AND key=? AND (expires=0 OR expires>?)");
        cur.text(p.store).text(p.key).integer(now);
        bool exists = cur.step() == SQLITE_ROW;
        std::string etag = exists ? std::to_string(cur.col_int(0)) : std::string();
        if (p.if_match->empty() ? exists : etag != *p.if_match) {
          return conflict("state " + p.store + "/" + p.key + " has ETag '" + etag + "', not '" + *p.if_match + "'");
        }
      }
      auto& up = stmt(
          "INSERT INTO state(store, key, value, etag, expires) VALUES(?,?,?,1,?) ON CONFLICT(store, key) DO UPDATE SET "
          "value=excluded.value, etag=CASE WHEN state.expires<>0 AND state.expires<=? THEN 1 ELSE state.etag+1 END, "
          "expires=excluded.expires RETURNING etag");
      up.reset().text(p.store).text(p.key).blob(p.value).integer(p.ttl_ms > 0 ? now + p.ttl_ms : 0).integer(now);
      if (up.step() != SQLITE_ROW) return sql_error("state put");
      result.etags.push_back(std::to_string(up.col_int(0)));
      while (up.step() == SQLITE_ROW) {
      }
    }
    for (const auto& d : b.deletes) {
      if (d.if_match) {
        Stmt cur(db_, "SELECT etag FROM state WHERE store=? AND key=? AND (expires=0 OR expires>?)");
        cur.text(d.store).text(d.key).integer(now);
        std::string etag = cur.step() == SQLITE_ROW ? std::to_string(cur.col_int(0)) : std::string();
        if (etag != *d.if_match) {
          return conflict("state " + d.store + "/" + d.key + " has ETag '" + etag + "', not '" + *d.if_match + "'");
        }
      }
      auto& del = stmt("DELETE FROM state WHERE store=? AND key=?");
      del.reset().text(d.store).text(d.key);
      if (del.step() != SQLITE_DONE) return sql_error("state delete");
    }
    // Offsets: one counter update per (stream, partition) in the batch, then the records.
    std::vector<int> partitions;
    std::vector<std::string> ids;
    std::map<std::pair<std::string, int>, int64_t> count, next;
    for (const auto& a : b.appends) {
      ids.push_back(a.record.id.empty() ? new_invocation_id() : a.record.id);
      partitions.push_back(stream_partition(a.key.empty() ? ids.back() : a.key, a.partitions));
      ++count[{a.stream, partitions.back()}];
    }
    for (const auto& [sp, n] : count) {
      auto& up = stmt(
          "INSERT INTO stream_partitions(stream, partition, next_offset) VALUES(?1,?2,?3) ON CONFLICT(stream, partition) "
          "DO UPDATE SET next_offset=next_offset+?3 RETURNING next_offset - ?3");
      up.reset().text(sp.first).integer(sp.second).integer(n);
      if (up.step() != SQLITE_ROW) return sql_error("stream append");
      next[sp] = up.col_int(0);
      while (up.step() == SQLITE_ROW) {
      }
    }
    for (std::size_t i = 0; i < b.appends.size(); ++i) {
      const auto& a = b.appends[i];
      const int partition = partitions[i];
      const int64_t offset = next[{a.stream, partition}]++;
      auto& ins = stmt(
          "INSERT INTO stream_records(stream, partition, offset, key, id, type, source, subject, metadata, payload, time) "
          "VALUES(?,?,?,?,?,?,?,?,?,?,?)");
      ins.reset()
          .text(a.stream)
          .integer(partition)
          .integer(offset)
          .text(a.key)
          .text(a.record.event_id.empty() ? ids[i] : a.record.event_id)
          .text(a.record.type)
          .text(a.record.source)
          .text(a.record.subject)
          .blob(encode_headers(a.record.metadata))
          .blob(a.record.payload);
      ins.integer(now);
      if (ins.step() != SQLITE_DONE) return sql_error("stream append");
      result.appended.push_back({partition, offset});
      woken.push_back(stream_wake_name(a.stream, partition));
    }
    for (const auto& c : b.checkpoints) {
      if (c.if_at) {
        Stmt cur(db_, "SELECT offset FROM stream_checkpoints WHERE grp=? AND stream=? AND partition=?");
        cur.text(c.group).text(c.stream).integer(c.partition);
        const int64_t at = cur.step() == SQLITE_ROW ? cur.col_int(0) : 0;
        if (at != *c.if_at) {
          return conflict("checkpoint of group " + c.group + " on " + c.stream + "/" + std::to_string(c.partition) +
                          " is at " + std::to_string(at) + ", not " + std::to_string(*c.if_at));
        }
      }
      auto& up = stmt("INSERT OR REPLACE INTO stream_checkpoints(grp, stream, partition, offset, updated) VALUES(?,?,?,?,?)");
      up.reset().text(c.group).text(c.stream).integer(c.partition).integer(c.offset).integer(now);
      if (up.step() != SQLITE_DONE) return sql_error("stream checkpoint");
    }
    return apply_blobs(b, result, woken, written, replaced, now);
  }

  // A blob as a write in this transaction sees it: its row (a deleted one too: its version
  // counts on) and file, once the write's ETag condition holds.
  struct BlobNow {
    BlobInfo info;
    bool live = false;
    std::string file;
  };
  Expected<BlobNow> blob_for_write(const char* what, const std::string& container, const std::string& name,
                                   const std::optional<std::string>& if_match) {
    auto& cur = stmt("SELECT " + std::string(kBlobColumns) + ", deleted FROM blobs WHERE container=? AND name=?");
    cur.reset().text(container).text(name);
    int rc = cur.step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return sql_error("blob read");
    BlobNow now;
    now.info = blob_named(container, name);
    if (rc == SQLITE_ROW) {
      now.info = read_blob_info(cur, container);
      now.live = cur.col_int(9) == 0;
      now.file = cur.col_text(8);
    }
    cur.reset();
    if (!if_match) return now;
    const std::string etag = now.live ? now.info.etag : std::string();
    if (if_match->empty() ? !now.live : etag == *if_match) return now;
    return conflict("blob " + container + "/" + name + " has ETag '" + etag + "', not '" + *if_match + "'" +
                    (if_match->empty() ? std::string(" (it exists; this ") + what + " was create-only)" : ""));
  }

  Status apply_blobs(const Batch& b, BatchResult& result, std::vector<std::string>& woken,
                     const std::vector<WrittenBlob>& written, std::vector<WrittenBlob>& replaced, int64_t now) {
    for (std::size_t i = 0; i < b.blob_puts.size(); ++i) {
      const auto& p = b.blob_puts[i];
      const WrittenBlob& w = written.at(i);
      auto cur = blob_for_write("put", p.container, p.name, p.if_match);
      if (!cur) return cur.error();
      const bool live = cur->live;
      BlobInfo info = std::move(cur->info);
      info.version += 1;
      info.etag = std::to_string(info.version);
      info.size = w.size;
      info.content_type = p.content_type.empty() ? "application/octet-stream" : p.content_type;
      info.sha256 = w.sha256;
      if (!live) info.created_ms = now;
      info.updated_ms = now;
      info.metadata = p.metadata;
      auto& up = stmt(
          "INSERT OR REPLACE INTO blobs(container, name, version, deleted, file, size, content_type, sha256, created, "
          "updated, metadata) VALUES(?,?,?,0,?,?,?,?,?,?,?)");
      up.reset()
          .text(info.container)
          .text(info.name)
          .integer(info.version)
          .text(w.file)
          .integer(info.size)
          .text(info.content_type)
          .text(info.sha256)
          .integer(info.created_ms)
          .integer(info.updated_ms)
          .blob(encode_headers(info.metadata));
      if (up.step() != SQLITE_DONE) return sql_error("blob put");
      if (live) replaced.push_back({p.container, cur->file, {}, 0});
      if (auto st = emit_blob_events(info, live ? kBlobUpdated : kBlobCreated, now, woken); !st) return st;
      result.blobs.push_back(std::move(info));
    }
    for (const auto& d : b.blob_deletes) {
      auto cur = blob_for_write("delete", d.container, d.name, d.if_match);
      if (!cur) return cur.error();
      const BlobInfo& info = cur->info;
      if (!cur->live) {
        result.blobs_deleted.push_back(0);
        continue;
      }
      auto& del = stmt("UPDATE blobs SET deleted=1, file='', updated=? WHERE container=? AND name=?");
      del.reset().integer(now).text(d.container).text(d.name);
      if (del.step() != SQLITE_DONE) return sql_error("blob delete");
      replaced.push_back({d.container, cur->file, {}, 0});
      if (auto st = emit_blob_events(info, kBlobDeleted, now, woken); !st) return st;
      result.blobs_deleted.push_back(info.version);
    }
    return ok_status();
  }

  // One message per subscribed queue whose pattern matches (the first matching subscription
  // of a queue gives its captures); read inside the writing transaction, like topics.
  Status emit_blob_events(const BlobInfo& info, BlobEvent event, int64_t now, std::vector<std::string>& woken) {
    struct Sub {
      std::string queue, pattern;
      unsigned events;
    };
    std::vector<Sub> subs;
    auto& st = stmt("SELECT queue, pattern, events FROM blob_subscriptions WHERE container=? ORDER BY queue, position");
    st.reset().text(info.container);
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) subs.push_back({st.col_text(0), st.col_text(1), static_cast<unsigned>(st.col_int(2))});
    if (rc != SQLITE_DONE) return sql_error("blob subscriptions");
    std::set<std::string> sent;
    for (const auto& sub : subs) {
      if (!(sub.events & event) || sent.count(sub.queue)) continue;
      auto it = patterns_.find(sub.pattern);
      if (it == patterns_.end()) {
        auto parsed = parse_blob_pattern(sub.pattern, nullptr);
        if (!parsed) continue;  // refused when it was set
        it = patterns_.emplace(sub.pattern, std::move(*parsed)).first;
      }
      auto captures = match_blob_pattern(it->second, info.name);
      if (!captures) continue;
      sent.insert(sub.queue);
      NewMessage m = blob_event_message(info, event, *captures);
      if (auto s = insert_message(sub.queue, m, blob_event_id(sub.queue, info, event), now, woken); !s) return s;
    }
    return ok_status();
  }

  fs::path path_;
  const Clock& clock_;
  StoreOptions options_;
  std::unique_ptr<BlobFiles> blob_files_;
  std::map<std::string, BlobPattern> patterns_;  // parsed blob subscription patterns (writer thread)
  sqlite3* db_ = nullptr;  // the writer's connection (writer thread only, after open)
  std::map<std::string, std::unique_ptr<Stmt>> statements_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Op> pending_;
  bool closed_ = false;
  std::map<uint64_t, std::function<void(const std::vector<std::string>&)>> listeners_;
  std::thread writer_;
  std::mutex readers_mu_;
  std::vector<sqlite3*> readers_;
  static constexpr int kCheckpointPages = 1000;
  sqlite3* checkpoint_db_ = nullptr;
  std::thread checkpointer_;
  std::mutex checkpoint_mu_;
  std::condition_variable checkpoint_cv_;
  bool checkpoint_wanted_ = false;
  int wal_pages_asked_ = 0;  // writer thread
  bool checkpoint_stop_ = false;
};

}  // namespace

bool subscription_matches(const Subscription& s, const NewMessage& m) {
  if (!s.type.empty() && s.type != m.type) return false;
  if (!s.source.empty() && s.source != m.source) return false;
  if (!s.subject_prefix.empty() && m.subject.compare(0, s.subject_prefix.size(), s.subject_prefix) != 0) return false;
  return true;
}

Expected<std::unique_ptr<Store>> open_store(const std::string& url, const std::filesystem::path& base, const Clock& clock,
                                            StoreOptions options) {
  if (url.rfind("sqlite:", 0) == 0) {
    fs::path path = url.substr(7);
    if (path.empty()) return Error{"store URL '" + url + "' names no file; expected sqlite:PATH"};
    if (path.is_relative()) path = base / path;
    auto store = std::make_unique<SqliteStore>(path, clock, options);
    if (auto st = store->open(); !st) return st.error();
    return std::unique_ptr<Store>(std::move(store));
  }
  auto scheme = url.substr(0, url.find(':'));
  return Error{"store '" + url + "': the " + scheme +
               " backend is not available in this build of Nimbus yet; use sqlite:PATH (the embedded store)"};
}

}  // namespace nimbus
