// The durable benchmark's orchestrators in C++ (bench/durable.py, ORCH=native): the "hello
// cities" chain and the fan-out, the same as its Python ones. One source, two libraries.
#include <nimbus/durable.h>

namespace durable = nimbus::durable;
namespace json = boost::json;

durable::Orchestration cities(durable::OrchestrationContext& ctx) {
  const char* names[] = {"Tokyo", "Seattle", "London", "Lima", "Oslo"};
  int64_t said = 0;
  for (const char* city : names) {
    co_await ctx.call_activity("hello", city);
    ++said;
  }
  co_return said;
}

durable::Orchestration fan(durable::OrchestrationContext& ctx) {
  std::vector<durable::Task> calls;
  const int64_t n = ctx.input().to_number<int64_t>();
  for (int64_t i = 0; i < n; ++i) calls.push_back(ctx.call_activity("hello", i));
  json::value results = co_await ctx.when_all(calls);
  co_return static_cast<int64_t>(results.as_array().size());
}

#ifdef NIMBUS_BENCH_FAN
NIMBUS_ORCHESTRATOR(fan)
#else
NIMBUS_ORCHESTRATOR(cities)
#endif
