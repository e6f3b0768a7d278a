#include "gateway/gateway.h"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>

#include "triggers/http/server.h"
#include "core/ids.h"
#include "core/text.h"
#include "observe/trace.h"

namespace nimbus {
namespace {

bool connection_names(std::string_view connection, std::string_view lowered_name) {
  while (!connection.empty()) {
    auto comma = connection.find(',');
    std::string_view token = connection.substr(0, comma);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (token.size() == lowered_name.size() &&
        std::equal(token.begin(), token.end(), lowered_name.begin(),
                   [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; })) {
      return true;
    }
    if (comma == std::string_view::npos) break;
    connection.remove_prefix(comma + 1);
  }
  return false;
}

// RFC 7239 node: an IPv6 address is quoted in brackets.
std::string forwarded_node(const std::string& ip) {
  if (ip.empty()) return "unknown";
  if (ip.find(':') != std::string::npos) return "\"[" + ip + "]\"";
  return ip;
}


// The route's parameters as the request spelled them (still percent-encoded), by walking the
// route template beside the raw path: a rewrite forwards exactly what the client sent.
std::vector<std::pair<std::string, std::string_view>> raw_params(std::string_view route, std::string_view path) {
  std::vector<std::pair<std::string, std::string_view>> out;
  if (!route.empty() && route.front() == '/') route.remove_prefix(1);
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  while (!route.empty()) {
    auto rs = route.find('/');
    std::string_view seg = route.substr(0, rs);
    route = rs == std::string_view::npos ? std::string_view() : route.substr(rs + 1);
    if (seg.size() >= 2 && seg.front() == '{') {
      std::string_view name = seg.substr(1, seg.size() - 2);
      if (!name.empty() && name.front() == '*') {
        std::string_view rest = path;
        if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
        out.emplace_back(std::string(name.substr(1)), rest);
        return out;
      }
      auto ps = path.find('/');
      out.emplace_back(std::string(name), path.substr(0, ps));
    }
    auto ps = path.find('/');
    path = ps == std::string_view::npos ? std::string_view() : path.substr(ps + 1);
  }
  return out;
}

}  // namespace

bool is_claims_header(std::string_view name) {
  const std::string_view want = kClaimsHeader;
  if (name.size() != want.size()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = static_cast<char>(std::tolower(static_cast<unsigned char>(name[i])));
    if (c == '_') c = '-';
    if (c != want[i]) return false;
  }
  return true;
}

std::string target_path(const GatewayRouteSpec& route, std::string_view raw_path) {
  if (!route.rewrite.empty()) {
    const auto params = raw_params(route.path, raw_path);
    std::string out;
    const std::string& t = route.rewrite;
    std::size_t i = 0;
    while (i < t.size()) {
      if (t[i] != '{') {
        out.push_back(t[i++]);
        continue;
      }
      auto close = t.find('}', i);
      std::string_view name = std::string_view(t).substr(i + 1, close - i - 1);
      if (!name.empty() && name.front() == '*') name.remove_prefix(1);
      for (const auto& [n, value] : params) {
        if (n == name) {
          out += value;
          break;
        }
      }
      i = close + 1;
    }
    // Collapse the "//" an empty catch-all leaves ("/v2/{rest}" for "/"), and never send "".
    std::string clean;
    for (char c : out)
      if (!(c == '/' && !clean.empty() && clean.back() == '/')) clean.push_back(c);
    if (clean.empty()) clean = "/";
    return clean;
  }
  if (!route.strip_prefix.empty() && raw_path.rfind(route.strip_prefix, 0) == 0) {
    std::string_view rest = raw_path.substr(route.strip_prefix.size());
    if (rest.empty()) return "/";
    if (rest.front() != '/') return std::string(raw_path);  // /legacyx is not under /legacy
    return std::string(rest);
  }
  return std::string(raw_path);
}

void edit_headers(const HeaderEdits& edits, Headers& headers) {
  if (edits.empty()) return;
  for (const auto& name : edits.remove) {
    std::erase_if(headers, [&](const Header& h) { return ascii_lower(h.name) == name; });
  }
  for (const auto& h : edits.set) {
    std::erase_if(headers, [&](const Header& x) { return ascii_lower(x.name) == h.name; });
    headers.push_back(h);
  }
}

Gateway::Gateway(std::shared_ptr<const GatewaySpec> spec, EventLoops& loops, Tracer* tracer)
    : spec_(std::move(spec)), tracer_(tracer) {
  for (const auto& u : spec_->upstreams) upstreams_.emplace(u.name, std::make_unique<Upstream>(u, loops));
}

Gateway::~Gateway() = default;

Status Gateway::start() {
  for (auto& [name, u] : upstreams_) {
    if (auto st = u->start(); !st) return st;
  }
  return ok_status();
}

void Gateway::stop() {
  for (auto& [name, u] : upstreams_) u->stop();
}

void Gateway::retire() {
  for (auto& [name, u] : upstreams_) u->retire();
}

Upstream* Gateway::upstream_of(const GatewayRouteSpec& route) const {
  if (route.upstream.empty()) return nullptr;
  auto it = upstreams_.find(route.upstream);
  return it == upstreams_.end() ? nullptr : it->second.get();
}

void Gateway::proxy(const GatewayRouteSpec& route, Upstream& upstream, IncomingRequest& request, std::string_view path,
                    std::string_view query, std::string body, std::vector<Header> reply_headers, const std::string& claims,
                    Responder respond) {
  ProxyRequest p;
  p.reply_headers = std::move(reply_headers);
  p.method = std::string(request.method());
  p.target = target_path(route, path);
  if (!query.empty()) {
    p.target += '?';
    p.target += query;
  }
  p.body = std::move(body);
  p.body_stream = request.body_stream();
  p.timeout = route.timeout.value_or(Duration{});
  p.response_edits = route.response_headers.empty() ? nullptr : &route.response_headers;
  if (p.response_edits) p.owner = spec_;

  std::string_view connection = request.header("connection").value_or(std::string_view());
  std::string_view client_host = request.header("host").value_or(std::string_view());
  // A WebSocket handshake (or another upgrade) on GET: passed through, and on a 101 the
  // listener splices the two connections.
  if (p.method == "GET" && !connection.empty() && connection_names(connection, "upgrade")) {
    if (auto u = request.header("upgrade"); u && !u->empty()) p.upgrade = std::string(*u);
  }
  std::string prior_xff, prior_forwarded;
  std::string& block = p.header_block;
  block.reserve(512);
  char lowered[64];
  request.for_each_header([&](std::string_view name, std::string_view value) {
    // Lower case on the stack: names past 63 bytes are no header the proxy treats specially.
    const std::size_t n = std::min(name.size(), sizeof lowered - 1);
    for (std::size_t i = 0; i < n; ++i) lowered[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(name[i])));
    const std::string_view l(lowered, name.size() < sizeof lowered ? n : 0);
    if (is_hop_by_hop(l) || l == "host" || l == "content-length" || l == "expect") return;
    if (!connection.empty() && connection_names(connection, l)) return;
    if (l == "x-forwarded-for") {
      prior_xff = prior_xff.empty() ? std::string(value) : prior_xff + ", " + std::string(value);
      return;
    }
    if (l == "forwarded") {
      prior_forwarded = prior_forwarded.empty() ? std::string(value) : prior_forwarded + ", " + std::string(value);
      return;
    }
    if (l == "x-forwarded-proto" || l == "x-forwarded-host" || is_claims_header(l)) return;  // ours: this is the edge
    if (route.api_key && l == "x-api-key") return;  // the gateway's to check; the upstream gets the name
    if (l == "traceparent") return;                 // continued below: the gateway's span is the parent
    if (std::find(route.request_headers.remove.begin(), route.request_headers.remove.end(), l) !=
        route.request_headers.remove.end()) {
      return;
    }
    bool replaced = false;
    for (const auto& s : route.request_headers.set) replaced = replaced || s.name == l;
    if (replaced) return;
    block += name;
    block += ": ";
    block += value;
    block += "\r\n";
  });
  if (!claims.empty()) {
    block += "X-Nimbus-Claims: ";
    block += claims;
    block += "\r\n";
  }
  for (const auto& s : route.request_headers.set) {
    block += s.name;
    block += ": ";
    block += s.value;
    block += "\r\n";
  }
  const std::string client = request.remote_address();
  block += "X-Forwarded-For: ";
  if (!prior_xff.empty()) block += prior_xff + ", ";
  block += client.empty() ? "unknown" : client;
  const char* proto = request.secure() ? "https" : "http";
  block += "\r\nX-Forwarded-Proto: ";
  block += proto;
  block += "\r\n";
  if (!client_host.empty()) {
    block += "X-Forwarded-Host: ";
    block += client_host;
    block += "\r\n";
  }
  block += "Forwarded: ";
  if (!prior_forwarded.empty()) block += prior_forwarded + ", ";
  block += "for=" + forwarded_node(client);
  if (!client_host.empty() && client_host.find_first_of("\";, ") == std::string_view::npos) {
    block += ";host=";
    block += client_host;
  }
  block += ";proto=";
  block += proto;
  block += "\r\n";
  // W3C trace context: the client's trace goes on (or one starts here), with the gateway's
  // span as the upstream's parent; a sampled one is recorded when the reply's head comes.
  const std::string_view incoming = request.header("traceparent").value_or(std::string_view());
  const std::string traceparent = continue_trace(incoming);
  block += "traceparent: ";
  block += traceparent;
  block += "\r\n";
  if (tracer_ && trace_sampled(traceparent)) {
    Span span;
    span.trace_id = trace_id_of(traceparent);
    span.span_id = span_id_of(traceparent);
    if (incoming.size() >= 55 && incoming.substr(3, 32) == span.trace_id.view()) {
      span.parent_span_id = span_id_of(incoming);
      span.trace_state = continue_tracestate(incoming, tracestate_of(request));  // the client's trace's
    }
    span.name = p.method + " " + route.path;
    span.kind = SpanKind::server;
    span.start_unix_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    span.attributes.emplace_back("http.request.method", p.method);
    span.attributes.emplace_back("http.route", route.path);
    span.attributes.emplace_back("nimbus.upstream", route.upstream);
    respond = intercept(std::move(respond), [tracer = tracer_, span = std::move(span)](HttpReply& reply) mutable {
      span.end_unix_ns =
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
      span.attributes.emplace_back("http.response.status_code", static_cast<int64_t>(reply.status));
      span.error = reply.status >= 500;
      tracer->record(std::move(span));
    });
  }
  if (route.preserve_host) p.host = std::string(client_host);
  upstream.forward(std::move(p), std::move(respond));
}

std::string Gateway::status_json() const {
  boost::json::array ups;
  for (const auto& [name, u] : upstreams_) {
    boost::json::array targets;
    for (const auto& t : u->status()) {
      targets.push_back(boost::json::object{{"url", t.url},
                                            {"healthy", t.healthy},
                                            {"breaker", t.breaker},
                                            {"in_flight", t.in_flight},
                                            {"requests", t.requests},
                                            {"failures", t.failures}});
    }
    ups.push_back(boost::json::object{{"name", name}, {"targets", std::move(targets)}});
  }
  return boost::json::serialize(boost::json::object{{"upstreams", std::move(ups)}});
}

}  // namespace nimbus
