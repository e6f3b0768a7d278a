#pragma once
// The host services of core/services.h over the store and the function pools.
#include "core/clock.h"
#include "core/services.h"

namespace nimbus {

class FunctionPools;
class Store;
class Tracer;
class Logger;

class HostServices final : public Services {
 public:
  HostServices(Store* store, FunctionPools& pools, const Clock& clock) : store_(store), pools_(pools), clock_(clock) {}
  // Each call of a sampled invocation becomes a span (observe/trace.h Tracer::host_call), the
  // parent of what it causes. Set before functions run; null: no spans.
  void set_tracer(Tracer* tracer) { tracer_ = tracer; }
  // A function run by ctx.invoke is logged like any invocation (its log line, its span, its
  // place in the history). Null: not logged.
  void set_logger(Logger* logger) { logger_ = logger; }
  void call(ServiceCall call, std::function<void(ServiceResult)> done) override;

 private:
  void serve(ServiceCall call, std::function<void(ServiceResult)> done);

  Store* store_;
  FunctionPools& pools_;
  const Clock& clock_;
  Tracer* tracer_ = nullptr;
  Logger* logger_ = nullptr;
};

}  // namespace nimbus
