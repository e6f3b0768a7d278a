#include "host/host.h"

#include <signal.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

#include <boost/json.hpp>
#include <algorithm>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <iostream>
#include <sstream>
#include <thread>

#include "admin/admin_api.h"
#include "admin/observe_endpoints.h"
#include "core/private_file.h"
#include "deploy/deployments.h"
#include "observe/history.h"
#include "observe/host_metrics.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "observe/trace.h"
#include "pool/function_pools.h"
#include "pool/worker_threads.h"
#include "runtime/native/native_build.h"
#include "core/ids.h"
#include "host/cluster.h"
#include "pool/fleet.h"
#include "runtime/registry.h"
#include "core/units.h"
#include "manifest/manifest.h"
#include "store/delayed/delayed_store.h"
#include "store/store.h"
#include "triggers/api/service_api.h"
#include "triggers/host_services.h"
#include "triggers/http/public_routes.h"
#include "triggers/registry.h"
#include "triggers/task_thread.h"
#include "triggers/http/server.h"

namespace nimbus {

namespace fs = std::filesystem;

fs::path host_file(const fs::path& app_dir) { return app_dir / ".nimbus" / "host.json"; }

namespace {

int fail(const std::string& message) {
  std::cerr << "nimbus: " << message << "\n";
  return 1;
}

std::string url(const std::string& address, int port) {
  bool v6 = address.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port);
}

// Runs `fire` on a thread of its own at `at` unless disarmed first.
class ShutdownWatchdog {
 public:
  ShutdownWatchdog(std::chrono::steady_clock::time_point at, std::function<void()> fire)
      : thread_([this, at, fire = std::move(fire)] {
          std::unique_lock lock(mu_);
          if (!cv_.wait_until(lock, at, [&] { return disarmed_; })) fire();
        }) {}
  ~ShutdownWatchdog() {
    disarm();
    thread_.join();
  }
  void disarm() {
    std::lock_guard lock(mu_);
    disarmed_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool disarmed_ = false;
  std::thread thread_;
};

}  // namespace

int run_host(const AppSpec& app, const HostOptions& options) {
  // Signals are taken synchronously by this thread; every thread started below inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGHUP);  // reload the manifest (what can change in place)
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // Every client and upstream connection is a descriptor: take all the system allows (the
  // soft limit is often 1024 under a far higher hard one), as nginx and Go do.
  if (rlimit files{}; getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    rlim_t most = files.rlim_max;
    if (most == RLIM_INFINITY) {  // the kernel's own ceiling, then
      most = 1048576;
      if (auto nr = read_file("/proc/sys/fs/nr_open")) most = std::strtoull(nr->c_str(), nullptr, 10);
    }
    files.rlim_cur = most;
    if (setrlimit(RLIMIT_NOFILE, &files) != 0) {
      std::fprintf(stderr, "nimbus: cannot raise the open-file limit to %llu: %s\n", static_cast<unsigned long long>(most),
                   std::strerror(errno));
    }
  }

  const fs::path state_dir = app.dir / ".nimbus";
  std::error_code ec;
  fs::create_directories(state_dir, ec);
  if (ec) return fail("cannot create " + state_dir.string() + ": " + ec.message());

  // One host per app folder: a second would take over .nimbus/host.json from the first.
  if (auto running = read_file(host_file(app.dir))) {
    boost::system::error_code jec;
    auto v = boost::json::parse(*running, jec);
    if (!jec && v.is_object() && v.as_object().contains("pid") && v.as_object().at("pid").is_int64()) {
      auto pid = static_cast<pid_t>(v.as_object().at("pid").as_int64());
      if (pid != getpid() && ::kill(pid, 0) == 0) {
        return fail("a host is already running for this app (pid " + std::to_string(pid) +
                    "); stop it with `nimbus stop`, or remove " + host_file(app.dir).string() + " if it is stale");
      }
    }
  }

  auto token = load_or_create_admin_token(state_dir / "admin.token");
  if (!token) return fail(token.error().message);

  auto libraries = build_native_functions(app, std::cerr);
  if (!libraries) return fail(libraries.error().message);

  SystemClock clock;
  auto store = open_store(app.store, app.dir, clock,
                          StoreOptions{app.fsync ? Durability::fsync : Durability::process, app.max_blob_size});
  if (!store) return fail(store.error().message);
  if (options.store_latency > Duration::zero()) {
    *store = with_injected_latency(std::move(*store), options.store_latency);
    std::cerr << "nimbus: fault injection: every store read and write takes " << format_duration(options.store_latency)
              << " longer\n";
  }
  LogSink sink(STDOUT_FILENO);
  Logger logger(sink, clock, app.name);
  // Traces (observe/trace.h): on when the manifest or OTEL_EXPORTER_OTLP_* names a collector.
  // Before the store: its threads may finish invocations (and so record spans) while it closes.
  TraceSettings trace_settings;
  trace_settings.endpoint = app.observe.otlp_endpoint;
  trace_settings.headers = app.observe.otlp_headers;
  if (app.observe.sample) trace_settings.sample = *app.observe.sample;
  if (!app.observe.otlp_protocol.empty()) {
    trace_settings.protocol = app.observe.otlp_protocol == "http/json" ? OtlpProtocol::json : OtlpProtocol::protobuf;
  }
  if (!app.observe.otlp_compression.empty()) trace_settings.gzip = app.observe.otlp_compression == "gzip";
  trace_settings.ca_file = app.observe.otlp_ca;
  if (auto st = trace_settings.read_environment(); !st) return fail(st.error().message);
  std::unique_ptr<Tracer> tracer;
  if (!trace_settings.endpoint.empty()) {
    tracer = std::make_unique<Tracer>(trace_settings, app.name, NIMBUS_VERSION_TEXT, logger);
    logger.set_tracer(tracer.get());  // detached below before the tracer goes
    logger.host(LogLevel::info, "traces: exporting spans over OTLP/HTTP",
                {{"endpoint", trace_settings.endpoint},
                 {"protocol", trace_settings.protocol == OtlpProtocol::json ? "http/json" : "http/protobuf"},
                 {"compression", trace_settings.gzip.value_or(false) ? "gzip" : "none"},
                 {"sample", std::to_string(trace_settings.sample.value_or(1.0))}});
  }
  struct DetachTracer {
    Logger& logger;
    ~DetachTracer() { logger.set_tracer(nullptr); }
  } detach_tracer{logger};
  // A store across the network may lose its server: say so once when it goes and once when it
  // is back (/readyz answers 503 meanwhile; work that needs the store fails and is retried).
  (*store)->on_health_change([&logger, url = redact_store_url(app.store)](const Store::Health& h) {
    if (h.available) {
      logger.host(LogLevel::info, "store available again", {{"store", url}});
    } else {
      logger.host(LogLevel::error, "store unavailable; /readyz answers 503 until it is back",
                  {{"store", url}, {"reason", h.problem}});
    }
  });
  // The store's threads may call the logger (above): on every way out of here they end
  // before it does (closing twice is harmless; the clean stop closes it earlier).
  struct CloseStoreFirst {
    Store& store;
    ~CloseStoreFirst() { store.close(); }
  } close_store_first{**store};
  // Invocation history (observe/history.h): each function's last N invocations, in the store.
  // Declared after the guard above: on an early way out it stops before the store closes.
  std::unique_ptr<InvocationHistory> history;
  if (app.observe.history_keep > 0) {
    history = std::make_unique<InvocationHistory>(**store, clock, app.observe.history_keep, logger);
    logger.set_history(history.get());
  }
  struct DetachHistory {
    Logger& logger;
    ~DetachHistory() { logger.set_history(nullptr); }
  } detach_history{logger};
  std::vector<std::string> names;
  for (const auto& fn : app.functions) names.push_back(fn.name);
  Metrics metrics(names);

  TimerQueue timers;
  TimerThread timer_thread(clock, timers);
  EventLoops loops(options.loops > 0 ? options.loops : default_loop_count());
  // Running from here on: the workers' pipes are read on these loops, from warm-up to stop.
  loops.start();
  std::vector<Reactor*> reactors;
  for (int i = 0; i < loops.size(); ++i) reactors.push_back(&loops.reactor(i));
  WorkerThreads workers(app.worker_threads);
  PoolContext pool_context{clock, Timers(timers, &timer_thread), workers, metrics};
  FunctionPools pools;
  HostServices services(store->get(), pools, clock);  // pools are looked up when called
  services.set_tracer(tracer.get());
  services.set_logger(&logger);
  ServiceApi service_api(services, loops, app.http);
  auto api_url = service_api.start(options.admin_address, 0);
  if (!api_url) return fail("service API listener: " + api_url.error().message);
  // Each function's executor from its transport (runtime/registry.h, pool/fleet.h); the host knows none by name.
  // (Deployed versions' executors are made the same way, from their own app: below.)
  auto runtime_context_for = [&](const AppSpec& of, std::map<std::string, fs::path> native_libraries) {
    return RuntimeContext{of,
                          clock,
                          Timers(timers, &timer_thread),
                          logger,
                          metrics,
                          &services,
                          reactors,
                          *api_url,
                          [&service_api](const std::string& function) { return service_api.issue(function); },
                          [&service_api](const std::string& token) { service_api.revoke(token); },
                          std::move(native_libraries)};
  };
  RuntimeContext runtime_context = runtime_context_for(app, *libraries);
  std::vector<Executor*> executors;  // stopped before the pools go
  for (std::size_t i = 0; i < app.functions.size(); ++i) {
    const FunctionSpec& fn = app.functions[i];
    const int index = static_cast<int>(i);
    auto executor = make_executor(fn, index, runtime_context);
    if (!executor) {
      sink.flush();
      return fail(executor.error().message);
    }
    if (auto st = (*executor)->warm_up(); !st) {
      sink.flush();
      return fail(st.error().message);
    }
    executors.push_back(executor->get());
    pools.add(std::make_unique<FunctionPool>(fn, index, std::move(*executor), pool_context));
  }

  // Versions (deploy/deployments.h): each deployed version's functions in pools of their own,
  // made as the folder's were; the front pools above route to them. Made on the deploy thread.
  std::mutex version_executors_mu;
  // Stopped with the others, while their pools live (an idle version is unloaded: deploy/).
  std::vector<std::pair<std::weak_ptr<FunctionPool>, Executor*>> version_executors;
  deploy::Deployments deployments(app, pools, **store, clock, logger, [&](const AppSpec& version) {
    using Made = std::map<std::string, std::shared_ptr<FunctionPool>>;
    std::ostringstream progress;
    auto libraries = build_native_functions(version, progress);
    if (!libraries) return Expected<Made>(Error{libraries.error().message + "\n" + progress.str()});
    RuntimeContext context = runtime_context_for(version, std::move(*libraries));
    Made made;
    std::vector<std::pair<std::string, Executor*>> made_executors;
    for (const FunctionSpec& fn : version.functions) {
      // A migration the running app does not have counts in the metrics of the first function.
      FunctionPool* front = pools.find(fn.name);
      if (!front && !fn.migration) return Expected<Made>(Error{"function '" + fn.name + "' is not one the host runs"});
      const int index = front ? front->index() : 0;
      auto executor = make_executor(fn, index, context);
      if (!executor) return Expected<Made>(executor.error());
      if (auto st = (*executor)->warm_up(); !st) return Expected<Made>(st.error());
      made_executors.emplace_back(fn.name, executor->get());
      made[fn.name] = std::make_shared<FunctionPool>(fn, index, std::move(*executor), pool_context);
    }
    // Known to the shutdown only once all are made (a failure above frees them with `made`).
    std::lock_guard lock(version_executors_mu);
    std::erase_if(version_executors, [](const auto& v) { return v.first.expired(); });  // unloaded versions'
    for (const auto& [name, e] : made_executors) version_executors.emplace_back(made[name], e);
    return Expected<Made>(std::move(made));
  });
  // The folder's migrations run before anything takes traffic (a deployed version's ran at its deploy).
  if (!options.serve_deployed) {
    if (auto st = deploy::run_migrations(app, [&pools](const std::string& name) { return pools.find(name); }, "folder",
                                         clock, logger);
        !st) {
      sink.flush();
      return fail(st.error().message + "; the host does not start");
    }
  }
  // This host's id on the store (its registry record, its stream partition leases, its share
  // of a canary's numbers).
  char hostname[256] = {};
  ::gethostname(hostname, sizeof hostname - 1);
  const std::string host_id = std::string(hostname) + ":" + std::to_string(getpid()) + ":" + new_invocation_id().substr(0, 8);
  if (auto st = deployments.start(deploy::DeploymentsOptions{.serve_deployed = options.serve_deployed, .host_id = host_id}); !st) {
    sink.flush();
    return fail(st.error().message);
  }

  // Every trigger kind the registry knows, started in its order; the host knows none by name.
  PublicRoutes routes;  // what kinds other than http serve on the public listener
  TriggerContext trigger_context{app,     pools,  **store, clock,           Timers(timers, &timer_thread), logger,
                                 &metrics, &loops, &routes, options.address, options.port, options.tls_port, host_id};
  auto made = make_triggers(trigger_context);
  if (!made) return fail(made.error().message);
  std::vector<std::unique_ptr<Trigger>> triggers = std::move(*made);
  int http_port = 0, https_port = 0;
  for (auto& t : triggers) {
    if (auto st = t->start(); !st) return fail(st.error().message);
    if (http_port == 0) http_port = t->public_port();
    if (https_port == 0) https_port = t->secure_port();
  }

  LogFollow log_follow(sink, host_id);  // GET /admin/logs: `nimbus logs -f`
  // What the store holds (queue depths, stream lag, the timers' runs) and the process's numbers,
  // for /metrics: read on the store's I/O threads at most every 2 s, never while a scrape waits.
  ScrapeCache store_metrics(
      [&store, &app, &triggers] {
        std::string out;
        if (auto st = store_state_metrics_text(**store, app, out); !st) {
          std::string why = st.error().message.substr(0, 200);
          std::replace_if(why.begin(), why.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
          out = "# queue and stream metrics are missing: the store could not be read (" + why + ")\n";
        }
        for (auto& t : triggers) t->metrics_text(out);
        process_metrics_text(out);  // files under /proc: read here too, not on an event loop
        return out;
      },
      [&store](std::function<void()> work) { (*store)->run_blocking(std::move(work)); }, std::chrono::seconds(2));
  AdminStatus status;
  status.pid = static_cast<int>(getpid());
  status.started = clock.now();
  AdminApi admin(app, pools, metrics, logger, clock, *token, status, [] { kill(getpid(), SIGTERM); }, store->get());
  for (auto& t : triggers) admin.add(t->admin_views(), t->status_fields());
  admin.add(deployments.endpoints());
  admin.add({invocations_endpoint(history.get(), **store), log_follow.endpoint()});
  // What a scrape reads when it asks: the store's writer, queues and streams, the timers, the
  // process and the build (observe/host_metrics.h).
  admin.add_metrics([&store] {
    std::string out;
    (*store)->commit_metrics_text(out);
    return out;
  });
  admin.add_metrics([&store_metrics] { return store_metrics.text(); });
  admin.add_metrics([] {
    std::string out;
    build_info_text(out, NIMBUS_VERSION_TEXT);
    return out;
  });
  if (history) {
    admin.add_metrics([&history] {
      std::string out;
      history->metrics_text(out);
      return out;
    });
  }
  admin.add({}, {deployments.status_field()});
  admin.add_metrics([&deployments] { return deployments.metrics_text(); });
  if (tracer) {
    admin.add_metrics([&tracer] {
      std::string out;
      tracer->metrics_text(out);
      return out;
    });
  }
  // Reloads (POST /admin/reload, SIGHUP) run one at a time on a thread of their own: reading
  // the manifest and resolving upstream names block.
  std::string loaded_text;
  if (auto text = read_file(app.manifest)) loaded_text = std::move(*text);
  TaskThread reloads;
  auto reload = [&]() -> Status {
    auto text = read_file(app.manifest);
    if (!text) return Error{"cannot read " + app.manifest.string()};
    auto load = parse_manifest(*text, app.manifest.string(), app.dir, process_environment());
    if (!load.app) return Error{"the manifest has problems; nothing changed:\n" + load.report()};
    auto before = manifest_without(loaded_text, "gateway");
    auto after = manifest_without(*text, "gateway");
    if (!before || !after || *before != *after) {
      return Error{"the manifest changed outside gateway:, which a running host cannot take; nothing changed. "
                   "Restart the host for those changes"};
    }
    for (auto& t : triggers) {
      if (auto st = t->apply(*load.app); !st) return Error{"nothing changed: " + st.error().message};
    }
    loaded_text = *text;
    logger.host(LogLevel::info, "manifest reloaded: the gateway's routes and upstreams are the new ones",
                {{"routes", static_cast<int64_t>(load.app->gateway.routes.size())},
                 {"upstreams", static_cast<int64_t>(load.app->gateway.upstreams.size())}});
    return ok_status();
  };
  admin.on_reload([&](Responder respond) {
    reloads.post([&, respond] {
      Status st = reload();
      if (!st) {
        logger.host(LogLevel::warn, "manifest reload refused", {{"reason", st.error().message}});
        return respond(json_error(409, "reload_refused", st.error().message, ""));
      }
      respond(HttpReply{200, {{"content-type", "application/json"}}, "{\"status\":\"reloaded\"}"});
    });
  });
  // Every host on this store, and which of them runs another manifest (host/cluster.h).
  HostRegistry registry(
      **store, clock, Timers(timers, &timer_thread), logger,
      HostRegistry::Self{.id = host_id,
                         .manifest_sha256 = file_sha256(app.manifest.string()),
                         .http = [&status] { return status.http_url; },
                         .admin = [&status] { return status.admin_url; },
                         .load = [&pools] {
                           int running = 0, waiting = 0;
                           for (int i = 0; i < pools.size(); ++i) {
                             running += pools.at(i).running();
                             waiting += pools.at(i).waiting();
                           }
                           return std::pair<int, int>{running, waiting};
                         }});
  admin.add({registry.view()}, {registry.status_field()});
  auto admin_port = admin.start(loops, options.admin_address, options.admin_port);
  if (!admin_port) return fail("admin listener: " + admin_port.error().message);
  status.http_url = url(options.address, http_port);
  status.admin_url = url(options.admin_address, *admin_port);

  boost::json::object info{{"pid", status.pid},
                           {"app", app.name},
                           {"http", status.http_url},
                           {"admin", status.admin_url},
                           {"http_port", http_port},
                           {"admin_port", *admin_port}};
  std::string https_url;
  if (https_port != 0) {
    https_url = "https" + url(options.address, https_port).substr(4);
    info["https"] = https_url;
    info["https_port"] = https_port;
  }
  if (auto st = write_private_file(host_file(app.dir), boost::json::serialize(info) + "\n"); !st) {
    return fail(st.error().message);
  }
  registry.start();
  std::cout << "nimbus listening on " << status.http_url << (https_url.empty() ? "" : " " + https_url) << " admin "
            << status.admin_url << std::endl;
  logger.host(LogLevel::info, "host started",
              {{"http", status.http_url}, {"admin", status.admin_url}, {"store", redact_store_url(app.store)},
               {"functions", static_cast<int64_t>(app.functions.size())},
               {"loops", static_cast<int64_t>(loops.size())}});

  int sig = 0;
  while (sigwait(&stop_signals, &sig) != 0 || sig == SIGHUP) {
    if (sig == SIGHUP) {
      reloads.post([&] {
        if (Status st = reload(); !st) logger.host(LogLevel::warn, "manifest reload refused", {{"reason", st.error().message}});
      });
      sig = 0;
    }
  }

  // Graceful shutdown: stop taking work, let what was taken finish within the grace period.
  logger.host(LogLevel::info, "shutting down", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"}});
  auto kill_workers = [&] {
    for (auto* e : executors) e->kill_all();
    std::lock_guard lock(version_executors_mu);
    for (const auto& [pool, e] : version_executors) {
      if (auto alive = pool.lock()) e->kill_all();
    }
  };
  // Whatever a step below waits for, the host is gone within a second past the grace period:
  // a watchdog kills the workers and ends the process (its last line is flushed if stdout
  // takes it within 200 ms).
  ShutdownWatchdog watchdog(std::chrono::steady_clock::now() + app.shutdown_grace + std::chrono::milliseconds(700), [&] {
    logger.host(LogLevel::warn, "grace period over and shutdown still under way; killing workers and exiting");
    kill_workers();
    std::thread([&sink] { sink.flush(); }).detach();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::_Exit(0);
  });
  status.draining.store(true);
  reloads.close();  // a reload under way finishes first; none starts after
  admin.stop_accepting();
  log_follow.stop();  // followers hear of the stop now, and find the next run themselves
  TimePoint give_up = clock.now() + app.shutdown_grace;
  // No trigger takes new work: no request, timer run, file, MQTT message or batch. A due time
  // missed while stopped runs past due later; a file waiting for a retry stays in
  // .processing/; the broker keeps what was not committed.
  for (auto& t : triggers) t->stop_taking_work();
  registry.stop();  // leaves the cluster: the others stop counting on it at once
  // What was taken finishes and commits; the rest stays in the store for the next start.
  bool drained = true;
  for (auto& t : triggers) {
    const Duration left = give_up - clock.now();
    drained = t->drain(left > Duration::zero() ? left : Duration::zero()) && drained;
  }
  // Every invocation counts (HTTP, admin, queue, topic, timer, async routes): the parts they
  // use may only go once none is running.
  auto running = [&] {
    int n = admin.in_progress() + deployments.running();
    for (int i = 0; i < pools.size(); ++i) n += pools.at(i).running();
    for (auto& t : triggers) n += t->in_progress();
    return n;
  };
  while (running() > 0 && clock.now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  int left = running();
  if (!drained && left == 0) left = 1;  // a completion, a checkpoint or a file's move is still under way
  if (!drained) {
    logger.host(LogLevel::warn, "grace period over with messages in flight; they will be delivered again");
  }
  fs::remove(host_file(app.dir), ec);
  if (left > 0) {
    logger.host(LogLevel::warn, "grace period over; exiting with invocations still in flight",
                {{"in_flight", static_cast<int64_t>(left)}});
    kill_workers();  // their invocations have had their answer (a timeout) or never will
    sink.flush();
    std::cout.flush();
    std::_Exit(0);  // in-process functions cannot be pre-empted; do not wait on them
  }
  // Nothing in flight: close every connection and timer on its own loop, let the loops run
  // dry, and only then take the parts down (each in the reverse order it was made).
  for (auto& t : triggers) t->close();
  admin.close();
  service_api.close();
  deployments.stop();  // a deploy under way finishes first (the admin listener is closed)
  pools.close_all();
  for (auto* e : executors) e->stop(std::chrono::seconds(2));  // workers' exits are read on the loops
  for (const auto& [pool, e] : version_executors) {
    if (auto alive = pool.lock()) e->stop(std::chrono::seconds(2));
  }
  loops.drain();
  if (history) history->stop();  // the last records, before the store goes
  (*store)->close();
  watchdog.disarm();
  logger.host(LogLevel::info, "stopped");
  return 0;
}

}  // namespace nimbus
