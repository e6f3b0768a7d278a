#include "deploy/deployments.h"

#include <algorithm>
#include <boost/json.hpp>
#include <future>
#include <set>

#include "core/thread_role.h"
#include "core/private_file.h"
#include "deploy/package.h"
#include "durable/durable.h"
#include "manifest/manifest.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "pool/function_pools.h"
#include "core/app_spec.h"
#include "store/store.h"
#include "triggers/http/http_trigger.h"

namespace nimbus::deploy {

namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr int kAliasAttempts = 20;
constexpr int64_t kRetryFailedMs = 30000;  // a version that would not load is tried again after this

HttpReply json_ok(int status, json::value body) {
  return HttpReply{status, {{"content-type", "application/json"}}, json::serialize(body)};
}

json::array targets_json(const std::vector<Target>& targets) {
  json::array out;
  for (const auto& t : targets) out.push_back(json::object{{"version", t.version}, {"weight", t.weight}});
  return out;
}

// `targets` scaled to sum to `total` (whole numbers; the rounding goes to the heaviest).
std::vector<Target> scaled(std::vector<Target> targets, int total) {
  int sum = 0, given = 0;
  for (const auto& t : targets) sum += t.weight;
  if (sum == 0 || targets.empty()) return {};
  for (auto& t : targets) {
    t.weight = t.weight * total / sum;
    given += t.weight;
  }
  std::max_element(targets.begin(), targets.end(), [](const Target& a, const Target& b) { return a.weight < b.weight; })
      ->weight += total - given;
  std::erase_if(targets, [](const Target& t) { return t.weight == 0; });
  return targets;
}

}  // namespace

Status run_migrations(const AppSpec& app, const std::function<FunctionPool*(const std::string&)>& pool_of,
                      const std::string& version, const Clock& clock, Logger& logger) {
  for (const auto& fn : app.functions) {
    if (!fn.migration) continue;
    FunctionPool* pool = pool_of(fn.name);
    if (!pool) return Error{"migration '" + fn.name + "' has no pool"};
    Invocation inv = new_invocation(fn, TriggerKind::admin, "/migrations/" + fn.name, "nimbus.migration", clock);
    inv.payload = json::serialize(json::object{{"version", version}});
    inv.metadata = {{"content-type", "application/json"}};
    std::promise<Result> finished;
    auto result = finished.get_future();
    pool->dispatch(std::move(inv), [&finished](Result&& r) { finished.set_value(std::move(r)); });
    Result r = result.get();
    const int status = r.http ? r.http->status : 200;
    if (r.outcome != Outcome::success || status >= 400) {
      std::string why = r.outcome != Outcome::success
                            ? (r.error.type.empty() ? std::string(to_string(r.outcome)) : r.error.type) +
                                  (r.error.message.empty() ? "" : ": " + r.error.message)
                            : "it answered " + std::to_string(status) + (r.http->body.empty() ? "" : ": " + r.http->body.substr(0, 500));
      logger.host(LogLevel::error, "a migration failed", {{"function", fn.name}, {"version", version}, {"error", why}});
      return Error{"migration '" + fn.name + "' failed: " + why};
    }
    logger.host(LogLevel::info, "a migration ran",
                {{"function", fn.name}, {"version", version}, {"output", r.http ? r.http->body.substr(0, 500) : std::string()}});
  }
  return ok_status();
}

struct Deployments::Loaded {
  Version version;
  bool base = false;             // the folder's: its code is the front pools' own
  std::unique_ptr<AppSpec> app;  // a deployed version's app (its folder under .nimbus/versions)
  std::map<std::string, std::shared_ptr<FunctionPool>> pools;
  std::map<std::string, std::unique_ptr<PoolStats>> stats;  // by function: what its pools count
  std::unique_ptr<const std::string> label;  // its id once numbered, for the stats (log lines)
  // unload_idle()'s: its calls when last looked at, and since when that has not changed.
  uint64_t calls_seen = 0;
  TimePoint idle_since{};
};

Deployments::Deployments(const AppSpec& base, FunctionPools& pools, Store& store, const Clock& clock, Logger& logger,
                         PoolFactory factory)
    : base_(base),
      pools_(pools),
      store_(store),
      clock_(clock),
      logger_(logger),
      factory_(std::move(factory)),
      catalog_(store, clock) {
  if (auto text = read_file(base.manifest)) base_text_ = std::move(*text);
}

Deployments::~Deployments() {
  stop();
  // The front pools outlive this: they stop counting and routing here, so the versions' pools
  // (and their executors, which refer to their apps) go now, before the apps they were made from.
  for (int i = 0; i < pools_.size(); ++i) {
    pools_.at(i).set_stats(nullptr);
    pools_.at(i).set_routes(nullptr);
  }
  std::lock_guard lock(mu_);
  for (const auto& p : all_pools_) p->set_stats(nullptr);
  for (const auto& [l, at] : unloaded_) {
    for (const auto& [name, pool] : l->pools) pool->set_stats(nullptr);
  }
  all_pools_.clear();
  stats_views_.clear();
  unloaded_.clear();
}

Status Deployments::start(const DeploymentsOptions& options) {
  options_ = options;
  // Until the first deploy there are no versions: the folder's code runs, routed by nobody.
  auto live = catalog_.alias("live");
  if (!live) return Error{"cannot read the deployed versions from the store: " + live.error().message};
  if (*live) {
    if (auto st = ensure_base(); !st) return st;
    auto moved = update_alias("live", [&](Alias& a) -> Expected<bool> {
      for (const auto& t : a.targets) {
        if (t.version == base_version_.id) return false;  // live names the folder already
      }
      if (options.serve_deployed && !a.targets.empty()) return false;
      a.previous = std::move(a.targets);
      a.targets = {{base_version_.id, 100}};
      return true;
    });
    if (!moved) return Error{"cannot point the live alias at the folder's version: " + moved.error().message};
    logger_.host(LogLevel::info, options.serve_deployed ? "versions: serving what is deployed" : "versions: the folder's version is live",
                 {{"folder", base_version_.id}, {"live", alias_json(*moved)}});
    refresh();
  }
  thread_ = std::thread([this] {
    name_this_thread("deployments");
    run();
  });
  return ok_status();
}

Status Deployments::ensure_base() {
  if (!base_version_.id.empty()) return ok_status();
  PackOptions pack;
  pack.skip_unpackable = true;  // the folder runs as it is; what cannot travel stays out of its package
  for (const auto& fn : base_.functions) {
    for (const auto& t : fn.triggers) {
      if (t.settings) {
        for (const auto& f : t.settings->data_folders()) pack.leave_out.push_back(f);
      }
    }
  }
  std::vector<std::string> skipped;
  auto package = pack_app(base_.dir, pack, &skipped);
  if (!package) return Error{"cannot package the app folder as a version: " + package.error().message};
  for (const auto& why : skipped) logger_.host(LogLevel::warn, "versions: left out of the folder's version", {{"path", why}});
  auto version = catalog_.add(*package, "the folder " + base_.dir.string());
  if (!version) return Error{"cannot keep the app folder's version in the store: " + version.error().message};
  base_version_ = *version;
  auto base = std::make_shared<Loaded>();
  base->version = *version;
  base->base = true;
  base->label = std::make_unique<const std::string>(version->id);
  for (int i = 0; i < pools_.size(); ++i) {
    auto& stats = base->stats[pools_.at(i).spec().name];
    stats = std::make_unique<PoolStats>();
    stats->version.store(base->label.get(), std::memory_order_release);
    pools_.at(i).set_stats(stats.get());
  }
  loaded_[version->id] = base;
  // No alias yet: the folder is what is live.
  auto live = update_alias("live", [&](Alias& a) -> Expected<bool> {
    if (!a.targets.empty()) return false;
    a.targets = {{version->id, 100}};
    return true;
  });
  if (!live) return Error{"cannot make the live alias: " + live.error().message};
  return ok_status();
}

void Deployments::stop() {
  {
    std::lock_guard lock(jobs_mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // What comes after is refused (unavailable), as the host's own pools refuse it.
  std::lock_guard lock(mu_);
  for (const auto& p : all_pools_) p->close();
}

int Deployments::running() const {
  std::lock_guard lock(mu_);
  int n = 0;
  for (const auto& p : all_pools_) n += p->running() + p->waiting();
  return n;
}

bool Deployments::post(std::function<void()> job) {
  {
    std::lock_guard lock(jobs_mu_);
    if (stopping_ || !thread_.joinable()) return false;
    jobs_.push_back(std::move(job));
  }
  cv_.notify_all();
  return true;
}

void Deployments::run() {
  std::unique_lock lock(jobs_mu_);
  // A refresh every `refresh` however many jobs come between (a polling dashboard must not
  // keep this host from following the others).
  auto next_refresh = std::chrono::steady_clock::now() + options_.refresh;
  while (!stopping_) {
    cv_.wait_until(lock, next_refresh, [&] { return stopping_ || !jobs_.empty(); });
    if (stopping_) break;
    if (!jobs_.empty() && std::chrono::steady_clock::now() < next_refresh) {
      auto job = std::move(jobs_.front());
      jobs_.pop_front();
      lock.unlock();
      job();
      lock.lock();
      continue;
    }
    next_refresh = std::chrono::steady_clock::now() + options_.refresh;
    lock.unlock();
    refresh();
    step_canary();
    lock.lock();
  }
}

Expected<Alias> Deployments::update_alias(const std::string& name, const std::function<Expected<bool>(Alias&)>& change) {
  for (int attempt = 0; attempt < kAliasAttempts; ++attempt) {
    auto got = catalog_.alias(name);
    if (!got) return got.error();
    Alias a = *got ? std::move(**got) : Alias{name, {}, {}, {}, 0, ""};
    auto changed = change(a);
    if (!changed) return changed.error();
    if (!*changed) return a;
    auto st = catalog_.put_aliases({a});
    if (st) return a;
    if (st.error().code != store_error::conflict) return st.error();
  }
  return Error{"alias '" + name + "' keeps changing under this host; try again", store_error::conflict};
}

void Deployments::refresh() {
  auto aliases = catalog_.aliases();
  if (!aliases) {
    logger_.host(LogLevel::warn, "versions: cannot read the aliases from the store; routing stays as it is",
                 {{"error", aliases.error().message}});
    return;
  }
  if (aliases->empty()) return;  // nothing deployed yet
  if (auto st = ensure_base(); !st) {
    logger_.host(LogLevel::error, "versions: the folder cannot be a version; routing stays as it is", {{"error", st.error().message}});
    return;
  }
  const int64_t now = unix_ms(clock_);
  std::set<std::string> wanted;
  for (const auto& a : *aliases) {
    for (const auto& t : a.targets) wanted.insert(t.version);
  }
  for (const auto& id : wanted) {
    if (loaded_.count(id)) continue;
    if (auto f = failed_.find(id); f != failed_.end() && now - f->second < kRetryFailedMs) continue;
    auto version = catalog_.find(id);
    Expected<std::shared_ptr<Loaded>> loaded = Error{"no version " + id + " in the store"};
    if (!version) loaded = version.error();
    else if (*version) loaded = load(**version, nullptr);
    if (!loaded) {
      failed_[id] = now;
      logger_.host(LogLevel::error, "versions: a version an alias names cannot run on this host; its share goes to the others",
                   {{"version", id}, {"error", loaded.error().message}});
      continue;
    }
    failed_.erase(id);
    tag(**loaded);
    loaded_[id] = *loaded;
  }
  unload_idle(wanted);
  route(*aliases);
  drop_unloaded();
  share_totals(*aliases);
}

namespace {

constexpr int64_t kTotalsTtlMs = 30000;  // a host that stopped sharing stops counting after this

std::string totals_prefix(const std::string& version) { return "stats/" + version + "/"; }

}  // namespace

void Deployments::share_totals(const std::vector<Alias>& aliases) {
  if (options_.host_id.empty()) return;
  std::set<std::string> split;
  for (const auto& a : aliases) {
    if (a.targets.size() < 2) continue;
    for (const auto& t : a.targets) split.insert(t.version);
  }
  Batch b;
  for (const auto& id : split) {
    if (!loaded_.count(id)) continue;
    const Totals t = totals(id);
    json::array buckets;
    for (uint64_t n : t.buckets) buckets.push_back(n);
    b.puts.push_back({kDeployStore, totals_prefix(id) + options_.host_id,
                      json::serialize(json::object{{"calls", t.calls}, {"errors", t.errors}, {"buckets", std::move(buckets)},
                                                   {"at_ms", unix_ms(clock_)}}),
                      std::nullopt, kTotalsTtlMs});
  }
  if (b.puts.empty()) return;
  // Not waited for: the next second's replaces one that did not land.
  store_.commit(std::move(b), [](Expected<BatchResult>) {});
}

std::map<std::string, Deployments::Totals> Deployments::totals_by_host(const std::string& version) {
  std::map<std::string, Totals> out;
  if (!options_.host_id.empty()) {
    const std::string prefix = totals_prefix(version);
    const int64_t now = unix_ms(clock_);
    if (auto got = store_.scan(kDeployStore, prefix, 1000)) {
      for (const auto& e : *got) {
        boost::system::error_code ec;
        json::value v = json::parse(e.value, ec);
        if (ec || !v.is_object()) continue;
        const json::object& o = v.as_object();
        const auto* calls = o.if_contains("calls");
        const auto* errors = o.if_contains("errors");
        const auto* buckets = o.if_contains("buckets");
        const auto* at = o.if_contains("at_ms");
        if (!calls || !errors || !buckets || !at || !calls->is_number() || !errors->is_number() || !buckets->is_array() ||
            !at->is_number() || buckets->as_array().size() != PoolStats::kBuckets || now - at->to_number<int64_t>() > kTotalsTtlMs) {
          continue;
        }
        Totals t;
        t.calls = calls->to_number<uint64_t>();
        t.errors = errors->to_number<uint64_t>();
        for (int i = 0; i < PoolStats::kBuckets; ++i) {
          const auto& n = buckets->as_array()[static_cast<std::size_t>(i)];
          t.buckets[i] = n.is_number() ? n.to_number<uint64_t>() : 0;
        }
        out[e.key.substr(prefix.size())] = t;
      }
    }
  }
  out[options_.host_id] = totals(version);  // this host's own, as they are now
  return out;
}

void Deployments::unload_idle(const std::set<std::string>& named) {
  const TimePoint now = clock_.now();
  for (auto it = loaded_.begin(); it != loaded_.end();) {
    Loaded& l = *it->second;
    uint64_t calls = 0;
    int busy = 0;
    for (const auto& [fn, stats] : l.stats) calls += stats->calls.load(std::memory_order_relaxed);
    for (const auto& [fn, pool] : l.pools) busy += pool->running() + pool->waiting();
    const bool kept = l.base || named.count(it->first) || (canary_ && canary_->version == it->first);
    if (kept || busy > 0 || calls != l.calls_seen || l.idle_since == TimePoint{}) {
      l.calls_seen = calls;
      l.idle_since = now;
      ++it;
      continue;
    }
    if (now - l.idle_since < base_.unload_after) {
      ++it;
      continue;
    }
    logger_.host(LogLevel::info, "versions: an idle version no alias names is unloaded",
                 {{"version", it->first},
                  {"idle_s", std::chrono::duration_cast<std::chrono::seconds>(now - l.idle_since).count()}});
    unloaded_.emplace_back(it->second, now);
    it = loaded_.erase(it);
  }
}

void Deployments::drop_unloaded() {
  // A few seconds after the routing that left it out (a dispatch that read the routing just
  // before may still reach it), and once nothing runs there, its pools close and go, before
  // the app they were made from.
  constexpr auto kSettle = std::chrono::seconds(5);
  const TimePoint now = clock_.now();
  for (auto it = unloaded_.begin(); it != unloaded_.end();) {
    const auto& [l, at] = *it;
    int busy = 0;
    for (const auto& [fn, pool] : l->pools) busy += pool->running() + pool->waiting();
    if (now - at < kSettle || busy > 0) {
      ++it;
      continue;
    }
    {
      std::lock_guard lock(mu_);
      std::erase_if(all_pools_, [&](const std::shared_ptr<FunctionPool>& p) {
        for (const auto& [fn, pool] : l->pools) {
          if (pool == p) return true;
        }
        return false;
      });
    }
    bool held = false;  // a routing still in someone's hands holds it: next time
    for (const auto& [fn, pool] : l->pools) {
      pool->close();
      held = held || pool.use_count() > 1;
    }
    if (held) {
      ++it;
      continue;
    }
    for (const auto& [fn, pool] : l->pools) pool->set_stats(nullptr);
    it = unloaded_.erase(it);
  }
}

Expected<std::shared_ptr<Deployments::Loaded>> Deployments::load(const Version& version, const std::string* package) {
  const fs::path dir = base_.dir / ".nimbus" / "versions" / version.digest;
  std::error_code ec;
  if (!fs::exists(dir / "nimbus.yaml", ec)) {
    fs::remove_all(dir, ec);
    std::string fetched;
    if (!package) {
      auto got = catalog_.package(version);
      if (!got) return got.error();
      fetched = std::move(*got);
      package = &fetched;
    }
    if (auto st = unpack_app(*package, dir); !st) return Error{"cannot unpack it: " + st.error().message};
  }
  auto text = read_file(dir / "nimbus.yaml");
  if (!text) return Error{"its package holds no nimbus.yaml"};
  if (auto diffs = topology_differences(base_text_, *text); !diffs.empty()) {
    std::string what;
    for (const auto& d : diffs) what += (what.empty() ? "" : "; ") + d;
    return Error{"its manifest changes what the running triggers use (" + what +
                 "); a version may change its functions' code and code settings only: restart the host from the "
                 "new folder for the rest"};
  }
  auto parsed = parse_manifest(*text, (dir / "nimbus.yaml").string(), dir, process_environment());
  if (!parsed.app) return Error{"its manifest has problems:\n" + parsed.report()};
  auto l = std::make_shared<Loaded>();
  l->version = version;
  l->app = std::make_unique<AppSpec>(std::move(*parsed.app));
  l->app->home = base_.home.empty() ? base_.dir : base_.home;
  auto pools = factory_(*l->app);
  if (!pools) return pools.error();
  l->pools = std::move(*pools);
  for (const auto& [name, pool] : l->pools) {
    auto& stats = l->stats[name];
    stats = std::make_unique<PoolStats>();
    pool->set_stats(stats.get());
  }
  {
    std::lock_guard lock(mu_);
    for (const auto& [name, pool] : l->pools) all_pools_.push_back(pool);
  }
  logger_.host(LogLevel::info, "versions: a version is loaded and warm", {{"version", version.id}});
  return l;
}

void Deployments::tag(Loaded& l) {
  if (!l.label) {
    l.label = std::make_unique<const std::string>(l.version.id);
    for (auto& [name, stats] : l.stats) stats->version.store(l.label.get(), std::memory_order_release);
  }
  if (!l.app) return;
  for (const auto& fn : l.app->functions) {
    auto it = l.pools.find(fn.name);
    if (it == l.pools.end()) continue;
    const bool orchestrator = !fn.triggers_of<durable::OrchestrationTriggerSpec>().empty();
    std::string code = orchestrator ? durable::orchestrator_version(*l.app, fn) : std::string();
    // Only a pool nobody routes to yet is tagged: a version deployed again keeps its tags.
    if (it->second->version_id() != l.version.id || it->second->code_version() != code) {
      it->second->set_version(l.version.id, std::move(code));
    }
  }
}

void Deployments::request_load(const std::string& id) {
  {
    std::lock_guard lock(jobs_mu_);
    if (!asked_.insert(id).second) return;  // asked already
  }
  post([this, id] {
    const int64_t now = unix_ms(clock_);
    if (auto f = failed_.find(id); f != failed_.end() && now - f->second < kRetryFailedMs) {
      std::lock_guard lock(jobs_mu_);
      asked_.erase(id);
      return;  // it would not load a moment ago: not again so soon
    }
    if (!loaded_.count(id)) {
      auto version = catalog_.find(id);
      Expected<std::shared_ptr<Loaded>> l = Error{"no version " + id + " in the store"};
      if (version && *version) l = load(**version, nullptr);
      if (l) {
        tag(**l);
        loaded_[id] = *l;
        logger_.host(LogLevel::info, "versions: loaded for the orchestrations that started on it", {{"version", id}});
      } else {
        failed_[id] = now;
        logger_.host(LogLevel::error, "versions: an orchestration's version cannot be loaded",
                     {{"version", id}, {"error", l.error().message}});
      }
    }
    {
      std::lock_guard lock(jobs_mu_);
      asked_.erase(id);
    }
    refresh();
  });
}

void Deployments::route(const std::vector<Alias>& aliases) {
  std::string signature;
  for (const auto& a : aliases) signature += alias_json(Alias{a.name, a.targets, a.sticky, {}, 0, ""}) + "\n";
  for (const auto& [id, l] : loaded_) signature += id + " ";
  if (signature == routed_) return;
  routed_ = signature;

  // Only the folder's code, live at 100 and nothing else: no routing at all (the fast path).
  // (Orchestrators keep routes even then: they find, or ask for, the code an instance started on.)
  const bool plain = loaded_.size() == 1 && aliases.size() == 1 && aliases.front().name == "live" &&
                     aliases.front().targets.size() == 1 && loaded_.begin()->second->base &&
                     aliases.front().targets.front().version == loaded_.begin()->first;
  json::object status{{"base", base_version_.id}};
  json::array loaded_ids;
  for (const auto& [id, l] : loaded_) loaded_ids.push_back(json::string(id));
  status["loaded"] = std::move(loaded_ids);
  json::object alias_status;
  for (int i = 0; i < pools_.size(); ++i) {
    FunctionPool& front = pools_.at(i);
    if (plain && front.spec().triggers_of<durable::OrchestrationTriggerSpec>().empty()) {
      front.set_routes(nullptr);
      continue;
    }
    auto routes = std::make_shared<VersionRoutes>();
    // Only what an alias names is reachable, by weight or by a pin: an old version stays loaded
    // here but no request can ask for it.
    std::set<std::string> named;
    for (const auto& a : aliases) {
      for (const auto& t : a.targets) named.insert(t.version);
    }
    for (const auto& [id, l] : loaded_) {
      if (!named.count(id)) continue;
      FunctionPool* p = nullptr;
      if (!l->base) {
        auto it = l->pools.find(front.spec().name);
        if (it == l->pools.end()) continue;
        p = it->second.get();
        routes->pools.push_back(it->second);
      }
      routes->versions[id] = p;
    }
    // Orchestrations keep their instances on the code they started on: every version loaded
    // here, by its code's tag, and a way to ask for one that is not.
    if (!front.spec().triggers_of<durable::OrchestrationTriggerSpec>().empty()) {
      for (const auto& [id, l] : loaded_) {
        if (l->base) {
          routes->by_code[durable::orchestrator_version(base_, front.spec())] = nullptr;
          continue;
        }
        auto it = l->pools.find(front.spec().name);
        if (it == l->pools.end() || it->second->code_version().empty()) continue;
        routes->by_code[it->second->code_version()] = it->second.get();
        routes->pools.push_back(it->second);
      }
      routes->load = [this](const std::string& id) { request_load(id); };
      routes->own_version = base_version_.id;
    }
    for (const auto& a : aliases) {
      std::vector<Target> runnable;
      for (const auto& t : a.targets) {
        if (routes->versions.count(t.version)) runnable.push_back(t);
      }
      runnable = scaled(std::move(runnable), 100);
      VersionSplit split;
      if (runnable.empty()) {
        if (a.name != "live") continue;
        runnable = {{base_version_.id, 100}};  // nothing live names can run here: the folder's code
        split.weights.emplace_back(nullptr, 100);
      } else {
        for (const auto& t : runnable) split.weights.emplace_back(routes->versions.at(t.version), t.weight);
      }
      if (a.sticky.from == Sticky::From::header) split.sticky_header = a.sticky.name;
      if (a.sticky.from == Sticky::From::cookie) split.sticky_cookie = a.sticky.name;
      routes->aliases[a.name] = std::move(split);
      if (i == 0) alias_status[a.name] = targets_json(runnable);
    }
    front.set_routes(std::move(routes));
  }
  if (plain) alias_status["live"] = targets_json({{base_version_.id, 100}});
  status["aliases"] = std::move(alias_status);
  logger_.host(LogLevel::info, "versions: traffic routed", {{"routing", json::serialize(status)}});
  routing_status_ = json::serialize(status);
  {
    std::lock_guard lock(mu_);
    stats_views_.clear();
    for (const auto& [id, l] : loaded_) {
      for (const auto& [fn, stats] : l->stats) stats_views_.push_back({fn, id, stats.get()});
    }
    weights_view_.clear();
    for (const auto& a : aliases) {
      for (const auto& t : a.targets) weights_view_.emplace_back(a.name, t);
    }
  }
  publish_status();
}

void Deployments::publish_status() {
  json::value status = json::parse(routing_status_);
  status.as_object()["canary"] = json::parse(canary_status_);
  std::lock_guard lock(mu_);
  status_json_ = json::serialize(status);
}

HttpReply Deployments::deploy(const std::string& package, const std::string& message, const std::string& alias,
                              int weight) {
  if (package.empty()) return json_error(400, "bad_package", "the request's body is the package (nimbus deploy makes it)", "");
  if (auto st = ensure_base(); !st) return json_error(503, "store_unavailable", st.error().message, "");
  const std::string digest = package_digest(package);
  std::shared_ptr<Loaded> ready;
  for (const auto& [id, l] : loaded_) {
    if (l->version.digest == digest) ready = l;
  }
  if (!ready) {
    Version provisional;
    provisional.id = "(new)";
    provisional.digest = digest;
    auto l = load(provisional, &package);
    if (!l) {
      logger_.host(LogLevel::warn, "versions: a deploy is refused", {{"error", l.error().message}});
      return json_error(422, "deploy_refused", "the version cannot run: " + l.error().message, "");
    }
    ready = *l;
  }
  // Migrations run before the version takes traffic, once per version (the store remembers a
  // package's that succeeded); one that fails aborts the deploy, and the old version serves on.
  const std::string migrated_key = "migration/" + digest;
  auto migrated = store_.get(kDeployStore, migrated_key);
  if (!migrated) return json_error(503, "store_unavailable", migrated.error().message, "");
  if (!*migrated && !ready->base) {  // (the folder's own ran at the start)
    auto st = run_migrations(*ready->app, [&](const std::string& name) -> FunctionPool* {
      auto it = ready->pools.find(name);
      return it == ready->pools.end() ? nullptr : it->second.get();
    }, digest.substr(0, 12), clock_, logger_);
    if (!st) return json_error(422, "migration_failed", "the deploy is aborted: " + st.error().message, "");
    std::promise<Expected<BatchResult>> kept;
    auto f = kept.get_future();
    Batch b;
    b.puts.push_back({kDeployStore, migrated_key, json::serialize(json::object{{"at_ms", unix_ms(clock_)}}), std::nullopt, 0});
    store_.commit(std::move(b), [&kept](Expected<BatchResult> r) { kept.set_value(std::move(r)); });
    if (auto r = f.get(); !r) return json_error(503, "store_unavailable", "the migrations ran but cannot be recorded: " + r.error().message, "");
  }
  auto version = catalog_.add(package, message);
  if (!version) return json_error(503, "store_unavailable", "cannot keep the version: " + version.error().message, "");
  ready->version = *version;
  tag(*ready);
  loaded_[version->id] = ready;
  // A version with `deploy: {canary}` moves in its steps (unless --weight says otherwise).
  bool others = false;  // a canary needs something to step from
  if (auto current = catalog_.alias(alias); current && *current) {
    for (const auto& t : (*current)->targets) others = others || t.version != ready->version.id;
  }
  const bool canary = ready->app && ready->app->canary && weight >= 100 && others;
  if (canary) {
    weight = ready->app->canary->steps.front();
    if (canary_) end_canary("replaced by the deploy of " + version->id, LogLevel::warn);
  }
  std::vector<Target> before;
  auto a = update_alias(alias, [&](Alias& al) -> Expected<bool> {
    std::vector<Target> others;
    before = al.targets;
    for (const auto& t : al.targets) {
      if (t.version != version->id) others.push_back(t);
    }
    std::vector<Target> next = weight >= 100 || others.empty() ? std::vector<Target>{} : scaled(others, 100 - weight);
    next.push_back({version->id, weight >= 100 || others.empty() ? 100 : weight});
    al.previous = al.targets;
    al.targets = std::move(next);
    return true;
  });
  if (!a) return json_error(503, "store_unavailable", "the version is kept but alias '" + alias + "' is not changed: " + a.error().message, "");
  if (canary && weight < 100) {
    Canary c;
    c.alias = alias;
    c.version = version->id;
    c.before = std::move(before);
    c.spec = *ready->app->canary;
    c.step_started = clock_.now();
    c.at_step_start = totals_by_host(version->id);
    c.set = a->targets;
    canary_ = std::move(c);
    canary_status_ = json::serialize(json::object{{"version", version->id}, {"alias", alias}, {"state", "running"},
                                                  {"weight", weight}, {"step", 1}});
    logger_.host(LogLevel::info, "canary: begins", {{"version", version->id}, {"alias", alias_json(*a)}});
  }
  refresh();
  publish_status();
  logger_.host(LogLevel::info, "versions: deployed", {{"version", version->id}, {"alias", alias_json(*a)}});
  return json_ok(200, json::object{{"version", version->id},
                                   {"digest", version->digest},
                                   {"alias", alias},
                                   {"targets", targets_json(a->targets)}});
}

HttpReply Deployments::set_alias(const std::string& name, const std::string& body) {
  if (!valid_alias_name(name)) {
    return json_error(400, "bad_alias", "an alias is 1 to 40 lower-case letters, digits, - and _, starting with a letter, and not v<number>", "");
  }
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return json_error(400, "bad_request", "expected {\"targets\": \"v3=90 v4=10\", \"sticky\": \"header:x-user\"}", "");
  const json::object& o = v.as_object();
  std::vector<std::string> words;
  if (const auto* t = o.if_contains("targets"); t && t->is_string()) {
    std::string s(t->as_string());
    for (std::size_t at = 0; at < s.size();) {
      const auto end = s.find(' ', at);
      std::string w = s.substr(at, end == std::string::npos ? std::string::npos : end - at);
      if (!w.empty()) words.push_back(w);
      at = end == std::string::npos ? s.size() : end + 1;
    }
  }
  auto targets = parse_weights(words);
  if (!targets) return json_error(400, "bad_targets", targets.error().message, "");
  std::optional<Sticky> sticky;
  if (const auto* s = o.if_contains("sticky"); s && s->is_string()) {
    auto parsed = parse_sticky(std::string(s->as_string()));
    if (!parsed) return json_error(400, "bad_sticky", parsed.error().message, "");
    sticky = *parsed;
  }
  if (auto st = ensure_base(); !st) return json_error(503, "store_unavailable", st.error().message, "");
  // Every version warm here before the alias moves (other hosts warm theirs before they route).
  for (const auto& t : *targets) {
    if (loaded_.count(t.version)) continue;
    auto version = catalog_.find(t.version);
    if (!version) return json_error(503, "store_unavailable", version.error().message, "");
    if (!*version) return json_error(404, "unknown_version", "there is no version " + t.version + " (nimbus versions lists them)", "");
    auto l = load(**version, nullptr);
    if (!l) return json_error(422, "version_cannot_run", t.version + " cannot run: " + l.error().message, "");
    tag(**l);
    loaded_[t.version] = *l;
  }
  auto a = update_alias(name, [&](Alias& al) -> Expected<bool> {
    al.previous = al.targets;
    al.targets = *targets;
    if (sticky) al.sticky = *sticky;
    return true;
  });
  if (!a) return json_error(503, "store_unavailable", a.error().message, "");
  refresh();
  logger_.host(LogLevel::info, "versions: an alias changed", {{"alias", alias_json(*a)}});
  return json_ok(200, json::parse(alias_json(*a)));
}

HttpReply Deployments::rollback(const std::string& name) {
  if (auto st = ensure_base(); !st) return json_error(503, "store_unavailable", st.error().message, "");
  bool nothing = false;
  auto a = update_alias(name, [&](Alias& al) -> Expected<bool> {
    if (al.previous.empty()) {
      nothing = true;
      return false;
    }
    std::swap(al.previous, al.targets);
    return true;
  });
  if (!a) return json_error(503, "store_unavailable", a.error().message, "");
  if (nothing) return json_error(409, "nothing_to_roll_back", "alias '" + name + "' has no earlier targets", "");
  refresh();
  logger_.host(LogLevel::warn, "versions: rolled back", {{"alias", alias_json(*a)}});
  return json_ok(200, json::parse(alias_json(*a)));
}

HttpReply Deployments::swap(const std::string& first, const std::string& second) {
  for (int attempt = 0; attempt < kAliasAttempts; ++attempt) {
    auto a = catalog_.alias(first);
    auto b = catalog_.alias(second);
    if (!a || !b) return json_error(503, "store_unavailable", (!a ? a.error() : b.error()).message, "");
    if (!*a || !*b) {
      return json_error(404, "unknown_alias", "there is no alias '" + (!*a ? first : second) + "'", "");
    }
    Alias x = std::move(**a), y = std::move(**b);
    x.previous = x.targets;
    y.previous = y.targets;
    std::swap(x.targets, y.targets);
    auto st = catalog_.put_aliases({x, y});
    if (st) {
      refresh();
      logger_.host(LogLevel::info, "versions: aliases swapped", {{"first", alias_json(x)}, {"second", alias_json(y)}});
      return json_ok(200, json::object{{"aliases", json::array{json::parse(alias_json(x)), json::parse(alias_json(y))}}});
    }
    if (st.error().code != store_error::conflict) return json_error(503, "store_unavailable", st.error().message, "");
  }
  return json_error(409, "conflict", "the aliases keep changing; try again", "");
}

HttpReply Deployments::versions_reply() {
  auto versions = catalog_.list();
  auto aliases = catalog_.aliases();
  if (!versions || !aliases) {
    return json_error(503, "store_unavailable", (!versions ? versions.error() : aliases.error()).message, "");
  }
  json::array out;
  for (const auto& v : *versions) {
    json::object o = json::parse(version_json(v)).as_object();
    json::array names;
    for (const auto& a : *aliases) {
      for (const auto& t : a.targets) {
        if (t.version == v.id) names.push_back(json::object{{"alias", a.name}, {"weight", t.weight}});
      }
    }
    o["aliases"] = std::move(names);
    o["loaded"] = loaded_.count(v.id) > 0;
    out.push_back(std::move(o));
  }
  json::array as;
  for (const auto& a : *aliases) as.push_back(json::parse(alias_json(a)));
  return json_ok(200, json::object{{"versions", std::move(out)}, {"aliases", std::move(as)}});
}

Deployments::Totals Deployments::totals(const std::string& version) const {
  Totals t;
  auto it = loaded_.find(version);
  if (it == loaded_.end()) return t;
  for (const auto& [fn, stats] : it->second->stats) {
    t.calls += stats->calls.load(std::memory_order_relaxed);
    t.errors += stats->errors.load(std::memory_order_relaxed);
    for (int b = 0; b < PoolStats::kBuckets; ++b) t.buckets[b] += stats->warm_buckets[b].load(std::memory_order_relaxed);
  }
  return t;
}

void Deployments::end_canary(const std::string& outcome, LogLevel level) {
  if (!canary_) return;
  logger_.host(level, "canary: " + outcome, {{"version", canary_->version}, {"alias", canary_->alias}});
  json::object st = json::parse(canary_status_).is_object() ? json::parse(canary_status_).as_object() : json::object{};
  st["state"] = outcome;
  canary_status_ = json::serialize(st);
  canary_.reset();
  publish_status();
}

void Deployments::step_canary() {
  if (!canary_) return;
  Canary& c = *canary_;
  auto current = catalog_.alias(c.alias);
  if (!current) return;  // the store is away: judged next time
  auto same = [](const std::vector<Target>& a, const std::vector<Target>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (a[i].version != b[i].version || a[i].weight != b[i].weight) return false;
    }
    return true;
  };
  if (!*current || !same((*current)->targets, c.set)) return end_canary("stopped: the alias was changed by hand", LogLevel::warn);
  // What every host's share of the version served since the step began (a host that
  // restarted since, or that began serving it during the step, counts from nothing).
  const auto now = totals_by_host(c.version);
  Totals d;
  for (const auto& [host, t] : now) {
    auto from = c.at_step_start.find(host);
    bool counted = from != c.at_step_start.end() && from->second.calls <= t.calls && from->second.errors <= t.errors;
    for (int b = 0; counted && b < PoolStats::kBuckets; ++b) counted = from->second.buckets[b] <= t.buckets[b];
    const Totals zero;
    const Totals& base = counted ? from->second : zero;
    d.calls += t.calls - base.calls;
    d.errors += t.errors - base.errors;
    for (int b = 0; b < PoolStats::kBuckets; ++b) d.buckets[b] += t.buckets[b] - base.buckets[b];
  }
  // p99 at least: the lower bound of the bucket that holds it (so a version is rolled back only
  // when it is surely past the bound), judged from 100 calls on, over the calls that did not
  // wait for a cold start (the new version's instances start as traffic reaches them: their
  // start is not the latency it will have, and has its own metric).
  double p99 = 0;
  uint64_t timed = 0, seen = 0;
  for (int b = 0; b < PoolStats::kBuckets; ++b) timed += d.buckets[b];
  for (int b = 0; b < PoolStats::kBuckets && timed >= 100; ++b) {
    seen += d.buckets[b];
    if (static_cast<double>(seen) >= 0.99 * static_cast<double>(timed)) {
      p99 = b > 0 ? Metrics::kBucketBounds[b - 1] : 0;
      break;
    }
  }
  const double rate = d.calls ? static_cast<double>(d.errors) / static_cast<double>(d.calls) : 0;
  const double max_p99 = std::chrono::duration<double>(c.spec.max_p99).count();
  const int weight = c.spec.steps[c.step];
  json::object st{{"version", c.version}, {"alias", c.alias}, {"state", "running"}, {"weight", weight},
                  {"step", static_cast<int64_t>(c.step + 1)}, {"calls", d.calls}, {"errors", d.errors},
                  {"p99_at_least_ms", p99 * 1000}};
  canary_status_ = json::serialize(st);
  if (d.calls >= static_cast<uint64_t>(c.spec.min_requests) &&
      (rate > c.spec.max_error_rate || (max_p99 > 0 && p99 > max_p99))) {
    const std::string why = rate > c.spec.max_error_rate
                                ? "error rate " + std::to_string(rate * 100).substr(0, 5) + "% over " + std::to_string(d.calls) + " requests"
                                : "p99 above " + std::to_string(max_p99 * 1000).substr(0, 6) + " ms";
    bool moved_by_hand = false;
    auto back = update_alias(c.alias, [&](Alias& al) -> Expected<bool> {
      if (!same(al.targets, c.set)) {
        moved_by_hand = true;
        return false;
      }
      al.previous = al.targets;
      al.targets = c.before;
      return true;
    });
    if (moved_by_hand) return end_canary("stopped: the alias was changed by hand", LogLevel::warn);
    if (!back) return;  // tried again next time
    refresh();
    return end_canary("rolled back: " + why, LogLevel::warn);
  }
  // A step is taken once the version could be judged on every bound it has (p99: 100 calls).
  const uint64_t needed = max_p99 > 0 ? std::max<uint64_t>(c.spec.min_requests, 100) : c.spec.min_requests;
  if (clock_.now() - c.step_started < c.spec.interval || d.calls < needed || timed < needed) {
    publish_status();
    return;
  }
  const int next = c.spec.steps[c.step + 1];
  bool moved_by_hand = false;
  auto moved = update_alias(c.alias, [&](Alias& al) -> Expected<bool> {
    if (!same(al.targets, c.set)) {
      moved_by_hand = true;
      return false;
    }
    std::vector<Target> others;
    for (const auto& t : c.before) {
      if (t.version != c.version) others.push_back(t);
    }
    std::vector<Target> targets = next >= 100 || others.empty() ? std::vector<Target>{} : scaled(others, 100 - next);
    targets.push_back({c.version, next >= 100 || others.empty() ? 100 : next});
    al.previous = c.before;
    al.targets = std::move(targets);
    return true;
  });
  if (moved_by_hand) return end_canary("stopped: the alias was changed by hand", LogLevel::warn);
  if (!moved) return;
  ++c.step;
  c.step_started = clock_.now();
  c.at_step_start = now;
  c.set = moved->targets;
  logger_.host(LogLevel::info, "canary: a step", {{"version", c.version}, {"weight", next}, {"calls", static_cast<int64_t>(d.calls)},
                                                {"errors", static_cast<int64_t>(d.errors)}});
  refresh();
  st["weight"] = next;
  st["step"] = static_cast<int64_t>(c.step + 1);
  canary_status_ = json::serialize(st);
  if (next >= 100) return end_canary("completed", LogLevel::info);
  publish_status();
}

std::string Deployments::metrics_text() const {
  std::lock_guard lock(mu_);
  if (stats_views_.empty()) return "";
  std::string out;
  auto labels = [](const StatsView& v) { return "function=\"" + v.function + "\",version=\"" + v.version + "\""; };
  out += "# HELP nimbus_version_invocations_total Invocations by function and deployed version; errors are failures and HTTP 5xx.\n"
         "# TYPE nimbus_version_invocations_total counter\n";
  for (const auto& v : stats_views_) {
    const uint64_t calls = v.stats->calls.load(std::memory_order_relaxed), errors = v.stats->errors.load(std::memory_order_relaxed);
    out += "nimbus_version_invocations_total{" + labels(v) + ",result=\"ok\"} " + std::to_string(calls - std::min(calls, errors)) + "\n";
    out += "nimbus_version_invocations_total{" + labels(v) + ",result=\"error\"} " + std::to_string(errors) + "\n";
  }
  out += "# HELP nimbus_version_invocation_duration_seconds Invocation latency by function and deployed version.\n"
         "# TYPE nimbus_version_invocation_duration_seconds histogram\n";
  for (const auto& v : stats_views_) {
    uint64_t cumulative = 0;
    for (int b = 0; b < PoolStats::kBuckets; ++b) {
      cumulative += v.stats->buckets[b].load(std::memory_order_relaxed);
      char bound[32];
      if (b < Metrics::kBuckets) {
        std::snprintf(bound, sizeof bound, "%g", Metrics::kBucketBounds[b]);
      } else {
        std::snprintf(bound, sizeof bound, "+Inf");
      }
      out += "nimbus_version_invocation_duration_seconds_bucket{" + labels(v) + ",le=\"" + bound + "\"} " + std::to_string(cumulative) + "\n";
    }
    char sum[48];
    std::snprintf(sum, sizeof sum, "%.6f", static_cast<double>(v.stats->sum_us.load(std::memory_order_relaxed)) / 1e6);
    out += "nimbus_version_invocation_duration_seconds_sum{" + labels(v) + "} " + sum + "\n";
    out += "nimbus_version_invocation_duration_seconds_count{" + labels(v) + "} " + std::to_string(cumulative) + "\n";
  }
  out += "# HELP nimbus_version_weight The share of an alias's traffic each version has, in percent.\n"
         "# TYPE nimbus_version_weight gauge\n";
  for (const auto& [alias, t] : weights_view_) {
    out += "nimbus_version_weight{alias=\"" + alias + "\",version=\"" + t.version + "\"} " + std::to_string(t.weight) + "\n";
  }
  return out;
}

std::vector<AdminEndpoint> Deployments::endpoints() {
  auto on_thread = [this](Responder respond, std::function<HttpReply()> work) {
    if (!post([respond, work = std::move(work)] { respond(work()); })) {
      respond(json_error(503, "unavailable", "the host is stopping", ""));
    }
  };
  std::vector<AdminEndpoint> out;
  out.push_back({"/admin/versions", {"GET", "POST"}, [this, on_thread](IncomingRequest& request, const std::vector<std::string>&, Responder respond) {
    if (request.method() == "GET") return on_thread(std::move(respond), [this] { return versions_reply(); });
    const std::string target(request.target());
    const auto q = target.find('?');
    const std::string query = q == std::string::npos ? "" : target.substr(q + 1);
    const std::string message = query_param(query, "message").value_or("");
    const std::string alias = query_param(query, "alias").value_or("live");
    const std::string weight_text = query_param(query, "weight").value_or("100");
    int weight = std::atoi(weight_text.c_str());
    if (!valid_alias_name(alias)) return respond(json_error(400, "bad_alias", "alias '" + alias + "' is not a valid alias name", ""));
    if (weight < 1 || weight > 100 || std::to_string(weight) != weight_text) {
      return respond(json_error(400, "bad_weight", "weight is a whole number from 1 to 100", ""));
    }
    auto package = std::make_shared<std::string>(request.take_body());
    on_thread(std::move(respond), [this, package, message, alias, weight] { return deploy(*package, message, alias, weight); });
  }});
  out.push_back({"/admin/aliases", {"GET"}, [this, on_thread](IncomingRequest&, const std::vector<std::string>&, Responder respond) {
    on_thread(std::move(respond), [this] { return versions_reply(); });
  }});
  out.push_back({"/admin/aliases/{name}", {"PUT"}, [this, on_thread](IncomingRequest& request, const std::vector<std::string>& params, Responder respond) {
    auto body = std::make_shared<std::string>(request.take_body());
    on_thread(std::move(respond), [this, name = params.at(0), body] { return set_alias(name, *body); });
  }});
  out.push_back({"/admin/aliases/{name}/rollback", {"POST"}, [this, on_thread](IncomingRequest&, const std::vector<std::string>& params, Responder respond) {
    on_thread(std::move(respond), [this, name = params.at(0)] { return rollback(name); });
  }});
  out.push_back({"/admin/aliases/{name}/swap/{other}", {"POST"}, [this, on_thread](IncomingRequest&, const std::vector<std::string>& params, Responder respond) {
    on_thread(std::move(respond), [this, a = params.at(0), b = params.at(1)] { return swap(a, b); });
  }});
  return out;
}

StatusField Deployments::status_field() {
  return {"versions", [this] {
            std::lock_guard lock(mu_);
            return status_json_;
          }};
}

}  // namespace nimbus::deploy
