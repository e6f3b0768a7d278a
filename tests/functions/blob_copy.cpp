// A blob trigger's function: logs each event to the queue output "log" as
// "<event> <version> <blob.name> <payload>", and for a created or updated blob writes its bytes
// upper-cased to the blob output "copy" (the name comes from the binding's template and the
// trigger's captures). A payload starting with "slow" takes 50 ms.
#include <nimbus/function.h>

#include <cctype>
#include <chrono>
#include <string>
#include <thread>

nimbus::Response blob_copy(const nimbus::Request& req, nimbus::Context& ctx) {
  auto meta = [&](const char* key) { return std::string(req.header(key).value_or("")); };
  std::string body(req.body());
  if (body.rfind("slow", 0) == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ctx.output("log", meta("blob.event") + " " + meta("blob.version") + " " + meta("blob.name") + " " + body);
  if (meta("blob.event") != "deleted") {
    for (char& c : body) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    ctx.output("copy", body, {{"content_type", "text/plain"}});
  }
  return nimbus::Response::text(200, "ok");
}
NIMBUS_FUNCTION(blob_copy)
