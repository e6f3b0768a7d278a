// End to end: the gateway in the real host, in front of real HTTP upstreams (test_upstream.h):
// routing by host, path and method to functions and upstreams; what the upstream sees
// (rewrites, header edits, X-Forwarded-*, Forwarded, Host); every failure mode with its status;
// retries, balancing, circuit breakers, health checks and pooled keep-alive connections.
#include "it_common.h"
#include <brotli/decode.h>
#include <zlib.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <sys/resource.h>

#include "jwt_signer.h"
#include "test_upstream.h"

namespace nimbus::testing {
namespace {

std::string gateway_app(const std::string& gateway) {
  return "name: gw\nhttp: {max_body: 1MB}\ngateway:\n" + gateway + "functions:\n" +
         "  hello:\n    runtime: native\n    handler: " + fn("hello") + "\n    triggers:\n      - http: {route: /hello, methods: [GET]}\n" +
         "  echo:\n    runtime: native\n    handler: " + fn("echo") + "\n    triggers: []\n";
}

json::object admin_gateway(App& app) {
  auto r = request(app.admin(), "GET", "/admin/gateway", {{"Authorization", "Bearer " + app.host->admin_token()}});
  return parse_object(r.body);
}

json::object target_status(App& app, int port) {
  json::object status = admin_gateway(app);
  for (const auto& u : status["upstreams"].as_array()) {
    for (const auto& t : u.as_object().at("targets").as_array()) {
      if (t.as_object().at("url").as_string().ends_with(":" + std::to_string(port))) return t.as_object();
    }
  }
  return {};
}

std::string url(int port) { return "http://127.0.0.1:" + std::to_string(port); }

TEST(Gateway, RoutesByHostPathAndMethodToFunctionsAndUpstreamsTheMonolithSeesOnlyTheRest) {
  TestUpstream monolith("monolith");
  TestUpstream api("api");
  App app(gateway_app("  upstreams:\n    monolith: " + url(monolith.port()) + "\n    api: {targets: [" + url(api.port()) +
                      "]}\n"
                      "  routes:\n"
                      "    - {path: \"/orders/{id}\", methods: [GET], function: echo}\n"
                      "    - {path: \"/api/{*rest}\", host: api.example.com, upstream: api, rewrite: \"/v2/{rest}\"}\n"
                      "    - {path: \"/legacy/{*rest}\", upstream: monolith, strip_prefix: /legacy}\n"
                      "    - {path: \"/{*rest}\", upstream: monolith}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();

  // A function route through the gateway.
  Response r = request(app.port(), "GET", "/orders/17?x=1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse_object(r.body)["params"].as_object()["id"].as_string(), "17");
  // The function's own http trigger still serves.
  EXPECT_EQ(request(app.port(), "GET", "/hello").body, "Hello, World!");
  // POST /orders/17 is not the function route's method: the catch-all takes it to the monolith.
  r = request(app.port(), "POST", "/orders/17", {{"Content-Type", "text/plain"}}, "a body");
  ASSERT_EQ(r.status, 200) << r.body;
  auto o = parse_object(r.body);
  EXPECT_EQ(o["server"].as_string(), "monolith");
  EXPECT_EQ(o["method"].as_string(), "POST");
  EXPECT_EQ(o["body"].as_string(), "a body");
  // Everything else goes to the monolith, the root and the query included.
  o = parse_object(request(app.port(), "GET", "/").body);
  EXPECT_EQ(o["target"].as_string(), "/");
  o = parse_object(request(app.port(), "GET", "/products/9?color=red%20ish").body);
  EXPECT_EQ(o["server"].as_string(), "monolith");
  EXPECT_EQ(o["target"].as_string(), "/products/9?color=red%20ish");
  // strip_prefix
  o = parse_object(request(app.port(), "GET", "/legacy/a/b?q=1").body);
  EXPECT_EQ(o["target"].as_string(), "/a/b?q=1");
  // Host routing with a rewrite: only for api.example.com (any port, any case).
  o = parse_object(request(app.port(), "GET", "/api/users/a%20b", {{"Host", "API.example.com:8080"}}).body);
  EXPECT_EQ(o["server"].as_string(), "api");
  EXPECT_EQ(o["target"].as_string(), "/v2/users/a%20b");
  o = parse_object(request(app.port(), "GET", "/api/users", {{"Host", "other.example.com"}}).body);
  EXPECT_EQ(o["server"].as_string(), "monolith");

  // The monolith saw only what no function serves.
  for (const auto& s : monolith.seen()) {
    EXPECT_NE(s.target.rfind("/orders/17?", 0), 0u) << s.method << " " << s.target;
    EXPECT_NE(s.target, "/hello");
  }
  EXPECT_EQ(api.requests(), 1);

  // The routes, described: OpenAPI 3 on the public listener, and `nimbus routes`.
  auto doc = parse_object(request(app.port(), "GET", "/openapi.json").body);
  EXPECT_EQ(doc["openapi"].as_string(), "3.0.3");
  auto& paths = doc["paths"].as_object();
  ASSERT_TRUE(paths.contains("/orders/{id}"));
  EXPECT_EQ(paths["/orders/{id}"].as_object()["get"].as_object()["parameters"].as_array()[0].as_object()["name"].as_string(), "id");
  EXPECT_TRUE(paths.contains("/hello"));
  EXPECT_EQ(paths["/api/{rest}"].as_object()["get"].as_object()["x-nimbus-host"].as_string(), "api.example.com");
  CommandResult routes = run_nimbus({"routes", "--dir", app.dir.path().string()}, app.dir.path());
  EXPECT_EQ(routes.exit_code, 0) << routes.err;
  EXPECT_NE(routes.out.find("upstream:monolith"), std::string::npos) << routes.out;
  EXPECT_NE(routes.out.find("api.example.com"), std::string::npos) << routes.out;
  EXPECT_NE(routes.out.find("function:hello"), std::string::npos) << routes.out;
}

TEST(Gateway, TheUpstreamSeesForwardedHeadersEditsAndItsOwnHostButNoHopByHopHeaders) {
  TestUpstream up("up");
  App app(gateway_app("  upstreams:\n    up: " + url(up.port()) +
                      "\n  routes:\n"
                      "    - path: /plain/{*rest}\n      upstream: up\n"
                      "    - path: /edited/{*rest}\n      upstream: up\n      preserve_host: true\n"
                      "      headers: {set: {x-added: yes, x-replaced: new}, remove: [x-secret]}\n"
                      "      response_headers: {set: {x-served-by: nimbus}, remove: [x-upstream-secret]}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();

  Response r = request(app.port(), "GET", "/plain/x",
                       {{"Host", "shop.example.com"},
                        {"X-Forwarded-For", "198.51.100.7"},
                        {"Connection", "close, X-Conn-Only"},
                        {"X-Conn-Only", "hop"},
                        {"Keep-Alive", "timeout=5"},
                        {"X-Secret", "s"}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto h = parse_object(r.body)["headers"].as_object();
  EXPECT_EQ(h["host"].as_string(), "127.0.0.1:" + std::to_string(up.port()));
  EXPECT_EQ(h["x-forwarded-for"].as_string(), "198.51.100.7, 127.0.0.1");
  EXPECT_EQ(h["x-forwarded-proto"].as_string(), "http");
  EXPECT_EQ(h["x-forwarded-host"].as_string(), "shop.example.com");
  EXPECT_EQ(h["forwarded"].as_string(), "for=127.0.0.1;host=shop.example.com;proto=http");
  EXPECT_EQ(h["x-secret"].as_string(), "s");
  EXPECT_FALSE(h.contains("x-conn-only"));
  EXPECT_FALSE(h.contains("keep-alive"));
  // The upstream's hop-by-hop headers do not reach the client; its own headers do.
  EXPECT_EQ(r.header("x-hop"), "");
  EXPECT_EQ(r.header("x-upstream-secret"), "hidden");
  EXPECT_EQ(r.header("content-type"), "application/json");

  r = request(app.port(), "GET", "/edited/x", {{"Host", "shop.example.com"}, {"X-Secret", "s"}, {"X-Replaced", "old"}});
  ASSERT_EQ(r.status, 200) << r.body;
  h = parse_object(r.body)["headers"].as_object();
  EXPECT_EQ(h["host"].as_string(), "shop.example.com");
  EXPECT_EQ(h["x-added"].as_string(), "yes");
  EXPECT_EQ(h["x-replaced"].as_string(), "new");
  EXPECT_FALSE(h.contains("x-secret"));
  EXPECT_EQ(r.header("x-served-by"), "nimbus");
  EXPECT_EQ(r.header("x-upstream-secret"), "");
}

TEST(Gateway, EveryUpstreamFailureHasItsOwnStatusAndAJsonError) {
  TestUpstream up("up");
  // A port nothing listens on, held for the whole test: a connection to it is refused.
  HeldPort held;
  ASSERT_NE(held.port(), 0);
  const int down_port = held.port();
  App app(gateway_app("  upstreams:\n"
                      "    up: {targets: [" + url(up.port()) + "], timeout: 300ms, retries: 0, max_response: 100KB,"
                      " circuit_breaker: {failures: 0}}\n"
                      "    down: {targets: [" + url(down_port) + "], retries: 0, circuit_breaker: {failures: 0}}\n"
                      "  routes:\n"
                      "    - {path: \"/down/{*rest}\", upstream: down}\n"
                      "    - {path: \"/small/{*rest}\", upstream: up, max_body: 10B, strip_prefix: /small}\n"
                      "    - {path: \"/patient/{*rest}\", upstream: up, timeout: 3s, strip_prefix: /patient}\n"
                      "    - {path: \"/{*rest}\", upstream: up}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();

  auto expect_error = [&](const Response& r, int status, const std::string& code) {
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_EQ(r.header("content-type"), "application/json");
    auto o = parse_object(r.body);
    ASSERT_TRUE(o.contains("error")) << r.body;
    EXPECT_EQ(o["error"].as_object()["code"].as_string(), code) << r.body;
  };
  expect_error(request(app.port(), "GET", "/down/x"), 502, "upstream_unreachable");
  expect_error(request(app.port(), "GET", "/slow?ms=2000"), 504, "upstream_timeout");
  expect_error(request(app.port(), "GET", "/reset"), 502, "upstream_reset");
  expect_error(request(app.port(), "GET", "/garbage"), 502, "upstream_bad_response");
  expect_error(request(app.port(), "GET", "/big?bytes=200000"), 502, "upstream_response_too_large");
  expect_error(request(app.port(), "POST", "/small/x", {}, "more than ten bytes"), 413, "payload_too_large");
  // A route's own timeout outlasts the upstream's.
  Response slow = request(app.port(), "GET", "/patient/slow?ms=500");
  EXPECT_EQ(slow.status, 200) << slow.body;
  // Status codes from the upstream itself pass through untouched.
  EXPECT_EQ(request(app.port(), "GET", "/status/503").status, 503);
  EXPECT_EQ(request(app.port(), "GET", "/status/404").status, 404);
  // The host is fine after all of that.
  EXPECT_EQ(request(app.port(), "GET", "/x").status, 200);
}

TEST(Gateway, RetriesIdempotentRequestsOnAnotherTargetButNeverRepeatsAPost) {
  TestUpstream good("good");
  TestUpstream doomed("doomed");
  const int down_port = doomed.port();
  doomed.stop();
  App app(gateway_app("  upstreams:\n"
                      "    pair: {targets: [" + url(down_port) + ", " + url(good.port()) + "], retries: 1,"
                      " circuit_breaker: {failures: 0}}\n"
                      "    flaky: {targets: [" + url(good.port()) + ", " + url(good.port()) + "], retries: 1,"
                      " circuit_breaker: {failures: 0}}\n"
                      "  routes:\n"
                      "    - {path: \"/flaky/{*rest}\", upstream: flaky, strip_prefix: /flaky}\n"
                      "    - {path: \"/{*rest}\", upstream: pair}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  // Half the picks land on the dead target: a refused connection sent nothing, so every
  // method is retried on the other one.
  for (int i = 0; i < 10; ++i) {
    Response r = request(app.port(), i % 2 ? "GET" : "POST", "/n/" + std::to_string(i), {}, "b");
    EXPECT_EQ(r.status, 200) << r.body;
  }
  EXPECT_EQ(good.requests(), 10);
  // A reset after the request was sent: GET goes again (twice in all), POST does not.
  int before = good.requests();
  EXPECT_EQ(request(app.port(), "GET", "/flaky/reset").status, 502);
  EXPECT_EQ(good.requests() - before, 2);
  before = good.requests();
  EXPECT_EQ(request(app.port(), "POST", "/flaky/reset", {}, "once").status, 502);
  EXPECT_EQ(good.requests() - before, 1);
  // The retry budget: of 100 failing GETs in quick succession, not every one goes twice
  // (ten retries a second, plus 20% of the requests).
  before = good.requests();
  for (int i = 0; i < 100; ++i) EXPECT_EQ(request(app.port(), "GET", "/flaky/reset").status, 502);
  int sent = good.requests() - before;
  EXPECT_GE(sent, 100 + 10);
  EXPECT_LT(sent, 170);
}

TEST(Gateway, BalancesRoundRobinAndLeastRequestsOverPooledConnections) {
  TestUpstream a("a"), b("b");
  App app(gateway_app("  upstreams:\n"
                      "    rr: {targets: [" + url(a.port()) + ", " + url(b.port()) + "]}\n"
                      "    least: {targets: [" + url(a.port()) + ", " + url(b.port()) + "], balance: least_requests}\n"
                      "  routes:\n"
                      "    - {path: \"/least/{*rest}\", upstream: least, strip_prefix: /least}\n"
                      "    - {path: \"/{*rest}\", upstream: rr}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  // 200 requests on one keep-alive client connection: an even split, over a handful of
  // upstream connections (pooled per event loop), not one per request.
  std::string batch;
  for (int i = 0; i < 200; ++i) batch += "GET /r" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n";
  batch += "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  std::string raw = send_raw(app.port(), batch);
  int ok = 0;
  for (std::size_t p = raw.find("HTTP/1.1 200"); p != std::string::npos; p = raw.find("HTTP/1.1 200", p + 1)) ++ok;
  EXPECT_EQ(ok, 201);
  EXPECT_NEAR(a.requests(), 100, 2);
  EXPECT_NEAR(b.requests(), 100, 2);
  EXPECT_LE(a.connections() + b.connections(), 8);

  // least_requests: while one target holds a slow request, every quick one goes to the other
  // (round robin would send half of them to the busy one).
  auto slow = std::async(std::launch::async, [&] { return request(app.port(), "GET", "/least/slow?ms=1500"); });
  ASSERT_TRUE(eventually([&] {
    return target_status(app, a.port())["in_flight"].as_int64() + target_status(app, b.port())["in_flight"].as_int64() == 1;
  }));
  TestUpstream& busy = target_status(app, a.port())["in_flight"].as_int64() == 1 ? a : b;
  TestUpstream& idle = &busy == &a ? b : a;
  const int busy_before = busy.requests(), idle_before = idle.requests();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(request(app.port(), "GET", "/least/quick").status, 200);
  EXPECT_EQ(idle.requests() - idle_before, 10);
  EXPECT_EQ(busy.requests() - busy_before, 0);
  EXPECT_EQ(slow.get().status, 200);
}

TEST(Gateway, ACircuitBreakerOpensAfterFailuresProbesHalfOpenAndClosesWhenTheTargetRecovers) {
  // The upstream answers 503 while "sick": five in a row open the breaker.
  TestUpstream up("up");
  App app(gateway_app("  upstreams:\n"
                      "    up: {targets: [" + url(up.port()) + "], retries: 0,"
                      " circuit_breaker: {failures: 3, open_for: 400ms}}\n"
                      "  routes:\n"
                      "    - {path: \"/{*rest}\", upstream: up}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(request(app.port(), "GET", "/status/503").status, 503);
  EXPECT_EQ(target_status(app, up.port())["breaker"].as_string(), "open");
  // Open: the gateway answers for the upstream, which sees nothing.
  int seen = up.requests();
  Response r = request(app.port(), "GET", "/fine");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "circuit_open");
  EXPECT_FALSE(r.header("retry-after").empty());
  EXPECT_EQ(up.requests(), seen);
  // After open_for, one probe goes through; it fails, so the breaker opens again.
  ASSERT_TRUE(eventually([&] { return request(app.port(), "GET", "/status/503").status == 503 && up.requests() > seen; }));
  EXPECT_EQ(target_status(app, up.port())["breaker"].as_string(), "open");
  // Next probe succeeds: closed, traffic flows.
  seen = up.requests();
  ASSERT_TRUE(eventually([&] { return request(app.port(), "GET", "/ok").status == 200; }));
  EXPECT_EQ(target_status(app, up.port())["breaker"].as_string(), "closed");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(request(app.port(), "GET", "/ok").status, 200);
}

TEST(Gateway, HealthChecksTakeAFailingTargetOutAndPutItBackWhenItRecovers) {
  TestUpstream a("a"), b("b");
  App app(gateway_app("  upstreams:\n"
                      "    up:\n      targets: [" + url(a.port()) + ", " + url(b.port()) + "]\n"
                      "      health_check: {path: /healthz, interval: 50ms, timeout: 500ms, unhealthy: 2, healthy: 2}\n"
                      "  routes:\n"
                      "    - {path: \"/{*rest}\", upstream: up}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  ASSERT_TRUE(eventually([&] { return a.health_checks() >= 2 && b.health_checks() >= 2; }));
  b.set_healthy(false);
  ASSERT_TRUE(eventually([&] { return !target_status(app, b.port())["healthy"].as_bool(); }));
  int b_before = b.requests();
  for (int i = 0; i < 20; ++i) EXPECT_EQ(request(app.port(), "GET", "/x").status, 200);
  EXPECT_EQ(b.requests(), b_before);
  // Both out: 503 with a JSON error and Retry-After.
  a.set_healthy(false);
  ASSERT_TRUE(eventually([&] { return !target_status(app, a.port())["healthy"].as_bool(); }));
  Response r = request(app.port(), "GET", "/x");
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(parse_object(r.body)["error"].as_object()["code"].as_string(), "no_healthy_upstream");
  EXPECT_EQ(r.header("retry-after"), "1");
  b.set_healthy(true);
  a.set_healthy(true);
  ASSERT_TRUE(eventually([&] { return target_status(app, b.port())["healthy"].as_bool() &&
                                      target_status(app, a.port())["healthy"].as_bool(); }));
  b_before = b.requests();
  for (int i = 0; i < 20; ++i) EXPECT_EQ(request(app.port(), "GET", "/x").status, 200);
  EXPECT_NEAR(b.requests() - b_before, 10, 1);
}

TEST(Gateway, CorsPreflightsAreAnsweredAndRepliesCarryTheAllowHeadersForFunctionsAndUpstreams) {
  TestUpstream up("up");
  App app(gateway_app("  cors: {origins: [\"https://app.example.com\"], expose: [x-total], max_age: 1m}\n"
                      "  upstreams:\n    up: " + url(up.port()) + "\n"
                      "  routes:\n"
                      "    - {path: \"/open/{*rest}\", upstream: up, cors: {origins: \"*\"}}\n"
                      "    - {path: \"/orders/{id}\", methods: [GET, PUT], function: echo}\n"
                      "    - {path: \"/{*rest}\", upstream: up}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const std::string origin = "https://app.example.com";
  Response pre = request(app.port(), "OPTIONS", "/orders/7",
                         {{"Origin", origin}, {"Access-Control-Request-Method", "PUT"},
                          {"Access-Control-Request-Headers", "content-type"}});
  EXPECT_EQ(pre.status, 204) << pre.body;
  EXPECT_EQ(pre.header("access-control-allow-origin"), origin);
  EXPECT_EQ(pre.header("access-control-allow-methods"), "GET, PUT");
  EXPECT_EQ(pre.header("access-control-allow-headers"), "content-type");
  EXPECT_EQ(pre.header("access-control-max-age"), "60");
  // Another origin, or a method the route does not take: 403 with a JSON error.
  Response denied = request(app.port(), "OPTIONS", "/orders/7", {{"Origin", "https://evil.example"}, {"Access-Control-Request-Method", "PUT"}});
  EXPECT_EQ(denied.status, 403);
  EXPECT_EQ(parse_object(denied.body)["error"].as_object()["code"].as_string(), "cors_origin_not_allowed");
  // DELETE /orders/7 is not the function route's method: the preflight answers for the route
  // the DELETE would take (the catch-all upstream, any method).
  Response del = request(app.port(), "OPTIONS", "/orders/7", {{"Origin", origin}, {"Access-Control-Request-Method", "DELETE"}});
  EXPECT_EQ(del.status, 204);
  EXPECT_NE(del.header("access-control-allow-methods").find("DELETE"), std::string::npos);
  // The function's reply and the upstream's carry the allow headers; no Origin, no headers.
  Response fn_reply = request(app.port(), "GET", "/orders/7", {{"Origin", origin}});
  EXPECT_EQ(fn_reply.status, 200);
  EXPECT_EQ(fn_reply.header("access-control-allow-origin"), origin);
  EXPECT_EQ(fn_reply.header("access-control-expose-headers"), "x-total");
  EXPECT_EQ(fn_reply.header("vary"), "Origin");
  Response up_reply = request(app.port(), "GET", "/x", {{"Origin", origin}});
  EXPECT_EQ(up_reply.header("access-control-allow-origin"), origin);
  EXPECT_EQ(request(app.port(), "GET", "/x").header("access-control-allow-origin"), "");
  EXPECT_EQ(request(app.port(), "GET", "/x", {{"Origin", "https://evil.example"}}).header("access-control-allow-origin"), "");
  // A route's own policy: any origin.
  EXPECT_EQ(request(app.port(), "GET", "/open/x", {{"Origin", "https://evil.example"}}).header("access-control-allow-origin"), "*");
  // The app-wide policy covers the functions' own http triggers too.
  EXPECT_EQ(request(app.port(), "GET", "/hello", {{"Origin", origin}}).header("access-control-allow-origin"), origin);
  // The upstream never saw a preflight.
  for (const auto& s : up.seen()) EXPECT_NE(s.method, "OPTIONS");
}

TEST(Gateway, RateLimitsRefuseWith429AndRetryAfterPerClientOrPerKey) {
  TestUpstream up("up");
  App app(gateway_app("  upstreams:\n    up: " + url(up.port()) + "\n"
                      "  routes:\n"
                      "    - {path: \"/keyed/{*rest}\", upstream: up, rate_limit: {rate: 3/m, per: \"header:x-api-key\"}}\n"
                      "    - {path: \"/orders/{id}\", function: echo, rate_limit: {rate: 5/m}}\n"
                      "    - {path: \"/{*rest}\", upstream: up, rate_limit: {rate: 2/h, burst: 4}}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  for (int i = 0; i < 4; ++i) {
    Response r = request(app.port(), "GET", "/x");
    EXPECT_EQ(r.status, 200) << i;
    EXPECT_EQ(r.header("ratelimit-limit"), "4");
    EXPECT_EQ(r.header("ratelimit-remaining"), std::to_string(3 - i));
  }
  int before = up.requests();
  Response limited = request(app.port(), "GET", "/x");
  EXPECT_EQ(limited.status, 429);
  EXPECT_EQ(parse_object(limited.body)["error"].as_object()["code"].as_string(), "rate_limited");
  EXPECT_EQ(limited.header("retry-after"), "1800");  // 2 an hour: one every 30 minutes
  EXPECT_EQ(limited.header("ratelimit-remaining"), "0");
  EXPECT_EQ(up.requests(), before);  // refused at the gateway
  // Function routes too.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(request(app.port(), "GET", "/orders/1").status, 200);
  EXPECT_EQ(request(app.port(), "GET", "/orders/1").status, 429);
  // Per key: each key has its own bucket.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(request(app.port(), "GET", "/keyed/a", {{"X-Api-Key", "alice"}}).status, 200);
  EXPECT_EQ(request(app.port(), "GET", "/keyed/a", {{"X-Api-Key", "alice"}}).status, 429);
  EXPECT_EQ(request(app.port(), "GET", "/keyed/a", {{"X-Api-Key", "bob"}}).status, 200);
}

TEST(Gateway, JwtRoutesLetValidTokensThroughWithTheirClaimsAndRefuseTheRestWithAChallenge) {
  TestUpstream up("up");
  TestKey rsa = TestKey::rsa("r1"), ec = TestKey::ec("e1");
  TempDir keys;
  keys.write("jwks.json", jwks({&rsa, &ec}));
  App app(gateway_app("  jwt: {issuer: https://auth.test, audience: shop, jwks_file: " + (keys.path() / "jwks.json").string() +
                      "}\n  upstreams:\n    up: " + url(up.port()) + "\n"
                      "  routes:\n"
                      "    - {path: \"/orders/{id}\", function: echo, auth: jwt}\n"
                      "    - {path: \"/admin/{*rest}\", upstream: up, jwt: {scopes: [admin]}}\n"
                      "    - {path: \"/{*rest}\", upstream: up, auth: jwt}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  json::object claims{{"sub", "alice"}, {"iss", "https://auth.test"}, {"aud", "shop"}, {"exp", now + 600}, {"scope", "orders"}};
  const std::string bearer = "Bearer " + rsa.token(claims);

  // The upstream gets the claims (and never a client's own X-Nimbus-Claims).
  Response r = request(app.port(), "GET", "/x", {{"Authorization", bearer}, {"X-Nimbus-Claims", "{\"sub\":\"root\"}"},
                                                {"X_Nimbus_Claims", "{\"sub\":\"root\"}"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(parse_object(r.body)["headers"].as_object().contains("x_nimbus_claims"));  // CGI would read it as the same
  auto seen = parse_object(parse_object(r.body)["headers"].as_object()["x-nimbus-claims"].as_string().c_str());
  EXPECT_EQ(seen["sub"].as_string(), "alice");
  // So does a function.
  r = request(app.port(), "GET", "/orders/5", {{"Authorization", "Bearer " + ec.token(claims)}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(parse_object(r.body)["headers"].as_object()["x-nimbus-claims"].as_string().find("alice"), std::string::npos);
  // No token, a bad one, an expired one: 401 with a JSON error and a Bearer challenge.
  const int before = up.requests();
  Response none = request(app.port(), "GET", "/x");
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(parse_object(none.body)["error"].as_object()["code"].as_string(), "unauthorized");
  EXPECT_NE(none.header("www-authenticate").find("Bearer realm=\"nimbus\", error=\"invalid_request\""), std::string::npos)
      << none.header("www-authenticate");
  Response forged = request(app.port(), "GET", "/x", {{"Authorization", "Bearer " + TestKey::rsa("r1").token(claims)}});
  EXPECT_EQ(forged.status, 401);
  EXPECT_NE(forged.header("www-authenticate").find("invalid_token"), std::string::npos);
  auto old = claims;
  old["exp"] = now - 3600;
  Response expired = request(app.port(), "GET", "/x", {{"Authorization", "Bearer " + rsa.token(old)}});
  EXPECT_EQ(expired.status, 401);
  EXPECT_NE(expired.body.find("expired"), std::string::npos);
  // A valid token without the route's scope: 403 insufficient_scope.
  Response scope = request(app.port(), "GET", "/admin/x", {{"Authorization", bearer}});
  EXPECT_EQ(scope.status, 403);
  EXPECT_NE(scope.header("www-authenticate").find("insufficient_scope"), std::string::npos);
  EXPECT_EQ(up.requests(), before);  // none of those reached the upstream
  // No spelling of the path slips past the admin route: dot segments and escapes of
  // unreserved characters are resolved before routing; an encoded slash is refused.
  for (const char* sneaky : {"/x/../admin/users", "/%61dmin/users", "/./admin/users", "/admin/./users"}) {
    Response r2 = request(app.port(), "GET", sneaky, {{"Authorization", bearer}});
    EXPECT_EQ(r2.status, 403) << sneaky << " " << r2.body;
  }
  Response slash = request(app.port(), "GET", "/admin%2Fusers", {{"Authorization", bearer}});
  EXPECT_EQ(slash.status, 400);
  EXPECT_EQ(parse_object(slash.body)["error"].as_object()["code"].as_string(), "bad_path");
  EXPECT_EQ(up.requests(), before);
  auto admin = claims;
  admin["scope"] = "orders admin";
  EXPECT_EQ(request(app.port(), "GET", "/admin/x", {{"Authorization", "Bearer " + rsa.token(admin)}}).status, 200);
  // What the upstream got is the resolved path.
  Response resolved = request(app.port(), "GET", "/a/b/../c/%7Euser", {{"Authorization", bearer}});
  EXPECT_EQ(parse_object(resolved.body)["target"].as_string(), "/a/c/~user");
}

TEST(Gateway, StaticFilesServeAWebFrontEndWithETagsRangesAndAnSpaFallback) {
  TempDir site;
  const std::string index = "<!doctype html><title>shop</title><script src=/app.js></script>";
  std::string js(1000, 'x');
  for (std::size_t i = 0; i < js.size(); ++i) js[i] = static_cast<char>('a' + i % 26);
  site.write("index.html", index);
  site.write("app.js", js);
  site.write("img/logo.svg", "<svg/>");
  site.write(".env", "SECRET=1");
  site.write(".git/config", "[core]");
  std::filesystem::create_symlink("/etc/hostname", site.path() / "leak.txt");
  App app(gateway_app("  compression: {min_size: 200}\n"
                      "  routes:\n"
                      "    - {path: \"/orders/{id}\", function: echo}\n"
                      "    - {path: \"/{*path}\", static: {dir: " + site.path().string() + ", spa: true, max_age: 1h}}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  Response r = request(app.port(), "GET", "/");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, index);
  EXPECT_EQ(r.header("content-type"), "text/html; charset=utf-8");
  EXPECT_EQ(r.header("cache-control"), "no-cache");
  const std::string etag = r.header("etag");
  ASSERT_FALSE(etag.empty());
  // Revalidation: 304, no body.
  Response again = request(app.port(), "GET", "/", {{"If-None-Match", etag}});
  EXPECT_EQ(again.status, 304);
  EXPECT_TRUE(again.body.empty());
  Response a = request(app.port(), "GET", "/app.js");
  EXPECT_EQ(a.body, js);
  EXPECT_EQ(a.header("content-type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(a.header("cache-control"), "public, max-age=3600");
  EXPECT_EQ(request(app.port(), "GET", "/img/logo.svg").header("content-type"), "image/svg+xml");
  // Ranges: one range is 206 with Content-Range; past the end is 416.
  Response part = request(app.port(), "GET", "/app.js", {{"Range", "bytes=10-19"}});
  EXPECT_EQ(part.status, 206);
  EXPECT_EQ(part.body, js.substr(10, 10));
  EXPECT_EQ(part.header("content-range"), "bytes 10-19/1000");
  EXPECT_EQ(request(app.port(), "GET", "/app.js", {{"Range", "bytes=-5"}}).body, js.substr(995));
  Response past = request(app.port(), "GET", "/app.js", {{"Range", "bytes=5000-"}});
  EXPECT_EQ(past.status, 416);
  EXPECT_EQ(past.header("content-range"), "bytes */1000");
  // HEAD: the length, no body.
  std::string head = send_raw(app.port(), "HEAD /app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_NE(head.find("Content-Length: 1000"), std::string::npos) << head;
  EXPECT_EQ(head.find("abcdef"), std::string::npos);
  // The SPA fallback: a client-side route gets the index; a missing asset is 404.
  EXPECT_EQ(request(app.port(), "GET", "/account/settings").body, index);
  EXPECT_EQ(request(app.port(), "GET", "/missing.png").status, 404);
  // The API beside it still goes to its function; writes to files are 405.
  EXPECT_EQ(parse_object(request(app.port(), "GET", "/orders/3").body)["params"].as_object()["id"].as_string(), "3");
  Response post = request(app.port(), "POST", "/app.js", {}, "x");
  EXPECT_EQ(post.status, 405);
  EXPECT_EQ(post.header("allow"), "GET, HEAD");
  // Compression for clients that ask: gzip or br, decoded back to the same bytes; the ETag
  // turns weak; small bodies (the index) and ranges stay as they are.
  Response gz = request(app.port(), "GET", "/app.js", {{"Accept-Encoding", "gzip, deflate"}});
  EXPECT_EQ(gz.header("content-encoding"), "gzip");
  EXPECT_EQ(gz.header("vary"), "Accept-Encoding");
  EXPECT_EQ(gz.header("etag"), "W/" + a.header("etag"));
  EXPECT_LT(gz.body.size(), js.size());
  std::string inflated(js.size() * 2, '\0');
  z_stream z{};
  inflateInit2(&z, 15 + 16);
  z.next_in = reinterpret_cast<Bytef*>(gz.body.data());
  z.avail_in = static_cast<uInt>(gz.body.size());
  z.next_out = reinterpret_cast<Bytef*>(inflated.data());
  z.avail_out = static_cast<uInt>(inflated.size());
  EXPECT_EQ(inflate(&z, Z_FINISH), Z_STREAM_END);
  inflated.resize(z.total_out);
  inflateEnd(&z);
  EXPECT_EQ(inflated, js);
  Response br = request(app.port(), "GET", "/app.js", {{"Accept-Encoding", "gzip;q=0.5, br"}});
  EXPECT_EQ(br.header("content-encoding"), "br");
  std::string decoded(js.size() * 2, '\0');
  std::size_t decoded_size = decoded.size();
  EXPECT_EQ(BrotliDecoderDecompress(br.body.size(), reinterpret_cast<const uint8_t*>(br.body.data()), &decoded_size,
                                    reinterpret_cast<uint8_t*>(decoded.data())),
            BROTLI_DECODER_RESULT_SUCCESS);
  decoded.resize(decoded_size);
  EXPECT_EQ(decoded, js);
  EXPECT_EQ(request(app.port(), "GET", "/app.js", {{"Accept-Encoding", "gzip;q=0"}}).header("content-encoding"), "");
  EXPECT_EQ(request(app.port(), "GET", "/", {{"Accept-Encoding", "gzip"}}).header("content-encoding"), "");
  EXPECT_EQ(request(app.port(), "GET", "/app.js", {{"Accept-Encoding", "gzip"}, {"Range", "bytes=0-499"}}).header("content-encoding"), "");
  // A weak validator still revalidates.
  EXPECT_EQ(request(app.port(), "GET", "/app.js", {{"Accept-Encoding", "gzip"}, {"If-None-Match", gz.header("etag")}}).status, 304);
  // No escape from the folder, whatever the spelling: /etc/passwd is a client-side route here.
  EXPECT_EQ(request(app.port(), "GET", "/../../etc/passwd").body, index);
  EXPECT_EQ(request(app.port(), "GET", "/%2e%2e/%2e%2e/etc/passwd").body, index);
  EXPECT_EQ(request(app.port(), "GET", "/../../etc/hosts.txt").status, 404);
  // Dotfiles and symlinks are not part of the site.
  EXPECT_EQ(request(app.port(), "GET", "/.env").status, 404);
  EXPECT_EQ(request(app.port(), "GET", "/.git/config").body, index);  // a client-side route: the index, not the file
  EXPECT_EQ(request(app.port(), "GET", "/leak.txt").status, 404);
}

TEST(Gateway, ApiKeysAreMadeOnceKeptHashedCheckedWithQuotasAndRevokedEverywhere) {
  TestUpstream up("up");
  App app(gateway_app("  upstreams:\n    up: " + url(up.port()) + "\n"
                      "  routes:\n"
                      "    - {path: \"/orders/{id}\", function: echo, auth: api_key}\n"
                      "    - {path: \"/{*rest}\", upstream: up, auth: api_key}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  const auto dir = app.dir.path().string();
  CommandResult made = run_nimbus({"keys", "--dir", dir, "create", "partner-a"}, app.dir.path());
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const std::string key = made.out.substr(0, made.out.find('\n'));
  ASSERT_EQ(key.rfind("nk_", 0), 0u) << made.out;
  CommandResult limited = run_nimbus({"keys", "--dir", dir, "create", "trial", "--quota", "3/h"}, app.dir.path());
  ASSERT_EQ(limited.exit_code, 0) << limited.err;
  const std::string trial = limited.out.substr(0, limited.out.find('\n'));
  // The store keeps a hash, never the key; a second key by one name is refused.
  Admin admin{app.admin(), app.host->admin_token()};
  EXPECT_EQ(admin.call("GET", "/admin/keys").body.find(key.substr(key.find('.') + 1)), std::string::npos);
  EXPECT_EQ(admin.call("POST", "/admin/keys", "{\"name\":\"trial\"}").status, 409);
  CommandResult ls = run_nimbus({"keys", "--dir", dir, "ls"}, app.dir.path());
  EXPECT_NE(ls.out.find("partner-a"), std::string::npos);
  EXPECT_NE(ls.out.find("3/h"), std::string::npos);

  // Within a second every host knows the new keys; the upstream gets the key's name, not the key.
  Response r;
  ASSERT_TRUE(eventually([&] { return (r = request(app.port(), "GET", "/x", {{"X-Api-Key", key}})).status == 200; }, 5000));
  auto headers = parse_object(r.body)["headers"].as_object();
  EXPECT_FALSE(headers.contains("x-api-key"));
  EXPECT_EQ(parse_object(std::string(headers["x-nimbus-claims"].as_string()))["api_key"].as_string(), "partner-a");
  r = request(app.port(), "GET", "/orders/4", {{"X-Api-Key", key}});
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(parse_object(r.body)["headers"].as_object().contains("x-api-key"));
  // Missing, wrong, or forged: 401 with a challenge.
  Response none = request(app.port(), "GET", "/x");
  EXPECT_EQ(none.status, 401);
  EXPECT_NE(none.header("www-authenticate").find("ApiKey"), std::string::npos);
  EXPECT_EQ(request(app.port(), "GET", "/x", {{"X-Api-Key", key.substr(0, key.size() - 2) + "xx"}}).status, 401);
  EXPECT_EQ(request(app.port(), "GET", "/x", {{"X-Api-Key", "nk_000000000000.abc"}}).status, 401);
  // A quota: three an hour, then 429 with Retry-After.
  for (int i = 0; i < 3; ++i) EXPECT_EQ(request(app.port(), "GET", "/x", {{"X-Api-Key", trial}}).status, 200) << i;
  Response over = request(app.port(), "GET", "/x", {{"X-Api-Key", trial}});
  EXPECT_EQ(over.status, 429);
  EXPECT_EQ(over.header("retry-after"), "1200");
  // Revoked: refused within about a second.
  CommandResult revoked = run_nimbus({"keys", "--dir", dir, "revoke", "partner-a"}, app.dir.path());
  EXPECT_EQ(revoked.exit_code, 0) << revoked.err;
  EXPECT_TRUE(eventually([&] { return request(app.port(), "GET", "/x", {{"X-Api-Key", key}}).status == 401; }, 5000));
  EXPECT_NE(run_nimbus({"keys", "--dir", dir, "revoke", "nobody"}, app.dir.path()).exit_code, 0);
}

TEST(Gateway, AReloadRetiresTheOldUpstreamsAndTheHostStillStopsPromptly) {
  TestUpstream a("a"), b("b");
  auto manifest = [&](int port) {
    return gateway_app("  upstreams:\n    up:\n      targets: [" + url(port) + "]\n"
                       "      health_check: {path: /healthz, interval: 20ms}\n"
                       "  routes:\n    - {path: \"/{*rest}\", upstream: up}\n");
  };
  App app(manifest(a.port()));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  ASSERT_TRUE(eventually([&] { return a.health_checks() >= 3; }));
  EXPECT_EQ(parse_object(request(app.port(), "GET", "/x").body)["server"].as_string(), "a");
  app.dir.write("nimbus.yaml", manifest(b.port()));
  CommandResult reload = run_nimbus({"reload", "--dir", app.dir.path().string()}, app.dir.path());
  ASSERT_EQ(reload.exit_code, 0) << reload.err;
  EXPECT_EQ(parse_object(request(app.port(), "GET", "/x").body)["server"].as_string(), "b");
  // The old upstream's health checks stop at once, though one loop may not have let go of
  // the old table yet (it has served no request since).
  const int checks = a.health_checks();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_LE(a.health_checks(), checks + 1);
  EXPECT_TRUE(eventually([&] { return b.health_checks() >= 3; }));
  // And the host stops within its grace, with nothing left on its loops.
  auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(app.host->signal_and_wait(SIGTERM), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  EXPECT_NE(app.host->output().find("\"msg\":\"stopped\""), std::string::npos);
}

TEST(Gateway, AManifestThatProxiesWrongSaysWhatAndWhere) {
  TempDir dir;
  auto check = [&](const std::string& gateway, const std::string& expect) {
    dir.write("nimbus.yaml", gateway_app(gateway));
    CommandResult r = run_nimbus({"validate", dir.path().string()}, dir.path());
    EXPECT_NE(r.exit_code, 0) << gateway;
    EXPECT_NE((r.out + r.err).find(expect), std::string::npos) << r.out << r.err;
  };
  check("  routes:\n    - {path: /x, upstream: https://example.com}\n", "TLS to upstreams is not built yet");
  check("  routes:\n    - {path: /x, upstream: nowhere}\n", "'nowhere' is not an upstream under gateway.upstreams");
  check("  routes:\n    - {path: /x, function: nope}\n", "'nope' is not a function of this app");
  check("  routes:\n    - {path: /x, function: echo, upstream: http://127.0.0.1:1}\n", "names more than one target");
  check("  routes:\n    - {path: \"/a/{id}\", upstream: \"http://127.0.0.1:1\", rewrite: \"/b/{other}\"}\n",
        "uses {other}, which is not a parameter");
  check("  routes:\n    - {path: /hello, methods: [GET], upstream: \"http://127.0.0.1:1\"}\n",
        "which function 'hello' already serves");
  check("  routes:\n    - {path: /x, upstream: \"http://127.0.0.1:99999\"}\n", "expected a number from 1 to 65535");
  check("  routes:\n    - {path: /x, upstream: \"http://127.0.0.1:1\", headers: {set: {content-length: 5}}}\n",
        "is managed by the proxy");
  check("  routes:\n    - {path: /x, upstream: \"http://127.0.0.1:1\", rate_limit: {rate: lots}}\n", "is not a rate");
  check("  cors: {origins: [app.example.com]}\n", "is not an origin");
  check("  cors: {origins: \"*\", credentials: true}\n", "which browsers refuse");
  check("  routes:\n    - {path: /x, upstream: \"http://127.0.0.1:1\", auth: jwt}\n", "gateway.jwt is not set");
  check("  jwt: {secret: short}\n", "expected at least 32");
  check("  rate_limits: {sync: 1ms}\n", "gateway.rate_limits.sync: is 1ms; expected 10ms to 1m");
  check("  rate_limits: {shared: sometimes}\n", "gateway.rate_limits.shared");
  check("  rate_limits: {every: 1s}\n", "every");
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// How many times `needle` occurs in `text`.
int occurrences(const std::string& text, const std::string& needle) {
  int n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(Gateway, CachedRoutesServeRepeatsFromMemoryAsHttpCachingAllows) {
  TestUpstream up("up");
  TempDir code;
  code.write("fresh.py", R"PY(
import uuid
from nimbus import Response

def handle(req, ctx):
    # A new body each time it runs: a repeated body is a cache hit. ?cc= and ?cookie= shape the reply.
    headers = {}
    if req.query.get("cc"):
        headers["Cache-Control"] = req.query["cc"]
    if req.query.get("cookie"):
        headers["Set-Cookie"] = "session=" + req.query["cookie"]
    return Response(uuid.uuid4().hex, headers=headers)
)PY");
  App app("name: gw\ngateway:\n  upstreams:\n    up: " + url(up.port()) +
          "\n  routes:\n"
          "    - path: /cached/{*rest}\n      upstream: up\n"
          "      cache: {ttl: 60s, key: [query, \"header:accept-language\"]}\n"
          "      rate_limit: {rate: 1000/s, burst: 1000, per: route}\n"
          "      cors: {origins: [\"https://app.example.com\"]}\n"
          "    - {path: /fresh, function: fresh, cache: 60s}\n"
          "    - {path: \"/plain/{*rest}\", upstream: up}\n"
          "functions:\n  fresh:\n    runtime: python\n    handler: " + (code.path() / "fresh.py").string() +
          ":handle\n    triggers: []\n");
  ASSERT_TRUE(app.host->started()) << app.host->errors();

  // The second GET is served from memory: the upstream sees one.
  Response first = request(app.port(), "GET", "/cached/a?x=1");
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(first.header("cache-status"), "nimbus; fwd=miss; stored");
  Response second = request(app.port(), "GET", "/cached/a?x=1");
  EXPECT_EQ(second.body, first.body);
  EXPECT_NE(second.header("cache-status").find("nimbus; hit"), std::string::npos) << second.header("cache-status");
  EXPECT_EQ(second.header("age"), "0");
  EXPECT_EQ(up.requests(), 1);
  // HEAD is answered from the GET's entry.
  Response head = request(app.port(), "HEAD", "/cached/a?x=1");
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(up.requests(), 1);
  // What the key names makes another entry: the query, the Accept-Language.
  request(app.port(), "GET", "/cached/a?x=2");
  EXPECT_EQ(up.requests(), 2);
  request(app.port(), "GET", "/cached/a?x=1", {{"Accept-Language", "fr"}});
  EXPECT_EQ(up.requests(), 3);
  request(app.port(), "GET", "/cached/a?x=1", {{"Accept-Language", "fr"}});
  EXPECT_EQ(up.requests(), 3);
  // A client's no-cache fetches anew (and the new reply is kept); no-store passes by the cache.
  request(app.port(), "GET", "/cached/a?x=1", {{"Cache-Control", "no-cache"}});
  EXPECT_EQ(up.requests(), 4);
  request(app.port(), "GET", "/cached/a?x=1", {{"Cache-Control", "no-store"}});
  EXPECT_EQ(up.requests(), 5);
  request(app.port(), "GET", "/cached/a?x=1");
  EXPECT_EQ(up.requests(), 5);
  // Other methods are never cached; a request with credentials is not kept (no public reply).
  request(app.port(), "POST", "/cached/a?x=1", {{"Content-Type", "text/plain"}}, "b");
  request(app.port(), "POST", "/cached/a?x=1", {{"Content-Type", "text/plain"}}, "b");
  EXPECT_EQ(up.requests(), 7);
  request(app.port(), "GET", "/cached/private", {{"Authorization", "Bearer x"}});
  request(app.port(), "GET", "/cached/private", {{"Authorization", "Bearer x"}});
  EXPECT_EQ(up.requests(), 9);
  // A cookie is credentials too; a range passes by the cache (the upstream sees both).
  request(app.port(), "GET", "/cached/session", {{"Cookie", "sid=a"}});
  request(app.port(), "GET", "/cached/session", {{"Cookie", "sid=b"}});
  request(app.port(), "GET", "/cached/a?x=1", {{"Range", "bytes=0-0"}});
  EXPECT_EQ(up.requests(), 12);
  EXPECT_NE(request(app.port(), "GET", "/cached/a?x=1").header("cache-status").find("hit"), std::string::npos);
  // A route without cache: is never cached.
  request(app.port(), "GET", "/plain/a");
  request(app.port(), "GET", "/plain/a");
  EXPECT_EQ(up.requests(), 14);
  // An upstream's Vary is honoured: TestUpstream replies vary on nothing, so check by key
  // parts above; a hit on another loop's connection (a new connection each time) still hits.
  // The gateway's own headers (CORS, rate limits) are made anew on a hit, once each.
  const std::string cors_request =
      "GET /cached/cors HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example.com\r\nConnection: close\r\n\r\n";
  send_raw(app.port(), cors_request);
  std::string raw = send_raw(app.port(), cors_request);
  EXPECT_NE(raw.find("nimbus; hit"), std::string::npos) << raw;
  EXPECT_EQ(occurrences(raw, "ratelimit-remaining"), 1) << raw;
  EXPECT_EQ(occurrences(raw, "access-control-allow-origin"), 1) << raw;
  EXPECT_EQ(occurrences(raw, "vary: Origin"), 1) << raw;

  // A function route, and what its reply's Cache-Control says.
  std::string body = request(app.port(), "GET", "/fresh").body;
  EXPECT_EQ(request(app.port(), "GET", "/fresh").body, body);
  std::string no_store = request(app.port(), "GET", "/fresh?cc=no-store").body;
  EXPECT_NE(request(app.port(), "GET", "/fresh?cc=no-store").body, no_store) << "no-store: never kept";
  std::string priv = request(app.port(), "GET", "/fresh?cc=private").body;
  EXPECT_NE(request(app.port(), "GET", "/fresh?cc=private").body, priv);
  std::string cookie = request(app.port(), "GET", "/fresh?cookie=1").body;
  EXPECT_NE(request(app.port(), "GET", "/fresh?cookie=1").body, cookie) << "a reply that sets a cookie is one client's";
  std::string shared = request(app.port(), "GET", "/fresh?cc=public", {{"Authorization", "Bearer y"}}).body;
  EXPECT_EQ(request(app.port(), "GET", "/fresh?cc=public", {{"Authorization", "Bearer y"}}).body, shared)
      << "public: kept even for a request with credentials";

  auto stats = parse_object(request(app.admin(), "GET", "/admin/cache", {{"Authorization", "Bearer " + app.host->admin_token()}}).body);
  EXPECT_TRUE(stats["enabled"].as_bool());
  EXPECT_GE(stats["hits"].as_int64(), 6);
  EXPECT_GE(stats["entries"].as_int64(), 4);
}

}  // namespace
}  // namespace nimbus::testing

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/websocket.hpp>

namespace nimbus::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;

// A WebSocket client (Beast's) through the gateway, with a 10 s bound on each read.
struct WsClient {
  explicit WsClient(int port) : ws(ioc) {
    asio::ip::tcp::socket& s = ws.next_layer();
    s.connect({asio::ip::address_v4::loopback(), static_cast<unsigned short>(port)});
    s.set_option(asio::ip::tcp::no_delay(true));
    timeval tv{10, 0};
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    host = "127.0.0.1:" + std::to_string(port);
  }
  std::string read() {
    beast::flat_buffer b;
    ws.read(b);
    return beast::buffers_to_string(b.data());
  }
  asio::io_context ioc;
  websocket::stream<asio::ip::tcp::socket> ws;
  std::string host;
};

TEST(Gateway, WebSocketsPassThroughToTheUpstreamBothWaysAndEndWithEitherSide) {
  TestUpstream up("up");
  App app(gateway_app("  upstreams:\n    up: {targets: [" + url(up.port()) + "], websocket_idle: 1s}\n"
                      "  routes:\n    - {path: \"/ws/{*rest}\", upstream: up}\n    - {path: /refuse-upgrade, upstream: up}\n"
                      "    - {path: /wrong-upgrade, upstream: up}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();

  WsClient c(app.port());
  websocket::response_type handshake;
  c.ws.handshake(handshake, c.host, "/ws/chat?room=1");  // Beast checks Sec-WebSocket-Accept
  EXPECT_EQ(handshake.result_int(), 101);
  EXPECT_EQ(std::string(handshake["x-upstream"]), "up");
  EXPECT_EQ(c.read(), "hello from up") << "what the upstream sent with its 101 arrives first";
  // Messages both ways, in order, small and large (several frames of the tunnel's buffer).
  for (int i = 0; i < 200; ++i) {
    const std::string m = "message " + std::to_string(i) + std::string(static_cast<std::size_t>(i % 7) * 1000, 'x');
    c.ws.write(asio::buffer(m));
    ASSERT_EQ(c.read(), "echo:" + m) << i;
  }
  const std::string big(300 * 1024, 'b');
  c.ws.binary(true);
  c.ws.write(asio::buffer(big));
  EXPECT_EQ(c.read(), "echo:" + big);
  c.ws.close(websocket::close_code::normal);
  auto seen = up.seen();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].target, "/ws/chat?room=1");
  EXPECT_EQ(seen[0].headers["upgrade"], "websocket");
  EXPECT_EQ(seen[0].headers["x-forwarded-for"], "127.0.0.1");
  EXPECT_FALSE(seen[0].headers["sec-websocket-key"].empty());

  // The upstream closing ends the client's connection.
  WsClient closing(app.port());
  closing.ws.handshake(closing.host, "/ws/x");
  EXPECT_EQ(closing.read(), "hello from up");
  closing.ws.write(asio::buffer(std::string("close-now")));
  beast::flat_buffer b;
  boost::system::error_code ec;
  closing.ws.read(b, ec);
  EXPECT_EQ(ec, websocket::error::closed) << ec.message();

  // An upstream that does not switch: the client gets its reply, and plain HTTP goes on.
  WsClient refused(app.port());
  websocket::response_type no;
  refused.ws.handshake(no, refused.host, "/refuse-upgrade", ec);
  EXPECT_EQ(ec, websocket::error::upgrade_declined) << ec.message();
  EXPECT_EQ(no.result_int(), 200);
  EXPECT_EQ(up.seen().back().target, "/refuse-upgrade");
  // An upstream that switches to another protocol than the one asked for: 502.
  Response wrong = request(app.port(), "GET", "/ws/../wrong-upgrade",
                           {{"Connection", "Upgrade"}, {"Upgrade", "websocket"}, {"Sec-WebSocket-Version", "13"},
                            {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}});
  EXPECT_EQ(wrong.status, 502) << wrong.body;
  EXPECT_NE(wrong.body.find("switched to 'h2c'"), std::string::npos) << wrong.body;
  EXPECT_EQ(request(app.port(), "GET", "/hello").body, "Hello, World!");

  // Nothing either way for websocket_idle (1 s): the tunnel ends.
  WsClient idle(app.port());
  idle.ws.handshake(idle.host, "/ws/idle");
  EXPECT_EQ(idle.read(), "hello from up");
  const auto t0 = std::chrono::steady_clock::now();
  idle.ws.read(b, ec);
  EXPECT_TRUE(ec);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)) << "closed by the idle timeout, not the client's";
}

TEST(Gateway, OpenWebSocketsDoNotHoldUpAShutdown) {
  TestUpstream up("up");
  App app(gateway_app("  upstreams:\n    up: " + url(up.port()) + "\n  routes:\n    - {path: \"/ws\", upstream: up}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  std::vector<std::unique_ptr<WsClient>> open;
  for (int i = 0; i < 50; ++i) {
    open.push_back(std::make_unique<WsClient>(app.port()));
    open.back()->ws.handshake(open.back()->host, "/ws");
    ASSERT_EQ(open.back()->read(), "hello from up");
  }
  EXPECT_EQ(up.websockets(), 50);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(app.host->signal_and_wait(SIGTERM), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  beast::flat_buffer b;
  boost::system::error_code ec;
  open.front()->ws.read(b, ec);
  EXPECT_TRUE(ec) << "the client sees its connection end";
}

// Sends `get` on a new connection (left open in `fd`) and reads until the first event has
// come: what was read, or "" if the connection failed first.
std::string first_event(int port, const std::string& get, int& fd) {
  fd = connect_to(port);
  if (fd < 0 || ::write(fd, get.data(), get.size()) != static_cast<ssize_t>(get.size())) return {};
  std::string got;
  char buf[4096];
  while (got.find("event 0") == std::string::npos) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return {};
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

// Server-sent event streams never end by themselves: a shutdown ends them cleanly (their last
// chunk, so EventSource reconnects elsewhere) instead of waiting out its grace, while an
// ordinary request in flight is still answered.
TEST(Gateway, OpenEventStreamsAreEndedCleanlyByAShutdownAndRequestsInFlightStillFinish) {
  TestUpstream up("up");
  App app(gateway_app("  upstreams:\n    up: " + url(up.port()) + "\n  routes:\n    - {path: \"/{*rest}\", upstream: up}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  std::vector<int> streams;
  for (int i = 0; i < 10; ++i) {
    int fd = -1;
    ASSERT_FALSE(first_event(app.port(), "GET /events?n=1000&ms=100 HTTP/1.1\r\nHost: x\r\n\r\n", fd).empty());
    streams.push_back(fd);
  }
  Response slow;
  std::thread in_flight([&] { slow = request(app.port(), "GET", "/slow?ms=1500"); });
  ASSERT_TRUE(eventually([&] { return up.requests() >= 11; }, 5000));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(app.host->signal_and_wait(SIGTERM), 0);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5)) << "the shutdown waited for the event streams";
  in_flight.join();
  EXPECT_EQ(slow.status, 200) << "a request in flight is answered before the host stops";
  for (int fd : streams) {
    std::string rest;
    char buf[4096];
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) rest.append(buf, static_cast<std::size_t>(n));
    EXPECT_EQ(n, 0) << "the stream ends with a close, not a reset (" << std::strerror(errno) << ")";
    EXPECT_TRUE(rest.ends_with("0\r\n\r\n")) << "the stream ends with its last chunk: ..." << rest.substr(rest.size() > 40 ? rest.size() - 40 : 0);
    ::close(fd);
  }
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

// The host's resident memory, from /proc.
long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

TEST(Gateway, LargeRepliesAreSentOnAsTheyArriveAndASlowClientSlowsTheUpstreamNotTheHost) {
  TestUpstream up("up");
  // (A timeout well past what the test needs: a loaded machine may start the 400 MB reply late.)
  App app(gateway_app("  upstreams:\n    up: {targets: [" + url(up.port()) + "], max_response: 2GB, timeout: 30s}\n"
                      "  routes:\n    - {path: \"/{*rest}\", upstream: up}\n"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();

  // 30 MB with a length: the same length and bytes arrive.
  Response big = request(app.port(), "GET", "/big?bytes=30000000");
  ASSERT_EQ(big.status, 200);
  EXPECT_EQ(big.header("content-length"), "30000000");
  EXPECT_EQ(big.body.size(), 30000000u);
  EXPECT_EQ(big.body.find_first_not_of('x'), std::string::npos);
  // HEAD: the length a GET would have, and no body.
  std::string head_only = send_raw(app.port(), "HEAD /big?bytes=12345 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_NE(head_only.find("Content-Length: 12345\r\n"), std::string::npos) << head_only;
  EXPECT_TRUE(head_only.ends_with("\r\n\r\n")) << head_only;
  // Chunked from the upstream, past what is held whole: chunked to an HTTP/1.1 client ...
  std::string raw = send_raw(app.port(), "GET /chunked?bytes=300000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_NE(raw.find("Transfer-Encoding: chunked\r\n"), std::string::npos) << raw.substr(0, 300);
  EXPECT_TRUE(raw.ends_with("\r\n0\r\n\r\n"));
  // ... and to HTTP/1.0, the end of the connection ends the body.
  raw = send_raw(app.port(), "GET /chunked?bytes=300000 HTTP/1.0\r\nHost: x\r\n\r\n");
  ASSERT_NE(raw.find("\r\n\r\n"), std::string::npos);
  EXPECT_EQ(raw.find("Transfer-Encoding"), std::string::npos);
  EXPECT_EQ(raw.substr(raw.find("\r\n\r\n") + 4), std::string(300000, 'c'));
  // Small chunked replies that come with their head are held whole (and get a length).
  Response small = request(app.port(), "GET", "/chunked?bytes=1000");
  EXPECT_EQ(small.header("content-length"), "1000");
  // Server-sent events pass as they come: the first long before the last is sent.
  {
    const auto t0 = std::chrono::steady_clock::now();
    int fd = -1;
    std::string got = first_event(app.port(), "GET /events?n=4&ms=400 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", fd);
    ASSERT_FALSE(got.empty());
    char buf[4096];
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(800)) << "the first event waited for the rest";
    EXPECT_NE(got.find("Transfer-Encoding: chunked"), std::string::npos);
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) got.append(buf, static_cast<std::size_t>(n));
    EXPECT_NE(got.find("event 3"), std::string::npos);
    EXPECT_TRUE(got.ends_with("0\r\n\r\n"));
    ::close(fd);
  }
  // A streamed reply hands its upstream connection back: the next request reuses it.
  const int before = up.connections();
  for (int i = 0; i < 5; ++i) ASSERT_EQ(request(app.port(), "GET", "/big?bytes=200000").body.size(), 200000u);
  EXPECT_LE(up.connections() - before, 2) << "streamed replies' connections go back to the pool";

  // An upstream that dies mid-body: the client's connection is cut short, never a whole-looking reply.
  raw = send_raw(app.port(), "GET /truncated?bytes=4000000 HTTP/1.1\r\nHost: x\r\n\r\n", 5000);
  ASSERT_NE(raw.find("\r\n\r\n"), std::string::npos) << raw.substr(0, 200);
  EXPECT_NE(raw.find("Content-Length: 4000000"), std::string::npos) << raw.substr(0, 200);
  EXPECT_LT(raw.size() - raw.find("\r\n\r\n") - 4, 4000000u);
  {  // ... reset, not ended: a FIN would let an HTTP/1.0 client take the part for the whole
    int fd = connect_to(app.port());
    ASSERT_GE(fd, 0);
    const std::string get = "GET /truncated?bytes=4000000 HTTP/1.0\r\nHost: x\r\n\r\n";
    ASSERT_EQ(::write(fd, get.data(), get.size()), static_cast<ssize_t>(get.size()));
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[65536];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) {
    }
    EXPECT_TRUE(n < 0 && errno == ECONNRESET) << "read ended with " << n << " (" << std::strerror(errno) << ")";
    ::close(fd);
  }
  // Held whole (a known length up to 64 KiB), the same failure is a 502 before anything is sent.
  Response cut = request(app.port(), "GET", "/truncated?bytes=40000");
  EXPECT_EQ(cut.status, 502);
  EXPECT_NE(cut.body.find("upstream_reset"), std::string::npos) << cut.body;

  // A client that stops reading a 400 MB reply: the host holds a little of it, not all.
  const long rss_before = rss_kib(app.host->pid());
  int fd = connect_to(app.port());
  ASSERT_GE(fd, 0);
  int small_buf = 64 * 1024;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small_buf, sizeof small_buf);
  const std::string get = "GET /big?bytes=400000000 HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::write(fd, get.data(), get.size()), static_cast<ssize_t>(get.size()));
  char buf[65536];
  std::size_t got = 0;
  std::string start;
  while (got < 1000000) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    ASSERT_GT(n, 0) << "the reply ended after " << got << " bytes: " << start;
    if (start.size() < 300) start.append(buf, std::min<std::size_t>(static_cast<std::size_t>(n), 300));
    got += static_cast<std::size_t>(n);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // the host has time to fill up, if it would
  const long rss_during = rss_kib(app.host->pid());
  EXPECT_LT(rss_during - rss_before, 64 * 1024) << "RSS grew from " << rss_before << " KiB to " << rss_during << " KiB";
  // Meanwhile the host serves others.
  EXPECT_EQ(request(app.port(), "GET", "/hello").status, 200);
  ::close(fd);
}


// ------------------------------------------------------------ request bodies streamed through

// The bytes of a test upload: position i holds (i * 31 + 7) & 0xff.
void upload_bytes(uint64_t from, std::size_t n, std::string& out) {
  out.resize(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<char>(((from + i) * 31 + 7) & 0xff);
}

std::string fnv_of_upload(uint64_t size) {
  uint64_t fnv = 1469598103934665603ull;
  for (uint64_t i = 0; i < size; ++i) fnv = (fnv ^ (((i * 31 + 7) & 0xff))) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv));
  return hex;
}

bool write_all(int fd, const char* data, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}
bool write_all(int fd, const std::string& s) { return write_all(fd, s.data(), s.size()); }

// Writes `size` upload bytes from `from` on, in pieces of `piece` (chunked frames if `chunked`).
bool write_upload(int fd, uint64_t from, uint64_t size, std::size_t piece, bool chunked) {
  std::string buf;
  for (uint64_t at = from; at < from + size;) {
    const std::size_t n = static_cast<std::size_t>(std::min<uint64_t>(piece, from + size - at));
    upload_bytes(at, n, buf);
    if (chunked) {
      char line[24];
      std::snprintf(line, sizeof line, "%zx\r\n", n);
      if (!write_all(fd, line) || !write_all(fd, buf) || !write_all(fd, "\r\n")) return false;
    } else if (!write_all(fd, buf)) {
      return false;
    }
    at += n;
  }
  return !chunked || write_all(fd, "0\r\n\r\n");
}

// One reply read off a raw connection (interim 1xx ones included when `interim`): its status
// line and headers, and a body of its Content-Length.
struct RawReply {
  int status = 0;
  std::string head, body;
};
RawReply read_reply(int fd, std::string& pending, int timeout_ms = 10000) {
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  RawReply r;
  char buf[65536];
  auto more = [&] {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return false;
    pending.append(buf, static_cast<std::size_t>(n));
    return true;
  };
  std::size_t end;
  while ((end = pending.find("\r\n\r\n")) == std::string::npos)
    if (!more()) return r;
  r.head = pending.substr(0, end + 2);
  pending.erase(0, end + 4);
  r.status = std::atoi(r.head.c_str() + 9);
  std::size_t length = 0;
  if (auto at = r.head.find("Content-Length: "); at != std::string::npos) length = std::stoul(r.head.substr(at + 16));
  while (pending.size() < length)
    if (!more()) break;
  r.body = pending.substr(0, std::min(length, pending.size()));
  pending.erase(0, r.body.size());
  return r;
}

long hwm_kib(pid_t pid) {  // the peak resident set since the process started
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

std::string upload_app(int upstream_port, const std::string& timeout = "10s") {
  return "name: gw\nhttp: {max_body: 1GB, read_timeout: 2s}\ngateway:\n  upstreams:\n    up: {targets: [" + url(upstream_port) +
         "], timeout: " + timeout + "}\n  routes:\n"
         "    - {path: /upload, upstream: up}\n"
         "    - {path: /limited-upload, upstream: up, rewrite: /upload, max_body: 100KB}\n"
         "    - {path: /keyed-upload, upstream: up, rewrite: /upload, auth: api_key}\n"
         "    - {path: /fn, function: echo}\n"
         "    - {path: \"/{*rest}\", upstream: up}\n"
         "functions:\n  echo:\n    runtime: native\n    handler: " + fn("echo") + "\n    triggers: []\n";
}

TEST(Gateway, LargeRequestBodiesAreSentOnAsTheyArriveAndTheHostHoldsLittleOfThem) {
  TestUpstream up("up");
  App app(upload_app(up.port()));
  ASSERT_TRUE(app.host->started()) << app.host->errors();

  // 200 MB with a length: the upstream gets every byte, and the host's peak memory hardly moves.
  {
    const long peak_before = hwm_kib(app.host->pid());
    int fd = connect_to(app.port());
    ASSERT_GE(fd, 0);
    constexpr uint64_t kSize = 200'000'000;
    ASSERT_TRUE(write_all(fd, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(kSize) + "\r\n\r\n"));
    ASSERT_TRUE(write_upload(fd, 0, kSize, 1 << 20, false));
    std::string pending;
    RawReply r = read_reply(fd, pending, 30000);
    ASSERT_EQ(r.status, 200) << r.head << r.body;
    auto got = parse_object(r.body);
    EXPECT_EQ(got["bytes"].as_int64(), static_cast<int64_t>(kSize));
    EXPECT_EQ(got["fnv"].as_string(), fnv_of_upload(kSize));
    EXPECT_FALSE(got["chunked"].as_bool());  // its length was passed on
    const long peak_after = hwm_kib(app.host->pid());
    EXPECT_LT(peak_after - peak_before, 64 * 1024) << "peak RSS grew from " << peak_before << " KiB to " << peak_after << " KiB";
    ::close(fd);
  }

  // The upstream sees the first part while the client still holds the rest back; the
  // connection then carries the next request.
  {
    int fd = connect_to(app.port());
    ASSERT_GE(fd, 0);
    const int64_t before = up.upload_bytes();
    ASSERT_TRUE(write_all(fd, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"));
    ASSERT_TRUE(write_upload(fd, 0, 300000, 65536, false));
    EXPECT_TRUE(eventually([&] { return up.upload_bytes() - before >= 200000; }, 5000))
        << "the upstream saw " << up.upload_bytes() - before << " bytes before the body was whole";
    ASSERT_TRUE(write_upload(fd, 300000, 700000, 65536, false));
    std::string pending;
    RawReply r = read_reply(fd, pending);
    ASSERT_EQ(r.status, 200) << r.head << r.body;
    EXPECT_EQ(parse_object(r.body)["fnv"].as_string(), fnv_of_upload(1000000));
    ASSERT_TRUE(write_all(fd, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n"));
    r = read_reply(fd, pending);
    EXPECT_EQ(r.status, 200) << r.head;
    EXPECT_EQ(parse_object(r.body)["target"].as_string(), "/after");
    ::close(fd);
  }

  // Chunked from the client (no length known): chunked to the upstream, every byte.
  {
    int fd = connect_to(app.port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(write_all(fd, "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"));
    ASSERT_TRUE(write_upload(fd, 0, 30'000'000, 1 << 20, true));
    std::string pending;
    RawReply r = read_reply(fd, pending);
    ASSERT_EQ(r.status, 200) << r.head << r.body;
    auto got = parse_object(r.body);
    EXPECT_EQ(got["bytes"].as_int64(), 30'000'000);
    EXPECT_EQ(got["fnv"].as_string(), fnv_of_upload(30'000'000));
    EXPECT_TRUE(got["chunked"].as_bool());
    ::close(fd);
  }

  // Expect: 100-continue: the go-ahead comes when the body is wanted, then the reply.
  {
    int fd = connect_to(app.port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(write_all(fd, "POST /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n"));
    std::string pending;
    RawReply go = read_reply(fd, pending, 3000);
    EXPECT_EQ(go.status, 100) << go.head;
    ASSERT_TRUE(write_upload(fd, 0, 100000, 65536, false));
    RawReply r = read_reply(fd, pending);
    EXPECT_EQ(r.status, 200) << r.head << r.body;
    ::close(fd);
  }
}

TEST(Gateway, AStreamedRequestBodyThatIsRefusedOverLongOrStalledGetsItsOwnStatus) {
  TestUpstream up("up");
  App app(upload_app(up.port()));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  // Refused before the body is read (no key; over the route's limit by its length): the
  // client that waits for 100 Continue gets the refusal instead, the upstream nothing, and
  // the connection ends after the reply.
  const int64_t before = up.upload_bytes();
  for (const std::string& head :
       {std::string("POST /keyed-upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10000000\r\n\r\n"),
        std::string("POST /limited-upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 200000\r\n\r\n")}) {
    int fd = connect_to(app.port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(write_all(fd, head));
    std::string pending;
    RawReply r = read_reply(fd, pending, 5000);
    EXPECT_EQ(r.status, head.find("keyed") != std::string::npos ? 401 : 413) << r.head << r.body;
    EXPECT_NE(r.head.find("Connection: close"), std::string::npos) << r.head;
    ::close(fd);
  }
  EXPECT_EQ(up.upload_bytes(), before);
  // Chunked past the route's limit: 413 once the limit is crossed.
  {
    int fd = connect_to(app.port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(write_all(fd, "POST /limited-upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
    write_upload(fd, 0, 300000, 65536, true);  // the host may stop reading part way
    std::string pending;
    RawReply r = read_reply(fd, pending, 5000);
    EXPECT_EQ(r.status, 413) << r.head << r.body;
    ::close(fd);
  }
  // The upstream answers before it has the body (and stops reading): its answer is the reply.
  {
    int fd = connect_to(app.port());
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(write_all(fd, "POST /refuse-upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n"));
    write_upload(fd, 0, 5'000'000, 65536, false);
    std::string pending;
    RawReply r = read_reply(fd, pending, 10000);
    EXPECT_EQ(r.status, 413) << r.head << r.body;
    EXPECT_NE(r.body.find("too big for me"), std::string::npos) << r.body;
    ::close(fd);
  }
  // A client that stops sending part way: 408 after read_timeout (2 s), and the host goes on.
  {
    int fd = connect_to(app.port());
    ASSERT_GE(fd, 0);
    const auto t0 = std::chrono::steady_clock::now();
    ASSERT_TRUE(write_all(fd, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"));
    ASSERT_TRUE(write_upload(fd, 0, 200000, 65536, false));
    std::string pending;
    RawReply r = read_reply(fd, pending, 8000);
    EXPECT_EQ(r.status, 408) << r.head << r.body;
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(6));
    ::close(fd);
  }
  Response ok = request(app.port(), "GET", "/still-here");
  EXPECT_EQ(ok.status, 200);
}

// Reads every connection in `fds` to its end (poll, bounded by `within`): what each received.
std::vector<std::string> read_all_to_end(const std::vector<int>& fds, std::chrono::milliseconds within) {
  std::vector<std::string> got(fds.size());
  std::vector<bool> open(fds.size(), true);
  std::size_t left = fds.size();
  const auto until = std::chrono::steady_clock::now() + within;
  char buf[16384];
  while (left > 0 && std::chrono::steady_clock::now() < until) {
    std::vector<pollfd> polled;
    std::vector<std::size_t> which;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (!open[i]) continue;
      polled.push_back({fds[i], POLLIN, 0});
      which.push_back(i);
    }
    if (::poll(polled.data(), polled.size(), 200) <= 0) continue;
    for (std::size_t k = 0; k < polled.size(); ++k) {
      if (!(polled[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const std::size_t i = which[k];
      ssize_t n = ::recv(fds[i], buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        got[i].append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        open[i] = false;
        --left;
      }
    }
  }
  return got;
}

// Volume and hostility: thousands of connections through the proxy at once, each answered;
// clients that dribble a head or a body are cut after read_timeout (a body's with a 408);
// and all the while the host answers others promptly.
TEST(Gateway, ThousandsOfProxiedConnectionsAndSlowClientsLeaveTheHostServing) {
  rlimit files{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &files), 0);
  files.rlim_cur = files.rlim_max;  // this process holds the clients' ends and the upstream's
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &files), 0);
  const int connections = static_cast<int>(std::min<rlim_t>(2000, (files.rlim_cur - 200) / 3));
  ASSERT_GE(connections, 300) << "the hard limit on open files is " << files.rlim_max;
  TestUpstream up("up");
  // The test upstream has a thread per connection: 2,000 of them on a loaded, sanitized build
  // may take longer than 10 s to answer, which is not what this test is about.
  App app(upload_app(up.port(), "120s"));
  ASSERT_TRUE(app.host->started()) << app.host->errors();
  auto quick = [&] {
    const auto t0 = std::chrono::steady_clock::now();
    Response r = request(app.port(), "GET", "/fn");
    // Well before the 4 s the proxied requests take (a host that made it wait would take that long).
    return r.status == 200 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2);
  };

  std::vector<int> fds;
  for (int i = 0; i < connections; ++i) {
    int fd = connect_to(app.port());
    ASSERT_GE(fd, 0) << "connection " << i;
    ASSERT_TRUE(write_all(fd, "GET /slow?ms=4000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
    fds.push_back(fd);
  }
  // Once they are all in flight at the upstream (accepting 2,000 takes a while on a sanitized
  // build, and a new client waits behind them in the listen queue), another is answered at once.
  EXPECT_TRUE(eventually([&] { return up.requests() >= connections; }, 30000)) << up.requests() << " reached the upstream";
  EXPECT_TRUE(quick()) << "the host kept another client waiting while " << connections << " were in flight";
  auto replies = read_all_to_end(fds, std::chrono::seconds(120));
  int ok = 0;
  for (const auto& r : replies) ok += r.rfind("HTTP/1.1 200", 0) == 0 ? 1 : 0;
  EXPECT_EQ(ok, connections) << "first failure: " << [&] {
    for (const auto& r : replies)
      if (r.rfind("HTTP/1.1 200", 0) != 0) return r.substr(0, 200);
    return std::string();
  }();
  for (int fd : fds) ::close(fd);

  // Slowloris: half a head, or a head and a little of a large body, then nothing.
  std::vector<int> heads, bodies;
  for (int i = 0; i < 300; ++i) {
    int a = connect_to(app.port()), b = connect_to(app.port());
    ASSERT_GE(a, 0);
    ASSERT_GE(b, 0);
    ASSERT_TRUE(write_all(a, "GET /slow?ms=1 HTTP/1.1\r\nHost: x\r\nX-Slow"));
    ASSERT_TRUE(write_all(b, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + std::string(1000, 'b')));
    heads.push_back(a);
    bodies.push_back(b);
  }
  EXPECT_TRUE(quick()) << "the host kept another client waiting behind 600 slow ones";
  const auto t0 = std::chrono::steady_clock::now();
  auto cut_heads = read_all_to_end(heads, std::chrono::seconds(15));
  auto cut_bodies = read_all_to_end(bodies, std::chrono::seconds(15));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(12)) << "slow clients were not cut after read_timeout";
  int timed_out = 0;
  for (const auto& r : cut_bodies) timed_out += r.rfind("HTTP/1.1 408", 0) == 0 ? 1 : 0;
  EXPECT_EQ(timed_out, 300) << "a body that stops coming is a 408; first other reply: " << [&] {
    for (const auto& r : cut_bodies)
      if (r.rfind("HTTP/1.1 408", 0) != 0) return r.substr(0, 300);
    return std::string();
  }();
  for (int fd : heads) ::close(fd);
  for (int fd : bodies) ::close(fd);
  EXPECT_TRUE(quick());
}

}  // namespace
}  // namespace nimbus::testing
