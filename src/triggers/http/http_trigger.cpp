#include "triggers/http/http_trigger.h"
#include "core/text.h"

#include <boost/json.hpp>
#include <arpa/inet.h>

#include <charconv>
#include <cstring>
#include <strings.h>
#include <thread>

#include "core/ids.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "pool/function_pools.h"
#include "store/store.h"
#include "triggers/blob/blob_trigger.h"
#include "gateway/openapi.h"
#include "observe/trace.h"
#include "triggers/http/async_jobs.h"
#include "triggers/http/http_spec.h"
#include "triggers/finish.h"
#include "triggers/outputs.h"

namespace nimbus {
namespace {

HttpReply plain_json(int status, std::string body) {
  HttpReply r;
  r.status = status;
  r.headers.push_back({"content-type", "application/json"});
  r.body = std::move(body);
  return r;
}


}  // namespace

std::optional<std::string> query_param(std::string_view q, std::string_view name) {
  while (!q.empty()) {
    auto amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    auto eq = pair.find('=');
    if (form_decode(pair.substr(0, eq)) == name) {
      return eq == std::string_view::npos ? std::string() : form_decode(pair.substr(eq + 1));
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

namespace json = boost::json;

namespace {

// 308 to the same path on the TLS listener (gateway.tls.redirect_http): the method and body
// are kept by clients that follow it.
HttpReply to_https(IncomingRequest& request, int port) {
  std::string_view host = request.header("host").value_or("localhost");
  if (!host.empty() && host.front() == '[') host = host.substr(0, host.find(']') + 1);  // [::1]:8080
  else host = host.substr(0, host.find(':'));
  if (host.empty() || host.find_first_of("/\\@?#") != std::string_view::npos) host = "localhost";
  std::string location = "https://" + std::string(host);
  if (port != 443) location += ":" + std::to_string(port);
  std::string_view target = request.target();
  location += target.empty() || target.front() != '/' ? std::string_view("/") : target;
  HttpReply r = json_error(308, "use_https", "this listener only redirects; use " + location, "");
  r.headers.push_back({"location", std::move(location)});
  return r;
}

}  // namespace

// The cache key of a request on a cached route: the route, host, path, and the query and
// request headers the route's `cache.key` names.
std::string HttpTrigger::cache_key(const RouteCacheSpec& spec, int target, std::string_view host, std::string_view path,
                                   std::string_view query, IncomingRequest& request) {
  std::string key = std::to_string(target);
  key += request.secure() ? "\nhttps\n" : "\nhttp\n";  // an upstream may answer each scheme its own way
  key += ascii_lower(host);
  key += '\n';
  key += path;
  key += '\n';
  if (spec.query) key += query;
  for (const auto& h : spec.headers) {
    key += '\n';
    key += request.header(h).value_or(std::string_view());
  }
  return key;
}

// A Responder that keeps the reply in the cache (when HTTP caching allows) on its way out.
Responder HttpTrigger::keep_in_cache(std::shared_ptr<ResponseCache> cache, std::string key, const RouteTarget& rt,
                                     IncomingRequest& request, const std::vector<Header>& added, Responder respond) {
  Headers request_headers;
  request_headers.reserve(request.header_count());
  request.for_each_header([&](std::string_view n, std::string_view v) { request_headers.push_back({ascii_lower(n), std::string(v)}); });
  // A cookie is credentials too: a session's page is that user's (as Varnish holds by default).
  const bool credentials = rt.jwt || (rt.gateway && rt.gateway->api_key) || rt.auth == AuthLevel::function ||
                           request.header("authorization") || request.header("x-api-key") ||
                           request.header("x-functions-key") || request.header("cookie");
  // The gateway's own reply headers (CORS, rate limits) are made anew on each hit: the exact
  // ones it added are not kept (an upstream's own Vary, say, is).
  std::vector<Header> ours;
  for (const auto& h : added) ours.push_back({ascii_lower(h.name), h.value});
  return intercept(std::move(respond), [cache = std::move(cache), key = std::move(key), ttl = rt.cache->ttl, credentials,
                                        request_headers = std::move(request_headers), ours = std::move(ours)](HttpReply& reply) {
    // A reply too large to hold whole is sent on as it arrives, and not kept.
    const Duration life = reply.stream ? Duration::zero() : ResponseCache::lifetime(reply, ttl, credentials);
    if (life > Duration::zero()) {
      if (ours.empty()) {
        cache->put(key, reply, life, request_headers);
      } else {
        HttpReply kept = reply;
        std::erase_if(kept.headers, [&](const Header& h) {
          return std::any_of(ours.begin(), ours.end(),
                             [&](const Header& o) { return o.value == h.value && o.name == ascii_lower(h.name); });
        });
        cache->put(key, kept, life, request_headers);
      }
    }
    reply.headers.push_back({"cache-status", life > Duration::zero() ? "nimbus; fwd=miss; stored" : "nimbus; fwd=miss"});
  });
}

HttpReply readiness(bool draining, const Store* store) {
  if (draining) return plain_json(503, "{\"status\":\"draining\"}");
  if (store) {
    if (auto health = store->health(); !health.available) {
      return plain_json(503, json::serialize(json::object{{"status", "store_unavailable"},
                                                          {"reason", health.problem},
                                                          {"since_ms", health.since_ms}}));
    }
  }
  return plain_json(200, "{\"status\":\"ready\"}");
}

HttpReply reply_for(Result&& result, std::string_view function, std::string_view id) {
  switch (result.outcome) {
    case Outcome::success:
      if (result.http) return std::move(*result.http);
      return HttpReply{204, {}, {}};
    case Outcome::error:
      return json_error(500, "function_error",
                        "function '" + std::string(function) + "' failed; its log has the details",
                        id);
    case Outcome::timeout:
      return json_error(504, "timeout",
                        "function '" + std::string(function) + "' did not finish within its timeout", id);
    case Outcome::overloaded: {
      HttpReply r = json_error(503, "overloaded", result.error.message, id);
      r.headers.push_back({"retry-after", "1"});
      return r;
    }
    case Outcome::crashed:
      return json_error(502, "worker_failed",
                        "function '" + std::string(function) + "' failed: its worker process ended; the log has the details",
                        id);
    case Outcome::unavailable: {
      HttpReply r = json_error(503, "unavailable", result.error.message, id);
      r.headers.push_back({"retry-after", "1"});
      return r;
    }
  }
  return json_error(500, "internal", "unexpected outcome", id);
}

HttpTrigger::HttpTrigger(const AppSpec& app, FunctionPools& pools, FunctionKeys keys, EventLoops& loops,
                         Logger& logger, Metrics& metrics, const Clock& clock, HttpTriggerOptions options)
    : app_(app),
      pools_(pools),
      keys_(std::move(keys)),
      logger_(logger),
      metrics_(metrics),
      clock_(clock),
      options_(std::move(options)),
      loops_(loops),
      loop_tables_(static_cast<std::size_t>(loops.size())),
      server_(std::make_unique<HttpServer>(loops, static_cast<RequestHandler&>(*this))) {
  // The functions' own routes serve from the start (tests and the fuzzer drive handle()
  // without start()); start() adds the other kinds' routes and the gateway.
  if (auto t = build_table(nullptr)) table_ = std::move(*t);
}

HttpTrigger::RouteTable::~RouteTable() {
  if (gateway) gateway->retire();  // requests in flight finish on it; nothing new goes there
}

Expected<std::shared_ptr<HttpTrigger::RouteTable>> HttpTrigger::build_table(std::shared_ptr<const GatewaySpec> gw) const {
  auto t = std::make_shared<RouteTable>();
  for (const auto& fn : app_.functions) {
    FunctionPool* pool = pools_.find(fn.name);
    if (!pool) continue;
    for (const auto* h : fn.triggers_of<HttpTriggerSpec>()) {
      auto pattern = parse_route(h->route, nullptr);
      if (!pattern) continue;  // the manifest check already reported it
      t->router.add(std::move(*pattern), h->methods, static_cast<int>(t->targets.size()));
      t->targets.push_back({pool->index(), h->auth, h->asynchronous, h->upload_container, {}});
      t->targets.back().methods = &h->methods;
    }
  }
  for (const auto& e : endpoints_) {
    FunctionPool* pool = pools_.find(e.function);
    auto pattern = parse_route(e.route, nullptr);
    if (!pool || !pattern) return Error{"the route " + e.route + " of function '" + e.function + "' cannot be served"};
    t->router.add(std::move(*pattern), e.methods, static_cast<int>(t->targets.size()));
    t->targets.push_back({pool->index(), e.auth, false, {}, e.handle});
  }
  t->gateway_spec = std::move(gw);
  const CorsSpec* app_cors = t->gateway_spec && t->gateway_spec->cors ? &*t->gateway_spec->cors : nullptr;
  for (auto& target : t->targets) target.cors = app_cors;
  static const GatewaySpec kNoGateway;
  // Served at /openapi.json, ahead of a catch-all route, unless a route names that path itself.
  t->openapi = openapi_document(app_, t->gateway_spec ? *t->gateway_spec : kNoGateway);
  bool claimed = t->gateway_spec && std::any_of(t->gateway_spec->routes.begin(), t->gateway_spec->routes.end(),
                                                [](const GatewayRouteSpec& r) { return r.path == "/openapi.json"; });
  for (const auto& fn : app_.functions)
    for (const auto& trig : fn.triggers)
      for (const auto& r : trig.settings->public_routes()) claimed = claimed || r.route == "/openapi.json";
  if (claimed) t->openapi.clear();
  t->routes = routes_json(app_, t->gateway_spec ? *t->gateway_spec : kNoGateway);
  if (t->gateway_spec && t->gateway_spec->jwt) {
    auto jwt = JwtVerifier::make(*t->gateway_spec->jwt, clock_);
    if (!jwt) return jwt.error();
    t->jwt = std::move(*jwt);
  }
  if (t->gateway_spec && !t->gateway_spec->routes.empty()) {
    t->gateway = std::make_unique<Gateway>(t->gateway_spec, loops_, logger_.tracer());
    for (const auto& route : t->gateway_spec->routes) {
      auto pattern = parse_route(route.path, nullptr);
      if (!pattern) return Error{route.where + ": the path " + route.path + " is not a route"};
      RouteTarget target{-1, route.function_keys ? AuthLevel::function : AuthLevel::anonymous, false, {}, {}, &route, nullptr};
      target.cors = route.cors ? &*route.cors : app_cors;
      target.methods = &route.methods;
      if (route.jwt) target.jwt = &*route.jwt;
      if (route.rate_limit) {
        // On a shared store, the hosts' buckets are one: named by what the route matches.
        std::string id;
        if (rate_sync_) {
          id = "route ";
          for (const auto& m : route.methods) id += m + (&m == &route.methods.back() ? "" : ",");
          id += " " + route.host + route.path;
        }
        target.limiter = std::make_shared<RateLimiter>(*route.rate_limit, clock_, 100000, id);
        if (rate_sync_) rate_sync_->add(target.limiter);
      }
      if (route.cache) {
        target.cache = &*route.cache;
        if (!t->cache) t->cache = std::make_shared<ResponseCache>(t->gateway_spec->cache, clock_);
      }
      if (route.static_files) {
        auto site = StaticSite::load(*route.static_files);
        if (!site) return Error{route.where + ": " + site.error().message};
        target.site = site->get();
        t->sites.push_back(std::move(*site));
      } else if (!route.function.empty()) {
        FunctionPool* pool = pools_.find(route.function);
        if (!pool) return Error{route.where + ": no function '" + route.function + "' runs on this host"};
        target.function = pool->index();
      } else {
        target.upstream = t->gateway->upstream_of(route);
        if (!target.upstream) return Error{route.where + ": no upstream '" + route.upstream + "'"};
      }
      t->router.add(std::move(*pattern), route.methods, static_cast<int>(t->targets.size()), route.host);
      t->targets.push_back(std::move(target));
    }
    if (auto st = t->gateway->start(); !st) return st.error();
  }
  return t;
}

HttpTrigger::RouteTable& HttpTrigger::table_here(std::shared_ptr<RouteTable>& holder) {
  const uint64_t generation = table_generation_.load(std::memory_order_acquire);
  const int i = loops_.current_index();
  if (i >= 0 && static_cast<std::size_t>(i) < loop_tables_.size()) {
    LoopTable& mine = loop_tables_[static_cast<std::size_t>(i)];
    if (mine.generation != generation) {
      std::lock_guard lock(table_mu_);
      mine.table = table_;
      mine.generation = table_generation_.load(std::memory_order_relaxed);
    }
    return *mine.table;
  }
  std::lock_guard lock(table_mu_);
  holder = table_;
  return *holder;
}

Status HttpTrigger::apply(const AppSpec& next) {
  if (draining_.load()) return Error{"the host is stopping"};
  if (next.gateway.tls != app_.gateway.tls) {
    return Error{"gateway.tls changed: its listener takes a restart (a renewed certificate in the same files needs none)"};
  }
  if (auto st = ensure_api_keys(next.gateway); !st) return st;
  auto table = build_table(std::make_shared<const GatewaySpec>(next.gateway));
  if (!table) return table.error();
  if (tls_) {
    // The certificate files may have changed too: read them now (once nothing else can refuse
    // the reload, so a refused one changes nothing), and say so if they are bad.
    if (auto changed = tls_->reload_if_changed(); !changed) return Error{"gateway.tls: " + changed.error().message};
    else if (*changed) logger_.host(LogLevel::info, "TLS certificate reloaded", {{"certificate", tls_->describe()}});
  }
  std::shared_ptr<RouteTable> old;
  {
    std::lock_guard lock(table_mu_);
    old = std::exchange(table_, std::move(*table));
    table_generation_.fetch_add(1, std::memory_order_release);
    if (old) old_tables_.push_back(old);
    std::erase_if(old_tables_, [](const std::weak_ptr<RouteTable>& w) { return w.expired(); });
  }
  // The old upstreams stop their health checks and pooling now; requests already routed to
  // them finish. Each loop lets go of the old table at its next request (or when closing).
  if (old && old->gateway) old->gateway->retire();
  refresh_jwks(table_);
  return ok_status();
}

// A JWKS from a URL is fetched again off the loops while its table is in use (the check each
// second is a comparison; the fetch happens every jwks_refresh, or after an unknown kid).
void HttpTrigger::refresh_jwks(const std::shared_ptr<RouteTable>& table) {
  if (!table || !table->jwt || !table->gateway_spec || !table->gateway_spec->jwt || table->gateway_spec->jwt->jwks_url.empty()) {
    return;
  }
  refresh_every(std::chrono::seconds(1), [weak = std::weak_ptr<JwtVerifier>(table->jwt), logger = &logger_] {
    auto verifier = weak.lock();
    if (!verifier) return false;  // a reload replaced its table
    if (auto problem = verifier->refresh_keys()) {
      logger->host(LogLevel::warn, "JWKS not refreshed; the keys in use stay", {{"reason", *problem}});
    }
    return true;
  });
}

HttpTrigger::HttpTrigger(const TriggerContext& c, FunctionKeys keys)
    : HttpTrigger(c.app, c.pools, std::move(keys), *c.loops, c.logger, *c.metrics, c.clock,
                  HttpTriggerOptions{c.http_address, c.http_port, &c.store, c.routes, c.timers, c.https_port}) {}

// A job run every `period` on a store I/O thread (it may block on files or the store), until
// the trigger closes. The job holds what it needs weakly: it may outlive the trigger.
struct HttpTrigger::Refresh : std::enable_shared_from_this<Refresh> {
  std::function<bool()> job;  // false: no more rounds
  Store* store = nullptr;
  Timers timers;
  const Clock* clock = nullptr;
  Duration period{};
  std::atomic<bool> stopped{false};
  std::atomic<bool> finished{false};  // its job said no more rounds
  explicit Refresh(Timers t) : timers(t) {}
  void schedule() {
    if (stopped.load()) return;
    timers.at(clock->now() + period, [self = shared_from_this()] {
      if (self->stopped.load()) return;
      self->store->run_blocking([self] {
        if (self->stopped.load()) return;  // the trigger is closing: no more rounds
        if (self->job()) self->schedule();
        else self->finished.store(true);
      });
    });
  }
};

void HttpTrigger::refresh_every(Duration period, std::function<bool()> job) {
  if (!options_.timers || !options_.store) return;
  std::lock_guard lock(refreshes_mu_);
  if (draining_.load()) return;  // closing: no new rounds
  std::erase_if(refreshes_, [](const std::shared_ptr<Refresh>& r) { return r->finished.load(); });  // reloads add more
  auto r = std::make_shared<Refresh>(*options_.timers);
  r->job = std::move(job);
  r->store = options_.store;
  r->clock = &clock_;
  r->period = period;
  refreshes_.push_back(r);
  r->schedule();
}

// On a store several hosts share, rate limits and key quotas are merged through it every
// gateway.rate_limits.sync (the period set at start), on the merging thread of their own.
void HttpTrigger::start_rate_sync() {
  const auto& sharing = app_.gateway.rate_limits;
  if (!options_.store || !sharing.shared || app_.store.rfind("sqlite:", 0) == 0) return;
  rate_sync_ = std::make_shared<RateLimitSync>(*options_.store, clock_);
  rate_sync_->start(sharing.sync);
}

Status HttpTrigger::ensure_api_keys(const GatewaySpec& gateway) {
  if (api_keys_ || std::none_of(gateway.routes.begin(), gateway.routes.end(), [](const auto& r) { return r.api_key; })) {
    return ok_status();
  }
  if (!options_.store) return Error{"routes with auth: api_key need a store, and this host has none"};
  auto keys = std::make_shared<ApiKeys>(*options_.store, clock_, rate_sync_);
  if (auto st = keys->load(); !st) return st;
  api_keys_ = keys;
  refresh_every(std::chrono::seconds(1), [weak = std::weak_ptr<ApiKeys>(keys), logger = &logger_] {
    auto k = weak.lock();
    if (!k) return false;
    if (auto st = k->load(); !st) logger->host(LogLevel::warn, "API keys not reloaded", {{"reason", st.error().message}});
    return true;
  });
  return ok_status();
}

HttpTrigger::~HttpTrigger() { stop_refreshes(); }

void HttpTrigger::stop_refreshes() {
  if (rate_sync_) rate_sync_->stop();  // its merges use the store: before it closes
  std::lock_guard lock(refreshes_mu_);
  for (auto& r : refreshes_) r->stopped.store(true);
}

Status HttpTrigger::start() {
  if (options_.routes) endpoints_ = options_.routes->endpoints();
  start_rate_sync();
  if (auto st = ensure_api_keys(app_.gateway); !st) return st;
  auto table = build_table(std::make_shared<const GatewaySpec>(app_.gateway));
  if (!table) return table.error();
  {
    std::lock_guard lock(table_mu_);
    table_ = std::move(*table);
    table_generation_.fetch_add(1, std::memory_order_release);
  }
  refresh_jwks(table_);
  // The TLS listener first: once the plain one serves, a redirect must know its port.
  if (auto st = start_tls(); !st) return st;
  ListenOptions lo;
  lo.address = options_.address;
  lo.port = options_.port;
  lo.every_loop = true;
  lo.limits = app_.http;
  lo.metrics = &metrics_;
  lo.compression.enabled = app_.gateway.compression;
  lo.compression.min_size = app_.gateway.compression_min_size;
  auto port = server_->listen(lo);
  if (!port) return port.error();
  port_ = *port;
  return ok_status();
}

Status HttpTrigger::start_tls() {
  if (!app_.gateway.tls) return ok_status();
  const TlsSpec& spec = *app_.gateway.tls;
  auto certs = TlsCertificates::load(spec.cert, spec.key);
  if (!certs) return Error{"gateway.tls: " + certs.error().message};
  tls_ = *certs;
  tls_server_ = std::make_unique<HttpServer>(loops_, static_cast<RequestHandler&>(*this));
  ListenOptions lo;
  lo.address = options_.address;
  lo.port = options_.tls_port >= 0 ? options_.tls_port : spec.port;
  lo.every_loop = true;
  lo.limits = app_.http;
  lo.metrics = &metrics_;
  lo.compression.enabled = app_.gateway.compression;
  lo.compression.min_size = app_.gateway.compression_min_size;
  lo.tls = tls_;
  auto port = tls_server_->listen(lo);
  if (!port) return Error{"gateway.tls: " + port.error().message};
  tls_port_ = *port;
  logger_.host(LogLevel::info, "TLS listener started",
               {{"port", static_cast<int64_t>(tls_port_)}, {"certificate", tls_->describe()}});
  // A renewed certificate (certbot, cert-manager) is picked up within two seconds; a broken
  // one is logged once and the old one stays.
  refresh_every(std::chrono::seconds(2), [weak = std::weak_ptr<TlsCertificates>(tls_), logger = &logger_,
                                          problem = std::string()]() mutable {
    auto certs = weak.lock();
    if (!certs) return false;
    auto changed = certs->reload_if_changed();
    if (!changed) {
      if (changed.error().message != problem) {
        problem = changed.error().message;
        logger->host(LogLevel::warn, "TLS certificate not reloaded; the old one stays in use", {{"reason", problem}});
      }
      return true;
    }
    problem.clear();
    if (*changed) logger->host(LogLevel::info, "TLS certificate reloaded", {{"certificate", certs->describe()}});
    return true;
  });
  return ok_status();
}

void HttpTrigger::stop_taking_work() {
  draining_.store(true);
  server_->stop_accepting();
  if (tls_server_) tls_server_->stop_accepting();
}

int HttpTrigger::in_progress() const {
  return server_->active_requests() + (tls_server_ ? tls_server_->active_requests() : 0);
}

void HttpTrigger::close() {
  stop_refreshes();
  {
    std::lock_guard lock(table_mu_);
    if (table_ && table_->gateway) table_->gateway->stop();
    for (auto& w : old_tables_) {
      if (auto t = w.lock(); t && t->gateway) t->gateway->stop();  // a loop may still hold it
    }
  }
  server_->close();
  if (tls_server_) tls_server_->close();
}

std::vector<AdminView> HttpTrigger::admin_views() {
  auto current = [this] {
    std::lock_guard lock(table_mu_);
    return table_;
  };
  return {{"/admin/routes", [current] {
             auto t = current();
             return t ? t->routes : std::string("{\"routes\":[]}");
           }},
          {"/admin/gateway", [this] {
             std::shared_ptr<RouteTable> t;
             {
               std::lock_guard lock(table_mu_);
               t = table_;
             }
             return t && t->gateway ? t->gateway->status_json() : std::string("{\"upstreams\":[]}");
           }},
          {"/admin/rate-limits", [this] {
             boost::json::object o{{"shared", rate_sync_ != nullptr}};
             if (rate_sync_) {
               auto st = rate_sync_->stats();
               o["sync_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(app_.gateway.rate_limits.sync).count();
               o["limiters"] = rate_sync_->limiters();
               o["merged"] = st.merged;
               o["conflicts"] = st.conflicts;
               o["failures"] = st.failures;
               if (!st.last_failure.empty()) o["last_failure"] = st.last_failure;
             }
             return boost::json::serialize(o);
           }},
          {"/admin/cache", [current] {
             auto t = current();
             if (!t || !t->cache) return std::string("{\"enabled\":false}");
             auto s = t->cache->stats();
             return boost::json::serialize(boost::json::object{
                 {"enabled", true}, {"entries", s.entries}, {"bytes", s.bytes}, {"hits", s.hits}, {"misses", s.misses},
                 {"stored", s.stored}, {"evicted", s.evicted}});
           }}};
}

bool HttpTrigger::drain(Duration grace) {
  const auto until = std::chrono::steady_clock::now() + grace;  // real time: the clock may be a test's
  while (in_progress() > 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return in_progress() == 0;
}

// The path as routes match it: `path` now views `storage` when normalizing changed it. False
// (with `why`) for a path no route may take.
static bool routable_path(std::string_view& path, std::string& storage, std::string& why) {
  bool changed = false;
  if (auto n = normalize_path(path, &why, &changed); changed) {
    storage = std::move(*n);
    path = storage;
    return true;
  }
  return why.empty();
}

// A body larger than this (or of unknown length) on a route to an upstream is sent on as it
// arrives rather than held whole first; a smaller one is held, so it can be sent again on a retry.
constexpr uint64_t kStreamedBody = 64 * 1024;

std::optional<uint64_t> HttpTrigger::streams_body(IncomingRequest& head) {
  if (!head.header("transfer-encoding")) {
    auto length = head.header("content-length");
    uint64_t n = 0;
    if (!length || std::from_chars(length->data(), length->data() + length->size(), n).ec != std::errc() ||
        n <= kStreamedBody) {
      return std::nullopt;
    }
  }
  std::string_view target = head.target();
  std::string_view path = target.substr(0, target.find('?'));
  std::string normalized, why;
  if (!routable_path(path, normalized, why)) return std::nullopt;
  std::shared_ptr<RouteTable> holder;
  RouteTable& table = table_here(holder);
  if (!table.gateway) return std::nullopt;
  RouteMatch match = table.router.match(head.method(), path, head.header("host").value_or(std::string_view()));
  if (match.kind != RouteMatch::Kind::found) return std::nullopt;
  const RouteTarget& rt = table.targets[static_cast<std::size_t>(match.target)];
  if (!rt.upstream || !rt.gateway) return std::nullopt;
  uint64_t limit = app_.http.max_body;
  if (rt.gateway->max_body) limit = std::min<uint64_t>(limit, *rt.gateway->max_body);
  return limit;
}

void HttpTrigger::handle(IncomingRequest& request, Responder respond) {
  std::string_view target = request.target();
  auto qmark = target.find('?');
  std::string_view path = target.substr(0, qmark);
  std::string_view query = qmark == std::string_view::npos ? std::string_view() : target.substr(qmark + 1);
  std::string_view method = request.method();
  std::string normalized, why;
  if (!routable_path(path, normalized, why)) return respond(json_error(400, "bad_path", why, new_invocation_id()));

  if (path == "/healthz") return respond(plain_json(200, "{\"status\":\"ok\"}"));
  if (path == "/readyz") return respond(readiness(draining_.load(), options_.store));
  if (tls_server_ && app_.gateway.tls->redirect_http && !request.secure()) return respond(to_https(request, tls_port_));

  if (path.rfind(kJobsPath, 0) == 0 && method == "GET") return job_status(path.substr(std::strlen(kJobsPath)), std::move(respond));

  std::shared_ptr<RouteTable> holder;
  RouteTable& table = table_here(holder);
  const std::string_view host = request.header("host").value_or(std::string_view());
  const std::string_view origin = request.header("origin").value_or(std::string_view());
  if (method == "OPTIONS" && !origin.empty()) {
    // A CORS preflight: answered for the route the real request would take.
    if (auto wanted = request.header("access-control-request-method")) {
      RouteMatch pre = table.router.match(*wanted, path, host);
      if (pre.kind == RouteMatch::Kind::found) {
        const RouteTarget& t = table.targets[static_cast<std::size_t>(pre.target)];
        if (t.cors) {
          static const std::vector<std::string> kAny;
          return respond(cors_preflight(*t.cors, origin, *wanted,
                                        request.header("access-control-request-headers").value_or(std::string_view()),
                                        t.methods ? *t.methods : kAny));
        }
      }
    }
  }
  RouteMatch match = table.router.match(method, path, host);
  if (!table.openapi.empty() && path == "/openapi.json" && (method == "GET" || method == "HEAD")) {
    return respond(HttpReply{200, {{"content-type", "application/json"}}, table.openapi});
  }
  if (match.kind == RouteMatch::Kind::not_found) {
    return respond(json_error(404, "not_found",
                              "no function serves " + std::string(method) + " " + std::string(path),
                              new_invocation_id()));
  }
  if (match.kind == RouteMatch::Kind::method_not_allowed) {
    HttpReply r = json_error(405, "method_not_allowed",
                             std::string(method) + " is not allowed on " + std::string(path) +
                                 "; allowed: " + match.allow,
                             new_invocation_id());
    r.headers.push_back({"allow", match.allow});
    return respond(std::move(r));
  }
  const RouteTarget& rt = table.targets[static_cast<std::size_t>(match.target)];
  if (rt.function >= 0) {
    const std::string& fname = pools_.at(rt.function).spec().name;
    if (rt.auth == AuthLevel::function) {
      std::optional<std::string> presented;
      if (auto h = request.header("x-functions-key")) presented = std::string(*h);
      else presented = query_param(query, "code");
      if (!presented || !keys_.accepts(fname, *presented)) {
        HttpReply r = json_error(401, "unauthorized",
                                 presented ? "the function key is not valid for '" + fname + "'"
                                           : "function '" + fname +
                                                 "' needs a key: send it in the x-functions-key header or the code query parameter",
                                 new_invocation_id());
        return respond(std::move(r));
      }
    }
  }
  if (rt.handle) {
    if (request.body_stream()) {  // streams_body() chose an upstream route; a reload changed it since
      HttpReply r = json_error(503, "routes_changed", "the routes changed while the request arrived; send it again", "");
      r.headers.push_back({"retry-after", "1"});
      return respond(std::move(r));
    }
    return rt.handle(request, std::move(match.params), std::move(respond));
  }
  // What the gateway adds to the reply, whoever makes it: CORS and rate-limit headers.
  std::vector<Header> reply_headers;
  if (rt.cors && !origin.empty()) reply_headers = cors_reply_headers(*rt.cors, origin);
  std::string claims;
  if (rt.jwt && table.jwt) {
    JwtVerifier::Verdict v = table.jwt->verify(request.header("authorization").value_or(std::string_view()), *rt.jwt);
    if (v.status != 200) {
      HttpReply r = json_error(v.status, v.status == 401 ? "unauthorized" : "forbidden", v.description, "");
      std::string challenge = "Bearer realm=\"nimbus\", error=\"" + v.error + "\", error_description=\"";
      for (char c : v.description) challenge += c == '"' ? '\'' : c;
      r.headers.push_back({"www-authenticate", challenge + "\""});
      for (auto& h : reply_headers) r.headers.push_back(std::move(h));
      return respond(std::move(r));
    }
    claims = std::move(v.claims);
  }
  if (rt.gateway && rt.gateway->api_key) {
    ApiKeys::Check c;
    if (api_keys_) c = api_keys_->check(request.header("x-api-key").value_or(std::string_view()));
    else c = {401, "no API keys are loaded", {}, {}};
    if (c.quota) RateLimiter::add_headers(*c.quota, reply_headers);
    if (c.status != 200) {
      HttpReply r = json_error(c.status, c.status == 429 ? "rate_limited" : c.status == 503 ? "unavailable" : "unauthorized",
                               c.message, "");
      if (c.status == 401) r.headers.push_back({"www-authenticate", "ApiKey realm=\"nimbus\", header=\"X-Api-Key\""});
      for (auto& h : reply_headers) r.headers.push_back(std::move(h));
      return respond(std::move(r));
    }
    claims = boost::json::serialize(boost::json::object{{"api_key", c.name}});
  }
  if (rt.limiter) {
    std::string key;
    const RateLimitSpec& spec = *rt.gateway->rate_limit;
    if (spec.per == RateLimitSpec::Per::header) {
      if (auto v = request.header(spec.header)) key = "h:" + std::string(*v);
    }
    if (spec.per == RateLimitSpec::Per::ip || (spec.per == RateLimitSpec::Per::header && key.empty())) {
      // An IPv6 client counts by its /64: one host holds a whole /64 and could rotate through it.
      std::string ip = request.remote_address();
      unsigned char v6[16];
      if (ip.find(':') != std::string::npos && ::inet_pton(AF_INET6, ip.c_str(), v6) == 1) {
        std::memset(v6 + 8, 0, 8);
        char text[INET6_ADDRSTRLEN];
        if (::inet_ntop(AF_INET6, v6, text, sizeof text)) ip = std::string(text) + "/64";
      }
      key = "ip:" + ip;
    }
    RateLimiter::Decision d = rt.limiter->take(key);
    RateLimiter::add_headers(d, reply_headers);
    if (!d.allowed) {
      HttpReply r = json_error(429, "rate_limited",
                               "over this route's rate limit of " + spec.text + "; retry after " +
                                   std::to_string(d.retry_after_s) + " s",
                               "");
      for (auto& h : reply_headers) r.headers.push_back(std::move(h));
      return respond(std::move(r));
    }
  }
  // A range, or a WebSocket handshake, is no request for the whole representation: it passes by.
  if (rt.cache && table.cache && (method == "GET" || method == "HEAD") && !request.header("range") &&
      !request.header("upgrade")) {
    auto policy = ResponseCache::request_policy(request.header("cache-control").value_or(std::string_view()),
                                                request.header("pragma").value_or(std::string_view()));
    if (policy.store) {
      std::string key = cache_key(*rt.cache, match.target, host, path, query, request);
      if (policy.lookup) {
        if (auto hit = table.cache->get(key, [&](std::string_view n) { return request.header(n); })) {
          for (auto& h : reply_headers) hit->headers.push_back(std::move(h));
          return respond(std::move(*hit));
        }
      }
      // HEAD replies have no body to keep: only a GET's reply is stored.
      if (method == "GET") respond = keep_in_cache(table.cache, std::move(key), rt, request, reply_headers, std::move(respond));
    }
  }
  if (auto streamed = request.body_stream()) {
    // streams_body() chose this for an upstream route; a reload in between may have changed it.
    if (!rt.upstream) {
      HttpReply r = json_error(503, "routes_changed", "the routes changed while the request arrived; send it again", "");
      r.headers.push_back({"retry-after", "1"});
      return respond(std::move(r));
    }
    uint64_t length = 0;
    auto declared = request.header("content-length").value_or(std::string_view());
    if (rt.gateway->max_body && std::from_chars(declared.data(), declared.data() + declared.size(), length).ec == std::errc() &&
        length > *rt.gateway->max_body) {
      return respond(json_error(413, "payload_too_large",
                                "the request body is over this route's limit of " + std::to_string(*rt.gateway->max_body) +
                                    " bytes",
                                ""));
    }
    return table.gateway->proxy(*rt.gateway, *rt.upstream, request, path, query, std::string(), std::move(reply_headers),
                                claims, std::move(respond));
  }
  std::string body = request.take_body();
  if (rt.gateway && rt.gateway->max_body && body.size() > *rt.gateway->max_body) {
    // The listener read up to http.max_body; the route allows less.
    return respond(json_error(413, "payload_too_large",
                              "the request body is over this route's limit of " + std::to_string(*rt.gateway->max_body) +
                                  " bytes",
                              ""));
  }
  route_with_body(table, rt, request, std::move(match.params), path, query, std::move(body), std::move(reply_headers),
                  std::move(claims), std::move(respond));
}

void HttpTrigger::route_with_body(const RouteTable& table, const RouteTarget& rt, IncomingRequest& request, Headers params,
                                  std::string_view path, std::string_view query, std::string body,
                                  std::vector<Header> reply_headers, std::string claims, Responder respond) {
  const GatewayRouteSpec* gw = rt.gateway;
  if (rt.site) {
    // The file's path: the route's catch-all (or its last parameter); none: the index.
    HttpReply reply = rt.site->serve(request.method(), params.empty() ? std::string_view() : std::string_view(params.back().value),
                                     request);
    if (!gw->response_headers.empty()) edit_headers(gw->response_headers, reply.headers);
    for (auto& h : reply_headers) reply.headers.push_back(std::move(h));
    return respond(std::move(reply));
  }
  if (rt.upstream) {
    return table.gateway->proxy(*gw, *rt.upstream, request, path, query, std::move(body), std::move(reply_headers),
                                claims, std::move(respond));
  }
  std::string_view method = request.method();
  FunctionPool& pool = pools_.at(rt.function);
  const FunctionSpec& fn = pool.spec();
  if (!rt.upload.empty()) return upload(rt.upload, std::move(params), request, std::move(body), std::move(respond));

  auto traceparent = request.header("traceparent");
  const std::string tracestate = traceparent ? tracestate_of(request) : std::string();
  Invocation inv = new_invocation(fn, TriggerKind::http, "/http", "nimbus.http.request", clock_,
                                  traceparent ? *traceparent : std::string_view(), tracestate);
  HttpRequest& http = inv.http.emplace();
  http.method = std::string(method);
  http.path = gw ? target_path(*gw, path) : std::string(path);
  http.query = std::string(query);
  http.headers.reserve(request.header_count());
  request.for_each_header([&](std::string_view n, std::string_view v) {
    http.headers.push_back({std::string(n), std::string(v)});
  });
  // Claims come from the gateway's verification only, never from the client.
  std::erase_if(http.headers, [gw](const Header& h) {
    return is_claims_header(h.name) || (gw && gw->api_key && strcasecmp(h.name.c_str(), "x-api-key") == 0);
  });
  if (!claims.empty()) http.headers.push_back({kClaimsHeader, std::move(claims)});
  // The scheme the client used on this host's listener, as the proxy tells upstreams: a
  // client's own X-Forwarded-Proto never passes (a function checking for https would trust it).
  std::erase_if(http.headers, [](const Header& h) { return strcasecmp(h.name.c_str(), "x-forwarded-proto") == 0; });
  http.headers.push_back({"x-forwarded-proto", request.secure() ? "https" : "http"});
  if (gw) edit_headers(gw->request_headers, http.headers);
  http.params = std::move(params);
  inv.payload = std::move(body);

  if (rt.asynchronous) return enqueue_async(fn, std::move(inv), std::move(respond));

  const HeaderEdits* reply_edits = gw && !gw->response_headers.empty() ? &gw->response_headers : nullptr;
  // The edits live in the route table, which a reload may replace while the function runs.
  std::shared_ptr<const GatewaySpec> edits_owner = reply_edits ? table.gateway_spec : nullptr;
  auto answer = [respond = std::move(respond), reply_edits, edits_owner, reply_headers = std::move(reply_headers)](
                    Result& r, const InvocationView& s) mutable {
    HttpReply reply = reply_for(std::move(r), s.function, s.id);
    if (reply_edits) edit_headers(*reply_edits, reply.headers);
    for (auto& h : reply_headers) {
      std::erase_if(reply.headers, [&](const Header& x) { return x.name == h.name; });
      reply.headers.push_back(std::move(h));
    }
    const int status = reply.status;
    respond(std::move(reply));
    return status;
  };
  if (pool.runs_inline()) {
    TimePoint finished;
    if (auto result = pool.try_run_inline(inv, &finished)) {
      return finish_inline(options_.store, fn, logger_, clock_, inv, std::move(*result), std::move(answer), finished);
    }
  }
  InvocationStamp stamp = InvocationStamp::of(inv);
  pool.dispatch(std::move(inv), [this, spec = &fn, stamp = std::move(stamp), answer = std::move(answer)](Result&& result) mutable {
    finish_invocation(options_.store, *spec, logger_, clock_, std::move(stamp), std::move(result), std::move(answer));
  });
}

// The request becomes a message (metadata carries the method, path, query, route parameters
// and headers) in the function's async queue, and its job record starts as pending: both in
// one commit, so a 202 always means the request is durable and its status can be asked for.
void HttpTrigger::enqueue_async(const FunctionSpec& fn, Invocation&& inv, Responder respond) {
  if (!options_.store) {
    return respond(json_error(503, "no_store", "async routes need a store, and this host has none", inv.id));
  }
  NewMessage m;
  m.id = inv.id;
  m.type = "nimbus.http.request";
  m.source = "/http";
  m.subject = inv.http->path;
  m.metadata.push_back({"http.method", inv.http->method});
  m.metadata.push_back({"http.path", inv.http->path});
  m.metadata.push_back({"http.query", inv.http->query});
  for (auto& p : inv.http->params) m.metadata.push_back({"param." + p.name, std::move(p.value)});
  for (auto& h : inv.http->headers) m.metadata.push_back({"header." + h.name, std::move(h.value)});
  add_trace_context(m.metadata, inv.traceparent, inv.tracestate);
  m.payload = std::move(inv.payload);
  Batch b;
  b.enqueues.push_back({async_queue_for(fn.name), std::move(m)});
  b.puts.push_back({kJobStore, inv.id, job_record(inv.id, fn.name, "pending", 0, unix_ms(clock_)), std::nullopt, kJobTtlMs});
  // The accept is a server span of its own (the queued message's traceparent names it): the
  // function's run later is its child.
  std::shared_ptr<Span> accept;
  if (Tracer* tracer = logger_.tracer(); tracer && trace_sampled(inv.traceparent)) {
    accept = std::make_shared<Span>();
    accept->trace_id = trace_id_of(inv.traceparent);
    accept->span_id = span_id_of(inv.traceparent);
    accept->parent_span_id = inv.parent_span;
    accept->trace_state = inv.tracestate;
    accept->name = inv.http->method + " " + fn.name + " (accept)";
    accept->kind = SpanKind::server;
    accept->start_unix_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                (clock_.wall() - (clock_.now() - inv.started)).time_since_epoch())
                                .count();
    accept->attributes = {{"faas.name", fn.name},
                          {"faas.invocation_id", inv.id},
                          {"http.request.method", inv.http->method},
                          {"nimbus.trigger", std::string("http")},
                          {"nimbus.async", true}};
  }
  // The accept has its log line (the run has its own later): what answered 202, or why not.
  options_.store->commit(std::move(b), [id = inv.id, respond = std::move(respond), accept, tracer = logger_.tracer(),
                                        clock = &clock_, logger = &logger_, function = fn.name,
                                        trace = std::string(trace_id_of(inv.traceparent)),
                                        started = inv.started](Expected<BatchResult> r) {
    const int64_t took_us = std::chrono::duration_cast<std::chrono::microseconds>(clock->now() - started).count();
    logger->host(r ? LogLevel::info : LogLevel::warn, r ? "accepted" : "not accepted: the request could not be queued",
                 {{"function", function}, {"trigger", "http"}, {"invocation_id", id}, {"trace_id", trace},
                  {"status", r ? 202 : 503}, {"duration_us", took_us}});
    if (accept) {
      accept->end_unix_ns = std::max(accept->start_unix_ns, static_cast<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                                clock->wall().time_since_epoch())
                                                                .count()));
      accept->attributes.emplace_back("http.response.status_code", int64_t{r ? 202 : 503});
      if (!r) {
        accept->error = true;
        accept->status_message = "the request could not be queued";
      }
      tracer->record(std::move(*accept));
    }
    if (!r) return respond(json_error(503, "store", "the request could not be queued: " + r.error().message, id));
    std::string url = std::string(kJobsPath) + id;
    respond(HttpReply{202,
                      {{"content-type", "application/json"}, {"location", url}},
                      "{\"id\":\"" + id + "\",\"status\":\"pending\",\"status_url\":\"" + url + "\"}"});
  });
}

// An upload route: the body is committed as a blob named by the route's last parameter (its
// events go out in the same commit); the reply says what was stored.
void HttpTrigger::upload(const std::string& container, Headers params, IncomingRequest& request, std::string body,
                         Responder respond) {
  if (!options_.store) return respond(json_error(503, "no_store", "uploads need a store, and this host has none", ""));
  if (params.empty()) return respond(json_error(500, "internal", "the upload route has no parameter to name the blob", ""));
  if (params.back().value.empty()) {
    return respond(json_error(400, "bad_request", "the path names no blob; expected a name after the route's prefix", ""));
  }
  Batch b;
  b.blob_puts.push_back(blob_put_from(request, container, std::move(params.back().value)));
  b.blob_puts.back().data = std::move(body);
  options_.store->commit(std::move(b), [respond = std::move(respond)](Expected<BatchResult> r) {
    respond(blob_written_reply(r));
  });
}

void HttpTrigger::job_status(std::string_view id, Responder respond) {
  if (!options_.store) return respond(json_error(404, "not_found", "no such job", ""));
  // A read: off the event loop, answered from the store's I/O thread.
  Store* store = options_.store;
  store->run_blocking([store, id = std::string(id), respond = std::move(respond)] {
    auto entry = store->get(kJobStore, id);
    if (!entry) return respond(json_error(500, "store", entry.error().message, ""));
    if (!entry->has_value()) return respond(json_error(404, "not_found", "no job " + id, ""));
    respond(HttpReply{200, {{"content-type", "application/json"}, {"cache-control", "no-store"}}, std::move((*entry)->value)});
  });
}

}  // namespace nimbus
