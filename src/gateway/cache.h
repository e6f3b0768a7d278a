#pragma once
// The gateway's response cache: replies to GET on routes with `cache:` kept in memory, served
// again while fresh. It follows HTTP caching as a shared cache does (RFC 9111): the reply's
// Cache-Control decides (no-store, private and no-cache are not kept; s-maxage, then max-age,
// set the lifetime; else the route's ttl), a reply with Set-Cookie or Vary: * is not kept, a
// reply to a request with credentials only when it says public or s-maxage, and Vary's
// request headers must match. A client's Cache-Control: no-cache skips the lookup and
// no-store the cache. Hits carry Age and Cache-Status (RFC 9211), and an If-None-Match that
// matches gets 304. One LRU bounded in bytes; safe from any thread. No Asio in this header.
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/clock.h"
#include "core/gateway_spec.h"
#include "core/invocation.h"

namespace nimbus {

class ResponseCache {
 public:
  ResponseCache(const CacheLimits& limits, const Clock& clock);

  // What the request's own Cache-Control (and Pragma) allows.
  struct RequestPolicy {
    bool lookup = true;  // no-cache, max-age=0: fetch anew (and keep the new reply)
    bool store = true;   // no-store: neither
  };
  static RequestPolicy request_policy(std::string_view cache_control, std::string_view pragma);

  // A fresh reply for `key`, with Age and Cache-Status added, when the request's headers
  // (`header(name)`) match what the stored reply varies on; 304 for a matching If-None-Match.
  template <class HeaderFn>
  std::optional<HttpReply> get(const std::string& key, HeaderFn header) {
    return get_impl(key, [&](std::string_view name) -> std::string { return std::string(header(name).value_or("")); });
  }

  // How long `reply` may be kept (zero: not at all). `credentials`: the request carried
  // Authorization, an API key or a function key.
  static Duration lifetime(const HttpReply& reply, Duration route_ttl, bool credentials);

  // Keeps `reply` under `key` for `ttl`. `request_headers` are the request's (lower-case
  // names): the values of the names the reply's Vary lists are kept with it.
  void put(const std::string& key, const HttpReply& reply, Duration ttl, const Headers& request_headers);

  struct Stats {
    uint64_t hits = 0, misses = 0, stored = 0, evicted = 0;
    std::size_t entries = 0, bytes = 0;
  };
  Stats stats() const;
  void clear();

 private:
  struct Entry {
    std::string key;
    std::shared_ptr<const HttpReply> reply;  // shared: a hit copies it outside the lock
    std::vector<std::pair<std::string, std::string>> vary;  // request header name -> value
    TimePoint stored, expires;
    int64_t initial_age = 0;  // seconds it had spent in caches upstream when stored (its Age)
    std::size_t bytes = 0;
  };
  std::optional<HttpReply> get_impl(const std::string& key, const std::function<std::string(std::string_view)>& header);
  void drop(std::list<Entry>::iterator it);

  CacheLimits limits_;
  const Clock& clock_;
  mutable std::mutex mu_;
  std::list<Entry> lru_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  Stats stats_;
};

}  // namespace nimbus
