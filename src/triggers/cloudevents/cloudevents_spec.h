#pragma once
// The cloudevents trigger's settings (`- cloudevents: {path, auth}`), read in kind.cpp.
#include <string>
#include <vector>

#include "core/app_spec.h"

namespace nimbus {

// CloudEvents 1.0 pushed over HTTP to `path` on the public listener, in binary, structured or
// batch content mode (the delivery of Knative, Event Grid and Dapr); each event is one
// invocation.
struct CloudEventsTriggerSpec final : TriggerSettings {
  std::string path;  // a route: "/events" or "/events/{tenant}"
  AuthLevel auth = AuthLevel::anonymous;

  std::vector<PublicRoute> public_routes() const override { return {{path, {"POST", "OPTIONS"}, auth}}; }
};

}  // namespace nimbus
