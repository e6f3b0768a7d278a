#pragma once
// The HTTP trigger: requests on the public listener become invocations of the function whose
// route matches; the function's reply becomes the response. Host-made failures are JSON
// errors with the right status: 404, 405 (+Allow), 401, 503 (+Retry-After), 504, 500. Upload
// routes store the body as a blob instead of invoking (HttpTriggerSpec::upload_container).
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "core/app_spec.h"
#include "core/clock.h"
#include "triggers/http/function_keys.h"
#include "triggers/http/public_routes.h"
#include "triggers/http/router.h"
#include "triggers/http/server.h"
#include "triggers/trigger.h"

namespace nimbus {

class FunctionPools;
class Logger;
class Metrics;

class Store;

struct HttpTriggerOptions {
  std::string address = "127.0.0.1";
  int port = 0;
  Store* store = nullptr;  // where functions' outputs are committed before the reply
  PublicRoutes* routes = nullptr;  // other kinds' routes, served from start()
};

class HttpTrigger final : public Trigger, public RequestHandler {
 public:
  HttpTrigger(const AppSpec& app, FunctionPools& pools, FunctionKeys keys, EventLoops& loops,
              Logger& logger, Metrics& metrics, const Clock& clock, HttpTriggerOptions options);
  // As the host builds it: listening where the context says, on its loops.
  HttpTrigger(const TriggerContext& context, FunctionKeys keys);
  ~HttpTrigger() override;

  std::string_view kind() const override { return "http"; }
  Status start() override;
  void stop_taking_work() override;
  // Waits up to `grace` for the requests in flight to be answered.
  bool drain(Duration grace) override;
  int in_progress() const override;
  void close() override { server_->close(); }
  int port() const { return port_; }
  int public_port() const override { return port_; }
  void handle(IncomingRequest& request, Responder respond) override;

 private:
  struct RouteTarget {
    int function;
    AuthLevel auth;
    bool asynchronous;
    std::string upload;  // the container of an upload route
    std::function<void(IncomingRequest&, Headers, Responder)> handle;  // another kind's route
  };
  void enqueue_async(const FunctionSpec& fn, Invocation&& inv, Responder respond);
  void job_status(std::string_view id, Responder respond);
  void upload(const std::string& container, Headers params, IncomingRequest& request, Responder respond);

  const AppSpec& app_;
  FunctionPools& pools_;
  FunctionKeys keys_;
  Logger& logger_;
  Metrics& metrics_;
  const Clock& clock_;
  HttpTriggerOptions options_;
  Router router_;
  std::vector<RouteTarget> targets_;
  std::atomic<bool> draining_{false};
  std::unique_ptr<HttpServer> server_;
  int port_ = 0;
};

// /readyz (public and admin listeners): 200 {"status":"ready"}; 503 {"status":"draining"} once
// the host stops taking work; 503 {"status":"store_unavailable","reason":...} while the store
// cannot reach its data (a database that is down), so a load balancer sends work elsewhere.
HttpReply readiness(bool draining, const Store* store);

// What the caller sees for a Result: the function's own reply, or a JSON error.
HttpReply reply_for(Result&& result, std::string_view function, std::string_view invocation_id);

// The first value of query parameter `name` in a raw query string, decoded.
std::optional<std::string> query_param(std::string_view query, std::string_view name);

}  // namespace nimbus
