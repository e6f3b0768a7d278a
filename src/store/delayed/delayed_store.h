#pragma once
// Fault injection: a Store that adds a fixed latency to every read and every write of another
// one (`nimbus start --inject-store-latency 200ms`), as a store across a slow network would.
// It proves that no event loop, the timer thread or the writer waits on the store: routes
// that do not use the store answer as fast with it as without. Not for production.
#include <memory>

#include "store/store.h"

namespace nimbus {

// Reads sleep `latency` on the caller's thread (which must be one that may wait: a store I/O
// thread, a trigger's own thread); writes complete `latency` later, in order, on a thread of
// the decorator's own that stands for the slow writer.
std::unique_ptr<Store> with_injected_latency(std::unique_ptr<Store> inner, Duration latency);

}  // namespace nimbus
