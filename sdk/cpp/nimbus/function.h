// The C++ SDK for native Nimbus functions. Header-only; include it, write a handler, and
// name it once with NIMBUS_FUNCTION:
//
//   #include <nimbus/function.h>
//   nimbus::Response hello(const nimbus::Request& req, nimbus::Context& ctx) {
//     ctx.log.info("saying hello");
//     return nimbus::Response::text(200, "Hello, World!");
//   }
//   NIMBUS_FUNCTION(hello)
//
// A handler that throws becomes a 500 carrying the invocation id; the exception's message
// goes to the log only.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nimbus/abi.h"

namespace nimbus {

namespace detail {
inline std::string_view view(nimbus_str s) { return {s.data, s.size}; }
inline nimbus_str str(std::string_view s) { return {s.data(), s.size()}; }
inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}
inline int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
// application/x-www-form-urlencoded decoding ('+' is a space).
inline std::string form_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out.push_back(' ');
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 &&
               hex_value(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}
}  // namespace detail

// A read-only view of the invocation; valid during the handler call only.
class Request {
 public:
  explicit Request(const nimbus_invocation* inv) : inv_(inv) {}

  std::string_view method() const { return detail::view(inv_->method); }
  std::string_view path() const { return detail::view(inv_->path); }
  std::string_view query() const { return detail::view(inv_->query); }
  std::string_view body() const { return detail::view(inv_->body); }
  std::string_view trigger() const { return detail::view(inv_->trigger); }
  // CloudEvents attributes (for HTTP: the invocation id and the request as source).
  std::string_view event_id() const { return detail::view(inv_->event_id); }
  std::string_view event_type() const { return detail::view(inv_->event_type); }
  std::string_view event_source() const { return detail::view(inv_->event_source); }
  std::string_view event_subject() const { return detail::view(inv_->event_subject); }
  // Queue and topic triggers: the message, when it was enqueued, and which delivery this is
  // (Context::attempt()).
  std::string_view message_id() const { return detail::view(inv_->message_id); }
  std::chrono::system_clock::time_point enqueued() const {
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(inv_->time_unix_ms));
  }

  // A header (case-insensitive name), or nullopt.
  std::optional<std::string_view> header(std::string_view name) const {
    for (std::size_t i = 0; i < inv_->header_count; ++i)
      if (detail::iequals(detail::view(inv_->headers[i].name), name))
        return detail::view(inv_->headers[i].value);
    return std::nullopt;
  }
  // A route parameter ({id} in /orders/{id}), decoded; or nullopt.
  std::optional<std::string_view> param(std::string_view name) const {
    for (std::size_t i = 0; i < inv_->param_count; ++i)
      if (detail::view(inv_->params[i].name) == name) return detail::view(inv_->params[i].value);
    return std::nullopt;
  }
  // The first query parameter with this name, decoded; or nullopt.
  std::optional<std::string> query_param(std::string_view name) const {
    std::string_view q = query();
    while (!q.empty()) {
      auto amp = q.find('&');
      std::string_view pair = q.substr(0, amp);
      auto eq = pair.find('=');
      if (detail::form_decode(pair.substr(0, eq)) == name)
        return eq == std::string_view::npos ? std::string() : detail::form_decode(pair.substr(eq + 1));
      if (amp == std::string_view::npos) break;
      q.remove_prefix(amp + 1);
    }
    return std::nullopt;
  }
  template <class F>
  void for_each_header(F&& f) const {
    for (std::size_t i = 0; i < inv_->header_count; ++i)
      f(detail::view(inv_->headers[i].name), detail::view(inv_->headers[i].value));
  }

 private:
  const nimbus_invocation* inv_;
};

struct Response {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  static Response text(int status, std::string body) {
    return {status, {{"content-type", "text/plain; charset=utf-8"}}, std::move(body)};
  }
  static Response json(int status, std::string body) {
    return {status, {{"content-type", "application/json"}}, std::move(body)};
  }
  static Response bytes(int status, std::string body,
                        std::string content_type = "application/octet-stream") {
    return {status, {{"content-type", std::move(content_type)}}, std::move(body)};
  }
  Response& header(std::string name, std::string value) {
    headers.emplace_back(std::move(name), std::move(value));
    return *this;
  }
};

class Logger {
 public:
  explicit Logger(const nimbus_host* host) : host_(host) {}
  void debug(std::string_view m) const { write(NIMBUS_LOG_DEBUG, m); }
  void info(std::string_view m) const { write(NIMBUS_LOG_INFO, m); }
  void warn(std::string_view m) const { write(NIMBUS_LOG_WARN, m); }
  void error(std::string_view m) const { write(NIMBUS_LOG_ERROR, m); }

 private:
  void write(int level, std::string_view m) const { host_->log(host_->ctx, level, m.data(), m.size()); }
  const nimbus_host* host_;
};

class Context {
 public:
  Context(const nimbus_invocation* inv, const nimbus_host* host) : log(host), inv_(inv), host_(host) {}

  Logger log;  // lines are tagged with the invocation id

  std::string_view invocation_id() const { return detail::view(inv_->id); }
  std::string_view function_name() const { return detail::view(inv_->function); }
  std::string_view traceparent() const { return detail::view(inv_->traceparent); }
  // The W3C tracestate that came with the trace (empty when none did).
  std::string_view tracestate() const { return detail::view(inv_->tracestate); }
  // The headers to put on the function's own outgoing calls so that what they reach joins this
  // invocation's trace: traceparent, and tracestate when there is one.
  std::vector<std::pair<std::string, std::string>> trace_headers() const {
    std::vector<std::pair<std::string, std::string>> out;
    if (inv_->traceparent.size != 0) out.emplace_back("traceparent", std::string(traceparent()));
    if (inv_->tracestate.size != 0) out.emplace_back("tracestate", std::string(tracestate()));
    return out;
  }
  int attempt() const { return static_cast<int>(inv_->attempt); }
  std::chrono::system_clock::time_point deadline() const {
    return std::chrono::system_clock::time_point(std::chrono::milliseconds(inv_->deadline_unix_ms));
  }
  // Time left before the host stops waiting (never negative).
  std::chrono::milliseconds remaining() const {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline() - std::chrono::system_clock::now());
    return left.count() < 0 ? std::chrono::milliseconds(0) : left;
  }

  // ---- host services (blocking; each returns what the host answered) ----
  struct CallResult {
    bool ok = false;
    std::string error;  // "conflict: ..." when an ETag or create-only condition failed
    std::string body;
    std::vector<std::pair<std::string, std::string>> fields;
    std::string field(std::string_view name) const {
      for (const auto& [n, v] : fields)
        if (n == name) return v;
      return {};
    }
  };
  CallResult call(std::string_view op, const std::vector<std::pair<std::string, std::string>>& args,
                  std::string_view body = {}) const {
    CallResult out;
    std::vector<nimbus_pair> pairs;
    pairs.reserve(args.size());
    for (const auto& [name, value] : args) pairs.push_back({detail::str(name), detail::str(value)});
    host_->call(
        host_->ctx, op.data(), op.size(), pairs.data(), pairs.size(), body.data(), body.size(),
        [](void* user, const nimbus_call_result* r) {
          auto* o = static_cast<CallResult*>(user);
          o->ok = r->ok != 0;
          o->error.assign(r->error.data, r->error.size);
          o->body.assign(r->body.data, r->body.size);
          for (size_t i = 0; i < r->field_count; ++i) {
            o->fields.emplace_back(std::string(detail::view(r->fields[i].name)), std::string(detail::view(r->fields[i].value)));
          }
        },
        &out);
    return out;
  }
  struct StateValue {
    std::string value;
    std::string etag;
  };
  // The value of `key` in state store `store`, or nullopt when absent (or on failure: see call()).
  std::optional<StateValue> state_get(std::string_view store, std::string_view key) const {
    CallResult got = call("state.get", {{"store", std::string(store)}, {"key", std::string(key)}});
    if (!got.ok || got.field("found") != "true") return std::nullopt;
    return StateValue{std::move(got.body), got.field("etag")};
  }
  // Writes `value`; with if_match, only when the current ETag is that ("" = only if absent).
  // Returns the new ETag, or nullopt when the condition failed or the write did.
  std::optional<std::string> state_put(std::string_view store, std::string_view key, std::string_view value,
                                       std::optional<std::string> if_match = std::nullopt) const {
    std::vector<std::pair<std::string, std::string>> args{{"store", std::string(store)}, {"key", std::string(key)}};
    if (if_match) args.emplace_back("if_match", *if_match);
    CallResult r = call("state.put", args, value);
    if (!r.ok) return std::nullopt;
    return r.field("etag");
  }
  bool state_delete(std::string_view store, std::string_view key) const {
    return call("state.delete", {{"store", std::string(store)}, {"key", std::string(key)}}).ok;
  }
  // Publishes to a topic now (not tied to this invocation's outcome: use outputs for that).
  bool publish(std::string_view topic, std::string_view payload, std::string type = {}, std::string subject = {}) const {
    return call("publish", {{"topic", std::string(topic)}, {"type", std::move(type)}, {"subject", std::move(subject)}},
                payload)
        .ok;
  }
  bool enqueue(std::string_view queue, std::string_view payload, std::string type = {}) const {
    return call("enqueue", {{"queue", std::string(queue)}, {"type", std::move(type)}}, payload).ok;
  }
  // Invokes another function and waits for its reply body.
  CallResult invoke(std::string_view function, std::string_view payload) const {
    return call("invoke", {{"function", std::string(function)}}, payload);
  }

  // A message for the output binding `binding` (declared under the function's `outputs:`),
  // committed with the invocation: for a queue or topic trigger in the same transaction as the
  // ack, for HTTP before the reply. State outputs take the key from metadata "key".
  void output(std::string_view binding, std::string_view payload,
              const std::vector<std::pair<std::string, std::string>>& metadata = {}) {
    std::vector<nimbus_pair> pairs;
    pairs.reserve(metadata.size());
    for (const auto& [name, value] : metadata) pairs.push_back({detail::str(name), detail::str(value)});
    host_->output(host_->ctx, binding.data(), binding.size(), payload.data(), payload.size(), pairs.data(), pairs.size());
  }

 private:
  const nimbus_invocation* inv_;
  const nimbus_host* host_;
};

namespace detail {
template <class Handler>
int invoke(Handler&& handler, const nimbus_invocation* inv, const nimbus_host* host) {
  auto fail = [&](std::string_view type, std::string_view message) {
    host->fail(host->ctx, type.data(), type.size(), message.data(), message.size());
    return 1;
  };
  try {
    Request req(inv);
    Context ctx(inv, host);
    Response res = handler(req, ctx);
    nimbus_pair small[16];  // most replies have a few headers: no allocation for them
    std::vector<nimbus_pair> large;
    nimbus_pair* headers = small;
    if (res.headers.size() > 16) {
      large.resize(res.headers.size());
      headers = large.data();
    }
    for (std::size_t i = 0; i < res.headers.size(); ++i) {
      headers[i] = {str(res.headers[i].first), str(res.headers[i].second)};
    }
    host->reply(host->ctx, res.status, headers, res.headers.size(), res.body.data(), res.body.size());
    return 0;
  } catch (const std::exception& e) {
    return fail("exception", e.what());
  } catch (...) {
    return fail("exception", "a non-standard exception was thrown");
  }
}
}  // namespace detail

}  // namespace nimbus

// Exports `handler` (callable as Response(const Request&, Context&)) as this library's function.
#define NIMBUS_FUNCTION(handler)                                                           \
  extern "C" __attribute__((visibility("default"))) uint32_t nimbus_abi_version(void) {   \
    return NIMBUS_ABI_VERSION;                                                             \
  }                                                                                        \
  extern "C" __attribute__((visibility("default"))) int nimbus_invoke_v1(                  \
      const nimbus_invocation* invocation, const nimbus_host* host) {                      \
    return ::nimbus::detail::invoke(handler, invocation, host);                            \
  }
