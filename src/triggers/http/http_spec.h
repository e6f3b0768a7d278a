#pragma once
// The http trigger's settings (`- http: {route, methods, auth, async, upload}`), read in
// kind.cpp.
#include <string>
#include <vector>

#include "core/app_spec.h"

namespace nimbus {

struct HttpTriggerSpec final : TriggerSettings {
  std::string route;                 // "/orders/{id}"
  std::vector<std::string> methods;  // upper case; empty = any
  AuthLevel auth = AuthLevel::anonymous;
  // async: the request is queued (durably) and answered 202 with a status URL at once; the
  // function runs from the queue `_async.<function>` with retries, and its reply is kept.
  bool asynchronous = false;
  // upload: a PUT or POST body is stored as a blob in this container, named by the route's
  // last parameter, and answered 201 with the blob's metadata; the function is not invoked.
  std::string upload_container;

  std::vector<PublicRoute> public_routes() const override { return {{route, methods, auth}}; }
};

// Where async HTTP requests wait and their outcomes are kept.
inline std::string async_queue_for(const std::string& function) { return "_async." + function; }
inline constexpr const char* kJobStore = "_jobs";
inline constexpr const char* kJobsPath = "/_nimbus/jobs/";

}  // namespace nimbus
