// A library built for another ABI version: loading it must fail naming both versions.
#include <nimbus/abi.h>

extern "C" __attribute__((visibility("default"))) uint32_t nimbus_abi_version(void) { return 99; }
extern "C" __attribute__((visibility("default"))) int nimbus_invoke_v1(const nimbus_invocation*,
                                                                      const nimbus_host*) {
  return 0;
}
