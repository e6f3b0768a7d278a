#include "runtime/registry.h"

namespace nimbus {

// Each defined in runtime/<transport>/transport.cpp.
extern const RuntimeTransport kInProcessTransport, kFramesTransport;

// A new transport is one line here (and its folder).
const std::vector<RuntimeTransport>& runtime_transports() {
  static const std::vector<RuntimeTransport> transports = {
      kInProcessTransport,
      kFramesTransport,
  };
  return transports;
}

Expected<std::unique_ptr<Executor>> make_executor(const FunctionSpec& function, int index, const RuntimeContext& context) {
  for (const auto& t : runtime_transports()) {
    if (t.transport == function.transport()) return t.make(function, index, context);
  }
  return Error{"function '" + function.name + "': no runtime transport '" + std::string(to_string(function.transport())) +
               "' in this build"};
}

}  // namespace nimbus
