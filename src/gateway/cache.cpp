#include "gateway/cache.h"

#include <strings.h>

#include <algorithm>
#include <charconv>

#include "core/text.h"
#include "triggers/http/http_syntax.h"

namespace nimbus {

namespace {

const auto trim = trim_ows;

// Calls fn(name, value) for each directive of a Cache-Control value; names lower-cased.
template <class Fn>
void each_directive(std::string_view header, Fn fn) {
  while (!header.empty()) {
    auto comma = header.find(',');
    std::string_view item = trim(header.substr(0, comma));
    auto eq = item.find('=');
    std::string name = ascii_lower(trim(item.substr(0, eq)));
    std::string_view value = eq == std::string_view::npos ? std::string_view() : trim(item.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    if (!name.empty()) fn(name, value);
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
}

std::optional<int64_t> seconds(std::string_view v) {
  int64_t n = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || n < 0) return std::nullopt;
  return std::min<int64_t>(n, int64_t{1} << 31);  // RFC 9111 1.2.2: beyond 2^31 s is "forever"
}

const std::string* reply_header(const HttpReply& r, std::string_view name) {
  for (const auto& h : r.headers)
    if (h.name.size() == name.size() && strncasecmp(h.name.data(), name.data(), name.size()) == 0) return &h.value;
  return nullptr;
}

// RFC 9110 15.1: the statuses a cache may keep without explicit freshness; the only ones this
// cache keeps at all (never a 206, a 304 or a 1xx, which answer one request, not the resource).
bool heuristically_cacheable(int status) {
  switch (status) {
    case 200: case 203: case 204: case 300: case 301: case 308: case 404: case 405: case 410: case 414: case 501:
      return true;
    default:
      return false;
  }
}

// The names a reply's Vary lists (lower case); "*" alone when it varies on everything.
std::vector<std::string> vary_names(const HttpReply& r) {
  std::vector<std::string> names;
  for (const auto& h : r.headers) {
    if (strcasecmp(h.name.c_str(), "vary") != 0) continue;
    std::string_view v = h.value;
    while (!v.empty()) {
      auto comma = v.find(',');
      std::string_view n = trim(v.substr(0, comma));
      if (!n.empty()) names.push_back(ascii_lower(n));
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  return names;
}

// If-None-Match against an ETag, by the weak comparison (RFC 9110 13.1.2).
bool etag_matches(std::string_view if_none_match, std::string_view etag) {
  auto strip = [](std::string_view t) { return t.rfind("W/", 0) == 0 ? t.substr(2) : t; };
  if (trim(if_none_match) == "*") return true;
  while (!if_none_match.empty()) {
    auto comma = if_none_match.find(',');
    if (strip(trim(if_none_match.substr(0, comma))) == strip(etag)) return true;
    if (comma == std::string_view::npos) break;
    if_none_match.remove_prefix(comma + 1);
  }
  return false;
}

}  // namespace

ResponseCache::ResponseCache(const CacheLimits& limits, const Clock& clock) : limits_(limits), clock_(clock) {}

ResponseCache::RequestPolicy ResponseCache::request_policy(std::string_view cache_control, std::string_view pragma) {
  RequestPolicy p;
  each_directive(cache_control, [&](const std::string& name, std::string_view value) {
    if (name == "no-store") p.lookup = p.store = false;
    else if (name == "no-cache" || (name == "max-age" && value == "0")) p.lookup = false;
  });
  if (cache_control.empty() && ascii_lower(trim(pragma)) == "no-cache") p.lookup = false;
  return p;
}

Duration ResponseCache::lifetime(const HttpReply& reply, Duration route_ttl, bool credentials) {
  if (reply_header(reply, "set-cookie")) return Duration::zero();  // one client's session
  if (reply.upgrade || reply.stream || !heuristically_cacheable(reply.status)) return Duration::zero();
  bool never = false, shared_ok = false;
  std::optional<int64_t> max_age, s_maxage;
  if (const std::string* cc = reply_header(reply, "cache-control")) {
    each_directive(*cc, [&](const std::string& name, std::string_view value) {
      if (name == "no-store" || name == "private" || name == "no-cache") never = true;
      else if (name == "public" || name == "must-revalidate") shared_ok = true;
      else if (name == "s-maxage") s_maxage = seconds(value), shared_ok = true;
      else if (name == "max-age") max_age = seconds(value);
    });
  }
  if (never) return Duration::zero();
  if (credentials && !shared_ok) return Duration::zero();
  for (const auto& v : vary_names(reply))
    if (v == "*") return Duration::zero();
  // What the reply has already spent in caches upstream counts against it.
  int64_t age = 0;
  if (const std::string* a = reply_header(reply, "age")) age = seconds(*a).value_or(0);
  if (s_maxage) return std::chrono::seconds(std::max<int64_t>(0, *s_maxage - age));
  if (max_age) return std::chrono::seconds(std::max<int64_t>(0, *max_age - age));
  return route_ttl;
}

void ResponseCache::put(const std::string& key, const HttpReply& reply, Duration ttl, const Headers& request_headers) {
  if (ttl <= Duration::zero() || reply.body.size() + key.size() > limits_.max_object) return;
  Entry e;
  e.key = key;
  auto kept = std::make_shared<HttpReply>(reply);
  if (const std::string* a = reply_header(reply, "age")) e.initial_age = std::max<int64_t>(0, seconds(*a).value_or(0));
  std::erase_if(kept->headers, [](const Header& h) { return strcasecmp(h.name.c_str(), "age") == 0; });  // ours, on a hit
  e.reply = std::move(kept);
  for (const auto& name : vary_names(reply)) {
    std::string value;
    for (const auto& h : request_headers)
      if (strcasecmp(h.name.c_str(), name.c_str()) == 0) value = h.value;
    e.vary.emplace_back(name, std::move(value));
  }
  e.bytes = key.size() + reply.body.size() + 128;
  for (const auto& h : reply.headers) e.bytes += h.name.size() + h.value.size() + 32;
  if (e.bytes > limits_.max_object || e.bytes > limits_.max_size) return;
  e.stored = clock_.now();
  e.expires = e.stored + ttl;
  std::lock_guard lock(mu_);
  if (auto it = index_.find(key); it != index_.end()) drop(it->second);
  while (!lru_.empty() && stats_.bytes + e.bytes > limits_.max_size) {
    drop(std::prev(lru_.end()));
    ++stats_.evicted;
  }
  stats_.bytes += e.bytes;
  ++stats_.stored;
  lru_.push_front(std::move(e));
  index_[key] = lru_.begin();
}

std::optional<HttpReply> ResponseCache::get_impl(const std::string& key,
                                                 const std::function<std::string(std::string_view)>& header) {
  const TimePoint now = clock_.now();
  std::shared_ptr<const HttpReply> kept;
  int64_t age = 0, ttl_left = 0;
  {
    std::lock_guard lock(mu_);
    auto it = index_.find(key);
    if (it == index_.end()) {
      ++stats_.misses;
      return std::nullopt;
    }
    auto entry = it->second;
    if (entry->expires <= now) {
      drop(entry);
      ++stats_.misses;
      return std::nullopt;
    }
    for (const auto& [name, value] : entry->vary) {
      if (header(name) != value) {
        ++stats_.misses;
        return std::nullopt;  // another variant; the fetched one replaces this
      }
    }
    lru_.splice(lru_.begin(), lru_, entry);
    ++stats_.hits;
    // RFC 9111 4.2.3: its age when it came, plus how long it has been here.
    age = entry->initial_age + std::chrono::duration_cast<std::chrono::seconds>(now - entry->stored).count();
    ttl_left = std::chrono::duration_cast<std::chrono::seconds>(entry->expires - now).count();
    kept = entry->reply;
  }
  // The copy is made outside the lock: the other loops' lookups do not wait for it.
  HttpReply out;
  const std::string* etag = reply_header(*kept, "etag");
  const std::string inm = header("if-none-match");
  if (etag && !inm.empty() && etag_matches(inm, *etag)) {
    out.status = 304;
    for (const auto& h : kept->headers) {
      const std::string n = ascii_lower(h.name);
      if (n == "etag" || n == "cache-control" || n == "vary" || n == "expires" || n == "content-location") out.headers.push_back(h);
    }
  } else {
    out = *kept;
  }
  out.headers.push_back({"age", std::to_string(age)});
  out.headers.push_back({"cache-status", "nimbus; hit; ttl=" + std::to_string(ttl_left)});
  return out;
}

void ResponseCache::drop(std::list<Entry>::iterator it) {
  stats_.bytes -= it->bytes;
  index_.erase(it->key);
  lru_.erase(it);
}

ResponseCache::Stats ResponseCache::stats() const {
  std::lock_guard lock(mu_);
  Stats s = stats_;
  s.entries = index_.size();
  return s;
}

void ResponseCache::clear() {
  std::lock_guard lock(mu_);
  lru_.clear();
  index_.clear();
  stats_.bytes = 0;
}

}  // namespace nimbus
