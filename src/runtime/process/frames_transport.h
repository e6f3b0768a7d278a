#pragma once
// The frames transport: an instance is a worker process (plain or sandboxed) that speaks the
// worker protocol over pipes (docs/worker-protocol.md): init at launch, invoke frames in,
// result, output, log, fatal and host-call frames out. Host calls (state, publish, enqueue,
// invoke) are answered through Services; the worker's log lines go to the function's log.
#include <memory>
#include <string>
#include <vector>

#include <filesystem>

#include "core/app_spec.h"
#include "runtime/instance.h"
#include "runtime/process/sandbox.h"

namespace nimbus {

class Logger;
class Reactor;
class Services;

// How one worker process is launched.
struct WorkerLaunch {
  std::vector<std::string> argv;  // the worker command
  std::vector<std::string> env;   // its whole environment
  std::filesystem::path cwd;
  std::string handler;            // sent in init
  std::string runtime;            // "python", "node", "process", "native"
  int concurrency = 1;            // in-flight invocations it is sent (sent in init)
  std::size_t memory_limit = 0;
  int64_t cpu_seconds = 0;
  int open_files = 0;
  // isolation: sandbox: what each instance is launched into (null: a plain process).
  std::shared_ptr<const SandboxPlan> sandbox;
};

// How a manifest function becomes a worker command and environment (worker_command.cpp).
// `native_library` is the built library of a native function that runs in a worker
// (isolation: process | sandbox); `sandbox` what prepare_sandbox made for it (isolation: sandbox).
WorkerLaunch worker_launch_for(const AppSpec& app, const FunctionSpec& function,
                               const std::filesystem::path& native_library = {}, const SandboxSetup& sandbox = {});

class FramesTransport final : public InstanceTransport {
 public:
  // `services` answer the workers' host calls (state, publish, invoke); their pipes are read
  // on `reactors` (round robin by instance; the loops must run until the fleet has stopped),
  // or without any on a reader thread per worker.
  FramesTransport(const FunctionSpec& function, WorkerLaunch launch, Logger& logger, Services* services = nullptr,
                  std::vector<Reactor*> reactors = {});
  ~FramesTransport() override;

  void encode(const Invocation& invocation, std::string& out) const override;
  Expected<std::shared_ptr<InstanceConnection>> launch(uint64_t serial, std::vector<std::string> extra_env,
                                                        InstanceEvents events) override;
  std::string limits_note() const override;

  // Set before the first launch.
  void set_services(Services* services) { services_ = services; }
  void set_reactors(std::vector<Reactor*> reactors) { reactors_ = std::move(reactors); }

  class Connection;

 private:
  FunctionSpec spec_;
  WorkerLaunch options_;
  Logger& logger_;
  Services* services_ = nullptr;
  std::vector<Reactor*> reactors_;
};

}  // namespace nimbus
