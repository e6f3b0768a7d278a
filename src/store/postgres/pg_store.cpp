// The PostgreSQL store: opening (schema and its version), the writer thread's group commit,
// the LISTEN thread, queue operations, and the connection pool reads run on (pg_store.h).
#include "store/postgres/pg_store.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>

#include "core/ids.h"
#include "core/prometheus_text.h"
#include "core/thread_role.h"
#include "store/backend.h"

namespace nimbus {
namespace pg {
namespace {

constexpr int kSchemaVersion = 1;
constexpr const char* kChannel = "nimbus_changes";
// Text columns sort and compare bytewise (COLLATE "C"), as the embedded store does, whatever
// the database's locale: blob listings and state scans page by name.
constexpr const char* kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS nimbus_meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages(
  seq BIGSERIAL PRIMARY KEY,
  id TEXT COLLATE "C" NOT NULL UNIQUE,
  event_id TEXT NOT NULL,
  queue TEXT COLLATE "C" NOT NULL,
  due BIGINT NOT NULL,
  lease TEXT,
  deliveries BIGINT NOT NULL DEFAULT 0,
  enqueued BIGINT NOT NULL,
  type TEXT NOT NULL DEFAULT '',
  source TEXT NOT NULL DEFAULT '',
  subject TEXT NOT NULL DEFAULT '',
  metadata BYTEA,
  payload BYTEA,
  error TEXT NOT NULL DEFAULT '',
  first_failed BIGINT NOT NULL DEFAULT 0,
  last_failed BIGINT NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS messages_due ON messages(queue, due, seq);
CREATE TABLE IF NOT EXISTS subscriptions(
  topic TEXT COLLATE "C" NOT NULL, name TEXT COLLATE "C" NOT NULL, type TEXT NOT NULL, source TEXT NOT NULL,
  subject_prefix TEXT NOT NULL, PRIMARY KEY(topic, name));
CREATE TABLE IF NOT EXISTS state(
  store TEXT COLLATE "C" NOT NULL, key TEXT COLLATE "C" NOT NULL, value BYTEA NOT NULL, etag BIGINT NOT NULL,
  expires BIGINT NOT NULL DEFAULT 0, PRIMARY KEY(store, key));
CREATE TABLE IF NOT EXISTS stream_partitions(
  stream TEXT COLLATE "C" NOT NULL, part BIGINT NOT NULL, next_offset BIGINT NOT NULL, PRIMARY KEY(stream, part));
CREATE TABLE IF NOT EXISTS stream_records(
  stream TEXT COLLATE "C" NOT NULL, part BIGINT NOT NULL, off BIGINT NOT NULL,
  key TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, source TEXT NOT NULL, subject TEXT NOT NULL,
  metadata BYTEA, payload BYTEA, time BIGINT NOT NULL, PRIMARY KEY(stream, part, off));
CREATE INDEX IF NOT EXISTS stream_records_time ON stream_records(stream, part, time);
CREATE TABLE IF NOT EXISTS stream_checkpoints(
  grp TEXT COLLATE "C" NOT NULL, stream TEXT COLLATE "C" NOT NULL, part BIGINT NOT NULL, off BIGINT NOT NULL,
  updated BIGINT NOT NULL, PRIMARY KEY(grp, stream, part));
CREATE TABLE IF NOT EXISTS blobs(
  container TEXT COLLATE "C" NOT NULL, name TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL,
  deleted BIGINT NOT NULL, size BIGINT NOT NULL, content_type TEXT NOT NULL, sha256 TEXT NOT NULL,
  created BIGINT NOT NULL, updated BIGINT NOT NULL, metadata BYTEA, PRIMARY KEY(container, name));
CREATE TABLE IF NOT EXISTS blob_chunks(
  container TEXT COLLATE "C" NOT NULL, name TEXT COLLATE "C" NOT NULL, version BIGINT NOT NULL, n BIGINT NOT NULL,
  data BYTEA NOT NULL, PRIMARY KEY(container, name, version, n));
CREATE TABLE IF NOT EXISTS blob_subscriptions(
  queue TEXT COLLATE "C" NOT NULL, position BIGINT NOT NULL, container TEXT COLLATE "C" NOT NULL,
  pattern TEXT NOT NULL, events BIGINT NOT NULL, PRIMARY KEY(queue, position));
)SQL";

constexpr const char* kMessageColumns =
    "id, event_id, queue, type, source, subject, metadata, payload, deliveries, enqueued, due, lease, error, "
    "first_failed, last_failed";

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at <= s.size()) {
    auto end = s.find('\n', at);
    if (end == std::string::npos) end = s.size();
    if (end > at) out.push_back(s.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

}  // namespace

Message read_message(const Rows& r, int row, int col) {
  Message m;
  m.id = r.text(row, col + 0);
  m.event_id = r.text(row, col + 1);
  m.queue = r.text(row, col + 2);
  m.type = r.text(row, col + 3);
  m.source = r.text(row, col + 4);
  m.subject = r.text(row, col + 5);
  const std::string meta = r.text(row, col + 6);
  m.metadata = decode_headers(meta.data(), static_cast<int>(meta.size()));
  m.payload = r.text(row, col + 7);
  m.deliveries = static_cast<int>(r.integer(row, col + 8));
  m.enqueued_ms = r.integer(row, col + 9);
  m.due_ms = r.integer(row, col + 10);
  m.lease = r.text(row, col + 11);
  m.last_error = r.text(row, col + 12);
  m.first_failed_ms = r.integer(row, col + 13);
  m.last_failed_ms = r.integer(row, col + 14);
  return m;
}

PgStore::PgStore(std::string url, const Clock& clock, StoreOptions options)
    : url_(std::move(url)), clock_(clock), options_(options) {}

PgStore::~PgStore() {
  close();
  if (stop_pipe_[0] >= 0) ::close(stop_pipe_[0]);
  if (stop_pipe_[1] >= 0) ::close(stop_pipe_[1]);
}

Status PgStore::open() {
  writer_conn_ = std::make_unique<Connection>(url_);
  Connection& c = *writer_conn_;
  if (auto st = c.connect(); !st) return st;
  // One host creates or migrates the schema at a time; the others wait for it here.
  if (auto st = c.exec("SELECT pg_advisory_lock(7235160315)"); !st) return st;
  Status schema = [&]() -> Status {
    if (auto st = c.exec("SET client_min_messages = warning"); !st) return st;
    if (auto st = c.exec(kSchema); !st) return st;
    auto v = c.run("SELECT value FROM nimbus_meta WHERE key='schema'");
    if (!v) return v.error();
    if (v->size() > 0) {
      const int found = std::stoi(v->text(0, 0));
      if (found > kSchemaVersion) {
        return Error{"the PostgreSQL database at " + redact_store_url(url_) + " was written by a newer Nimbus (schema version " +
                         std::to_string(found) + ", this build reads up to " + std::to_string(kSchemaVersion) +
                         "); upgrade this host, or point it at another database",
                     store_error::io};
      }
      return ok_status();
    }
    auto ins = c.run("INSERT INTO nimbus_meta VALUES('schema', $1) ON CONFLICT DO NOTHING",
                     {Param::of(std::to_string(kSchemaVersion))});
    if (!ins) return ins.error();
    return ok_status();
  }();
  auto unlocked = c.exec("SELECT pg_advisory_unlock(7235160315)");
  if (!schema) return schema;
  if (!unlocked) return unlocked;
  // Both promises hold with PostgreSQL's default synchronous_commit=on: a commit the server
  // acknowledged is on its disk (and, with synchronous standbys configured, on theirs).
  if (auto st = c.exec("SET synchronous_commit = on"); !st) return st;
  writer_pid_ = c.backend_pid();
  if (::pipe2(stop_pipe_, O_CLOEXEC) != 0) return Error{"cannot make a pipe for the store's listener", store_error::io};
  auto listen = std::make_unique<Connection>(url_);
  if (auto st = listen->connect(); !st) return st;
  if (auto st = listen->exec(std::string("LISTEN ") + kChannel); !st) return st;
  listener_ = std::thread([this, conn = std::shared_ptr<Connection>(std::move(listen))]() mutable {
    (void)conn;
    name_this_thread("store-listen");
    listen_loop_with(*conn);
  });
  writer_ = std::thread([this] {
    set_thread_role(ThreadRole::store_writer);
    name_this_thread("store-writer");
    write_loop();
  });
  return ok_status();
}

void PgStore::listen_loop_with(Connection& conn) {
  for (;;) {
    if (!conn.connected()) {
      // The server went away: try again every second until it is back (or the store closes).
      // This connection is the store's probe: its loss and return are the store's health.
      const std::string why = conn.last_error().connection_lost ? conn.last_error().message : "the server closed it";
      set_health(HealthSource::probe, false, "the connection to PostgreSQL at " + redact_store_url(url_) + " was lost: " + why, unix_ms(clock_));
      pollfd stop{stop_pipe_[0], POLLIN, 0};
      if (::poll(&stop, 1, 1000) > 0) return;
      if (conn.connect() && conn.exec(std::string("LISTEN ") + kChannel)) set_health(HealthSource::probe, true, {}, unix_ms(clock_));
      continue;
    }
    pollfd fds[2] = {{PQsocket(conn.raw()), POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents) return;
    if (!PQconsumeInput(conn.raw())) continue;  // lost: connected() says so, and the loop reconnects
    std::vector<std::string> names;
    while (PGnotify* n = PQnotifies(conn.raw())) {
      if (n->be_pid != writer_pid_.load()) {
        for (auto& name : split_lines(n->extra)) names.push_back(std::move(name));
      }
      PQfreemem(n);
    }
    if (!names.empty()) {
      std::sort(names.begin(), names.end());
      names.erase(std::unique(names.begin(), names.end()), names.end());
      notify_changes(names);
    }
  }
}

void PgStore::submit(Apply apply, std::function<void(Status)> done, std::vector<LeaseRef> acks_only, bool lease_only,
                     bool relaxed) {
  Op op{std::move(apply), std::move(done), ok_status(), std::move(acks_only), lease_only, relaxed};
  if (!queue_.push(op)) op.done(Error{"the store is closed", store_error::io});
}

void PgStore::write_loop() {
  for (;;) {
    std::vector<Op> group = queue_.take();
    if (group.empty()) return;  // closed and drained
    std::vector<std::string> woken;
    const auto began = std::chrono::steady_clock::now();
    Status commit = run_group(group, woken);
    record_commit(std::chrono::steady_clock::now() - began, group.size());
    if (commit) {
      set_health(HealthSource::work, true, {}, unix_ms(clock_));
    } else if (!writer_conn_->connected()) {
      set_health(HealthSource::work, false, commit.error().message, unix_ms(clock_));
    }
    if (commit && !woken.empty()) notify_changes(woken);  // consumers hear before committers return
    for (auto& op : group) op.done(commit ? std::move(op.outcome) : commit);
    group.clear();
  }
}

Status PgStore::run_group(std::vector<Op>& group, std::vector<std::string>& woken) {
  Connection& c = *writer_conn_;
  if (!c.connected()) {
    if (auto st = c.connect(); !st) return st;
    if (auto st = c.exec("SET synchronous_commit = on"); !st) return st;
    writer_pid_ = c.backend_pid();
  }
  // Optimistically without savepoints (each costs two round trips per operation), and with the
  // statements whose rows are not needed before the commit deferred to go with the next round
  // trip (Connection::pipelining): nearly every group commits whole, in a few round trips. If
  // anything fails, the transaction is rolled back and the group runs again a statement at a
  // time, with a savepoint around each operation, so that only that one fails, with its reason.
  // Operations start from scratch each time they run (their results are reset by them).
  bool retry = false;
  Status st = run_pass(group, woken, group.size() > 1 ? Pass::optimistic : Pass::alone, retry, /*pipelined=*/true);
  // Hosts' groups lock rows in no common order: PostgreSQL may pick this one to break a
  // deadlock (40P01) or a serialization conflict (40001). That is not the work's failure:
  // run it again.
  const auto transient = [&] {
    const std::string& state = c.last_error().sqlstate;
    return !st && c.connected() && (state == "40P01" || state == "40001");
  };
  for (int again = 0; again < 3 && (retry || transient()); ++again) {
    woken.clear();
    st = run_pass(group, woken, group.size() > 1 ? Pass::savepoints : Pass::alone, retry, /*pipelined=*/false);
  }
  return st;
}

Status PgStore::run_pass(std::vector<Op>& group, std::vector<std::string>& woken, Pass pass, bool& retry,
                         bool pipelined) {
  Connection& c = *writer_conn_;
  retry = false;
  c.set_pipelining(pipelined);
  struct Off {
    Connection& c;
    ~Off() { c.set_pipelining(false); }
  } off{c};
  // A group that only takes or extends leases commits without waiting for the WAL flush: a
  // lease lost in a crash only lets the message be delivered again (at least once, as after
  // any crash), and the completion that follows it flushes it (the WAL is one sequence), so
  // an acknowledged completion never rests on a lost lease. One flush fewer per message.
  // So does a group of relaxed batches (Batch::relaxed, under durability: process) and leases:
  // a database crash may take it back whole, with everything after it, and its messages are
  // delivered again; the next flushed commit (what a client is answered on) flushes it too.
  const bool unflushed =
      std::all_of(group.begin(), group.end(), [](const Op& op) { return op.lease_only || op.relaxed; });
  // BEGIN (and SET LOCAL) travel with the first statement, the change notices with the COMMIT:
  // two round trips fewer per group.
  c.defer("BEGIN");
  if (unflushed) c.defer("SET LOCAL synchronous_commit = off");
  const bool savepoints = pass == Pass::savepoints;
  bool acked_together = false;
  if (pass == Pass::optimistic) {  // (always pipelined: a stale lease fails the pass)
    ack_all(c, group);
    acked_together = true;
  }
  for (auto& op : group) {
    if (acked_together && !op.acks_only.empty()) {
      op.outcome = ok_status();
      continue;
    }
    if (savepoints) {
      if (auto st = c.exec("SAVEPOINT op"); !st) {
        c.rollback();
        woken.clear();
        return st;
      }
    }
    const std::size_t mark = woken.size();
    op.outcome = op.apply(c, woken);
    if (c.last_error().connection_lost && !c.connected()) {
      c.rollback();  // (forgets what is still deferred)
      woken.clear();
      return Error{"the connection to PostgreSQL at " + redact_store_url(url_) + " was lost during a commit: " +
                       c.last_error().message,
                   store_error::io};
    }
    if (!op.outcome) {
      woken.resize(mark);
      if (pipelined) {  // perhaps another op's deferred statement: again, a statement at a time
        c.rollback();
        retry = true;
        return ok_status();
      }
      if (pass == Pass::alone) {
        c.rollback();
        return ok_status();  // nothing else was in the transaction; the op carries its error
      }
      if (auto st = c.exec("ROLLBACK TO SAVEPOINT op"); !st) {
        c.rollback();
        woken.clear();
        return st;
      }
    }
    if (savepoints) {
      if (auto st = c.exec("RELEASE SAVEPOINT op"); !st) {
        c.rollback();
        woken.clear();
        return st;
      }
    }
  }
  // Every deferred statement answers (and is checked) before the COMMIT leaves: a host killed
  // before then commits nothing, and a failed check rolls the group back.
  if (pipelined) {
    if (auto st = c.flush(); !st) {
      c.rollback();
      woken.clear();
      if (!c.connected()) return st;
      retry = true;
      return ok_status();
    }
  }
  if (!woken.empty()) {
    std::sort(woken.begin(), woken.end());
    woken.erase(std::unique(woken.begin(), woken.end()), woken.end());
    // Delivered to the other hosts only if this commits (sent with the COMMIT). A payload
    // holds at most 8000 bytes.
    std::string payload;
    auto flush = [&] {
      if (!payload.empty()) c.defer("SELECT pg_notify($1, $2)", {Param::of(kChannel), Param::of(payload)});
      payload.clear();
    };
    for (const auto& name : woken) {
      if (payload.size() + name.size() + 1 > 7900) flush();
      payload += (payload.empty() ? "" : "\n") + name;
    }
    flush();
  }
  if (auto st = c.commit(); !st) {
    woken.clear();
    // A conflict at the commit (a serialization failure): nothing was committed; again, a
    // statement at a time.
    if (pipelined && c.connected()) {
      retry = true;
      return ok_status();
    }
    return st;
  }
  if (unflushed) {
    const bool leases = std::all_of(group.begin(), group.end(), [](const Op& op) { return op.lease_only; });
    (leases ? unflushed_leases_ : unflushed_relaxed_).fetch_add(1, std::memory_order_relaxed);
  }
  return ok_status();
}

void PgStore::commit_metrics_text(std::string& out) const {
  Store::commit_metrics_text(out);
  prometheus_family(out, "nimbus_store_unflushed_commits_total", "counter",
                    "PostgreSQL transactions committed without waiting for the WAL flush, by kind: lease (taking "
                    "or extending leases only) and relaxed (under durability: process, the platform's own steps: "
                    "orchestration steps, activity results, entity operations, the invocation history); a later "
                    "flushed commit flushes them.");
  out += "nimbus_store_unflushed_commits_total{kind=\"lease\"} " + std::to_string(unflushed_leases_.load()) + "\n";
  out += "nimbus_store_unflushed_commits_total{kind=\"relaxed\"} " + std::to_string(unflushed_relaxed_.load()) + "\n";
}


namespace {
const std::string kAckAll =
    "DELETE FROM messages m USING unnest($1::text[], $2::text[]) AS a(id, lease) WHERE m.id=a.id AND m.lease=a.lease";
}  // namespace

void PgStore::ack_all(Connection& c, const std::vector<Op>& group) {
  std::vector<std::string> ids, leases;
  for (const auto& op : group) {
    for (const auto& ref : op.acks_only) {
      ids.push_back(ref.id);
      leases.push_back(ref.lease);
    }
  }
  if (ids.empty()) return;
  const int64_t want = static_cast<int64_t>(ids.size());
  c.defer(kAckAll, {Param::of(text_array(ids)), Param::of(text_array(leases))}, [want](const Rows& r) -> Status {
    if (r.affected() == want) return ok_status();
    return Error{"a lease among the group's acknowledgements was no longer held", store_error::conflict};
  });
}

void PgStore::receive(std::string queue, int max, int64_t lease_ms, ReceiveDone done) {
  auto out = std::make_shared<std::vector<Message>>();
  submit(
      [this, queue = std::move(queue), max, lease_ms, out](Connection& c, std::vector<std::string>&) -> Status {
        out->clear();  // a group that runs again runs this again
        const int64_t now = unix_ms(clock_);
        // Rows another host holds are skipped, not waited for: competing consumers never
        // block each other, and never take the same message.
        auto r = c.run(std::string("WITH picked AS (SELECT seq, due AS was FROM messages WHERE queue=$1 AND due<=$2 "
                                   "ORDER BY due, seq LIMIT $3 FOR UPDATE SKIP LOCKED) "
                                   "UPDATE messages m SET lease=$4 || m.seq::text, due=$5, deliveries=m.deliveries+1 "
                                   "FROM picked WHERE m.seq=picked.seq RETURNING picked.was, m.seq, ") +
                           "m.id, m.event_id, m.queue, m.type, m.source, m.subject, m.metadata, m.payload, "
                           "m.deliveries, m.enqueued, m.due, m.lease, m.error, m.first_failed, m.last_failed",
                       {Param::of(queue), Param::of(now), Param::of(int64_t{max}), Param::of(new_invocation_id() + "."),
                        Param::of(now + lease_ms)});
        if (!r) return r.error();
        struct Picked {
          int64_t was, seq;
          Message m;
        };
        std::vector<Picked> picked;
        for (int i = 0; i < r->size(); ++i) picked.push_back({r->integer(i, 0), r->integer(i, 1), read_message(*r, i, 2)});
        std::sort(picked.begin(), picked.end(),
                  [](const Picked& a, const Picked& b) { return a.was != b.was ? a.was < b.was : a.seq < b.seq; });
        for (auto& p : picked) out->push_back(std::move(p.m));
        return ok_status();
      },
      [done = std::move(done), out](Status st) {
        if (!st) return done(st.error());
        done(std::move(*out));
      },
      {}, /*lease_only=*/true);
}

void PgStore::extend(std::vector<LeaseRef> refs, int64_t lease_ms, std::function<void(Status)> done) {
  submit(
      [this, refs = std::move(refs), lease_ms](Connection& c, std::vector<std::string>&) -> Status {
        const int64_t due = unix_ms(clock_) + lease_ms;
        for (const auto& r : refs) {
          auto up = c.run("UPDATE messages SET due=$1 WHERE id=$2 AND lease=$3",
                          {Param::of(due), Param::of(r.id), Param::of(r.lease)});
          if (!up) return up.error();
        }
        return ok_status();
      },
      std::move(done), {}, /*lease_only=*/true);
}

void PgStore::subscribe(Subscription s, std::function<void(Status)> done) {
  submit(
      [s = std::move(s)](Connection& c, std::vector<std::string>&) -> Status {
        auto up = c.run(
            "INSERT INTO subscriptions VALUES($1,$2,$3,$4,$5) ON CONFLICT(topic, name) DO UPDATE SET "
            "type=excluded.type, source=excluded.source, subject_prefix=excluded.subject_prefix",
            {Param::of(s.topic), Param::of(s.name), Param::of(s.type), Param::of(s.source), Param::of(s.subject_prefix)});
        if (!up) return up.error();
        return ok_status();
      },
      std::move(done));
}

void PgStore::purge(std::string queue, std::function<void(Expected<int64_t>)> done) {
  auto n = std::make_shared<int64_t>(0);
  submit(
      [queue = std::move(queue), n](Connection& c, std::vector<std::string>&) -> Status {
        auto del = c.run("DELETE FROM messages WHERE queue=$1", {Param::of(queue)});
        if (!del) return del.error();
        *n = del->affected();
        return ok_status();
      },
      [done = std::move(done), n](Status st) {
        if (!st) return done(st.error());
        done(*n);
      });
}

void PgStore::replay_dead(std::string queue, std::function<void(Expected<int64_t>)> done) {
  auto n = std::make_shared<int64_t>(0);
  submit(
      [this, queue, n](Connection& c, std::vector<std::string>& woken) -> Status {
        auto up = c.run("UPDATE messages SET queue=$1, due=$2, lease=NULL, deliveries=0 WHERE queue=$3",
                        {Param::of(queue), Param::of(unix_ms(clock_)), Param::of(queue + ".dead")});
        if (!up) return up.error();
        *n = up->affected();
        if (*n > 0) woken.push_back(queue);
        return ok_status();
      },
      [done = std::move(done), n](Status st) {
        if (!st) return done(st.error());
        done(*n);
      });
}

void PgStore::trim_stream(std::string stream, int64_t before_ms, int64_t keep_last,
                          std::function<void(Expected<int64_t>)> done) {
  auto n = std::make_shared<int64_t>(0);
  submit(
      [stream = std::move(stream), before_ms, keep_last, n](Connection& c, std::vector<std::string>&) -> Status {
        *n = 0;
        if (before_ms > 0) {
          auto del = c.run("DELETE FROM stream_records WHERE stream=$1 AND time<$2",
                           {Param::of(stream), Param::of(before_ms)});
          if (!del) return del.error();
          *n += del->affected();
        }
        if (keep_last > 0) {
          auto del = c.run(
              "DELETE FROM stream_records r USING stream_partitions p WHERE r.stream=$1 AND p.stream=r.stream "
              "AND p.part=r.part AND r.off < p.next_offset - $2",
              {Param::of(stream), Param::of(keep_last)});
          if (!del) return del.error();
          *n += del->affected();
        }
        return ok_status();
      },
      [done = std::move(done), n](Status st) {
        if (!st) return done(st.error());
        done(*n);
      });
}

void PgStore::set_blob_subscriptions(std::vector<BlobSubscription> subs, std::function<void(Status)> done) {
  if (auto st = check_blob_subscriptions(subs); !st) {
    submit([st](Connection&, std::vector<std::string>&) { return st; }, std::move(done));
    return;
  }
  submit(
      [subs = std::move(subs)](Connection& c, std::vector<std::string>&) -> Status {
        // Hosts starting together replace the set one after the other, not interleaved.
        if (auto lock = c.run("SELECT pg_advisory_xact_lock(7235160316)"); !lock) return lock.error();
        if (auto del = c.run("DELETE FROM blob_subscriptions"); !del) return del.error();
        int64_t position = 0;
        for (const auto& sub : subs) {
          auto ins = c.run("INSERT INTO blob_subscriptions(queue, position, container, pattern, events) VALUES($1,$2,$3,$4,$5)",
                           {Param::of(sub.queue), Param::of(position++), Param::of(sub.container), Param::of(sub.pattern),
                            Param::of(int64_t{sub.events})});
          if (!ins) return ins.error();
        }
        return ok_status();
      },
      std::move(done));
}

void PgStore::close() {
  close_io();  // what was handed to the I/O threads may still commit
  if (!queue_.close()) return;
  if (writer_.joinable()) writer_.join();
  if (stop_pipe_[1] >= 0) {
    const char x = 1;
    (void)!::write(stop_pipe_[1], &x, 1);
  }
  if (listener_.joinable()) listener_.join();
  pool_.clear();
}

// --- reads ---------------------------------------------------------------------------------

Expected<std::optional<StateEntry>> PgStore::get(const std::string& store, const std::string& key) {
  using R = std::optional<StateEntry>;
  return read<R>([&](Connection& c) -> Expected<R> {
    auto r = c.run("SELECT value, etag, expires FROM state WHERE store=$1 AND key=$2 AND (expires=0 OR expires>$3)",
                   {Param::of(store), Param::of(key), Param::of(unix_ms(clock_))});
    if (!r) return r.error();
    if (r->size() == 0) return R();
    return R(StateEntry{key, r->text(0, 0), std::to_string(r->integer(0, 1)), r->integer(0, 2)});
  });
}

Expected<std::vector<StateEntry>> PgStore::scan(const std::string& store, const std::string& prefix, int limit) {
  using R = std::vector<StateEntry>;
  return read<R>([&](Connection& c) -> Expected<R> {
    // Keys compare bytewise (COLLATE "C"): a prefix ending in an ASCII character below DEL is
    // the key range [prefix, prefix with that character + 1), which the primary key serves
    // without reading the rest of the store; other prefixes filter from the prefix on.
    const bool ranged = !prefix.empty() && static_cast<unsigned char>(prefix.back()) < 0x7F;
    std::string end = prefix;
    if (ranged) end.back() = static_cast<char>(end.back() + 1);
    auto r = c.run(ranged ? "SELECT key, value, etag, expires FROM state WHERE store=$1 AND key>=$2 AND key<$5 "
                            "AND (expires=0 OR expires>$3) ORDER BY key LIMIT $4"
                          : "SELECT key, value, etag, expires FROM state WHERE store=$1 AND key>=$2 AND starts_with(key, $2) "
                            "AND (expires=0 OR expires>$3) ORDER BY key LIMIT $4",
                   ranged ? std::vector<Param>{Param::of(store), Param::of(prefix), Param::of(unix_ms(clock_)),
                                               Param::of(int64_t{limit}), Param::of(end)}
                          : std::vector<Param>{Param::of(store), Param::of(prefix), Param::of(unix_ms(clock_)),
                                               Param::of(int64_t{limit})});
    if (!r) return r.error();
    R out;
    for (int i = 0; i < r->size(); ++i) {
      out.push_back(StateEntry{r->text(i, 0), r->text(i, 1), std::to_string(r->integer(i, 2)), r->integer(i, 3)});
    }
    return out;
  });
}

Expected<std::vector<Message>> PgStore::peek(const std::string& queue, int limit) {
  using R = std::vector<Message>;
  return read<R>([&](Connection& c) -> Expected<R> {
    auto r = c.run(std::string("SELECT ") + kMessageColumns + " FROM messages WHERE queue=$1 ORDER BY due, seq LIMIT $2",
                   {Param::of(queue), Param::of(int64_t{limit})});
    if (!r) return r.error();
    R out;
    for (int i = 0; i < r->size(); ++i) out.push_back(read_message(*r, i, 0));
    return out;
  });
}

Expected<std::vector<QueueStats>> PgStore::stats() {
  using R = std::vector<QueueStats>;
  return read<R>([&](Connection& c) -> Expected<R> {
    // A leased message whose lease has expired is receivable again: it counts as ready.
    auto r = c.run(
        "SELECT queue, count(*) FILTER (WHERE due<=$1), count(*) FILTER (WHERE lease IS NULL AND due>$1), "
        "count(*) FILTER (WHERE lease IS NOT NULL AND due>$1) FROM messages GROUP BY queue ORDER BY queue",
        {Param::of(unix_ms(clock_))});
    if (!r) return r.error();
    R out;
    for (int i = 0; i < r->size(); ++i) {
      out.push_back(QueueStats{r->text(i, 0), r->integer(i, 1), r->integer(i, 2), r->integer(i, 3)});
    }
    return out;
  });
}

Expected<int64_t> PgStore::next_due(const std::string& queue) {
  return read<int64_t>([&](Connection& c) -> Expected<int64_t> {
    auto r = c.run("SELECT min(due) FROM messages WHERE queue=$1 AND due>$2", {Param::of(queue), Param::of(unix_ms(clock_))});
    if (!r) return r.error();
    return r->integer(0, 0);
  });
}

}  // namespace pg

Expected<std::unique_ptr<Store>> open_postgres_store(const std::string& url, const std::filesystem::path&,
                                                     const Clock& clock, StoreOptions options) {
  auto store = std::make_unique<pg::PgStore>(url, clock, options);
  if (auto st = store->open(); !st) return st.error();
  return std::unique_ptr<Store>(std::move(store));
}

Expected<StoreFiles> postgres_store_files(const std::string&, const std::filesystem::path&) {
  return StoreFiles{};  // across the network: nothing on this machine to hide
}

}  // namespace nimbus
