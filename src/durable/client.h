#pragma once
// Managing orchestration instances, on the store: start, status (with the history), list,
// raise an event, terminate, suspend, resume, purge. Both the public routes of the
// orchestration trigger (/_nimbus/orchestrations/<name>/..., behind the function's keys) and
// the admin API (/admin/orchestrations/..., for `nimbus orch`) answer with these, so their
// replies are one shape: JSON bodies in Durable Functions' terms and HTTP statuses (202 while
// an instance runs, 200 once it finished, 404, 409, 410). Each call reads or commits and waits
// for the store: never on an event loop (run them through Store::run_blocking).
#include <map>
#include <optional>
#include <set>
#include <string>

#include "core/clock.h"
#include "core/invocation.h"

namespace nimbus {
class Store;
}

namespace nimbus::durable {

class Client {
 public:
  // `versions`: the names an instance may be started by (functions with an orchestration
  // trigger), each with its code's version (orchestrator_version), which a new instance records.
  Client(Store& store, const Clock& clock, std::map<std::string, std::string> versions);

  // Starts `name` with `input` (JSON text; empty = null) as `id` (empty = a new one).
  // `base` is where the instance URLs in the reply point (".../_nimbus/orchestrations/<name>").
  // `traceparent`, `tracestate`: the caller's (W3C), carried by the event: the first step is in
  // its trace.
  HttpReply start(const std::string& name, const std::string& id, const std::string& input, const std::string& base,
                  const std::string& traceparent = {}, const std::string& tracestate = {});
  // One instance: `action` "" with GET (status; `history` adds it) or DELETE (purge); with POST
  // "events" (raise `event` with `body` as its data), "terminate", "suspend" or "resume"
  // (`reason`). `name` (if not empty) must be the instance's orchestration, else 404.
  HttpReply instance(const std::string& method, const std::string& name, const std::string& id,
                     const std::string& action, const std::string& event, const std::string& body,
                     const std::string& reason, bool history, const std::string& base,
                     const std::string& traceparent = {}, const std::string& tracestate = {});
  // Instances by id (of `name` if not empty), `status` (empty = any), `limit` after `after`.
  HttpReply list(const std::string& name, const std::string& status, int limit, const std::string& after);

 private:
  HttpReply purge(const std::string& id, const std::string& etag, bool finished, const std::string& status);

  Store& store_;
  const Clock& clock_;
  std::map<std::string, std::string> versions_;
};

}  // namespace nimbus::durable
