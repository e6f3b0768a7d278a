#pragma once
// The gateway (manifest `gateway:`): routes on the public listener by host, path and method to
// a function or an upstream. The HTTP trigger owns the listener and the router and asks this
// part to shape and forward what goes to upstreams (upstream.h); function routes run as HTTP
// invocations with the route's rewrite and header edits (the trigger applies them with
// target_path() and edit_headers()). No Asio in this header.
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "core/expected.h"
#include "core/gateway_spec.h"
#include "core/invocation.h"
#include "gateway/upstream.h"

namespace nimbus {

class EventLoops;
class IncomingRequest;
class Responder;
class Tracer;

class Gateway {
 public:
  // `tracer` (null: traces are off) gets a span for each proxied request (observe/trace.h).
  Gateway(std::shared_ptr<const GatewaySpec> spec, EventLoops& loops, Tracer* tracer = nullptr);
  ~Gateway();
  Status start();  // resolves upstream names, starts health checks
  void stop();     // cancels what is in flight, closes pooled connections; returns at once
  void retire();   // a reload replaced it: what is in flight finishes (Upstream::retire)

  // The upstream a route goes to, or null for a function route.
  Upstream* upstream_of(const GatewayRouteSpec& route) const;

  // Forwards a request on an upstream route: path rewritten, hop-by-hop headers dropped, the
  // route's header edits, X-Forwarded-For/-Proto/-Host and Forwarded (RFC 7239) added, and
  // the W3C traceparent continued: the upstream's parent is the gateway's span (tracestate
  // passes as it came).
  // `claims`: a verified JWT's claims (JSON), sent as X-Nimbus-Claims; a client's own header
  // by that name never passes.
  void proxy(const GatewayRouteSpec& route, Upstream& upstream, IncomingRequest& request, std::string_view path,
             std::string_view query, std::string body, std::vector<Header> reply_headers, const std::string& claims,
             Responder respond);

  // {"upstreams":[{"name":...,"targets":[{url, healthy, breaker, in_flight, requests, failures}]}]}
  std::string status_json() const;

 private:
  std::shared_ptr<const GatewaySpec> spec_;
  std::map<std::string, std::unique_ptr<Upstream>, std::less<>> upstreams_;
  Tracer* tracer_;
};

// The path a route's target sees: the rewrite template filled with the route's parameters as
// the client spelled them (still percent-encoded), or the raw path without strip_prefix, or
// the raw path.
std::string target_path(const GatewayRouteSpec& route, std::string_view raw_path);

// The header that carries a verified JWT's claims to a route's target.
inline constexpr const char* kClaimsHeader = "x-nimbus-claims";
// Whether a client's header could pass for it: any letter case, '_' for '-' (CGI-style
// servers fold both into HTTP_X_NIMBUS_CLAIMS).
bool is_claims_header(std::string_view name);

// Applies a route's request-header edits to a function's invocation headers.
void edit_headers(const HeaderEdits& edits, Headers& headers);

}  // namespace nimbus
