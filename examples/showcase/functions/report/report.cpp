// GET /report: behind a function key (auth: function in the manifest).
#include <nimbus/function.h>

nimbus::Response report(const nimbus::Request&, nimbus::Context& ctx) {
  ctx.log.info("report generated");
  return nimbus::Response::json(200, R"({"orders_today":42,"revenue":"1234.50"})");
}

NIMBUS_FUNCTION(report)
