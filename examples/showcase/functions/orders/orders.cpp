// GET /orders/{id}: a path parameter in, JSON out, a log line tagged with the invocation id.
#include <nimbus/function.h>

#include <cctype>
#include <string>

nimbus::Response orders(const nimbus::Request& req, nimbus::Context& ctx) {
  std::string id(req.param("id").value_or(""));
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') {
      return nimbus::Response::json(400, R"({"error":{"code":"bad_id","message":"order ids are letters, digits and '-'"}})");
    }
  }
  ctx.log.info("looking up order " + id);
  return nimbus::Response::json(200, R"({"id":")" + id + R"(","status":"shipped","invocation":")" +
                                         std::string(ctx.invocation_id()) + "\"}");
}

NIMBUS_FUNCTION(orders)
