// Logs, then ends its process with abort() when ?crash=1; otherwise replies
// with its process id, so a test can tell the host's address space from a worker's.
#include <nimbus/function.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

nimbus::Response crasher(const nimbus::Request& req, nimbus::Context& ctx) {
  if (req.query_param("crash")) {
    ctx.log.error("going down");
    std::abort();
  }
  ctx.log.info("serving from pid " + std::to_string(::getpid()));
  return nimbus::Response::text(200, std::to_string(::getpid()));
}
NIMBUS_FUNCTION(crasher)
