#include "triggers/blob/blob_trigger.h"

#include <boost/json.hpp>

#include "core/ids.h"
#include "triggers/blob/blob_spec.h"

namespace nimbus {
namespace json = boost::json;

std::vector<BlobSubscription> blob_subscriptions(const AppSpec& app) {
  std::vector<BlobSubscription> out;
  for (const auto& fn : app.functions) {
    for (const auto* b : fn.triggers_of<BlobTriggerSpec>()) {
      out.push_back({blob_queue_for(fn.name), b->container, b->pattern, b->events});
    }
  }
  return out;
}

Status load_blob_payload(Store& store, Invocation& inv) {
  const std::string* container = find_header(inv.metadata, "blob.container");
  const std::string* event = find_header(inv.metadata, "blob.event");
  const std::string* version = find_header(inv.metadata, "blob.version");
  if (!container || !event || !version) {
    return Error{"message " + inv.message_id + " is not a blob event: it has no blob.container, blob.event or blob.version"};
  }
  if (*event == "deleted") return ok_status();
  auto blob = store.get_blob(*container, inv.subject);
  if (!blob) return Error{"cannot read blob " + *container + "/" + inv.subject + ": " + blob.error().message};
  if (!*blob) {
    inv.metadata.push_back({"blob.payload_version", "0"});
    return ok_status();
  }
  if (std::to_string((*blob)->info.version) != *version) {
    inv.metadata.push_back({"blob.payload_version", std::to_string((*blob)->info.version)});
  }
  inv.payload = std::move((*blob)->data);
  return ok_status();
}

std::optional<std::string> blob_condition(const IncomingRequest& request) {
  if (auto m = request.header("if-match")) {
    std::string etag(*m);
    if (etag.size() >= 2 && etag.front() == '"' && etag.back() == '"') etag = etag.substr(1, etag.size() - 2);
    return etag;
  }
  if (auto n = request.header("if-none-match"); n && *n == "*") return std::string();
  return std::nullopt;
}

Batch::BlobPut blob_put_from(IncomingRequest& request, std::string container, std::string name) {
  Batch::BlobPut p;
  p.container = std::move(container);
  p.name = std::move(name);
  if (auto ct = request.header("content-type")) p.content_type = std::string(*ct);
  p.if_match = blob_condition(request);
  p.data = request.take_body();
  p.traceparent = blob_traceparent(request);
  p.tracestate = blob_tracestate(request);
  return p;
}

std::string blob_traceparent(IncomingRequest& request) {
  auto tp = request.header("traceparent");
  return tp && valid_traceparent(*tp) ? std::string(*tp) : std::string();
}

std::string blob_tracestate(IncomingRequest& request) {
  auto tp = request.header("traceparent");
  return tp && valid_traceparent(*tp) ? continue_tracestate(*tp, tracestate_of(request)) : std::string();
}

namespace {

json::object info_object(const BlobInfo& b) {
  json::object metadata;
  for (const auto& h : b.metadata) metadata[h.name] = h.value;
  return json::object{{"container", b.container},   {"name", b.name},
                      {"path", b.container + "/" + b.name},
                      {"version", b.version},        {"etag", b.etag},
                      {"size", b.size},              {"content_type", b.content_type},
                      {"sha256", b.sha256},          {"created_ms", b.created_ms},
                      {"updated_ms", b.updated_ms},  {"metadata", std::move(metadata)}};
}

}  // namespace

std::string blob_info_json(const BlobInfo& info) { return json::serialize(info_object(info)); }

std::string blob_page_json(const std::string& container, const BlobPage& page) {
  json::array list;
  for (const auto& b : page.blobs) list.push_back(info_object(b));
  return json::serialize(json::object{{"container", container}, {"blobs", std::move(list)}, {"next_after", page.next_after}});
}

HttpReply blob_error_reply(const Error& e) {
  const int status = e.code == store_error::conflict    ? 412
                     : e.code == store_error::invalid   ? 400
                     : e.code == store_error::too_large ? 413
                                                        : 503;
  return json_error(status, e.code.empty() ? "store" : e.code, e.message, "");
}

HttpReply blob_written_reply(const Expected<BatchResult>& result) {
  if (!result) return blob_error_reply(result.error());
  const BlobInfo& info = result->blobs.at(0);
  return HttpReply{201,
                   {{"content-type", "application/json"}, {"etag", "\"" + info.etag + "\""}},
                   blob_info_json(info)};
}

}  // namespace nimbus
