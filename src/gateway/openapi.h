#pragma once
// What the public listener serves, described: every route (the functions' triggers and the
// gateway's) as an OpenAPI 3 document (GET /openapi.json) and as the list `nimbus routes`
// prints (GET /admin/routes). Made once per route table, not per request.
#include <string>

#include "core/app_spec.h"

namespace nimbus {

std::string openapi_document(const AppSpec& app, const GatewaySpec& gateway);

// {"routes": [{"host", "path", "methods", "target", "kind", "auth", "rate_limit", "cors", "timeout", "max_body"}]}
std::string routes_json(const AppSpec& app, const GatewaySpec& gateway);

}  // namespace nimbus
