#pragma once
// Where a function's code runs and how the host talks to it: its transport. The language (the
// manifest's `runtime`: native, python, node, or any command) is one axis; the transport is
// the other (FunctionSpec::transport): native code without isolation is called in the host's
// process; everything else runs in worker processes spoken to in frames
// (docs/worker-protocol.md). A new transport (an HTTP server on $PORT, the Lambda Runtime API)
// is a folder under runtime/ with a `make` and one line in registry.cpp; the host knows none
// by name: it asks make_executor for each function, warms it up, and stops it at the end.
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

struct RuntimeTransport {
  Transport transport;
  // An executor for function `function` (the `index`th of the app), not yet warmed up.
  Expected<std::unique_ptr<Executor>> (*make)(const FunctionSpec& function, int index, const RuntimeContext& context);
};

const std::vector<RuntimeTransport>& runtime_transports();
Expected<std::unique_ptr<Executor>> make_executor(const FunctionSpec& function, int index, const RuntimeContext& context);

}  // namespace nimbus
