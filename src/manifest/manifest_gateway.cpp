// gateway: {upstreams, routes}: the reverse proxy's upstreams and the routes that go to them or
// to functions (core/gateway_spec.h says what each value means; docs/gateway.md shows them).
#include <algorithm>
#include <cctype>
#include <charconv>
#include <set>

#include "core/route_pattern.h"
#include "gateway/api_keys.h"
#include "manifest/manifest_reader.h"
#include "core/text.h"

namespace nimbus {
namespace {

bool is_header_name(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
  });
}

// Headers a route may not edit: the proxy owns the message's framing and the connection.
bool is_framing_header(std::string_view lowered) {
  static const std::set<std::string_view> kFraming = {"content-length", "transfer-encoding", "connection", "keep-alive",
                                                      "upgrade", "te", "trailer", "host"};
  return kFraming.count(lowered) != 0;
}

}  // namespace

// http://HOST[:PORT][/BASE]: no https (TLS to upstreams is not built) and nothing after the path.
std::optional<UpstreamTarget> ManifestReader::upstream_url(const YAML::Node& v, const std::string& path) {
  auto url = scalar(v, path, "an upstream URL such as http://127.0.0.1:8080");
  if (!url) return std::nullopt;
  auto bad = [&](const std::string& why) -> std::optional<UpstreamTarget> {
    error(v, path, "'" + *url + "' " + why);
    return std::nullopt;
  };
  if (url->rfind("https://", 0) == 0) {
    return bad("is an https URL; TLS to upstreams is not built yet, expected http://HOST:PORT");
  }
  if (url->rfind("http://", 0) != 0) return bad("is not an http:// URL; expected http://HOST[:PORT][/PATH]");
  std::string_view rest = std::string_view(*url).substr(7);
  auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view base = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
  if (base.find_first_of("?#") != std::string_view::npos) return bad("has a query or fragment; expected a path at most");
  while (!base.empty() && base.back() == '/') base.remove_suffix(1);
  if (authority.find('@') != std::string_view::npos) return bad("has user information; expected http://HOST[:PORT]");
  UpstreamTarget t;
  t.url = *url;
  t.base_path = std::string(base);
  std::string_view host = authority, port;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return bad("has an unclosed IPv6 literal");
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') return bad("has text after the IPv6 literal; expected [ADDR]:PORT");
      port = authority.substr(close + 2);
    }
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) return bad("has no host; expected http://HOST[:PORT]");
  t.host = std::string(host);
  if (!port.empty()) {
    int p = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || end != port.data() + port.size() || p < 1 || p > 65535) {
      return bad("has port '" + std::string(port) + "'; expected a number from 1 to 65535");
    }
    t.port = p;
  }
  return t;
}

void ManifestReader::read_upstream(const YAML::Node& n, const std::string& path, UpstreamSpec& u) {
  if (n.IsScalar()) {  // monolith: http://127.0.0.1:9000
    if (auto t = upstream_url(n, path)) u.targets.push_back(std::move(*t));
    return;
  }
  if (!check_map(n, path, {"targets", "balance", "connect_timeout", "timeout", "retries", "retry_budget",
                           "circuit_breaker", "health_check", "keepalive", "max_response", "websocket_idle"})) {
    return;
  }
  auto targets = n["targets"];
  if (!targets) {
    error(n, path + ".targets", "is missing; expected a list of URLs such as [http://127.0.0.1:8080]");
  } else if (targets.IsScalar()) {
    if (auto t = upstream_url(targets, path + ".targets")) u.targets.push_back(std::move(*t));
  } else if (!targets.IsSequence() || targets.size() == 0) {
    error(targets, path + ".targets", "is " + kind_of(targets) + "; expected a non-empty list of URLs");
  } else {
    for (std::size_t i = 0; i < targets.size(); ++i) {
      if (auto t = upstream_url(targets[i], path + ".targets[" + std::to_string(i) + "]")) u.targets.push_back(std::move(*t));
    }
  }
  if (auto v = n["balance"]) {
    if (auto b = choice(v, path + ".balance", {"round_robin", "least_requests"})) {
      u.balance = *b == "round_robin" ? UpstreamSpec::Balance::round_robin : UpstreamSpec::Balance::least_requests;
    }
  }
  if (auto v = n["connect_timeout"]) {
    if (auto d = duration(v, path + ".connect_timeout")) u.connect_timeout = *d;
  }
  if (auto v = n["timeout"]) {
    if (auto d = duration(v, path + ".timeout")) u.timeout = *d;
  }
  if (auto v = n["retries"]) {
    if (auto r = integer(v, path + ".retries", 0, 10)) u.retries = static_cast<int>(*r);
  }
  if (auto v = n["retry_budget"]) {
    if (auto s = scalar(v, path + ".retry_budget", "a percentage such as 20%")) {
      double pct = -1;
      std::string_view text = *s;
      if (!text.empty() && text.back() == '%') text.remove_suffix(1);
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pct);
      if (ec != std::errc() || end != text.data() + text.size() || pct < 0 || pct > 100) {
        error(v, path + ".retry_budget", "'" + *s + "' is not a percentage; expected 0% to 100%, e.g. 20%");
      } else {
        u.retry_budget = pct / 100;
      }
    }
  }
  if (auto v = n["circuit_breaker"]; v && check_map(v, path + ".circuit_breaker", {"failures", "open_for"})) {
    if (auto f = v["failures"]) {
      if (auto x = integer(f, path + ".circuit_breaker.failures", 0, 1000000)) u.breaker_failures = static_cast<int>(*x);
    }
    if (auto f = v["open_for"]) {
      if (auto d = duration(f, path + ".circuit_breaker.open_for")) u.breaker_open_for = *d;
    }
  }
  if (auto v = n["health_check"];
      v && check_map(v, path + ".health_check", {"path", "interval", "timeout", "healthy", "unhealthy"})) {
    if (auto p = v["path"]; !p) {
      error(v, path + ".health_check.path", "is missing; expected the path to GET, e.g. path: /healthz");
    } else if (auto s = scalar(p, path + ".health_check.path", "a path such as /healthz")) {
      if (s->empty() || s->front() != '/' || s->find_first_of(" \r\n#") != std::string::npos) {
        error(p, path + ".health_check.path", "'" + *s + "' is not a path; expected one starting with '/', e.g. /healthz");
      } else {
        u.health_path = *s;
      }
    }
    if (auto f = v["interval"]) {
      if (auto d = duration(f, path + ".health_check.interval")) u.health_interval = *d;
    }
    if (auto f = v["timeout"]) {
      if (auto d = duration(f, path + ".health_check.timeout")) u.health_timeout = *d;
    }
    if (auto f = v["healthy"]) {
      if (auto x = integer(f, path + ".health_check.healthy", 1, 100)) u.health_healthy = static_cast<int>(*x);
    }
    if (auto f = v["unhealthy"]) {
      if (auto x = integer(f, path + ".health_check.unhealthy", 1, 100)) u.health_unhealthy = static_cast<int>(*x);
    }
  }
  if (auto v = n["keepalive"]; v && check_map(v, path + ".keepalive", {"max_idle", "idle_timeout"})) {
    if (auto f = v["max_idle"]) {
      if (auto x = integer(f, path + ".keepalive.max_idle", 0, 100000)) u.max_idle = static_cast<int>(*x);
    }
    if (auto f = v["idle_timeout"]) {
      if (auto d = duration(f, path + ".keepalive.idle_timeout")) u.idle_timeout = *d;
    }
  }
  if (auto v = n["max_response"]) {
    if (auto s = size(v, path + ".max_response")) u.max_response = *s;
  }
  if (auto v = n["websocket_idle"]) {
    if (auto d = duration(v, path + ".websocket_idle")) u.websocket_idle = *d;
  }
}

void ManifestReader::read_header_edits(const YAML::Node& n, const std::string& path, HeaderEdits& edits) {
  if (!check_map(n, path, {"set", "remove"})) return;
  if (auto set = n["set"]) {
    if (!set.IsMap()) {
      error(set, path + ".set", "is " + kind_of(set) + "; expected a mapping of header names to values");
    } else {
      for (auto it = set.begin(); it != set.end(); ++it) {
        std::string name = ascii_lower(it->first.Scalar());
        std::string p = path + ".set." + it->first.Scalar();
        if (!is_header_name(name)) {
          error(it->first, p, "is not a header name; expected letters, digits and -");
        } else if (is_framing_header(name)) {
          error(it->first, p, "is managed by the proxy (framing and connection); it cannot be set");
        } else if (auto value = scalar(it->second, p, "a header value")) {
          if (value->find_first_of("\r\n") != std::string::npos) error(it->second, p, "has a line break; expected one line");
          else edits.set.push_back({name, *value});
        }
      }
    }
  }
  if (auto remove = n["remove"]) {
    for (const auto& [item, p] : one_or_list(remove, path + ".remove")) {
      auto name = scalar(item, p, "a header name");
      if (!name) continue;
      std::string l = ascii_lower(*name);
      if (!is_header_name(l)) error(item, p, "'" + *name + "' is not a header name");
      else if (is_framing_header(l)) error(item, p, "'" + *name + "' is managed by the proxy; it cannot be removed");
      else edits.remove.push_back(l);
    }
  }
}

// cors: {origins, methods, headers, expose, credentials, max_age}
std::optional<CorsSpec> ManifestReader::read_cors(const YAML::Node& n, const std::string& path) {
  if (!check_map(n, path, {"origins", "methods", "headers", "expose", "credentials", "max_age"})) return std::nullopt;
  CorsSpec c;
  auto strings = [&](const char* key, std::vector<std::string>& out, bool lower_case) {
    auto v = n[key];
    if (!v) return;
    for (const auto& [item, p] : one_or_list(v, path + "." + key)) {
      if (auto s = scalar(item, p, "a string")) out.push_back(lower_case ? ascii_lower(*s) : *s);
    }
  };
  if (!n["origins"]) {
    error(n, path + ".origins", "is missing; expected the origins allowed, e.g. [https://app.example.com] or \"*\"");
  }
  strings("origins", c.origins, false);
  for (const auto& o : c.origins) {
    if (o != "*" && o.rfind("http://", 0) != 0 && o.rfind("https://", 0) != 0) {
      error(n["origins"], path + ".origins", "'" + o + "' is not an origin; expected scheme://host[:port], or \"*\"");
    } else if (o != "*" && o.find('/', o.find("//") + 2) != std::string::npos) {
      error(n["origins"], path + ".origins", "'" + o + "' has a path; an origin is scheme://host[:port] only");
    }
  }
  if (auto v = n["methods"]) c.methods = http_methods(v, path + ".methods");
  strings("headers", c.headers, true);
  strings("expose", c.expose, true);
  if (auto v = n["credentials"]) {
    if (auto b = boolean(v, path + ".credentials")) c.credentials = *b;
  }
  if (c.credentials && std::find(c.origins.begin(), c.origins.end(), "*") != c.origins.end()) {
    error(n, path + ".credentials", "is true with origins \"*\", which browsers refuse; expected the origins by name");
  }
  if (auto v = n["max_age"]) {
    if (auto d = duration(v, path + ".max_age")) c.max_age = *d;
  }
  return c;
}

// rate_limit: {rate: 100/s, burst: 200, per: ip | route | header:x-api-key}
std::optional<RateLimitSpec> ManifestReader::read_rate_limit(const YAML::Node& n, const std::string& path) {
  if (!check_map(n, path, {"rate", "burst", "per"})) return std::nullopt;
  RateLimitSpec r;
  auto rate = n["rate"];
  if (!rate) {
    error(n, path + ".rate", "is missing; expected requests per unit of time, e.g. rate: 100/s or 6000/m");
    return std::nullopt;
  }
  auto text = scalar(rate, path + ".rate", "a rate such as 100/s");
  if (!text) return std::nullopt;
  auto parsed = parse_quota(*text);  // N/s, N/m, N/h, N/d; the burst defaults to N
  if (!parsed) {
    error(rate, path + ".rate", parsed.error().message);
    return std::nullopt;
  }
  r = *parsed;
  r.per = RateLimitSpec::Per::ip;
  if (auto v = n["burst"]) {
    if (auto x = integer(v, path + ".burst", 1, 100000000)) r.burst = static_cast<double>(*x);
  }
  if (auto v = n["per"]) {
    if (auto p = scalar(v, path + ".per", "ip, route or header:NAME")) {
      if (*p == "ip") {
        r.per = RateLimitSpec::Per::ip;
      } else if (*p == "route") {
        r.per = RateLimitSpec::Per::route;
      } else if (p->rfind("header:", 0) == 0 && is_header_name(ascii_lower(p->substr(7)))) {
        r.per = RateLimitSpec::Per::header;
        r.header = ascii_lower(p->substr(7));
      } else {
        error(v, path + ".per", "'" + *p + "' is not a key; expected ip, route or header:NAME (header:x-api-key)");
      }
    }
  }
  return r;
}

// jwt: {issuer, audience, secret, jwks_file, clock_skew}
std::optional<JwtSpec> ManifestReader::read_jwt(const YAML::Node& n, const std::string& path) {
  if (!check_map(n, path, {"issuer", "audience", "secret", "jwks_file", "jwks_url", "jwks_ca", "jwks_refresh", "clock_skew"})) {
    return std::nullopt;
  }
  JwtSpec j;
  if (auto v = n["issuer"]) {
    if (auto s = scalar(v, path + ".issuer", "the issuer (iss) tokens must name")) j.issuer = *s;
  }
  if (auto v = n["audience"]) {
    for (const auto& [item, p] : one_or_list(v, path + ".audience")) {
      if (auto s = scalar(item, p, "an audience (aud)")) j.audiences.push_back(*s);
    }
  }
  if (auto v = n["secret"]) {
    if (auto s = scalar(v, path + ".secret", "the HS256 secret, e.g. ${JWT_SECRET}")) {
      if (s->size() < 32) error(v, path + ".secret", "is " + std::to_string(s->size()) + " bytes; expected at least 32 for HS256");
      else j.secret = *s;
    }
  }
  if (auto v = n["jwks_file"]) {
    if (auto f = app_file(v, path + ".jwks_file", "a JWKS file (RS256/ES256 public keys)")) j.jwks_file = *f;
  }
  if (auto v = n["jwks_url"]) {
    if (auto s = scalar(v, path + ".jwks_url", "the identity provider's JWKS URL, e.g. https://auth.example.com/.well-known/jwks.json")) {
      if (s->rfind("https://", 0) != 0 && s->rfind("http://", 0) != 0) {
        error(v, path + ".jwks_url", "'" + *s + "' is not an http:// or https:// URL");
      } else if (!j.jwks_file.empty()) {
        error(v, path + ".jwks_url", "is set with jwks_file; expected one of the two");
      } else {
        j.jwks_url = *s;
      }
    }
  }
  if (auto v = n["jwks_ca"]) {
    if (auto f = app_file(v, path + ".jwks_ca", "a PEM file of CA certificates")) j.jwks_ca = *f;
  }
  if (auto v = n["jwks_refresh"]) {
    if (auto d = duration(v, path + ".jwks_refresh")) {
      if (*d < std::chrono::seconds(30)) error(v, path + ".jwks_refresh", "is under 30s; expected 30s or more");
      else j.jwks_refresh = *d;
    }
  }
  if (auto v = n["clock_skew"]) {
    if (auto d = duration(v, path + ".clock_skew")) j.clock_skew = *d;
  }
  if (j.secret.empty() && j.jwks_file.empty() && j.jwks_url.empty()) {
    error(n, path, "has no keys; expected secret (HS256), jwks_file or jwks_url (RS256, ES256)");
    return std::nullopt;
  }
  return j;
}

void ManifestReader::read_gateway_route(const YAML::Node& n, const std::string& path, const AppSpec& app,
                                        GatewaySpec& gw, GatewayRouteSpec& r) {
  r.where = path;
  if (!check_map(n, path, {"path", "host", "methods", "function", "upstream", "rewrite", "strip_prefix", "headers",
                           "response_headers", "preserve_host", "max_body", "timeout", "auth", "cors",
                           "rate_limit", "jwt", "static", "cache"})) {
    return;
  }
  std::optional<RoutePattern> pattern;
  if (auto v = n["path"]; !v) {
    error(n, path + ".path", "is missing; expected a path such as /orders/{id} or /{*rest}");
  } else if (auto p = scalar(v, path + ".path", "a path such as /orders/{id}")) {
    std::string problem;
    pattern = parse_route(*p, &problem);
    if (!pattern) error(v, path + ".path", "'" + *p + "' " + problem);
    else if (p->rfind("/_nimbus/", 0) == 0) error(v, path + ".path", "'" + *p + "' is under /_nimbus/, which Nimbus keeps for itself");
    r.path = *p;
  }
  if (auto v = n["host"]) {
    if (auto h = scalar(v, path + ".host", "a host name such as api.example.com or *.example.com")) {
      std::string host = ascii_lower(*h);
      std::string_view rest = host;
      if (rest.rfind("*.", 0) == 0) rest.remove_prefix(2);
      bool ok = !rest.empty() && std::all_of(rest.begin(), rest.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '-' || c == '.';
      });
      if (!ok) error(v, path + ".host", "'" + *h + "' is not a host name; expected api.example.com or *.example.com (no port)");
      else r.host = host;
    }
  }
  if (auto v = n["methods"]) r.methods = http_methods(v, path + ".methods");
  auto fn = n["function"];
  auto up = n["upstream"];
  auto st = n["static"];
  if (int(bool(fn)) + int(bool(up)) + int(bool(st)) > 1) {
    error(n, path, "names more than one target (function, upstream, static); expected one");
  } else if (!fn && !up && !st) {
    error(n, path, "has no target; expected function: NAME, upstream: NAME (or an http:// URL) or static: {dir}");
  } else if (st) {
    if (check_map(st, path + ".static", {"dir", "index", "spa", "max_age", "max_total"})) {
      StaticSpec s;
      if (auto d = st["dir"]; !d) {
        error(st, path + ".static.dir", "is missing; expected the folder of files, e.g. dir: public");
      } else if (auto text = scalar(d, path + ".static.dir", "a folder")) {
        std::filesystem::path f(*text);
        if (f.is_relative()) f = app_dir() / f;
        if (!std::filesystem::is_directory(f)) error(d, path + ".static.dir", "'" + *text + "' is not a folder (" + f.string() + ")");
        s.dir = f.lexically_normal().string();
      }
      if (auto v = st["index"]) {
        if (auto x = scalar(v, path + ".static.index", "a file name")) s.index = *x;
      }
      if (auto v = st["spa"]) {
        if (auto b = boolean(v, path + ".static.spa")) s.spa = *b;
      }
      if (auto v = st["max_age"]) {
        if (auto d = duration(v, path + ".static.max_age")) s.max_age = *d;
      }
      if (auto v = st["max_total"]) {
        if (auto z = size(v, path + ".static.max_total")) s.max_total = *z;
      }
      r.static_files = std::move(s);
    }
  } else if (fn) {
    if (auto f = scalar(fn, path + ".function", "a function name")) {
      if (!app.find(*f)) {
        std::vector<std::string> names;
        for (const auto& x : app.functions) names.push_back(x.name);
        error(fn, path + ".function", "'" + *f + "' is not a function of this app; expected one of: " + list(names));
      }
      r.function = *f;
    }
  } else if (up.IsScalar() && up.Scalar().find("://") != std::string::npos) {
    // An inline URL: an upstream of its own with the defaults, named after the route.
    UpstreamSpec u;
    u.name = "route" + path.substr(path.find('['));
    if (auto t = upstream_url(up, path + ".upstream")) {
      u.targets.push_back(std::move(*t));
      r.upstream = u.name;
      gw.upstreams.push_back(std::move(u));
    }
  } else if (auto name = scalar(up, path + ".upstream", "an upstream's name or an http:// URL")) {
    if (!gw.find_upstream(*name)) {
      std::vector<std::string> names;
      for (const auto& x : gw.upstreams)
        if (x.name.rfind("route[", 0) != 0) names.push_back(x.name);
      error(up, path + ".upstream",
            "'" + *name + "' is not an upstream under gateway.upstreams" +
                (names.empty() ? std::string("; declare it there or write an http:// URL") : "; expected one of: " + list(names)));
    }
    r.upstream = *name;
  }
  if (auto v = n["rewrite"]) {
    if (auto s = scalar(v, path + ".rewrite", "a path template such as /v2/{rest}")) {
      std::string problem;
      if (s->empty() || s->front() != '/') {
        error(v, path + ".rewrite", "'" + *s + "' does not start with '/'; expected a path template such as /v2/{rest}");
      } else {
        // Every {name} must be a parameter of the route.
        std::size_t at = 0;
        while ((at = s->find('{', at)) != std::string::npos) {
          auto close = s->find('}', at);
          if (close == std::string::npos) {
            error(v, path + ".rewrite", "'" + *s + "' has a '{' with no closing '}'");
            break;
          }
          std::string name = s->substr(at + 1, close - at - 1);
          if (!name.empty() && name.front() == '*') name.erase(0, 1);
          bool known = false;
          if (pattern) {
            for (const auto& seg : pattern->segments)
              if (seg.kind != RouteSegment::Kind::literal && seg.text == name) known = true;
          }
          if (pattern && !known) {
            error(v, path + ".rewrite", "'" + *s + "' uses {" + name + "}, which is not a parameter of the route's path");
          }
          at = close + 1;
        }
        r.rewrite = *s;
      }
    }
  }
  if (auto v = n["strip_prefix"]) {
    if (auto s = scalar(v, path + ".strip_prefix", "a leading part of the path such as /legacy")) {
      if (s->empty() || s->front() != '/' || s->back() == '/') {
        error(v, path + ".strip_prefix", "'" + *s + "' is not a path prefix; expected one such as /legacy (no trailing '/')");
      } else if (r.path.rfind(*s, 0) != 0) {
        error(v, path + ".strip_prefix", "'" + *s + "' is not a prefix of the route's path " + r.path);
      } else if (!r.rewrite.empty()) {
        error(v, path + ".strip_prefix", "cannot be combined with rewrite; expected one of the two");
      } else {
        r.strip_prefix = *s;
      }
    }
  }
  if (auto v = n["headers"]) read_header_edits(v, path + ".headers", r.request_headers);
  if (auto v = n["response_headers"]) read_header_edits(v, path + ".response_headers", r.response_headers);
  if (auto v = n["preserve_host"]) {
    if (auto b = boolean(v, path + ".preserve_host")) r.preserve_host = *b;
  }
  if (auto v = n["max_body"]) {
    if (auto s = size(v, path + ".max_body")) {
      if (*s > app.http.max_body) {
        error(v, path + ".max_body",
              "is over the app's http.max_body (" + std::to_string(app.http.max_body) +
                  " bytes); expected at most that, or raise http.max_body");
      } else {
        r.max_body = *s;
      }
    }
  }
  if (auto v = n["timeout"]) {
    if (!r.function.empty()) {
      error(v, path + ".timeout", "applies to upstream routes; a function's own timeout bounds a function route");
    } else if (auto d = duration(v, path + ".timeout")) {
      r.timeout = *d;
    }
  }
  if (auto v = n["cors"]) r.cors = read_cors(v, path + ".cors");
  if (auto v = n["rate_limit"]) r.rate_limit = read_rate_limit(v, path + ".rate_limit");
  if (auto v = n["cache"]) {
    // cache: 60s, or {ttl: 60s, key: [query, "header:accept-language"]}
    RouteCacheSpec c;
    bool good = true;
    if (v.IsScalar()) {
      if (auto d = duration(v, path + ".cache")) c.ttl = *d;
      else good = false;
    } else if (check_map(v, path + ".cache", {"ttl", "key"})) {
      if (auto t = v["ttl"]) {
        if (auto d = duration(t, path + ".cache.ttl")) c.ttl = *d;
        else good = false;
      }
      if (auto k = v["key"]) {
        c.query = false;
        for (const auto& [item, p] : one_or_list(k, path + ".cache.key")) {
          auto x = scalar(item, p, "query or header:NAME");
          if (!x) {
            good = false;
          } else if (*x == "query") {
            c.query = true;
          } else if (x->rfind("header:", 0) == 0 && x->size() > 7) {
            c.headers.push_back(ascii_lower(x->substr(7)));
          } else {
            error(item, p, "'" + *x + "' is not a cache key part; expected query or header:NAME (header:accept-language)");
            good = false;
          }
        }
      }
    } else {
      good = false;
    }
    if (!r.methods.empty() && std::none_of(r.methods.begin(), r.methods.end(), [](const std::string& m) { return m == "GET" || m == "HEAD"; })) {
      error(v, path + ".cache", "is set, but the route takes no GET or HEAD; only their replies are cached");
      good = false;
    }
    if (good) r.cache = std::move(c);
  }
  if (auto v = n["auth"]) {
    if (auto a = choice(v, path + ".auth", {"anonymous", "function", "jwt", "api_key"})) {
      if (*a == "function" && r.function.empty()) {
        error(v, path + ".auth", "is function (function keys), but the route goes to an upstream; expected anonymous, jwt or api_key");
      }
      r.function_keys = *a == "function";
      r.api_key = *a == "api_key";
      if (*a == "jwt") r.jwt.emplace();
    }
  }
  if (auto v = n["jwt"]; v && check_map(v, path + ".jwt", {"scopes", "claims"})) {
    JwtRule rule;
    if (auto s = v["scopes"]) {
      for (const auto& [item, p] : one_or_list(s, path + ".jwt.scopes")) {
        if (auto x = scalar(item, p, "a scope")) rule.scopes.push_back(*x);
      }
    }
    if (auto c = v["claims"]) {
      if (!c.IsMap()) {
        error(c, path + ".jwt.claims", "is " + kind_of(c) + "; expected a mapping of claim names to values");
      } else {
        for (auto it = c.begin(); it != c.end(); ++it) {
          if (auto x = scalar(it->second, path + ".jwt.claims." + it->first.Scalar(), "a value")) {
            rule.claims.push_back({it->first.Scalar(), *x});
          }
        }
      }
    }
    r.jwt = std::move(rule);
  }
  if (r.jwt && !gw.jwt) {
    error(n, path + ".auth", "asks for a JWT, but gateway.jwt is not set; expected gateway: {jwt: {secret or jwks_file}}");
  }
  if (r.jwt && (r.function_keys || r.api_key)) error(n, path + ".auth", "names jwt and another kind of auth; expected one");
  if (r.static_files && (!r.rewrite.empty() || !r.strip_prefix.empty() || !r.request_headers.empty() || r.timeout || r.cache)) {
    error(n, path, "serves static files: rewrite, strip_prefix, headers, timeout and cache do not apply (the files are held in memory)");
  }
}

void ManifestReader::read_gateway(const YAML::Node& n, AppSpec& app) {
  if (!check_map(n, "gateway", {"upstreams", "routes", "cors", "jwt", "compression", "tls", "cache", "rate_limits"})) {
    return;
  }
  GatewaySpec& gw = app.gateway;
  if (auto v = n["rate_limits"]; v && check_map(v, "gateway.rate_limits", {"shared", "sync"})) {
    if (auto m = v["shared"]) {
      if (auto b = boolean(m, "gateway.rate_limits.shared")) gw.rate_limits.shared = *b;
    }
    if (auto m = v["sync"]) {
      if (auto d = duration(m, "gateway.rate_limits.sync")) {
        if (*d < std::chrono::milliseconds(10) || *d > std::chrono::minutes(1)) {
          error(m, "gateway.rate_limits.sync", "is " + m.Scalar() + "; expected 10ms to 1m");
        } else {
          gw.rate_limits.sync = *d;
        }
      }
    }
  }
  if (auto v = n["cache"]; v && check_map(v, "gateway.cache", {"max_size", "max_object"})) {
    if (auto m = v["max_size"]) {
      if (auto z = size(m, "gateway.cache.max_size")) gw.cache.max_size = *z;
    }
    if (auto m = v["max_object"]) {
      if (auto z = size(m, "gateway.cache.max_object")) gw.cache.max_object = *z;
    }
  }
  if (auto v = n["tls"]; v && check_map(v, "gateway.tls", {"cert", "key", "port", "redirect_http"})) {
    TlsSpec tls;
    bool whole = true;
    for (const char* name : {"cert", "key"}) {
      const std::string path = std::string("gateway.tls.") + name;
      auto item = v[name];
      if (!item) {
        error(v, path, std::string("is missing; expected the ") +
                           (name == std::string("cert") ? "certificate chain" : "private key") + " as a PEM file");
        whole = false;
        continue;
      }
      auto f = app_file(item, path, "a PEM file");
      if (!f) {
        whole = false;
        continue;
      }
      (name == std::string("cert") ? tls.cert : tls.key) = *f;
    }
    if (auto p = v["port"]) {
      if (auto i = integer(p, "gateway.tls.port", 0, 65535)) tls.port = static_cast<int>(*i);
    }
    if (auto r = v["redirect_http"]) {
      if (auto b = boolean(r, "gateway.tls.redirect_http")) tls.redirect_http = *b;
    }
    if (whole) gw.tls = std::move(tls);
  }
  if (auto v = n["compression"]) {
    if (v.IsScalar()) {
      if (auto b = boolean(v, "gateway.compression")) gw.compression = *b;
    } else if (check_map(v, "gateway.compression", {"min_size"})) {
      gw.compression = true;
      if (auto m = v["min_size"]) {
        if (auto z = size(m, "gateway.compression.min_size")) gw.compression_min_size = *z;
      }
    }
  }
  if (auto v = n["cors"]) gw.cors = read_cors(v, "gateway.cors");
  if (auto v = n["jwt"]) gw.jwt = read_jwt(v, "gateway.jwt");
  if (auto ups = n["upstreams"]) {
    if (!ups.IsMap()) {
      error(ups, "gateway.upstreams", "is " + kind_of(ups) + "; expected a mapping of upstream names to URLs or settings");
    } else {
      for (auto it = ups.begin(); it != ups.end(); ++it) {
        std::string name = it->first.Scalar();
        std::string path = "gateway.upstreams." + name;
        if (!is_name(name)) {
          error(it->first, path, "'" + name + "' is not a valid upstream name; expected lowercase letters, digits, '-' or '_'");
          continue;
        }
        UpstreamSpec u;
        u.name = name;
        read_upstream(it->second, path, u);
        gw.upstreams.push_back(std::move(u));
      }
    }
  }
  auto routes = n["routes"];
  if (!routes) {
    if (!gw.cors && !gw.compression && !gw.tls && !n["rate_limits"]) {
      error(n, "gateway.routes", "is missing; expected a list of routes, e.g. - {path: /{*rest}, upstream: monolith}");
    }
    return;
  }
  if (!routes.IsSequence()) {
    error(routes, "gateway.routes", "is " + kind_of(routes) + "; expected a list of routes");
    return;
  }
  for (std::size_t i = 0; i < routes.size(); ++i) {
    GatewayRouteSpec r;
    std::size_t before = diagnostics.size();
    read_gateway_route(routes[i], "gateway.routes[" + std::to_string(i) + "]", app, gw, r);
    if (diagnostics.size() == before) gw.routes.push_back(std::move(r));
  }
  // Two routes with one host, shape and method: the second could never be reached.
  auto overlap = [](const std::vector<std::string>& a, const std::vector<std::string>& b) {
    if (a.empty() || b.empty()) return true;
    for (const auto& m : a)
      if (std::find(b.begin(), b.end(), m) != b.end()) return true;
    return false;
  };
  for (std::size_t i = 0; i < gw.routes.size(); ++i) {
    const auto& a = gw.routes[i];
    if (!a.host.empty()) continue;
    for (const auto& fn : app.functions) {
      for (const auto& t : fn.triggers) {
        for (const auto& pr : t.settings->public_routes()) {
          if (route_shape(pr.route) == route_shape(a.path) && overlap(pr.methods, a.methods)) {
            error(routes[i], a.where, "serves " + a.path + ", which function '" + fn.name +
                                          "' already serves for the same methods; expected each method and path once");
          }
        }
      }
    }
  }
  for (std::size_t i = 0; i < gw.routes.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      const auto& a = gw.routes[i];
      const auto& b = gw.routes[j];
      if (a.host != b.host || route_shape(a.path) != route_shape(b.path)) continue;
      if (overlap(a.methods, b.methods)) {
        error(routes[i], a.where, "serves " + a.path + " for the same host and methods as " + b.where +
                                      "; expected each host, method and path once");
      }
    }
  }
}

}  // namespace nimbus
