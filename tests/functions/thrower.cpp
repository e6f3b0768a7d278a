// Always throws; the message must reach the log and never the client.
#include <nimbus/function.h>

#include <stdexcept>

nimbus::Response thrower(const nimbus::Request&, nimbus::Context& ctx) {
  ctx.log.warn("about to fail");
  throw std::runtime_error("database password is hunter2");
}
NIMBUS_FUNCTION(thrower)
