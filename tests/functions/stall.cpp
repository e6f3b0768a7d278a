// Passes its payload on to the output "next" (subject: the event's); a payload starting with
// "stall" first sleeps a minute on its first delivery, so that a test can kill the host while
// it runs, and passes on its later deliveries at once.
#include <nimbus/function.h>

#include <chrono>
#include <string>
#include <thread>

nimbus::Response stall(const nimbus::Request& req, nimbus::Context& ctx) {
  std::string body(req.body());
  if (body.rfind("stall", 0) == 0 && ctx.attempt() == 1) std::this_thread::sleep_for(std::chrono::minutes(1));
  ctx.output("next", body + "|attempt " + std::to_string(ctx.attempt()), {{"subject", std::string(req.event_subject())}});
  return nimbus::Response::text(200, "passed on");
}
NIMBUS_FUNCTION(stall)
