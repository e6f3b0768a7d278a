// The frames transport: a function runs in worker processes (any language; native code in
// nimbus-native-worker), plain or sandboxed, spoken to in frames over pipes
// (docs/worker-protocol.md). The pool's InstanceFleet runs the instances (pool/fleet.h).
#include "observe/log.h"
#include "runtime/process/frames_transport.h"
#include "runtime/process/sandbox.h"
#include "runtime/registry.h"

namespace nimbus {
namespace {

Expected<std::unique_ptr<InstanceTransport>> make(const FunctionSpec& fn, const RuntimeContext& c) {
  SandboxSetup sandbox;
  if (fn.isolation == Isolation::sandbox) {
    auto prepared = prepare_sandbox(c.app, fn);
    if (!prepared) return prepared.error();
    sandbox = std::move(*prepared);
    c.logger.host(LogLevel::info, "sandbox limits", {{"function", fn.name}, {"limits", sandbox.limits}});
  }
  std::filesystem::path library;
  if (auto built = c.native_libraries.find(fn.name); built != c.native_libraries.end()) library = built->second;
  WorkerLaunch launch = worker_launch_for(c.app, fn, library, sandbox);
  if (launch.sandbox) {
    if (auto st = check_sandbox_plan(c.app, fn.name, *launch.sandbox); !st) return st.error();
  }
  return std::unique_ptr<InstanceTransport>(
      std::make_unique<FramesTransport>(fn, std::move(launch), c.logger, c.services, c.reactors));
}

}  // namespace

extern const RuntimeTransport kFramesTransport = {.transport = Transport::frames, .make_instances = make};

}  // namespace nimbus
