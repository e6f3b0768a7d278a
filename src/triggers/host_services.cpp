#include "triggers/host_services.h"

#include <boost/json.hpp>
#include <charconv>
#include <cstdlib>
#include <utility>

#include "core/ids.h"
#include "core/text.h"
#include "observe/log.h"
#include "observe/trace.h"

#include "pool/function_pools.h"
#include "store/store.h"
#include "triggers/outputs.h"

namespace nimbus {
namespace {

constexpr std::size_t kMaxListBytes = 16u << 20;  // state.list: keys and values in one reply

std::string arg(const Headers& args, std::string_view name) {
  const std::string* v = find_header(args, name);
  return v ? *v : std::string();
}

bool has(const Headers& args, std::string_view name) { return find_header(args, name) != nullptr; }

ServiceResult from_error(const Error& e) {
  return ServiceResult::failure(e.code == store_error::conflict ? "conflict: " + e.message : e.message);
}

}  // namespace

void HostServices::call(ServiceCall c, std::function<void(ServiceResult)> done) {
  if (tracer_ && trace_sampled(c.traceparent) && span_id_of(c.traceparent) != 0) {
    // The call is a span of its own under the invocation's, and what it causes (a message, an
    // invoked function) carries that span on as its parent.
    const uint64_t span = new_span_id();
    std::string caller = std::exchange(c.traceparent, with_span_id(c.traceparent, span));
    done = [done = std::move(done), tracer = tracer_, clock = &clock_, caller = std::move(caller), span, op = c.op,
            args = c.args, began = clock_.wall(), state = c.tracestate](ServiceResult r) {
      tracer->host_call(caller, state, span, op, args, began, clock->wall(), r.ok, r.error);
      done(std::move(r));
    };
  }
  serve(std::move(c), std::move(done));
}

void HostServices::serve(ServiceCall c, std::function<void(ServiceResult)> done) {
  const std::string& op = c.op;
  if (op == "invoke") {
    std::string name = arg(c.args, "function");
    FunctionPool* pool = pools_.find(name);
    if (!pool) return done(ServiceResult::failure("no function named '" + name + "'"));
    Invocation inv = new_invocation(pool->spec(), TriggerKind::admin, "/functions/" + c.caller, "nimbus.function.invoke",
                                    clock_, c.traceparent, c.tracestate);
    inv.http.emplace();
    inv.http->method = "POST";
    inv.http->path = "/";
    inv.payload = std::move(c.body);
    std::string id = inv.id, trace = inv.traceparent, state = inv.tracestate;
    const FunctionSpec* spec = &pool->spec();
    Store* store = store_;
    // Its log line (and so its span and its history), as a trigger's invocations have.
    auto log = [logger = logger_, clock = &clock_, spec, id, trace, state, parent = span_id_of(c.traceparent),
                started = clock_.now()](const Result& r) {
      if (!logger) return;
      InvocationRecord record{spec->name, TriggerKind::admin, id, trace, r.outcome, r.http ? r.http->status : 0,
                              clock->now() - started, r.error.type, r.error.message, {}, r.version, parent, 1, r.waited,
                              r.cold_start, r.ran};
      record.tracestate = state;
      logger->invocation(record);
    };
    Tracer* tracer = tracer_;
    const Clock* clock = &clock_;
    if (arg(c.args, "mode") == "async") {
      // Its outputs are committed like any caller's, even though nobody waits for it.
      pool->dispatch(std::move(inv), [store, spec, trace, state, log, tracer, clock](Result&& result) {
        log(result);
        commit_outputs_then(store, *spec, std::move(result), trace, state, [](Result&&) {}, tracer, clock);
      });
      ServiceResult r;
      r.fields.push_back({"invocation_id", id});
      return done(std::move(r));
    }
    pool->dispatch(std::move(inv), [done = std::move(done), name, store, spec, trace, state, log, tracer,
                                    clock](Result&& invoked) mutable {
      log(invoked);
      commit_outputs_then(store, *spec, std::move(invoked), trace, state, [done = std::move(done), name](Result&& result) {
      if (result.outcome != Outcome::success) {
        return done(ServiceResult::failure("function '" + name + "' failed: " + std::string(to_string(result.outcome)) +
                                           (result.error.type.empty() ? "" : " (" + result.error.type + ")")));
      }
      ServiceResult r;
      if (result.http) {
        r.body = std::move(result.http->body);
        r.fields.push_back({"status", std::to_string(result.http->status)});
      }
      done(std::move(r));
      }, tracer, clock);
    });
    return;
  }
  if (!store_) return done(ServiceResult::failure("host service '" + op + "' needs a store, and this host has none"));
  if (op == "state.get") {
    // A read: never on the caller's thread (an event loop that reads workers' pipes).
    Store* store = store_;
    store->run_blocking([store, name = arg(c.args, "store"), key = arg(c.args, "key"), done = std::move(done)] {
      auto entry = store->get(name, key);
      if (!entry) return done(from_error(entry.error()));
      ServiceResult r;
      r.fields.push_back({"found", entry->has_value() ? "true" : "false"});
      if (entry->has_value()) {
        r.body = std::move((*entry)->value);
        r.fields.push_back({"etag", (*entry)->etag});
      }
      done(std::move(r));
    });
    return;
  }
  if (op == "state.list") {
    // The keys of a store under a prefix, in key order, with their values: for a function
    // that lists what it keeps (a CRUD API). Body: {"items":[{"key","etag","value"}]} where a
    // value that is not UTF-8 comes as "value_base64" instead.
    const std::string limit_text = arg(c.args, "limit");
    long limit = 100;
    if (!limit_text.empty()) {
      auto [end, ec] = std::from_chars(limit_text.data(), limit_text.data() + limit_text.size(), limit);
      if (ec != std::errc() || end != limit_text.data() + limit_text.size()) limit = -1;
    }
    if (arg(c.args, "store").empty()) return done(ServiceResult::failure("state.list needs 'store'"));
    if (limit < 1 || limit > 1000) {
      return done(ServiceResult::failure("state.list: limit '" + limit_text + "' is not between 1 and 1000"));
    }
    Store* store = store_;
    store->run_blocking([store, name = arg(c.args, "store"), prefix = arg(c.args, "prefix"), limit,
                         done = std::move(done)] {
      auto entries = store->scan(name, prefix, static_cast<int>(limit));
      if (!entries) return done(from_error(entries.error()));
      boost::json::array items;
      items.reserve(entries->size());
      std::size_t bytes = 0;
      for (auto& e : *entries) {
        bytes += e.key.size() + e.value.size();
        if (bytes > kMaxListBytes) {
          return done(ServiceResult::failure("state.list: the values under '" + e.key.substr(0, 64) +
                                             "...' pass 16 MiB in all; ask for fewer (limit) or a narrower prefix"));
        }
        boost::json::object item{{"key", e.key}, {"etag", e.etag}};
        if (valid_utf8(e.value)) item["value"] = e.value;
        else item["value_base64"] = base64(e.value);
        items.push_back(std::move(item));
      }
      ServiceResult r;
      r.fields.push_back({"count", std::to_string(items.size())});
      r.body = boost::json::serialize(boost::json::object{{"items", std::move(items)}});
      done(std::move(r));
    });
    return;
  }
  Batch b;
  if (op == "state.put") {
    Batch::Put p{arg(c.args, "store"), arg(c.args, "key"), std::move(c.body), std::nullopt, 0};
    if (has(c.args, "if_match")) p.if_match = arg(c.args, "if_match");
    if (has(c.args, "ttl_ms")) p.ttl_ms = std::atoll(arg(c.args, "ttl_ms").c_str());
    b.puts.push_back(std::move(p));
  } else if (op == "state.delete") {
    Batch::Delete d{arg(c.args, "store"), arg(c.args, "key"), std::nullopt};
    if (has(c.args, "if_match")) d.if_match = arg(c.args, "if_match");
    b.deletes.push_back(std::move(d));
  } else if (op == "publish" || op == "enqueue") {
    NewMessage m;
    m.payload = std::move(c.body);
    m.type = arg(c.args, "type");
    m.subject = arg(c.args, "subject");
    m.source = "/functions/" + c.caller;
    add_trace_context(m.metadata, c.traceparent, c.tracestate);  // the caller's trace goes on
    if (has(c.args, "delay_ms")) m.delay_ms = std::atoll(arg(c.args, "delay_ms").c_str());
    if (op == "publish") b.publishes.push_back({arg(c.args, "topic"), std::move(m)});
    else b.enqueues.push_back({arg(c.args, "queue"), std::move(m)});
  } else {
    return done(ServiceResult::failure("unknown host service '" + op +
                                       "'; expected state.get, state.put, state.delete, state.list, publish, enqueue or invoke"));
  }
  for (const char* required : {"store", "key"}) {
    if ((op == "state.put" || op == "state.delete") && arg(c.args, required).empty()) {
      return done(ServiceResult::failure(op + " needs '" + required + "'"));
    }
  }
  if ((op == "publish" && arg(c.args, "topic").empty()) || (op == "enqueue" && arg(c.args, "queue").empty())) {
    return done(ServiceResult::failure(op + " needs '" + (op == "publish" ? "topic" : "queue") + "'"));
  }
  store_->commit(std::move(b), [done = std::move(done), op](Expected<BatchResult> r) {
    if (!r) return done(from_error(r.error()));
    ServiceResult out;
    if (op == "state.put") out.fields.push_back({"etag", r->etags.at(0)});
    if (op == "publish") out.fields.push_back({"event_id", r->message_ids.at(0)});
    if (op == "enqueue") out.fields.push_back({"id", r->message_ids.at(0)});
    done(std::move(out));
  });
}

}  // namespace nimbus
