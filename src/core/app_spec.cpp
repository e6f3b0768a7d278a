#include "core/app_spec.h"

namespace nimbus {

std::string_view to_string(RuntimeKind kind) {
  switch (kind) {
    case RuntimeKind::native: return "native";
    case RuntimeKind::python: return "python";
    case RuntimeKind::node: return "node";
    case RuntimeKind::process: return "process";
  }
  return "unknown";
}

}  // namespace nimbus
