#pragma once
// The HTTP trigger: requests on the public listener become invocations of the function whose
// route matches; the function's reply becomes the response. Host-made failures are JSON
// errors with the right status: 404, 405 (+Allow), 401, 503 (+Retry-After), 504, 500. Upload
// routes store the body as a blob instead of invoking (HttpTriggerSpec::upload_container).
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/app_spec.h"
#include "core/clock.h"
#include "gateway/api_keys.h"
#include "gateway/cache.h"
#include "gateway/gateway.h"
#include "gateway/jwt.h"
#include "gateway/policies.h"
#include "gateway/rate_sync.h"
#include "gateway/static_site.h"
#include "triggers/http/function_keys.h"
#include "triggers/http/public_routes.h"
#include "triggers/http/router.h"
#include "triggers/http/server.h"
#include "triggers/trigger.h"

namespace nimbus {

class FunctionPools;
class Logger;
class Metrics;

class Store;

struct HttpTriggerOptions {
  std::string address = "127.0.0.1";
  int port = 0;
  Store* store = nullptr;  // where functions' outputs are committed before the reply
  PublicRoutes* routes = nullptr;  // other kinds' routes, served from start()
  std::optional<Timers> timers;    // API keys and TLS certificates are reloaded on them
  int tls_port = -1;               // gateway.tls's listener; -1: the manifest's port
};

class HttpTrigger final : public Trigger, public RequestHandler {
 public:
  HttpTrigger(const AppSpec& app, FunctionPools& pools, FunctionKeys keys, EventLoops& loops,
              Logger& logger, Metrics& metrics, const Clock& clock, HttpTriggerOptions options);
  // As the host builds it: listening where the context says, on its loops.
  HttpTrigger(const TriggerContext& context, FunctionKeys keys);
  ~HttpTrigger() override;

  std::string_view kind() const override { return "http"; }
  Status start() override;
  void stop_taking_work() override;
  // Waits up to `grace` for the requests in flight to be answered.
  bool drain(Duration grace) override;
  int in_progress() const override;
  void close() override;
  // GET /admin/gateway: each upstream target's health, breaker and counts (Gateway::status_json).
  std::vector<AdminView> admin_views() override;
  // Swaps in `next`'s gateway routes and upstreams: requests already routed finish on the old
  // ones, new requests take the new table; no request is dropped.
  Status apply(const AppSpec& next) override;
  int port() const { return port_; }
  int public_port() const override { return port_; }
  int secure_port() const override { return tls_port_; }
  void handle(IncomingRequest& request, Responder respond) override;
  // Bodies over 64 KiB (or chunked) on routes to upstreams are sent on as they arrive.
  std::optional<uint64_t> streams_body(IncomingRequest& head) override;

 private:
  struct RouteTarget {
    int function;  // -1 for an upstream route
    AuthLevel auth;
    bool asynchronous;
    std::string upload;  // the container of an upload route
    std::function<void(IncomingRequest&, Headers, Responder)> handle;  // another kind's route
    const GatewayRouteSpec* gateway = nullptr;  // a gateway route (to a function or upstream)
    Upstream* upstream = nullptr;
    const CorsSpec* cors = nullptr;              // the route's or the gateway's
    const std::vector<std::string>* methods = nullptr;
    std::shared_ptr<RateLimiter> limiter{};
    const JwtRule* jwt = nullptr;  // auth: jwt
    const StaticSite* site = nullptr;  // static files
    const RouteCacheSpec* cache = nullptr;  // cache: (GET and HEAD)
  };
  static std::string cache_key(const RouteCacheSpec& spec, int target, std::string_view host, std::string_view path,
                               std::string_view query, IncomingRequest& request);
  static Responder keep_in_cache(std::shared_ptr<ResponseCache> cache, std::string key, const RouteTarget& rt,
                                 IncomingRequest& request, const std::vector<Header>& added, Responder respond);
  void enqueue_async(const FunctionSpec& fn, Invocation&& inv, Responder respond);
  void job_status(std::string_view id, Responder respond);
  void upload(const std::string& container, Headers params, IncomingRequest& request, std::string body,
              Responder respond);
  struct RouteTable;
  void route_with_body(const RouteTable& table, const RouteTarget& rt, IncomingRequest& request, Headers params,
                       std::string_view path, std::string_view query, std::string body,
                       std::vector<Header> reply_headers, std::string claims, Responder respond);

  const AppSpec& app_;
  FunctionPools& pools_;
  FunctionKeys keys_;
  Logger& logger_;
  Metrics& metrics_;
  const Clock& clock_;
  HttpTriggerOptions options_;
  // What the router's targets stand for, and the gateway they use: replaced whole by apply().
  struct RouteTable {
    Router router;
    std::vector<RouteTarget> targets;
    std::shared_ptr<const GatewaySpec> gateway_spec;  // the specs targets point into
    std::unique_ptr<Gateway> gateway;
    std::shared_ptr<JwtVerifier> jwt;
    std::vector<std::unique_ptr<StaticSite>> sites;
    std::shared_ptr<ResponseCache> cache;  // when a route has cache: (a reload starts empty)
    std::string openapi;  // GET /openapi.json
    std::string routes;   // GET /admin/routes
    ~RouteTable();
  };
  Expected<std::shared_ptr<RouteTable>> build_table(std::shared_ptr<const GatewaySpec> gateway) const;
  // The table this request routes on. On a loop: the loop's own reference (refreshed when a
  // new table comes), so the hot path shares no reference count; off the loops: *holder.
  RouteTable& table_here(std::shared_ptr<RouteTable>& holder);

  EventLoops& loops_;
  std::vector<PublicEndpoint> endpoints_;  // other kinds' routes, from start()
  std::mutex table_mu_;
  std::shared_ptr<RouteTable> table_;  // the current one, under table_mu_
  std::vector<std::weak_ptr<RouteTable>> old_tables_;  // replaced ones a loop may still hold
  std::atomic<uint64_t> table_generation_{0};
  struct LoopTable {
    uint64_t generation = ~uint64_t{0};
    std::shared_ptr<RouteTable> table;
  };
  std::vector<LoopTable> loop_tables_;  // one per loop, each touched by its loop only
  // API keys, once a route asks for them: loaded before traffic, reloaded each second.
  Status ensure_api_keys(const GatewaySpec& gateway);
  struct Refresh;
  // Runs `job` every `period` on a store I/O thread until the trigger closes or it returns false.
  void refresh_every(Duration period, std::function<bool()> job);
  void refresh_jwks(const std::shared_ptr<RouteTable>& table);
  std::shared_ptr<ApiKeys> api_keys_;
  // Rate limits and key quotas shared by the hosts of a shared store (else null).
  std::shared_ptr<RateLimitSync> rate_sync_;
  void start_rate_sync();
  std::mutex refreshes_mu_;
  std::vector<std::shared_ptr<Refresh>> refreshes_;  // API keys, TLS certificates, JWKS; under refreshes_mu_
  void stop_refreshes();
  // TLS termination (gateway.tls): a second listener on the same loops and handler.
  Status start_tls();
  std::shared_ptr<TlsCertificates> tls_;
  std::unique_ptr<HttpServer> tls_server_;
  int tls_port_ = 0;
  std::atomic<bool> draining_{false};
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

// /readyz (public and admin listeners): 200 {"status":"ready"}; 503 {"status":"draining"} once
// the host stops taking work; 503 {"status":"store_unavailable","reason":...} while the store
// cannot reach its data (a database that is down), so a load balancer sends work elsewhere.
HttpReply readiness(bool draining, const Store* store);

// What the caller sees for a Result: the function's own reply, or a JSON error.
HttpReply reply_for(Result&& result, std::string_view function, std::string_view invocation_id);

// The first value of query parameter `name` in a raw query string, decoded.
std::optional<std::string> query_param(std::string_view query, std::string_view name);

}  // namespace nimbus
