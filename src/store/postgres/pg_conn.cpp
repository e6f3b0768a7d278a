#include "store/postgres/pg_conn.h"

#include <arpa/inet.h>
#include <libpq-fe.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "core/text.h"
#include "store/store.h"

namespace nimbus::pg {

std::string text_array(const std::vector<std::string>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out += ',';
    out += '"';
    for (char ch : values[i]) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  return out + "}";
}

std::string bigint_array(const std::vector<int64_t>& values) {
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(values[i]);
  }
  return out + "}";
}

Rows::Rows(PGresult* result) : result_(result) {}
Rows::~Rows() { PQclear(result_); }
Rows::Rows(Rows&& other) noexcept : result_(std::exchange(other.result_, nullptr)) {}
Rows& Rows::operator=(Rows&& other) noexcept {
  if (this != &other) {
    PQclear(result_);
    result_ = std::exchange(other.result_, nullptr);
  }
  return *this;
}

int Rows::size() const { return result_ ? PQntuples(result_) : 0; }
bool Rows::null(int row, int col) const { return PQgetisnull(result_, row, col) != 0; }

int64_t Rows::integer(int row, int col) const {
  if (null(row, col)) return 0;
  const char* v = PQgetvalue(result_, row, col);
  const int len = PQgetlength(result_, row, col);
  if (len == 8) {
    uint64_t be;
    std::memcpy(&be, v, 8);
    return static_cast<int64_t>(be64toh(be));
  }
  if (len == 4) {
    uint32_t be;
    std::memcpy(&be, v, 4);
    return static_cast<int32_t>(ntohl(be));
  }
  if (len == 2) {
    uint16_t be;
    std::memcpy(&be, v, 2);
    return static_cast<int16_t>(ntohs(be));
  }
  return 0;
}

std::string Rows::text(int row, int col) const {
  if (null(row, col)) return {};
  return std::string(PQgetvalue(result_, row, col), static_cast<std::size_t>(PQgetlength(result_, row, col)));
}

std::string Rows::command() const { return result_ ? PQcmdStatus(result_) : ""; }

int64_t Rows::affected() const {
  const char* n = result_ ? PQcmdTuples(result_) : "";
  return *n ? std::strtoll(n, nullptr, 10) : 0;
}

Connection::Connection(std::string url) : url_(std::move(url)) {}
Connection::~Connection() {
  if (conn_) PQfinish(conn_);
}

bool Connection::connected() const { return conn_ && !broken_ && PQstatus(conn_) == CONNECTION_OK; }
int Connection::backend_pid() const { return conn_ ? PQbackendPID(conn_) : 0; }

Status Connection::connect() {
  if (connected()) return ok_status();
  if (conn_) PQfinish(conn_);
  broken_ = false;
  prepared_.clear();
  deferred_.clear();
  statements_ = 0;
  last_ = PgError{};
  // Defaults the URL may override: a server that stops answering (a network that drops
  // packets rather than refusing them) is noticed in seconds, not minutes.
  const char* keys[] = {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                        "keepalives_count", "tcp_user_timeout", "dbname", nullptr};
  const char* values[] = {"5", "1", "10", "3", "3", "15000", url_.c_str(), nullptr};
  conn_ = PQconnectdbParams(keys, values, 1);
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string why = conn_ ? PQerrorMessage(conn_) : "out of memory";
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    last_ = PgError{"08001", why, true};
    return Error{"cannot connect to PostgreSQL at " + redact_store_url(url_) + ": " + why, store_error::io};
  }
  // Times are the host's (its injected clock), never the server's; text is UTF-8.
  return exec("SET client_encoding = 'UTF8'; SET TIME ZONE 'UTC'");
}

Error Connection::fail(const std::string& what, PGresult* result) {
  const char* state = result ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  std::string why = result ? PQresultErrorMessage(result) : "";
  if (why.empty() && conn_) why = PQerrorMessage(conn_);
  while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
  last_ = PgError{state ? state : "", why, !conn_ || PQstatus(conn_) != CONNECTION_OK};
  if (state && std::strncmp(state, "08", 2) == 0) last_.connection_lost = true;
  PQclear(result);
  return Error{"PostgreSQL " + what + " failed: " + why, store_error::io};
}

Status Connection::check_text(const Params& params) const {
  // PostgreSQL text is UTF-8 without NUL bytes: refuse anything else before it reaches the
  // server (a failed statement would abort the whole transaction, others' work with it).
  for (const Param& p : params) {
    if (p.kind == Param::text && (p.value.find('\0') != std::string::npos || !valid_utf8(p.value))) {
      return Error{"a name or text value is not valid UTF-8 text (or holds a NUL byte); PostgreSQL stores text "
                   "as UTF-8",
                   store_error::invalid};
    }
  }
  return ok_status();
}

namespace {

// libpq's parameter arrays for one statement (the Params own the bytes).
struct Wire {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  explicit Wire(const Params& params) : values(params.size()), lengths(params.size()), formats(params.size()) {
    for (std::size_t i = 0; i < params.size(); ++i) {
      const Param& p = params[i];
      values[i] = p.kind == Param::null ? nullptr : p.value.data();
      lengths[i] = static_cast<int>(p.value.size());
      formats[i] = p.kind == Param::bytes ? 1 : 0;
    }
  }
  int size() const { return static_cast<int>(values.size()); }
};

}  // namespace

Expected<Rows> Connection::run(const std::string& sql, const Params& params) {
  last_ = PgError{};
  // A connection that was never made is made now; one that broke is not made again here:
  // statements after it would run outside the transaction they belonged to. Its owner
  // reconnects (the writer before its next group, a reader with a fresh connection).
  if (!conn_) {
    if (auto st = connect(); !st) return st.error();
  } else if (!connected()) {
    last_ = PgError{"08006", "the connection to the server was lost", true};
    return Error{"PostgreSQL statement failed: the connection to the server was lost", store_error::io};
  }
  if (auto st = check_text(params); !st) return st.error();
  if (!deferred_.empty()) return run_pipelined(sql, params, true);
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = "s" + std::to_string(statements_);
    PGresult* r = PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) return fail("prepare", r);
    PQclear(r);
    ++statements_;
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  const Wire wire(params);
  PGresult* r = PQexecPrepared(conn_, it->second.c_str(), wire.size(), wire.values.data(), wire.lengths.data(),
                               wire.formats.data(), 1);
  const auto status = PQresultStatus(r);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) return fail("statement", r);
  return Rows(r);
}

void Connection::defer(std::string sql, Params params, std::function<Status(const Rows&)> check) {
  deferred_.push_back({std::move(sql), std::move(params), std::move(check)});
}

Status Connection::write(const std::string& sql, Params params, std::function<Status(const Rows&)> check) {
  if (pipelining_) {
    defer(sql, std::move(params), std::move(check));
    return ok_status();
  }
  auto r = run(sql, params);
  if (!r) return r.error();
  return check(*r);
}

Expected<Rows> Connection::run_pipelined(const std::string& sql, const Params& params, bool prepare) {
  for (const auto& d : deferred_) {  // checked before anything leaves (a BEGIN stays deferred)
    if (auto st = check_text(d.params); !st) return st.error();
  }
  if (auto st = check_text(params); !st) return st.error();  // (a flush's last statement is one of them)
  std::vector<Deferred> ahead = std::move(deferred_);
  deferred_.clear();
  // A connection that fails while a pipeline is half sent or half read is in no state to be
  // used again: it counts as lost, and its owner connects afresh (as after any lost connection).
  const auto abandon = [&](const std::string& why) -> Error {
    std::string detail = conn_ ? PQerrorMessage(conn_) : "";
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == ' ')) detail.pop_back();
    broken_ = true;
    last_ = PgError{"08006", detail.empty() ? why : detail, true};
    return Error{"PostgreSQL " + why + " failed: " + last_.message, store_error::io};
  };
  if (PQenterPipelineMode(conn_) != 1) return abandon("pipeline");
  int results = 0;  // one per statement sent, and one per statement prepared on the way
  std::vector<std::pair<int, std::string>> fresh;  // statements prepared in this pipeline: (result, SQL)
  std::vector<const Deferred*> owner;  // by result: the deferred statement it answers (null: none)
  const auto send = [&](const std::string& text, const Params& ps, bool named, const Deferred* from) -> bool {
    const Wire wire(ps);
    if (!named) {
      if (PQsendQueryParams(conn_, text.c_str(), wire.size(), nullptr, wire.values.data(), wire.lengths.data(),
                            wire.formats.data(), 1) != 1) {
        return false;
      }
      ++results;
      owner.push_back(from);
      return true;
    }
    auto it = prepared_.find(text);
    if (it == prepared_.end()) {
      std::string name = "s" + std::to_string(statements_++);
      if (PQsendPrepare(conn_, name.c_str(), text.c_str(), 0, nullptr) != 1) return false;
      fresh.emplace_back(results++, text);
      owner.push_back(nullptr);
      it = prepared_.emplace(text, std::move(name)).first;
    }
    if (PQsendQueryPrepared(conn_, it->second.c_str(), wire.size(), wire.values.data(), wire.lengths.data(),
                            wire.formats.data(), 1) != 1) {
      return false;
    }
    ++results;
    owner.push_back(from);
    return true;
  };
  for (const auto& d : ahead) {
    if (!send(d.sql, d.params, !d.params.empty(), &d)) return abandon("statement");
  }
  if (!send(sql, params, prepare, nullptr) || PQpipelineSync(conn_) != 1) return abandon("statement");
  std::optional<Error> failed;
  PGresult* last = nullptr;
  // Each statement's result, then NULL; the sync point's result at the end (after a failure,
  // the statements not run answer PGRES_PIPELINE_ABORTED).
  int index = 0, nulls = 0;
  for (;;) {
    PGresult* r = PQgetResult(conn_);
    if (!r) {
      if (++nulls > 1 || PQstatus(conn_) != CONNECTION_OK) {
        PQclear(last);
        return abandon("statement");
      }
      continue;
    }
    nulls = 0;
    const auto status = PQresultStatus(r);
    if (status == PGRES_PIPELINE_SYNC) {
      PQclear(r);
      break;
    }
    const int at = index++;
    const bool final = at == results - 1;
    if (status != PGRES_COMMAND_OK) {
      // A statement whose prepare did not run (or failed) does not exist on the server: it is
      // prepared again next time, under a new name. (Those that did are kept: PostgreSQL does
      // not roll a prepare back.)
      for (const auto& [result, text] : fresh) {
        if (result == at) prepared_.erase(text);
      }
    }
    if (status == PGRES_PIPELINE_ABORTED) {
      PQclear(r);
    } else if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
      if (!failed) {
        failed = fail("statement", r);
      } else {
        PQclear(r);
      }
    } else if (final) {
      last = r;
    } else if (const Deferred* d = at < static_cast<int>(owner.size()) ? owner[static_cast<std::size_t>(at)] : nullptr;
               d && d->check && !failed) {
      if (auto st = d->check(Rows(r)); !st) failed = st.error();
    } else {
      PQclear(r);
    }
  }
  if (PQexitPipelineMode(conn_) != 1) {
    PQclear(last);
    return abandon("statement");
  }
  if (failed) {
    PQclear(last);
    return *failed;
  }
  return Rows(last);
}

Status Connection::flush_deferred() {
  if (deferred_.empty()) return ok_status();
  Deferred last = std::move(deferred_.back());
  deferred_.pop_back();
  auto r = run_pipelined(last.sql, last.params, !last.params.empty());
  if (!r) return r.error();
  if (last.check) return last.check(*r);
  return ok_status();
}

Status Connection::exec(const std::string& sql) {
  last_ = PgError{};
  if (!conn_) {
    if (auto st = connect(); !st) return st;
  } else if (broken_) {
    last_ = PgError{"08006", "the connection to the server was lost", true};
    return Error{"PostgreSQL statement failed: the connection to the server was lost", store_error::io};
  }
  if (auto st = flush_deferred(); !st) return st;
  PGresult* r = PQexec(conn_, sql.c_str());
  const auto status = PQresultStatus(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) return fail("statement", r);
  PQclear(r);
  return ok_status();
}

Status Connection::commit() {
  if (!connected()) {
    deferred_.clear();
    last_ = PgError{"08006", "the connection to the server was lost", true};
    return Error{"PostgreSQL commit failed: the connection to the server was lost", store_error::io};
  }
  if (PQtransactionStatus(conn_) == PQTRANS_INERROR ||
      (deferred_.empty() && PQtransactionStatus(conn_) != PQTRANS_INTRANS)) {
    // A statement failed and the server aborted the transaction: a COMMIT would answer
    // ROLLBACK. Nothing of it was kept.
    rollback();
    return Error{"PostgreSQL aborted the transaction; nothing of it was committed", store_error::io};
  }
  // A deferred statement with a check is answered, and checked, before the COMMIT leaves: a
  // check read after it would be too late to keep its transaction from committing.
  if (std::any_of(deferred_.begin(), deferred_.end(), [](const Deferred& d) { return static_cast<bool>(d.check); })) {
    if (auto st = flush_deferred(); !st) {
      rollback();
      return st;
    }
  }
  // What was deferred (the change notices) goes with the COMMIT, in one round trip.
  last_ = PgError{};
  std::string tag;
  if (deferred_.empty()) {
    PGresult* r = PQexec(conn_, "COMMIT");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) return fail("commit", r);
    tag = PQcmdStatus(r);
    PQclear(r);
  } else {
    auto r = run_pipelined("COMMIT", {}, false);
    if (!r) {
      rollback();  // a deferred statement failed: the transaction is still open, aborted
      return r.error();
    }
    tag = r->command();
  }
  if (tag != "COMMIT") return Error{"PostgreSQL rolled the transaction back at its commit", store_error::io};
  return ok_status();
}

void Connection::rollback() {
  deferred_.clear();  // a BEGIN still deferred began nothing
  if (!connected() || PQtransactionStatus(conn_) == PQTRANS_IDLE) return;
  PQclear(PQexec(conn_, "ROLLBACK"));
}

}  // namespace nimbus::pg
