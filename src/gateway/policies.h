#pragma once
// What the gateway checks and adds around a route, whatever its target: CORS (preflights
// answered here, the allow headers added to replies) and rate limits (token buckets, with
// RateLimit-* headers and 429 + Retry-After). No Asio in this header.
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/gateway_spec.h"
#include "core/invocation.h"

namespace nimbus {

// Whether `origin` may call under `cors`.
bool cors_allows(const CorsSpec& cors, std::string_view origin);

// The reply to a preflight (OPTIONS with Origin and Access-Control-Request-Method): 204 with
// the Access-Control-Allow-* headers, or 403 with a JSON error naming the origin or method.
// `route_methods` are the route's own (empty: any).
HttpReply cors_preflight(const CorsSpec& cors, std::string_view origin, std::string_view method,
                         std::string_view request_headers, const std::vector<std::string>& route_methods);

// The headers an actual request's reply gets (none when the origin is not allowed).
std::vector<Header> cors_reply_headers(const CorsSpec& cors, std::string_view origin);

// Token buckets for one route, keyed by client (IP, header value) or one for the route. Safe
// from any thread; bounded: past `max_keys` buckets, one is dropped for each new key.
class RateLimiter {
 public:
  RateLimiter(const RateLimitSpec& spec, const Clock& clock, std::size_t max_keys = 100000);
  struct Decision {
    bool allowed = true;
    int64_t limit = 0;      // the burst
    int64_t remaining = 0;  // whole tokens left
    int64_t reset_s = 0;    // seconds until the bucket is full again
    int64_t retry_after_s = 0;
  };
  Decision take(std::string_view key);
  // RateLimit-Limit / -Remaining / -Reset (and Retry-After when refused) for a reply.
  static void add_headers(const Decision& d, std::vector<Header>& headers);
  std::size_t keys() const;

 private:
  struct Bucket {
    double tokens;
    int64_t at_ns;
  };
  RateLimitSpec spec_;
  const Clock& clock_;
  std::size_t max_keys_;
  mutable std::mutex mu_;
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Bucket, Hash, std::equal_to<>> buckets_;
};

}  // namespace nimbus
