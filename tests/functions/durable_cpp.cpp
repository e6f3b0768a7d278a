// A C++ orchestrator and entity (sdk/cpp/nimbus/durable.h) for tests/durable_it_test.cpp:
// chaining, fan-out, a retry policy, an entity call, a timer, custom status, a new guid, a
// sub-orchestration (itself, as a child) and continue-as-new.
#include <nimbus/durable.h>

namespace durable = nimbus::durable;
namespace json = boost::json;

durable::Orchestration cppchain(durable::OrchestrationContext& ctx) {
  if (ctx.input().is_object()) {  // the other shapes: a child's run, and a first round
    const json::object& in = ctx.input().as_object();
    if (const json::value* child = in.if_contains("child")) {
      json::value hello = co_await ctx.call_activity("say_hello", *child);
      co_return hello;
    }
    // A round that waits, then hands over to a fresh history (the monitor's shape).
    co_await ctx.create_timer(ctx.current_time_ms() + 20);
    ctx.continue_as_new(in.at("then"));
  }
  json::array hellos;
  for (const auto& city : ctx.input().as_array()) hellos.push_back(co_await ctx.call_activity("say_hello", city));
  ctx.log("said hello to every city");
  std::vector<durable::Task> doubles;
  for (int i = 1; i <= 10; ++i) doubles.push_back(ctx.call_activity("double", i));
  int64_t sum = 0;
  json::value doubled = co_await ctx.when_all(doubles);
  for (const auto& d : doubled.as_array()) sum += d.to_number<int64_t>();
  ctx.set_custom_status("fanned out");
  std::string failure;
  try {
    durable::RetryPolicy policy;
    policy.max_attempts = 2;
    policy.first_interval_ms = 20;
    co_await ctx.call_activity("flaky", "x", policy);
  } catch (const durable::ActivityFailed& e) {
    failure = e.what();
  }
  json::object child_input;
  child_input["child"] = "Oslo";
  json::value child = co_await ctx.call_sub_orchestration("cppchain", child_input);
  ctx.signal_entity("cppcounter", "k", "add", 5);
  json::value counted = co_await ctx.call_entity("cppcounter", "k", "add", 2);
  co_await ctx.create_timer(ctx.current_time_ms() + 50);
  std::vector<durable::Task> either;
  either.push_back(ctx.wait_for_external_event("go"));
  either.push_back(ctx.create_timer(ctx.current_time_ms() + 3600000));
  json::value first = co_await ctx.when_any(either);
  json::object out;
  out["hellos"] = hellos;
  out["sum"] = sum;
  out["failure"] = failure;
  out["counted"] = counted;
  out["go"] = first.as_int64() == 0 ? "event" : "timeout";
  out["guid"] = ctx.new_guid();
  out["child"] = child;
  co_return out;
}

json::value cppcounter(durable::EntityContext& ctx) {
  int64_t value = ctx.state(0).to_number<int64_t>();
  if (ctx.operation() == "add") {
    value += ctx.input().to_number<int64_t>();
    ctx.set_state(value);
  } else if (ctx.operation() == "boom") {
    ctx.set_state(-1);
    throw std::runtime_error("no such operation");
  }
  return value;
}

#ifdef NIMBUS_TEST_ENTITY
NIMBUS_ENTITY(cppcounter)
#else
NIMBUS_ORCHESTRATOR(cppchain)
#endif
