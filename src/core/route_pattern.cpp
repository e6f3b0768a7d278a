#include "core/route_pattern.h"

#include <algorithm>
#include <set>

namespace nimbus {
namespace {

bool valid_param_name(std::string_view s) {
  if (s.empty()) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

bool valid_literal(std::string_view s) {
  // RFC 3986 pchar, minus '{' and '}' which mark parameters.
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("-._~!$&'()*+,;=:@%").find(c) != std::string_view::npos;
  });
}

}  // namespace

bool RoutePattern::more_specific_than(const RoutePattern& other) const {
  auto rank = [](const RouteSegment& s) {
    return s.kind == RouteSegment::Kind::literal ? 2 : s.kind == RouteSegment::Kind::param ? 1 : 0;
  };
  return std::lexicographical_compare(other.segments.begin(), other.segments.end(), segments.begin(), segments.end(),
                                      [&](const RouteSegment& a, const RouteSegment& b) { return rank(a) < rank(b); });
}

std::optional<RoutePattern> parse_route(std::string_view route, std::string* problem) {
  auto fail = [&](std::string why) -> std::optional<RoutePattern> {
    if (problem) *problem = std::move(why);
    return std::nullopt;
  };
  if (route.empty() || route.front() != '/') {
    return fail("does not start with '/'; expected a path such as /orders/{id}");
  }
  if (route.find_first_of("?#") != std::string_view::npos) {
    return fail("contains a query or fragment; expected only a path");
  }
  RoutePattern pattern;
  std::set<std::string, std::less<>> names;
  std::string_view rest = route.substr(1);
  if (rest.empty()) return pattern;  // "/"
  while (true) {
    auto slash = rest.find('/');
    std::string_view seg = rest.substr(0, slash);
    bool last = slash == std::string_view::npos;
    if (seg.empty()) {
      if (last) break;  // a trailing slash is allowed and ignored
      return fail("has an empty segment ('//'); expected segments between single slashes");
    }
    RouteSegment s;
    if (seg.front() == '{') {
      if (seg.back() != '}') return fail("has segment '" + std::string(seg) + "' with no closing '}'; expected {name}");
      std::string_view name = seg.substr(1, seg.size() - 2);
      s.kind = RouteSegment::Kind::param;
      if (!name.empty() && name.front() == '*') {
        name.remove_prefix(1);
        s.kind = RouteSegment::Kind::rest;
        if (!last) return fail("has catch-all {*" + std::string(name) + "} before the end; expected it as the last segment");
      }
      if (!valid_param_name(name)) {
        return fail("has parameter '" + std::string(seg) + "'; expected {name} with letters, digits or '_'");
      }
      if (!names.insert(std::string(name)).second) {
        return fail("uses parameter {" + std::string(name) + "} twice; expected distinct names");
      }
      s.text = std::string(name);
    } else {
      if (seg.find_first_of("{}") != std::string_view::npos) {
        return fail("has segment '" + std::string(seg) + "' mixing text and a parameter; expected a whole segment {name}");
      }
      if (!valid_literal(seg)) {
        return fail("has segment '" + std::string(seg) + "' with characters not allowed in a URL path");
      }
      s.text = std::string(seg);
    }
    pattern.segments.push_back(std::move(s));
    if (last) break;
    rest = rest.substr(slash + 1);
  }
  return pattern;
}

std::string check_route(std::string_view route) {
  std::string problem;
  parse_route(route, &problem);
  return problem;
}

std::string route_shape(std::string_view route) {
  auto p = parse_route(route, nullptr);
  if (!p) return std::string(route);
  std::string out;
  for (const auto& s : p->segments) {
    out += '/';
    out += s.kind == RouteSegment::Kind::literal ? s.text
           : s.kind == RouteSegment::Kind::param ? "{}"
                                                 : "{*}";
  }
  return out.empty() ? "/" : out;
}

}  // namespace nimbus
