#include "admin/admin_request.h"

#include <cstdlib>
#include <string>

#include "triggers/http/http_trigger.h"

namespace nimbus {

NewMessage message_from_request(IncomingRequest& request) {
  NewMessage m;
  m.payload = request.take_body();
  if (auto h = request.header("ce-type")) m.type = std::string(*h);
  if (auto h = request.header("ce-subject")) m.subject = std::string(*h);
  if (auto h = request.header("ce-source")) m.source = std::string(*h);
  else m.source = "/admin";
  if (auto h = request.header("ce-id")) m.event_id = std::string(*h);
  if (auto h = request.header("x-delay-ms")) m.delay_ms = std::atoll(std::string(*h).c_str());
  if (auto h = request.header("content-type")) m.metadata.push_back({"content-type", std::string(*h)});
  return m;
}

Batch::Append record_from_request(IncomingRequest& request, const StreamSpec& stream) {
  Batch::Append a;
  a.stream = stream.name;
  a.partitions = stream.partitions;
  if (auto h = request.header("x-key")) a.key = std::string(*h);
  if (auto h = request.header("ce-type")) a.record.type = std::string(*h);
  if (auto h = request.header("ce-subject")) a.record.subject = std::string(*h);
  if (auto h = request.header("ce-id")) a.record.event_id = std::string(*h);
  a.record.source = "/admin";
  if (auto h = request.header("content-type")) a.record.metadata.push_back({"content-type", std::string(*h)});
  a.record.payload = request.take_body();
  return a;
}

std::optional<int64_t> query_int(std::string_view target, std::string_view name) {
  auto q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  auto v = query_param(target.substr(q + 1), name);
  if (!v || v->empty()) return std::nullopt;
  char* end = nullptr;
  long long n = std::strtoll(v->c_str(), &end, 10);
  if (*end != '\0') return std::nullopt;
  return n;
}

}  // namespace nimbus
