// The http kind: its keys, its Trigger (the public listener, with the function keys kept
// beside the app, made on first start) and the queue its async routes are fed from.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>

#include "core/route_pattern.h"
#include "manifest/manifest_reader.h"
#include "triggers/http/async_jobs.h"
#include "triggers/http/http_spec.h"
#include "triggers/http/http_trigger.h"
#include "triggers/kind.h"

namespace nimbus {
namespace {

// upload: {container: NAME}: PUT and POST only, and a route parameter to name the blob.
void read_upload(ManifestReader& r, const YAML::Node& v, const std::string& path, HttpTriggerSpec& http) {
  if (!r.check_map(v, path, {"container"})) return;
  auto c = v["container"];
  if (!c) {
    r.error(v, path + ".container", "is missing; expected the container uploads go to, e.g. container: uploads");
    return;
  }
  auto container = r.scalar(c, path + ".container", "a container name");
  if (!container) return;
  if (auto why = check_blob_container(*container); !why.empty()) {
    r.error(c, path + ".container", "'" + *container + "' " + why);
    return;
  }
  http.upload_container = *container;
  if (http.route.find('{') == std::string::npos) {
    r.error(v, path, "needs a route parameter to name the blob; expected a route such as /uploads/{*path}");
  }
  if (http.asynchronous) r.error(v, path, "cannot be combined with async: true (an upload is stored, not queued)");
  if (http.methods.empty()) http.methods = {"PUT", "POST"};
  for (const auto& m : http.methods) {
    if (m != "PUT" && m != "POST") {
      r.error(v, path, "takes PUT and POST only, but the route's methods include " + m + "; expected methods: [PUT, POST]");
    }
  }
}

std::shared_ptr<const TriggerSettings> read(ManifestReader& r, const YAML::Node& n, const std::string& path,
                                            const FunctionSpec&) {
  std::size_t errors_before = r.diagnostics.size();
  if (!r.check_map(n, path, {"route", "methods", "auth", "async", "upload"})) return nullptr;
  auto http = std::make_shared<HttpTriggerSpec>();
  if (auto v = n["route"]; !v) {
    r.error(n, path + ".route", "is missing; expected a path such as /orders/{id}");
  } else if (auto route = r.scalar(v, path + ".route", "a path such as /orders/{id}")) {
    std::string problem = check_route(*route);
    if (!problem.empty()) r.error(v, path + ".route", "'" + *route + "' " + problem);
    http->route = *route;
  }
  if (auto v = n["methods"]) http->methods = r.http_methods(v, path + ".methods");
  if (auto v = n["auth"]) {
    if (auto a = r.choice(v, path + ".auth", {"anonymous", "function"})) {
      http->auth = *a == "function" ? AuthLevel::function : AuthLevel::anonymous;
    }
  }
  if (auto v = n["async"]) {
    if (auto b = r.boolean(v, path + ".async")) http->asynchronous = *b;
  }
  if (auto v = n["upload"]) read_upload(r, v, path + ".upload", *http);
  if (http->route.rfind("/_nimbus/", 0) == 0) {
    r.error(n["route"], path + ".route",
            "'" + http->route + "' is under /_nimbus/, which Nimbus keeps for itself (job status URLs)");
  }
  if (r.diagnostics.size() != errors_before) return nullptr;
  return http;
}

Expected<std::unique_ptr<Trigger>> make(const TriggerContext& context) {
  auto keys = FunctionKeys::load_or_create(context.app.dir / ".nimbus" / "keys.json", context.app);
  if (!keys) return keys.error();
  return std::unique_ptr<Trigger>(std::make_unique<HttpTrigger>(context, std::move(*keys)));
}

// An async route's requests wait in the function's async queue; their job records are
// written as they run (async_jobs.h).
std::optional<StoreFeed> feed(const FunctionSpec& fn, const TriggerSpec& trigger) {
  const auto* http = trigger.as<HttpTriggerSpec>();
  if (!http || !http->asynchronous) return std::nullopt;
  StoreFeed f;
  f.queue = async_queue_for(fn.name);
  f.hooks = async_job_hooks(fn.name);
  return f;
}

}  // namespace

extern const TriggerTemplate kHttpTemplate;
extern const TriggerKindInfo kHttpKind = {"http", read, &kHttpTemplate, make, feed};

}  // namespace nimbus
