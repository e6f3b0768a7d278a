#include "gateway/policies.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "triggers/http/server.h"

namespace nimbus {
namespace {

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& i : items) {
    if (!out.empty()) out += ", ";
    out += i;
  }
  return out;
}

bool wildcard(const CorsSpec& c) { return std::find(c.origins.begin(), c.origins.end(), "*") != c.origins.end(); }

int64_t nanos(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace

bool cors_allows(const CorsSpec& cors, std::string_view origin) {
  if (origin.empty()) return false;
  if (wildcard(cors)) return true;
  return std::find(cors.origins.begin(), cors.origins.end(), origin) != cors.origins.end();
}

std::vector<Header> cors_reply_headers(const CorsSpec& cors, std::string_view origin) {
  std::vector<Header> out;
  if (!cors_allows(cors, origin)) return out;
  const bool any = wildcard(cors) && !cors.credentials;
  out.push_back({"access-control-allow-origin", any ? "*" : std::string(origin)});
  if (!any) out.push_back({"vary", "Origin"});
  if (cors.credentials) out.push_back({"access-control-allow-credentials", "true"});
  if (!cors.expose.empty()) out.push_back({"access-control-expose-headers", join(cors.expose)});
  return out;
}

HttpReply cors_preflight(const CorsSpec& cors, std::string_view origin, std::string_view method,
                         std::string_view request_headers, const std::vector<std::string>& route_methods) {
  if (!cors_allows(cors, origin)) {
    return json_error(403, "cors_origin_not_allowed",
                      "the origin '" + std::string(origin) + "' may not call this route; allowed: " + join(cors.origins), "");
  }
  std::vector<std::string> methods = !cors.methods.empty() ? cors.methods : route_methods;
  if (methods.empty()) methods = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"};
  if (std::find(methods.begin(), methods.end(), method) == methods.end()) {
    return json_error(403, "cors_method_not_allowed",
                      "the method " + std::string(method) + " may not be used from another origin here; allowed: " + join(methods),
                      "");
  }
  HttpReply r;
  r.status = 204;
  r.headers = cors_reply_headers(cors, origin);
  r.headers.push_back({"access-control-allow-methods", join(methods)});
  if (!cors.headers.empty()) {
    // Every header the page asks to send must be on the list.
    std::string_view rest = request_headers;
    while (!rest.empty()) {
      auto comma = rest.find(',');
      std::string_view h = rest.substr(0, comma);
      while (!h.empty() && (h.front() == ' ' || h.front() == '\t')) h.remove_prefix(1);
      while (!h.empty() && (h.back() == ' ' || h.back() == '\t')) h.remove_suffix(1);
      std::string lowered(h);
      for (auto& c : lowered) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (!lowered.empty() && std::find(cors.headers.begin(), cors.headers.end(), lowered) == cors.headers.end()) {
        return json_error(403, "cors_header_not_allowed",
                          "the request header '" + lowered + "' may not be sent from another origin here; allowed: " +
                              join(cors.headers),
                          "");
      }
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    r.headers.push_back({"access-control-allow-headers", join(cors.headers)});
  } else if (!request_headers.empty()) {
    r.headers.push_back({"access-control-allow-headers", std::string(request_headers)});
  }
  r.headers.push_back(
      {"access-control-max-age", std::to_string(std::chrono::duration_cast<std::chrono::seconds>(cors.max_age).count())});
  return r;
}

RateLimiter::RateLimiter(const RateLimitSpec& spec, const Clock& clock, std::size_t max_keys, std::string shared_id)
    : spec_(spec), clock_(clock), max_keys_(std::max<std::size_t>(1, max_keys)), shared_id_(std::move(shared_id)) {}

std::size_t RateLimiter::keys() const {
  std::lock_guard lock(mu_);
  return buckets_.size();
}

void RateLimiter::on_new_key(std::function<void()> hook) {
  std::lock_guard lock(mu_);
  on_new_key_ = std::move(hook);
}

RateLimiter::Decision RateLimiter::take(std::string_view key) {
  const int64_t now = nanos(clock_.now());
  const bool shared = !shared_id_.empty();
  std::function<void()> learn;
  Decision d;
  {
    std::lock_guard lock(mu_);
    auto it = buckets_.find(key);
    if (it == buckets_.end()) {
      if (buckets_.size() >= max_keys_) {
        // Bounded and O(1): one bucket goes to make room (a client with many keys can only
        // reset buckets, never grow the map or slow the loops with a scan).
        buckets_.erase(buckets_.begin());
      }
      it = buckets_.emplace(std::string(key), Bucket{spec_.burst, now}).first;
      if (shared && !learning_ && on_new_key_) {
        learning_ = true;
        learn = on_new_key_;
      }
    }
    Bucket& b = it->second;
    b.tokens = std::min(spec_.burst, b.tokens + std::max<int64_t>(0, now - b.at_ns) * 1e-9 * spec_.rate);
    b.at_ns = now;
    d.limit = static_cast<int64_t>(spec_.burst);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      d.allowed = true;
      if (shared) b.used += 1;
    } else {
      d.allowed = false;
      d.retry_after_s = std::max<int64_t>(1, static_cast<int64_t>(std::ceil((1 - b.tokens) / spec_.rate)));
    }
    if (shared && !b.touched) {
      b.touched = true;
      touched_.push_back(it->first);
    }
    d.remaining = std::max<int64_t>(0, static_cast<int64_t>(std::floor(b.tokens)));
    d.reset_s = static_cast<int64_t>(std::ceil((spec_.burst - b.tokens) / spec_.rate));
  }
  if (learn) learn();
  return d;
}

std::vector<RateLimiter::Use> RateLimiter::collect(std::size_t max, bool new_only) {
  std::lock_guard lock(mu_);
  if (new_only) learning_ = false;
  std::vector<Use> out;
  std::vector<std::string> keep;
  for (auto& key : touched_) {
    auto it = buckets_.find(key);
    if (it == buckets_.end() || !it->second.touched) continue;  // dropped, or listed twice
    if (out.size() >= max || (new_only && !it->second.fresh)) {
      keep.push_back(std::move(key));
      continue;
    }
    out.push_back({it->first, it->second.used});
    it->second.used = 0;
    it->second.touched = false;
  }
  touched_ = std::move(keep);
  return out;
}

void RateLimiter::merged(std::string_view key, double tokens, TimePoint at) {
  std::lock_guard lock(mu_);
  auto it = buckets_.find(key);
  if (it == buckets_.end()) return;
  Bucket& b = it->second;
  // What the store holds, less what was taken here since the use was collected.
  b.tokens = std::min(spec_.burst, tokens - b.used);
  b.at_ns = nanos(at);
  b.fresh = false;
}

void RateLimiter::merge_failed(const Use& use) {
  std::lock_guard lock(mu_);
  auto it = buckets_.find(use.key);
  if (it == buckets_.end()) return;
  it->second.used += use.used;
  if (!it->second.touched) {
    it->second.touched = true;
    touched_.push_back(it->first);
  }
}

void RateLimiter::add_headers(const Decision& d, std::vector<Header>& headers) {
  headers.push_back({"ratelimit-limit", std::to_string(d.limit)});
  headers.push_back({"ratelimit-remaining", std::to_string(d.remaining)});
  headers.push_back({"ratelimit-reset", std::to_string(d.reset_s)});
  if (!d.allowed) headers.push_back({"retry-after", std::to_string(d.retry_after_s)});
}

}  // namespace nimbus
