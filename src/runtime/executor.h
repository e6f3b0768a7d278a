#pragma once
// The executor seam: every runtime transport (in-process native code, worker processes over
// frames; an HTTP server on $PORT and the Lambda Runtime API next) runs an Invocation and
// produces a Result through this one interface, and says how much it can run at once. Pools
// own executors; triggers never see them. Each transport is made by runtime/registry.cpp.
#include <memory>
#include <string>

#include "core/app_spec.h"
#include "core/expected.h"
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

  // Invocations of `function` it can run at once: what its pool admits. A fleet of instances
  // runs `concurrency` per instance on up to max_instances.
  virtual int capacity(const FunctionSpec& function) const { return function.concurrency; }
  // Before traffic: starts what must run from the start (min_instances); the first failure.
  virtual Status warm_up() { return ok_status(); }
  // At shutdown, once no new work comes: ends what it runs within `grace`.
  virtual void stop(Duration grace) { (void)grace; }
  // A host out of grace, about to exit: ends everything at once, waiting for nothing.
  virtual void kill_all() {}
};

}  // namespace nimbus
