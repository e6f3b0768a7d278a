// Sleeps ?ms=N milliseconds (or as many as a body of digits says; default 200), then replies
// "slept".
#include <nimbus/function.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <string>
#include <thread>

nimbus::Response sleepy(const nimbus::Request& req, nimbus::Context&) {
  int ms = 200;
  std::string body(req.body());
  if (auto v = req.query_param("ms")) {
    ms = std::stoi(*v);
  } else if (!body.empty() && body.size() < 9 && std::all_of(body.begin(), body.end(), [](unsigned char c) { return std::isdigit(c); })) {
    ms = std::stoi(body);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return nimbus::Response::text(200, "slept");
}
NIMBUS_FUNCTION(sleepy)
