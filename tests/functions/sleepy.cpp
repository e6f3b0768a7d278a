// Sleeps ?ms=N milliseconds (default 200), then replies "slept".
#include <nimbus/function.h>

#include <chrono>
#include <thread>

nimbus::Response sleepy(const nimbus::Request& req, nimbus::Context&) {
  int ms = 200;
  if (auto v = req.query_param("ms")) ms = std::stoi(*v);
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return nimbus::Response::text(200, "slept");
}
NIMBUS_FUNCTION(sleepy)
