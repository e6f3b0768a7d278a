#pragma once
// The trigger seam. Each kind (http, queue, timer, ...) lives in its own folder under
// triggers/, turns a source into Invocations, hands them to the function's pool and completes
// them with the Result. The host builds one Trigger per kind the app uses, from the registry
// (triggers/registry.cpp), and knows no kind by name: it starts them all, and on shutdown
// stops them taking work, drains them within the grace period, and closes them.
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/app_spec.h"
#include "core/clock.h"
#include "core/expected.h"

namespace nimbus {

class EventLoops;
class FunctionPools;
class Logger;
class Metrics;
class PublicRoutes;
class Store;

// What every trigger is built from: one object, the same for all kinds.
struct TriggerContext {
  const AppSpec& app;
  FunctionPools& pools;
  Store& store;
  const Clock& clock;
  Timers timers;
  Logger& logger;
  Metrics* metrics = nullptr;    // the host's; null in tests that do not look
  EventLoops* loops = nullptr;   // the host's event loops (listeners run on them)
  PublicRoutes* routes = nullptr;  // routes kinds add to the public listener (http/public_routes.h)
  std::string http_address = "127.0.0.1";  // where the public HTTP listener binds
  int http_port = 0;                       // 0: any free port
  int https_port = -1;                     // the TLS listener's (gateway.tls); -1: the manifest's
  std::string host_id{};  // this host's id in the registry (host/cluster.h); empty: a new one
};

// The state store where every host on a store keeps its registry record (host/cluster.h),
// keyed by host id, with a time to live: what is there is alive.
inline constexpr const char* kHostsStateStore = "_hosts";

// A read-only view a trigger adds to the admin API (`GET <path>`): a JSON document made when
// asked, off the event loop (it may read the store).
struct AdminView {
  std::string path;  // "/admin/timers"
  std::function<std::string()> json;
};

// A field a trigger adds to `GET /admin/status`, `name: <json>`; cheap, made on the loop.
struct StatusField {
  std::string name;  // "mqtt"
  std::function<std::string()> json;
};

class Trigger {
 public:
  virtual ~Trigger() = default;
  virtual std::string_view kind() const = 0;
  virtual Status start() = 0;
  // Takes no new work from here on, and returns at once; what it took runs on.
  virtual void stop_taking_work() = 0;
  // Waits at most `grace` for the work it took to finish, commits included. False when some
  // was still under way: that work is redelivered or retried at the next start.
  virtual bool drain(Duration grace) = 0;
  // Both, as a test or a tool stops one trigger: false as drain.
  bool stop(Duration grace) {
    stop_taking_work();
    return drain(grace);
  }
  // Invocations (or requests) taken and not yet completed.
  virtual int in_progress() const { return 0; }
  // Once nothing is in flight anywhere: closes its connections (on their own loops).
  virtual void close() {}
  // The port of the public listener, for the kind that has one (the host announces it).
  virtual int public_port() const { return 0; }
  // The port of its TLS listener, if it has one.
  virtual int secure_port() const { return 0; }
  // What it shows through the admin API.
  virtual std::vector<AdminView> admin_views() { return {}; }
  // A changed manifest while running (`nimbus reload`): the kind takes what it can change in
  // place (the gateway's routes and upstreams) from `next`, or says why not. Blocking is fine:
  // the host calls it off the event loops. The host has checked that nothing else changed.
  virtual Status apply(const AppSpec& next) {
    (void)next;
    return ok_status();
  }
  virtual std::vector<StatusField> status_fields() { return {}; }
  // More Prometheus text for /metrics (the timers' last and next runs). Called on a store I/O
  // thread, through the host's ScrapeCache: it may read the store.
  virtual void metrics_text(std::string& out) { (void)out; }
};

}  // namespace nimbus
