#pragma once
// Invocation history: the last N invocations of each function, kept in the store (state store
// "_history") so that `nimbus invocations` can answer "what happened to order A-17" after the
// fact, across restarts and across the hosts that share a store.
//
// Recording costs the invocation a lock and a few string copies: the logger hands each
// finished invocation here (with the ctx.log lines it wrote, gathered by invocation id), and a
// thread of the history's own writes them once a second (in commits of up to 128 records). Each function's records
// are a ring of `keep` slots ("inv/<function>/<slot>") with a counter ("seq/<function>")
// advanced under its ETag, so hosts sharing a store fill one ring and the bound is exact.
// When the store cannot take a batch, those records are dropped and counted; nothing waits.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/expected.h"
#include "observe/log.h"

namespace nimbus {

class Store;

inline constexpr const char* kHistoryStore = "_history";

struct HistoryQuery {
  std::string function;  // empty: every function
  bool failed_only = false;
  std::string trace_id;       // 32 hex digits; empty: any
  std::string invocation_id;  // empty: any
  int limit = 50;
};

class InvocationHistory {
 public:
  // `keep`: records per function (1 or more).
  InvocationHistory(Store& store, const Clock& clock, int keep, Logger& logger);
  ~InvocationHistory();  // stop()
  // Writes what is pending and stops the thread; later records stay in memory (the store may
  // be closing). Before the store closes.
  void stop();
  InvocationHistory(const InvocationHistory&) = delete;
  InvocationHistory& operator=(const InvocationHistory&) = delete;

  // From the logger, on any thread; never waits for the store.
  void record(const InvocationRecord& r, WallTime at);
  void user_line(LogLevel level, std::string_view function, std::string_view invocation_id, std::string_view message,
                 WallTime at);

  // Writes what is pending now (a query calls it first, so it sees what just finished).
  // Blocks on the store: a store I/O thread or a thread that may wait.
  void flush();
  // The newest records that match, newest first, as JSON objects. Blocks on the store.
  Expected<std::string> query(const HistoryQuery& q);

  int keep() const { return keep_; }
  void metrics_text(std::string& out) const;

  // Bounds on what one record keeps.
  static constexpr std::size_t kMaxLinesPerInvocation = 100;
  static constexpr std::size_t kMaxLineBytes = 4096;
  static constexpr std::size_t kMaxErrorBytes = 4096;
  static constexpr std::size_t kMaxLineBytesPerInvocation = 64u << 10;
  static constexpr std::size_t kMaxPendingLineBytes = 8u << 20;  // lines of invocations not finished yet
  // Records not written yet (a slow or unavailable store): past this, the oldest are dropped
  // and counted.
  static constexpr std::size_t kMaxPendingRecordBytes = 32u << 20;

 private:
  struct Line {
    int64_t time_us;
    LogLevel level;
    std::string message;
  };
  struct Entry {
    std::string function, trigger, id, trace_id, outcome, error_type, error, version;
    int status = 0;
    int attempt = 1;
    int64_t duration_us = 0;
    int64_t time_us = 0;  // when it finished (unix microseconds)
    uint64_t span_id = 0, parent_span_id = 0;  // its span, and the one that caused it (0: none)
    std::vector<Line> lines;
    std::size_t bytes = 0;  // about what it holds, for the bound on pending records
  };
  static constexpr std::size_t kLineOverhead = 64;  // what a kept line costs besides its text
  struct Ring {
    int64_t next = -1;  // the next sequence number; -1: not read from the store yet
    std::string etag;   // the counter's
  };
  void run();
  std::size_t write(std::map<std::string, std::deque<Entry>>& by_function);  // how many it wrote
  // Records [from, to) of `fn` in one commit, the ring's counter moved with them (tried again
  // on a conflict with another host's writes); the store's error when it could not.
  Status write_chunk(const std::string& fn, Ring& ring, const std::deque<Entry>& entries, std::size_t from,
                     std::size_t to);
  static std::string to_json(const Entry& e);

  Store& store_;
  const Clock& clock_;
  const int keep_;
  Logger& logger_;

  std::mutex mu_;  // what the logger hands over
  std::map<std::string, std::deque<Entry>> pending_;  // per function, at most keep_ each
  std::unordered_map<std::string, std::vector<Line>> lines_;  // invocation id -> its lines so far
  std::deque<std::string> line_order_;                        // ids, oldest first (to evict)
  std::size_t line_bytes_ = 0;     // of lines_, with kLineOverhead each
  std::size_t pending_bytes_ = 0;  // of pending_

  std::mutex write_mu_;  // one write at a time (the thread's and a query's flush)
  std::map<std::string, Ring> rings_;

  std::mutex run_mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::atomic<uint64_t> written_{0}, dropped_{0}, failed_batches_{0};
  std::atomic<bool> failure_logged_{false};
  std::thread thread_;
};

}  // namespace nimbus
