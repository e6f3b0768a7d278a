// nimbus.yaml: the app's keys (store, http, streams, mqtt, blobs), each function's keys (runtime,
// limits, env, outputs, retry) and the entry points of manifest.h. Triggers are read in
// manifest_triggers.cpp, single values in manifest_reader.cpp.
#include "manifest/manifest.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "core/mqtt_topic.h"
#include "manifest/manifest_reader.h"
#include "store/store.h"

namespace nimbus {

namespace fs = std::filesystem;

void ManifestReader::read_app(const YAML::Node& root, AppSpec& app) {
  if (!check_map(root, "", {"name", "store", "durability", "http", "shutdown_grace", "worker_threads",
                            "streams", "mqtt", "blobs", "gateway", "deploy", "observe", "functions"})) {
    return;
  }
  if (auto n = root["name"]; !n) {
    error(root, "name", "is missing; expected the app's name, e.g. name: shop");
  } else if (auto v = scalar(n, "name", "the app's name")) {
    if (!is_name(*v)) {
      error(n, "name", "'" + *v + "' is not a valid name; expected lowercase letters, digits, '-' or '_', starting with a letter");
    } else {
      app.name = *v;
    }
  }
  if (auto n = root["store"]) {
    if (auto v = scalar(n, "store", "a store URL")) {
      if ((v->rfind("sqlite:", 0) == 0 && v->size() > 7) || v->rfind("redis://", 0) == 0) {
        // The backend reads its own options (sqlite:PATH?blobs=DIR, redis://...?prefix=P): a
        // bad one is named here.
        if (auto files = store_files(*v, {}); !files) {
          error(n, "store", files.error().message);
        } else {
          app.store = *v;
        }
      } else if (v->rfind("postgres://", 0) == 0 || v->rfind("postgresql://", 0) == 0) {
        app.store = *v;
      } else {
        error(n, "store", "'" + *v + "' is not a store URL; expected sqlite:PATH[?blobs=DIR], redis://HOST:PORT or postgres://...");
      }
    }
  }
  if (auto n = root["durability"]) {
    if (auto d = choice(n, "durability", {"process", "fsync"})) app.fsync = *d == "fsync";
  }
  if (auto n = root["http"]) read_http(n, app.http);
  if (auto n = root["deploy"]; n && check_map(n, "deploy", {"canary", "unload_after"})) {
    if (auto v = n["unload_after"]) {
      if (auto d = duration(v, "deploy.unload_after")) app.unload_after = *d;
    }
    if (auto c = n["canary"]; c && check_map(c, "deploy.canary", {"steps", "interval", "max_error_rate", "max_p99", "min_requests"})) {
      AppSpec::Canary canary;
      if (auto steps = c["steps"]; !steps || !steps.IsSequence() || steps.size() == 0) {
        error(c, "deploy.canary.steps", "is missing; expected increasing percentages ending at 100, e.g. [10, 50, 100]");
      } else {
        for (std::size_t i = 0; i < steps.size(); ++i) {
          auto v = integer(steps[i], "deploy.canary.steps[" + std::to_string(i) + "]", 1, 100);
          if (!v) continue;
          if (!canary.steps.empty() && *v <= canary.steps.back()) {
            error(steps[i], "deploy.canary.steps[" + std::to_string(i) + "]", "is not above the step before; expected increasing percentages");
          }
          canary.steps.push_back(static_cast<int>(*v));
        }
        if (!canary.steps.empty() && canary.steps.back() != 100) {
          error(steps, "deploy.canary.steps", "ends at " + std::to_string(canary.steps.back()) + "; the last step is 100");
        }
      }
      if (auto v = c["interval"]) {
        if (auto d = duration(v, "deploy.canary.interval")) canary.interval = *d;
      }
      if (auto v = c["max_p99"]) {
        if (auto d = duration(v, "deploy.canary.max_p99")) canary.max_p99 = *d;
      }
      if (auto v = c["min_requests"]) {
        if (auto m = integer(v, "deploy.canary.min_requests", 1, 1000000)) canary.min_requests = static_cast<int>(*m);
      }
      if (auto v = c["max_error_rate"]) {
        if (auto rate = share(v, "deploy.canary.max_error_rate", "expected a share of requests such as 1% or 0.01")) {
          canary.max_error_rate = *rate;
        }
      }
      app.canary = canary;
    }
  }
  if (auto n = root["observe"]; n && check_map(n, "observe", {"otlp", "history"})) {
    if (auto h = n["history"]; h && check_map(h, "observe.history", {"keep"})) {
      if (auto k = h["keep"]) {
        if (auto v = integer(k, "observe.history.keep", 0, 100000)) app.observe.history_keep = static_cast<int>(*v);
      }
    }
    if (auto o = n["otlp"]; o && check_map(o, "observe.otlp", {"endpoint", "headers", "sample", "protocol", "compression", "ca"})) {
      if (auto v = o["endpoint"]) {
        if (auto e = scalar(v, "observe.otlp.endpoint", "the collector's traces URL, e.g. http://127.0.0.1:4318/v1/traces")) {
          if (!((e->rfind("http://", 0) == 0 && e->size() > 7) || (e->rfind("https://", 0) == 0 && e->size() > 8))) {
            error(v, "observe.otlp.endpoint", "'" + *e + "' is not an http:// or https:// URL; expected the collector's traces URL, e.g. http://127.0.0.1:4318/v1/traces");
          } else {
            app.observe.otlp_endpoint = *e;
          }
        }
      }
      if (auto h = o["headers"]) {
        if (!h.IsMap()) {
          error(h, "observe.otlp.headers", "is " + kind_of(h) + "; expected a mapping of header names to values");
        } else {
          for (auto it = h.begin(); it != h.end(); ++it) {
            const std::string name = it->first.Scalar();
            if (auto value = scalar(it->second, "observe.otlp.headers." + name, "a header value")) {
              app.observe.otlp_headers.push_back({name, *value});
            }
          }
        }
      }
      if (auto v = o["protocol"]) {
        if (auto p = scalar(v, "observe.otlp.protocol", "http/protobuf or http/json")) {
          if (*p == "http/protobuf" || *p == "http/json") {
            app.observe.otlp_protocol = *p;
          } else {
            error(v, "observe.otlp.protocol", "'" + *p + "' is not a protocol Nimbus exports with; expected http/protobuf or http/json" +
                                                  (*p == "grpc" ? " (OTLP/gRPC is not supported: a collector takes OTLP/HTTP on port 4318)" : ""));
          }
        }
      }
      if (auto v = o["compression"]) {
        if (auto c = scalar(v, "observe.otlp.compression", "gzip or none")) {
          if (*c == "gzip" || *c == "none") {
            app.observe.otlp_compression = *c;
          } else {
            error(v, "observe.otlp.compression", "'" + *c + "' is not a compression Nimbus exports with; expected gzip or none");
          }
        }
      }
      if (auto v = o["ca"]) {
        if (auto c = app_file(v, "observe.otlp.ca", "a PEM file of the certificate authorities to check an https collector against")) {
          app.observe.otlp_ca = *c;
        }
      }
      if (auto v = o["sample"]) {
        app.observe.sample = share(v, "observe.otlp.sample",
                                   "expected the share of new traces to record, between 0 and 1 (or 0% to 100%), e.g. 0.1");
      }
    }
  }
  if (auto n = root["shutdown_grace"]) {
    if (auto d = duration(n, "shutdown_grace")) app.shutdown_grace = *d;
  }
  if (auto n = root["worker_threads"]) {
    if (auto v = integer(n, "worker_threads", 1, 1024)) app.worker_threads = static_cast<int>(*v);
  }
  if (auto n = root["streams"]) read_streams(n, app);
  if (auto n = root["mqtt"]) read_mqtt_broker(n, app);
  if (auto n = root["blobs"]; n && check_map(n, "blobs", {"max_size"})) {
    if (auto v = n["max_size"]) {
      if (auto s = size(v, "blobs.max_size")) app.max_blob_size = *s;
    }
  }
  auto functions = root["functions"];
  if (!functions) {
    error(root, "functions", "is missing; expected a mapping of function names to functions");
    return;
  }
  if (functions.IsNull()) {  // an app with no functions yet (a gateway in front of others, say)
    if (auto n = root["gateway"]) read_gateway(n, app);
    return;
  }
  if (!functions.IsMap()) {
    error(functions, "functions", "is " + kind_of(functions) + "; expected a mapping of function names to functions");
    return;
  }
  std::set<std::string> seen;
  for (auto it = functions.begin(); it != functions.end(); ++it) {
    std::string name = it->first.Scalar();
    std::string path = "functions." + name;
    if (!seen.insert(name).second) {
      error(it->first, path, "is defined twice; expected each function once");
      continue;
    }
    if (!is_name(name)) {
      error(it->first, path, "'" + name + "' is not a valid function name; expected lowercase letters, digits, '-' or '_', starting with a letter");
      continue;
    }
    FunctionSpec fn;
    fn.name = name;
    if (read_function(it->second, path, fn)) app.functions.push_back(std::move(fn));
  }
  check_route_conflicts(app);
  if (auto n = root["gateway"]) read_gateway(n, app);
  resolve_streams(app);
  check_mqtt_broker(root, app);
}

void ManifestReader::read_mqtt_broker(const YAML::Node& n, AppSpec& app) {
  if (!check_map(n, "mqtt", {"url", "client_id", "username", "password", "keepalive"})) return;
  MqttBrokerSpec broker;
  broker.client_id = "nimbus-" + app.name;
  if (auto v = n["url"]; !v) {
    error(n, "mqtt.url", "is missing; expected the broker's URL, e.g. url: mqtt://127.0.0.1:1883");
  } else if (auto url = scalar(v, "mqtt.url", "a broker URL such as mqtt://127.0.0.1:1883")) {
    std::string problem;
    MqttAddress address = parse_mqtt_url(*url, &problem);
    if (!problem.empty()) error(v, "mqtt.url", problem);
    broker.url = *url;
    broker.host = address.host;
    broker.port = address.port;
  }
  if (auto v = n["client_id"]) {
    if (auto id = scalar(v, "mqtt.client_id", "a client id")) {
      if (id->empty() || id->size() > 65535) {
        error(v, "mqtt.client_id", "is empty; expected a stable client id (the broker keeps the session under it)");
      } else {
        broker.client_id = *id;
      }
    }
  }
  if (auto v = n["username"]) broker.username = scalar(v, "mqtt.username", "a user name").value_or("");
  if (auto v = n["password"]) broker.password = scalar(v, "mqtt.password", "a password").value_or("");
  if (!broker.password.empty() && broker.username.empty()) {
    error(n["password"], "mqtt.password", "is set without mqtt.username; expected both, or neither");
  }
  if (auto v = n["keepalive"]) {
    if (auto d = duration(v, "mqtt.keepalive")) {
      if (*d < std::chrono::seconds(5) || *d > std::chrono::hours(18)) {
        error(v, "mqtt.keepalive", "is outside 5s to 18h; expected e.g. 30s");
      } else {
        broker.keepalive = *d;
      }
    }
  }
  app.mqtt = std::move(broker);
}

void ManifestReader::check_mqtt_broker(const YAML::Node& root, const AppSpec& app) {
  if (app.mqtt) return;
  for (const auto& fn : app.functions) {
    bool uses = false;
    for (const auto& t : fn.triggers) uses |= t.settings->uses_mqtt_broker();
    for (const auto& o : fn.outputs) uses |= o.kind == OutputSpec::Kind::mqtt;
    if (uses) {
      error(root, "mqtt",
            "is missing, but function '" + fn.name + "' uses MQTT; expected the broker, e.g. mqtt: {url: mqtt://127.0.0.1:1883}");
      return;
    }
  }
}

void ManifestReader::read_streams(const YAML::Node& n, AppSpec& app) {
  if (!n.IsMap()) {
    error(n, "streams", "is " + kind_of(n) + "; expected a mapping of stream names, e.g. telemetry: {partitions: 4}");
    return;
  }
  for (auto it = n.begin(); it != n.end(); ++it) {
    StreamSpec st;
    st.name = it->first.Scalar();
    const std::string path = "streams." + st.name;
    if (!check_name(it->first, path, st.name, "stream")) continue;
    const YAML::Node s = it->second;
    if (!s.IsNull()) {
      if (!check_map(s, path, {"partitions", "retention", "max_records"})) continue;
      if (auto v = s["partitions"]) {
        if (auto p = integer(v, path + ".partitions", 1, 256)) st.partitions = static_cast<int>(*p);
      }
      if (auto v = s["retention"]) {
        if (auto d = duration(v, path + ".retention")) st.retention = *d;
      }
      if (auto v = s["max_records"]) {
        if (auto m = integer(v, path + ".max_records", 1, 1L << 40)) st.max_records = *m;
      }
    }
    app.streams.push_back(st);
  }
}

void ManifestReader::resolve_streams(AppSpec& app) {
  auto ensure = [&app](const std::string& name) -> const StreamSpec& {
    if (const auto* s = app.find_stream(name)) return *s;
    StreamSpec st;
    st.name = name;
    app.streams.push_back(st);
    return app.streams.back();
  };
  for (auto& fn : app.functions) {
    for (const auto& t : fn.triggers)
      for (const auto& stream : t.settings->streams_read()) ensure(stream);
    for (auto& o : fn.outputs)
      if (o.kind == OutputSpec::Kind::stream) o.partitions = ensure(o.target).partitions;
  }
}

void ManifestReader::read_http(const YAML::Node& n, HttpSettings& http) {
  if (!check_map(n, "http", {"max_body", "max_header", "read_timeout", "idle_timeout"})) return;
  if (auto v = n["max_body"]) {
    if (auto s = size(v, "http.max_body")) http.max_body = *s;
  }
  if (auto v = n["max_header"]) {
    if (auto s = size(v, "http.max_header")) http.max_header = *s;
  }
  if (auto v = n["read_timeout"]) {
    if (auto d = duration(v, "http.read_timeout")) http.read_timeout = *d;
  }
  if (auto v = n["idle_timeout"]) {
    if (auto d = duration(v, "http.idle_timeout")) http.idle_timeout = *d;
  }
}

bool ManifestReader::read_function(const YAML::Node& n, const std::string& path, FunctionSpec& fn) {
  std::size_t errors_before = diagnostics.size();
  if (!check_map(n, path, {"runtime", "handler", "triggers", "env", "timeout", "concurrency",
                           "wait_queue", "blocking", "min_instances", "max_instances", "idle_timeout",
                           "memory_limit", "cpu_limit", "open_files", "env_allow", "working_dir",
                           "command", "isolation", "network", "max_processes", "writable", "outputs", "retry",
                           "migration"})) {
    return false;
  }
  if (auto v = n["runtime"]; !v) {
    error(n, path + ".runtime", "is missing; expected one of: native, python, node, process");
  } else if (auto r = choice(v, path + ".runtime", {"native", "python", "node", "process"})) {
    if (*r == "native") {
      fn.runtime = RuntimeKind::native;
    } else if (*r == "python") {
      fn.runtime = RuntimeKind::python;
      fn.concurrency = 1;  // per instance for worker runtimes, unless the manifest says more
    } else if (*r == "node") {
      fn.runtime = RuntimeKind::node;
      fn.concurrency = 16;  // an event loop overlaps awaits; per instance
    } else {
      fn.runtime = RuntimeKind::process;
      fn.concurrency = 1;
    }
  }
  if (auto v = n["command"]) {
    if (fn.runtime != RuntimeKind::process) {
      error(v, path + ".command", "applies to runtime: process only; expected it with runtime: process");
    } else if (!v.IsSequence() || v.size() == 0) {
      error(v, path + ".command", "is " + kind_of(v) + "; expected a non-empty list: the program and its arguments");
    } else {
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (auto arg = scalar(v[i], path + ".command[" + std::to_string(i) + "]", "a string")) fn.command.push_back(*arg);
      }
      if (!fn.command.empty() && fn.command[0].empty()) {
        error(v[0], path + ".command[0]", "is empty; expected the worker program (a path, or a name found on PATH)");
      }
    }
  } else if (fn.runtime == RuntimeKind::process) {
    error(n, path + ".command",
          "is missing; expected the worker's command, e.g. command: [./bin/worker, --flag] (see docs/worker-protocol.md)");
  }
  if (fn.runtime != RuntimeKind::native) fn.isolation = Isolation::process;
  if (auto v = n["isolation"]) {
    if (auto i = choice(v, path + ".isolation", {"none", "process", "sandbox"})) {
      if (*i == "none" && fn.runtime != RuntimeKind::native) {
        error(v, path + ".isolation",
              "is none, but " + std::string(to_string(fn.runtime)) +
                  " functions always run in a worker process; expected process or sandbox");
      } else {
        fn.isolation = *i == "sandbox" ? Isolation::sandbox : *i == "process" ? Isolation::process : Isolation::none;
      }
    }
  }
  if (auto v = n["network"]) {
    if (fn.isolation != Isolation::sandbox) {
      error(v, path + ".network", "applies to isolation: sandbox only (other functions share the host's network)");
    } else if (auto b = boolean(v, path + ".network")) {
      fn.network = *b;
    }
  }
  read_sandbox_keys(n, path, fn);
  if (auto v = n["handler"]; !v) {
    if (fn.runtime != RuntimeKind::process) {
      error(n, path + ".handler", "is missing; expected the function's source folder (e.g. functions/" + fn.name + ") or a .so file");
    }
  } else if (auto h = scalar(v, path + ".handler", "a path")) {
    if (h->empty()) error(v, path + ".handler", "is empty; expected a source folder or a .so file");
    fn.handler = *h;
  }
  if (auto v = n["timeout"]) {
    if (auto d = duration(v, path + ".timeout")) fn.timeout = *d;
  }
  if (auto v = n["concurrency"]) {
    if (auto c = integer(v, path + ".concurrency", 1, 100000)) fn.concurrency = static_cast<int>(*c);
  }
  if (auto v = n["wait_queue"]) {
    if (auto c = integer(v, path + ".wait_queue", 0, 100000)) fn.wait_queue = static_cast<int>(*c);
  }
  if (auto v = n["blocking"]) {
    if (auto b = boolean(v, path + ".blocking")) fn.blocking = *b;
  }
  bool worker_runtime = fn.in_worker();
  for (const char* key : {"min_instances", "max_instances", "idle_timeout", "memory_limit", "cpu_limit",
                          "open_files", "env_allow", "working_dir"}) {
    if (n[key] && !worker_runtime) {
      error(n[key], path + "." + key,
            "applies to functions in worker processes only; expected it with runtime: python, node or process, "
            "or with isolation: process or sandbox");
    }
  }
  if (auto v = n["min_instances"]; v && worker_runtime) {
    if (auto c = integer(v, path + ".min_instances", 0, 1000)) fn.min_instances = static_cast<int>(*c);
  }
  if (auto v = n["max_instances"]; v && worker_runtime) {
    if (auto c = integer(v, path + ".max_instances", 1, 1000)) fn.max_instances = static_cast<int>(*c);
  }
  if (auto v = n["idle_timeout"]; v && worker_runtime) {
    if (auto d = duration(v, path + ".idle_timeout")) fn.idle_timeout = *d;
  }
  if (auto v = n["memory_limit"]; v && worker_runtime) {
    if (auto s = size(v, path + ".memory_limit")) fn.memory_limit = *s;
  }
  if (auto v = n["cpu_limit"]; v && worker_runtime) {
    if (auto d = duration(v, path + ".cpu_limit")) fn.cpu_limit = *d;
  }
  if (auto v = n["open_files"]; v && worker_runtime) {
    if (auto c = integer(v, path + ".open_files", 16, 1 << 20)) fn.open_files = static_cast<int>(*c);
  }
  if (auto v = n["working_dir"]; v && worker_runtime) {
    if (auto d = scalar(v, path + ".working_dir", "a folder inside the app")) {
      if (!d->empty() && ((*d)[0] == '/' || d->find("..") != std::string::npos)) {
        error(v, path + ".working_dir", "'" + *d + "' leaves the app folder; expected a relative path inside it");
      } else {
        fn.working_dir = *d;
      }
    }
  }
  if (auto v = n["env_allow"]; v && worker_runtime) {
    if (!v.IsSequence()) {
      error(v, path + ".env_allow", "is " + kind_of(v) + "; expected a list of environment variable names");
    } else {
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (auto name = scalar(v[i], path + ".env_allow[" + std::to_string(i) + "]", "a variable name")) {
          fn.env_allow.push_back(*name);
        }
      }
    }
  }
  if (fn.min_instances > fn.max_instances) {
    error(n["min_instances"], path + ".min_instances",
          "is " + std::to_string(fn.min_instances) + ", above max_instances " + std::to_string(fn.max_instances) +
              "; expected min_instances <= max_instances");
  }
  if (fn.runtime != RuntimeKind::native && !fn.handler.empty()) {
    auto colon = fn.handler.rfind(':');
    std::string file = colon == std::string::npos ? fn.handler : fn.handler.substr(0, colon);
    auto ends_with = [&](std::string_view ext) {
      return file.size() > ext.size() && file.compare(file.size() - ext.size(), ext.size(), ext) == 0;
    };
    bool named = colon != std::string::npos && colon + 1 < fn.handler.size();
    if (fn.runtime == RuntimeKind::python && !(named && ends_with(".py"))) {
      error(n["handler"], path + ".handler",
            "'" + fn.handler + "' does not name a Python function; expected path/file.py:function");
    }
    if (fn.runtime == RuntimeKind::node && !(named && (ends_with(".js") || ends_with(".cjs") || ends_with(".mjs")))) {
      error(n["handler"], path + ".handler",
            "'" + fn.handler + "' does not name a JavaScript export; expected path/file.js:exportName");
    }
  }
  if (auto v = n["env"]) read_env(v, path + ".env", fn);
  if (auto v = n["outputs"]) read_outputs(v, path + ".outputs", fn);
  if (auto v = n["retry"]) read_retry(v, path + ".retry", fn.retry);
  if (auto v = n["triggers"]) {
    read_triggers(v, path + ".triggers", fn);
  }
  if (auto v = n["migration"]) {
    if (auto b = boolean(v, path + ".migration")) fn.migration = *b;
    if (fn.migration && n["triggers"]) {
      error(v, path + ".migration", "is true, but the function has triggers; a migration runs before its version "
                                    "takes traffic (at a start, and once per deploy), never from a trigger");
    }
  }
  return diagnostics.size() == errors_before;
}

void ManifestReader::read_sandbox_keys(const YAML::Node& n, const std::string& path, FunctionSpec& fn) {
  for (const char* key : {"max_processes", "writable"}) {
    if (n[key] && fn.isolation != Isolation::sandbox) {
      error(n[key], path + "." + key,
            "applies to isolation: sandbox only (other workers run as the host's user, may write wherever it "
            "can, and share its process count); expected it with isolation: sandbox");
    }
  }
  if (fn.isolation != Isolation::sandbox) return;
  if (auto v = n["max_processes"]) {
    // A language runtime needs a few threads of its own: below 4 a worker could not start.
    if (auto c = integer(v, path + ".max_processes", 4, 4096)) fn.max_processes = static_cast<int>(*c);
  }
  if (auto v = n["writable"]) {
    if (!v.IsSequence()) {
      error(v, path + ".writable", "is " + kind_of(v) + "; expected a list of folders inside the app, e.g. [data, out]");
      return;
    }
    for (std::size_t i = 0; i < v.size(); ++i) {
      const std::string at = path + ".writable[" + std::to_string(i) + "]";
      auto dir = scalar(v[i], at, "a folder inside the app");
      if (!dir) continue;
      std::filesystem::path p = std::filesystem::path(*dir).lexically_normal();
      if (!p.empty() && p.filename().empty()) p = p.parent_path();  // "data/" is data
      bool escapes = dir->empty() || p.is_absolute() || p == "." || p.begin()->string() == "..";
      if (escapes) {
        error(v[i], at, "'" + *dir + "' is not a folder inside the app; expected a relative path such as data/out");
      } else if (p.begin()->string() == ".nimbus") {
        error(v[i], at, "'" + *dir + "' is inside .nimbus, the host's own files (tokens, keys, the store); "
                        "expected a folder of the app's own");
      } else {
        fn.writable.push_back(p.string());
      }
    }
  }
}

void ManifestReader::read_env(const YAML::Node& n, const std::string& path, FunctionSpec& fn) {
  if (!n.IsMap()) {
    error(n, path, "is " + kind_of(n) + "; expected a mapping of variable names to values");
    return;
  }
  std::set<std::string> seen;
  for (auto it = n.begin(); it != n.end(); ++it) {
    std::string name = it->first.Scalar();
    std::string p = path + "." + name;
    if (!seen.insert(name).second) {
      error(it->first, p, "appears twice; expected each key once");
      continue;
    }
    EnvVar var;
    var.name = name;
    const YAML::Node value = it->second;  // a copy: the iterator hands out a temporary
    if (value.IsMap()) {
      if (!check_map(value, p, {"value", "secret"})) continue;
      if (auto s = value["secret"]) {
        if (auto b = boolean(s, p + ".secret")) var.secret = *b;
      }
      auto v = value["value"];
      if (!v) {
        error(value, p + ".value", "is missing; expected the variable's value");
        continue;
      }
      auto text = scalar(v, p + ".value", "a string");
      if (!text) continue;
      var.value = *text;
    } else {
      auto text = scalar(value, p, "a string, or {value: ..., secret: true}");
      if (!text) continue;
      var.value = *text;
    }
    fn.env.push_back(std::move(var));
  }
}

void ManifestReader::read_outputs(const YAML::Node& n, const std::string& path, FunctionSpec& fn) {
  if (!n.IsMap()) {
    error(n, path, "is " + kind_of(n) + "; expected a mapping of output names, e.g. done: {queue: orders}");
    return;
  }
  for (auto it = n.begin(); it != n.end(); ++it) {
    std::string name = it->first.Scalar();
    std::string p = path + "." + name;
    const YAML::Node o = it->second;
    if (!check_name(it->first, p, name, "output")) continue;
    if (!o.IsMap() || o.size() != 1) {
      error(o, p, "is " + kind_of(o) + "; expected one of {queue: NAME}, {topic: NAME}, {state: NAME}, {stream: NAME}, {mqtt: TOPIC} or {blob: CONTAINER/NAME}");
      continue;
    }
    std::string kind = o.begin()->first.Scalar();
    OutputSpec out;
    out.name = name;
    if (kind == "blob") {
      out.kind = OutputSpec::Kind::blob;
      auto parsed = blob_path(o.begin()->second, p + ".blob", "thumbnails/{name}.png");
      if (!parsed) continue;
      out.target = parsed->container;
      out.blob_name = parsed->text;
      fn.outputs.push_back(out);
      continue;
    }
    if (kind == "queue") {
      out.kind = OutputSpec::Kind::queue;
    } else if (kind == "topic") {
      out.kind = OutputSpec::Kind::topic;
    } else if (kind == "state") {
      out.kind = OutputSpec::Kind::state;
    } else if (kind == "stream") {
      out.kind = OutputSpec::Kind::stream;
    } else if (kind == "mqtt") {
      out.kind = OutputSpec::Kind::mqtt;
      // A topic, not a name: "" takes the topic from each message's metadata "topic".
      auto topic = scalar(o.begin()->second, p + ".mqtt", "a topic such as devices/{device}/commands");
      if (!topic) continue;
      if (std::string problem = topic->empty() ? "" : check_topic_template(*topic); !problem.empty()) {
        error(o.begin()->second, p + ".mqtt", "'" + *topic + "' " + problem);
        continue;
      }
      out.target = *topic;
      fn.outputs.push_back(out);
      continue;
    } else {
      error(o.begin()->first, p + "." + kind, "unknown output kind '" + kind + "'; expected queue, topic, state, stream, mqtt or blob");
      continue;
    }
    auto target = scalar(o.begin()->second, p + "." + kind, "a name");
    if (!target || !check_name(o.begin()->second, p + "." + kind, *target, kind.c_str())) continue;
    out.target = *target;
    fn.outputs.push_back(out);
  }
}

void ManifestReader::read_retry(const YAML::Node& n, const std::string& path, RetryPolicy& r) {
  if (!check_map(n, path, {"max_attempts", "backoff", "initial", "max", "jitter"})) return;
  if (auto v = n["max_attempts"]) {
    if (auto a = integer(v, path + ".max_attempts", 1, 1000)) r.max_attempts = static_cast<int>(*a);
  }
  if (auto v = n["backoff"]) {
    if (auto b = choice(v, path + ".backoff", {"fixed", "exponential"})) r.exponential = *b == "exponential";
  }
  if (auto v = n["initial"]) {
    if (auto d = duration(v, path + ".initial")) r.initial = *d;
  }
  if (auto v = n["max"]) {
    if (auto d = duration(v, path + ".max")) r.max = *d;
  }
  if (auto v = n["jitter"]) {
    if (auto j = scalar(v, path + ".jitter", "a fraction from 0 to 1")) {
      char* end = nullptr;
      double x = std::strtod(j->c_str(), &end);
      if (j->empty() || *end != '\0' || x < 0 || x > 1) {
        error(v, path + ".jitter", "'" + *j + "' is not a fraction from 0 to 1; expected e.g. 0.2");
      } else {
        r.jitter = x;
      }
    }
  }
}

std::string Diagnostic::to_string() const {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line) + ":" + std::to_string(column);
  out += ": ";
  if (!path.empty()) out += path + ": ";
  out += message;
  return out;
}

std::string ManifestLoad::report() const {
  std::string out;
  for (const auto& d : diagnostics) out += d.to_string() + "\n";
  return out;
}

EnvLookup process_environment() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  };
}

ManifestLoad parse_manifest(std::string_view text, const std::string& file,
                            const std::filesystem::path& app_dir, const EnvLookup& env) {
  ManifestLoad out;
  ManifestReader reader(file, env, app_dir);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::ParserException& e) {
    Diagnostic d;
    d.file = file;
    d.line = e.mark.line + 1;
    d.column = e.mark.column + 1;
    d.message = "not valid YAML: " + e.msg + "; expected a YAML mapping";
    out.diagnostics.push_back(std::move(d));
    return out;
  }
  AppSpec app;
  app.dir = app_dir;
  app.manifest = file;
  if (!root.IsDefined() || root.IsNull()) {
    reader.error(root, "", "the manifest is empty; expected at least name: and functions:");
  } else {
    reader.read_app(root, app);
  }
  out.diagnostics = std::move(reader.diagnostics);
  if (out.diagnostics.empty()) out.app = std::move(app);
  return out;
}

ManifestLoad load_manifest(const std::filesystem::path& path, const EnvLookup& env) {
  fs::path file = path;
  std::error_code ec;
  if (fs::is_directory(path, ec)) file = path / "nimbus.yaml";
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    ManifestLoad out;
    Diagnostic d;
    d.file = file.string();
    d.message = "cannot read the manifest (" + std::string(std::strerror(errno)) +
                "); expected a nimbus.yaml here (create one with `nimbus init`)";
    out.diagnostics.push_back(std::move(d));
    return out;
  }
  std::stringstream buf;
  buf << in.rdbuf();
  fs::path dir = fs::absolute(file, ec).lexically_normal().parent_path();
  return parse_manifest(buf.str(), file.string(), dir, env);
}

std::string did_you_mean(std::string_view word, const std::vector<std::string_view>& candidates) {
  auto distance = [](std::string_view a, std::string_view b) {
    std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
      cur[0] = i;
      for (std::size_t j = 1; j <= b.size(); ++j) {
        std::size_t sub = prev[j - 1] + (std::tolower(a[i - 1]) == std::tolower(b[j - 1]) ? 0 : 1);
        cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
      }
      std::swap(prev, cur);
    }
    return prev[b.size()];
  };
  std::string best;
  std::size_t best_d = std::max<std::size_t>(2, word.size() / 3) + 1;
  for (auto c : candidates) {
    std::size_t d = distance(word, c);
    if (d < best_d) {
      best_d = d;
      best = std::string(c);
    }
  }
  return best;
}

Expected<std::string> manifest_without(std::string_view text, std::string_view key) {
  try {
    YAML::Node root = YAML::Load(std::string(text));
    if (!root.IsMap()) return Error{"the manifest is not a YAML mapping"};
    YAML::Node copy = YAML::Clone(root);
    copy.remove(std::string(key));
    YAML::Emitter out;
    out << copy;
    return std::string(out.c_str());
  } catch (const YAML::Exception& e) {
    return Error{std::string("the manifest is not valid YAML: ") + e.what()};
  }
}

namespace {

// The keys of a function that belong to its triggers (a version keeps the running ones).
bool trigger_side(const std::string& key) {
  return key == "triggers" || key == "outputs" || key == "retry" || key == "timeout";
}

YAML::Node topology_of(const YAML::Node& root) {
  YAML::Node copy = YAML::Clone(root);
  copy.remove("deploy");  // how a version is rolled out is the version's own
  if (YAML::Node fns = copy["functions"]; fns && fns.IsMap()) {
    // Migrations are the version's own (no triggers): a version may add, change or drop them.
    std::vector<std::string> migrations;
    for (auto it = fns.begin(); it != fns.end(); ++it) {
      if (it->second.IsMap() && it->second["migration"] && it->second["migration"].as<std::string>("") == "true") {
        migrations.push_back(it->first.as<std::string>(""));
      }
    }
    for (const auto& m : migrations) fns.remove(m);
    for (auto it = fns.begin(); it != fns.end(); ++it) {
      YAML::Node fn = it->second;
      if (!fn.IsMap()) continue;
      std::vector<std::string> drop;
      for (auto k = fn.begin(); k != fn.end(); ++k) {
        const std::string key = k->first.as<std::string>("");
        if (!trigger_side(key)) drop.push_back(key);
      }
      for (const auto& key : drop) fn.remove(key);
    }
  }
  return copy;
}

std::string emitted(const YAML::Node& n) {
  YAML::Emitter out;
  out << n;
  return out.c_str();
}

}  // namespace

Expected<std::string> manifest_topology(std::string_view text) {
  try {
    YAML::Node root = YAML::Load(std::string(text));
    if (!root.IsMap()) return Error{"the manifest is not a YAML mapping"};
    return emitted(topology_of(root));
  } catch (const YAML::Exception& e) {
    return Error{std::string("the manifest is not valid YAML: ") + e.what()};
  }
}

std::vector<std::string> topology_differences(std::string_view before, std::string_view after) {
  std::vector<std::string> out;
  try {
    YAML::Node a = topology_of(YAML::Load(std::string(before))), b = topology_of(YAML::Load(std::string(after)));
    std::set<std::string> keys;
    for (const auto* n : {&a, &b}) {
      if (!n->IsMap()) continue;
      for (auto it = n->begin(); it != n->end(); ++it) keys.insert(it->first.as<std::string>(""));
    }
    for (const auto& key : keys) {
      if (key == "functions") continue;
      if (emitted(a[key]) != emitted(b[key])) out.push_back("`" + key + ":` differs");
    }
    std::set<std::string> fns;
    for (const auto* n : {&a, &b}) {
      if (YAML::Node f = (*n)["functions"]; f && f.IsMap()) {
        for (auto it = f.begin(); it != f.end(); ++it) fns.insert(it->first.as<std::string>(""));
      }
    }
    for (const auto& fn : fns) {
      YAML::Node fa = a["functions"][fn], fb = b["functions"][fn];
      if (!fa) out.push_back("function '" + fn + "' is new");
      else if (!fb) out.push_back("function '" + fn + "' is gone");
      else if (emitted(fa) != emitted(fb)) out.push_back("function '" + fn + "' changes its triggers, outputs, retry or timeout");
    }
  } catch (const YAML::Exception& e) {
    out.push_back(std::string("the manifest is not valid YAML: ") + e.what());
  }
  return out;
}

}  // namespace nimbus
