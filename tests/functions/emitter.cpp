// Writes as many outputs to the binding "out" as its query parameter `n` says (one per
// number, the number as payload), then replies with the count.
#include <nimbus/function.h>

#include <cstdlib>
#include <string>

nimbus::Response emitter(const nimbus::Request& req, nimbus::Context& ctx) {
  long n = std::atol(req.query_param("n").value_or("0").c_str());
  for (long i = 0; i < n; ++i) ctx.output("out", std::to_string(i));
  return nimbus::Response::text(200, std::to_string(n));
}
NIMBUS_FUNCTION(emitter)
