#include "manifest/manifest.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "core/cron.h"
#include "core/mqtt_topic.h"
#include "core/units.h"
#include "core/route_pattern.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kTriggerKinds[] = {"http", "queue", "topic", "timer",
                                             "stream", "blob", "mqtt", "file"};

class Reader {
 public:
  Reader(std::string file, const EnvLookup& env, fs::path app_dir)
      : file_(std::move(file)), env_(env), app_dir_(std::move(app_dir)) {}

  std::vector<Diagnostic> diagnostics;

  void error(const YAML::Node& at, const std::string& path, std::string message) {
    Diagnostic d;
    d.file = file_;
    if (at.IsDefined() && at.Mark().line >= 0) {
      d.line = at.Mark().line + 1;
      d.column = at.Mark().column + 1;
    }
    d.path = path;
    d.message = std::move(message);
    diagnostics.push_back(std::move(d));
  }

  // Checks that `node` is a map whose keys are all in `known`; reports unknown and repeated
  // keys. Returns false when `node` is not a map.
  bool check_map(const YAML::Node& node, const std::string& path,
                 std::initializer_list<std::string_view> known) {
    if (!node.IsMap()) {
      error(node, path, "is " + kind_of(node) + "; expected a mapping of keys to values");
      return false;
    }
    std::vector<std::string_view> candidates(known);
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      std::string key = it->first.Scalar();
      if (!seen.insert(key).second) {
        error(it->first, join(path, key), "appears twice; expected each key once");
        continue;
      }
      if (std::find(candidates.begin(), candidates.end(), key) == candidates.end()) {
        std::string msg = "unknown key '" + key + "'";
        std::string guess = did_you_mean(key, candidates);
        if (!guess.empty()) msg += "; did you mean '" + guess + "'?";
        else msg += "; expected one of: " + list(candidates);
        error(it->first, join(path, key), msg);
      }
    }
    return true;
  }

  // A scalar with ${VAR} expanded; nullopt (after reporting) when it is not a scalar.
  std::optional<std::string> scalar(const YAML::Node& node, const std::string& path,
                                    std::string_view expected) {
    if (!node.IsScalar()) {
      error(node, path, "is " + kind_of(node) + "; expected " + std::string(expected));
      return std::nullopt;
    }
    return expand(node, path, node.Scalar());
  }

  std::optional<std::string> expand(const YAML::Node& at, const std::string& path,
                                    const std::string& text) {
    std::string out;
    std::size_t i = 0;
    while (i < text.size()) {
      if (text.compare(i, 2, "${") != 0) {
        out.push_back(text[i++]);
        continue;
      }
      auto close = text.find('}', i + 2);
      if (close == std::string::npos) {
        error(at, path, "has '${' with no closing '}'; expected ${NAME} or ${NAME:-default}");
        return std::nullopt;
      }
      std::string inner = text.substr(i + 2, close - i - 2);
      std::optional<std::string> fallback;
      if (auto dash = inner.find(":-"); dash != std::string::npos) {
        fallback = inner.substr(dash + 2);
        inner.resize(dash);
      }
      bool valid = !inner.empty() && std::all_of(inner.begin(), inner.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
      });
      if (!valid) {
        error(at, path, "has '${" + inner + "}'; expected an environment variable name");
        return std::nullopt;
      }
      auto value = env_(inner);
      if (!value && !fallback) {
        error(at, path,
              "uses environment variable " + inner +
                  ", which is not set; set it, or give a default as ${" + inner + ":-value}");
        return std::nullopt;
      }
      out += value ? *value : *fallback;
      i = close + 1;
    }
    return out;
  }

  std::optional<Duration> duration(const YAML::Node& node, const std::string& path) {
    auto text = scalar(node, path, "a duration such as 500ms, 30s or 5m");
    if (!text) return std::nullopt;
    auto d = parse_duration(*text);
    if (!d || *d <= Duration::zero()) {
      error(node, path, "'" + *text + "' is not a duration; expected a positive duration such as 500ms, 30s or 5m");
      return std::nullopt;
    }
    return d;
  }

  std::optional<std::size_t> size(const YAML::Node& node, const std::string& path) {
    auto text = scalar(node, path, "a size such as 512KiB or 10MiB");
    if (!text) return std::nullopt;
    auto s = parse_size(*text);
    if (!s || *s == 0) {
      error(node, path, "'" + *text + "' is not a size; expected a positive size such as 512KiB or 10MiB");
      return std::nullopt;
    }
    return s;
  }

  std::optional<long> integer(const YAML::Node& node, const std::string& path, long min, long max) {
    std::string expected = "an integer from " + std::to_string(min) + " to " + std::to_string(max);
    auto text = scalar(node, path, expected);
    if (!text) return std::nullopt;
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(text->c_str(), &end, 10);
    if (text->empty() || *end != '\0' || errno != 0 || v < min || v > max) {
      error(node, path, "'" + *text + "' is out of range; expected " + expected);
      return std::nullopt;
    }
    return v;
  }

  std::optional<bool> boolean(const YAML::Node& node, const std::string& path) {
    auto text = scalar(node, path, "true or false");
    if (!text) return std::nullopt;
    if (*text == "true") return true;
    if (*text == "false") return false;
    error(node, path, "'" + *text + "' is not a boolean; expected true or false");
    return std::nullopt;
  }

  // Reads one of `choices`; reports a did-you-mean otherwise.
  std::optional<std::string> choice(const YAML::Node& node, const std::string& path,
                                    const std::vector<std::string_view>& choices) {
    auto text = scalar(node, path, "one of: " + list(choices));
    if (!text) return std::nullopt;
    if (std::find(choices.begin(), choices.end(), *text) != choices.end()) return text;
    std::string msg = "'" + *text + "' is not allowed";
    std::string guess = did_you_mean(*text, choices);
    if (!guess.empty()) msg += "; did you mean '" + guess + "'?";
    else msg += "; expected one of: " + list(choices);
    error(node, path, msg);
    return std::nullopt;
  }

  void read_app(const YAML::Node& root, AppSpec& app) {
    if (!check_map(root, "", {"name", "store", "durability", "http", "shutdown_grace", "worker_threads",
                              "streams", "mqtt", "blobs", "functions"})) {
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
        if (v->rfind("sqlite:", 0) == 0 && v->size() > 7) {
          app.store = *v;
        } else if (v->rfind("redis://", 0) == 0 || v->rfind("postgres://", 0) == 0 ||
                   v->rfind("postgresql://", 0) == 0) {
          app.store = *v;
        } else {
          error(n, "store", "'" + *v + "' is not a store URL; expected sqlite:PATH, redis://HOST:PORT or postgres://...");
        }
      }
    }
    if (auto n = root["durability"]) {
      if (auto d = choice(n, "durability", {"process", "fsync"})) app.fsync = *d == "fsync";
    }
    if (auto n = root["http"]) read_http(n, app.http);
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
    if (functions.IsNull()) return;  // an app with no functions yet
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
    resolve_streams(app);
    check_mqtt_broker(root, app);
  }

  // mqtt: {url, client_id, username, password, keepalive}: the one broker of the app.
  void read_mqtt_broker(const YAML::Node& n, AppSpec& app) {
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

  // mqtt triggers and outputs need the app's broker.
  void check_mqtt_broker(const YAML::Node& root, const AppSpec& app) {
    if (app.mqtt) return;
    for (const auto& fn : app.functions) {
      bool uses = false;
      for (const auto& t : fn.triggers) uses |= t.kind == TriggerKind::mqtt;
      for (const auto& o : fn.outputs) uses |= o.kind == OutputSpec::Kind::mqtt;
      if (uses) {
        error(root, "mqtt",
              "is missing, but function '" + fn.name + "' uses MQTT; expected the broker, e.g. mqtt: {url: mqtt://127.0.0.1:1883}");
        return;
      }
    }
  }

  bool read_mqtt_trigger(const YAML::Node& n, const std::string& path, const FunctionSpec& fn, TriggerSpec& t) {
    std::size_t errors_before = diagnostics.size();
    if (!check_map(n, path, {"topic", "qos", "lease", "batch_size"})) return false;
    t.queue.name = mqtt_queue_for(fn.name);
    if (auto v = n["topic"]; !v) {
      error(n, path + ".topic", "is missing; expected a topic filter, e.g. topic: devices/+/telemetry");
    } else if (auto filter = scalar(v, path + ".topic", "a topic filter such as devices/+/telemetry")) {
      std::string problem = check_topic_filter(*filter);
      if (!problem.empty()) error(v, path + ".topic", "'" + *filter + "' " + problem);
      t.mqtt.filter = *filter;
    }
    if (auto v = n["qos"]) {
      if (auto q = integer(v, path + ".qos", 0, 1)) t.mqtt.qos = static_cast<int>(*q);
    }
    if (auto v = n["lease"]) {
      if (auto d = duration(v, path + ".lease")) t.queue.lease = *d;
    }
    if (auto v = n["batch_size"]) {
      if (auto b = integer(v, path + ".batch_size", 1, 1000)) t.queue.batch_size = static_cast<int>(*b);
    }
    return diagnostics.size() == errors_before;
  }

  void read_streams(const YAML::Node& n, AppSpec& app) {
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

  // Streams that functions read or write without declaring them get the defaults; stream
  // outputs learn their stream's partition count (a record's key picks the partition).
  void resolve_streams(AppSpec& app) {
    auto ensure = [&app](const std::string& name) -> const StreamSpec& {
      if (const auto* s = app.find_stream(name)) return *s;
      StreamSpec st;
      st.name = name;
      app.streams.push_back(st);
      return app.streams.back();
    };
    for (auto& fn : app.functions) {
      for (const auto& t : fn.triggers)
        if (t.kind == TriggerKind::stream) ensure(t.stream.name);
      for (auto& o : fn.outputs)
        if (o.kind == OutputSpec::Kind::stream) o.partitions = ensure(o.target).partitions;
    }
  }

  void read_http(const YAML::Node& n, HttpSettings& http) {
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

  bool read_function(const YAML::Node& n, const std::string& path, FunctionSpec& fn) {
    std::size_t errors_before = diagnostics.size();
    if (!check_map(n, path, {"runtime", "handler", "triggers", "env", "timeout", "concurrency",
                             "wait_queue", "blocking", "min_instances", "max_instances", "idle_timeout",
                             "memory_limit", "cpu_limit", "open_files", "env_allow", "working_dir",
                             "command", "isolation", "network", "outputs", "retry"})) {
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
    return diagnostics.size() == errors_before;
  }

  void read_env(const YAML::Node& n, const std::string& path, FunctionSpec& fn) {
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

  void read_triggers(const YAML::Node& n, const std::string& path, FunctionSpec& fn) {
    if (!n.IsSequence()) {
      error(n, path, "is " + kind_of(n) + "; expected a list of triggers, e.g. - http: {route: /" + fn.name + "}");
      return;
    }
    for (std::size_t i = 0; i < n.size(); ++i) {
      std::string p = path + "[" + std::to_string(i) + "]";
      const YAML::Node t = n[i];
      if (!t.IsMap() || t.size() != 1) {
        error(t, p, "is not a single trigger; expected one key naming the trigger kind: " + list(kTriggerKinds));
        continue;
      }
      auto it = t.begin();
      std::string kind = it->first.Scalar();
      if (kind == "http") {
        TriggerSpec spec;
        spec.kind = TriggerKind::http;
        if (read_http_trigger(it->second, p + ".http", spec.http)) fn.triggers.push_back(spec);
        continue;
      }
      if (kind == "timer") {
        TriggerSpec spec;
        spec.kind = TriggerKind::timer;
        if (read_timer_trigger(it->second, p + ".timer", spec.timer)) fn.triggers.push_back(spec);
        continue;
      }
      if (kind == "stream") {
        TriggerSpec spec;
        spec.kind = TriggerKind::stream;
        spec.stream.group = fn.name;
        if (read_stream_trigger(it->second, p + ".stream", spec.stream)) fn.triggers.push_back(spec);
        continue;
      }
      if (kind == "queue" || kind == "topic") {
        TriggerSpec spec;
        spec.kind = kind == "queue" ? TriggerKind::queue : TriggerKind::topic;
        if (read_queue_trigger(it->second, p + "." + kind, kind == "topic", fn, spec.queue)) fn.triggers.push_back(spec);
        continue;
      }
      if (kind == "file") {
        TriggerSpec spec;
        spec.kind = TriggerKind::file;
        if (read_file_trigger(it->second, p + ".file", spec.file)) fn.triggers.push_back(spec);
        continue;
      }
      if (kind == "mqtt") {
        TriggerSpec spec;
        spec.kind = TriggerKind::mqtt;
        if (read_mqtt_trigger(it->second, p + ".mqtt", fn, spec)) fn.triggers.push_back(spec);
        continue;
      }
      if (kind == "blob") {
        TriggerSpec spec;
        spec.kind = TriggerKind::blob;
        if (read_blob_trigger(it->second, p + ".blob", spec.blob)) fn.triggers.push_back(spec);
        continue;
      }
      std::vector<std::string_view> kinds(std::begin(kTriggerKinds), std::end(kTriggerKinds));
      std::string guess = did_you_mean(kind, kinds);
      error(it->first, p + "." + kind,
            "unknown trigger kind '" + kind + "'" +
                (guess.empty() ? "; expected one of: " + list(kinds) : "; did you mean '" + guess + "'?"));
    }
  }

  // Queue, topic and state names: lower-case letters, digits, '.', '-', '_'.
  bool check_name(const YAML::Node& at, const std::string& path, const std::string& name, const char* what) {
    bool valid = !name.empty() && name.size() <= 200 && std::all_of(name.begin(), name.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
    });
    if (!valid) {
      error(at, path, "'" + name + "' is not a valid " + what +
                          " name; expected lower-case letters, digits, '.', '-' or '_' (at most 200)");
    }
    return valid;
  }

  bool read_timer_trigger(const YAML::Node& n, const std::string& path, TimerTriggerSpec& t) {
    std::size_t errors_before = diagnostics.size();
    if (!check_map(n, path, {"schedule", "time_zone", "run_on_startup"})) return false;
    if (auto v = n["schedule"]; !v) {
      error(n, path + ".schedule", "is missing; expected a cron expression such as \"0 */5 * * * *\" (every five minutes)");
    } else if (auto text = scalar(v, path + ".schedule", "a cron expression")) {
      if (auto cron = parse_cron(*text); !cron) {
        error(v, path + ".schedule", cron.error().message);
      } else if (!next_local(*cron, date::local_days(date::year(2024) / 1 / 1))) {
        error(v, path + ".schedule", "cron '" + *text + "' never matches a date (such as 30 February); expected a schedule that runs");
      } else {
        t.schedule = *text;
      }
    }
    if (auto v = n["time_zone"]) {
      if (auto z = scalar(v, path + ".time_zone", "an IANA time zone such as Europe/Berlin")) t.time_zone = *z;
    }
    if (auto v = n["run_on_startup"]) {
      if (auto b = boolean(v, path + ".run_on_startup")) t.run_on_startup = *b;
    }
    return diagnostics.size() == errors_before;
  }

  bool read_stream_trigger(const YAML::Node& n, const std::string& path, StreamTriggerSpec& t) {
    std::size_t errors_before = diagnostics.size();
    if (!check_map(n, path, {"name", "group", "batch_size", "max_wait", "start"})) return false;
    if (auto v = n["name"]; !v) {
      error(n, path + ".name", "is missing; expected the stream's name, e.g. name: telemetry");
    } else if (auto name = scalar(v, path + ".name", "a stream name")) {
      if (check_name(v, path + ".name", *name, "stream")) t.name = *name;
    }
    if (auto v = n["group"]) {
      if (auto g = scalar(v, path + ".group", "a consumer group name")) {
        if (check_name(v, path + ".group", *g, "consumer group")) t.group = *g;
      }
    }
    if (auto v = n["batch_size"]) {
      if (auto b = integer(v, path + ".batch_size", 1, 10000)) t.batch_size = static_cast<int>(*b);
    }
    if (auto v = n["max_wait"]) {
      if (auto d = duration(v, path + ".max_wait")) t.max_wait = *d;
    }
    if (auto v = n["start"]) {
      if (auto c = choice(v, path + ".start", {"earliest", "latest"})) t.from_latest = *c == "latest";
    }
    return diagnostics.size() == errors_before;
  }

  bool read_file_trigger(const YAML::Node& n, const std::string& path, FileTriggerSpec& f) {
    std::size_t errors_before = diagnostics.size();
    if (!check_map(n, path, {"path", "pattern", "max_size"})) return false;
    if (auto v = n["path"]; !v) {
      error(n, path + ".path", "is missing; expected the folder to watch, e.g. path: inbox (relative to the app folder)");
    } else if (auto dir = scalar(v, path + ".path", "a folder")) {
      std::error_code ec;
      fs::path resolved = (app_dir_ / *dir).lexically_normal();
      if (dir->empty()) {
        error(v, path + ".path", "is empty; expected the folder to watch, e.g. path: inbox");
      } else if (fs::exists(resolved, ec) && !fs::is_directory(resolved, ec)) {
        error(v, path + ".path", "'" + resolved.string() + "' is a file; expected a folder to watch (created at start when missing)");
      } else {
        f.path = resolved;
      }
    }
    if (auto v = n["pattern"]) {
      if (auto glob = scalar(v, path + ".pattern", "a file-name glob such as *.csv")) {
        if (glob->empty() || glob->find('/') != std::string::npos) {
          error(v, path + ".pattern", "'" + *glob + "' is not a file-name glob; expected one such as *.csv (names only, no '/')");
        } else {
          f.pattern = *glob;
        }
      }
    }
    if (auto v = n["max_size"]) {
      if (auto s = size(v, path + ".max_size")) f.max_size = *s;
    }
    return diagnostics.size() == errors_before;
  }

  // CONTAINER/PATTERN: a container, and a name pattern with captures (core/blob_path.h).
  struct BlobPathSpec {
    std::string container, text;
    BlobPattern pattern;
  };
  std::optional<BlobPathSpec> blob_path(const YAML::Node& v, const std::string& path, const char* example) {
    auto text = scalar(v, path, std::string("a blob path such as ") + example);
    if (!text) return std::nullopt;
    auto slash = text->find('/');
    std::string container = text->substr(0, slash);
    if (auto why = check_blob_container(container); !why.empty()) {
      error(v, path, "'" + *text + "': container '" + container + "' " + why);
      return std::nullopt;
    }
    std::string problem;
    auto pattern = slash == std::string::npos ? std::nullopt : parse_blob_pattern(text->substr(slash + 1), &problem);
    if (!pattern) {
      error(v, path, "'" + *text + "' " + (problem.empty() ? std::string("names a container only") : problem) +
                         "; expected CONTAINER/NAME such as " + example);
      return std::nullopt;
    }
    return BlobPathSpec{container, text->substr(slash + 1), std::move(*pattern)};
  }

  bool read_blob_trigger(const YAML::Node& n, const std::string& path, BlobTriggerSpec& b) {
    std::size_t errors_before = diagnostics.size();
    if (!check_map(n, path, {"path", "events", "lease"})) return false;
    if (auto v = n["lease"]) {
      if (auto d = duration(v, path + ".lease")) b.lease = *d;
    }
    if (auto v = n["path"]; !v) {
      error(n, path + ".path", "is missing; expected the container and a name pattern, e.g. path: \"uploads/{name}.csv\"");
    } else if (auto parsed = blob_path(v, path + ".path", "uploads/{name}.csv")) {
      for (const auto& c : parsed->pattern.captures()) {
        for (const char* builtin : {"container", "path", "event", "version", "etag", "size", "content_type", "sha256"}) {
          if (c == builtin) {
            error(v, path + ".path", "captures {" + c + "}, which would hide the built-in blob." + c +
                                         "; expected another name (name is allowed: it replaces blob.name)");
          }
        }
      }
      b.container = parsed->container;
      b.pattern = parsed->text;
    }
    if (auto v = n["events"]) {
      std::vector<YAML::Node> items;
      if (v.IsSequence()) {
        for (std::size_t i = 0; i < v.size(); ++i) items.push_back(v[i]);
      } else {
        items.push_back(v);
      }
      b.events = 0;
      for (std::size_t i = 0; i < items.size(); ++i) {
        std::string p = path + ".events" + (v.IsSequence() ? "[" + std::to_string(i) + "]" : "");
        if (auto e = choice(items[i], p, {"created", "updated", "deleted"})) {
          b.events |= *e == "created" ? kBlobCreated : *e == "updated" ? kBlobUpdated : kBlobDeleted;
        }
      }
      if (items.empty()) error(v, path + ".events", "is empty; expected some of: created, updated, deleted");
    }
    return diagnostics.size() == errors_before;
  }

  bool read_queue_trigger(const YAML::Node& n, const std::string& path, bool topic, const FunctionSpec& fn,
                          QueueTriggerSpec& q) {
    std::size_t errors_before = diagnostics.size();
    if (topic) {
      if (!check_map(n, path, {"name", "subscription", "batch_size", "max_wait", "lease", "filter"})) return false;
    } else if (!check_map(n, path, {"name", "batch_size", "max_wait", "lease"})) {
      return false;
    }
    const char* what = topic ? "topic" : "queue";
    if (auto v = n["name"]; !v) {
      error(n, path + ".name", std::string("is missing; expected the ") + what + "'s name, e.g. name: orders");
    } else if (auto name = scalar(v, path + ".name", std::string("a ") + what + " name")) {
      if (check_name(v, path + ".name", *name, what)) q.name = *name;
    }
    if (auto v = n["batch_size"]) {
      if (auto b = integer(v, path + ".batch_size", 1, 1000)) q.batch_size = static_cast<int>(*b);
    }
    if (auto v = n["max_wait"]) {
      if (auto d = duration(v, path + ".max_wait")) q.max_wait = *d;
    }
    if (auto v = n["lease"]) {
      if (auto d = duration(v, path + ".lease")) q.lease = *d;
    }
    if (topic) {
      q.subscription = fn.name;
      if (auto v = n["subscription"]) {
        if (auto sub = scalar(v, path + ".subscription", "a subscription name")) {
          if (check_name(v, path + ".subscription", *sub, "subscription")) q.subscription = *sub;
        }
      }
      if (auto f = n["filter"]) {
        if (check_map(f, path + ".filter", {"type", "source", "subject_prefix"})) {
          if (auto v = f["type"]) q.type = scalar(v, path + ".filter.type", "a CloudEvents type").value_or("");
          if (auto v = f["source"]) q.source = scalar(v, path + ".filter.source", "a CloudEvents source").value_or("");
          if (auto v = f["subject_prefix"]) {
            q.subject_prefix = scalar(v, path + ".filter.subject_prefix", "a subject prefix").value_or("");
          }
        }
      }
    }
    return diagnostics.size() == errors_before;
  }

  void read_outputs(const YAML::Node& n, const std::string& path, FunctionSpec& fn) {
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

  void read_retry(const YAML::Node& n, const std::string& path, RetryPolicy& r) {
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

  bool read_http_trigger(const YAML::Node& n, const std::string& path, HttpTriggerSpec& http) {
    std::size_t errors_before = diagnostics.size();
    if (!check_map(n, path, {"route", "methods", "auth", "async", "upload"})) return false;
    if (auto v = n["route"]; !v) {
      error(n, path + ".route", "is missing; expected a path such as /orders/{id}");
    } else if (auto r = scalar(v, path + ".route", "a path such as /orders/{id}")) {
      std::string problem = check_route(*r);
      if (!problem.empty()) error(v, path + ".route", "'" + *r + "' " + problem);
      http.route = *r;
    }
    if (auto v = n["methods"]) {
      static const std::vector<std::string_view> kMethods = {"GET", "POST", "PUT", "PATCH",
                                                            "DELETE", "HEAD", "OPTIONS"};
      std::vector<YAML::Node> items;
      if (v.IsSequence()) {
        for (std::size_t i = 0; i < v.size(); ++i) items.push_back(v[i]);
      } else {
        items.push_back(v);
      }
      for (std::size_t i = 0; i < items.size(); ++i) {
        std::string p = path + ".methods" + (v.IsSequence() ? "[" + std::to_string(i) + "]" : "");
        auto m = scalar(items[i], p, "an HTTP method");
        if (!m) continue;
        std::string upper = *m;
        std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
        if (std::find(kMethods.begin(), kMethods.end(), upper) == kMethods.end()) {
          error(items[i], p, "'" + *m + "' is not an HTTP method; expected one of: " + list(kMethods));
          continue;
        }
        if (std::find(http.methods.begin(), http.methods.end(), upper) == http.methods.end()) {
          http.methods.push_back(upper);
        }
      }
    }
    if (auto v = n["auth"]) {
      if (auto a = choice(v, path + ".auth", {"anonymous", "function"})) {
        http.auth = *a == "function" ? AuthLevel::function : AuthLevel::anonymous;
      }
    }
    if (auto v = n["async"]) {
      if (auto b = boolean(v, path + ".async")) http.asynchronous = *b;
    }
    if (auto v = n["upload"]) read_upload(v, path + ".upload", http);
    if (http.route.rfind("/_nimbus/", 0) == 0) {
      error(n["route"], path + ".route", "'" + http.route + "' is under /_nimbus/, which Nimbus keeps for itself (job status URLs)");
    }
    return diagnostics.size() == errors_before;
  }

  // upload: {container: NAME}: PUT and POST only, and a route parameter to name the blob.
  void read_upload(const YAML::Node& v, const std::string& path, HttpTriggerSpec& http) {
    if (!check_map(v, path, {"container"})) return;
    auto c = v["container"];
    if (!c) {
      error(v, path + ".container", "is missing; expected the container uploads go to, e.g. container: uploads");
      return;
    }
    auto container = scalar(c, path + ".container", "a container name");
    if (!container) return;
    if (auto why = check_blob_container(*container); !why.empty()) {
      error(c, path + ".container", "'" + *container + "' " + why);
      return;
    }
    http.upload_container = *container;
    if (http.route.find('{') == std::string::npos) {
      error(v, path, "needs a route parameter to name the blob; expected a route such as /uploads/{*path}");
    }
    if (http.asynchronous) error(v, path, "cannot be combined with async: true (an upload is stored, not queued)");
    if (http.methods.empty()) http.methods = {"PUT", "POST"};
    for (const auto& m : http.methods) {
      if (m != "PUT" && m != "POST") {
        error(v, path, "takes PUT and POST only, but the route's methods include " + m + "; expected methods: [PUT, POST]");
      }
    }
  }

  void check_route_conflicts(const AppSpec& app) {
    struct Seen {
      std::string shape, function;
      std::vector<std::string> methods;
    };
    std::vector<Seen> seen;
    for (const auto& fn : app.functions) {
      for (const auto& t : fn.triggers) {
        if (t.kind != TriggerKind::http) continue;
        std::string shape = route_shape(t.http.route);
        for (const auto& s : seen) {
          if (s.shape != shape) continue;
          bool overlap = s.methods.empty() || t.http.methods.empty();
          for (const auto& m : t.http.methods)
            if (std::find(s.methods.begin(), s.methods.end(), m) != s.methods.end()) overlap = true;
          if (overlap) {
            Diagnostic d;
            d.file = file_;
            d.path = "functions." + fn.name + ".triggers";
            d.message = "route " + t.http.route + " is already served by function '" + s.function +
                        "' for the same methods; expected each method and path to have one function";
            diagnostics.push_back(std::move(d));
          }
        }
        seen.push_back({shape, fn.name, t.http.methods});
      }
    }
  }

 private:
  static std::string kind_of(const YAML::Node& n) {
    switch (n.Type()) {
      case YAML::NodeType::Map: return "a mapping";
      case YAML::NodeType::Sequence: return "a list";
      case YAML::NodeType::Scalar: return "'" + n.Scalar() + "'";
      case YAML::NodeType::Null: return "empty";
      default: return "missing";
    }
  }
  static std::string join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }
  template <class Range>
  static std::string list(const Range& items) {
    std::string out;
    for (std::string_view s : items) {
      if (!out.empty()) out += ", ";
      out += s;
    }
    return out;
  }
  static bool is_name(const std::string& s) {
    if (s.empty() || s.size() > 63 || !(s[0] >= 'a' && s[0] <= 'z')) return false;
    return std::all_of(s.begin(), s.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    });
  }

  std::string file_;
  const EnvLookup& env_;
  fs::path app_dir_;  // relative paths in the manifest (file triggers) start here
};

}  // namespace

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
  Reader reader(file, env, app_dir);
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

}  // namespace nimbus
