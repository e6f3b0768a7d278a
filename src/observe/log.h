#pragma once
// Structured logs: one JSON object per line. Every thread appends to its own buffer (no
// contention, no syscall on the request path); a writer thread drains the buffers in one write
// every few milliseconds. Lines are never reordered within one thread.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/invocation.h"

namespace nimbus {

enum class LogLevel : uint8_t { debug = 0, info = 1, warn = 2, error = 3 };
std::string_view to_string(LogLevel level);

class LogSink {
 public:
  explicit LogSink(int fd);
  ~LogSink();  // flushes everything written before
  LogSink(const LogSink&) = delete;
  LogSink& operator=(const LogSink&) = delete;

  void write_line(std::string_view line);  // without the trailing newline
  void flush();                            // waits until every line written so far is out

  // The lines written last (at most kRecentBytes of them), numbered from 1 in the order they
  // went out, for `nimbus logs` (admin/observe_endpoints.h).
  struct Recent {
    std::vector<std::string> lines;
    uint64_t next = 1;  // the number to ask after next time (the last line looked at + 1)
    bool gap = false;   // lines after `after` had already left the ring
  };
  // The lines numbered above `after` whose "function" field is `function` (any when empty):
  // with after = 0, the last `max_lines`; else the first `max_lines`.
  Recent recent(uint64_t after, std::string_view function, std::size_t max_lines) const;
  // Called on the writer's thread each time lines are kept; must not block. Null: none.
  void on_lines(std::function<void()> listener);
  static constexpr std::size_t kRecentBytes = 4u << 20;

 private:
  struct Shard {
    std::mutex mu;
    std::string buf;    // producers append here
    std::string spare;  // the writer's: swapped with buf, so both keep their capacity
  };
  Shard& shard();
  void run();
  void drain();
  void keep_recent(const std::string& lines);

  int fd_;
  uint64_t generation_;
  std::mutex shards_mu_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable drained_cv_;
  std::atomic<bool> pending_{false};
  bool stop_ = false;
  uint64_t drains_ = 0;
  std::mutex write_mu_;
  struct Chunk {
    uint64_t first;  // the number of its first line
    uint64_t count;
    std::string text;  // lines, each ending in '\n'
  };
  mutable std::mutex recent_mu_;
  std::deque<Chunk> recent_;
  std::size_t recent_bytes_ = 0;
  uint64_t next_line_ = 1;
  std::mutex listener_mu_;
  std::function<void()> listener_;
  std::thread writer_;  // last: it starts at construction
};

// A key and a value for a log line; strings are JSON-escaped when written.
struct LogField {
  std::string_view key;
  std::string_view text;
  int64_t number = 0;
  enum class Kind : uint8_t { text, number } kind = Kind::text;
  LogField(std::string_view k, std::string_view v) : key(k), text(v) {}
  LogField(std::string_view k, const char* v) : key(k), text(v) {}
  LogField(std::string_view k, const std::string& v) : key(k), text(v) {}
  LogField(std::string_view k, int64_t v) : key(k), number(v), kind(Kind::number) {}
  LogField(std::string_view k, int v) : key(k), number(v), kind(Kind::number) {}
};

struct InvocationRecord {
  std::string_view function;
  TriggerKind trigger;
  std::string_view invocation_id;
  std::string_view traceparent;
  Outcome outcome;
  int status;  // HTTP status given to the caller, 0 when not HTTP
  Duration duration;
  std::string_view error_type;     // empty on success
  std::string_view error_message;  // the log is the only place a function's error is shown
  WallTime time{};                 // when it finished; read from the clock when left empty
  std::string_view version{};      // the deployed version that ran it; empty before any deploy
  uint64_t parent_span = 0;        // the span that caused it (0: its trace started here)
  int attempt = 1;                 // a message's delivery, a batch's try
  // Where its time went (Result's), for the spans inside its own; 0 when unknown.
  Duration waited{}, cold_start{}, ran{};
  std::optional<Duration> queued{};  // a message's time in its queue before its first delivery
  // Other causes than its parent (traceparents), linked from its span: the other records of a
  // stream batch, each in a trace of its own. Null: none.
  const std::vector<std::string>* links = nullptr;
  std::string_view tracestate{};  // W3C: the vendors' list of its trace, as it came (empty: none)
};

class Tracer;             // observe/trace.h
class InvocationHistory;  // observe/history.h

class Logger {
 public:
  Logger(LogSink& sink, const Clock& clock, std::string app, LogLevel min_level = LogLevel::info);

  void host(LogLevel level, std::string_view message, std::initializer_list<LogField> fields = {});
  void invocation(const InvocationRecord& record);
  void user(LogLevel level, std::string_view function, std::string_view invocation_id,
            std::string_view message);
  bool enabled(LogLevel level) const { return level >= min_level_; }
  LogSink& sink() { return sink_; }
  // Each invocation's record is also a span for `tracer` (null: none). Set before triggers
  // start; the tracer outlives the logger's use.
  void set_tracer(Tracer* tracer) { tracer_ = tracer; }
  Tracer* tracer() const { return tracer_; }
  // Each invocation's record, and the ctx.log lines before it, also go to `history` (null:
  // none). The same rules as set_tracer.
  void set_history(InvocationHistory* history) { history_.store(history, std::memory_order_release); }

 private:
  void begin(std::string& out, LogLevel level, WallTime at = {});
  LogSink& sink_;
  const Clock& clock_;
  std::string app_;
  LogLevel min_level_;
  Tracer* tracer_ = nullptr;
  std::atomic<InvocationHistory*> history_{nullptr};  // atomic: a store thread may log while the host detaches it
};

// "2026-11-21T10:00:00.123456Z", as log lines have it.
std::string format_log_time(WallTime t);

// Appends `s` to `out` as the inside of a JSON string: always valid UTF-8 (bytes that are not
// UTF-8 become U+FFFD, as Node and browsers decode them).
void append_json_escaped(std::string& out, std::string_view s);
// ,"key":"value" (escaped as above) and ,"key":number: the fields of a JSON line.
void append_json_field(std::string& out, std::string_view key, std::string_view value);
void append_json_field(std::string& out, std::string_view key, int64_t value);

}  // namespace nimbus
