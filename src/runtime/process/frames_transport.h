#pragma once
// The frames transport: an instance is a worker process (plain or sandboxed) that speaks the
// worker protocol over pipes (docs/worker-protocol.md): init at launch, invoke frames in,
// result, output, log, fatal and host-call frames out. Host calls (state, publish, enqueue,
// invoke) are answered through Services; the worker's log lines go to the function's log.
#include <memory>
#include <string>
#include <vector>

#include "core/app_spec.h"
#include "runtime/instance.h"

namespace nimbus {

class Logger;
class Reactor;
class Services;
struct ProcessOptions;

class FramesTransport final : public InstanceTransport {
 public:
  FramesTransport(const FunctionSpec& function, const ProcessOptions& options, Logger& logger);
  ~FramesTransport() override;

  void encode(const Invocation& invocation, std::string& out) const override;
  Expected<std::shared_ptr<InstanceConnection>> launch(uint64_t serial, std::vector<std::string> extra_env,
                                                        InstanceEvents events) override;

  // Set before the first launch.
  void set_services(Services* services) { services_ = services; }
  void set_reactors(std::vector<Reactor*> reactors) { reactors_ = std::move(reactors); }

  class Connection;

 private:
  FunctionSpec spec_;
  const ProcessOptions& options_;
  Logger& logger_;
  Services* services_ = nullptr;
  std::vector<Reactor*> reactors_;
};

}  // namespace nimbus
