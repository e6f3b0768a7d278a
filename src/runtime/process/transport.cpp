// The frames transport: a function runs in worker processes (any language; native code in
// nimbus-native-worker), plain or sandboxed, spoken to in frames over pipes
// (docs/worker-protocol.md). ProcessExecutor runs the fleet of instances.
#include "observe/log.h"
#include "runtime/process/process_runtime.h"
#include "runtime/process/sandbox.h"
#include "runtime/registry.h"

namespace nimbus {
namespace {

Expected<std::unique_ptr<Executor>> make(const FunctionSpec& fn, int index, const RuntimeContext& c) {
  SandboxSetup sandbox;
  if (fn.isolation == Isolation::sandbox) {
    auto prepared = prepare_sandbox(c.app, fn);
    if (!prepared) return prepared.error();
    sandbox = std::move(*prepared);
    c.logger.host(LogLevel::info, "sandbox limits", {{"function", fn.name}, {"limits", sandbox.limits}});
  }
  std::filesystem::path library;
  if (auto built = c.native_libraries.find(fn.name); built != c.native_libraries.end()) library = built->second;
  ProcessOptions options = process_options_for(c.app, fn, library, sandbox);
  if (options.sandbox) {
    if (auto st = check_sandbox_plan(c.app, fn.name, *options.sandbox); !st) return st.error();
  }
  auto executor = std::make_unique<ProcessExecutor>(fn, index, std::move(options), c.clock, c.timers, c.logger, c.metrics);
  executor->set_services(c.services);
  executor->set_reactors(c.reactors);
  executor->set_api(c.api_url, [issue = c.api_issue, name = fn.name] { return issue(name); }, c.api_revoke);
  return std::unique_ptr<Executor>(std::move(executor));
}

}  // namespace

extern const RuntimeTransport kFramesTransport = {Transport::frames, make};

}  // namespace nimbus
