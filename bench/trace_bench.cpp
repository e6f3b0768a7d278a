// The tracer's own work per span, without the network (issue 18): what an invocation's spans
// cost the thread that records them (filled, encoded as OTLP protobuf, queued) and what
// encoding a batch costs. The export's collector here is a closed port, so the queue fills
// and later spans are dropped after being encoded: the recording thread's cost is the same.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include "core/clock.h"
#include "core/ids.h"
#include "observe/log.h"
#include "observe/trace.h"

namespace nimbus {
namespace {

struct Fixture {
  SystemClock clock;
  int devnull = ::open("/dev/null", O_WRONLY);
  LogSink sink{devnull};
  Logger logger{sink, clock, "bench"};
  Tracer tracer{[] {
                  TraceSettings s;
                  s.endpoint = "http://127.0.0.1:9/v1/traces";  // discard: nothing answers
                  s.sample = 1.0;
                  return s;
                }(),
                "bench", "", logger};
};

// A queue message's invocation: the queue wait, the execution, and the invocation's own span.
void BM_TraceQueueInvocation(benchmark::State& state) {
  Fixture f;
  const std::string tp = continue_trace("");
  const std::string id = new_invocation_id();
  InvocationRecord r{};
  r.function = "worker";
  r.trigger = TriggerKind::named("queue");
  r.invocation_id = id;
  r.traceparent = tp;
  r.outcome = Outcome::success;
  r.duration = std::chrono::microseconds(40);
  r.parent_span = 0x1234567890abcdefULL;
  r.ran = std::chrono::microseconds(30);
  r.queued = std::chrono::milliseconds(2);
  const WallTime now = std::chrono::system_clock::now();
  for (auto _ : state) f.tracer.invocation(r, now);
  state.SetItemsProcessed(state.iterations() * 3);  // spans
}
BENCHMARK(BM_TraceQueueInvocation);

// The commit that acked a message (its invocation's traceparent read, as each commit does).
void BM_TraceStoreCommit(benchmark::State& state) {
  Fixture f;
  const std::string tp = continue_trace("");
  const WallTime now = std::chrono::system_clock::now();
  for (auto _ : state) f.tracer.store_commit(trace_context_of(tp), "", now, now, "ack", true);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_TraceStoreCommit);

// A batch of 512 invocation spans as one OTLP protobuf request.
void BM_OtlpProtobufBatch(benchmark::State& state) {
  std::vector<Span> spans(512);
  for (auto& s : spans) {
    const std::string tp = continue_trace("");
    s.trace_id = std::string_view(tp).substr(3, 32);
    s.span_id = span_id_of(tp);
    s.parent_span_id = 0x1234567890abcdefULL;
    s.name = "worker";
    s.kind = SpanKind::consumer;
    s.start_unix_ns = 1'800'000'000'000'000'000;
    s.end_unix_ns = s.start_unix_ns + 40'000;
    s.attributes = {{"faas.name", std::string("worker")},
                    {"faas.trigger", std::string("pubsub")},
                    {"faas.invocation_id", new_invocation_id()},
                    {"nimbus.trigger", std::string("queue")},
                    {"nimbus.outcome", std::string("success")},
                    {"messaging.operation.type", std::string("process")}};
  }
  for (auto _ : state) benchmark::DoNotOptimize(Tracer::otlp_protobuf(spans, "bench", ""));
  state.SetItemsProcessed(state.iterations() * 512);
}
BENCHMARK(BM_OtlpProtobufBatch);

}  // namespace
}  // namespace nimbus

BENCHMARK_MAIN();
