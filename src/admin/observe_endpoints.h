#pragma once
// What the admin listener serves for looking back and following along:
//   GET /admin/invocations  the invocation history (observe/history.h):
//                           ?function=NAME&failed=1&trace=TRACE_ID&id=INVOCATION_ID&limit=N
//   GET /admin/logs         the host's recent log lines as NDJSON, oldest first:
//                           ?function=NAME&after=N&limit=N&wait_ms=MS&host=ID
//     after=0 (the default) gives the last `limit` lines (100); after=N the lines after line N
//     (up to `limit`, 5000 by default). wait_ms (at most 30000) holds the request until a line
//     comes or the time is up: a long poll, which is what `nimbus logs -f` repeats. The reply's
//     x-nimbus-log-next header is the `after` for the next call and x-nimbus-host names this
//     host's run: a client that sends another run's id (the host restarted) gets this run's
//     lines from the first. x-nimbus-log-gap: 1 says lines were lost between two calls (the
//     ring keeps the last 4 MiB).
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "admin/admin_api.h"

namespace nimbus {

class InvocationHistory;
class LogSink;

// GET /admin/invocations; `history` null: the history is off (409 says so).
AdminEndpoint invocations_endpoint(InvocationHistory* history, Store& store);

class LogFollow {
 public:
  LogFollow(LogSink& sink, std::string host_run);
  ~LogFollow();  // stop()
  LogFollow(const LogFollow&) = delete;
  LogFollow& operator=(const LogFollow&) = delete;

  AdminEndpoint endpoint();
  // Answers every request that waits, at once, and every later one without waiting (the
  // host is stopping: a follower reconnects to the next run).
  void stop();

  static constexpr int kMaxWaiting = 256;

 private:
  struct Waiter {
    uint64_t after;
    std::string function;
    std::size_t limit;
    std::chrono::steady_clock::time_point deadline;
    Responder respond;
  };
  void handle(IncomingRequest& request, Responder respond);
  void run();
  HttpReply reply(uint64_t after, const std::string& function, std::size_t limit, uint64_t* seen = nullptr) const;

  LogSink& sink_;
  const std::string host_run_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Waiter> waiting_;
  bool changed_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace nimbus
