#pragma once
// The unit of work: a trigger turns something outside into an Invocation; a runtime turns an
// Invocation into a Result. Both are plain values with no I/O, shared by every part.
#include <cstdint>
#include <functional>
#include <optional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"

namespace nimbus {

// Which kind of trigger made an invocation: a small number standing for the name a kind goes
// by ("queue", "cloudevents", ...). The set is open: each folder under triggers/ names its own
// kind, and the same name is always the same number in one process. Two are the host's own and
// always present: the public HTTP listener (`http`) and invocations the host makes itself
// (`admin`: the admin API and function-to-function calls).
class TriggerKind {
 public:
  static constexpr int kMax = 16;  // kinds in one process; names past it share the last, "other"
  static const TriggerKind http;
  static const TriggerKind admin;

  constexpr TriggerKind() = default;  // http
  // The kind going by `name`, made on first use.
  static TriggerKind named(std::string_view name);
  std::string_view name() const;
  constexpr int index() const { return index_; }
  // The kind numbered `index` (0 <= index < kMax); its name is "" until a kind goes by it.
  static constexpr TriggerKind at(int index) { return TriggerKind(static_cast<uint8_t>(index)); }
  friend constexpr bool operator==(TriggerKind a, TriggerKind b) { return a.index_ == b.index_; }

 private:
  constexpr explicit TriggerKind(uint8_t index) : index_(index) {}
  uint8_t index_ = 0;
};
inline constexpr TriggerKind TriggerKind::http{0};
inline constexpr TriggerKind TriggerKind::admin{1};
inline std::string_view to_string(TriggerKind kind) { return kind.name(); }

struct Header {
  std::string name;
  std::string value;
};
using Headers = std::vector<Header>;

// Case-insensitive lookup (HTTP header names); returns nullptr when absent.
const std::string* find_header(const Headers& headers, std::string_view name);
// A message's trace context in its metadata: `traceparent` when not empty and the metadata has
// none (a function that set its own keeps it), and `tracestate` beside it when not empty.
void add_trace_context(Headers& metadata, std::string_view traceparent, std::string_view tracestate);

struct HttpRequest {
  std::string method;
  std::string path;   // percent-encoded, as received
  std::string query;  // raw, without '?'
  Headers headers;
  Headers params;     // path parameters from the route, decoded
};

struct Invocation {
  std::string id;
  std::string function;
  TriggerKind trigger = TriggerKind::http;
  std::string event_id;    // the CloudEvents id: a message's event id; empty = the invocation id
  std::string message_id;  // store-backed triggers: the message delivered
  // CloudEvents attributes (id is the invocation id).
  std::string source;
  std::string type;
  std::string subject;
  WallTime time{};         // when the trigger made it (deadline_unix_ms counts from here)
  int64_t enqueued_ms = 0;  // store-backed triggers: when the message was enqueued (CloudEvents time)
  std::string payload;  // bytes; for HTTP the request body
  Headers metadata;
  int attempt = 1;
  TimePoint started{};   // when the trigger made it (steady); durations count from here
  TimePoint deadline{};  // steady; the wall-clock deadline is time + (deadline - started)
  std::string traceparent;  // W3C trace context: this invocation's own span is its parent-id
  std::string tracestate;   // W3C: the vendors' list that came with a continued trace, passed on as it came
  uint64_t parent_span = 0;  // the span that caused it (from the incoming traceparent); 0: a root
  std::optional<HttpRequest> http;
};

enum class Outcome : uint8_t {
  success,      // the function ran and returned
  error,        // the function ran and failed (threw, returned an error)
  timeout,      // the function did not finish by its deadline
  overloaded,   // at its concurrency limit with a full wait queue; nothing ran
  unavailable,  // could not be run at all (not loaded, shutting down)
  crashed,      // the instance running it died (a worker process exited or was killed)
};
inline constexpr int kOutcomeCount = 6;
std::string_view to_string(Outcome outcome);

struct UpgradedStream;  // triggers/http/server.h
struct BodySource;      // triggers/http/body_source.h

struct HttpReply {
  int status = 200;
  Headers headers;
  std::string body;
  // A 101 from a proxied upstream (a WebSocket): the upstream connection the listener splices
  // to the client's once this head is written.
  std::shared_ptr<UpgradedStream> upgrade{};
  // A large proxied reply: `body` is empty and the listener sends this as it arrives.
  std::shared_ptr<BodySource> stream{};
  // A proxied reply to HEAD: the Content-Length the upstream gave (what a GET would carry),
  // sent instead of the empty body's; kNoLength: the upstream gave none, so none is sent.
  std::optional<uint64_t> head_length{};
  static constexpr uint64_t kNoLength = ~uint64_t{0};
};

struct FunctionError {
  std::string type;     // e.g. "exception", "timeout"
  std::string message;  // safe to show a client only for host-made errors
};

// A message for a named output binding; committed with the ack (store-backed triggers).
struct OutputMessage {
  std::string binding;
  std::string payload;
  Headers metadata;
};

struct Result {
  Outcome outcome = Outcome::success;
  std::optional<HttpReply> http;
  std::vector<OutputMessage> outputs;
  FunctionError error;
  // The deployed version whose code ran it (set by its pool; empty before the first deploy).
  std::string version;
  // Where its time went (its trace's spans): `waited` from its start until the function began
  // (a slot in the pool, an instance), `cold_start` the part of that spent on an instance's
  // start, `ran` the function's own run. Executors set waited and cold_start for their part;
  // the pool adds its own and sets ran.
  Duration waited{}, cold_start{}, ran{};

  static Result failure(Outcome outcome, std::string type, std::string message) {
    Result r;
    r.outcome = outcome;
    r.error = {std::move(type), std::move(message)};
    return r;
  }
};

// Called exactly once per invocation, on any thread.
using Completion = std::function<void(Result&&)>;

// The deadline as milliseconds since the Unix epoch, from the invocation's own stamps; 0
// when it has none.
int64_t deadline_unix_ms(const Invocation& inv);

}  // namespace nimbus
