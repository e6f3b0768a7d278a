// The gateway's response cache on its own, on the injected clock: what HTTP caching lets a
// shared cache keep and for how long, Vary, conditional hits, expiry and the byte bound.
#include <gtest/gtest.h>

#include "core/clock.h"
#include "gateway/cache.h"

namespace nimbus {
namespace {

using namespace std::chrono_literals;

HttpReply reply(int status, Headers headers, std::string body = "body") { return HttpReply{status, std::move(headers), std::move(body)}; }

std::string header(const HttpReply& r, const std::string& name) {
  for (const auto& h : r.headers)
    if (h.name == name) return h.value;
  return "";
}

auto no_headers = [](std::string_view) -> std::optional<std::string_view> { return std::nullopt; };

TEST(ResponseCache, TheRepliesCacheControlDecidesWhetherAndHowLongAReplyIsKept) {
  const Duration ttl = 60s;
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {}), ttl, false), 60s) << "no directives: the route's ttl";
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {{"Cache-Control", "max-age=5"}}), ttl, false), 5s);
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {{"cache-control", "max-age=5, s-maxage=30"}}), ttl, false), 30s);
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {{"Cache-Control", "no-store"}}), ttl, false), 0s);
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {{"Cache-Control", "private, max-age=600"}}), ttl, false), 0s);
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {{"Cache-Control", "no-cache"}}), ttl, false), 0s);
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {{"Set-Cookie", "session=1"}}), ttl, false), 0s) << "one client's session";
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {{"Vary", "*"}}), ttl, false), 0s);
  EXPECT_EQ(ResponseCache::lifetime(reply(404, {}), ttl, false), 60s) << "404 is cacheable by default";
  EXPECT_EQ(ResponseCache::lifetime(reply(500, {}), ttl, false), 0s);
  EXPECT_EQ(ResponseCache::lifetime(reply(201, {}), ttl, false), 0s);
  // Replies to one request, not the resource: never kept, whatever they say.
  EXPECT_EQ(ResponseCache::lifetime(reply(500, {{"Cache-Control", "max-age=5"}}), ttl, false), 0s);
  EXPECT_EQ(ResponseCache::lifetime(reply(304, {{"Cache-Control", "max-age=300"}}), ttl, false), 0s);
  EXPECT_EQ(ResponseCache::lifetime(reply(206, {{"Cache-Control", "max-age=300"}}), ttl, false), 0s);
  EXPECT_EQ(ResponseCache::lifetime(reply(101, {{"Cache-Control", "max-age=300"}}), ttl, false), 0s);
  // Time spent in caches before counts; a max-age past 2^31 s is taken as 2^31 s.
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {{"Cache-Control", "max-age=60"}, {"Age", "20"}}), ttl, false), 40s);
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {{"Cache-Control", "max-age=99999999999999999"}}), ttl, false),
            std::chrono::seconds(int64_t{1} << 31));
  // With credentials, only what the reply declares shareable.
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {}), ttl, true), 0s);
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {{"Cache-Control", "max-age=9"}}), ttl, true), 0s);
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {{"Cache-Control", "public"}}), ttl, true), 60s);
  EXPECT_EQ(ResponseCache::lifetime(reply(200, {{"Cache-Control", "s-maxage=7"}}), ttl, true), 7s);
  // The request's own directives.
  auto p = ResponseCache::request_policy("no-cache", "");
  EXPECT_FALSE(p.lookup);
  EXPECT_TRUE(p.store);
  p = ResponseCache::request_policy("max-age=0", "");
  EXPECT_FALSE(p.lookup);
  p = ResponseCache::request_policy("No-Store", "");
  EXPECT_FALSE(p.lookup || p.store);
  p = ResponseCache::request_policy("", "no-cache");
  EXPECT_FALSE(p.lookup);
  p = ResponseCache::request_policy("max-age=60", "");
  EXPECT_TRUE(p.lookup && p.store);
}

TEST(ResponseCache, HitsCarryAgeUntilTheyExpireOnTheInjectedClock) {
  ManualClock clock;
  ResponseCache cache(CacheLimits{}, clock);
  EXPECT_FALSE(cache.get("k", no_headers));
  cache.put("k", reply(200, {{"content-type", "text/plain"}}, "hello"), 10s, {});
  clock.advance(3s);
  auto hit = cache.get("k", no_headers);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->body, "hello");
  EXPECT_EQ(header(*hit, "age"), "3");
  EXPECT_EQ(header(*hit, "cache-status"), "nimbus; hit; ttl=7");
  clock.advance(7s);
  EXPECT_FALSE(cache.get("k", no_headers)) << "stale at its expiry";
  auto s = cache.stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 2u);
  EXPECT_EQ(s.entries, 0u) << "the stale entry is dropped";
  // A reply that had spent 20 s in caches upstream when it came: its Age counts on from there
  // (RFC 9111 4.2.3), and it is kept for what its max-age leaves.
  auto aged = reply(200, {{"Cache-Control", "max-age=60"}, {"Age", "20"}}, "old news");
  cache.put("a", aged, ResponseCache::lifetime(aged, 10s, false), {});
  clock.advance(5s);
  hit = cache.get("a", no_headers);
  ASSERT_TRUE(hit);
  EXPECT_EQ(header(*hit, "age"), "25");
  EXPECT_EQ(header(*hit, "cache-status"), "nimbus; hit; ttl=35");
  EXPECT_EQ(s.bytes, 0u);
  cache.put("z", reply(200, {}), 0s, {});
  EXPECT_FALSE(cache.get("z", no_headers)) << "a lifetime of zero is not kept";
}

TEST(ResponseCache, VaryingRepliesMatchOnlyTheRequestHeadersTheyVaryOn) {
  ManualClock clock;
  ResponseCache cache(CacheLimits{}, clock);
  cache.put("k", reply(200, {{"Vary", "Accept-Language, accept-encoding"}}, "bonjour"), 60s,
            {{"accept-language", "fr"}, {"user-agent", "x"}});
  auto french = [](std::string_view n) -> std::optional<std::string_view> {
    if (n == "accept-language") return "fr";
    return std::nullopt;
  };
  auto german = [](std::string_view n) -> std::optional<std::string_view> {
    if (n == "accept-language") return "de";
    return std::nullopt;
  };
  ASSERT_TRUE(cache.get("k", french));
  EXPECT_EQ(cache.get("k", french)->body, "bonjour");
  EXPECT_FALSE(cache.get("k", german)) << "another variant";
  cache.put("k", reply(200, {{"Vary", "accept-language"}}, "hallo"), 60s, {{"accept-language", "de"}});
  EXPECT_EQ(cache.get("k", german)->body, "hallo") << "the fetched variant replaces the old one";
}

TEST(ResponseCache, AMatchingIfNoneMatchGets304WithTheValidators) {
  ManualClock clock;
  ResponseCache cache(CacheLimits{}, clock);
  cache.put("k", reply(200, {{"ETag", "\"v1\""}, {"Cache-Control", "max-age=60"}, {"content-type", "text/plain"}}, "data"), 60s, {});
  auto matching = [](std::string_view n) -> std::optional<std::string_view> {
    if (n == "if-none-match") return "\"v0\", W/\"v1\"";
    return std::nullopt;
  };
  auto hit = cache.get("k", matching);
  ASSERT_TRUE(hit);
  EXPECT_EQ(hit->status, 304);
  EXPECT_EQ(hit->body, "");
  EXPECT_EQ(header(*hit, "ETag"), "\"v1\"");
  EXPECT_EQ(header(*hit, "content-type"), "") << "a 304 carries validators, not the representation's headers";
  auto other = [](std::string_view n) -> std::optional<std::string_view> {
    if (n == "if-none-match") return "\"v2\"";
    return std::nullopt;
  };
  EXPECT_EQ(cache.get("k", other)->status, 200);
}

TEST(ResponseCache, BytesAreBoundedLeastRecentlyUsedGoFirstAndBigRepliesPassBy) {
  ManualClock clock;
  CacheLimits limits;
  limits.max_size = 10'000;
  limits.max_object = 4'000;
  ResponseCache cache(limits, clock);
  const std::string kb(2'000, 'x');
  for (int i = 0; i < 4; ++i) cache.put("k" + std::to_string(i), reply(200, {}, kb), 60s, {});
  ASSERT_TRUE(cache.get("k0", no_headers));  // k0 is now the most recently used
  cache.put("k4", reply(200, {}, kb), 60s, {});
  cache.put("k5", reply(200, {}, kb), 60s, {});
  auto s = cache.stats();
  EXPECT_LE(s.bytes, 10'000u);
  EXPECT_GE(s.evicted, 1u);
  EXPECT_TRUE(cache.get("k0", no_headers)) << "recently used: kept";
  EXPECT_FALSE(cache.get("k1", no_headers)) << "least recently used: evicted first";
  cache.put("big", reply(200, {}, std::string(5'000, 'y')), 60s, {});
  EXPECT_FALSE(cache.get("big", no_headers)) << "over max_object: passed on, not kept";
  for (int i = 0; i < 1000; ++i) cache.put("many" + std::to_string(i), reply(200, {}, kb), 60s, {});
  EXPECT_LE(cache.stats().bytes, 10'000u);
}

}  // namespace
}  // namespace nimbus
