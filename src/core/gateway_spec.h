#pragma once
// The manifest's `gateway:` once read: routes on the public listener that go to a function or
// to an upstream (a reverse proxy to other HTTP servers, a monolith being strangled, say), and
// the upstreams with their pools, timeouts, retries, circuit breakers and health checks.
// Plain values; the gateway part (src/gateway/) builds itself from them.
#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/invocation.h"

namespace nimbus {

struct UpstreamTarget {
  std::string url;        // as written: http://10.0.0.5:8080/base
  std::string host;       // 10.0.0.5 (a name is resolved when the host starts)
  int port = 80;
  std::string base_path;  // "/base", or "" for none; prefixed to every forwarded path
};

struct UpstreamSpec {
  std::string name;
  std::vector<UpstreamTarget> targets;
  enum class Balance : uint8_t { round_robin, least_requests } balance = Balance::round_robin;
  Duration connect_timeout = std::chrono::seconds(2);
  Duration timeout = std::chrono::seconds(30);  // the whole response, from the request's write
  // Retries of a failed attempt on another target: connection failures for every method
  // (nothing was sent), resets and malformed replies for idempotent methods only; never a
  // timeout. The budget caps retries at this share of the requests of each second, beyond
  // ten a second that are always allowed (per event loop).
  int retries = 1;
  double retry_budget = 0.2;
  // Circuit breaker per target: this many failures in a row open it for `open_for`; then one
  // probe request goes through (half-open) and its outcome closes or re-opens it. 0: off.
  int breaker_failures = 5;
  Duration breaker_open_for = std::chrono::seconds(10);
  // Active health checks (off while `health_path` is empty): GET the path on every target each
  // interval; `unhealthy` failures in a row take a target out, `healthy` successes put it back.
  std::string health_path;
  Duration health_interval = std::chrono::seconds(5);
  Duration health_timeout = std::chrono::seconds(1);
  int health_unhealthy = 2;
  int health_healthy = 2;
  // Keep-alive connections kept per event loop and target, and how long one may sit idle.
  int max_idle = 64;
  Duration idle_timeout = std::chrono::seconds(4);
  // A WebSocket passed through ends after this long with no bytes either way.
  Duration websocket_idle = std::chrono::seconds(60);
  std::size_t max_response = 64u << 20;
};

struct HeaderEdits {
  std::vector<Header> set;           // replace (or add) these
  std::vector<std::string> remove;   // lower case
  bool empty() const { return set.empty() && remove.empty(); }
};

// CORS (the Fetch standard's): which origins may call, and what a preflight answers.
struct CorsSpec {
  std::vector<std::string> origins;  // exact "https://app.example.com", or "*"
  std::vector<std::string> methods;  // empty: the route's own (or the common ones)
  std::vector<std::string> headers;  // request headers allowed; empty: those the preflight asks for
  std::vector<std::string> expose;   // response headers the page may read
  bool credentials = false;
  Duration max_age = std::chrono::minutes(10);
};

// A token bucket: `rate` requests a second on average, up to `burst` at once, per client IP,
// per value of a header (an API key, say), or for the whole route.
struct RateLimitSpec {
  double rate = 10;   // tokens a second
  double burst = 10;  // the bucket's size
  enum class Per : uint8_t { ip, header, route } per = Per::ip;
  std::string header;  // for Per::header, lower case
  std::string text;    // as written ("100/m"), for headers and messages
};

// Bearer tokens (RFC 7519) the gateway verifies: HS256 with a shared secret, RS256 and ES256
// with the public keys of a JWKS (RFC 7517): a file read when the host starts or reloads, or a
// URL fetched then and again every jwks_refresh (keys rotate without a reload).
struct JwtSpec {
  std::string issuer;                  // required "iss", when set
  std::vector<std::string> audiences;  // "aud" must name one of them, when set
  std::string secret;                  // HS256
  std::string jwks_file;               // RS256 / ES256 keys, by "kid" (absolute path)
  std::string jwks_url;                // ... or fetched from an identity provider (http:// or https://)
  std::string jwks_ca;                 // https: the CA file to trust (absolute); "" the system's
  Duration jwks_refresh = std::chrono::minutes(10);  // fetched again this often (sooner for an unknown kid)
  Duration clock_skew = std::chrono::seconds(60);
};

// What a route asks of a verified token.
struct JwtRule {
  std::vector<std::string> scopes;  // each in "scope" (space-separated) or "scp" (a list)
  std::vector<Header> claims;       // claim name -> the value it must have (strings)
};

// Static files a route serves from a folder (a web front end).
struct StaticSpec {
  std::string dir;                 // absolute
  std::string index = "index.html";
  bool spa = false;                // a path with no extension that is not a file gets the index
  Duration max_age = std::chrono::hours(1);  // Cache-Control for files; the index: no-cache
  std::size_t max_total = 64u << 20;         // the folder is held in memory: at most this
};

// A route's response cache (GET and HEAD): replies kept in the host's memory for `ttl` unless
// their Cache-Control says otherwise, keyed by host, path and what `key` names.
struct RouteCacheSpec {
  Duration ttl = std::chrono::seconds(60);  // for replies that carry no max-age / s-maxage
  bool query = true;                         // the query string is part of the key
  std::vector<std::string> headers;          // request headers that are part of the key (lower case)
};

// The gateway's cache as a whole: one LRU over every cached route, bounded in bytes.
struct CacheLimits {
  std::size_t max_size = 64u << 20;
  std::size_t max_object = 1u << 20;  // a bigger reply is passed on, not kept
};

struct GatewayRouteSpec {
  std::string where;                 // "gateway.routes[2]", for messages
  std::string host;                  // "" any; "api.example.com"; "*.example.com"
  std::string path;                  // a route template: "/orders/{id}", "/{*rest}"
  std::vector<std::string> methods;  // upper case; empty = any
  std::string function;              // the target: a function ...
  std::string upstream;              // ... or an upstream's name ...
  std::optional<StaticSpec> static_files;  // ... or a folder of static files
  // The path the target sees: a template over the route's parameters ("/v2/{rest}"); empty
  // keeps the request's path. `strip_prefix` removes a leading literal part instead.
  std::string rewrite;
  std::string strip_prefix;
  HeaderEdits request_headers, response_headers;
  bool preserve_host = false;  // send the client's Host to the upstream (not the target's)
  std::optional<std::size_t> max_body;  // at most the app's http.max_body
  std::optional<Duration> timeout;      // upstream routes: overrides the upstream's timeout
  bool function_keys = false;           // auth: function (the target function's keys)
  std::optional<CorsSpec> cors;         // the route's, else the gateway's
  std::optional<RateLimitSpec> rate_limit;
  std::optional<JwtRule> jwt;           // auth: jwt (the gateway's jwt: settings verify)
  bool api_key = false;                 // auth: api_key (keys made by `nimbus keys create`)
  std::optional<RouteCacheSpec> cache;  // function and upstream routes
};

// TLS termination: HTTP/1.1 over TLS on a second public port, from PEM files that are read
// again when they change (a renewed certificate needs no restart).
struct TlsSpec {
  std::string cert;  // absolute: the certificate chain (PEM), leaf first
  std::string key;   // absolute: its private key (PEM)
  int port = 8443;   // `nimbus start --tls-port` overrides
  bool redirect_http = false;  // the plain listener answers 308 to https:// (health checks aside)
  bool operator==(const TlsSpec&) const = default;
};

struct GatewaySpec {
  std::vector<UpstreamSpec> upstreams;
  std::vector<GatewayRouteSpec> routes;
  // For every route on the public listener (functions' http triggers too) unless a gateway
  // route has its own.
  std::optional<CorsSpec> cors;
  std::optional<JwtSpec> jwt;
  // gzip/br for compressible replies of at least this size, on every route (set at start).
  bool compression = false;
  std::size_t compression_min_size = 1024;
  std::optional<TlsSpec> tls;
  CacheLimits cache;
  // On a store several hosts share (PostgreSQL, Redis): rate limits and API key quotas count
  // one bucket for all of them, merged through the store every `sync` (gateway/rate_sync.h).
  struct RateLimitSharing {
    bool shared = true;  // false: each host counts its own
    Duration sync = std::chrono::milliseconds(100);
  } rate_limits;
  const UpstreamSpec* find_upstream(std::string_view name) const {
    for (const auto& u : upstreams)
      if (u.name == name) return &u;
    return nullptr;
  }
};

}  // namespace nimbus
