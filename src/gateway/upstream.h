#pragma once
// One upstream of the gateway: a reverse proxy to its HTTP/1.1 targets. Keep-alive connection
// pools per event loop and target (nothing shared on the hot path), connect and response
// timeouts, retries with a budget, round-robin or least-requests balancing, a circuit breaker
// per target with half-open probes, and active health checks. Requests are forwarded on the
// event loop that received them and never block it. Host-made failures are JSON errors:
// 502 (refused, reset, garbage), 503 (no target available: all unhealthy or open), 504 (slow).
// No Asio in this header.
#include <memory>
#include <string>
#include <vector>

#include "core/expected.h"
#include "core/gateway_spec.h"
#include "core/invocation.h"

namespace nimbus {

struct BodySource;  // triggers/http/body_source.h

class EventLoops;
class Responder;

// What goes to the upstream, already shaped by the route (rewrite, header edits, X-Forwarded-*).
struct ProxyRequest {
  std::string method;            // "GET"
  std::string target;            // path?query, before the target's base path
  std::string host;              // the Host header to send when the route preserves it; else ""
  std::string header_block;      // "Name: value\r\n" lines: every header but Host and framing
  std::string body;
  // ... or the client's body as it arrives (IncomingRequest::body_stream): sent on piece by
  // piece with its length or chunked, and never sent twice (no retry once it has begun).
  std::shared_ptr<BodySource> body_stream;
  Duration timeout{};            // the route's, else the upstream's
  const HeaderEdits* response_edits = nullptr;
  std::shared_ptr<const void> owner;  // keeps response_edits alive (the gateway's spec)
  std::vector<Header> reply_headers;  // the gateway's own (CORS, RateLimit-*), replacing the upstream's
  std::string upgrade;  // the client asked to switch to this protocol ("websocket"): sent on a fresh connection
};

// How each target stands, for `GET /admin/status` and tests.
struct TargetStatus {
  std::string url;
  bool healthy = true;
  std::string breaker;  // "closed", "open", "half_open"
  int in_flight = 0;
  uint64_t requests = 0, failures = 0;
};

class Upstream {
 public:
  Upstream(const UpstreamSpec& spec, EventLoops& loops);
  ~Upstream();
  Upstream(const Upstream&) = delete;
  Upstream& operator=(const Upstream&) = delete;

  // Resolves the targets' names (blocking: call before traffic) and starts health checks.
  Status start();
  // Stops health checks, cancels requests in flight (their clients get 503) and closes pooled
  // connections; each on its own loop. Returns at once.
  void stop();
  // A reload replaced this upstream: health checks stop and pooled connections close, while
  // the requests in flight (and any routed a moment before the swap) finish normally.
  void retire();

  // Forwards `request` and answers `respond` with the upstream's reply or a JSON error. Runs
  // on the calling event loop (off the loops, on loop 0).
  void forward(ProxyRequest&& request, Responder respond);

  const std::string& name() const;
  std::vector<TargetStatus> status() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// Hop-by-hop headers (RFC 9110 7.6.1) that a proxy does not forward, lower case.
bool is_hop_by_hop(std::string_view lowered_name);

}  // namespace nimbus
