// A pipeline stage: passes its payload on to the output named "next" (with a "seen" mark and
// the delivery it took), replies with the message's id; a payload containing "poison" fails
// every time, "flaky" fails on the first delivery only.
#include <nimbus/function.h>

#include <stdexcept>
#include <string>

nimbus::Response relay(const nimbus::Request& req, nimbus::Context& ctx) {
  std::string body(req.body());
  if (body.find("poison") != std::string::npos) throw std::runtime_error("cannot digest " + body);
  if (body.find("flaky") != std::string::npos && ctx.attempt() == 1) throw std::runtime_error("first try fails");
  ctx.output("next", body + "|" + std::string(ctx.function_name()),
             {{"type", "relayed"}, {"subject", std::string(req.event_subject())}, {"attempt", std::to_string(ctx.attempt())}});
  return nimbus::Response::text(200, std::string(req.message_id()));
}
NIMBUS_FUNCTION(relay)
