// POST /echo: the body back, byte for byte, with the caller's content type.
#include <nimbus/function.h>

nimbus::Response echo(const nimbus::Request& req, nimbus::Context&) {
  auto type = req.header("content-type").value_or("application/octet-stream");
  return nimbus::Response::bytes(200, std::string(req.body()), std::string(type));
}

NIMBUS_FUNCTION(echo)
