#pragma once
// Routes that other trigger kinds serve on the public listener (cloudevents, say): a kind adds
// them while the host builds its triggers; the http trigger serves them beside the functions'
// own routes once it starts, after the same checks (404/405, function keys).
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "core/app_spec.h"
#include "core/invocation.h"

namespace nimbus {

class IncomingRequest;
class Responder;

struct PublicEndpoint {
  std::string route;                 // "/events/{topic}"
  std::vector<std::string> methods;  // upper case; empty = any
  std::string function;              // whose keys an auth: function route takes
  AuthLevel auth = AuthLevel::anonymous;
  // Runs on the event loop: must not block (hand work to the function's pool).
  std::function<void(IncomingRequest& request, Headers params, Responder respond)> handle;
};

class PublicRoutes {
 public:
  void add(PublicEndpoint endpoint) {
    std::lock_guard lock(mu_);
    endpoints_.push_back(std::move(endpoint));
  }
  std::vector<PublicEndpoint> endpoints() const {
    std::lock_guard lock(mu_);
    return endpoints_;
  }

 private:
  mutable std::mutex mu_;
  std::vector<PublicEndpoint> endpoints_;
};

}  // namespace nimbus
