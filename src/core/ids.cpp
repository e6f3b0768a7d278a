#include "core/ids.h"

#include <sys/random.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>

#include "core/check.h"

namespace nimbus {
namespace {

void os_random(void* out, std::size_t n) {
  auto* p = static_cast<unsigned char*>(out);
  while (n > 0) {
    ssize_t got = getrandom(p, n, 0);
    if (got < 0) {
      NIMBUS_CHECK(errno == EINTR);
      continue;
    }
    p += got;
    n -= static_cast<std::size_t>(got);
  }
}

// xoshiro256** seeded from the OS once per thread: fast, not for secrets.
struct FastRandom {
  uint64_t s[4];
  FastRandom() { os_random(s, sizeof s); }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
};

thread_local FastRandom t_random;

constexpr char kHex[] = "0123456789abcdef";

void put_hex(char* out, uint64_t v, int digits) {
  for (int i = digits - 1; i >= 0; --i) {
    out[i] = kHex[v & 0xf];
    v >>= 4;
  }
}

// Each byte's value as a lower-case hex digit, -1 when it is none: a table, not two ranges per
// byte (every traceparent is read several times per invocation).
constexpr std::array<int8_t, 256> kHexValue = [] {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int c = '0'; c <= '9'; ++c) t[static_cast<std::size_t>(c)] = static_cast<int8_t>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c) t[static_cast<std::size_t>(c)] = static_cast<int8_t>(c - 'a' + 10);
  return t;
}();

// The value of `n` lower-case hex digits at `p`; `*ok` false when one is not such a digit (the
// value is then meaningless). One pass, no branch per digit. (observe/trace.cpp's TraceIdText
// has its own table: it takes upper-case digits too, as its encoder always has, where a
// traceparent must be lower-case.)
uint64_t hex_value(const char* p, std::size_t n, bool* ok) {
  uint64_t v = 0;
  int bad = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const int d = kHexValue[static_cast<unsigned char>(p[i])];
    bad |= d;  // negative: the sign bit stays
    v = (v << 4) | static_cast<uint64_t>(d & 0xf);
  }
  *ok = bad >= 0;
  return v;
}

std::atomic<double> g_sample_ratio{1.0};

}  // namespace

std::string new_invocation_id() {
  // 48 bits of milliseconds, then 80 random bits: unique and roughly time-ordered.
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                std::chrono::system_clock::now().time_since_epoch())
                .count();
  std::string id(32, '0');
  put_hex(id.data(), static_cast<uint64_t>(ms), 12);
  put_hex(id.data() + 12, t_random.next(), 16);
  put_hex(id.data() + 28, t_random.next(), 4);
  return id;
}

std::optional<TraceparentParts> parse_traceparent(std::string_view in) {
  // version "00" - 32 hex trace-id - 16 hex parent-id - 2 hex flags; version ff, an all-zero
  // trace id and an all-zero parent id are invalid.
  if (in.size() != 55 || in[2] != '-' || in[35] != '-' || in[52] != '-') return std::nullopt;
  bool ok[5];
  TraceparentParts p;
  const uint64_t version = hex_value(in.data(), 2, &ok[0]);
  p.trace_id = in.substr(3, 32);
  p.trace_high = hex_value(in.data() + 3, 16, &ok[1]);
  p.trace_low = hex_value(in.data() + 19, 16, &ok[2]);
  p.span_id = hex_value(in.data() + 36, 16, &ok[3]);
  const uint64_t flags = hex_value(in.data() + 53, 2, &ok[4]);
  p.sampled = (flags & 1) != 0;
  if (!(ok[0] && ok[1] && ok[2] && ok[3] && ok[4]) || version == 0xff || (p.trace_high | p.trace_low) == 0 || p.span_id == 0) {
    return std::nullopt;
  }
  return p;
}

bool valid_traceparent(std::string_view in) { return parse_traceparent(in).has_value(); }

void set_trace_sample_ratio(double ratio) { g_sample_ratio.store(std::clamp(ratio, 0.0, 1.0)); }

uint64_t span_id_of(std::string_view tp) {
  if (tp.size() < 55) return 0;
  bool ok = false;
  const uint64_t v = hex_value(tp.data() + 36, 16, &ok);
  return ok ? v : 0;
}

bool trace_sampled(std::string_view tp) {
  if (tp.size() < 55) return false;
  int flags = 0;
  std::from_chars(tp.data() + 53, tp.data() + 55, flags, 16);
  return (flags & 1) != 0;
}

std::string continue_trace(std::string_view in) {
  // A later version's header is read as version 00 from its first 55 characters (W3C trace
  // context, "versioning of traceparent"); what follows them is not ours to pass on.
  if (in.size() > 55 && in[55] == '-' && in.substr(0, 2) != "00") in = in.substr(0, 55);
  if (valid_traceparent(in)) {
    std::string out(in);
    out[0] = out[1] = '0';  // what we send on is version 00
    out[53] = '0';          // and of the flags only "sampled", the one 00 defines
    out[54] = trace_sampled(in) ? '1' : '0';
    put_hex(out.data() + 36, t_random.next() | 1, 16);  // our span is the new parent
    return out;
  }
  std::string out = "00-00000000000000000000000000000000-0000000000000000-01";
  const double ratio = g_sample_ratio.load(std::memory_order_relaxed);
  // The low 53 bits of a draw as a number in [0, 1): below the ratio is sampled.
  if (ratio < 1.0 && static_cast<double>(t_random.next() >> 11) * 0x1.0p-53 >= ratio) out[54] = '0';
  put_hex(out.data() + 3, t_random.next(), 16);
  put_hex(out.data() + 19, t_random.next() | 1, 16);
  put_hex(out.data() + 36, t_random.next() | 1, 16);
  return out;
}

std::string continue_tracestate(std::string_view tp, std::string_view state) {
  if (state.empty()) return {};
  if (tp.size() > 55 && tp[55] == '-' && tp.substr(0, 2) != "00") tp = tp.substr(0, 55);
  if (!valid_traceparent(tp)) return {};
  std::string_view members[32];
  std::size_t count = 0;
  while (!state.empty()) {
    const std::size_t comma = state.find(',');
    std::string_view m = state.substr(0, comma);
    state = comma == std::string_view::npos ? std::string_view() : state.substr(comma + 1);
    while (!m.empty() && (m.front() == ' ' || m.front() == '\t')) m.remove_prefix(1);
    while (!m.empty() && (m.back() == ' ' || m.back() == '\t')) m.remove_suffix(1);
    if (m.empty()) continue;
    // key=value, printable ASCII; more than 32 members: the whole header is dropped.
    if (count == 32 || m.find('=') == std::string_view::npos || m.front() == '=') return {};
    for (char c : m)
      if (c < 0x20 || c > 0x7e) return {};
    members[count++] = m;
  }
  // Over 512 characters: members longer than 128 go first, then members from the end (the
  // spec's order of truncation).
  std::size_t total = count == 0 ? 0 : count - 1;
  for (std::size_t i = 0; i < count; ++i) total += members[i].size();
  bool keep_long = total <= 512;
  std::string out;
  for (std::size_t i = 0; i < count; ++i) {
    if (!keep_long && members[i].size() > 128) continue;
    if (out.size() + (out.empty() ? 0 : 1) + members[i].size() > 512) break;
    if (!out.empty()) out += ',';
    out += members[i];
  }
  return out;
}

uint64_t new_span_id() { return t_random.next() | 1; }

std::string_view trace_id_of(std::string_view traceparent) {
  if (!valid_traceparent(traceparent)) return {};
  return traceparent.substr(3, 32);
}

std::string with_span_id(std::string_view traceparent, uint64_t span) {
  std::string out(traceparent);
  if (out.size() >= 55) put_hex(out.data() + 36, span, 16);
  return out;
}

bool secrets_equal(std::string_view presented, std::string_view secret) {
  if (presented.size() != secret.size() || secret.empty()) return false;
  volatile unsigned char diff = 0;
  for (std::size_t i = 0; i < secret.size(); ++i) {
    diff = diff | static_cast<unsigned char>(presented[i] ^ secret[i]);
  }
  return diff == 0;
}

std::string new_secret(std::size_t bytes) {
  static constexpr char kB64[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string raw(bytes, '\0');
  os_random(raw.data(), raw.size());
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : raw) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kB64[(acc >> bits) & 0x3f]);
    }
  }
  if (bits > 0) out.push_back(kB64[(acc << (6 - bits)) & 0x3f]);
  return out;
}

}  // namespace nimbus
