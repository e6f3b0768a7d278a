#pragma once
// What the gateway checks and adds around a route, whatever its target: CORS (preflights
// answered here, the allow headers added to replies) and rate limits (token buckets, with
// RateLimit-* headers and 429 + Retry-After). No Asio in this header.
#include <functional>
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
//
// Shared (a `shared_id`, on a store several hosts use): each host decides from its own
// buckets, so a request never waits for the store, and gateway/rate_sync.h merges them into
// one bucket per key in the store: every key a host touched since the last round (its use is
// subtracted there and the store's count comes back), and a key the host meets for the first
// time at once (it is counted from full until then).
class RateLimiter {
 public:
  RateLimiter(const RateLimitSpec& spec, const Clock& clock, std::size_t max_keys = 100000, std::string shared_id = {});
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

  // --- shared buckets (rate_sync.h); none of these is called on an event loop but the hook.
  const std::string& shared_id() const { return shared_id_; }
  const RateLimitSpec& spec() const { return spec_; }
  // Called (outside the lock, on the thread that took) when a key is met for the first time
  // and nothing is being learnt yet: the owner merges soon, off the loop.
  void on_new_key(std::function<void()> hook);
  struct Use {
    std::string key;
    double used = 0;  // tokens taken here since the last merge
  };
  // The keys touched since the last call (at most `max`; the rest wait for the next), their
  // use handed over; `new_only`: only the keys met for the first time.
  std::vector<Use> collect(std::size_t max, bool new_only = false);
  // The store's bucket after the merge of a collected use: `tokens` at `at` (this clock).
  void merged(std::string_view key, double tokens, TimePoint at);
  // A merge that failed: the use is kept for the next round.
  void merge_failed(const Use& use);

 private:
  struct Bucket {
    double tokens;
    int64_t at_ns;
    double used = 0;      // taken since the last collect (shared only)
    bool touched = false;  // asked since the last collect (shared only)
    bool fresh = true;     // not merged yet (shared only)
  };
  RateLimitSpec spec_;
  const Clock& clock_;
  std::size_t max_keys_;
  std::string shared_id_;
  mutable std::mutex mu_;
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Bucket, Hash, std::equal_to<>> buckets_;
  std::vector<std::string> touched_;  // keys whose bucket has touched set (shared only)
  std::function<void()> on_new_key_;
  bool learning_ = false;  // the hook was called and its collect(new_only) has not come yet
};

}  // namespace nimbus
