#pragma once
// Host services: what a running function may ask of the host while it runs (state, publish,
// enqueue, invoke another function). Declared here, below every runtime, so the native
// runtime and the worker protocol can reach them; the host provides the implementation
// (triggers/host_services) over the store and the function pools.
//
// Operations (args are name/value strings; the body is bytes):
//   state.get     store, key                      -> body: value; fields: found ("true"/"false"), etag
//   state.put     store, key, [if_match], [ttl_ms]; body: value -> fields: etag
//   state.delete  store, key, [if_match]
//   state.list    store, [prefix], [limit: 1-1000, 100] -> body: {"items":[{key, etag, value | value_base64}]}
//                                                    in key order; fields: count
//   publish       topic, [type], [subject]; body  -> fields: event_id
//   enqueue       queue, [type], [subject], [delay_ms]; body -> fields: id
//   invoke        function, [mode: sync|async]; body -> sync: body = reply body, fields: status;
//                                                     async: fields: invocation_id
// A failure is ok = false with an error text; a lost optimistic-concurrency race says
// "conflict: ..." so callers can re-read and retry.
#include <functional>
#include <string>

#include "core/invocation.h"

namespace nimbus {

struct ServiceCall {
  std::string op;
  Headers args;
  std::string body;
  std::string caller;         // the calling function
  std::string traceparent;    // the caller's trace, continued by invoke
  std::string tracestate;     // and its tracestate
};

struct ServiceResult {
  bool ok = true;
  std::string error;
  std::string body;
  Headers fields;

  static ServiceResult failure(std::string error) {
    ServiceResult r;
    r.ok = false;
    r.error = std::move(error);
    return r;
  }
};

class Services {
 public:
  virtual ~Services() = default;
  // `done` runs exactly once, on any thread (possibly before call returns).
  virtual void call(ServiceCall call, std::function<void(ServiceResult)> done) = 0;
};

}  // namespace nimbus
