#pragma once
// One hiredis connection, as the Redis store uses it: commands as argument vectors (binary
// safe), several sent at once and their replies read in order (pipelining: one round trip
// for a group of commits), replies copied into plain values, and errors that say whether the
// connection was lost. Not thread-safe: one thread uses a connection at a time.
#include <cstdint>
#include <string>
#include <vector>

#include "core/expected.h"

struct redisContext;

namespace nimbus::rd {

// Where a redis:// URL points, and the options it may carry:
// redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=P&connect_timeout=S&timeout=S]
struct Address {
  std::string host = "127.0.0.1";
  int port = 6379;
  int db = 0;
  std::string user, password;
  std::string prefix = "nimbus";  // every key starts with it, so apps can share one Redis
  int connect_timeout_s = 10;
  int timeout_s = 30;             // a reply not read by then: the connection counts as lost
};
Expected<Address> parse_address(const std::string& url);

struct Value {
  enum Kind : uint8_t { nil, integer, string, array, status, error } kind = nil;
  int64_t number = 0;
  std::string text;  // string, status and error
  std::vector<Value> items;

  // A string or integer as text ("" for nil); an array's element, nil past its end.
  std::string str() const { return kind == integer ? std::to_string(number) : text; }
  int64_t num() const;
  const Value& operator[](std::size_t i) const;
};

class Connection {
 public:
  explicit Connection(Address address);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Connects (and authenticates, selects the database); the error names the server and why.
  Status connect();
  bool connected() const { return ctx_ != nullptr; }
  // One command and its reply. An error reply is an Error (code "redis"); a broken
  // connection is an Error too, and the connection is dropped (connected() is false).
  Expected<Value> run(const std::vector<std::string>& argv);
  // Several commands in one round trip; each reply (error replies as values) in order into
  // `replies`. A connection lost on the way is an Error, and `replies` holds those answered
  // before it (they ran; whether the others did is unknown).
  Status pipeline(const std::vector<std::vector<std::string>>& commands, std::vector<Value>& replies);
  // For the subscriber: sends a command without waiting; reads one reply (waiting at most
  // timeout_ms, or until `wake_fd` is readable: a nil Value when none came by then).
  Status send(const std::vector<std::string>& argv);
  Expected<Value> read_reply(int timeout_ms, int wake_fd = -1);
  int fd() const;
  bool lost() const { return lost_; }
  const Address& address() const { return address_; }

 private:
  Error broken(const std::string& what);

  Address address_;
  redisContext* ctx_ = nullptr;
  bool lost_ = false;
};

}  // namespace nimbus::rd
