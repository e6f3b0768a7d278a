#pragma once
// The blob trigger's settings (`- blob: {path, events, lease}`), read in kind.cpp.
#include <string>

#include "core/app_spec.h"
#include "core/blob_path.h"

namespace nimbus {

// Blobs in `container` whose names match `pattern`: one invocation per blob version and event
// asked for, from the queue `_blobs.<function>` (retries and dead letters as any queue).
struct BlobTriggerSpec final : TriggerSettings {
  std::string container;
  std::string pattern;  // the name part, after the container: "{name}.csv"
  unsigned events = kBlobCreated | kBlobUpdated;
  Duration lease{};  // visibility timeout of an event; 0 = the function's timeout + 30 s (the longest of a function's triggers counts)
};
inline std::string blob_queue_for(const std::string& function) { return "_blobs." + function; }

}  // namespace nimbus
