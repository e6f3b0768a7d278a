#pragma once
// The instance seam. A fleet of instances (pool/fleet.h: spawn, ready,
// per-instance concurrency, the autoscaler, scale to zero, deadlines, replacement) runs a
// function; a transport says how one instance is started and spoken to. Frames to a worker
// process are one transport (runtime/process/frames_transport.h); an HTTP server on $PORT or
// the Lambda Runtime API would be others, each implementing these two classes.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "core/expected.h"
#include "core/invocation.h"

namespace nimbus {

// What an instance tells its fleet, from any thread.
struct InstanceEvents {
  std::function<void()> ready;                                 // it takes work now
  std::function<void(const std::string& id, Result result)> result;  // an invocation's end
  std::function<void(const std::string& id, OutputMessage output)> output;  // before its result
  std::function<void(std::string message)> fatal;             // it gave up (why, before it ends)
  std::function<void(int code, const std::string& why)> exit;  // it is gone
  // The trace an invocation in flight continues (for the host calls it makes): its traceparent
  // and tracestate.
  std::function<std::pair<std::string, std::string>(const std::string& id)> trace;
};

// One running instance, as its fleet holds it.
class InstanceConnection {
 public:
  virtual ~InstanceConnection() = default;
  // Sends an invocation encoded by InstanceTransport::encode; false when it cannot be (the
  // fleet kills it, and its exit fails what it holds).
  virtual bool send(std::string_view encoded) = 0;
  // Bytes that may be written to it before it is ready without the write blocking.
  virtual std::size_t pipeline_capacity() const = 0;
  // Bytes written at launch, before any invocation (its init).
  virtual std::size_t launch_bytes() const = 0;
  virtual void shutdown(Duration grace) = 0;  // finish what you hold, then end
  virtual void kill() = 0;                    // end now
  virtual int pid() const = 0;
};

class InstanceTransport {
 public:
  virtual ~InstanceTransport() = default;
  // An invocation as this transport sends it (made once; resent as is to another instance).
  virtual void encode(const Invocation& invocation, std::string& out) const = 0;
  // Starts instance number `serial` with `extra_env` added to its environment.
  virtual Expected<std::shared_ptr<InstanceConnection>> launch(uint64_t serial, std::vector<std::string> extra_env,
                                                                InstanceEvents events) = 0;
  // Appended to the reason an instance ended: the limits it ran under (" (memory_limit N bytes)").
  virtual std::string limits_note() const { return {}; }
};

}  // namespace nimbus
