#pragma once
// One libpq connection, as the PostgreSQL store uses it: statements prepared once per
// connection (by their SQL text), parameters as text or bytes, results in binary (BIGINT,
// TEXT and BYTEA columns only, decoded here), errors with the SQLSTATE, and a reconnect when
// the server went away. Not thread-safe: one thread uses a connection at a time.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/expected.h"

typedef struct pg_conn PGconn;
typedef struct pg_result PGresult;

namespace nimbus::pg {

// A statement's parameter: NULL, text (numbers are sent as their decimal text), or bytes.
struct Param {
  enum Kind : uint8_t { null, text, bytes } kind = null;
  std::string value;
  static Param of(std::string_view v) { return Param{text, std::string(v)}; }
  static Param of(int64_t v) { return Param{text, std::to_string(v)}; }
  static Param blob(std::string_view v) { return Param{bytes, std::string(v)}; }
};
using Params = std::vector<Param>;

// A PostgreSQL array literal of text values ({"a","b\"c"}), for `= ANY($1::text[])` and
// unnest(): many rows in one statement.
std::string text_array(const std::vector<std::string>& values);
// Of bigint values: {1,2,3}.
std::string bigint_array(const std::vector<int64_t>& values);

// A statement's rows, binary: int64 for BIGINT (and INTEGER) columns, bytes for the rest.
class Rows {
 public:
  Rows() = default;
  explicit Rows(PGresult* result);
  ~Rows();
  Rows(Rows&& other) noexcept;
  Rows& operator=(Rows&& other) noexcept;
  Rows(const Rows&) = delete;
  Rows& operator=(const Rows&) = delete;

  int size() const;
  bool null(int row, int col) const;
  int64_t integer(int row, int col) const;  // BIGINT or INTEGER; 0 for NULL
  std::string text(int row, int col) const;  // TEXT or BYTEA bytes; "" for NULL
  int64_t affected() const;                  // rows an INSERT, UPDATE or DELETE touched
  std::string command() const;               // the command tag: "COMMIT", "ROLLBACK", ...

 private:
  PGresult* result_ = nullptr;
};

// What a failed statement says: the SQLSTATE (23505 a unique violation, 40001 a
// serialization failure, 08xxx the connection) and the server's message.
struct PgError {
  std::string sqlstate;
  std::string message;
  bool connection_lost = false;
};

class Connection {
 public:
  explicit Connection(std::string url);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects (again, if the last connection broke); the error names the server and why. run()
  // connects a connection never made, never one that broke (its owner decides).
  Status connect();
  bool connected() const;
  // Runs one statement (prepared on first use on this connection).
  Expected<Rows> run(const std::string& sql, const Params& params = {});
  // Runs SQL text with no parameters (several statements allowed), for schema, LISTEN,
  // savepoints. Statements deferred before it are sent first.
  Status exec(const std::string& sql);
  // Sends one statement (no more than one, no result rows wanted) together with the next
  // run() or commit(), in the same round trip (libpq's pipeline mode): BEGIN, SET LOCAL,
  // pg_notify. Its failure is that call's failure, and what follows it in the transaction is
  // not run. A connection lost before then forgets it. `check`, if set, is given its rows when
  // they come (before that call returns), if it succeeded; its error is that call's error
  // (what follows it has run: the caller rolls the transaction back). commit() sends such
  // statements, and checks them, before its COMMIT.
  void defer(std::string sql, Params params = {}, std::function<Status(const Rows&)> check = {});
  // A write whose rows only need `check`: deferred when pipelining, else run now and checked.
  Status write(const std::string& sql, Params params, std::function<Status(const Rows&)> check);
  // Sends what was deferred now, and waits for it (their checks run).
  Status flush() { return flush_deferred(); }
  // Whether the statements its owner writes may be deferred (see defer) rather than run one
  // round trip each: set by the writer for a transaction whose failure it can run again
  // statement by statement (pg_store.cpp, run_pass); it flushes them before its COMMIT.
  void set_pipelining(bool on) { pipelining_ = on; }
  bool pipelining() const { return pipelining_; }
  // Commits the transaction under way: an error unless the server says COMMIT (a transaction
  // it aborted after a failed statement is rolled back, and said so).
  Status commit();
  // Ends the transaction under way, if any, changing nothing (best effort: a lost connection
  // has no transaction left to end).
  void rollback();
  // The last failure's details (SQLSTATE, whether the connection was lost).
  const PgError& last_error() const { return last_; }
  PGconn* raw() const { return conn_; }
  int backend_pid() const;
  const std::string& url() const { return url_; }

 private:
  Error fail(const std::string& what, PGresult* result);
  Status check_text(const Params& params) const;
  // Sends the deferred statements and then `sql` as one pipeline and returns the last one's
  // result (or the first failure).
  Expected<Rows> run_pipelined(const std::string& sql, const Params& params, bool prepare);
  // Sends what was deferred, alone (before a statement that cannot join a pipeline).
  Status flush_deferred();

  struct Deferred {
    std::string sql;
    Params params;
    std::function<Status(const Rows&)> check;
  };

  std::string url_;
  PGconn* conn_ = nullptr;
  std::map<std::string, std::string> prepared_;  // SQL text -> statement name
  std::vector<Deferred> deferred_;
  bool broken_ = false;  // a pipeline failed half way: lost, whatever libpq says
  bool pipelining_ = false;
  int statements_ = 0;  // prepared on this connection: the next one's name is "s<statements_>"
  PgError last_;
};

}  // namespace nimbus::pg
