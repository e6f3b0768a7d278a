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

const RuntimeTransport* find_runtime_transport(Transport transport) {
  for (const auto& t : runtime_transports()) {
    if (t.transport == transport) return &t;
  }
  return nullptr;
}

}  // namespace nimbus
