#include "cli/commands.h"

#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cctype>
#include <cstdio>
#include <date/date.h>
#include <fstream>
#include <iostream>
#include <thread>

#include "cli/deploy_commands.h"
#include "cli/observe_commands.h"
#include "cli/admin_client.h"
#include "cli/scaffold.h"
#include "core/units.h"
#include "core/private_file.h"
#include "host/host.h"
#include "manifest/manifest.h"

namespace nimbus {
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

std::optional<AppSpec> load_app(const fs::path& dir) {
  auto load = load_manifest(dir, process_environment());
  if (!load.app) {
    std::cerr << load.report();
    std::cerr << "nimbus: the manifest has " << load.diagnostics.size()
              << (load.diagnostics.size() == 1 ? " problem" : " problems") << "; fix and try again\n";
    return std::nullopt;
  }
  return load.app;
}

std::string json_string(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// The stream partitions a host of `nimbus status` holds leases on: "none", or the count and
// each lease's <stream>/<partition>/<group>.
std::string held_partitions(const json::object& host) {
  const auto* p = host.if_contains("partitions");
  if (!p || !p->is_array() || p->as_array().empty()) return "none";
  std::string out = std::to_string(p->as_array().size()) + " (";
  for (const auto& v : p->as_array()) {
    if (out.back() != '(') out += ", ";
    out += v.is_string() ? std::string(v.as_string()) : std::string("?");
  }
  return out + ")";
}

int cmd_validate(const fs::path& dir) {
  auto app = load_app(dir);
  if (!app) return 1;
  int routes = 0;
  for (const auto& f : app->functions) routes += static_cast<int>(f.triggers.size());
  std::cout << app->manifest.string() << ": ok: app '" << app->name << "', " << app->functions.size()
            << " function(s), " << routes << " trigger(s)\n";
  return 0;
}

int cmd_start(const fs::path& dir, HostOptions options, const std::string& store) {
  auto app = load_app(dir);
  if (!app) return 1;
  if (!store.empty()) {
    if (!(store.rfind("sqlite:", 0) == 0 || store.rfind("redis://", 0) == 0 ||
          store.rfind("postgres://", 0) == 0 || store.rfind("postgresql://", 0) == 0)) {
      return fail("--store '" + store + "' is not a store URL; expected sqlite:PATH, redis://HOST:PORT or postgres://...");
    }
    app->store = store;
  }
  return run_host(*app, options);
}

int cmd_invoke(const fs::path& dir, const std::string& name, const std::string& data) {
  std::string body = data;
  if (!data.empty() && data[0] == '@') {
    auto text = read_file(data.substr(1));
    if (!text) return fail("--data " + data + ": " + text.error().message);
    body = *text;
  }
  auto host = find_running_host(dir);
  if (!host) return fail(host.error().message);
  auto res = http_request(host->admin_host, host->admin_port, "POST", "/admin/functions/" + name + "/invoke",
                          body, host->token);
  if (!res) return fail(res.error().message);
  boost::system::error_code ec;
  json::value v = json::parse(res->body, ec);
  if (ec || !v.is_object()) return fail("the host answered " + std::to_string(res->status) + " with: " + res->body);
  const auto& o = v.as_object();
  if (res->status != 200) {
    const auto* err = o.if_contains("error");
    std::string msg = err && err->is_object() ? json_string(err->as_object(), "message") : res->body;
    return fail(msg);
  }
  std::string out = json_string(o, "body");
  std::cout << out;
  if (!out.empty() && out.back() != '\n') std::cout << "\n";
  int status = o.contains("status") && o.at("status").is_int64() ? static_cast<int>(o.at("status").as_int64()) : 0;
  if (status >= 400) {
    return fail("function '" + name + "' answered " + std::to_string(status) + " (" + json_string(o, "outcome") +
                ", invocation " + json_string(o, "invocation_id") + ")");
  }
  return 0;
}

int cmd_status(const fs::path& dir, bool as_json) {
  auto host = find_running_host(dir);
  if (!host) return fail(host.error().message);
  auto status = http_request(host->admin_host, host->admin_port, "GET", "/admin/status", "", host->token);
  if (!status) return fail(status.error().message);
  auto functions = http_request(host->admin_host, host->admin_port, "GET", "/admin/functions", "", host->token);
  if (!functions) return fail(functions.error().message);
  if (status->status != 200 || functions->status != 200) {
    return fail("the admin API answered " + std::to_string(status->status) + ": " + status->body);
  }
  auto cluster = http_request(host->admin_host, host->admin_port, "GET", "/admin/cluster", "", host->token);
  const bool has_cluster = cluster && cluster->status == 200;
  if (as_json) {
    std::cout << "{\"status\":" << status->body << ",\"functions\":" << functions->body;
    if (has_cluster) std::cout << ",\"cluster\":" << cluster->body;
    std::cout << "}\n";
    return 0;
  }
  json::object s = json::parse(status->body).as_object();
  json::object f = json::parse(functions->body).as_object();
  std::cout << "app      " << json_string(s, "app") << " (pid " << s.at("pid").as_int64() << ", up "
            << static_cast<int64_t>(s.at("uptime_seconds").to_number<double>()) << "s"
            << (s.at("draining").as_bool() ? ", draining" : "") << ")\n"
            << "http     " << json_string(s, "http") << "\n"
            << "admin    " << json_string(s, "admin") << "\n"
            << "store    " << json_string(s, "store");
  if (const auto* h = s.if_contains("store_health"); h && h->is_object() && !h->as_object().at("available").as_bool()) {
    std::cout << " (UNAVAILABLE: " << json_string(h->as_object(), "problem") << ")";
  }
  std::cout << "\n";
  if (const auto* m = s.if_contains("mqtt"); m && m->is_object()) {
    std::cout << "mqtt     " << json_string(m->as_object(), "broker")
              << (m->as_object().at("connected").as_bool() ? " (connected)" : " (not connected; retrying)") << "\n";
  }
  // Versions (deploy/): what each alias routes to here, and a canary under way.
  if (const auto* v = s.if_contains("versions"); v && v->is_object() && v->as_object().if_contains("aliases")) {
    for (const auto& [alias, targets] : v->as_object().at("aliases").as_object()) {
      std::string line;
      for (const auto& t : targets.as_array()) {
        line += (line.empty() ? "" : ", ") + json_string(t.as_object(), "version") + " " +
                std::to_string(t.as_object().at("weight").to_number<int64_t>()) + "%";
      }
      std::cout << "version  " << alias << " = " << line << "\n";
    }
    if (const auto* c = v->as_object().if_contains("canary"); c && c->is_object()) {
      const auto& o = c->as_object();
      std::cout << "canary   " << json_string(o, "version") << " at " << o.at("weight").to_number<int64_t>() << "%: "
                << json_string(o, "state") << "\n";
    }
  }
  std::cout << "functions:\n";
  for (const auto& fv : f.at("functions").as_array()) {
    const auto& fn = fv.as_object();
    std::string routes;
    for (const auto& tv : fn.at("triggers").as_array()) {
      const auto& t = tv.as_object();
      if (json_string(t, "kind") != "http") continue;
      std::string methods;
      for (const auto& m : t.at("methods").as_array()) methods += (methods.empty() ? "" : ",") + std::string(m.as_string());
      routes += (routes.empty() ? "" : " ") + (methods.empty() ? std::string("*") : methods) + " " + json_string(t, "route");
    }
    std::cout << "  " << json_string(fn, "name") << "  " << json_string(fn, "runtime") << "  " << routes
              << "  running " << fn.at("running").as_int64() << ", waiting " << fn.at("waiting").as_int64() << "\n";
  }
  if (has_cluster) {
    boost::system::error_code ec;
    json::value c = json::parse(cluster->body, ec);
    if (!ec && c.is_object() && c.as_object().contains("hosts")) {
      const auto& hosts = c.as_object().at("hosts").as_array();
      std::cout << "hosts on this store (" << hosts.size() << "):\n";
      for (const auto& hv : hosts) {
        const auto& h = hv.as_object();
        std::cout << "  " << json_string(h, "id") << (h.at("self").as_bool() ? " (this host)" : "") << "  "
                  << json_string(h, "http") << "  running " << h.at("running").to_number<int64_t>() << ", waiting "
                  << h.at("waiting").to_number<int64_t>() << ", stream partitions " << held_partitions(h)
                  << (h.at("same_manifest").as_bool() ? "" : "  MANIFEST DIFFERS") << "\n";
      }
    }
  }
  return 0;
}

// True while `pid` exists and is not a zombie (an exited child its parent has not reaped).
bool process_alive(int pid) {
  if (::kill(pid, 0) != 0) return false;
  auto stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  auto close = stat->rfind(')');
  return close == std::string::npos || close + 2 >= stat->size() || (*stat)[close + 2] != 'Z';
}

int cmd_stop(const fs::path& dir, int wait_seconds) {
  auto host = find_running_host(dir);
  if (!host) return fail(host.error().message);
  auto res = http_request(host->admin_host, host->admin_port, "POST", "/admin/shutdown", "", host->token);
  if (!res || res->status != 202) {
    // The admin API is unreachable: fall back to the signal it would have sent.
    if (::kill(host->pid, SIGTERM) != 0) return fail("cannot stop pid " + std::to_string(host->pid));
  }
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(wait_seconds);
  while (process_alive(host->pid)) {
    if (std::chrono::steady_clock::now() > give_up) {
      return fail("host pid " + std::to_string(host->pid) + " is still draining after " +
                  std::to_string(wait_seconds) + "s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::cout << "nimbus: stopped host pid " << host->pid << "\n";
  return 0;
}

// --data: the text itself, or @FILE for a file's bytes.
Expected<std::string> data_arg(const std::string& data) {
  if (data.empty() || data[0] != '@') return data;
  auto text = read_file(data.substr(1));
  if (!text) return Error{"--data " + data + ": " + text.error().message};
  return *text;
}

int64_t num(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v && v->is_int64() ? v->as_int64() : 0;
}

int cmd_queue_ls(const fs::path& dir) {
  auto r = admin_call(dir, "GET", "/admin/queues");
  if (!r) return fail(r.error().message);
  std::printf("%-40s %10s %10s %10s %10s\n", "QUEUE", "READY", "DELAYED", "IN FLIGHT", "DEAD");
  for (const auto& q : r->at("queues").as_array()) {
    const auto& o = q.as_object();
    std::printf("%-40s %10lld %10lld %10lld %10lld\n", json_string(o, "queue").c_str(), static_cast<long long>(num(o, "ready")),
                static_cast<long long>(num(o, "delayed")), static_cast<long long>(num(o, "in_flight")),
                static_cast<long long>(num(o, "dead")));
  }
  return 0;
}

int cmd_queue_peek(const fs::path& dir, const std::string& queue, bool dead, int limit, bool as_json) {
  std::string name = dead ? queue + ".dead" : queue;
  auto r = admin_call(dir, "GET", "/admin/queues/" + name + "/messages?limit=" + std::to_string(limit));
  if (!r) return fail(r.error().message);
  if (as_json) {
    std::cout << json::serialize(*r) << "\n";
    return 0;
  }
  for (const auto& m : r->at("messages").as_array()) {
    const auto& o = m.as_object();
    std::cout << json_string(o, "id") << "  deliveries " << num(o, "deliveries");
    if (o.contains("error")) std::cout << "  error: " << json_string(o, "error");
    std::cout << "\n  " << (o.contains("payload") ? json_string(o, "payload") : "(binary) " + json_string(o, "payload_base64"))
              << "\n";
  }
  return 0;
}

int cmd_send(const fs::path& dir, bool topic, const std::string& name, const std::string& data, const std::string& type,
             const std::string& subject, int64_t delay_ms) {
  auto body = data_arg(data);
  if (!body) return fail(body.error().message);
  std::vector<std::pair<std::string, std::string>> headers;
  if (!type.empty()) headers.push_back({"ce-type", type});
  if (!subject.empty()) headers.push_back({"ce-subject", subject});
  if (delay_ms > 0) headers.push_back({"x-delay-ms", std::to_string(delay_ms)});
  auto r = admin_call(dir, "POST", std::string(topic ? "/admin/topics/" : "/admin/queues/") + name + "/messages", *body, headers);
  if (!r) return fail(r.error().message);
  std::cout << json_string(*r, topic ? "event_id" : "id") << "\n";
  return 0;
}

int cmd_queue_purge(const fs::path& dir, const std::string& queue) {
  auto r = admin_call(dir, "DELETE", "/admin/queues/" + queue + "/messages");
  if (!r) return fail(r.error().message);
  std::cout << "purged " << num(*r, "purged") << " messages from " << queue << "\n";
  return 0;
}

int cmd_reload(const fs::path& dir) {
  auto r = admin_call(dir, "POST", "/admin/reload");
  if (!r) return fail(r.error().message);
  std::cout << "reloaded: the host serves the manifest's gateway routes and upstreams now\n";
  return 0;
}

int cmd_routes(const fs::path& dir, bool as_json) {
  auto r = admin_call(dir, "GET", "/admin/routes");
  if (!r) return fail(r.error().message);
  if (as_json) {
    std::cout << json::serialize(*r) << "\n";
    return 0;
  }
  std::printf("%-18s %-28s %-16s %-22s %-10s %s\n", "HOST", "PATH", "METHODS", "TARGET", "AUTH", "LIMITS");
  for (const auto& v : r->at("routes").as_array()) {
    const auto& o = v.as_object();
    std::string methods;
    for (const auto& m : o.at("methods").as_array()) methods += (methods.empty() ? "" : ",") + std::string(m.as_string());
    if (methods.empty()) methods = "any";
    std::string limits;
    if (const auto* x = o.if_contains("rate_limit")) limits += "rate " + std::string(x->as_string()) + " ";
    if (const auto* x = o.if_contains("timeout_ms")) limits += "timeout " + std::to_string(x->as_int64()) + "ms ";
    if (const auto* x = o.if_contains("max_body")) limits += "body " + std::to_string(x->to_number<int64_t>()) + "B ";
    if (o.if_contains("cors")) limits += "cors";
    std::string target = std::string(o.at("kind").as_string()) + ":" + std::string(o.at("target").as_string());
    std::printf("%-18s %-28s %-16s %-22s %-10s %s\n", std::string(o.at("host").as_string()).c_str(),
                std::string(o.at("path").as_string()).c_str(), methods.c_str(), target.c_str(),
                std::string(o.at("auth").as_string()).c_str(), limits.c_str());
  }
  return 0;
}

int cmd_keys(const fs::path& dir, const std::string& action, const std::string& name, const std::string& quota) {
  if (action == "create") {
    json::object body{{"name", name}};
    if (!quota.empty()) body["quota"] = quota;
    auto r = admin_call(dir, "POST", "/admin/keys", json::serialize(body));
    if (!r) return fail(r.error().message);
    std::cout << json_string(*r, "key") << "\n";
    std::cerr << "API key '" << name << "' created" << (quota.empty() ? "" : " with quota " + quota)
              << ". It is shown only now: the host keeps its hash. Send it as X-Api-Key.\n";
    return 0;
  }
  if (action == "revoke") {
    auto r = admin_call(dir, "DELETE", "/admin/keys/" + name);
    if (!r) return fail(r.error().message);
    std::cout << "revoked " << name << " (every host stops taking it within about a second)\n";
    return 0;
  }
  auto r = admin_call(dir, "GET", "/admin/keys");
  if (!r) return fail(r.error().message);
  std::printf("%-24s %-18s %-12s %s\n", "NAME", "PREFIX", "QUOTA", "CREATED (unix ms)");
  for (const auto& v : r->at("keys").as_array()) {
    const auto& o = v.as_object();
    std::printf("%-24s %-18s %-12s %lld\n", json_string(o, "name").c_str(), json_string(o, "prefix").c_str(),
                json_string(o, "quota").empty() ? "-" : json_string(o, "quota").c_str(), static_cast<long long>(num(o, "created_ms")));
  }
  return 0;
}

int cmd_timers(const fs::path& dir) {
  auto r = admin_call(dir, "GET", "/admin/timers");
  if (!r) return fail(r.error().message);
  std::printf("%-24s %-22s %-18s %-22s %-22s\n", "FUNCTION", "SCHEDULE", "TIME ZONE", "LAST", "NEXT");
  for (const auto& t : r->at("timers").as_array()) {
    const auto& o = t.as_object();
    auto text = [&](const char* k) { return o.at(k).is_string() ? std::string(o.at(k).as_string()) : std::string("-"); };
    std::printf("%-24s %-22s %-18s %-22s %-22s\n", text("function").c_str(), text("schedule").c_str(),
                text("time_zone").c_str(), text("last").c_str(), text("next").c_str());
  }
  return 0;
}

int cmd_stream_ls(const fs::path& dir) {
  auto r = admin_call(dir, "GET", "/admin/streams");
  if (!r) return fail(r.error().message);
  std::printf("%-32s %10s %12s %8s\n", "STREAM", "PARTITIONS", "RECORDS", "GROUPS");
  for (const auto& v : r->at("streams").as_array()) {
    const auto& o = v.as_object();
    std::printf("%-32s %10lld %12lld %8zu\n", json_string(o, "stream").c_str(), static_cast<long long>(num(o, "partitions")),
                static_cast<long long>(num(o, "records")), o.at("groups").as_array().size());
  }
  return 0;
}

int cmd_stream_append(const fs::path& dir, const std::string& stream, const std::string& key, const std::string& data,
                      const std::string& type) {
  auto body = data_arg(data);
  if (!body) return fail(body.error().message);
  std::vector<std::pair<std::string, std::string>> headers;
  if (!key.empty()) headers.push_back({"x-key", key});
  if (!type.empty()) headers.push_back({"ce-type", type});
  auto r = admin_call(dir, "POST", "/admin/streams/" + stream + "/records", *body, headers);
  if (!r) return fail(r.error().message);
  std::cout << "partition " << num(*r, "partition") << " offset " << num(*r, "offset") << "\n";
  return 0;
}

int cmd_stream_tail(const fs::path& dir, const std::string& stream, int partition, int64_t from, int limit, bool as_json) {
  std::string target = "/admin/streams/" + stream + "/records?limit=" + std::to_string(limit);
  if (partition >= 0) target += "&partition=" + std::to_string(partition);
  if (from >= 0) target += "&from=" + std::to_string(from);
  auto r = admin_call(dir, "GET", target);
  if (!r) return fail(r.error().message);
  if (as_json) {
    std::cout << json::serialize(*r) << "\n";
    return 0;
  }
  for (const auto& v : r->at("records").as_array()) {
    const auto& o = v.as_object();
    std::string data = o.contains("data") ? (o.at("data").is_string() ? std::string(o.at("data").as_string())
                                                                       : json::serialize(o.at("data")))
                                          : "(binary) " + json_string(o, "data_base64");
    std::cout << num(o, "partition") << "/" << num(o, "offset") << "  key " << json_string(o, "key") << "  " << data << "\n";
  }
  return 0;
}

int cmd_stream_groups(const fs::path& dir, const std::string& stream) {
  auto r = admin_call(dir, "GET", "/admin/streams/" + stream);
  if (!r) return fail(r.error().message);
  std::printf("%-24s %10s %12s %10s\n", "GROUP", "PARTITION", "CHECKPOINT", "LAG");
  for (const auto& g : r->at("groups").as_array()) {
    const auto& o = g.as_object();
    for (const auto& p : o.at("partitions").as_array()) {
      const auto& po = p.as_object();
      std::printf("%-24s %10lld %12lld %10lld\n", json_string(o, "group").c_str(),
                  static_cast<long long>(num(po, "partition")), static_cast<long long>(num(po, "offset")),
                  static_cast<long long>(num(po, "lag")));
    }
  }
  return 0;
}

int cmd_stream_replay(const fs::path& dir, const std::string& stream, const std::string& group, int64_t from_offset,
                      int64_t from_time_ms) {
  std::string query = from_time_ms >= 0 ? "from_time_ms=" + std::to_string(from_time_ms)
                                        : "from_offset=" + std::to_string(std::max<int64_t>(from_offset, 0));
  auto r = admin_call(dir, "POST", "/admin/streams/" + stream + "/groups/" + group + "/replay?" + query);
  if (!r) return fail(r.error().message);
  for (const auto& c : r->at("checkpoints").as_array()) {
    std::cout << group << " partition " << num(c.as_object(), "partition") << " now at offset "
              << num(c.as_object(), "offset") << "\n";
  }
  return 0;
}

// CONTAINER/PATH for a URL: every byte but unreserved ones and '/' %-escaped.
std::string blob_target(const std::string& path) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "/admin/blobs/";
  for (unsigned char c : path) {
    if (std::isalnum(c) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

int cmd_blob_put(const fs::path& dir, const std::string& path, const std::string& file, const std::string& data,
                 const std::string& content_type, bool create_only) {
  if (file.empty() == data.empty()) return fail("blob put " + path + ": give a FILE or --data (one of them)");
  auto body = file.empty() ? data_arg(data) : read_file(file);
  if (!body) return fail(body.error().message);
  std::vector<std::pair<std::string, std::string>> headers;
  if (!content_type.empty()) headers.push_back({"content-type", content_type});
  if (create_only) headers.push_back({"if-none-match", "*"});
  auto r = admin_call(dir, "PUT", blob_target(path), *body, headers);
  if (!r) return fail(r.error().message);
  std::cout << json_string(*r, "path") << " version " << num(*r, "version") << ", " << num(*r, "size") << " bytes, sha256 "
            << json_string(*r, "sha256") << "\n";
  return 0;
}

int cmd_blob_get(const fs::path& dir, const std::string& path, const std::string& out) {
  auto host = find_running_host(dir);
  if (!host) return fail(host.error().message);
  auto res = http_request(host->admin_host, host->admin_port, "GET", blob_target(path), "", host->token);
  if (!res) return fail(res.error().message);
  if (res->status != 200) {
    boost::system::error_code ec;
    json::value v = json::parse(res->body, ec);
    const json::value* err = !ec && v.is_object() ? v.as_object().if_contains("error") : nullptr;
    return fail(err && err->is_object() ? json_string(err->as_object(), "message") : res->body);
  }
  if (out.empty()) {
    std::cout << res->body << std::flush;
    return 0;
  }
  std::ofstream file(out, std::ios::binary | std::ios::trunc);
  file.write(res->body.data(), static_cast<std::streamsize>(res->body.size()));
  if (!file.flush()) return fail("cannot write " + out);
  return 0;
}

int cmd_blob_ls(const fs::path& dir, const std::string& path) {
  const auto slash = path.find('/');
  const std::string container = path.substr(0, slash);
  const std::string prefix = slash == std::string::npos ? "" : path.substr(slash + 1);
  std::printf("%-48s %12s %8s %-24s %s\n", "NAME", "SIZE", "VERSION", "UPDATED", "CONTENT TYPE");
  std::string after;
  do {
    auto r = admin_call(dir, "GET", blob_target(container) + "?limit=1000&prefix=" + blob_target(prefix).substr(13) +
                                        "&after=" + blob_target(after).substr(13));
    if (!r) return fail(r.error().message);
    for (const auto& b : r->at("blobs").as_array()) {
      const auto& o = b.as_object();
      const auto updated = date::format("%Y-%m-%dT%H:%M:%SZ", date::sys_seconds(std::chrono::seconds(num(o, "updated_ms") / 1000)));
      std::printf("%-48s %12lld %8lld %-24s %s\n", json_string(o, "name").c_str(), static_cast<long long>(num(o, "size")),
                  static_cast<long long>(num(o, "version")), updated.c_str(), json_string(o, "content_type").c_str());
    }
    after = json_string(*r, "next_after");
  } while (!after.empty());
  return 0;
}

int cmd_blob_rm(const fs::path& dir, const std::string& path) {
  auto r = admin_call(dir, "DELETE", blob_target(path));
  if (!r) return fail(r.error().message);
  std::cout << "deleted " << path << " (version " << num(*r, "deleted_version") << ")\n";
  return 0;
}

int cmd_dlq_replay(const fs::path& dir, const std::string& queue) {
  auto r = admin_call(dir, "POST", "/admin/queues/" + queue + "/replay");
  if (!r) return fail(r.error().message);
  std::cout << "replayed " << num(*r, "replayed") << " messages from " << queue << ".dead to " << queue << "\n";
  return 0;
}

// --- nimbus orch: orchestration instances through the admin API (durable/client.h) ---------

std::string query_escape(const std::string& text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char hex[4];
      std::snprintf(hex, sizeof hex, "%%%02X", c);
      out += hex;
    }
  }
  return out;
}

std::string value_text(const json::object& o, const char* key) {
  const auto* v = o.if_contains(key);
  return v ? json::serialize(*v) : std::string("null");
}

int cmd_orch_start(const fs::path& dir, const std::string& name, const std::string& id, const std::string& input) {
  auto body = data_arg(input);
  if (!body) return fail(body.error().message);
  auto r = admin_call(dir, "POST", "/admin/orchestrations/" + name + (id.empty() ? "" : "?instance=" + query_escape(id)), *body);
  if (!r) return fail(r.error().message);
  std::cout << json_string(*r, "id") << "\n";
  return 0;
}

int cmd_orch_status(const fs::path& dir, const std::string& id, bool as_json, bool history) {
  auto r = admin_call(dir, "GET", "/admin/instances/" + query_escape(id) + (history ? "?history=true" : ""));
  if (!r) return fail(r.error().message);
  if (as_json) {
    std::cout << json::serialize(*r) << "\n";
    return 0;
  }
  if (history) {
    for (const auto& e : r->at("history").as_array()) {
      const auto& o = e.as_object();
      std::string line = json_string(o, "type");
      for (const char* k : {"task_id", "name", "input", "result", "error", "data", "fire_at_ms", "output", "reason"}) {
        if (o.if_contains(k)) line += std::string(" ") + k + "=" + value_text(o, k);
      }
      std::cout << line << "\n";
    }
    return 0;
  }
  std::cout << "instance   " << json_string(*r, "instanceId") << "\n"
            << "name       " << json_string(*r, "name") << "\n"
            << "status     " << json_string(*r, "runtimeStatus") << "\n"
            << "created    " << json_string(*r, "createdTime") << "\n"
            << "updated    " << json_string(*r, "lastUpdatedTime") << "\n"
            << "input      " << value_text(*r, "input") << "\n"
            << "output     " << value_text(*r, "output") << "\n"
            << "custom     " << value_text(*r, "customStatus") << "\n"
            << "history    " << num(*r, "historyEvents") << " events, generation " << num(*r, "generation") << "\n";
  if (r->if_contains("error")) std::cout << "error      " << json_string(*r, "error") << "\n";
  return 0;
}

int cmd_orch_action(const fs::path& dir, const std::string& id, const std::string& action, const std::string& event,
                    const std::string& data, const std::string& reason) {
  auto body = data_arg(data);
  if (!body) return fail(body.error().message);
  std::string target = "/admin/instances/" + query_escape(id) + "/" + action;
  if (action == "events") target += "/" + query_escape(event);
  if (!reason.empty()) target += "?reason=" + query_escape(reason);
  auto r = admin_call(dir, "POST", target, *body);
  if (!r) return fail(r.error().message);
  std::cout << (action == "events" ? "raised " + event + " on " : action + " sent to ") << id << "\n";
  return 0;
}

int cmd_orch_purge(const fs::path& dir, const std::string& id) {
  auto r = admin_call(dir, "DELETE", "/admin/instances/" + query_escape(id));
  if (!r) return fail(r.error().message);
  std::cout << "purged " << id << "\n";
  return 0;
}

int cmd_orch_ls(const fs::path& dir, const std::string& name, const std::string& status, int limit) {
  std::string target = "/admin/orchestrations?limit=" + std::to_string(limit);
  if (!name.empty()) target += "&name=" + query_escape(name);
  if (!status.empty()) target += "&status=" + query_escape(status);
  auto r = admin_call(dir, "GET", target);
  if (!r) return fail(r.error().message);
  std::printf("%-36s %-20s %-11s %-24s %8s\n", "INSTANCE", "NAME", "STATUS", "UPDATED", "EVENTS");
  for (const auto& i : r->at("instances").as_array()) {
    const auto& o = i.as_object();
    std::printf("%-36s %-20s %-11s %-24s %8lld\n", json_string(o, "instanceId").c_str(), json_string(o, "name").c_str(),
                json_string(o, "runtimeStatus").c_str(), json_string(o, "lastUpdatedTime").c_str(),
                static_cast<long long>(num(o, "historyEvents")));
  }
  if (r->if_contains("next_after")) std::cout << "(more after " << json_string(*r, "next_after") << ")\n";
  return 0;
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App cli{"Nimbus: a self-hosted serverless platform. One manifest (nimbus.yaml), one command."};
  cli.name("nimbus");
  cli.require_subcommand(1);
  cli.set_help_all_flag("--help-all", "Show help for every command");
  cli.set_version_flag("--version", "nimbus " NIMBUS_VERSION_TEXT, "Show the version and exit");

  std::string init_dir, init_name;
  auto* init = cli.add_subcommand("init", "Create a new app: nimbus.yaml and a C++ HTTP function 'hello' at GET /hello");
  init->add_option("dir", init_dir, "Folder for the app (created if missing)")->required();
  init->add_option("--name", init_name, "App name (default: the folder's name)");

  NewFunction nf;
  std::string new_dir = ".";
  auto* add = cli.add_subcommand("new", "Add a function to the app in the current folder");
  add->add_option("name", nf.name, "Function name; an HTTP function is served at /NAME")->required();
  add->add_option("--runtime", nf.runtime, "Runtime: native, python or node")->capture_default_str();
  add->add_option("--trigger", nf.trigger, "Trigger kind (http)")->capture_default_str();
  add->add_option("--dir", new_dir, "App folder")->capture_default_str();

  std::string validate_dir = ".";
  auto* validate = cli.add_subcommand("validate", "Check an app's nimbus.yaml and report every problem");
  validate->add_option("dir", validate_dir, "App folder or manifest file")->capture_default_str();

  std::string start_dir = ".", store;
  HostOptions options;
  auto* start = cli.add_subcommand("start", "Build out-of-date native functions and run the host in the foreground");
  start->add_option("dir", start_dir, "App folder")->capture_default_str();
  start->add_option("--port", options.port, "Public HTTP port (0 picks a free one)")->capture_default_str();
  start->add_option("--admin-port", options.admin_port, "Admin API port (0 picks a free one)")->capture_default_str();
  start->add_option("--tls-port", options.tls_port,
                    "HTTPS port of the gateway's TLS listener (gateway.tls; 0 picks a free one; default: the manifest's)");
  start->add_option("--address", options.address, "Public listen address")->capture_default_str();
  start->add_option("--admin-address", options.admin_address, "Admin listen address")->capture_default_str();
  start->add_option("--store", store, "Store URL, overriding the manifest's store:");
  start->add_option("--threads", options.loops, "Event-loop threads (0 = one per usable CPU)")->capture_default_str();
  start->add_flag("--deployed", options.serve_deployed,
                  "Serve the versions the store's live alias names; the folder does not become live (hosts CI deploys to)");
  std::string store_latency;
  start->add_option("--inject-store-latency", store_latency,
                    "Fault injection for tests and drills: every store read and write takes this much longer (e.g. 200ms)");

  std::string invoke_dir = ".", invoke_name, invoke_data;
  auto* invoke = cli.add_subcommand("invoke", "Invoke a function on the running host and print its reply");
  invoke->add_option("name", invoke_name, "Function name")->required();
  invoke->add_option("--data", invoke_data, "Payload: JSON text, or @FILE");
  invoke->add_option("--dir", invoke_dir, "App folder")->capture_default_str();

  std::string status_dir = ".";
  bool status_json = false;
  auto* status = cli.add_subcommand("status", "Show the running host: addresses, functions, load");
  status->add_option("--dir", status_dir, "App folder")->capture_default_str();
  status->add_flag("--json", status_json, "Print the admin API's JSON");

  std::string stop_dir = ".";
  int stop_wait = 60;
  auto* stop = cli.add_subcommand("stop", "Stop the running host gracefully");
  stop->add_option("--dir", stop_dir, "App folder")->capture_default_str();
  stop->add_option("--wait", stop_wait, "Seconds to wait for it to drain")->capture_default_str();

  std::string routes_dir = ".";
  bool routes_as_json = false;
  auto* routes = cli.add_subcommand("routes", "Every route the running host serves: host, path, methods, target, auth, limits");
  routes->add_option("--dir", routes_dir, "App folder")->capture_default_str();
  routes->add_flag("--json", routes_as_json, "Print the admin API's JSON");

  std::string keys_dir = ".", key_name, key_quota;
  auto* keys = cli.add_subcommand("keys", "API keys for gateway routes with auth: api_key");
  keys->require_subcommand(1);
  keys->add_option("--dir", keys_dir, "App folder")->capture_default_str();
  auto* keys_create = keys->add_subcommand("create", "Make a key (shown once; the store keeps its hash)");
  keys_create->add_option("name", key_name, "The key's name (who holds it)")->required();
  keys_create->add_option("--quota", key_quota, "Requests per unit of time: N/s, N/m, N/h or N/d");
  auto* keys_ls = keys->add_subcommand("ls", "Every key: name, prefix, quota (never the key)");
  auto* keys_revoke = keys->add_subcommand("revoke", "Revoke a key by name");
  keys_revoke->add_option("name", key_name, "The key's name")->required();

  DeployCommands deploy_commands(cli);
  ObserveCommands observe_commands(cli);

  std::string reload_dir = ".";
  auto* reload = cli.add_subcommand("reload", "Apply nimbus.yaml's gateway changes to the running host, dropping no request");
  reload->add_option("--dir", reload_dir, "App folder")->capture_default_str();

  std::string q_dir = ".", q_name, q_data, q_type, q_subject;
  // A command with subcommands that talk to the running host of the app in --dir.
  auto command_group = [&cli, &q_dir](const char* name, const char* description) {
    auto* group = cli.add_subcommand(name, description);
    group->require_subcommand(1);
    group->add_option("--dir", q_dir, "App folder")->capture_default_str();
    return group;
  };
  int q_limit = 20;
  int64_t q_delay = 0;
  bool q_dead = false, q_json = false;
  auto* queue = command_group("queue", "Look into and feed the running host's queues");
  auto* queue_ls = queue->add_subcommand("ls", "Every queue: ready, delayed, in flight, dead letters");
  auto* queue_peek = queue->add_subcommand("peek", "Show messages without taking them");
  queue_peek->add_option("name", q_name, "Queue name")->required();
  queue_peek->add_flag("--dead", q_dead, "Show the dead-letter queue (NAME.dead)");
  queue_peek->add_option("--limit", q_limit, "How many")->capture_default_str();
  queue_peek->add_flag("--json", q_json, "Print the admin API's JSON");
  auto* queue_send = queue->add_subcommand("send", "Enqueue a message");
  queue_send->add_option("name", q_name, "Queue name")->required();
  queue_send->add_option("--data", q_data, "Payload: text, or @FILE");
  queue_send->add_option("--type", q_type, "CloudEvents type");
  queue_send->add_option("--subject", q_subject, "CloudEvents subject");
  queue_send->add_option("--delay-ms", q_delay, "Not deliverable before this many milliseconds");
  auto* queue_purge = queue->add_subcommand("purge", "Delete every message of a queue");
  queue_purge->add_option("name", q_name, "Queue name (NAME.dead for the dead letters)")->required();

  auto* topic = command_group("topic", "Publish to the running host's topics");
  auto* topic_publish = topic->add_subcommand("publish", "Publish an event: every subscription gets a copy");
  topic_publish->add_option("name", q_name, "Topic name")->required();
  topic_publish->add_option("--data", q_data, "Payload: text, or @FILE");
  topic_publish->add_option("--type", q_type, "CloudEvents type");
  topic_publish->add_option("--subject", q_subject, "CloudEvents subject");

  auto* dlq = command_group("dlq", "Dead-letter queues");
  auto* dlq_replay = dlq->add_subcommand("replay", "Move NAME.dead back to NAME, attempts reset");
  dlq_replay->add_option("name", q_name, "Queue name")->required();

  auto* timers = cli.add_subcommand("timers", "List the running host's schedules: last and next runs");
  timers->add_option("--dir", q_dir, "App folder")->capture_default_str();

  std::string s_key, s_group;
  int s_partition = -1;
  int64_t s_from = -1, s_from_time = -1;
  auto* stream = command_group("stream", "Append to and read the running host's streams");
  auto* stream_ls = stream->add_subcommand("ls", "Every stream: partitions, records, consumer groups");
  auto* stream_append = stream->add_subcommand("append", "Append a record (its key picks the partition)");
  stream_append->add_option("name", q_name, "Stream name")->required();
  stream_append->add_option("--key", s_key, "Partition key: records with one key stay in order");
  stream_append->add_option("--data", q_data, "Payload: text, or @FILE");
  stream_append->add_option("--type", q_type, "CloudEvents type");
  auto* stream_tail = stream->add_subcommand("tail", "Show the newest records of each partition");
  stream_tail->add_option("name", q_name, "Stream name")->required();
  stream_tail->add_option("--partition", s_partition, "Only this partition");
  stream_tail->add_option("--from", s_from, "From this offset on (with --partition)");
  stream_tail->add_option("--limit", q_limit, "How many per partition")->capture_default_str();
  stream_tail->add_flag("--json", q_json, "Print the admin API's JSON");
  auto* stream_groups = stream->add_subcommand("groups", "Consumer groups: checkpoint and lag per partition");
  stream_groups->add_option("name", q_name, "Stream name")->required();
  auto* stream_replay = stream->add_subcommand("replay", "Move a group's checkpoints back (or forward)");
  stream_replay->add_option("name", q_name, "Stream name")->required();
  stream_replay->add_option("group", s_group, "Consumer group (a function's name unless it sets group:)")->required();
  stream_replay->add_option("--from-offset", s_from, "Every partition from this offset");
  stream_replay->add_option("--from-time-ms", s_from_time, "Every partition from the first record at or after this Unix time (ms)");

  std::string b_path, b_file, b_out, b_type;
  bool b_create = false;
  auto* blob = command_group("blob", "Put, get, list and delete the running host's blobs (CONTAINER/PATH)");
  auto* blob_put = blob->add_subcommand("put", "Store a file (or --data) as a blob; blob triggers fire");
  blob_put->add_option("path", b_path, "CONTAINER/PATH, e.g. uploads/2024/a.csv")->required();
  blob_put->add_option("file", b_file, "The file to store");
  blob_put->add_option("--data", q_data, "The bytes as text, or @FILE");
  blob_put->add_option("--content-type", b_type, "Content type (default application/octet-stream)");
  blob_put->add_flag("--create-only", b_create, "Fail if the blob exists");
  auto* blob_get = blob->add_subcommand("get", "Print a blob's bytes, or write them to a file");
  blob_get->add_option("path", b_path, "CONTAINER/PATH")->required();
  blob_get->add_option("-o,--output", b_out, "Write to this file instead of standard output");
  auto* blob_ls = blob->add_subcommand("ls", "List a container's blobs, optionally under a prefix");
  blob_ls->add_option("path", b_path, "CONTAINER or CONTAINER/PREFIX")->required();
  auto* blob_rm = blob->add_subcommand("rm", "Delete a blob; blob triggers on deleted fire");
  blob_rm->add_option("path", b_path, "CONTAINER/PATH")->required();

  std::string o_name, o_id, o_event, o_reason, o_status;
  bool o_json = false;
  auto* orch = command_group("orch", "Durable orchestrations: start, watch and steer instances");
  auto* orch_start = orch->add_subcommand("start", "Start an instance; prints its id");
  orch_start->add_option("name", o_name, "Orchestration (its function's name)")->required();
  orch_start->add_option("--input", q_data, "Input: JSON, or @FILE");
  orch_start->add_option("--id", o_id, "Instance id (default: a new one)");
  auto* orch_status = orch->add_subcommand("status", "An instance's status, input, output and custom status");
  orch_status->add_option("id", o_id, "Instance id")->required();
  orch_status->add_flag("--json", o_json, "Print the admin API's JSON");
  auto* orch_history = orch->add_subcommand("history", "An instance's history, one event a line");
  orch_history->add_option("id", o_id, "Instance id")->required();
  orch_history->add_flag("--json", o_json, "Print the admin API's JSON");
  auto* orch_raise = orch->add_subcommand("raise", "Raise an event on an instance");
  orch_raise->add_option("id", o_id, "Instance id")->required();
  orch_raise->add_option("event", o_event, "Event name")->required();
  orch_raise->add_option("--data", q_data, "Event data: JSON, or @FILE");
  std::vector<std::pair<CLI::App*, const char*>> orch_controls;
  for (const char* action : {"terminate", "suspend", "resume"}) {
    auto* c = orch->add_subcommand(action, std::string(1, static_cast<char>(std::toupper(action[0]))) + (action + 1) +
                                               " an instance");
    c->add_option("id", o_id, "Instance id")->required();
    c->add_option("--reason", o_reason, "Why (kept in its history)");
    orch_controls.emplace_back(c, action);
  }
  auto* orch_purge = orch->add_subcommand("purge", "Delete a finished instance's record and history");
  orch_purge->add_option("id", o_id, "Instance id")->required();
  auto* orch_ls = orch->add_subcommand("ls", "Instances, by id");
  orch_ls->add_option("--name", o_name, "Only this orchestration's");
  orch_ls->add_option("--status", o_status, "Only these: pending, running, completed, failed, terminated, suspended");
  orch_ls->add_option("--limit", q_limit, "How many")->capture_default_str();
  for (auto* sub : {orch_start, orch_status, orch_history, orch_raise, orch_purge, orch_ls}) sub->fallthrough();
  for (auto& [sub, action] : orch_controls) sub->fallthrough();

  for (auto* sub : {queue_ls, queue_peek, queue_send, queue_purge, topic_publish, dlq_replay, stream_ls, stream_append,
                    stream_tail, stream_groups, stream_replay, blob_put, blob_get, blob_ls, blob_rm}) {
    sub->fallthrough();
  }
  try {
    cli.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return cli.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return cli.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return cli.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "nimbus: " << e.what() << " (see nimbus --help)\n";
    return e.get_exit_code() == 0 ? 2 : e.get_exit_code();
  }

  if (init->parsed()) {
    fs::path dir = init_dir;
    std::string name = init_name.empty() ? fs::absolute(dir).lexically_normal().filename().string() : init_name;
    if (name.empty()) name = fs::absolute(dir).lexically_normal().parent_path().filename().string();
    if (auto st = init_app(dir, name); !st) return fail(st.error().message);
    std::cout << "Created app '" << name << "' in " << dir.string() << "\n"
              << "Next: cd " << dir.string() << " && nimbus start, then curl http://127.0.0.1:8080/hello\n";
    return 0;
  }
  if (add->parsed()) {
    if (auto st = add_function(new_dir, nf); !st) return fail(st.error().message);
    std::cout << "Added function '" << nf.name << "' (functions/" << nf.name << "/"
              << (nf.runtime == "python" ? std::string("main.py") : nf.runtime == "node" ? std::string("index.js") : nf.name + ".cpp") << "), served at /" << nf.name << "\n";
    return 0;
  }
  if (validate->parsed()) return cmd_validate(validate_dir);
  if (start->parsed()) {
    if (!store_latency.empty()) {
      auto latency = parse_duration(store_latency);
      if (!latency) return fail("--inject-store-latency: '" + store_latency + "' is not a duration (e.g. 200ms, 1s)");
      options.store_latency = *latency;
    }
    return cmd_start(start_dir, options, store);
  }
  if (invoke->parsed()) return cmd_invoke(invoke_dir, invoke_name, invoke_data);
  if (status->parsed()) return cmd_status(status_dir, status_json);
  if (stop->parsed()) return cmd_stop(stop_dir, stop_wait);
  if (reload->parsed()) return cmd_reload(reload_dir);
  if (auto code = deploy_commands.run()) return *code;
  if (auto code = observe_commands.run()) return *code;
  if (keys_create->parsed()) return cmd_keys(keys_dir, "create", key_name, key_quota);
  if (keys_ls->parsed()) return cmd_keys(keys_dir, "ls", "", "");
  if (keys_revoke->parsed()) return cmd_keys(keys_dir, "revoke", key_name, "");
  if (routes->parsed()) return cmd_routes(routes_dir, routes_as_json);
  if (queue_ls->parsed()) return cmd_queue_ls(q_dir);
  if (queue_peek->parsed()) return cmd_queue_peek(q_dir, q_name, q_dead, q_limit, q_json);
  if (queue_send->parsed()) return cmd_send(q_dir, false, q_name, q_data, q_type, q_subject, q_delay);
  if (queue_purge->parsed()) return cmd_queue_purge(q_dir, q_name);
  if (topic_publish->parsed()) return cmd_send(q_dir, true, q_name, q_data, q_type, q_subject, 0);
  if (dlq_replay->parsed()) return cmd_dlq_replay(q_dir, q_name);
  if (timers->parsed()) return cmd_timers(q_dir);
  if (stream_ls->parsed()) return cmd_stream_ls(q_dir);
  if (stream_append->parsed()) return cmd_stream_append(q_dir, q_name, s_key, q_data, q_type);
  if (stream_tail->parsed()) return cmd_stream_tail(q_dir, q_name, s_partition, s_from, q_limit, q_json);
  if (stream_groups->parsed()) return cmd_stream_groups(q_dir, q_name);
  if (stream_replay->parsed()) return cmd_stream_replay(q_dir, q_name, s_group, s_from, s_from_time);
  if (blob_put->parsed()) return cmd_blob_put(q_dir, b_path, b_file, q_data, b_type, b_create);
  if (blob_get->parsed()) return cmd_blob_get(q_dir, b_path, b_out);
  if (blob_ls->parsed()) return cmd_blob_ls(q_dir, b_path);
  if (blob_rm->parsed()) return cmd_blob_rm(q_dir, b_path);
  if (orch_start->parsed()) return cmd_orch_start(q_dir, o_name, o_id, q_data);
  if (orch_status->parsed()) return cmd_orch_status(q_dir, o_id, o_json, false);
  if (orch_history->parsed()) return cmd_orch_status(q_dir, o_id, o_json, true);
  if (orch_raise->parsed()) return cmd_orch_action(q_dir, o_id, "events", o_event, q_data, "");
  for (auto& [sub, action] : orch_controls) {
    if (sub->parsed()) return cmd_orch_action(q_dir, o_id, action, "", "", o_reason);
  }
  if (orch_purge->parsed()) return cmd_orch_purge(q_dir, o_id);
  if (orch_ls->parsed()) return cmd_orch_ls(q_dir, o_name, o_status, q_limit);
  return 2;
}

}  // namespace nimbus
