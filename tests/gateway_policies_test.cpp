// The gateway's policies on their own: token buckets on the injected clock, CORS answers, and
// the paths a route's target sees.
#include <gtest/gtest.h>

#include "core/clock.h"
#include "gateway/gateway.h"
#include "gateway/policies.h"
#include "triggers/http/router.h"

namespace nimbus {
namespace {

RateLimitSpec limit(double rate, double burst) {
  RateLimitSpec s;
  s.rate = rate;
  s.burst = burst;
  s.text = "test";
  return s;
}

std::string header(const std::vector<Header>& hs, const std::string& name) {
  for (const auto& h : hs)
    if (h.name == name) return h.value;
  return "";
}

TEST(RateLimiter, ABucketAllowsItsBurstThenRefillsAtItsRate) {
  ManualClock clock;
  RateLimiter limiter(limit(2, 5), clock);  // 2 a second, 5 at once
  for (int i = 0; i < 5; ++i) {
    auto d = limiter.take("ip:1");
    EXPECT_TRUE(d.allowed) << i;
    EXPECT_EQ(d.remaining, 4 - i);
  }
  auto refused = limiter.take("ip:1");
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after_s, 1);
  EXPECT_EQ(refused.reset_s, 3);  // 5 tokens at 2/s
  std::vector<Header> hs;
  RateLimiter::add_headers(refused, hs);
  EXPECT_EQ(header(hs, "ratelimit-limit"), "5");
  EXPECT_EQ(header(hs, "ratelimit-remaining"), "0");
  EXPECT_EQ(header(hs, "retry-after"), "1");
  // Another client has its own bucket.
  EXPECT_TRUE(limiter.take("ip:2").allowed);
  // Half a second later: one token back, one request.
  clock.advance(std::chrono::milliseconds(500));
  EXPECT_TRUE(limiter.take("ip:1").allowed);
  EXPECT_FALSE(limiter.take("ip:1").allowed);
  // A long pause refills to the burst, not beyond.
  clock.advance(std::chrono::hours(1));
  int allowed = 0;
  for (int i = 0; i < 20; ++i) allowed += limiter.take("ip:1").allowed;
  EXPECT_EQ(allowed, 5);
}

TEST(RateLimiter, SlowRatesWaitWholeSecondsAndTheKeysAreBounded) {
  ManualClock clock;
  RateLimiter slow(limit(1.0 / 60, 1), clock);  // 1/m
  EXPECT_TRUE(slow.take("k").allowed);
  auto d = slow.take("k");
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_s, 60);
  clock.advance(std::chrono::seconds(59));
  EXPECT_FALSE(slow.take("k").allowed);
  clock.advance(std::chrono::seconds(1));
  EXPECT_TRUE(slow.take("k").allowed);

  RateLimiter bounded(limit(100, 100), clock, 1000);
  for (int i = 0; i < 5000; ++i) bounded.take("ip:" + std::to_string(i));
  EXPECT_LE(bounded.keys(), 1000u);
}

TEST(Cors, PreflightsAnswerForAllowedOriginsMethodsAndHeadersOnly) {
  CorsSpec c;
  c.origins = {"https://app.example.com"};
  c.headers = {"content-type", "authorization"};
  c.expose = {"x-total"};
  c.credentials = true;
  c.max_age = std::chrono::minutes(5);
  HttpReply ok = cors_preflight(c, "https://app.example.com", "PUT", "Content-Type, Authorization", {"GET", "PUT"});
  EXPECT_EQ(ok.status, 204);
  EXPECT_EQ(header(ok.headers, "access-control-allow-origin"), "https://app.example.com");
  EXPECT_EQ(header(ok.headers, "access-control-allow-methods"), "GET, PUT");
  EXPECT_EQ(header(ok.headers, "access-control-allow-headers"), "content-type, authorization");
  EXPECT_EQ(header(ok.headers, "access-control-allow-credentials"), "true");
  EXPECT_EQ(header(ok.headers, "access-control-max-age"), "300");
  EXPECT_EQ(header(ok.headers, "vary"), "Origin");
  EXPECT_EQ(cors_preflight(c, "https://evil.example", "PUT", "", {}).status, 403);
  EXPECT_EQ(cors_preflight(c, "https://app.example.com", "DELETE", "", {"GET", "PUT"}).status, 403);
  HttpReply bad_header = cors_preflight(c, "https://app.example.com", "PUT", "x-debug", {"PUT"});
  EXPECT_EQ(bad_header.status, 403);
  EXPECT_NE(bad_header.body.find("x-debug"), std::string::npos);
  // Replies to actual requests.
  EXPECT_EQ(header(cors_reply_headers(c, "https://app.example.com"), "access-control-expose-headers"), "x-total");
  EXPECT_TRUE(cors_reply_headers(c, "https://evil.example").empty());
  CorsSpec any;
  any.origins = {"*"};
  EXPECT_EQ(header(cors_reply_headers(any, "https://x.example"), "access-control-allow-origin"), "*");
  // Without a list of headers, those the preflight asks for are allowed.
  EXPECT_EQ(header(cors_preflight(any, "https://x.example", "POST", "x-a, x-b", {}).headers, "access-control-allow-headers"),
            "x-a, x-b");
}

TEST(GatewayPaths, PathsAreNormalizedBeforeRoutingAndEncodedSlashesRefused) {
  auto norm = [](std::string_view p) {
    std::string why;
    bool changed = false;
    auto n = normalize_path(p, &why, &changed);
    if (!why.empty()) return "refused: " + why;
    return changed ? *n : std::string(p);
  };
  EXPECT_EQ(norm("/orders/17"), "/orders/17");
  EXPECT_EQ(norm("/x/../admin"), "/admin");
  EXPECT_EQ(norm("/../../etc/passwd"), "/etc/passwd");
  EXPECT_EQ(norm("/a/./b/."), "/a/b/");
  EXPECT_EQ(norm("/%61dmin/%7e%2d"), "/admin/~-");
  EXPECT_EQ(norm("/a%20b/%c3%a9"), "/a%20b/%C3%A9");
  EXPECT_EQ(norm("/%2e%2E/admin"), "/admin");
  EXPECT_EQ(norm("/a/"), "/a/");
  EXPECT_NE(norm("/a%2Fb").find("refused"), std::string::npos);
  EXPECT_NE(norm("/a%5cb").find("refused"), std::string::npos);
  EXPECT_NE(norm("/a%zz").find("refused"), std::string::npos);
  EXPECT_NE(norm("/a%2").find("refused"), std::string::npos);
}

TEST(GatewayPaths, RewritesForwardTheClientsSpellingAndStripPrefixesWholeSegmentsOnly) {
  GatewayRouteSpec r;
  r.path = "/api/{version}/{*rest}";
  r.rewrite = "/{version}/x/{rest}";
  EXPECT_EQ(target_path(r, "/api/v1/a%2Fb/c"), "/v1/x/a%2Fb/c");
  EXPECT_EQ(target_path(r, "/api/v1"), "/v1/x/");
  GatewayRouteSpec s;
  s.path = "/legacy/{*rest}";
  s.strip_prefix = "/legacy";
  EXPECT_EQ(target_path(s, "/legacy/a?b"), "/a?b");
  EXPECT_EQ(target_path(s, "/legacy"), "/");
  EXPECT_EQ(target_path(s, "/legacyx/a"), "/legacyx/a");
  GatewayRouteSpec plain;
  plain.path = "/{*rest}";
  EXPECT_EQ(target_path(plain, "/a/b"), "/a/b");
}

}  // namespace
}  // namespace nimbus
