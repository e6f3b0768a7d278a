#pragma once
// Route templates: "/orders/{id}/items/{item}", with an optional catch-all last segment
// "/files/{*path}". Parsed once; the manifest validates with it, the HTTP router matches with it.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus {

struct RouteSegment {
  enum class Kind : uint8_t { literal, param, rest } kind = Kind::literal;
  std::string text;  // the literal, or the parameter's name
};

struct RoutePattern {
  std::vector<RouteSegment> segments;
  // Ranks literal segments above parameters above a catch-all, segment by segment from the
  // left, so /orders/new beats /orders/{id}. A comparison, not a score: any number of
  // segments compares without overflow.
  bool more_specific_than(const RoutePattern& other) const;
};

// nullopt and a reason ("...; expected ...") in *problem when the template is not valid.
std::optional<RoutePattern> parse_route(std::string_view route, std::string* problem);

// "" when valid, else what is wrong and what is expected.
std::string check_route(std::string_view route);

// The route with parameter names erased ("/orders/{}"): two routes with one shape conflict.
std::string route_shape(std::string_view route);

}  // namespace nimbus
