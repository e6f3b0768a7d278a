// A library built for ABI version 2 (before tracestate was added at the end of
// nimbus_invocation): a newer host still loads it, and it reads only the fields it knows.
#include <nimbus/abi.h>

extern "C" __attribute__((visibility("default"))) uint32_t nimbus_abi_version(void) { return 2; }
extern "C" __attribute__((visibility("default"))) int nimbus_invoke_v1(const nimbus_invocation* inv,
                                                                      const nimbus_host* host) {
  // Answers with the invocation's traceparent (a version 2 field).
  host->reply(host->ctx, 200, nullptr, 0, inv->traceparent.data, inv->traceparent.size);
  return 0;
}
