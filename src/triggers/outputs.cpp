#include "triggers/outputs.h"
#include "core/clock.h"
#include "observe/trace.h"
#include "core/ids.h"

#include "core/mqtt_topic.h"

namespace nimbus {

namespace {

Expected<Batch::BlobPut> blob_output(const FunctionSpec& fn, const OutputSpec& spec, OutputMessage&& out,
                                     const Headers* trigger_metadata) {
  Batch::BlobPut p;
  p.container = spec.target;
  const std::string where = "function '" + fn.name + "' wrote to blob output '" + out.binding + "'";
  if (const std::string* path = find_header(out.metadata, "path")) {
    p.name = *path;
  } else {
    auto pattern = parse_blob_pattern(spec.blob_name, nullptr);
    if (!pattern) return Error{where + ", whose name template '" + spec.blob_name + "' does not parse"};
    auto name = fill_blob_pattern(*pattern, [&](const std::string& key) -> const std::string* {
      if (const std::string* v = find_header(out.metadata, key)) return v;
      return trigger_metadata ? find_header(*trigger_metadata, "blob." + key) : nullptr;
    });
    if (!name) {
      return Error{where + ", but its name template '" + spec.blob_name + "' " + name.error().message +
                   "; set metadata \"path\" (the whole name) or the missing value"};
    }
    p.name = std::move(*name);
  }
  if (auto why = check_blob_name(p.name); !why.empty()) return Error{where + ": the name '" + p.name + "' " + why};
  for (auto& h : out.metadata) {
    if (h.name == "content_type" || h.name == "content-type") p.content_type = std::move(h.value);
    else if (h.name != "path") p.metadata.push_back(std::move(h));
  }
  p.data = std::move(out.payload);
  return p;
}

}  // namespace

Status add_outputs(const FunctionSpec& fn, std::vector<OutputMessage> outputs, Batch& batch,
                   const Headers* trigger_metadata, std::string_view traceparent, std::string_view tracestate) {
  Batch add;
  for (auto& out : outputs) {
    const OutputSpec* spec = nullptr;
    for (const auto& o : fn.outputs)
      if (o.name == out.binding) spec = &o;
    // Messages carry the trace; a blob's metadata is the user's own and state has none.
    if (spec && spec->kind != OutputSpec::Kind::blob && spec->kind != OutputSpec::Kind::state) {
      add_trace_context(out.metadata, traceparent, tracestate);
    }
    if (!spec) {
      std::string declared;
      for (const auto& o : fn.outputs) declared += (declared.empty() ? "" : ", ") + o.name;
      return Error{"function '" + fn.name + "' wrote to output '" + out.binding + "', which it does not declare" +
                   (declared.empty() ? std::string("; it declares no outputs") : "; it declares: " + declared)};
    }
    if (spec->kind == OutputSpec::Kind::state) {
      const std::string* key = find_header(out.metadata, "key");
      if (!key || key->empty()) {
        return Error{"function '" + fn.name + "' wrote to state output '" + out.binding +
                     "' without a key; set metadata \"key\""};
      }
      const std::string* ttl = find_header(out.metadata, "ttl_ms");
      add.puts.push_back({spec->target, *key, std::move(out.payload), std::nullopt, ttl ? std::atoll(ttl->c_str()) : 0});
      continue;
    }
    if (spec->kind == OutputSpec::Kind::blob) {
      auto put = blob_output(fn, *spec, std::move(out), trigger_metadata);
      if (!put) return put.error();
      put->traceparent = std::string(traceparent);  // its blob events continue the writer's trace
      put->tracestate = std::string(tracestate);
      add.blob_puts.push_back(std::move(*put));
      continue;
    }
    if (spec->kind == OutputSpec::Kind::stream) {
      // The record's key picks its partition: records with one key stay in order.
      Batch::Append a;
      a.stream = spec->target;
      a.partitions = spec->partitions;
      if (const auto* k = find_header(out.metadata, "key")) a.key = *k;
      a.record.payload = std::move(out.payload);
      a.record.source = "/functions/" + fn.name;
      if (const auto* t = find_header(out.metadata, "type")) a.record.type = *t;
      if (const auto* s = find_header(out.metadata, "subject")) a.record.subject = *s;
      a.record.metadata = std::move(out.metadata);
      add.appends.push_back(std::move(a));
      continue;
    }
    if (spec->kind == OutputSpec::Kind::mqtt) {
      // Into the outbox with the rest of the commit; the MQTT trigger publishes it (QoS 1) and
      // acks it once the broker has acknowledged the publish.
      const std::string* given = find_header(out.metadata, "topic");
      std::string problem, topic;
      if (given && !given->empty()) {
        topic = *given;
        problem = check_topic_name(topic);
        if (!problem.empty()) problem = "metadata \"topic\" '" + topic + "' " + problem;
      } else if (spec->target.empty()) {
        problem = "the output names no topic, and the message has no metadata \"topic\"";
      } else {
        topic = fill_topic_template(spec->target, out.metadata, &problem);
      }
      if (!problem.empty()) {
        return Error{"function '" + fn.name + "' wrote to MQTT output '" + out.binding + "': " + problem};
      }
      NewMessage m;
      m.payload = std::move(out.payload);
      m.source = "/functions/" + fn.name;
      m.subject = topic;
      m.metadata = {{"mqtt.topic", std::move(topic)}};
      if (const auto* tp = find_header(out.metadata, "traceparent")) {
        m.metadata.push_back({"traceparent", *tp});
        if (const auto* ts = find_header(out.metadata, "tracestate")) m.metadata.push_back({"tracestate", *ts});
      }
      add.enqueues.push_back({kMqttOutbox, std::move(m)});
      continue;
    }
    NewMessage m;
    m.payload = std::move(out.payload);
    m.source = "/functions/" + fn.name;
    if (const auto* t = find_header(out.metadata, "type")) m.type = *t;
    if (const auto* s = find_header(out.metadata, "subject")) m.subject = *s;
    if (const auto* d = find_header(out.metadata, "delay_ms")) m.delay_ms = std::atoll(d->c_str());
    m.metadata = std::move(out.metadata);
    if (spec->kind == OutputSpec::Kind::queue) {
      add.enqueues.push_back({spec->target, std::move(m)});
    } else {
      add.publishes.push_back({spec->target, std::move(m)});
    }
  }
  for (auto& p : add.puts) batch.puts.push_back(std::move(p));
  for (auto& e : add.enqueues) batch.enqueues.push_back(std::move(e));
  for (auto& p : add.publishes) batch.publishes.push_back(std::move(p));
  for (auto& a : add.appends) batch.appends.push_back(std::move(a));
  for (auto& p : add.blob_puts) batch.blob_puts.push_back(std::move(p));
  return ok_status();
}

namespace {

// The commit itself, on the calling thread.
void commit_outputs_then_here(Store* store, const FunctionSpec& fn, Result&& result, std::string_view traceparent,
                              std::string_view tracestate, std::function<void(Result&&)> then, Tracer* tracer,
                              const Clock* clock) {
  Batch batch;
  if (auto st = add_outputs(fn, std::move(result.outputs), batch, nullptr, traceparent, tracestate); !st) {
    return then(Result::failure(Outcome::error, "invalid_output", st.error().message));
  }
  result.outputs.clear();
  if (!store) return then(Result::failure(Outcome::error, "no_store", "outputs need a store, and the host has none"));
  auto held = std::make_shared<Result>(std::move(result));
  if (!tracer || !clock || !trace_sampled(traceparent)) tracer = nullptr;
  const WallTime began = tracer ? clock->wall() : WallTime{};
  store->commit(std::move(batch), [held, then = std::move(then), tracer, clock, began,
                                   parent = tracer ? trace_context_of(traceparent) : TraceContext(),
                                   ts = tracer ? std::string(tracestate) : std::string()](Expected<BatchResult> done) {
    if (tracer) tracer->store_commit(parent, ts, began, clock->wall(), "outputs", done.ok());
    if (!done) return then(Result::failure(Outcome::error, "output_commit_failed", done.error().message));
    then(std::move(*held));
  });
}

}  // namespace

void commit_outputs_then(Store* store, const FunctionSpec& fn, Result&& result, std::string_view traceparent,
                         std::string_view tracestate, std::function<void(Result&&)> then, Tracer* tracer,
                         const Clock* clock) {
  if (result.outcome != Outcome::success || result.outputs.empty()) return then(std::move(result));
  if (store && result.outputs.size() > kOutputsBuiltInPlace) {
    // Many outputs: building their batch is work in proportion, and this may be an event loop.
    auto held = std::make_shared<Result>(std::move(result));
    store->run_blocking([store, &fn, held, tp = std::string(traceparent), ts = std::string(tracestate),
                         then = std::move(then), tracer, clock]() mutable {
      commit_outputs_then_here(store, fn, std::move(*held), tp, ts, std::move(then), tracer, clock);
    });
    return;
  }
  commit_outputs_then_here(store, fn, std::move(result), traceparent, tracestate, std::move(then), tracer, clock);
}

}  // namespace nimbus
