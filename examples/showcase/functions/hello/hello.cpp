#include <nimbus/function.h>

nimbus::Response hello(const nimbus::Request& req, nimbus::Context&) {
  auto name = req.query_param("name").value_or("World");
  return nimbus::Response::text(200, "Hello, " + name + "!");
}

NIMBUS_FUNCTION(hello)
