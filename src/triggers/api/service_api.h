#pragma once
// The host services over loopback HTTP, for worker programs that would rather make an HTTP
// request than speak host_call frames. Every worker instance gets its own token in its
// environment (NIMBUS_API=http://127.0.0.1:PORT, NIMBUS_API_TOKEN=...), revoked when the
// instance ends; the token says which function is calling.
//
//   POST $NIMBUS_API/v1/OP?ARG=VALUE&...     Authorization: Bearer $NIMBUS_API_TOKEN
//     OP: state.get, state.put, state.delete, state.list, publish, enqueue, invoke (core/services.h)
//     body: the call's bytes (a value, a payload)
//   200: body = the result's bytes, each result field as an x-nimbus-FIELD header
//   409: an ETag or create-only condition failed; 401: no or unknown token; 400: the rest
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/expected.h"
#include "core/services.h"
#include "triggers/http/server.h"

namespace nimbus {

class ServiceApi final : private RequestHandler {
 public:
  ServiceApi(Services& services, EventLoops& loops, const HttpSettings& limits);
  ~ServiceApi() override;
  // Listens on loopback (port 0 = any); returns the base URL.
  Expected<std::string> start(const std::string& address = "127.0.0.1", int port = 0);
  std::string issue(const std::string& function);  // a new token for one instance
  void revoke(const std::string& token);
  void stop_accepting();
  void close();

 private:
  void handle(IncomingRequest& request, Responder respond) override;

  Services& services_;
  EventLoops& loops_;
  HttpSettings limits_;
  std::unique_ptr<HttpServer> server_;
  std::mutex mu_;
  std::map<std::string, std::string> tokens_;  // token -> function
};

}  // namespace nimbus
