#include "triggers/api/service_api.h"

#include "core/ids.h"
#include "triggers/http/router.h"

namespace nimbus {
namespace {

Headers query_args(std::string_view query) {
  Headers out;
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    if (!pair.empty()) {
      auto eq = pair.find('=');
      out.push_back({form_decode(pair.substr(0, eq)), eq == std::string_view::npos ? "" : form_decode(pair.substr(eq + 1))});
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return out;
}

}  // namespace

ServiceApi::ServiceApi(Services& services, EventLoops& loops, const HttpSettings& limits)
    : services_(services), loops_(loops), limits_(limits) {}

ServiceApi::~ServiceApi() = default;

Expected<std::string> ServiceApi::start(const std::string& address, int port) {
  server_ = std::make_unique<HttpServer>(loops_, static_cast<RequestHandler&>(*this));
  ListenOptions lo;
  lo.address = address;
  lo.port = port;
  lo.every_loop = false;
  lo.limits = limits_;
  auto bound = server_->listen(lo);
  if (!bound) return bound.error();
  return "http://" + address + ":" + std::to_string(*bound);
}

std::string ServiceApi::issue(const std::string& function) {
  std::string token = new_secret(24);
  std::lock_guard lock(mu_);
  tokens_[token] = function;
  return token;
}

void ServiceApi::revoke(const std::string& token) {
  std::lock_guard lock(mu_);
  tokens_.erase(token);
}

void ServiceApi::stop_accepting() {
  if (server_) server_->stop_accepting();
}

void ServiceApi::close() {
  if (server_) server_->close();
}

void ServiceApi::handle(IncomingRequest& request, Responder respond) {
  std::string_view target = request.target();
  auto q = target.find('?');
  std::string_view path = target.substr(0, q);
  std::string caller;
  {
    auto auth = request.header("authorization");
    std::string_view presented = auth && auth->size() > 7 && auth->substr(0, 7) == "Bearer " ? auth->substr(7) : "";
    std::lock_guard lock(mu_);
    // Tokens are random, 192 bits: a map lookup leaks nothing worth a constant-time compare.
    auto it = tokens_.find(std::string(presented));
    if (it != tokens_.end()) caller = it->second;
  }
  if (caller.empty()) {
    return respond(json_error(401, "unauthorized", "send the instance's NIMBUS_API_TOKEN as Authorization: Bearer TOKEN", ""));
  }
  if (path.rfind("/v1/", 0) != 0 || request.method() != "POST") {
    return respond(json_error(404, "not_found", "expected POST /v1/OP (state.get, state.put, state.delete, state.list, publish, enqueue, invoke)", ""));
  }
  ServiceCall c;
  c.op = std::string(path.substr(4));
  c.args = query_args(q == std::string_view::npos ? std::string_view() : target.substr(q + 1));
  c.body = request.take_body();
  c.caller = caller;
  if (auto tp = request.header("traceparent")) {
    c.traceparent = std::string(*tp);
    c.tracestate = continue_tracestate(*tp, tracestate_of(request));
  }
  services_.call(std::move(c), [respond = std::move(respond)](ServiceResult r) {
    if (!r.ok) {
      bool conflict = r.error.rfind("conflict", 0) == 0;
      return respond(json_error(conflict ? 409 : 400, conflict ? "conflict" : "refused", r.error, ""));
    }
    HttpReply reply{200, {{"content-type", "application/octet-stream"}}, std::move(r.body)};
    for (auto& f : r.fields) reply.headers.push_back({"x-nimbus-" + f.name, std::move(f.value)});
    respond(std::move(reply));
  });
}

}  // namespace nimbus
