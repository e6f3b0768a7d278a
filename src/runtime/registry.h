#pragma once
// Where a function's code runs and how the host talks to it: its transport. The language (the
// manifest's `runtime`: native, python, node, or any command) is one axis; the transport is
// the other (FunctionSpec::transport): native code without isolation is called in the host's
// process; everything else runs in worker processes spoken to in frames
// (docs/worker-protocol.md). A new transport (an HTTP server on $PORT, the Lambda Runtime API)
// is a folder under runtime/ implementing runtime/instance.h, with a `make_instances` and one
// line in registry.cpp: the pool's InstanceFleet runs its instances (pool/fleet.h). The host
// knows none by name: it asks make_executor (pool/fleet.h) for each function, warms it up, and
// stops it at the end.
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/app_spec.h"
#include "core/clock.h"
#include "core/expected.h"
#include "runtime/executor.h"
#include "runtime/instance.h"

namespace nimbus {

class Logger;
class Metrics;
class Reactor;
class Services;

// What every transport is built from.
struct RuntimeContext {
  const AppSpec& app;
  const Clock& clock;
  Timers timers;
  Logger& logger;
  Metrics& metrics;
  Services* services = nullptr;     // who answers host calls (state, publish, invoke)
  std::vector<Reactor*> reactors;   // event loops to read workers' pipes on
  // The loopback service API: its URL, a token for one instance of a function, its revocation.
  std::string api_url;
  std::function<std::string(const std::string& function)> api_issue;
  std::function<void(const std::string& token)> api_revoke;
  // Native functions' built libraries, by function name (runtime/native/native_build.h).
  std::map<std::string, std::filesystem::path> native_libraries;
};

// A transport gives one of the two: an executor of its own (code in the host's process), or
// how to start and speak to one instance, run under the pool's fleet.
struct RuntimeTransport {
  Transport transport;
  // An executor for function `function` (the `index`th of the app), not yet warmed up.
  Expected<std::unique_ptr<Executor>> (*make_executor)(const FunctionSpec& function, int index,
                                                       const RuntimeContext& context) = nullptr;
  Expected<std::unique_ptr<InstanceTransport>> (*make_instances)(const FunctionSpec& function,
                                                                 const RuntimeContext& context) = nullptr;
};

const std::vector<RuntimeTransport>& runtime_transports();
const RuntimeTransport* find_runtime_transport(Transport transport);  // null: not in this build

}  // namespace nimbus
