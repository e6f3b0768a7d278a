#include "triggers/http/async_jobs.h"

#include <algorithm>
#include <boost/json.hpp>

namespace nimbus {

std::string job_record(const std::string& id, const std::string& function, const char* status, int attempts,
                       int64_t updated_ms, const HttpReply* reply, const std::string& error) {
  boost::json::object o{{"id", id}, {"function", function}, {"status", status}, {"attempts", attempts},
                        {"updated_ms", updated_ms}};
  if (reply) {
    boost::json::object result{{"status", reply->status}};
    if (const std::string* ct = find_header(reply->headers, "content-type")) result["content_type"] = *ct;
    const bool text = std::all_of(reply->body.begin(), reply->body.end(), [](char c) { return c != '\0'; });
    if (text) result["body"] = reply->body;
    result["body_size"] = reply->body.size();
    o["result"] = std::move(result);
  }
  if (!error.empty()) o["error"] = error;
  return boost::json::serialize(o);
}

}  // namespace nimbus
