#pragma once
// The dashboard (docs/operations.md#dashboard): a page and a small script the admin listener
// serves without the token (they hold no data); the script signs in with the admin token and
// reads /metrics and the /admin/ API.
#include <optional>
#include <string_view>

#include "core/invocation.h"

namespace nimbus {

// GET /dashboard, /dashboard/app.js, /dashboard/style.css; nullopt for any other path.
std::optional<HttpReply> dashboard_asset(std::string_view path);

}  // namespace nimbus
