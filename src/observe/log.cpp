#include "observe/log.h"

#include "core/thread_role.h"
#include "observe/history.h"
#include "observe/trace.h"

#include "core/text.h"
#include "observe/thread_shard.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>

namespace nimbus {
namespace {

std::atomic<uint64_t> g_sink_generation{1};

thread_local ThreadShardCache t_shard;

// Lines gather this long before one write: few wake-ups and large writes on a busy host.
constexpr auto kBatchWindow = std::chrono::milliseconds(10);

// Writes in pieces of at most 32 KiB: on a host pinned to one core, the event loop waits
// for each piece, so smaller pieces keep the loop's tail latency down.
void write_all(int fd, const std::string& data) {
  constexpr std::size_t kPiece = 32 * 1024;
  const char* p = data.data();
  std::size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, std::min(left, kPiece));
    if (n < 0) {
      if (errno == EINTR) continue;
      return;  // a closed stdout must not take the host down; lines are dropped
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

// Writes "2026-11-21T10:00:00.123456Z" (27 chars) at p, with the seconds part cached per
// thread; returns the end.
char* put_time(char* p, WallTime t) {
  thread_local int64_t cached_sec = -1;
  thread_local char cached[20];
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  int64_t sec = us / 1'000'000;
  if (sec != cached_sec) {
    std::time_t tt = static_cast<std::time_t>(sec);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    std::strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
    cached_sec = sec;
  }
  std::memcpy(p, cached, 19);
  p += 19;
  int64_t rem = us % 1'000'000;
  p[0] = '.';
  for (int i = 6; i >= 1; --i) {
    p[i] = static_cast<char>('0' + rem % 10);
    rem /= 10;
  }
  p[7] = 'Z';
  return p + 8;
}

void append_time(std::string& out, WallTime t) {
  char buf[32];
  out.append(buf, static_cast<std::size_t>(put_time(buf, t) - buf));
}

}  // namespace

std::string format_log_time(WallTime t) {
  std::string out;
  append_time(out, t);
  return out;
}

namespace {

void append_number(std::string& out, int64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, end);
}


// For values the host made or validated (ids, names, enum strings): no escaping needed.
void append_trusted(std::string& out, std::string_view key, std::string_view value) {
  out += ",\"";
  out += key;
  out += "\":\"";
  out += value;
  out += '"';
}

std::string& line_buffer() {
  thread_local std::string buf;
  buf.clear();
  return buf;
}

}  // namespace

std::string_view to_string(LogLevel level) {
  switch (level) {
    case LogLevel::debug: return "debug";
    case LogLevel::info: return "info";
    case LogLevel::warn: return "warn";
    case LogLevel::error: return "error";
  }
  return "info";
}

namespace {

// True when one of the 8 bytes in `w` needs a look: a control character, a quote, a backslash
// (to escape) or a byte of a multi-byte UTF-8 sequence (to check). The usual "has a zero
// byte" bit trick, three times, and the high bits.
inline bool needs_look(uint64_t w) {
  constexpr uint64_t kOnes = 0x0101010101010101ull;
  constexpr uint64_t kHigh = 0x8080808080808080ull;
  auto has_zero = [](uint64_t v) { return (v - kOnes) & ~v & kHigh; };
  const uint64_t below_space = (w - kOnes * 0x20) & ~w & kHigh;
  return (below_space | has_zero(w ^ (kOnes * '"')) | has_zero(w ^ (kOnes * '\\')) | (w & kHigh)) != 0;
}

}  // namespace

void append_json_escaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  // Copy runs that need no escaping in one append: most values (ids, names) are one run, and
  // are looked at eight bytes at a time.
  std::size_t run = 0;
  std::size_t i = 0;
  while (i + 8 <= s.size()) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    if (needs_look(w)) break;
    i += 8;
  }
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // Bytes that are not UTF-8 become U+FFFD, one each (as Node and browsers decode them):
      // the text stays valid JSON for any reader.
      if (std::size_t n = utf8_sequence(s.data() + i, s.size() - i)) {
        i += n;
        continue;
      }
      out.append(s.data() + run, i - run);
      out += "\xef\xbf\xbd";
      run = ++i;
      continue;
    }
    if (c >= 0x20 && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    out.append(s.data() + run, i - run);
    run = ++i;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 0xf];
    }
  }
  out.append(s.data() + run, s.size() - run);
}

void append_json_field(std::string& out, std::string_view key, std::string_view value) {
  out += ",\"";
  out += key;
  out += "\":\"";
  append_json_escaped(out, value);
  out += '"';
}

void append_json_field(std::string& out, std::string_view key, int64_t value) {
  out += ",\"";
  out += key;
  out += "\":";
  append_number(out, value);
}

LogSink::LogSink(int fd)
    : fd_(fd), generation_(g_sink_generation.fetch_add(1)), writer_([this] {
        name_this_thread("log-writer");
        run();
      }) {}

LogSink::~LogSink() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  writer_.join();
  drain();
}

LogSink::Shard& LogSink::shard() {
  if (void* s = t_shard.find(generation_)) return *static_cast<Shard*>(s);
  std::lock_guard lock(shards_mu_);
  shards_.push_back(std::make_unique<Shard>());
  t_shard.remember(generation_, shards_.back().get());
  return *shards_.back();
}

void LogSink::write_line(std::string_view line) {
  Shard& s = shard();
  {
    std::lock_guard lock(s.mu);
    s.buf.append(line);
    s.buf.push_back('\n');
  }
  // Wake the writer once per batch, not once per line.
  if (!pending_.load(std::memory_order_relaxed) && !pending_.exchange(true)) {
    std::lock_guard lock(mu_);
    cv_.notify_one();
  }
}

void LogSink::drain() {
  std::lock_guard wlock(write_mu_);  // one drain at a time: `spare` is the drain's
  std::vector<Shard*> shards;
  {
    std::lock_guard lock(shards_mu_);
    for (auto& s : shards_) shards.push_back(s.get());
  }
  for (Shard* s : shards) {
    {
      std::lock_guard slock(s->mu);
      if (s->buf.empty()) continue;
      s->buf.swap(s->spare);
    }
    write_all(fd_, s->spare);
    keep_recent(s->spare);
    s->spare.clear();
  }
}

void LogSink::keep_recent(const std::string& lines) {
  const auto count = static_cast<uint64_t>(std::count(lines.begin(), lines.end(), '\n'));
  if (count == 0) return;
  {
    std::lock_guard lock(recent_mu_);
    recent_.push_back({next_line_, count, lines});
    next_line_ += count;
    recent_bytes_ += lines.size();
    while (recent_bytes_ > kRecentBytes && recent_.size() > 1) {
      recent_bytes_ -= recent_.front().text.size();
      recent_.pop_front();
    }
  }
  std::lock_guard lock(listener_mu_);
  if (listener_) listener_();
}

void LogSink::on_lines(std::function<void()> listener) {
  std::lock_guard lock(listener_mu_);
  listener_ = std::move(listener);
}

LogSink::Recent LogSink::recent(uint64_t after, std::string_view function, std::size_t max_lines) const {
  Recent out;
  std::string needle;
  if (!function.empty()) {
    needle = "\"function\":\"";
    append_json_escaped(needle, function);
    needle += '"';
  }
  std::lock_guard lock(recent_mu_);
  out.next = next_line_;
  if (!recent_.empty() && after + 1 < recent_.front().first && after != 0) out.gap = true;
  if (max_lines == 0 || after + 1 >= next_line_) return out;  // nothing after `after` yet
  const bool tail = after == 0;
  for (const auto& chunk : recent_) {
    if (chunk.first + chunk.count <= after + 1) continue;  // every line of it was seen
    uint64_t number = chunk.first;
    std::size_t at = 0;
    while (at < chunk.text.size()) {
      std::size_t end = chunk.text.find('\n', at);
      if (end == std::string::npos) end = chunk.text.size();
      if (number > after) {
        std::string_view line(chunk.text.data() + at, end - at);
        if (needle.empty() || line.find(needle) != std::string_view::npos) {
          if (!tail && out.lines.size() == max_lines) {
            out.next = number;  // the rest next time
            return out;
          }
          out.lines.emplace_back(line);
          if (tail && out.lines.size() > 2 * max_lines) {
            out.lines.erase(out.lines.begin(), out.lines.end() - static_cast<std::ptrdiff_t>(max_lines));
          }
        }
      }
      at = end + 1;
      ++number;
    }
  }
  if (tail && out.lines.size() > max_lines) {
    out.lines.erase(out.lines.begin(), out.lines.end() - static_cast<std::ptrdiff_t>(max_lines));
  }
  return out;
}

void LogSink::flush() {
  pending_.store(false);
  drain();
}

void LogSink::run() {
  // The writer yields to the event loops: a little lower priority than theirs (nice +5; it
  // still gets a quarter of a contended core, far more than logging needs).
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 5);
  std::unique_lock lock(mu_);
  while (!stop_) {
    cv_.wait(lock, [&] { return stop_ || pending_.load(); });
    if (stop_) break;
    // Let a batch gather; a busy host writes in a few large writes per window.
    cv_.wait_for(lock, kBatchWindow, [&] { return stop_; });
    pending_.store(false);
    lock.unlock();
    drain();
    lock.lock();
  }
}

Logger::Logger(LogSink& sink, const Clock& clock, std::string app, LogLevel min_level)
    : sink_(sink), clock_(clock), app_(std::move(app)), min_level_(min_level) {}

void Logger::begin(std::string& out, LogLevel level, WallTime at) {
  out += "{\"time\":\"";
  append_time(out, at == WallTime{} ? clock_.wall() : at);
  out += "\",\"level\":\"";
  out += to_string(level);
  out += "\",\"app\":\"";
  append_json_escaped(out, app_);
  out += '"';
}

void Logger::host(LogLevel level, std::string_view message, std::initializer_list<LogField> fields) {
  if (!enabled(level)) return;
  std::string& out = line_buffer();
  begin(out, level);
  append_json_field(out, "msg", message);
  for (const auto& f : fields) {
    if (f.kind == LogField::Kind::number) append_json_field(out, f.key, f.number);
    else append_json_field(out, f.key, f.text);
  }
  out += '}';
  sink_.write_line(out);
}

void Logger::invocation(const InvocationRecord& r) {
  InvocationHistory* history = history_.load(std::memory_order_acquire);
  const LogLevel level = r.outcome == Outcome::success ? LogLevel::info : LogLevel::warn;
  const bool logged = enabled(level);
  // When it ended, read once for the span, the history and the line alike.
  const WallTime at = r.time != WallTime{} ? r.time : (tracer_ || history || logged) ? clock_.wall() : WallTime{};
  if (tracer_) tracer_->invocation(r, at);
  if (history) history->record(r, at);
  if (!logged) return;
  if (r.error_type.empty() && r.error_message.empty() && app_.size() <= 64 && r.function.size() <= 64 &&
      r.invocation_id.size() <= 64 && r.version.size() <= 32) {
    // The common line, written with plain copies into a stack buffer: every field is either
    // host-made or validated by the manifest, so nothing needs escaping. (640 bytes bound it:
    // ~250 fixed, 3 x 64 variable, 32 trace id, 32 version, 20 for numbers.)
    char buf[640];
    char* p = buf;
    auto put = [&p](std::string_view s) {
      std::memcpy(p, s.data(), s.size());
      p += s.size();
    };
    put("{\"time\":\"");
    p = put_time(p, at);
    put(level == LogLevel::info ? "\",\"level\":\"info\",\"app\":\"" : "\",\"level\":\"warn\",\"app\":\"");
    put(app_);
    put("\",\"msg\":\"invocation\",\"function\":\"");
    put(r.function);
    put("\",\"trigger\":\"");
    put(to_string(r.trigger));
    put("\",\"invocation_id\":\"");
    put(r.invocation_id);
    if (r.traceparent.size() >= 35) {
      put("\",\"trace_id\":\"");
      put(r.traceparent.substr(3, 32));
    }
    if (!r.version.empty()) {
      put("\",\"version\":\"");
      put(r.version);
    }
    put("\",\"outcome\":\"");
    put(to_string(r.outcome));
    put("\"");
    if (r.status != 0) {
      put(",\"status\":");
      p = std::to_chars(p, p + 8, r.status).ptr;
    }
    int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(r.duration).count();
    put(",\"duration_ms\":");
    p = std::to_chars(p, p + 20, us / 1000).ptr;
    *p++ = '.';
    *p++ = static_cast<char>('0' + (us % 1000) / 100);
    *p++ = static_cast<char>('0' + (us % 100) / 10);
    *p++ = static_cast<char>('0' + us % 10);
    *p++ = '}';
    sink_.write_line(std::string_view(buf, static_cast<std::size_t>(p - buf)));
    return;
  }
  std::string& out = line_buffer();
  begin(out, level, at);
  // Function names are validated by the manifest; ids and trace ids are hex the host made.
  append_trusted(out, "msg", "invocation");
  append_trusted(out, "function", r.function);
  append_trusted(out, "trigger", to_string(r.trigger));
  append_trusted(out, "invocation_id", r.invocation_id);
  if (auto trace = r.traceparent; trace.size() >= 35) append_trusted(out, "trace_id", trace.substr(3, 32));
  if (!r.version.empty()) append_trusted(out, "version", r.version);  // host-made: v1, v2, ...
  append_trusted(out, "outcome", to_string(r.outcome));
  if (r.status != 0) append_json_field(out, "status", static_cast<int64_t>(r.status));
  // duration in microseconds as a decimal number of milliseconds: "duration_ms":0.012
  int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(r.duration).count();
  out += ",\"duration_ms\":";
  append_number(out, us / 1000);
  out += '.';
  char frac[3] = {static_cast<char>('0' + (us % 1000) / 100), static_cast<char>('0' + (us % 100) / 10),
                  static_cast<char>('0' + us % 10)};
  out.append(frac, 3);
  if (!r.error_type.empty()) append_json_field(out, "error_type", r.error_type);
  if (!r.error_message.empty()) append_json_field(out, "error", r.error_message);
  out += '}';
  sink_.write_line(out);
}

void Logger::user(LogLevel level, std::string_view function, std::string_view invocation_id,
                  std::string_view message) {
  if (!enabled(level)) return;
  if (auto* history = history_.load(std::memory_order_acquire)) {
    history->user_line(level, function, invocation_id, message, clock_.wall());
  }
  std::string& out = line_buffer();
  begin(out, level);
  append_json_field(out, "msg", message);
  append_json_field(out, "function", function);
  append_json_field(out, "invocation_id", invocation_id);
  append_json_field(out, "source", "user");
  out += '}';
  sink_.write_line(out);
}

}  // namespace nimbus
