// hiredis, as the Redis store uses it (redis_conn.h).
#include "store/redis/redis_conn.h"

#include <hiredis/hiredis.h>
#include <poll.h>

#include <boost/url/parse.hpp>
#include <charconv>

namespace nimbus::rd {
namespace {

bool to_int(std::string_view text, int& out) {
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && p == text.data() + text.size();
}

Value convert(const redisReply* r) {
  Value v;
  if (!r) return v;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      v.kind = Value::string;
      v.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      v.kind = Value::status;
      v.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      v.kind = Value::error;
      v.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      v.kind = Value::integer;
      v.number = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      v.kind = Value::array;
      v.items.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) v.items.push_back(convert(r->element[i]));
      break;
    default:
      break;
  }
  return v;
}

struct Argv {
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  explicit Argv(const std::vector<std::string>& argv) {
    for (const auto& a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
  }
  int size() const { return static_cast<int>(ptrs.size()); }
};

}  // namespace

int64_t Value::num() const {
  if (kind == integer) return number;
  int64_t out = 0;
  std::from_chars(text.data(), text.data() + text.size(), out);
  return out;
}

const Value& Value::operator[](std::size_t i) const {
  static const Value none;
  return i < items.size() ? items[i] : none;
}

Expected<Address> parse_address(const std::string& url) {
  auto u = boost::urls::parse_uri(url);
  auto bad = [&](const std::string& why) { return Error{"store '" + url + "': " + why}; };
  if (!u) return bad("not a URL (redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=P])");
  if (u->scheme() != "redis") return bad("the scheme must be redis://");
  Address a;
  if (!u->host().empty()) a.host = std::string(u->encoded_host().decode());
  if (u->has_port() && (!to_int(u->port(), a.port) || a.port <= 0 || a.port > 65535)) return bad("the port must be 1-65535");
  if (u->has_userinfo()) {
    a.user = std::string(u->user());
    a.password = std::string(u->password());
  }
  std::string path = std::string(u->path());
  if (!path.empty() && path != "/") {
    if (!to_int(std::string_view(path).substr(1), a.db) || a.db < 0) return bad("the path must be a database number, not " + path);
  }
  for (auto param : u->params()) {
    const std::string value = param.has_value ? std::string(param.value) : std::string();
    if (param.key == "prefix") {
      if (value.empty()) return bad("prefix= must not be empty");
      a.prefix = value;
    } else if (param.key == "connect_timeout" || param.key == "timeout") {
      int s = 0;
      if (!to_int(value, s) || s <= 0) return bad(std::string(param.key) + "= must be a number of seconds above 0");
      (param.key == "timeout" ? a.timeout_s : a.connect_timeout_s) = s;
    } else {
      return bad("unknown option '" + std::string(param.key) + "' (known: prefix, connect_timeout, timeout)");
    }
  }
  return a;
}

Connection::Connection(Address address) : address_(std::move(address)) {}

Connection::~Connection() {
  if (ctx_) redisFree(ctx_);
}

Error Connection::broken(const std::string& what) {
  std::string why = ctx_ && ctx_->errstr[0] ? std::string(ctx_->errstr) : std::string("connection closed");
  if (ctx_) redisFree(ctx_);
  ctx_ = nullptr;
  lost_ = true;
  return Error{"Redis at " + address_.host + ":" + std::to_string(address_.port) + ": " + what + ": " + why,
               "io"};
}

Status Connection::connect() {
  if (ctx_) return ok_status();
  timeval tv{address_.connect_timeout_s, 0};
  ctx_ = redisConnectWithTimeout(address_.host.c_str(), address_.port, tv);
  if (!ctx_) return Error{"Redis at " + address_.host + ":" + std::to_string(address_.port) + ": out of memory", "io"};
  if (ctx_->err) return broken("cannot connect");
  timeval rw{address_.timeout_s, 0};
  redisSetTimeout(ctx_, rw);
  redisEnableKeepAlive(ctx_);
  lost_ = false;
  // A refused AUTH or SELECT leaves no half-made connection behind (the next use tries again).
  auto handshake = [&](const std::vector<std::string>& argv, const char* what) -> Status {
    auto r = run(argv);
    if (r) return ok_status();
    if (ctx_) {
      redisFree(ctx_);
      ctx_ = nullptr;
    }
    lost_ = true;
    return Error{"Redis at " + address_.host + ":" + std::to_string(address_.port) + ": " + what + ": " +
                     r.error().message,
                 "io"};
  };
  if (!address_.password.empty()) {
    std::vector<std::string> auth{"AUTH"};
    if (!address_.user.empty()) auth.push_back(address_.user);
    auth.push_back(address_.password);
    if (auto st = handshake(auth, "AUTH was refused"); !st) return st;
  }
  if (address_.db != 0) {
    if (auto st = handshake({"SELECT", std::to_string(address_.db)}, "SELECT was refused"); !st) return st;
  }
  return ok_status();
}

Expected<Value> Connection::run(const std::vector<std::string>& argv) {
  if (auto st = connect(); !st) return st.error();
  Argv a(argv);
  auto* reply = static_cast<redisReply*>(redisCommandArgv(ctx_, a.size(), a.ptrs.data(), a.lens.data()));
  if (!reply) return broken(argv.empty() ? "command" : argv[0]);
  Value v = convert(reply);
  freeReplyObject(reply);
  if (v.kind == Value::error) return Error{"Redis: " + v.text, "redis"};
  return v;
}

Status Connection::pipeline(const std::vector<std::vector<std::string>>& commands, std::vector<Value>& replies) {
  replies.clear();
  if (auto st = connect(); !st) return st;
  for (const auto& argv : commands) {
    Argv a(argv);
    if (redisAppendCommandArgv(ctx_, a.size(), a.ptrs.data(), a.lens.data()) != REDIS_OK) return broken("send");
  }
  replies.reserve(commands.size());
  for (std::size_t i = 0; i < commands.size(); ++i) {
    void* reply = nullptr;
    if (redisGetReply(ctx_, &reply) != REDIS_OK || !reply) return broken("reply");
    replies.push_back(convert(static_cast<redisReply*>(reply)));
    freeReplyObject(reply);
  }
  return ok_status();
}

Status Connection::send(const std::vector<std::string>& argv) {
  if (auto st = connect(); !st) return st;
  Argv a(argv);
  if (redisAppendCommandArgv(ctx_, a.size(), a.ptrs.data(), a.lens.data()) != REDIS_OK) return broken("send");
  int done = 0;
  while (!done) {
    if (redisBufferWrite(ctx_, &done) != REDIS_OK) return broken("send");
  }
  return ok_status();
}

Expected<Value> Connection::read_reply(int timeout_ms, int wake_fd) {
  if (!ctx_) return broken("read");
  void* reply = nullptr;
  if (redisGetReplyFromReader(ctx_, &reply) != REDIS_OK) return broken("read");
  if (!reply) {
    pollfd p[2] = {{ctx_->fd, POLLIN, 0}, {wake_fd, POLLIN, 0}};
    const int n = ::poll(p, wake_fd >= 0 ? 2 : 1, timeout_ms);
    if (n <= 0 || !p[0].revents) return Value{};  // nothing yet, woken, or interrupted: the caller comes back
    if (redisBufferRead(ctx_) != REDIS_OK) return broken("read");
    if (redisGetReplyFromReader(ctx_, &reply) != REDIS_OK) return broken("read");
    if (!reply) return Value{};
  }
  Value v = convert(static_cast<redisReply*>(reply));
  freeReplyObject(reply);
  return v;
}

int Connection::fd() const { return ctx_ ? ctx_->fd : -1; }

}  // namespace nimbus::rd
