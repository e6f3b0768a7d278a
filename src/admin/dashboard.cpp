#include "admin/dashboard.h"

#include "admin/dashboard_assets.h"  // generated from src/admin/dashboard/

namespace nimbus {

std::optional<HttpReply> dashboard_asset(std::string_view path) {
  std::string_view type, body;
  if (path == "/dashboard" || path == "/dashboard/") {
    type = "text/html; charset=utf-8";
    body = dashboard::kIndexHtml;
  } else if (path == "/dashboard/app.js") {
    type = "text/javascript; charset=utf-8";
    body = dashboard::kAppJs;
  } else if (path == "/dashboard/style.css") {
    type = "text/css; charset=utf-8";
    body = dashboard::kStyleCss;
  } else {
    return std::nullopt;
  }
  return HttpReply{200,
                   {{"content-type", std::string(type)},
                    {"cache-control", "no-cache"},
                    // Only its own script and style; no framing; the token never leaves in a Referer.
                    {"content-security-policy",
                     "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
                     "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"},
                    {"x-content-type-options", "nosniff"},
                    {"referrer-policy", "no-referrer"}},
                   std::string(body)};
}

}  // namespace nimbus
