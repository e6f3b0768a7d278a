#pragma once
// How the CLI reaches a running host: it reads .nimbus/host.json and .nimbus/admin.token in
// the app folder and calls the admin API over loopback HTTP.
#include <boost/json/object.hpp>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/expected.h"

namespace nimbus {

struct HttpResponse {
  int status = 0;
  std::string content_type;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // names in lower case

  std::string header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (n == name) return v;
    }
    return {};
  }
};

struct RunningHost {
  int pid = 0;
  std::string admin_host;
  int admin_port = 0;
  std::string token;
};

// Finds the host serving the app in `app_dir`; a clear error when none is running.
Expected<RunningHost> find_running_host(const std::filesystem::path& app_dir);

// One HTTP request (blocking, HTTP/1.1, Connection: close).
Expected<HttpResponse> http_request(const std::string& host, int port, const std::string& method,
                                    const std::string& target, const std::string& body,
                                    const std::string& bearer_token,
                                    const std::vector<std::pair<std::string, std::string>>& headers = {});

// A command's failure: "nimbus: MESSAGE" on stderr; returns the exit code, 1.
int fail(const std::string& message);

// One admin call on the running host of the app in `app_dir`: the reply's JSON object, or a
// one-line failure (the host's error message for a status of 300 or more).
Expected<boost::json::object> admin_call(const std::filesystem::path& app_dir, const std::string& method,
                                         const std::string& target, const std::string& body = "",
                                         const std::vector<std::pair<std::string, std::string>>& headers = {});

}  // namespace nimbus
