// libFuzzer target for route templates (core/route_pattern.h) and the HTTP router's matching
// of request paths (triggers/http/router.h). Input: one field a line:
//   route templates (up to 4, "-" ends them early), a method, a request path, a query string,
//   then the values the round trip puts into the first route's parameters.
// Invariants: parse_route and check_route agree; the router never matches a path its
// templates cannot have produced (a match's parameters fill the template back into a path
// that matches again); a path made from a template and percent-encoded values matches it and
// gives the values back; percent_decode undoes percent-encoding; query_param finds what was put.
#include <cctype>

#include "fuzz/fuzz_input.h"
#include "core/route_pattern.h"
#include "triggers/http/http_trigger.h"
#include "triggers/http/router.h"

namespace nimbus::fuzz {
namespace {

std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// The path `pattern` gives with `values` (one per parameter, percent-encoded here).
std::string fill(const RoutePattern& pattern, const std::vector<std::string>& values) {
  std::string path;
  std::size_t v = 0;
  for (const auto& s : pattern.segments) {
    path += '/';
    path += s.kind == RouteSegment::Kind::literal ? s.text : percent_encode(values[v++]);
  }
  return path.empty() ? "/" : path;
}

}  // namespace

std::string check_route_input(std::string_view text) {
  auto f = fields(text, 12);
  f.resize(12);
  std::size_t i = 0;
  Router router;
  std::vector<RoutePattern> patterns;
  for (; i < 4 && f[i] != "-"; ++i) {
    std::string problem;
    auto p = parse_route(f[i], &problem);
    FUZZ_EXPECT(p.has_value() == problem.empty(), "parse_route and its problem disagree");
    FUZZ_EXPECT(check_route(f[i]) == problem, "check_route and parse_route disagree");
    if (!p) continue;
    FUZZ_EXPECT(route_shape(f[i]).front() == '/', "a route shape not starting with '/'");
    std::vector<std::string> methods;
    if (i % 2 == 1) methods = {"GET", "POST"};
    router.add(*p, methods, static_cast<int>(patterns.size()));
    patterns.push_back(std::move(*p));
  }
  const std::string_view method = f[i];
  const std::string_view path = f[i + 1];
  const std::string_view query = f[i + 2];

  RouteMatch m = router.match(method, path);
  if (m.kind == RouteMatch::Kind::found) {
    FUZZ_EXPECT(m.target >= 0 && m.target < static_cast<int>(patterns.size()), "a match with no route");
    const RoutePattern& p = patterns[static_cast<std::size_t>(m.target)];
    std::vector<std::string> values;
    for (const auto& param : m.params) values.push_back(param.value);
    std::size_t params = 0;
    for (const auto& s : p.segments) params += s.kind != RouteSegment::Kind::literal;
    FUZZ_EXPECT(values.size() == params, "a match with " + std::to_string(values.size()) + " parameters for " +
                                             std::to_string(params));
    // A parameter names a non-empty segment; only a catch-all may match nothing (/{*rest} serves /).
    std::size_t k = 0;
    for (const auto& s : p.segments) {
      if (s.kind == RouteSegment::Kind::literal) continue;
      if (s.kind == RouteSegment::Kind::param) FUZZ_EXPECT(!values[k].empty(), "a match with an empty parameter");
      ++k;
    }
  } else if (m.kind == RouteMatch::Kind::method_not_allowed) {
    FUZZ_EXPECT(!m.allow.empty(), "a 405 with no Allow");
  }

  // The round trip: values into the first route's parameters, the path through the router.
  if (!patterns.empty()) {
    const RoutePattern& p = patterns.front();
    std::vector<std::string> values;
    std::size_t next = i + 3;
    for (const auto& s : p.segments) {
      if (s.kind == RouteSegment::Kind::literal) continue;
      std::string v(f[next]);
      next = std::min<std::size_t>(next + 1, 11);
      if (v.empty()) v = "x";
      values.push_back(std::move(v));
    }
    Router one;
    one.add(p, {}, 0);
    const std::string filled = fill(p, values);
    RouteMatch back = one.match("GET", filled);
    FUZZ_EXPECT(back.kind == RouteMatch::Kind::found, "a path filled from its route does not match it: " + shown(filled));
    FUZZ_EXPECT(back.params.size() == values.size(), "a filled path gives another parameter count");
    for (std::size_t k = 0; k < values.size(); ++k) {
      FUZZ_EXPECT(back.params[k].value == values[k], "a parameter comes back changed: " + shown(back.params[k].value));
    }
  }

  std::string decoded;
  FUZZ_EXPECT(percent_decode(percent_encode(path), decoded) && decoded == path, "percent_decode(percent_encode(x)) != x");
  (void)form_decode(path);
  if (!query.empty() && query != "a") {  // "a" is the pair before it
    const std::string q = "a=b&" + percent_encode(query) + "=" + percent_encode(path) + "&c";
    auto v = query_param(q, query);
    FUZZ_EXPECT(v && *v == path, "query_param does not find what was put");
    (void)query_param(query, "code");
  }
  return "";
}

}  // namespace nimbus::fuzz

NIMBUS_FUZZ_TARGET(nimbus::fuzz::check_route_input, 4096)
