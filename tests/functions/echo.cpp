// Echoes what it was given, so tests can see exactly what crossed the ABI.
//   ?raw=1      the body back, byte for byte, as application/octet-stream
//   ?status=N   reply with status N
//   ?latin1=1   a reply header whose value is not UTF-8 ("caf\xe9")
//   ?trace=1    JSON: traceparent, tracestate and trace_headers() of the invocation
//   otherwise   JSON: method, path, query, params, headers, body size
#include <nimbus/function.h>

#include <string>

static std::string esc(std::string_view s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o;
}

nimbus::Response echo(const nimbus::Request& req, nimbus::Context& ctx) {
  int status = 200;
  if (auto s = req.query_param("status")) status = std::stoi(*s);
  if (req.query_param("raw")) return nimbus::Response::bytes(status, std::string(req.body()));
  if (req.query_param("latin1")) return nimbus::Response::text(status, "latin1").header("x-latin1", "caf\xe9");
  if (req.query_param("trace")) {
    std::string j = "{\"traceparent\":\"" + esc(ctx.traceparent()) + "\",\"tracestate\":\"" + esc(ctx.tracestate()) +
                    "\",\"trace_headers\":[";
    bool first = true;
    for (const auto& [name, value] : ctx.trace_headers()) {
      j += std::string(first ? "" : ",") + "[\"" + esc(name) + "\",\"" + esc(value) + "\"]";
      first = false;
    }
    return nimbus::Response::json(status, j + "]}");
  }
  std::string j = "{\"method\":\"" + esc(req.method()) + "\",\"path\":\"" + esc(req.path()) +
                  "\",\"query\":\"" + esc(req.query()) + "\",\"trigger\":\"" + esc(req.trigger()) +
                  "\",\"invocation_id\":\"" + esc(ctx.invocation_id()) + "\",\"params\":{";
  bool first = true;
  for (const char* name : {"id", "item", "path"}) {
    if (auto p = req.param(name)) {
      j += std::string(first ? "" : ",") + "\"" + name + "\":\"" + esc(*p) + "\"";
      first = false;
    }
  }
  j += "},\"headers\":{";
  first = true;
  req.for_each_header([&](std::string_view n, std::string_view v) {
    j += std::string(first ? "" : ",") + "\"" + esc(n) + "\":\"" + esc(v) + "\"";
    first = false;
  });
  j += "},\"body_size\":" + std::to_string(req.body().size()) + "}";
  return nimbus::Response::json(status, j).header("x-echo", "yes");
}
NIMBUS_FUNCTION(echo)
