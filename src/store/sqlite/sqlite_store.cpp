// The embedded store on SQLite: WAL; one writer thread that takes every operation submitted
// since its last commit and runs them in one transaction (group commit), each inside its own
// savepoint so that one failing operation (a stale lease, an ETag mismatch) is rolled back
// alone; readers on their own connections. Durability::process commits with synchronous=NORMAL
// (a killed process loses nothing: the WAL is in the OS's hands), Durability::fsync with FULL.
// Blob bytes are files (store/blob_files.h) written before the commit that names them; the
// files a commit replaces or deletes are removed once it is durable.
#include "store/sqlite/sqlite_store.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "core/ids.h"
#include "core/thread_role.h"

namespace nimbus {
namespace sqlite {
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

}  // namespace

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

Error read_error(sqlite3* db, const char* what) {
  return Error{std::string(what) + " failed: " + sqlite3_errmsg(db), store_error::io};
}

Error conflict(std::string message) { return Error{std::move(message), store_error::conflict}; }

SqliteStore::~SqliteStore() {
  close();
  readers_.clear();
  if (db_) {
    statements_.clear();
    sqlite3_close_v2(db_);
  }
}

Status SqliteStore::open() {
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
  // The WAL file keeps its high-water mark once reused; past 64 MiB it is cut back at a reset.
  if (auto s = exec(db_, "PRAGMA journal_size_limit=67108864;"); !s) return s;
  sqlite3_wal_hook(db_, &SqliteStore::on_wal, this);
  if (auto st = open_connection(&checkpoint_db_); !st) return st;
  // A connection that has read nothing has not opened the WAL yet, and a checkpoint through it
  // does nothing at all (the WAL then grew without bound while the host ran): read once.
  if (auto s = exec(checkpoint_db_, "SELECT count(*) FROM sqlite_master;"); !s) return s;
  checkpointer_ = std::thread([this] {
    name_this_thread("store-ckpt");
    checkpoint_loop();
  });
  writer_ = std::thread([this] {
    set_thread_role(ThreadRole::store_writer);
    name_this_thread("store-writer");
    write_loop();
  });
  return ok_status();
}

int SqliteStore::on_wal(void* self, sqlite3*, const char*, int pages) {
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

void SqliteStore::checkpoint_loop() {
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

void SqliteStore::commit(Batch batch, CommitDone done) {
  if (!batch.blob_puts.empty() && !on_io_thread()) {
    // Blob bytes are file I/O: never on the caller's thread (an event loop, the timer thread).
    auto held = std::make_shared<Batch>(std::move(batch));
    run_blocking([this, held, done = std::move(done)]() mutable { commit_here(std::move(*held), std::move(done)); });
    return;
  }
  commit_here(std::move(batch), std::move(done));
}

void SqliteStore::commit_here(Batch batch, CommitDone done) {
  auto result = std::make_shared<BatchResult>();
  // Blob bytes go to their files first (on an I/O thread, off the writer's): the metadata
  // that names them commits after, or they are removed again.
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
      [this, done = std::move(done), result, written, replaced](Status st) mutable {
        auto finish = [st, result, done = std::move(done)]() mutable {
          if (!st) return done(st.error());
          done(std::move(*result));
        };
        // The files of the losing side go (the new ones when nothing committed, else the old)
        // before the caller hears: file I/O, so on an I/O thread, not the writer's.
        if (auto& gone = st ? *replaced : *written; !gone.empty()) {
          return run_blocking([this, gone = std::move(gone), finish = std::move(finish)]() mutable {
            for (const auto& f : gone) blob_files_->remove(f.container, f.file);
            finish();
          });
        }
        finish();
      },
      ops > 1);
}

void SqliteStore::receive(std::string queue, int max, int64_t lease_ms, ReceiveDone done) {
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

void SqliteStore::extend(std::vector<LeaseRef> refs, int64_t lease_ms, std::function<void(Status)> done) {
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

void SqliteStore::subscribe(Subscription s, std::function<void(Status)> done) {
  submit(
      [this, s = std::move(s)](std::vector<std::string>&) -> Status {
        auto& up = stmt("INSERT OR REPLACE INTO subscriptions VALUES(?,?,?,?,?)");
        up.reset().text(s.topic).text(s.name).text(s.type).text(s.source).text(s.subject_prefix);
        if (up.step() != SQLITE_DONE) return sql_error("subscribe");
        return ok_status();
      },
      std::move(done));
}

void SqliteStore::purge(std::string queue, std::function<void(Expected<int64_t>)> done) {
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

void SqliteStore::replay_dead(std::string queue, std::function<void(Expected<int64_t>)> done) {
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

void SqliteStore::trim_stream(std::string stream, int64_t before_ms, int64_t keep_last,
                              std::function<void(Expected<int64_t>)> done) {
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

void SqliteStore::set_blob_subscriptions(std::vector<BlobSubscription> subs, std::function<void(Status)> done) {
  if (auto st = check_blob_subscriptions(subs); !st) {
    submit([st](std::vector<std::string>&) { return st; }, std::move(done));
    return;
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

void SqliteStore::close() {
  close_io();  // what was handed to the I/O threads may still commit
  if (!queue_.close()) return;
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

Status SqliteStore::open_blob_files() {
  std::set<std::pair<std::string, std::string>> referenced;
  {
    Stmt st(db_, "SELECT container, file FROM blobs WHERE deleted=0");
    if (!st.ok()) return fail("cannot be read", st.error());
    int rc;
    while ((rc = st.step()) == SQLITE_ROW) referenced.insert({st.col_text(0), st.col_text(1)});
    if (rc != SQLITE_DONE) return fail("cannot be read", sqlite3_errmsg(db_));
  }
  blob_files_ = std::make_unique<BlobFiles>(blob_dir_, options_.durability == Durability::fsync);
  auto swept = blob_files_->open([&](const std::string& container, const std::string& file) {
    return referenced.count({container, file}) > 0;
  });
  if (!swept) return swept.error();
  return ok_status();
}

Status SqliteStore::fail(const std::string& what, const std::string& detail) const {
  return Error{"store " + path_.string() + " " + what + ": " + detail +
                   "; move it aside to start with an empty store, or restore it from a backup",
               store_error::io};
}

Status SqliteStore::open_connection(sqlite3** db) {
  // SQLite's memory statistics take a process-wide mutex around every one of its mallocs and
  // frees (a tenth of the store writer's time went to locking it); nothing here reads them.
  // Set once, before SQLite initialises (a later call is refused and changes nothing).
  static const bool unstated = sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK;
  (void)unstated;
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

Status SqliteStore::exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string why = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    return fail("cannot be used", why);
  }
  return ok_status();
}

Error SqliteStore::sql_error(const char* what) const {
  return Error{std::string("store ") + what + " failed: " + sqlite3_errmsg(db_), store_error::io};
}

Stmt& SqliteStore::stmt(const std::string& sql) {
  auto it = statements_.find(sql);
  if (it == statements_.end()) it = statements_.emplace(sql, std::make_unique<Stmt>(db_, sql.c_str())).first;
  return *it->second;
}

void SqliteStore::submit(std::function<Status(std::vector<std::string>&)> apply, std::function<void(Status)> done,
                         bool needs_savepoint) {
  Op op{std::move(apply), std::move(done), ok_status(), needs_savepoint};
  if (!queue_.push(op)) op.done(Error{"the store is closed", store_error::io});
}

void SqliteStore::write_loop() {
  for (;;) {
    std::vector<Op> group = queue_.take();
    if (group.empty()) return;  // closed and drained
    std::vector<std::string> woken;
    const auto began = std::chrono::steady_clock::now();
    Status commit = run_group(group, woken);
    record_commit(std::chrono::steady_clock::now() - began, group.size());
    if (commit && !woken.empty()) {  // consumers hear of work before committers return
      std::sort(woken.begin(), woken.end());
      woken.erase(std::unique(woken.begin(), woken.end()), woken.end());
      notify_changes(woken);
    }
    for (auto& op : group) op.done(commit ? std::move(op.outcome) : commit);
    group.clear();
  }
}

Status SqliteStore::run_group(std::vector<Op>& group, std::vector<std::string>& woken) {
  if (stmt("BEGIN IMMEDIATE").reset().step() != SQLITE_DONE) return sql_error("begin");
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
  if (stmt("COMMIT").reset().step() != SQLITE_DONE) {
    Error e = sql_error("commit");
    stmt("ROLLBACK").reset().step();
    woken.clear();
    return e;
  }
  return ok_status();
}

}  // namespace sqlite

bool subscription_matches(const Subscription& s, const NewMessage& m) {
  if (!s.type.empty() && s.type != m.type) return false;
  if (!s.source.empty() && s.source != m.source) return false;
  if (!s.subject_prefix.empty() && m.subject.compare(0, s.subject_prefix.size(), s.subject_prefix) != 0) return false;
  return true;
}

Expected<SqliteLocation> parse_sqlite_url(const std::string& url, const std::filesystem::path& base) {
  std::string rest = url.substr(url.find(':') + 1);
  std::string query;
  if (auto q = rest.find('?'); q != std::string::npos) {
    query = rest.substr(q + 1);
    rest.resize(q);
  }
  SqliteLocation where;
  where.database = rest;
  if (where.database.empty()) return Error{"store URL '" + url + "' names no file; expected sqlite:PATH[?blobs=DIR]"};
  if (where.database.is_relative()) where.database = base / where.database;
  where.blobs = where.database.parent_path() / "blobs";
  for (std::size_t at = 0; at < query.size();) {
    std::size_t end = query.find('&', at);
    if (end == std::string::npos) end = query.size();
    const std::string option = query.substr(at, end - at);
    at = end + 1;
    const auto eq = option.find('=');
    const std::string name = option.substr(0, eq);
    const std::string value = eq == std::string::npos ? std::string() : option.substr(eq + 1);
    if (name == "blobs" && !value.empty()) {
      where.blobs = value;
      if (where.blobs.is_relative()) where.blobs = base / where.blobs;
    } else if (name == "blobs") {
      return Error{"store URL '" + url + "': blobs= names no folder"};
    } else {
      return Error{"store URL '" + url + "': unknown option '" + name + "'; the sqlite backend takes blobs=DIR"};
    }
  }
  where.database = where.database.lexically_normal();
  where.blobs = where.blobs.lexically_normal();
  return where;
}

Expected<std::unique_ptr<Store>> open_sqlite_store(const std::string& url, const std::filesystem::path& base,
                                                   const Clock& clock, StoreOptions options) {
  auto where = parse_sqlite_url(url, base);
  if (!where) return where.error();
  auto store = std::make_unique<sqlite::SqliteStore>(std::move(*where), clock, options);
  if (auto st = store->open(); !st) return st.error();
  return std::unique_ptr<Store>(std::move(store));
}

Expected<StoreFiles> sqlite_store_files(const std::string& url, const std::filesystem::path& base) {
  auto where = parse_sqlite_url(url, base);
  if (!where) return where.error();
  StoreFiles files;
  for (const char* suffix : {"", "-wal", "-shm", "-journal"}) files.files.push_back(where->database.string() + suffix);
  files.folders.push_back(where->blobs);
  return files;
}

}  // namespace nimbus
