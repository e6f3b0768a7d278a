#include "admin/observe_endpoints.h"

#include <algorithm>
#include <limits>

#include "core/thread_role.h"
#include "admin/admin_request.h"
#include "observe/history.h"
#include "observe/log.h"
#include "store/store.h"
#include "triggers/http/http_trigger.h"

namespace nimbus {

namespace {

std::string_view query_of(std::string_view target) {
  const auto q = target.find('?');
  return q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
}

bool hex_id(std::string_view s, std::size_t size) {
  return s.size() == size && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

}  // namespace

AdminEndpoint invocations_endpoint(InvocationHistory* history, Store& store) {
  return {"/admin/invocations", {"GET"},
          [history, &store](IncomingRequest& request, const std::vector<std::string>&, Responder respond) {
            if (!history) {
              return respond(json_error(409, "history_off",
                                        "the invocation history is off (observe: {history: {keep: 0}} in nimbus.yaml)", ""));
            }
            const std::string_view target = request.target();
            const std::string_view query = query_of(target);
            HistoryQuery q;
            q.function = query_param(query, "function").value_or("");
            q.trace_id = query_param(query, "trace").value_or("");
            q.invocation_id = query_param(query, "id").value_or("");
            const std::string failed = query_param(query, "failed").value_or("");
            q.failed_only = failed == "1" || failed == "true";
            if (!q.trace_id.empty() && !hex_id(q.trace_id, 32)) {
              return respond(json_error(400, "bad_request", "trace: '" + q.trace_id + "' is not a trace id (32 lowercase hex digits)", ""));
            }
            if (auto l = query_int(target, "limit")) q.limit = static_cast<int>(std::clamp<int64_t>(*l, 1, 100000));
            store.run_blocking([history, q = std::move(q), respond = std::move(respond)] {
              auto found = history->query(q);
              if (!found) {
                return respond(json_error(500, found.error().code.empty() ? "store" : found.error().code,
                                          found.error().message, ""));
              }
              respond(HttpReply{200, {{"content-type", "application/json"}}, std::move(*found)});
            });
          }};
}

LogFollow::LogFollow(LogSink& sink, std::string host_run) : sink_(sink), host_run_(std::move(host_run)) {
  thread_ = std::thread([this] {
    name_this_thread("log-follow");
    run();
  });
  sink_.on_lines([this] {
    {
      std::lock_guard lock(mu_);
      changed_ = true;
    }
    cv_.notify_one();
  });
}

LogFollow::~LogFollow() {
  sink_.on_lines(nullptr);
  stop();
  thread_.join();
}

void LogFollow::stop() {
  sink_.flush();  // the lines written so far reach the followers in their last answer
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
}

AdminEndpoint LogFollow::endpoint() {
  return {"/admin/logs", {"GET"}, [this](IncomingRequest& request, const std::vector<std::string>&, Responder respond) {
            handle(request, std::move(respond));
          }};
}

HttpReply LogFollow::reply(uint64_t after, const std::string& function, std::size_t limit, uint64_t* seen) const {
  LogSink::Recent r = sink_.recent(after, function, limit);
  if (seen) *seen = r.next - 1;
  std::string body;
  for (const auto& line : r.lines) {
    body += line;
    body += '\n';
  }
  HttpReply out{200,
                {{"content-type", "application/x-ndjson"},
                 {"x-nimbus-host", host_run_},
                 {"x-nimbus-log-next", std::to_string(r.next - 1)}},
                std::move(body)};
  if (r.gap) out.headers.push_back({"x-nimbus-log-gap", "1"});
  return out;
}

void LogFollow::handle(IncomingRequest& request, Responder respond) {
  const std::string_view target = request.target();
  const std::string_view query = query_of(target);
  const std::string function = query_param(query, "function").value_or("");
  int64_t after = std::max<int64_t>(0, query_int(target, "after").value_or(0));
  // Another run's position means nothing here: this run's lines, from its first.
  const std::string host = query_param(query, "host").value_or("");
  bool from_first = false;
  if (!host.empty() && host != host_run_) {
    after = 0;
    from_first = true;
  }
  // No position (and no run named): the last lines. A follower that has seen nothing of this
  // run yet names the run with after=0, and waits from the start.
  const bool tail = after == 0 && !from_first && host.empty();
  const auto limit = static_cast<std::size_t>(std::clamp<int64_t>(query_int(target, "limit").value_or(tail ? 100 : 5000), 1, 100000));
  const int64_t wait_ms = std::clamp<int64_t>(query_int(target, "wait_ms").value_or(0), 0, 30000);
  if (from_first) {
    // Every line this run kept, oldest first.
    uint64_t seen = 0;
    HttpReply r = reply(0, function, std::numeric_limits<std::size_t>::max() / 4, &seen);
    if (!r.body.empty() || wait_ms == 0) return respond(std::move(r));
    after = static_cast<int64_t>(seen);
  } else {
    HttpReply r = reply(static_cast<uint64_t>(after), function, limit);
    if (!r.body.empty() || wait_ms == 0 || tail) return respond(std::move(r));
  }
  std::unique_lock lock(mu_);
  if (const bool stopping = stop_; stopping || waiting_.size() >= kMaxWaiting) {
    lock.unlock();
    HttpReply r = reply(static_cast<uint64_t>(after), function, limit);
    if (!stopping) r.headers.push_back({"retry-after", "1"});
    return respond(std::move(r));
  }
  waiting_.push_back({static_cast<uint64_t>(after), function, limit,
                      std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms), std::move(respond)});
  // The thread looks again at once: for its deadline, and for a line written since the look above.
  changed_ = true;
  lock.unlock();
  cv_.notify_one();
}

void LogFollow::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    auto until = std::chrono::steady_clock::now() + std::chrono::hours(1);
    for (const auto& w : waiting_) until = std::min(until, w.deadline);
    cv_.wait_until(lock, until, [&] { return stop_ || changed_ || std::chrono::steady_clock::now() >= until; });
    changed_ = false;
    const bool stopping = stop_;
    std::vector<Waiter> waiters;
    waiters.swap(waiting_);
    lock.unlock();
    const auto now = std::chrono::steady_clock::now();
    std::vector<Waiter> still;
    for (auto& w : waiters) {
      HttpReply r = reply(w.after, w.function, w.limit);
      if (!r.body.empty() || stopping || now >= w.deadline) {
        w.respond(std::move(r));
      } else {
        still.push_back(std::move(w));
      }
    }
    lock.lock();
    for (auto& w : still) waiting_.push_back(std::move(w));
    if (stopping && waiting_.empty()) {
      // Later requests see stop_ and answer at once; nothing is left to wait for.
      return;
    }
  }
}

}  // namespace nimbus
