// The manifest reader's triggers: http (and uploads), queue, topic, timer, stream, file, blob and
// mqtt, each checked key by key; and routes that two functions would both serve.
#include <algorithm>
#include <cctype>

#include "core/cron.h"
#include "core/mqtt_topic.h"
#include "core/route_pattern.h"
#include "manifest/manifest_reader.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kTriggerKinds[] = {"http", "queue", "topic", "timer",
                                             "stream", "blob", "mqtt", "file"};

}  // namespace

void ManifestReader::read_triggers(const YAML::Node& n, const std::string& path, FunctionSpec& fn) {
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
    const YAML::Node body = it->second;
    const std::string at = p + "." + kind;
    TriggerSpec spec;
    bool ok = false;
    if (kind == "http") {
      spec.kind = TriggerKind::http;
      ok = read_http_trigger(body, at, spec.http);
    } else if (kind == "timer") {
      spec.kind = TriggerKind::timer;
      ok = read_timer_trigger(body, at, spec.timer);
    } else if (kind == "stream") {
      spec.kind = TriggerKind::stream;
      spec.stream.group = fn.name;  // unless it names another
      ok = read_stream_trigger(body, at, spec.stream);
    } else if (kind == "queue" || kind == "topic") {
      spec.kind = kind == "queue" ? TriggerKind::queue : TriggerKind::topic;
      ok = read_queue_trigger(body, at, kind == "topic", fn, spec.queue);
    } else if (kind == "file") {
      spec.kind = TriggerKind::file;
      ok = read_file_trigger(body, at, spec.file);
    } else if (kind == "mqtt") {
      spec.kind = TriggerKind::mqtt;
      ok = read_mqtt_trigger(body, at, fn, spec);
    } else if (kind == "blob") {
      spec.kind = TriggerKind::blob;
      ok = read_blob_trigger(body, at, spec.blob);
    } else {
      std::vector<std::string_view> kinds(std::begin(kTriggerKinds), std::end(kTriggerKinds));
      std::string guess = did_you_mean(kind, kinds);
      error(it->first, at,
            "unknown trigger kind '" + kind + "'" +
                (guess.empty() ? "; expected one of: " + list(kinds) : "; did you mean '" + guess + "'?"));
    }
    if (ok) fn.triggers.push_back(std::move(spec));
  }
}

bool ManifestReader::read_http_trigger(const YAML::Node& n, const std::string& path, HttpTriggerSpec& http) {
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

void ManifestReader::read_upload(const YAML::Node& v, const std::string& path, HttpTriggerSpec& http) {
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

void ManifestReader::check_route_conflicts(const AppSpec& app) {
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

bool ManifestReader::read_queue_trigger(const YAML::Node& n, const std::string& path, bool topic, const FunctionSpec& fn,
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

bool ManifestReader::read_timer_trigger(const YAML::Node& n, const std::string& path, TimerTriggerSpec& t) {
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

bool ManifestReader::read_stream_trigger(const YAML::Node& n, const std::string& path, StreamTriggerSpec& t) {
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

bool ManifestReader::read_file_trigger(const YAML::Node& n, const std::string& path, FileTriggerSpec& f) {
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

bool ManifestReader::read_blob_trigger(const YAML::Node& n, const std::string& path, BlobTriggerSpec& b) {
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

bool ManifestReader::read_mqtt_trigger(const YAML::Node& n, const std::string& path, const FunctionSpec& fn, TriggerSpec& t) {
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

}  // namespace nimbus
