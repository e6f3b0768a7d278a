// Route templates and the HTTP router that matches requests against them.
#include <gtest/gtest.h>

#include "core/route_pattern.h"
#include "triggers/http/router.h"
#include "triggers/http/http_syntax.h"

namespace nimbus {
namespace {

using Kind = RouteSegment::Kind;

RoutePattern must_parse(std::string_view route) {
  std::string problem;
  auto p = parse_route(route, &problem);
  EXPECT_TRUE(p.has_value()) << route << ": " << problem;
  return p.value_or(RoutePattern{});
}

std::string param(const RouteMatch& m, std::string_view name) {
  for (const auto& h : m.params)
    if (h.name == name) return h.value;
  return "<missing>";
}

TEST(ParseRouteTest, ParsesLiteralsParamsAndCatchAll) {
  auto p = must_parse("/orders/{id}/items/{item}");
  ASSERT_EQ(p.segments.size(), 4u);
  EXPECT_EQ(p.segments[0].kind, Kind::literal);
  EXPECT_EQ(p.segments[0].text, "orders");
  EXPECT_EQ(p.segments[1].kind, Kind::param);
  EXPECT_EQ(p.segments[1].text, "id");
  EXPECT_EQ(p.segments[2].kind, Kind::literal);
  EXPECT_EQ(p.segments[3].kind, Kind::param);
  EXPECT_EQ(p.segments[3].text, "item");

  auto files = must_parse("/files/{*path}");
  ASSERT_EQ(files.segments.size(), 2u);
  EXPECT_EQ(files.segments[1].kind, Kind::rest);
  EXPECT_EQ(files.segments[1].text, "path");

  EXPECT_TRUE(must_parse("/").segments.empty());
  EXPECT_EQ(must_parse("/hello/").segments.size(), 1u) << "a trailing slash is ignored";
  EXPECT_EQ(check_route("/a-b_c.d~e/{x_1}"), "");
}

TEST(ParseRouteTest, RejectsInvalidTemplatesWithAReason) {
  struct Case {
    const char* route;
    const char* mentions;  // a fragment the problem must contain
  };
  const Case cases[] = {
      {"orders", "start with '/'"},
      {"", "start with '/'"},
      {"/orders//items", "'//'"},
      {"/orders/{id", "closing '}'"},
      {"/orders/{id}/x/{id}", "twice"},
      {"/files/{*path}/more", "last segment"},
      {"/orders/id-{id}", "mixing text"},
      {"/orders/{id}x", "closing '}'"},
      {"/orders?x=1", "query"},
      {"/orders#frag", "fragment"},
      {"/orders/{}", "parameter"},
      {"/orders/{a-b}", "parameter"},
      {"/hello world", "not allowed"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.route);
    std::string problem;
    EXPECT_FALSE(parse_route(c.route, &problem).has_value());
    EXPECT_NE(problem.find(c.mentions), std::string::npos) << problem;
    EXPECT_EQ(check_route(c.route), problem);
  }
  // Each reason says what is expected, or what is allowed.
  for (const char* r : {"orders", "/a//b", "/{x", "/{a}/{a}", "/{*a}/b", "/a{b}", "/a?b"}) {
    EXPECT_NE(check_route(r).find("expected"), std::string::npos) << r;
  }
}

TEST(ParseRouteTest, NullProblemPointerIsAllowed) {
  EXPECT_FALSE(parse_route("nope", nullptr).has_value());
  EXPECT_TRUE(parse_route("/ok", nullptr).has_value());
}

TEST(ParseRouteTest, LiteralsAreMoreSpecificThanParams) {
  EXPECT_TRUE(must_parse("/orders/new").more_specific_than(must_parse("/orders/{id}")));
  EXPECT_TRUE(must_parse("/orders/{id}").more_specific_than(must_parse("/orders/{*rest}")));
  EXPECT_FALSE(must_parse("/orders/{id}").more_specific_than(must_parse("/orders/new")));
  EXPECT_FALSE(must_parse("/orders/{id}").more_specific_than(must_parse("/orders/{id}")));
}

TEST(RouteShapeTest, ErasesParameterNames) {
  EXPECT_EQ(route_shape("/orders/{id}"), "/orders/{}");
  EXPECT_EQ(route_shape("/orders/{order}"), route_shape("/orders/{id}"));
  EXPECT_EQ(route_shape("/files/{*p}"), "/files/{*}");
  EXPECT_EQ(route_shape("/"), "/");
  EXPECT_EQ(route_shape("/a/"), "/a");
  EXPECT_NE(route_shape("/orders/new"), route_shape("/orders/{id}"));
}

TEST(RouterTest, LiteralBeatsParamWhicheverIsAddedFirst) {
  for (bool literal_first : {true, false}) {
    Router r;
    if (literal_first) r.add(must_parse("/orders/new"), {}, 1);
    r.add(must_parse("/orders/{id}"), {}, 2);
    if (!literal_first) r.add(must_parse("/orders/new"), {}, 1);
    EXPECT_EQ(r.size(), 2u);

    auto m = r.match("GET", "/orders/new");
    EXPECT_EQ(m.kind, RouteMatch::Kind::found);
    EXPECT_EQ(m.target, 1);
    EXPECT_TRUE(m.params.empty());

    m = r.match("GET", "/orders/42");
    EXPECT_EQ(m.kind, RouteMatch::Kind::found);
    EXPECT_EQ(m.target, 2);
    EXPECT_EQ(param(m, "id"), "42");
  }
}

// Found by fuzz/route_fuzz.cpp: the specificity score (3 per segment) overflowed an int past
// 19 segments, which is undefined and, wrapped, put /{p}/b/b/... before /a/{p}/{p}/...
TEST(RouterTest, LiteralBeatsParamInLongRoutes) {
  std::string literal_first = "/a", param_first = "/{p0}", path = "/a";
  for (int i = 1; i < 24; ++i) {
    literal_first += "/{p" + std::to_string(i) + "}";
    param_first += "/b";
    path += "/b";
  }
  for (bool literal_added_first : {true, false}) {
    Router r;
    if (literal_added_first) r.add(must_parse(literal_first), {}, 1);
    r.add(must_parse(param_first), {}, 2);
    if (!literal_added_first) r.add(must_parse(literal_first), {}, 1);
    auto m = r.match("GET", path);
    EXPECT_EQ(m.kind, RouteMatch::Kind::found);
    EXPECT_EQ(m.target, 1) << "the first segment decides: a literal beats a parameter";
  }
}

TEST(RouterTest, ParamsArePercentDecoded) {
  Router r;
  r.add(must_parse("/orders/{id}/items/{item}"), {"GET"}, 7);
  auto m = r.match("GET", "/orders/a%20b/items/x%2Fy");
  ASSERT_EQ(m.kind, RouteMatch::Kind::found);
  EXPECT_EQ(m.target, 7);
  EXPECT_EQ(param(m, "id"), "a b");
  EXPECT_EQ(param(m, "item"), "x/y");
}

TEST(RouterTest, MalformedEscapeDoesNotMatch) {
  Router r;
  r.add(must_parse("/orders/{id}"), {}, 1);
  EXPECT_EQ(r.match("GET", "/orders/%zz").kind, RouteMatch::Kind::not_found);
}

TEST(RouterTest, CatchAllCapturesTheRest) {
  Router r;
  r.add(must_parse("/files/{*path}"), {"GET"}, 3);
  auto m = r.match("GET", "/files/a/b/c%20d.txt");
  ASSERT_EQ(m.kind, RouteMatch::Kind::found);
  EXPECT_EQ(m.target, 3);
  EXPECT_EQ(param(m, "path"), "a/b/c d.txt");

  m = r.match("GET", "/files/one");
  ASSERT_EQ(m.kind, RouteMatch::Kind::found);
  EXPECT_EQ(param(m, "path"), "one");

  EXPECT_EQ(r.match("GET", "/other/a").kind, RouteMatch::Kind::not_found);
}

TEST(RouterTest, TrailingSlashIsTolerated) {
  Router r;
  r.add(must_parse("/hello"), {}, 1);
  r.add(must_parse("/orders/{id}"), {}, 2);
  EXPECT_EQ(r.match("GET", "/hello").target, 1);
  EXPECT_EQ(r.match("GET", "/hello/").target, 1);
  auto m = r.match("GET", "/orders/9/");
  EXPECT_EQ(m.kind, RouteMatch::Kind::found);
  EXPECT_EQ(param(m, "id"), "9");
}

TEST(RouterTest, RootRoute) {
  Router r;
  r.add(must_parse("/"), {}, 1);
  EXPECT_EQ(r.match("GET", "/").kind, RouteMatch::Kind::found);
  EXPECT_EQ(r.match("GET", "/x").kind, RouteMatch::Kind::not_found);
}

TEST(RouterTest, UnknownPathIsNotFound) {
  Router r;
  r.add(must_parse("/orders/{id}"), {"GET"}, 1);
  for (const char* path : {"/", "/order/1", "/orders", "/orders/1/extra", "orders/1", "", "/orders//"}) {
    auto m = r.match("GET", path);
    EXPECT_EQ(m.kind, RouteMatch::Kind::not_found) << path;
    EXPECT_EQ(m.target, -1) << path;
    EXPECT_EQ(m.allow, "") << path;
  }
}

TEST(RouterTest, WrongMethodIsMethodNotAllowedWithAllow) {
  Router r;
  r.add(must_parse("/orders/{id}"), {"GET"}, 1);
  r.add(must_parse("/orders/{id}"), {"PUT", "DELETE"}, 2);
  auto m = r.match("POST", "/orders/5");
  EXPECT_EQ(m.kind, RouteMatch::Kind::method_not_allowed);
  EXPECT_EQ(m.target, -1);
  EXPECT_EQ(m.allow, "GET, HEAD, PUT, DELETE");

  Router only_get;
  only_get.add(must_parse("/x"), {"GET"}, 1);
  m = only_get.match("DELETE", "/x");
  EXPECT_EQ(m.kind, RouteMatch::Kind::method_not_allowed);
  EXPECT_EQ(m.allow, "GET, HEAD");

  EXPECT_EQ(r.match("PUT", "/orders/5").target, 2);
  EXPECT_EQ(r.match("DELETE", "/orders/5").target, 2);
  EXPECT_EQ(r.match("GET", "/orders/5").target, 1);
}

TEST(RouterTest, HeadMatchesGetRoutes) {
  Router r;
  r.add(must_parse("/hello"), {"GET"}, 1);
  r.add(must_parse("/submit"), {"POST"}, 2);
  auto m = r.match("HEAD", "/hello");
  EXPECT_EQ(m.kind, RouteMatch::Kind::found);
  EXPECT_EQ(m.target, 1);
  m = r.match("HEAD", "/submit");
  EXPECT_EQ(m.kind, RouteMatch::Kind::method_not_allowed);
  EXPECT_EQ(m.allow, "POST");
}

TEST(RouterTest, EmptyMethodsMeansAnyMethod) {
  Router r;
  r.add(must_parse("/any"), {}, 4);
  for (const char* method : {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}) {
    auto m = r.match(method, "/any");
    EXPECT_EQ(m.kind, RouteMatch::Kind::found) << method;
    EXPECT_EQ(m.target, 4) << method;
  }
}

TEST(RouterTest, ParamDoesNotLeakFromAFailedCandidate) {
  Router r;
  r.add(must_parse("/a/{x}/b"), {}, 1);
  r.add(must_parse("/a/{y}/c"), {}, 2);
  auto m = r.match("GET", "/a/1/c");
  ASSERT_EQ(m.kind, RouteMatch::Kind::found);
  EXPECT_EQ(m.target, 2);
  ASSERT_EQ(m.params.size(), 1u);
  EXPECT_EQ(m.params[0].name, "y");
  EXPECT_EQ(m.params[0].value, "1");
}

TEST(PercentDecodeTest, DecodesValidEscapes) {
  std::string out;
  EXPECT_TRUE(percent_decode("a%20b%2fc%2F", out));
  EXPECT_EQ(out, "a b/c/");
  EXPECT_TRUE(percent_decode("plain", out));
  EXPECT_EQ(out, "plain") << "out is replaced, not appended to";
  EXPECT_TRUE(percent_decode("", out));
  EXPECT_EQ(out, "");
  EXPECT_TRUE(percent_decode("%00x", out));
  EXPECT_EQ(out, std::string("\0x", 2));
}

TEST(PercentDecodeTest, RejectsMalformedEscapes) {
  std::string out;
  EXPECT_FALSE(percent_decode("%zz", out));
  EXPECT_FALSE(percent_decode("%4", out));
  EXPECT_FALSE(percent_decode("abc%", out));
  EXPECT_FALSE(percent_decode("%g1", out));
  EXPECT_FALSE(percent_decode("%1g", out));
}

}  // namespace
}  // namespace nimbus

namespace nimbus {
namespace {

TEST(HttpSyntaxTest, OnlyChunkedIsASupportedTransferCoding) {
  EXPECT_EQ(unsupported_transfer_coding("chunked"), "");
  EXPECT_EQ(unsupported_transfer_coding(" Chunked "), "");
  EXPECT_EQ(unsupported_transfer_coding("gzip, chunked"), "gzip");
  EXPECT_EQ(unsupported_transfer_coding("chunked, x-custom;q=1"), "x-custom");
  EXPECT_EQ(unsupported_transfer_coding("identity"), "identity");
  EXPECT_EQ(unsupported_transfer_coding(" , "), "(empty)");
}

}  // namespace
}  // namespace nimbus
