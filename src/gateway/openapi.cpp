#include "gateway/openapi.h"

#include <boost/json.hpp>
#include <algorithm>

#include "core/route_pattern.h"
#include "core/units.h"
#include "core/text.h"

namespace nimbus {
namespace {

namespace json = boost::json;

struct Row {
  std::string host, path;
  std::vector<std::string> methods;
  std::string kind;    // function, upstream
  std::string target;  // the function's or upstream's name
  std::string auth;    // anonymous, function, jwt
  const GatewayRouteSpec* gateway = nullptr;
};

std::vector<Row> rows(const AppSpec& app, const GatewaySpec& gw) {
  std::vector<Row> out;
  for (const auto& fn : app.functions) {
    for (const auto& t : fn.triggers) {
      for (const auto& r : t.settings->public_routes()) {
        out.push_back({"", r.route, r.methods, "function", fn.name,
                       r.auth == AuthLevel::function ? "function" : "anonymous", nullptr});
      }
    }
  }
  for (const auto& r : gw.routes) {
    out.push_back({r.host, r.path, r.methods,
                   r.static_files ? "static" : r.function.empty() ? "upstream" : "function",
                   r.static_files ? r.static_files->dir : r.function.empty() ? r.upstream : r.function,
                   r.jwt ? "jwt" : r.function_keys ? "function" : "anonymous", &r});
  }
  return out;
}

// OpenAPI has no catch-all: {*rest} is written {rest} and marked.
std::string openapi_path(const std::string& route) {
  std::string out = route;
  for (std::size_t at = out.find("{*"); at != std::string::npos; at = out.find("{*")) out.erase(at + 1, 1);
  return out;
}

}  // namespace

std::string openapi_document(const AppSpec& app, const GatewaySpec& gw) {
  json::object paths;
  int operations = 0;
  for (const auto& row : rows(app, gw)) {
    const std::string key = openapi_path(row.path);
    if (!paths[key].is_object()) paths[key].emplace_object();
    json::array parameters;
    if (auto pattern = parse_route(row.path, nullptr)) {
      for (const auto& seg : pattern->segments) {
        if (seg.kind == RouteSegment::Kind::literal) continue;
        json::object p{{"name", seg.text}, {"in", "path"}, {"required", true}, {"schema", {{"type", "string"}}}};
        if (seg.kind == RouteSegment::Kind::rest) p["x-nimbus-catch-all"] = true;
        parameters.push_back(std::move(p));
      }
    }
    std::vector<std::string> methods = row.methods;
    if (methods.empty()) methods = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    for (const auto& m : methods) {
      json::object op{{"operationId", (row.kind == "static" ? std::string("static") : row.target) + "_" + ascii_lower(m) + "_" +
                                           std::to_string(++operations)},
                      {"summary", row.kind + " " + row.target},
                      {"responses", {{"default", {{"description", row.kind == "function" ? "the function's reply"
                                                                 : row.kind == "static" ? "a file" : "the upstream's reply"}}}}}};
      if (!parameters.empty()) op["parameters"] = parameters;
      if (!row.host.empty()) op["x-nimbus-host"] = row.host;
      if (row.auth == "function") op["security"] = json::array{json::object{{"functionKey", json::array{}}}};
      if (row.auth == "jwt") {
        json::array scopes;
        for (const auto& s : row.gateway->jwt->scopes) scopes.push_back(json::value(s));
        op["security"] = json::array{json::object{{"bearer", std::move(scopes)}}};
      }
      if (row.gateway && row.gateway->rate_limit) op["x-nimbus-rate-limit"] = row.gateway->rate_limit->text;
      paths[key].as_object()[ascii_lower(m)] = std::move(op);
    }
  }
  json::object doc{
      {"openapi", "3.0.3"},
      {"info", {{"title", app.name}, {"version", "1"}, {"description", "Routes served by Nimbus (generated)"}}},
      {"paths", std::move(paths)},
      {"components",
       {{"securitySchemes",
         {{"functionKey", {{"type", "apiKey"}, {"in", "header"}, {"name", "x-functions-key"}}},
          {"bearer", {{"type", "http"}, {"scheme", "bearer"}, {"bearerFormat", "JWT"}}}}}}}};
  return json::serialize(doc);
}

std::string routes_json(const AppSpec& app, const GatewaySpec& gw) {
  json::array out;
  for (const auto& row : rows(app, gw)) {
    json::array methods;
    for (const auto& m : row.methods) methods.push_back(json::value(m));
    json::object o{{"host", row.host.empty() ? "*" : row.host},
                   {"path", row.path},
                   {"methods", std::move(methods)},
                   {"kind", row.kind},
                   {"target", row.target},
                   {"auth", row.auth}};
    if (row.gateway) {
      const auto& g = *row.gateway;
      if (g.rate_limit) o["rate_limit"] = g.rate_limit->text;
      if (g.cors || gw.cors) o["cors"] = true;
      if (g.timeout) o["timeout_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(*g.timeout).count();
      if (g.max_body) o["max_body"] = *g.max_body;
      if (!g.rewrite.empty()) o["rewrite"] = g.rewrite;
      if (!g.strip_prefix.empty()) o["strip_prefix"] = g.strip_prefix;
    } else if (gw.cors) {
      o["cors"] = true;
    }
    out.push_back(std::move(o));
  }
  return json::serialize(json::object{{"routes", std::move(out)}});
}

}  // namespace nimbus
