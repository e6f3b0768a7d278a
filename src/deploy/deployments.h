#pragma once
// A host's versions: the code of each version its aliases name, loaded (unpacked from the
// store, native functions built, instances warmed) before any traffic moves to it, and the
// routing of every function's invocations over them (pool/function_pool.h VersionRoutes), so
// that HTTP, queues, topics, streams, timers and every other trigger follow the `live` alias
// with no message lost or handled twice: the triggers and their leases stay as they are, only
// where an invocation runs changes. A version whose weight goes to 0 finishes what it runs.
//
// Until the first deploy nothing of this runs: the folder's code is all there is. From then on
// the folder the host was started from is a version too (kept in the store, leaving out its
// file triggers' folders and what .nimbusignore lists); at a start it becomes `live` unless
// `live` names it already, or the host serves what is deployed (`nimbus start --deployed`,
// for hosts behind a load balancer that CI deploys to).
//
// A version may change its functions' code and code settings (runtime, handler, env, limits,
// instances, isolation), not the triggers: a deploy that changes what the running triggers
// use is refused, saying what differs (restart the host with the new folder for those).
//
// Work that blocks (the store, unpacking, native builds, warm-ups) runs on a thread of its
// own, one thing at a time; every `refresh` it reads the aliases again, so every host on a
// shared store follows a change another host made.
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "admin/admin_api.h"
#include "core/app_spec.h"
#include "core/clock.h"
#include "core/expected.h"
#include "deploy/versions.h"
#include "observe/log.h"
#include "pool/function_pool.h"

namespace nimbus {
class FunctionPools;
class Store;
}  // namespace nimbus

namespace nimbus::deploy {

// A version's pools, one per function, made and warmed from its app (the host knows how).
using PoolFactory = std::function<Expected<std::map<std::string, std::shared_ptr<FunctionPool>>>(const AppSpec& app)>;

struct DeploymentsOptions {
  bool serve_deployed = false;  // the folder does not become live by itself
  Duration refresh = std::chrono::seconds(1);
  // This host's id among the hosts on its store: while an alias splits traffic, each host
  // shares what its versions served there under it, and a canary is judged on all of them.
  std::string host_id;
};

// Runs `app`'s migration functions (`migration: true`), in manifest order, each through the
// pool `pool_of` gives and waiting for it; the first that fails is the error, and none after it
// runs. `version` is what the functions are told they prepare ("v4"; "folder" at a start).
// Blocks: a start's thread or the deploy thread.
Status run_migrations(const AppSpec& app, const std::function<FunctionPool*(const std::string&)>& pool_of,
                      const std::string& version, const Clock& clock, Logger& logger);

class Deployments {
 public:
  Deployments(const AppSpec& base, FunctionPools& pools, Store& store, const Clock& clock, Logger& logger,
              PoolFactory factory);
  ~Deployments();

  // Before the triggers start: keeps the folder as a version, loads what the aliases name and
  // routes the functions; then the thread starts. An error stops the host from starting.
  Status start(const DeploymentsOptions& options);
  void stop();

  // POST /admin/versions (a package: deploy), GET /admin/versions, GET /admin/aliases,
  // PUT /admin/aliases/NAME, POST /admin/aliases/NAME/rollback, POST /admin/swap.
  std::vector<AdminEndpoint> endpoints();
  StatusField status_field();
  // Per-version metrics in the Prometheus text format (appended to /metrics): invocations by
  // function, version and outcome, their latency, and each alias's weights. "" until versions.
  std::string metrics_text() const;
  // Invocations running in the versions' own pools (the host waits for them at shutdown).
  int running() const;

 private:
  struct Loaded;
  struct Totals {
    uint64_t calls = 0, errors = 0;
    uint64_t buckets[PoolStats::kBuckets] = {};  // warm calls' latency (PoolStats::warm_buckets)
  };
  struct Canary {
    std::string alias, version;
    std::vector<Target> before;  // what the alias named when it began (a rollback goes back to it)
    AppSpec::Canary spec;
    std::size_t step = 0;
    TimePoint step_started{};
    std::map<std::string, Totals> at_step_start;  // by host
    std::vector<Target> set;  // what it last set the alias to (a change by hand stops it)
  };
  void run();
  bool post(std::function<void()> job);  // false: stopping
  // On the thread: reads the aliases, loads what they name, routes.
  void refresh();
  // The folder kept as a version (once anything is deployed), and live when nothing else is.
  Status ensure_base();
  Expected<std::shared_ptr<Loaded>> load(const Version& version, const std::string* package);
  void route(const std::vector<Alias>& aliases);
  // Tags a version's pools with its id and its orchestrators' code versions.
  void tag(Loaded& l);
  // On the thread, every refresh: a loaded version that `named` leaves out (and no canary is
  // judging) and that has run nothing for the app's unload_after is taken out of loaded_ (the
  // route() after it stops sending anything there); those taken out a few seconds ago, with
  // nothing running, have their pools closed and dropped.
  void unload_idle(const std::set<std::string>& named);
  void drop_unloaded();
  // From any thread: loads version `id` here (for an orchestration that started on it).
  void request_load(const std::string& id);
  // The admin operations, on the thread.
  HttpReply deploy(const std::string& package, const std::string& message, const std::string& alias, int weight);
  HttpReply set_alias(const std::string& name, const std::string& body);
  HttpReply rollback(const std::string& name);
  HttpReply swap(const std::string& a, const std::string& b);
  HttpReply versions_reply();
  // Reads alias `name` (a new one when missing), lets `change` edit it (false: leave it), and
  // writes it back under its ETag, again from the start on a conflict.
  Expected<Alias> update_alias(const std::string& name, const std::function<Expected<bool>(Alias&)>& change);
  // The canary under way (if any) judged and stepped: on the thread, every refresh.
  void step_canary();
  void end_canary(const std::string& outcome, LogLevel level);
  Totals totals(const std::string& version) const;
  // Every host's totals of `version` (this one's read now, the others' as they last shared
  // them, within half a minute), by host id.
  std::map<std::string, Totals> totals_by_host(const std::string& version);
  // Each second while `aliases` split traffic: this host's totals of the versions they split,
  // into the store for the host judging a canary.
  void share_totals(const std::vector<Alias>& aliases);
  void publish_status();

  const AppSpec& base_;
  std::string base_text_;  // the folder's manifest, as the running triggers have it
  FunctionPools& pools_;
  Store& store_;
  const Clock& clock_;
  Logger& logger_;
  PoolFactory factory_;
  VersionCatalog catalog_;
  DeploymentsOptions options_;
  Version base_version_;
  // The thread's own.
  std::map<std::string, std::shared_ptr<Loaded>> loaded_;  // by version id
  std::map<std::string, int64_t> failed_;                  // version id -> when it last failed to load
  std::vector<std::pair<std::shared_ptr<Loaded>, TimePoint>> unloaded_;  // routed away from, not yet dropped
  std::string routed_;                                     // the aliases as last routed
  std::optional<Canary> canary_;
  std::string canary_status_ = "null";                     // JSON: the last canary's state
  std::string routing_status_ = "{}";                      // JSON: what route() set
  // For other threads (status, running).
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<FunctionPool>> all_pools_;
  std::string status_json_ = "{\"deployed\":false}";
  struct StatsView {
    std::string function, version;
    const PoolStats* stats;
  };
  std::vector<StatsView> stats_views_;               // what metrics_text() renders
  std::vector<std::pair<std::string, Target>> weights_view_;  // alias, target
  // The thread.
  std::thread thread_;
  std::mutex jobs_mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::set<std::string> asked_;  // versions request_load() was asked for and has not loaded yet
  bool stopping_ = false;
};

}  // namespace nimbus::deploy
