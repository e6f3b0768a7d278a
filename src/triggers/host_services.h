#pragma once
// The host services of core/services.h over the store and the function pools.
#include "core/clock.h"
#include "core/services.h"

namespace nimbus {

class FunctionPools;
class Store;

class HostServices final : public Services {
 public:
  HostServices(Store* store, FunctionPools& pools, const Clock& clock) : store_(store), pools_(pools), clock_(clock) {}
  void call(ServiceCall call, std::function<void(ServiceResult)> done) override;

 private:
  Store* store_;
  FunctionPools& pools_;
  const Clock& clock_;
};

}  // namespace nimbus
