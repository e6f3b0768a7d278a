#include "store/postgres/pg_conn.h"

#include <arpa/inet.h>
#include <libpq-fe.h>

#include <cstring>

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

int64_t Rows::affected() const {
  const char* n = result_ ? PQcmdTuples(result_) : "";
  return *n ? std::strtoll(n, nullptr, 10) : 0;
}

Connection::Connection(std::string url) : url_(std::move(url)) {}
Connection::~Connection() {
  if (conn_) PQfinish(conn_);
}

bool Connection::connected() const { return conn_ && PQstatus(conn_) == CONNECTION_OK; }
int Connection::backend_pid() const { return conn_ ? PQbackendPID(conn_) : 0; }

Status Connection::connect() {
  if (connected()) return ok_status();
  if (conn_) PQfinish(conn_);
  prepared_.clear();
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
  // PostgreSQL text is UTF-8 without NUL bytes: refuse anything else before it reaches the
  // server (a failed statement would abort the whole transaction, others' work with it).
  for (std::size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    if (p.kind == Param::text && (p.value.find('\0') != std::string::npos || !valid_utf8(p.value))) {
      return Error{"a name or text value is not valid UTF-8 text (or holds a NUL byte); PostgreSQL stores text "
                   "as UTF-8",
                   store_error::invalid};
    }
  }
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = "s" + std::to_string(prepared_.size());
    PGresult* r = PQprepare(conn_, name.c_str(), sql.c_str(), 0, nullptr);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) return fail("prepare", r);
    PQclear(r);
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  std::vector<const char*> values(params.size());
  std::vector<int> lengths(params.size()), formats(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    values[i] = p.kind == Param::null ? nullptr : p.value.data();
    lengths[i] = static_cast<int>(p.value.size());
    formats[i] = p.kind == Param::bytes ? 1 : 0;
  }
  PGresult* r = PQexecPrepared(conn_, it->second.c_str(), static_cast<int>(params.size()), values.data(),
                               lengths.data(), formats.data(), 1);
  const auto status = PQresultStatus(r);
  if (status != PGRES_TUPLES_OK && status != PGRES_COMMAND_OK) return fail("statement", r);
  return Rows(r);
}

Status Connection::exec(const std::string& sql) {
  last_ = PgError{};
  if (!conn_) {
    if (auto st = connect(); !st) return st;
  }
  PGresult* r = PQexec(conn_, sql.c_str());
  const auto status = PQresultStatus(r);
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) return fail("statement", r);
  PQclear(r);
  return ok_status();
}

Status Connection::commit() {
  if (PQtransactionStatus(conn_) != PQTRANS_INTRANS) {
    // A statement failed and the server aborted the transaction: a COMMIT would answer
    // ROLLBACK. Nothing of it was kept.
    rollback();
    return Error{"PostgreSQL aborted the transaction; nothing of it was committed", store_error::io};
  }
  PGresult* r = PQexec(conn_, "COMMIT");
  if (PQresultStatus(r) != PGRES_COMMAND_OK) return fail("commit", r);
  const bool committed = std::strcmp(PQcmdStatus(r), "COMMIT") == 0;
  PQclear(r);
  if (!committed) return Error{"PostgreSQL rolled the transaction back at its commit", store_error::io};
  return ok_status();
}

void Connection::rollback() {
  if (!connected()) return;
  PQclear(PQexec(conn_, "ROLLBACK"));
}

}  // namespace nimbus::pg
