#pragma once
// The stream trigger's settings (`- stream: {name, group, batch_size, max_wait, start}`),
// read in kind.cpp.
#include <string>

#include "core/app_spec.h"

namespace nimbus {

// Ordered batches from every partition of a stream, for one consumer group.
struct StreamTriggerSpec final : TriggerSettings {
  std::string name;
  std::string group;                            // default: the function's name
  int batch_size = 100;                         // records per invocation, at most
  Duration max_wait = std::chrono::seconds(1);  // an idle partition is looked at again this often
  bool from_latest = false;                     // a new group starts at the end (true) or the start

  std::vector<std::string> streams_read() const override { return {name}; }
};

}  // namespace nimbus
