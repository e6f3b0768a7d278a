#pragma once
// Matches a request's host, method and path against the app's HTTP routes. Routes that name
// the request's host are tried before those for any host; within each, literal segments beat
// parameters; a path that matches a route but not its methods is a 405 with Allow.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/invocation.h"
#include "core/route_pattern.h"

namespace nimbus {

struct RouteMatch {
  enum class Kind : uint8_t { found, not_found, method_not_allowed } kind = Kind::not_found;
  int target = -1;     // what add() was given
  Headers params;      // decoded path parameters
  std::string allow;   // for method_not_allowed: "GET, POST"
};

class Router {
 public:
  // `methods` upper case; empty means every method. `host`: "" any, "api.example.com", or
  // "*.example.com" (any name under it), lower case.
  void add(RoutePattern pattern, std::vector<std::string> methods, int target, std::string host = {});
  // `host`: the request's Host header as sent (a port and letter case are ignored).
  RouteMatch match(std::string_view method, std::string_view path, std::string_view host = {}) const;
  std::size_t size() const { return routes_.size(); }

 private:
  struct Route {
    RoutePattern pattern;
    std::vector<std::string> methods;
    int target;
    std::string host;
  };
  static bool match_host(std::string_view pattern, std::string_view host);
  bool any_host_ = false;
  static bool match_path(const RoutePattern& p, std::string_view path, Headers* params);
  std::vector<Route> routes_;
};

// The path every route sees and every target gets (RFC 3986 6.2.2): percent-escapes of
// unreserved characters decoded ("/%61dmin" is "/admin"), other escapes upper-cased, and dot
// segments removed ("/x/../admin" is "/admin"), so no spelling of a path slips past a route
// meant for it. An encoded '/' or '\' (which would let a server behind us see segments the
// router did not) and malformed escapes are refused: the reason is in *why. The new path when
// *changed; nullopt (and no copy) when there is nothing to do or the path is refused.
std::optional<std::string> normalize_path(std::string_view path, std::string* why, bool* changed);

// The Host header's name, lower case, without a port ("Api.Example.com:8080" -> "api.example.com").
std::string host_name(std::string_view host_header);

// Percent-decodes a path segment; false when an escape is malformed.
bool percent_decode(std::string_view in, std::string& out);
// application/x-www-form-urlencoded: '+' is a space, then %XX; a malformed escape keeps the text.
std::string form_decode(std::string_view in);

}  // namespace nimbus
