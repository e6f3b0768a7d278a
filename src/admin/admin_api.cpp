#include "admin/admin_api.h"

#include "admin/dashboard.h"
#include "admin/admin_request.h"
#include "gateway/api_keys.h"

#include <boost/json.hpp>
#include <algorithm>
#include <set>
#include <date/date.h>

#include "core/ids.h"
#include "core/private_file.h"
#include "core/text.h"
#include "core/units.h"
#include "durable/client.h"
#include "durable/durable.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "pool/function_pools.h"
#include "store/store.h"
#include "triggers/blob/blob_trigger.h"
#include "triggers/http/http_trigger.h"
#include "triggers/finish.h"
#include "triggers/outputs.h"
#include "triggers/stream/stream_trigger.h"

namespace nimbus {
namespace json = boost::json;

namespace {

HttpReply json_reply(int status, const json::value& v) {
  return HttpReply{status, {{"content-type", "application/json"}}, json::serialize(v)};
}


}  // namespace

Expected<std::string> load_or_create_admin_token(const std::filesystem::path& file) {
  std::error_code ec;
  if (std::filesystem::exists(file, ec)) {
    auto text = read_file(file);
    if (!text) return text.error();
    std::string token = *text;
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) token.pop_back();
    if (token.size() >= 16) return token;
  }
  std::string token = new_secret();
  if (auto st = write_private_file(file, token + "\n"); !st) return st.error();
  return token;
}

AdminApi::AdminApi(const AppSpec& app, FunctionPools& pools, Metrics& metrics, Logger& logger,
                   const Clock& clock, std::string token, AdminStatus& status,
                   std::function<void()> request_shutdown, Store* store)
    : app_(app),
      pools_(pools),
      metrics_(metrics),
      logger_(logger),
      clock_(clock),
      token_(std::move(token)),
      status_(status),
      request_shutdown_(std::move(request_shutdown)),
      store_(store),
      orchestration_versions_(durable::orchestrator_versions(app)) {
  route("/admin/functions", {"GET"}, kFunctions);
  route("/admin/functions/{name}/invoke", {"POST"}, kInvoke);
  route("/admin/status", {"GET"}, kStatus);
  route("/admin/shutdown", {"POST"}, kShutdown);
  route("/admin/reload", {"POST"}, kReload);
  route("/admin/keys", {"GET", "POST"}, kKeys);
  route("/admin/keys/{name}", {"DELETE"}, kKeys);
  // Queue and topic names hold '/' (a subscription is <topic>/<name>): the rest of the path is
  // the name and an action, split at its last '/' by messages().
  route("/admin/queues", {"GET"}, kMessages);
  route("/admin/queues/{*rest}", {}, kMessages);
  route("/admin/topics/{*rest}", {}, kMessages);
  route("/admin/streams", {"GET"}, kStreams);
  route("/admin/streams/{*rest}", {}, kStreams);
  route("/admin/blobs/{*rest}", {}, kBlobs);
  route("/admin/orchestrations", {"GET"}, kOrchestrations);
  route("/admin/orchestrations/{name}", {"POST"}, kOrchestrationStart);
  route("/admin/instances/{id}", {"GET", "DELETE"}, kInstance);
  route("/admin/instances/{id}/{action}", {"POST"}, kInstanceAction);
  route("/admin/instances/{id}/{action}/{event}", {"POST"}, kInstanceAction);
}

void AdminApi::route(std::string_view pattern, std::vector<std::string> methods, int target) {
  auto parsed = parse_route(std::string(pattern), nullptr);
  if (!parsed) throw std::logic_error("admin route " + std::string(pattern) + " does not parse");
  router_.add(std::move(*parsed), std::move(methods), target);
}

void AdminApi::add(std::vector<AdminView> views, std::vector<StatusField> fields) {
  for (auto& v : views) {
    route(v.path, {"GET"}, kViews + static_cast<int>(views_.size()));
    views_.push_back(std::move(v));
  }
  for (auto& f : fields) fields_.push_back(std::move(f));
}

void AdminApi::add(std::vector<AdminEndpoint> endpoints) {
  for (auto& e : endpoints) {
    route(e.pattern, e.methods, kEndpoints + static_cast<int>(endpoints_.size()));
    endpoints_.push_back(std::move(e));
  }
}

AdminApi::~AdminApi() = default;

Expected<int> AdminApi::start(EventLoops& loops, const std::string& address, int port) {
  server_ = std::make_unique<HttpServer>(loops, static_cast<RequestHandler&>(*this));
  ListenOptions lo;
  lo.address = address;
  lo.port = port;
  lo.every_loop = false;
  lo.limits = app_.http;
  // A deploy's package comes in one request (deploy/package.h bounds it again).
  lo.limits.max_body = std::max<std::size_t>(lo.limits.max_body, 256u << 20);
  return server_->listen(lo);
}

void AdminApi::stop_accepting() {
  if (server_) server_->stop_accepting();
}

void AdminApi::close() {
  if (server_) server_->close();
}

int AdminApi::in_progress() const { return server_ ? server_->active_requests() : 0; }

bool AdminApi::has_token(IncomingRequest& request) const {
  auto auth = request.header("authorization");
  std::string_view presented;
  if (auth && auth->size() > 7 && auth->substr(0, 7) == "Bearer ") presented = auth->substr(7);
  return secrets_equal(presented, token_);
}

std::optional<uint64_t> AdminApi::streams_body(IncomingRequest& head) {
  if (head.target().rfind("/admin/", 0) == 0 && has_token(head)) return std::nullopt;
  return 0;  // not read: the reply closes the connection after it
}

void AdminApi::handle(IncomingRequest& request, Responder respond) {
  std::string_view target = request.target();
  std::string_view path = target.substr(0, target.find('?'));
  std::string_view method = request.method();
  if (path == "/healthz") return respond(json_reply(200, {{"status", "ok"}}));
  if (path == "/readyz") return respond(readiness(status_.draining.load(), store_));
  if (path == "/metrics") {
    std::string text = metrics_.render();
    for (const auto& extra : extra_metrics_) text += extra();
    return respond(HttpReply{200, {{"content-type", "text/plain; version=0.0.4; charset=utf-8"}}, std::move(text)});
  }
  if (path == "/") return respond(HttpReply{302, {{"location", "/dashboard"}}, ""});
  if (auto page = dashboard_asset(path)) return respond(std::move(*page));
  if (path.rfind("/admin/", 0) != 0) {
    return respond(json_error(404, "not_found", "no admin endpoint " + std::string(path), ""));
  }
  if (!has_token(request)) {
    auto auth = request.header("authorization");
    HttpReply r = json_error(401, "unauthorized",
                             auth ? "the admin token is not valid"
                                  : "send the token from .nimbus/admin.token as Authorization: Bearer TOKEN",
                             "");
    r.headers.push_back({"www-authenticate", "Bearer"});
    return respond(std::move(r));
  }
  if (std::string decoded; !percent_decode(path, decoded)) {
    return respond(json_error(400, "bad_request", "the path has a bad %-escape: " + std::string(path), ""));
  }
  RouteMatch match = router_.match(method, path);
  if (match.kind == RouteMatch::Kind::not_found) {
    return respond(json_error(404, "not_found", "no admin endpoint " + std::string(method) + " " + std::string(path), ""));
  }
  if (match.kind == RouteMatch::Kind::method_not_allowed) {
    HttpReply r = json_error(405, "method_not_allowed",
                             std::string(method) + " is not allowed on " + std::string(path) + "; allowed: " + match.allow, "");
    r.headers.push_back({"allow", match.allow});
    return respond(std::move(r));
  }
  switch (match.target) {
    case kFunctions:
      return respond(HttpReply{200, {{"content-type", "application/json"}}, functions_json()});
    case kStatus:
      return respond(HttpReply{200, {{"content-type", "application/json"}}, status_json()});
    case kShutdown:
      respond(json_reply(202, {{"status", "shutting down"}}));
      request_shutdown_();
      return;
    case kKeys: {
      std::vector<std::string> params;
      for (auto& p : match.params) params.push_back(std::move(p.value));
      return api_keys(request, params, method, std::move(respond));
    }
    case kReload:
      if (!reload_) return respond(json_error(501, "not_implemented", "this host cannot reload", ""));
      return reload_(std::move(respond));
    case kMessages:
      return messages(request, path, method, std::move(respond));
    case kStreams:
      return streams(request, path, method, std::move(respond));
    case kBlobs:
      return blobs(request, path, method, std::move(respond));
    case kInvoke:
      return invoke(request, match.params.at(0).value, std::move(respond));
    case kOrchestrations:
    case kOrchestrationStart:
    case kInstance:
    case kInstanceAction: {
      std::vector<std::string> params;
      for (const auto& p : match.params) params.push_back(p.value);
      return orchestrations(request, match.target, params, std::move(respond));
    }
    default:
      break;
  }
  if (match.target >= kEndpoints) {
    std::vector<std::string> params;
    for (const auto& p : match.params) params.push_back(p.value);
    return endpoints_.at(static_cast<std::size_t>(match.target - kEndpoints)).handle(request, params, std::move(respond));
  }
  const AdminView& view = views_.at(static_cast<std::size_t>(match.target - kViews));
  auto reply = [&view, respond = std::move(respond)] {
    HttpReply r{200, {{"content-type", "application/json"}}, view.json()};
    respond(std::move(r));
  };
  // A trigger's view may read the store: off the event loop.
  if (store_) {
    store_->run_blocking(std::move(reply));
  } else {
    reply();
  }
}

namespace {

// Attributes come from outside (headers, functions) as any bytes: the reply is JSON, so bytes
// that are not UTF-8 become U+FFFD (the payload, which may be binary, goes as base64 instead).
json::object message_json(const Message& m) {
  const auto text = [](const std::string& s) { return replace_invalid_utf8(s); };
  json::object metadata;
  for (const auto& h : m.metadata) metadata[text(h.name)] = text(h.value);
  json::object o{{"id", m.id},
                 {"event_id", text(m.event_id)},
                 {"type", text(m.type)},
                 {"source", text(m.source)},
                 {"subject", text(m.subject)},
                 {"metadata", std::move(metadata)},
                 {"deliveries", m.deliveries},
                 {"enqueued_ms", m.enqueued_ms},
                 {"due_ms", m.due_ms},
                 {"leased", !m.lease.empty()}};
  if (!m.last_error.empty()) {
    o["error"] = text(m.last_error);
    o["first_failed_ms"] = m.first_failed_ms;
    o["last_failed_ms"] = m.last_failed_ms;
  }
  if (valid_utf8(m.payload)) o["payload"] = m.payload;
  else o["payload_base64"] = base64(m.payload);
  return o;
}

HttpReply store_error_reply(const Error& e) {
  return json_error(e.code == store_error::conflict ? 409 : 500, e.code.empty() ? "store" : e.code, e.message, "");
}

}  // namespace

// GET /admin/queues, on a store I/O thread.
void AdminApi::list_queues(const Responder& respond) {
  auto stats = store_->stats();
  if (!stats) return respond(store_error_reply(stats.error()));
  std::map<std::string, json::object> rows;
  for (const auto& q : *stats) {
    bool dead = q.queue.size() > 5 && q.queue.compare(q.queue.size() - 5, 5, ".dead") == 0;
    std::string name = dead ? q.queue.substr(0, q.queue.size() - 5) : q.queue;
    auto& row = rows[name];
    if (row.empty()) row = json::object{{"queue", name}, {"ready", 0}, {"delayed", 0}, {"in_flight", 0}, {"dead", 0}};
    if (dead) {
      row["dead"] = q.ready + q.delayed + q.in_flight;
    } else {
      row["ready"] = q.ready;
      row["delayed"] = q.delayed;
      row["in_flight"] = q.in_flight;
    }
  }
  json::array list;
  for (auto& [name, row] : rows) list.push_back(std::move(row));
  respond(json_reply(200, json::object{{"queues", std::move(list)}}));
}

void AdminApi::messages(IncomingRequest& request, std::string_view path, std::string_view method, Responder respond) {
  if (!store_) return respond(json_error(503, "no_store", "this host runs without a store", ""));
  if (path == "/admin/queues") {
    if (method != "GET") return respond(json_error(405, "method_not_allowed", "list queues with GET", ""));
    return store_->run_blocking([this, respond = std::move(respond)] { list_queues(respond); });
  }
  const bool topic = path.rfind("/admin/topics/", 0) == 0;
  std::string_view rest = path.substr(topic ? 14 : 14);
  auto slash = rest.rfind('/');
  if (slash == std::string_view::npos || slash == 0) {
    return respond(json_error(404, "not_found", "no admin endpoint " + std::string(method) + " " + std::string(path), ""));
  }
  std::string name(rest.substr(0, slash));
  std::string_view action = rest.substr(slash + 1);
  if (action == "messages" && method == "POST") {
    NewMessage m = message_from_request(request);
    Batch b;
    if (topic) b.publishes.push_back({name, std::move(m)});
    else b.enqueues.push_back({name, std::move(m)});
    store_->commit(std::move(b), [respond = std::move(respond), topic](Expected<BatchResult> r) {
      if (!r) return respond(store_error_reply(r.error()));
      respond(json_reply(201, json::object{{topic ? "event_id" : "id", r->message_ids.at(0)}}));
    });
    return;
  }
  if (topic) return respond(json_error(405, "method_not_allowed", "publish with POST .../messages", ""));
  if (action == "messages" && method == "GET") {
    int limit = 20;
    std::string_view target = request.target();
    auto q = target.find('?');
    if (auto l = query_param(q == std::string_view::npos ? std::string_view() : target.substr(q + 1), "limit")) {
      limit = std::max(1, std::min(std::atoi(l->c_str()), 10000));
    }
    Store* store = store_;
    return store->run_blocking([store, name, limit, respond = std::move(respond)] {
      auto peek = store->peek(name, limit);
      if (!peek) return respond(store_error_reply(peek.error()));
      json::array list;
      for (const auto& m : *peek) list.push_back(message_json(m));
      respond(json_reply(200, json::object{{"queue", name}, {"messages", std::move(list)}}));
    });
  }
  if (action == "messages" && method == "DELETE") {
    store_->purge(name, [respond = std::move(respond)](Expected<int64_t> n) {
      if (!n) return respond(store_error_reply(n.error()));
      respond(json_reply(200, json::object{{"purged", *n}}));
    });
    return;
  }
  if (action == "replay" && method == "POST") {
    store_->replay_dead(name, [respond = std::move(respond)](Expected<int64_t> n) {
      if (!n) return respond(store_error_reply(n.error()));
      respond(json_reply(200, json::object{{"replayed", *n}}));
    });
    return;
  }
  return respond(json_error(404, "not_found", "no admin endpoint " + std::string(method) + " " + std::string(path), ""));
}

// /admin/streams: GET lists streams; /admin/streams/NAME: GET partitions and groups;
// .../records: POST appends (x-key picks the partition), GET reads (?partition=&from=&limit=,
// default: the newest `limit` of every partition); .../groups/GROUP/replay: POST moves the
// group's checkpoints to ?from_offset=N or to ?from_time_ms=T.
void AdminApi::streams(IncomingRequest& request, std::string_view path, std::string_view method, Responder respond) {
  if (!store_) return respond(json_error(503, "no_store", "this host runs without a store", ""));
  auto not_found = [&] {
    respond(json_error(404, "not_found", "no admin endpoint " + std::string(method) + " " + std::string(path), ""));
  };
  auto describe = [this](const StreamSpec& st) -> Expected<json::object> {
    auto info = store_->stream_info(st.name);
    if (!info) return info.error();
    auto cps = store_->stream_checkpoints(st.name);
    if (!cps) return cps.error();
    json::array parts;
    std::map<int, int64_t> next;
    int64_t records = 0;
    for (const auto& p : *info) {
      parts.push_back(json::object{{"partition", p.partition}, {"first_offset", p.first_offset},
                                   {"next_offset", p.next_offset}, {"records", p.records}});
      next[p.partition] = p.next_offset;
      records += p.records;
    }
    std::map<std::string, json::object> groups;
    for (const auto& c : *cps) {
      auto& g = groups[c.group];
      if (g.empty()) g = json::object{{"group", c.group}, {"lag", 0}, {"partitions", json::array()}};
      const int64_t lag = std::max<int64_t>(0, (next.count(c.partition) ? next[c.partition] : 0) - c.offset);
      g["lag"] = g["lag"].as_int64() + lag;
      g["partitions"].as_array().push_back(
          json::object{{"partition", c.partition}, {"offset", c.offset}, {"lag", lag}, {"updated_ms", c.updated_ms}});
    }
    json::array group_list;
    for (auto& [name, g] : groups) group_list.push_back(std::move(g));
    return json::object{{"stream", st.name},
                        {"partitions", st.partitions},
                        {"records", records},
                        {"partition_offsets", std::move(parts)},
                        {"groups", std::move(group_list)}};
  };
  if (path == "/admin/streams") {
    if (method != "GET") return respond(json_error(405, "method_not_allowed", "list streams with GET", ""));
    return store_->run_blocking([this, describe, respond = std::move(respond)] {
      json::array list;
      for (const auto& st : app_.streams) {
        auto d = describe(st);
        if (!d) return respond(store_error_reply(d.error()));
        list.push_back(std::move(*d));
      }
      respond(json_reply(200, json::object{{"streams", std::move(list)}}));
    });
  }
  std::string_view rest = path.substr(std::string_view("/admin/streams/").size());
  const auto slash = rest.find('/');
  const std::string name(rest.substr(0, slash));
  const StreamSpec* st = app_.find_stream(name);
  if (!st) {
    std::string declared;
    for (const auto& s : app_.streams) declared += (declared.empty() ? "" : ", ") + s.name;
    return respond(json_error(404, "not_found", "the app has no stream '" + name + "'" +
                                                    (declared.empty() ? std::string("; it uses none") : "; it has: " + declared),
                              ""));
  }
  const std::string_view action = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
  if (action.empty() && method == "GET") {
    return store_->run_blocking([describe, st, respond = std::move(respond)] {
      auto d = describe(*st);
      if (!d) return respond(store_error_reply(d.error()));
      respond(json_reply(200, *d));
    });
  }
  if (action == "records" && method == "POST") {
    Batch b;
    b.appends.push_back(record_from_request(request, *st));
    store_->commit(std::move(b), [respond = std::move(respond)](Expected<BatchResult> r) {
      if (!r) return respond(store_error_reply(r.error()));
      respond(json_reply(201, json::object{{"partition", r->appended.at(0).partition}, {"offset", r->appended.at(0).offset}}));
    });
    return;
  }
  if (action == "records" && method == "GET") {
    const std::string_view target = request.target();
    const int limit = static_cast<int>(std::clamp<int64_t>(query_int(target, "limit").value_or(20), 1, 10000));
    const auto only = query_int(target, "partition");
    const auto from_given = query_int(target, "from");
    Store* store = store_;
    return store->run_blocking([store, st, limit, only, from_given, respond = std::move(respond)] {
      auto info = store->stream_info(st->name);
      if (!info) return respond(store_error_reply(info.error()));
      std::vector<StreamRecord> all;
      for (const auto& p : *info) {
        if (only && *only != p.partition) continue;
        const int64_t from = from_given.value_or(std::max(p.first_offset, p.next_offset - limit));
        auto records = store->read_stream(st->name, p.partition, from, limit);
        if (!records) return respond(store_error_reply(records.error()));
        all.insert(all.end(), std::make_move_iterator(records->begin()), std::make_move_iterator(records->end()));
      }
      boost::system::error_code ec;
      json::value list = json::parse(stream_batch_payload(all), ec);
      respond(json_reply(200, json::object{{"stream", st->name}, {"records", std::move(list)}}));
    });
  }
  constexpr std::string_view kGroups = "groups/";
  constexpr std::string_view kReplay = "/replay";
  if (action.rfind(kGroups, 0) == 0 && action.size() > kGroups.size() + kReplay.size() &&
      action.substr(action.size() - kReplay.size()) == kReplay && method == "POST") {
    const std::string group(action.substr(kGroups.size(), action.size() - kGroups.size() - kReplay.size()));
    const auto from_offset = query_int(request.target(), "from_offset");
    const auto from_time = query_int(request.target(), "from_time_ms");
    if (!from_offset && !from_time) {
      return respond(json_error(400, "bad_request", "replay needs ?from_offset=N or ?from_time_ms=T", ""));
    }
    // The offsets at a time are store reads: off the event loop, and the commit from there.
    Store* store = store_;
    return store->run_blocking([store, st, group, from_offset, from_time, respond = std::move(respond)] {
      Batch b;
      json::array moved;
      for (int p = 0; p < st->partitions; ++p) {
        int64_t offset = from_offset.value_or(0);
        if (from_time) {
          auto at = store->stream_offset_at(st->name, p, *from_time);
          if (!at) return respond(store_error_reply(at.error()));
          offset = *at;
        }
        b.checkpoints.push_back({group, st->name, p, offset, std::nullopt});
        moved.push_back(json::object{{"partition", p}, {"offset", offset}});
      }
      store->commit(std::move(b), [respond, moved = std::move(moved), group](Expected<BatchResult> r) {
        if (!r) return respond(store_error_reply(r.error()));
        respond(json_reply(200, json::object{{"group", group}, {"checkpoints", moved}}));
      });
    });
  }
  not_found();
}

// /admin/blobs/CONTAINER[/PATH], the path percent-decoded. Names are checked by the store.
// The gateway's API keys (gateway/api_keys.h): created with the key shown once, listed
// without their hashes, revoked by name. Store reads happen on the store's I/O threads.
void AdminApi::api_keys(IncomingRequest& request, const std::vector<std::string>& params, std::string_view method,
                        Responder respond) {
  if (!store_) return respond(json_error(503, "no_store", "API keys live in the store, and this host has none", ""));
  Store* store = store_;
  if (method == "GET") {
    return store->run_blocking([store, respond = std::move(respond)] {
      auto rows = store->scan(kApiKeysStore, "", 100000);
      if (!rows) return respond(json_error(503, "store", rows.error().message, ""));
      boost::json::array keys;
      for (const auto& row : *rows) {
        if (auto r = decode_api_key(row.value)) {
          keys.push_back(boost::json::object{{"name", r->name}, {"id", r->id}, {"prefix", "nk_" + r->id},
                                             {"quota", r->quota ? r->quota->text : ""}, {"created_ms", r->created_ms}});
        }
      }
      respond(json_reply(200, {{"keys", std::move(keys)}}));
    });
  }
  if (method == "DELETE") {
    return store->run_blocking([store, name = params.at(0), respond = std::move(respond)] {
      auto rows = store->scan(kApiKeysStore, "", 100000);
      if (!rows) return respond(json_error(503, "store", rows.error().message, ""));
      Batch b;
      for (const auto& row : *rows) {
        if (auto r = decode_api_key(row.value); r && r->name == name) b.deletes.push_back({kApiKeysStore, row.key, std::nullopt});
      }
      if (b.deletes.empty()) return respond(json_error(404, "not_found", "no API key named '" + name + "'", ""));
      const auto n = static_cast<int64_t>(b.deletes.size());
      store->commit(std::move(b), [n, name, respond](Expected<BatchResult> done) {
        if (!done) return respond(json_error(503, "store", done.error().message, ""));
        respond(json_reply(200, {{"revoked", name}, {"keys", n}}));
      });
    });
  }
  boost::system::error_code ec;
  auto body = boost::json::parse(request.take_body(), ec);
  const auto* o = !ec && body.is_object() ? &body.as_object() : nullptr;
  const auto* name = o ? o->if_contains("name") : nullptr;
  if (!name || !name->is_string()) return respond(json_error(400, "bad_request", "expected {\"name\": ..., \"quota\": \"1000/h\"}", ""));
  const auto* quota = o->if_contains("quota");
  auto made = make_api_key(std::string(name->as_string()), quota && quota->is_string() ? std::string(quota->as_string()) : "",
                           unix_ms(clock_));
  if (!made) return respond(json_error(400, "bad_request", made.error().message, ""));
  store->run_blocking([store, made = std::move(*made), respond = std::move(respond)] {
    auto rows = store->scan(kApiKeysStore, "", 100000);
    if (!rows) return respond(json_error(503, "store", rows.error().message, ""));
    for (const auto& row : *rows) {
      if (auto r = decode_api_key(row.value); r && r->name == made.record.name) {
        return respond(json_error(409, "conflict", "an API key named '" + r->name + "' exists; revoke it first", ""));
      }
    }
    Batch b;
    b.puts.push_back({kApiKeysStore, made.record.id, encode_api_key(made.record), std::string(), 0});
    store->commit(std::move(b), [made, respond](Expected<BatchResult> done) {
      if (!done) return respond(json_error(503, "store", done.error().message, ""));
      respond(json_reply(201, {{"name", made.record.name}, {"id", made.record.id}, {"key", made.key},
                               {"quota", made.record.quota ? made.record.quota->text : ""}}));
    });
  });
}

void AdminApi::blobs(IncomingRequest& request, std::string_view path, std::string_view method, Responder respond) {
  if (!store_) return respond(json_error(503, "no_store", "this host runs without a store", ""));
  std::string decoded;
  if (!percent_decode(path.substr(std::string_view("/admin/blobs/").size()), decoded)) {
    return respond(json_error(400, "bad_request", "the blob path has a bad %-escape", ""));
  }
  const auto slash = decoded.find('/');
  const std::string container = decoded.substr(0, slash);
  if (slash == std::string::npos) {
    if (method != "GET") return respond(json_error(405, "method_not_allowed", "list a container with GET", ""));
    const std::string_view target = request.target();
    const auto q = target.find('?');
    const std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
    const int limit = std::clamp(std::atoi(query_param(query, "limit").value_or("1000").c_str()), 1, 10000);
    Store* store = store_;
    return store->run_blocking([store, container, prefix = query_param(query, "prefix").value_or(""),
                                after = query_param(query, "after").value_or(""), limit, respond = std::move(respond)] {
      auto page = store->list_blobs(container, prefix, after, limit);
      if (!page) return respond(blob_error_reply(page.error()));
      respond(HttpReply{200, {{"content-type", "application/json"}}, blob_page_json(container, *page)});
    });
  }
  const std::string name = decoded.substr(slash + 1);
  if (method == "PUT" || method == "POST") {
    Batch b;
    b.blob_puts.push_back(blob_put_from(request, container, name));
    store_->commit(std::move(b), [respond = std::move(respond)](Expected<BatchResult> r) { respond(blob_written_reply(r)); });
    return;
  }
  if (method == "GET" || method == "HEAD") {
    // Reads (the bytes from a file): off the event loop. HEAD reads no bytes.
    Store* store = store_;
    return store->run_blocking([store, container, name, head = method == "HEAD", respond = std::move(respond)] {
      auto reply = [&](const BlobInfo& info, std::string data) {
        respond(HttpReply{200,
                          {{"content-type", info.content_type},
                           {"etag", "\"" + info.etag + "\""},
                           {"x-blob-version", std::to_string(info.version)},
                           {"x-blob-sha256", info.sha256}},
                          std::move(data)});
      };
      auto missing = [&] { respond(json_error(404, "not_found", "no blob " + container + "/" + name, "")); };
      if (head) {
        auto info = store->head_blob(container, name);
        if (!info) return respond(blob_error_reply(info.error()));
        if (!*info) return missing();
        return reply(**info, {});
      }
      auto blob = store->get_blob(container, name);
      if (!blob) return respond(blob_error_reply(blob.error()));
      if (!*blob) return missing();
      reply((*blob)->info, std::move((*blob)->data));
    });
  }
  if (method == "DELETE") {
    Batch b;
    b.blob_deletes.push_back({container, name, blob_condition(request), blob_traceparent(request),
                              blob_tracestate(request)});
    store_->commit(std::move(b), [respond = std::move(respond), container, name](Expected<BatchResult> r) {
      if (!r) return respond(blob_error_reply(r.error()));
      if (r->blobs_deleted.at(0) == 0) return respond(json_error(404, "not_found", "no blob " + container + "/" + name, ""));
      respond(json_reply(200, json::object{{"deleted_version", r->blobs_deleted.at(0)}}));
    });
    return;
  }
  HttpReply r = json_error(405, "method_not_allowed", "blobs take GET, PUT, POST and DELETE", "");
  r.headers.push_back({"allow", "GET, PUT, POST, DELETE"});
  respond(std::move(r));
}

void AdminApi::invoke(IncomingRequest& request, std::string_view name, Responder respond) {
  FunctionPool* pool = pools_.find(name);
  if (!pool) {
    return respond(json_error(404, "not_found", "no function named '" + std::string(name) + "'", ""));
  }
  const FunctionSpec& fn = pool->spec();
  Invocation inv = new_invocation(fn, TriggerKind::admin, "/admin", "nimbus.admin.invoke", clock_);
  HttpRequest& http = inv.http.emplace();
  http.method = "POST";
  http.path = "/";
  std::string_view target = request.target();
  if (auto q = target.find('?'); q != std::string_view::npos) http.query = std::string(target.substr(q + 1));
  if (auto ct = request.header("content-type")) http.headers.push_back({"content-type", std::string(*ct)});
  inv.payload = request.take_body();
  // The function's reply, wrapped: the admin call itself succeeded.
  auto answer = [respond = std::move(respond)](Result& r, const InvocationView& s) {
    HttpReply reply = reply_for(std::move(r), s.function, s.id);
    json::object headers;
    for (const auto& h : reply.headers) headers[h.name] = h.value;
    json::object out{{"invocation_id", s.id},
                     {"function", s.function},
                     {"outcome", std::string(to_string(r.outcome))},
                     {"status", reply.status},
                     {"headers", std::move(headers)}};
    if (valid_utf8(reply.body)) out["body"] = reply.body;
    else out["body_base64"] = base64(reply.body);
    respond(json_reply(200, out));
    return reply.status;
  };
  InvocationStamp stamp = InvocationStamp::of(inv);
  pool->dispatch(std::move(inv), [this, spec = &fn, stamp = std::move(stamp), answer = std::move(answer)](Result&& result) mutable {
    finish_invocation(store_, *spec, logger_, clock_, std::move(stamp), std::move(result), std::move(answer));
  });
}

std::string AdminApi::functions_json() const {
  json::array list;
  for (const auto& fn : app_.functions) {
    json::array triggers;
    for (const auto& t : fn.triggers) {
      json::object o{{"kind", std::string(to_string(t.kind))}};
      for (const auto& route : t.settings->public_routes()) {  // one at most, today
        o["route"] = route.route;
        json::array methods;
        for (const auto& m : route.methods) methods.push_back(json::value(m));
        o["methods"] = std::move(methods);
        o["auth"] = route.auth == AuthLevel::function ? "function" : "anonymous";
      }
      triggers.push_back(std::move(o));
    }
    json::object env;
    for (const auto& e : fn.env) env[e.name] = e.secret ? std::string("***") : e.value;
    FunctionPool* pool = pools_.find(fn.name);
    list.push_back(json::object{
        {"name", fn.name},
        {"runtime", std::string(to_string(fn.runtime))},
        {"isolation", std::string(to_string(fn.isolation))},
        {"handler", fn.handler},
        {"blocking", fn.blocking},
        {"timeout", format_duration(fn.timeout)},
        {"concurrency", fn.concurrency},
        {"wait_queue", fn.wait_queue},
        {"running", pool ? pool->running() : 0},
        {"waiting", pool ? pool->waiting() : 0},
        {"triggers", std::move(triggers)},
        {"env", std::move(env)},
    });
  }
  return json::serialize(json::object{{"app", app_.name}, {"functions", std::move(list)}});
}

std::string AdminApi::status_json() const {
  auto uptime = std::chrono::duration<double>(clock_.now() - status_.started).count();
  int running = 0, waiting = 0;
  for (int i = 0; i < pools_.size(); ++i) {
    running += pools_.at(i).running();
    waiting += pools_.at(i).waiting();
  }
  json::object out{
      {"app", app_.name},
      {"pid", status_.pid},
      {"http", status_.http_url},
      {"admin", status_.admin_url},
      {"store", redact_store_url(app_.store)},
      {"uptime_seconds", uptime},
      {"draining", status_.draining.load()},
      {"functions", app_.functions.size()},
      {"running", running},
      {"waiting", waiting},
  };
  if (store_) {
    const Store::Health health = store_->health();
    json::object h{{"available", health.available}};
    if (!health.available) {
      h["problem"] = health.problem;
      h["since_ms"] = health.since_ms;
    }
    out["store_health"] = std::move(h);
  }
  for (const StatusField& field : fields_) {
    boost::system::error_code ec;
    json::value v = json::parse(field.json(), ec);
    if (!ec) out[field.name] = std::move(v);
  }
  return json::serialize(out);
}

void AdminApi::orchestrations(IncomingRequest& request, int target, const std::vector<std::string>& params,
                              Responder respond) {
  if (!store_) return respond(json_error(503, "no_store", "this host has no store", ""));
  const std::string target_text(request.target());
  const auto q = target_text.find('?');
  const std::string query = q == std::string::npos ? std::string() : target_text.substr(q + 1);
  auto client = std::make_shared<durable::Client>(*store_, clock_, orchestration_versions_);
  auto host = request.header("host");
  const std::string origin = "http://" + std::string(host ? *host : "localhost");
  store_->run_blocking([client, target, params, query, origin, method = std::string(request.method()),
                        body = request.take_body(), respond = std::move(respond)] {
    auto arg = [&](const char* name) { return query_param(query, name).value_or(""); };
    auto param = [&](std::size_t i) { return i < params.size() ? params[i] : std::string(); };
    switch (target) {
      case kOrchestrations:
        return respond(client->list(arg("name"), arg("status"), std::atoi(query_param(query, "limit").value_or("100").c_str()),
                                    arg("after")));
      case kOrchestrationStart:
        return respond(client->start(param(0), arg("instance"), body, origin + "/admin"));
      default:
        return respond(client->instance(method, "", param(0), param(1), param(2), body, arg("reason"),
                                        arg("history") == "true", origin + "/admin"));
    }
  });
}

}  // namespace nimbus
