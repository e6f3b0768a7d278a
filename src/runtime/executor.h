#pragma once
// The executor seam: every runtime (native, process, http, lambda) runs an Invocation and
// produces a Result through this one interface. Pools own executors; triggers never see them.
#include <memory>
#include <string>

#include "core/invocation.h"

namespace nimbus {

class Executor {
 public:
  enum class Mode : uint8_t {
    synchronous,   // call() runs the function on the calling thread and returns its Result
    asynchronous,  // start() hands the work off (a worker process) and returns at once
  };
  virtual ~Executor() = default;
  virtual Mode mode() const = 0;

  // synchronous executors: may block for as long as the function runs.
  virtual Result call(const Invocation& invocation) = 0;

  // asynchronous executors override this; `done` is called exactly once, on any thread.
  virtual void start(const Invocation& invocation, Completion done) { done(call(invocation)); }
};

}  // namespace nimbus
