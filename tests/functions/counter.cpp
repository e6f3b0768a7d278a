// Host services from a native function: GET ?key=K increments counters/K with an optimistic
// concurrency loop (read the ETag, write only if it still matches, else read again) and
// replies with the new count; ?invoke=F replies with what function F answered.
#include <nimbus/function.h>

#include <string>

nimbus::Response counter(const nimbus::Request& req, nimbus::Context& ctx) {
  if (auto target = req.query_param("invoke")) {
    auto r = ctx.invoke(*target, "from counter");
    if (!r.ok) return nimbus::Response::text(502, r.error);
    return nimbus::Response::text(200, r.body);
  }
  std::string key = req.query_param("key").value_or("default");
  for (int attempt = 0; attempt < 100; ++attempt) {
    auto current = ctx.state_get("counters", key);
    long n = current ? std::stol(current->value) : 0;
    auto etag = ctx.state_put("counters", key, std::to_string(n + 1), current ? current->etag : std::string());
    if (etag) return nimbus::Response::text(200, std::to_string(n + 1));
  }
  return nimbus::Response::text(409, "too much contention");
}
NIMBUS_FUNCTION(counter)
