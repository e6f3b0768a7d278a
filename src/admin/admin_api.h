#pragma once
// The admin API: a second listener (loopback by default) for operators and the CLI.
// /healthz, /readyz and /metrics are open; everything under /admin/ needs the bearer token
// from .nimbus/admin.token (401 otherwise):
//   GET  /admin/functions              functions, their routes and settings (secrets masked)
//   POST /admin/functions/NAME/invoke  invoke with the request body as payload
//   GET  /admin/status                 host status
//   POST /admin/shutdown               graceful stop (as SIGTERM)
//   POST /admin/reload                 re-read nimbus.yaml; apply gateway changes in place
//   GET|POST /admin/keys, DELETE /admin/keys/NAME   the gateway's API keys (list, create, revoke)
//   GET  /admin/queues                 every queue: ready, delayed, in flight, dead
//   POST /admin/queues/NAME/messages   enqueue the body (ce-type, ce-subject, x-delay-ms headers)
//   GET  /admin/queues/NAME/messages   peek (?limit=N); NAME.dead for dead letters
//   DELETE /admin/queues/NAME/messages purge
//   POST /admin/queues/NAME/replay     move NAME.dead back to NAME
//   POST /admin/topics/NAME/messages   publish the body
//   GET  /admin/timers                 every schedule: function, cron, zone, last and next run
//   GET  /admin/blobs/CONTAINER        list (?prefix=&after=&limit=)
//   PUT  /admin/blobs/CONTAINER/PATH   put the body (content-type, If-Match, If-None-Match: *)
//   GET  /admin/blobs/CONTAINER/PATH   the bytes (etag, x-blob-version, x-blob-sha256 headers)
//   DELETE /admin/blobs/CONTAINER/PATH delete
// and a GET for each view a trigger adds (Trigger::admin_views). Routed by a Router, as the
// public listener is: 404 for no endpoint, 405 with Allow, 400 for a path that does not decode.
#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "core/app_spec.h"
#include "core/clock.h"
#include "core/expected.h"
#include "triggers/http/router.h"
#include "triggers/http/server.h"
#include "triggers/trigger.h"

namespace nimbus {

class FunctionPools;
class Logger;
class Store;
class Metrics;

// Reads the token, creating it (mode 0600) when missing.
Expected<std::string> load_or_create_admin_token(const std::filesystem::path& file);

// An endpoint another part serves on the admin listener (deploy/), behind the token. Called
// on an event loop: what blocks goes to a thread of its own, which answers through `respond`.
struct AdminEndpoint {
  std::string pattern;               // "/admin/aliases/{name}"
  std::vector<std::string> methods;  // {"PUT"}
  std::function<void(IncomingRequest& request, const std::vector<std::string>& params, Responder respond)> handle;
};

struct AdminStatus {
  int pid = 0;
  std::string http_url;
  std::string admin_url;
  TimePoint started{};
  std::atomic<bool> draining{false};
};

class AdminApi final : private RequestHandler {
 public:
  AdminApi(const AppSpec& app, FunctionPools& pools, Metrics& metrics, Logger& logger,
           const Clock& clock, std::string token, AdminStatus& status,
           std::function<void()> request_shutdown, Store* store = nullptr);
  // What the triggers add (Trigger::admin_views, status_fields); before start().
  void add(std::vector<AdminView> views, std::vector<StatusField> fields);
  void add(std::vector<AdminEndpoint> endpoints);
  // More Prometheus text appended to /metrics (deploy/: per-version metrics). Called on an
  // event loop: it must not block (what reads the store goes through a ScrapeCache,
  // observe/host_metrics.h).
  void add_metrics(std::function<std::string()> render) { extra_metrics_.push_back(std::move(render)); }
  // What POST /admin/reload does: the host re-reads its manifest off the loops and answers.
  void on_reload(std::function<void(Responder)> reload) { reload_ = std::move(reload); }
  ~AdminApi() override;
  Expected<int> start(EventLoops& loops, const std::string& address, int port);
  void stop_accepting();
  void close();
  int in_progress() const;

 private:
  void handle(IncomingRequest& request, Responder respond) override;
  // Only an /admin/ request that carries the token has its body read whole (up to a deploy's
  // 256 MiB) before handle(); any other is answered from its head and its body is never read,
  // so no one without the token makes the host take in more than a head.
  std::optional<uint64_t> streams_body(IncomingRequest& head) override;
  bool has_token(IncomingRequest& request) const;
  void invoke(IncomingRequest& request, std::string_view function, Responder respond);
  void messages(IncomingRequest& request, std::string_view path, std::string_view method, Responder respond);
  void list_queues(const Responder& respond);  // on a store I/O thread
  void streams(IncomingRequest& request, std::string_view path, std::string_view method, Responder respond);
  void blobs(IncomingRequest& request, std::string_view path, std::string_view method, Responder respond);
  void api_keys(IncomingRequest& request, const std::vector<std::string>& params, std::string_view method, Responder respond);
  // Orchestration instances (durable/client.h): /admin/orchestrations[/<name>], /admin/instances/...
  void orchestrations(IncomingRequest& request, int target, const std::vector<std::string>& params, Responder respond);
  // What the router's targets stand for: the endpoints, then each trigger's view.
  enum Endpoint : int {
    kFunctions, kStatus, kShutdown, kReload, kKeys, kMessages, kStreams, kBlobs, kInvoke,
    kOrchestrations, kOrchestrationStart, kInstance, kInstanceAction, kViews,
    kEndpoints = 100000
  };
  void route(std::string_view pattern, std::vector<std::string> methods, int target);
  std::string functions_json() const;
  std::string status_json() const;

  const AppSpec& app_;
  FunctionPools& pools_;
  Metrics& metrics_;
  Logger& logger_;
  const Clock& clock_;
  std::string token_;
  AdminStatus& status_;
  std::function<void()> request_shutdown_;
  std::function<void(Responder)> reload_;
  Router router_;  // everything under /admin/, once the token is checked
  Store* store_;
  std::map<std::string, std::string> orchestration_versions_;  // name -> code version, read at start
  std::vector<AdminView> views_;
  std::vector<StatusField> fields_;
  std::vector<AdminEndpoint> endpoints_;  // router targets kEndpoints + index
  std::vector<std::function<std::string()>> extra_metrics_;
  std::unique_ptr<HttpServer> server_;
};

}  // namespace nimbus
