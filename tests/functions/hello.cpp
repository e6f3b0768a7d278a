// Replies "Hello, World!" (13 bytes): the benchmark's function and the simplest test.
#include <nimbus/function.h>

nimbus::Response hello(const nimbus::Request&, nimbus::Context&) {
  return nimbus::Response::text(200, "Hello, World!");
}
NIMBUS_FUNCTION(hello)
