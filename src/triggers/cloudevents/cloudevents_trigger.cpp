#include "triggers/cloudevents/cloudevents_trigger.h"

#include <strings.h>

#include <boost/json.hpp>
#include <mutex>

#include "pool/function_pools.h"
#include "triggers/cloudevents/cloudevent.h"
#include "triggers/cloudevents/cloudevents_spec.h"
#include "triggers/finish.h"
#include "triggers/http/http_trigger.h"
#include "triggers/http/public_routes.h"
#include "triggers/http/server.h"

namespace nimbus {
namespace {

namespace json = boost::json;
const TriggerKind kCloudEvents = TriggerKind::named("cloudevents");

// The CloudEvents webhook spec's abuse protection: a sender asks with OPTIONS and
// WebHook-Request-Origin whether it may deliver here.
HttpReply webhook_validation(IncomingRequest& request) {
  HttpReply r{200, {{"allow", "POST, OPTIONS"}}, {}};
  if (auto origin = request.header("webhook-request-origin")) {
    r.headers.push_back({"webhook-allowed-origin", std::string(*origin)});
    r.headers.push_back({"webhook-allowed-rate", "*"});
  }
  return r;
}

Invocation invocation_for(const FunctionSpec& fn, CloudEvent&& ev, const Clock& clock) {
  const std::string* tp = find_header(ev.attributes, "ce.traceparent");
  const std::string* ts = tp ? find_header(ev.attributes, "ce.tracestate") : nullptr;
  Invocation inv = new_invocation(fn, kCloudEvents, std::move(ev.source), std::move(ev.type), clock,
                                  tp ? std::string_view(*tp) : std::string_view(),
                                  ts ? std::string_view(*ts) : std::string_view());
  inv.event_id = std::move(ev.id);
  inv.subject = std::move(ev.subject);
  inv.enqueued_ms = ev.time_ms;  // the event's time, when it has one
  inv.payload = std::move(ev.data);
  if (const std::string* ct = find_header(ev.attributes, "ce.datacontenttype")) inv.metadata.push_back({"content-type", *ct});
  for (auto& a : ev.attributes) inv.metadata.push_back(std::move(a));
  return inv;
}

// The replies of a batch's events, answered as one once the last is in.
class BatchReply {
 public:
  BatchReply(std::size_t events, Responder respond) : left_(events), results_(events), respond_(std::move(respond)) {}

  void done(std::size_t index, std::string event_id, const std::string& invocation_id, HttpReply&& reply) {
    std::unique_lock lock(mu_);
    results_[index] = json::object{{"id", event_id}, {"invocation_id", invocation_id}, {"status", reply.status}};
    if (reply.status >= 300) {
      failed_.push_back(std::move(event_id));
      if (!failure_) failure_ = std::move(reply);
    }
    if (--left_ > 0) return;
    lock.unlock();
    if (!failure_) {
      json::object body{{"results", std::move(results_)}};
      return respond_(HttpReply{200, {{"content-type", "application/json"}}, json::serialize(body)});
    }
    std::string ids;
    for (const auto& id : failed_) ids += (ids.empty() ? "" : ", ") + id;
    HttpReply r = json_error(failure_->status, "batch_failed",
                             std::to_string(failed_.size()) + " of " + std::to_string(results_.size()) +
                                 " events failed (" + ids + "); the log has the details",
                             "");
    if (const std::string* after = find_header(failure_->headers, "retry-after")) r.headers.push_back({"retry-after", *after});
    respond_(std::move(r));
  }

 private:
  std::mutex mu_;
  std::size_t left_;
  json::array results_;
  std::vector<std::string> failed_;
  std::optional<HttpReply> failure_;
  Responder respond_;
};

}  // namespace

struct CloudEventsTrigger::Shared {
  Store& store;
  Logger& logger;
  const Clock& clock;

  void handle(FunctionPool& pool, IncomingRequest& request, Responder respond) {
    if (request.method() == "OPTIONS") return respond(webhook_validation(request));
    Headers headers;
    request.for_each_header([&headers](std::string_view n, std::string_view v) {
      auto is = [n](std::string_view name) { return n.size() == name.size() && strncasecmp(n.data(), name.data(), n.size()) == 0; };
      if ((n.size() > 3 && strncasecmp(n.data(), "ce-", 3) == 0) || is("content-type") || is("traceparent") ||
          is("tracestate")) {
        headers.push_back({std::string(n), std::string(v)});
      }
    });
    auto events = read_cloudevents(headers, request.take_body());
    if (!events) {
      const int status = events.error().code == "415" ? 415 : 400;
      return respond(json_error(status, status == 415 ? "unsupported_event_format" : "invalid_cloudevent",
                                events.error().message, ""));
    }
    const FunctionSpec& fn = pool.spec();
    if (events->empty()) {
      return respond(HttpReply{200, {{"content-type", "application/json"}}, "{\"results\":[]}"});
    }
    if (events->size() == 1) {
      Invocation inv = invocation_for(fn, std::move(events->front()), clock);
      InvocationStamp stamp = InvocationStamp::of(inv);
      auto answer = [respond = std::move(respond)](Result& r, const InvocationView& s) {
        HttpReply reply = reply_for(std::move(r), s.function, s.id);
        const int status = reply.status;
        respond(std::move(reply));
        return status;
      };
      pool.dispatch(std::move(inv), [this, spec = &fn, stamp = std::move(stamp), answer = std::move(answer)](Result&& r) mutable {
        finish_invocation(&store, *spec, logger, clock, std::move(stamp), std::move(r), std::move(answer));
      });
      return;
    }
    auto batch = std::make_shared<BatchReply>(events->size(), std::move(respond));
    for (std::size_t i = 0; i < events->size(); ++i) {
      std::string event_id = (*events)[i].id;
      Invocation inv = invocation_for(fn, std::move((*events)[i]), clock);
      InvocationStamp stamp = InvocationStamp::of(inv);
      auto answer = [batch, i, event_id = std::move(event_id)](Result& r, const InvocationView& s) mutable {
        HttpReply reply = reply_for(std::move(r), s.function, s.id);
        const int status = reply.status;
        batch->done(i, std::move(event_id), std::string(s.id), std::move(reply));
        return status;
      };
      pool.dispatch(std::move(inv), [this, spec = &fn, stamp = std::move(stamp), answer = std::move(answer)](Result&& r) mutable {
        finish_invocation(&store, *spec, logger, clock, std::move(stamp), std::move(r), std::move(answer));
      });
    }
  }
};

CloudEventsTrigger::CloudEventsTrigger(const TriggerContext& c)
    : shared_(std::make_shared<Shared>(Shared{c.store, c.logger, c.clock})) {
  for (const auto& fn : c.app.functions) {
    FunctionPool* pool = c.pools.find(fn.name);
    if (!pool || !c.routes) continue;
    for (const auto* t : fn.triggers_of<CloudEventsTriggerSpec>()) {
      c.routes->add({t->path, {"POST", "OPTIONS"}, fn.name, t->auth,
                     [shared = shared_, pool](IncomingRequest& request, Headers, Responder respond) {
                       shared->handle(*pool, request, std::move(respond));
                     }});
    }
  }
}

}  // namespace nimbus
