// The in-process transport: a native function without isolation is a library loaded into the
// host and called through the C ABI, on the pool's worker threads or inline.
#include "observe/metrics.h"
#include "runtime/native/native_runtime.h"
#include "runtime/registry.h"

namespace nimbus {
namespace {

Expected<std::unique_ptr<Executor>> make(const FunctionSpec& fn, int index, const RuntimeContext& c) {
  auto library = c.native_libraries.find(fn.name);
  if (library == c.native_libraries.end()) return Error{"function '" + fn.name + "': its library was not built"};
  const TimePoint t0 = c.clock.now();
  auto executor = load_native_function(fn, library->second, c.clock, c.logger, c.services);
  if (!executor) return executor.error();
  c.metrics.cold_start(index, c.clock.now() - t0);
  c.metrics.instances(index, 1);
  return executor;
}

}  // namespace

extern const RuntimeTransport kInProcessTransport = {.transport = Transport::in_process, .make_executor = make};

}  // namespace nimbus
