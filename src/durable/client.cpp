// Managing orchestration instances (client.h).
#include "durable/client.h"

#include <algorithm>
#include <boost/json.hpp>
#include <ctime>

#include "core/ids.h"
#include "durable/durable.h"
#include "durable/events.h"
#include "store/store.h"

namespace nimbus::durable {
namespace json = boost::json;

namespace {

constexpr int kMaxList = 1000;

json::value value_of(const std::string& text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  return ec ? json::value(nullptr) : v;
}

HttpReply json_reply(int status, const json::value& body, Headers extra = {}) {
  HttpReply r;
  r.status = status;
  r.headers = {{"content-type", "application/json"}};
  r.headers.insert(r.headers.end(), extra.begin(), extra.end());
  r.body = json::serialize(body);
  return r;
}

HttpReply error_reply(int status, const std::string& code, const std::string& message) {
  return json_reply(status, json::object{{"error", code}, {"message", message}});
}

bool valid_instance_id(const std::string& id) {
  if (id.empty() || id.size() > 200) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':';
  });
}

std::string iso_time(int64_t ms) {
  std::time_t s = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char out[40];
  std::size_t n = std::strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(out + n, sizeof out - n, ".%03dZ", static_cast<int>(ms % 1000));
  return out;
}

// The instance as the management API shows it (Durable Functions' shape).
json::object status_body(const Instance& i) {
  json::object o{{"name", i.name},
                 {"instanceId", i.id},
                 {"runtimeStatus", to_string(i.status)},
                 {"input", value_of(i.input)},
                 {"output", value_of(i.output)},
                 {"customStatus", value_of(i.custom_status)},
                 {"createdTime", iso_time(i.created_ms)},
                 {"lastUpdatedTime", iso_time(i.updated_ms)},
                 {"historyEvents", i.events},
                 {"generation", i.generation}};
  if (!i.error.empty()) o["error"] = i.error;
  if (!i.parent_instance.empty()) o["parentInstanceId"] = i.parent_instance;
  if (!i.version.empty()) o["version"] = i.version;
  return o;
}

json::object urls(const std::string& base, const std::string& id) {
  const std::string at = base + "/instances/" + id;
  return json::object{{"id", id},
                      {"statusQueryGetUri", at},
                      {"sendEventPostUri", at + "/events/{eventName}"},
                      {"terminatePostUri", at + "/terminate?reason={text}"},
                      {"suspendPostUri", at + "/suspend?reason={text}"},
                      {"resumePostUri", at + "/resume?reason={text}"},
                      {"purgeHistoryDeleteUri", at}};
}

}  // namespace

NewMessage event_message(const std::string& instance, json::object event, const std::string& traceparent,
                         const std::string& tracestate) {
  NewMessage m;
  m.type = "nimbus.durable.event";
  m.subject = instance;
  m.payload = json::serialize(json::object{{"instance", instance}, {"event", std::move(event)}});
  if (valid_traceparent(traceparent)) add_trace_context(m.metadata, traceparent, continue_tracestate(traceparent, tracestate));
  return m;
}

Client::Client(Store& store, const Clock& clock, std::map<std::string, std::string> versions)
    : store_(store), clock_(clock), versions_(std::move(versions)) {}

HttpReply Client::start(const std::string& name, const std::string& requested_id, const std::string& body,
                        const std::string& base, const std::string& traceparent, const std::string& tracestate) {
  const auto version = versions_.find(name);
  if (version == versions_.end()) {
    return error_reply(404, "not_found", "no function has an orchestration trigger named '" + name + "'");
  }
  std::string input = "null";
  if (!body.empty()) {
    boost::system::error_code ec;
    json::value v = json::parse(body, ec);
    if (ec) return error_reply(400, "bad_input", "the input must be JSON: " + ec.message());
    input = json::serialize(v);
  }
  const std::string id = requested_id.empty() ? new_invocation_id() : requested_id;
  if (!valid_instance_id(id)) {
    return error_reply(400, "bad_instance_id", "an instance id is 1-200 letters, digits, '-', '_', '.' or ':'");
  }
  const int64_t now = unix_ms(clock_);
  Instance rec;
  rec.id = id;
  rec.name = name;
  rec.input = input;
  rec.created_ms = rec.updated_ms = now;
  rec.version = version->second;
  Batch b;
  b.puts.push_back({kInstances, id, encode(rec), std::string(), 0});  // create-only
  b.enqueues.push_back({orchestrator_queue(name),
                        event_message(id, json::object{{"type", "execution_started"}, {"input", value_of(input)},
                                                       {"time_ms", now}}, traceparent, tracestate)});
  auto done = store_.commit_sync(std::move(b));
  if (!done && done.error().code == store_error::conflict) {
    return error_reply(409, "instance_exists", "an instance with id '" + id + "' exists already");
  }
  if (!done) return error_reply(503, "store_unavailable", done.error().message);
  json::object links = urls(base, id);
  const std::string location(links.at("statusQueryGetUri").as_string());
  return json_reply(202, links, {{"location", location}});
}

HttpReply Client::instance(const std::string& method, const std::string& name, const std::string& id,
                           const std::string& action, const std::string& event_name, const std::string& body,
                           const std::string& reason, bool history, const std::string& base,
                           const std::string& traceparent, const std::string& tracestate) {
  auto got = store_.get(kInstances, id);
  if (!got) return error_reply(503, "store_unavailable", got.error().message);
  std::optional<Instance> rec = *got ? decode_instance((*got)->value) : std::nullopt;
  if (!rec || (!name.empty() && rec->name != name)) {
    return error_reply(404, "not_found",
                       "no instance '" + id + "'" + (name.empty() ? std::string() : " of orchestration '" + name + "'"));
  }
  if (method == "GET" && action.empty()) {
    json::object out = status_body(*rec);
    if (history) {
      auto pages = store_.scan(kHistory, history_prefix(id, rec->generation), 1 << 30);
      if (!pages) return error_reply(503, "store_unavailable", pages.error().message);
      std::sort(pages->begin(), pages->end(), [](auto& a, auto& b) { return a.key < b.key; });
      json::array events;
      for (const auto& p : *pages) {
        json::value v = value_of(p.value);
        if (v.is_array()) {
          for (auto& e : v.as_array()) events.push_back(std::move(e));
        }
      }
      out["history"] = std::move(events);
    }
    const bool done = finished(rec->status);
    return json_reply(done ? 200 : 202, out, done ? Headers{} : Headers{{"location", base + "/instances/" + id}});
  }
  if (method == "DELETE" && action.empty()) return purge(id, (*got)->etag, finished(rec->status), to_string(rec->status));
  if (method != "POST") return error_reply(405, "method_not_allowed", "use GET, DELETE or POST");
  if (finished(rec->status)) return error_reply(410, "finished", "instance '" + id + "' is " + to_string(rec->status));
  json::object event;
  if (action == "events") {
    json::value data = nullptr;
    if (!body.empty()) {
      boost::system::error_code ec;
      data = json::parse(body, ec);
      if (ec) return error_reply(400, "bad_input", "the event's data must be JSON: " + ec.message());
    }
    event = json::object{{"type", "event_raised"}, {"name", event_name}, {"data", std::move(data)}};
  } else if (action == "terminate") {
    event = json::object{{"type", "execution_terminated"}, {"reason", reason}};
  } else if (action == "suspend") {
    event = json::object{{"type", "execution_suspended"}, {"reason", reason}};
  } else if (action == "resume") {
    event = json::object{{"type", "execution_resumed"}, {"reason", reason}};
  } else {
    return error_reply(404, "not_found",
                       "unknown instance operation '" + action + "' (known: events/<name>, terminate, suspend, resume)");
  }
  event["time_ms"] = unix_ms(clock_);
  Batch b;
  b.enqueues.push_back({orchestrator_queue(rec->name), event_message(id, std::move(event), traceparent, tracestate)});
  auto done = store_.commit_sync(std::move(b));
  if (!done) return error_reply(503, "store_unavailable", done.error().message);
  return json_reply(202, json::object{{"id", id}, {"accepted", action}});
}

HttpReply Client::purge(const std::string& id, const std::string& etag, bool done, const std::string& status) {
  if (!done) return error_reply(409, "running", "instance '" + id + "' is " + status + "; terminate it before purging");
  auto pages = store_.scan(kHistory, id + "/", 1 << 30);
  if (!pages) return error_reply(503, "store_unavailable", pages.error().message);
  Batch b;
  for (const auto& p : *pages) b.deletes.push_back({kHistory, p.key, std::nullopt});
  b.deletes.push_back({kInstances, id, etag});
  auto committed = store_.commit_sync(std::move(b));
  if (!committed) {
    return error_reply(committed.error().code == store_error::conflict ? 409 : 503, "not_purged",
                       committed.error().message);
  }
  return json_reply(200, json::object{{"instancesDeleted", 1}});
}

HttpReply Client::list(const std::string& name, const std::string& status, int limit, const std::string& after) {
  std::optional<RuntimeStatus> want;
  if (!status.empty()) {
    want = status_from(status);
    if (!want) return error_reply(400, "bad_status", "unknown status '" + status + "'");
  }
  limit = std::clamp(limit, 1, kMaxList);
  auto all = store_.scan(kInstances, "", 1 << 30);
  if (!all) return error_reply(503, "store_unavailable", all.error().message);
  std::sort(all->begin(), all->end(), [](auto& a, auto& b) { return a.key < b.key; });
  json::array out;
  std::string last;
  bool more = false;
  for (const auto& e : *all) {
    if (!after.empty() && e.key <= after) continue;
    auto rec = decode_instance(e.value);
    if (!rec || (!name.empty() && rec->name != name) || (want && rec->status != *want)) continue;
    if (static_cast<int>(out.size()) == limit) {
      more = true;
      break;
    }
    out.push_back(status_body(*rec));
    last = rec->id;
  }
  json::object reply{{"instances", std::move(out)}};
  if (more) reply["next_after"] = last;
  return json_reply(200, reply);
}

}  // namespace nimbus::durable
