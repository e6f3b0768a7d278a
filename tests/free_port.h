#pragma once
// A loopback TCP port for a server a test starts.

namespace nimbus::testing {

// A loopback TCP port nothing listens on right now.
int free_port();

}  // namespace nimbus::testing
