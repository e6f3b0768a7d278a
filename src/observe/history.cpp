#include "observe/history.h"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "core/thread_role.h"
#include "core/ids.h"
#include "core/prometheus_text.h"
#include "store/store.h"

namespace nimbus {

namespace json = boost::json;

namespace {

// Writes happen this often: a batch a second, whatever the rate of invocations.
constexpr auto kFlushEvery = std::chrono::seconds(1);
constexpr int kWriteTries = 5;  // an ETag conflict (another host wrote the ring) re-reads and tries again
constexpr std::size_t kChunk = 128;  // records a commit at most

std::string cut(std::string_view s, std::size_t max) {
  if (s.size() <= max) return std::string(s);
  std::size_t n = max;
  // Not in the middle of a UTF-8 sequence: back up over continuation bytes.
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n)) + "…";
}

int64_t unix_us(WallTime t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

std::string slot_key(const std::string& function, int64_t slot) {
  char digits[16];
  std::snprintf(digits, sizeof digits, "%06lld", static_cast<long long>(slot));
  return "inv/" + function + "/" + digits;
}

}  // namespace

InvocationHistory::InvocationHistory(Store& store, const Clock& clock, int keep, Logger& logger)
    : store_(store), clock_(clock), keep_(std::max(1, keep)), logger_(logger), thread_([this] {
        name_this_thread("history");
        run();
      }) {}

InvocationHistory::~InvocationHistory() { stop(); }

void InvocationHistory::stop() {
  {
    std::lock_guard lock(run_mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();  // its last round writes what is pending
}

void InvocationHistory::record(const InvocationRecord& r, WallTime at) {
  Entry e;
  e.function = std::string(r.function);
  e.trigger = std::string(to_string(r.trigger));
  e.id = std::string(r.invocation_id);
  if (r.traceparent.size() >= 35) e.trace_id = std::string(r.traceparent.substr(3, 32));
  e.span_id = span_id_of(r.traceparent);
  e.parent_span_id = r.parent_span;
  e.outcome = std::string(to_string(r.outcome));
  e.error_type = cut(r.error_type, 256);
  e.error = cut(r.error_message, kMaxErrorBytes);
  e.version = std::string(r.version);
  e.status = r.status;
  e.attempt = r.attempt;
  e.duration_us = std::chrono::duration_cast<std::chrono::microseconds>(r.duration).count();
  e.time_us = unix_us(at);
  e.bytes = sizeof(Entry) + e.function.size() + e.id.size() + e.error.size() + e.error_type.size() + e.version.size();
  std::lock_guard lock(mu_);
  if (!lines_.empty()) {
    if (auto it = lines_.find(e.id); it != lines_.end()) {
      for (const auto& l : it->second) {
        line_bytes_ -= l.message.size() + kLineOverhead;
        e.bytes += l.message.size() + kLineOverhead;
      }
      e.lines = std::move(it->second);
      lines_.erase(it);
    }
  }
  pending_bytes_ += e.bytes;
  auto& ring = pending_[e.function];
  ring.push_back(std::move(e));
  if (ring.size() > static_cast<std::size_t>(keep_)) {  // only the last `keep` are kept anyway
    pending_bytes_ -= ring.front().bytes;
    ring.pop_front();
  }
  // A store that does not take them (or is slow to): the oldest records go, counted.
  while (pending_bytes_ > kMaxPendingRecordBytes) {
    auto oldest = pending_.end();
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
      if (!it->second.empty() && (oldest == pending_.end() || it->second.front().time_us < oldest->second.front().time_us)) oldest = it;
    }
    if (oldest == pending_.end()) break;
    pending_bytes_ -= oldest->second.front().bytes;
    oldest->second.pop_front();
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
}

void InvocationHistory::user_line(LogLevel level, std::string_view, std::string_view invocation_id,
                                  std::string_view message, WallTime at) {
  if (invocation_id.empty()) return;
  Line line{unix_us(at), level, cut(message, kMaxLineBytes)};
  std::lock_guard lock(mu_);
  auto [it, added] = lines_.try_emplace(std::string(invocation_id));
  if (added) line_order_.push_back(it->first);
  if (it->second.size() >= kMaxLinesPerInvocation) return;
  std::size_t held = 0;
  for (const auto& l : it->second) held += l.message.size();
  if (held + line.message.size() > kMaxLineBytesPerInvocation) return;
  line_bytes_ += line.message.size() + kLineOverhead;
  it->second.push_back(std::move(line));
  // Lines of invocations that never finish (or finish without a record) must not pile up:
  // past the bound, the oldest invocations' lines go.
  while (line_bytes_ > kMaxPendingLineBytes && !line_order_.empty()) {
    if (auto old = lines_.find(line_order_.front()); old != lines_.end()) {
      for (const auto& l : old->second) line_bytes_ -= l.message.size() + kLineOverhead;
      lines_.erase(old);
    }
    line_order_.pop_front();
  }
  // Ids whose record took their lines stay in the order until here.
  if (line_order_.size() > 2 * lines_.size() + 1024) {
    std::deque<std::string> live;
    for (auto& id : line_order_) {
      if (lines_.count(id)) live.push_back(std::move(id));
    }
    line_order_ = std::move(live);
  }
}

void InvocationHistory::run() {
  std::unique_lock lock(run_mu_);
  while (!stop_) {
    cv_.wait_for(lock, kFlushEvery, [&] { return stop_; });
    lock.unlock();
    flush();
    lock.lock();
  }
}

std::string InvocationHistory::to_json(const Entry& e) {
  std::string out = "{\"function\":\"";
  append_json_escaped(out, e.function);
  out += '"';
  append_json_field(out, "invocation_id", e.id);
  append_json_field(out, "trigger", e.trigger);
  append_json_field(out, "outcome", e.outcome);
  if (e.status != 0) append_json_field(out, "status", e.status);
  append_json_field(out, "attempt", e.attempt);
  // duration in microseconds as a decimal number of milliseconds, as the log line has it
  char buf[32];
  const int64_t us = std::max<int64_t>(0, e.duration_us);  // (a clock stepped back is no negative duration)
  int n = std::snprintf(buf, sizeof buf, "%lld.%03lld", static_cast<long long>(us / 1000), static_cast<long long>(us % 1000));
  out += ",\"duration_ms\":";
  out.append(buf, static_cast<std::size_t>(n));
  append_json_field(out, "time", format_log_time(WallTime(std::chrono::microseconds(e.time_us))));
  append_json_field(out, "time_us", e.time_us);
  if (!e.trace_id.empty()) append_json_field(out, "trace_id", e.trace_id);
  // The tree of a trace (the dashboard's trace view): this invocation's span and its parent's.
  auto hex16 = [](uint64_t v) {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return std::string(b);
  };
  if (e.span_id != 0) append_json_field(out, "span_id", hex16(e.span_id));
  if (e.parent_span_id != 0) append_json_field(out, "parent_span_id", hex16(e.parent_span_id));
  if (!e.version.empty()) append_json_field(out, "version", e.version);
  if (!e.error_type.empty()) append_json_field(out, "error_type", e.error_type);
  if (!e.error.empty()) append_json_field(out, "error", e.error);
  out += ",\"logs\":[";
  for (std::size_t i = 0; i < e.lines.size(); ++i) {
    if (i) out += ',';
    out += "{\"time\":\"";
    out += format_log_time(WallTime(std::chrono::microseconds(e.lines[i].time_us)));
    out += '"';
    append_json_field(out, "level", to_string(e.lines[i].level));
    append_json_field(out, "msg", e.lines[i].message);
    out += '}';
  }
  out += "]}";
  return out;
}

void InvocationHistory::flush() {
  std::lock_guard wlock(write_mu_);
  std::map<std::string, std::deque<Entry>> batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(pending_);
    pending_bytes_ = 0;
  }
  if (batch.empty()) return;
  std::size_t count = 0;
  for (const auto& [fn, entries] : batch) count += entries.size();
  const std::size_t written = write(batch);
  written_.fetch_add(written);
  if (written < count) {
    dropped_.fetch_add(count - written);
    failed_batches_.fetch_add(1);
  }
}

std::size_t InvocationHistory::write(std::map<std::string, std::deque<Entry>>& by_function) {
  std::size_t written = 0;
  // In commits of at most kChunk records, one after the other: the store's writer takes other
  // work between them (a second's records of a busy host in one commit held it for tens of
  // milliseconds on PostgreSQL, and every invocation's commit waited behind it).
  for (const auto& [fn, entries] : by_function) {
    Ring& ring = rings_[fn];
    for (std::size_t from = 0; from < entries.size(); from += kChunk) {
      const std::size_t to = std::min(entries.size(), from + kChunk);
      if (Status st = write_chunk(fn, ring, entries, from, to); !st) {
        for (auto& [name, r] : rings_) r.next = -1;
        if (!failure_logged_.exchange(true)) {
          logger_.host(LogLevel::warn, "invocation history: cannot write to the store; these records are dropped",
                       {{"reason", st.error().message}});
        }
        return written;
      }
      written += to - from;
    }
  }
  failure_logged_.store(false);
  return written;
}

Status InvocationHistory::write_chunk(const std::string& fn, Ring& ring, const std::deque<Entry>& entries,
                                      std::size_t from, std::size_t to) {
  Error problem{"no attempt was made"};
  for (int attempt = 0; attempt < kWriteTries; ++attempt) {
    if (ring.next < 0) {  // where the ring stands: read once, then known from the last commit
      auto counter = store_.get(kHistoryStore, "seq/" + fn);
      if (!counter) return counter.error();
      ring.next = 0;
      ring.etag.clear();  // "" = the counter must not exist yet
      if (*counter) {
        int64_t n = 0;
        const auto& v = (*counter)->value;
        std::from_chars(v.data(), v.data() + v.size(), n);
        ring.next = std::max<int64_t>(0, n);
        ring.etag = (*counter)->etag;
      }
    }
    Batch b;
    b.relaxed = true;  // observability, not work: need not wait for the disk
    int64_t next = ring.next;
    for (std::size_t i = from; i < to; ++i) {
      b.puts.push_back({kHistoryStore, slot_key(fn, next % keep_), to_json(entries[i]), std::nullopt, 0});
      ++next;
    }
    b.puts.push_back({kHistoryStore, "seq/" + fn, std::to_string(next), ring.etag, 0});
    auto committed = store_.commit_sync(std::move(b));
    if (committed) {
      ring.next = committed->etags.empty() ? -1 : next;  // no ETag back: re-read next time
      if (!committed->etags.empty()) ring.etag = committed->etags.back();
      return ok_status();
    }
    problem = committed.error();
    ring.next = -1;  // re-read the counter
    if (problem.code != store_error::conflict) break;
  }
  return problem;
}

Expected<std::string> InvocationHistory::query(const HistoryQuery& q) {
  flush();
  auto rows = store_.scan(kHistoryStore, q.function.empty() ? "inv/" : "inv/" + q.function + "/", 10'000'000);
  if (!rows) return rows.error();
  struct Found {
    int64_t time_us;
    const std::string* text;
  };
  std::vector<Found> found;
  for (const auto& row : *rows) {
    // A ring that was larger once (keep lowered) leaves slots past the bound: not shown.
    const auto slash = row.key.rfind('/');
    int64_t slot = 0;
    std::from_chars(row.key.data() + slash + 1, row.key.data() + row.key.size(), slot);
    if (slot >= keep_) continue;
    // Most rows of a filtered query are not wanted: a look for the text first, then a parse.
    if (!q.trace_id.empty() && row.value.find(q.trace_id) == std::string::npos) continue;
    if (!q.invocation_id.empty() && row.value.find(q.invocation_id) == std::string::npos) continue;
    boost::system::error_code ec;
    json::value v = json::parse(row.value, ec);
    if (ec || !v.is_object()) continue;
    const auto& o = v.as_object();
    auto text_of = [&o](const char* key) -> std::string_view {
      const auto* f = o.if_contains(key);
      return f && f->is_string() ? std::string_view(f->as_string()) : std::string_view();
    };
    if (q.failed_only && text_of("outcome") == "success") continue;
    if (!q.trace_id.empty() && text_of("trace_id") != q.trace_id) continue;
    if (!q.invocation_id.empty() && text_of("invocation_id") != q.invocation_id) continue;
    const auto* t = o.if_contains("time_us");
    found.push_back({t && t->is_int64() ? t->as_int64() : 0, &row.value});
  }
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) { return a.time_us > b.time_us; });
  std::string out = "{\"keep\":" + std::to_string(keep_) + ",\"invocations\":[";
  const std::size_t n = std::min(found.size(), static_cast<std::size_t>(std::max(1, q.limit)));
  for (std::size_t i = 0; i < n; ++i) {
    if (i) out += ',';
    out += *found[i].text;
  }
  out += "]}";
  return out;
}

void InvocationHistory::metrics_text(std::string& out) const {
  prometheus_family(out, "nimbus_history_records_written_total", "counter", "Invocation records written to the store's history.");
  out += "nimbus_history_records_written_total " + std::to_string(written_.load()) + "\n";
  prometheus_family(out, "nimbus_history_records_dropped_total", "counter", "Invocation records the store could not take.");
  out += "nimbus_history_records_dropped_total " + std::to_string(dropped_.load()) + "\n";
  prometheus_family(out, "nimbus_history_write_failures_total", "counter", "Batches of invocation records the store refused.");
  out += "nimbus_history_write_failures_total " + std::to_string(failed_batches_.load()) + "\n";
}

}  // namespace nimbus
