#pragma once
// A blocking HTTP(S) GET for the gateway's own needs (a JWKS from an identity provider): on an
// I/O thread or at start, never on an event loop. https:// verifies the server's certificate
// and name against `ca_file`, or the system's CAs when it is empty. No Asio in this header.
#include <string>

#include "core/clock.h"
#include "core/expected.h"

namespace nimbus {

// The body of a 200 reply to GET `url`; an error naming the URL and what went wrong
// (unreachable, a TLS failure, another status, over `max_bytes`, no reply within `timeout`).
Expected<std::string> fetch_url(const std::string& url, const std::string& ca_file, Duration timeout, std::size_t max_bytes);

}  // namespace nimbus
