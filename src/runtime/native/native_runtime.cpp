#include "runtime/native/native_runtime.h"

#include <dlfcn.h>

#include <array>

#include <future>

#include "core/services.h"
#include "nimbus/abi.h"
#include "observe/log.h"

namespace nimbus {
namespace {

nimbus_str str(std::string_view s) { return {s.data(), s.size()}; }

bool valid_header_name(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c <= 32 || c >= 127 || std::string_view("()<>@,;:\\\"/[]?={}").find(static_cast<char>(c)) != std::string_view::npos) {
      return false;
    }
  }
  return true;
}

bool valid_header_value(std::string_view s) {
  for (unsigned char c : s)
    if ((c < 32 && c != '\t') || c == 127) return false;
  return true;
}

// Lives on the stack for one call; the library reaches it through nimbus_host::ctx.
struct CallState {
  const Invocation* invocation;
  const NativeLog* log;
  Result* result;
  Services* services;
  std::vector<OutputMessage> outputs;
  bool replied = false;
  bool failed = false;
};

void host_log(void* ctx, int level, const char* message, size_t size) {
  auto* s = static_cast<CallState*>(ctx);
  LogLevel l = level <= NIMBUS_LOG_DEBUG  ? LogLevel::debug
               : level == NIMBUS_LOG_INFO ? LogLevel::info
               : level == NIMBUS_LOG_WARN ? LogLevel::warn
                                          : LogLevel::error;
  (*s->log)(l, *s->invocation, std::string_view(message, size));
}

void host_reply(void* ctx, int status, const nimbus_pair* headers, size_t header_count,
                const char* body, size_t body_size) {
  auto* s = static_cast<CallState*>(ctx);
  s->replied = true;
  if (status < 100 || status > 599) {
    s->failed = true;
    *s->result = Result::failure(Outcome::error, "invalid_reply",
                                 "the function replied with HTTP status " + std::to_string(status) +
                                     "; expected 100 to 599");
    return;
  }
  HttpReply reply;
  reply.status = status;
  reply.headers.reserve(header_count);
  for (size_t i = 0; i < header_count; ++i) {
    std::string_view name(headers[i].name.data, headers[i].name.size);
    std::string_view value(headers[i].value.data, headers[i].value.size);
    if (!valid_header_name(name) || !valid_header_value(value)) {
      s->failed = true;
      *s->result = Result::failure(Outcome::error, "invalid_reply",
                                   "the function replied with an invalid header '" +
                                       std::string(name.substr(0, 64)) + "'");
      return;
    }
    reply.headers.push_back({std::string(name), std::string(value)});
  }
  reply.body.assign(body, body_size);
  s->result->outcome = Outcome::success;
  s->result->http = std::move(reply);
}

void host_fail(void* ctx, const char* type, size_t type_size, const char* message,
               size_t message_size) {
  auto* s = static_cast<CallState*>(ctx);
  s->failed = true;
  *s->result = Result::failure(Outcome::error, std::string(type, type_size),
                               std::string(message, message_size));
}

void host_output(void* ctx, const char* binding, size_t binding_size, const char* payload, size_t payload_size,
                 const nimbus_pair* metadata, size_t metadata_count) {
  auto* s = static_cast<CallState*>(ctx);
  OutputMessage out;
  out.binding.assign(binding, binding_size);
  out.payload.assign(payload, payload_size);
  for (size_t i = 0; i < metadata_count; ++i) {
    out.metadata.push_back({std::string(metadata[i].name.data, metadata[i].name.size),
                            std::string(metadata[i].value.data, metadata[i].value.size)});
  }
  s->outputs.push_back(std::move(out));
}

// A host service, answered before returning: the function's thread waits for it.
void host_call(void* ctx, const char* op, size_t op_size, const nimbus_pair* args, size_t arg_count, const char* body,
               size_t body_size, void (*on_result)(void* user, const nimbus_call_result* result), void* user) {
  auto* s = static_cast<CallState*>(ctx);
  ServiceResult answer;
  if (!s->services) {
    answer = ServiceResult::failure("host services are not available to this function");
  } else {
    ServiceCall c;
    c.op.assign(op, op_size);
    for (size_t i = 0; i < arg_count; ++i) {
      c.args.push_back({std::string(args[i].name.data, args[i].name.size), std::string(args[i].value.data, args[i].value.size)});
    }
    c.body.assign(body, body_size);
    c.caller = s->invocation->function;
    c.traceparent = s->invocation->traceparent;
    c.tracestate = s->invocation->tracestate;
    std::promise<ServiceResult> p;
    auto f = p.get_future();
    s->services->call(std::move(c), [&p](ServiceResult r) { p.set_value(std::move(r)); });
    answer = f.get();
  }
  std::vector<nimbus_pair> fields;
  for (const auto& h : answer.fields) fields.push_back({str(h.name), str(h.value)});
  nimbus_call_result r{answer.ok ? 1 : 0, str(answer.error), str(answer.body), fields.data(), fields.size()};
  on_result(user, &r);
}

class NativeFunction final : public Executor {
 public:
  NativeFunction(void* handle, nimbus_invoke_fn entry, NativeLog log, Services* services)
      : handle_(handle), entry_(entry), log_(std::move(log)), services_(services) {}
  // The library stays loaded for the life of the process: unloading code that may still be
  // referenced (thread-locals, atexit handlers) is a crash waiting to happen.
  ~NativeFunction() override { (void)handle_; }

  Mode mode() const override { return Mode::synchronous; }

  Result call(const Invocation& inv) override {
    Result result;
    CallState state{&inv, &log_, &result, services_, {}};
    nimbus_host host{NIMBUS_ABI_VERSION, &state, host_log, host_reply, host_fail, host_output, host_call};

    constexpr size_t kInline = 32;
    std::array<nimbus_pair, kInline> header_buf;
    std::vector<nimbus_pair> header_heap;
    nimbus_pair* headers = header_buf.data();
    const Headers* src = inv.http ? &inv.http->headers : &inv.metadata;
    if (src->size() > kInline) {
      header_heap.resize(src->size());
      headers = header_heap.data();
    }
    for (size_t i = 0; i < src->size(); ++i) headers[i] = {str((*src)[i].name), str((*src)[i].value)};
    std::array<nimbus_pair, 8> param_buf;
    std::vector<nimbus_pair> param_heap;
    nimbus_pair* params = param_buf.data();
    size_t param_count = inv.http ? inv.http->params.size() : 0;
    if (param_count > param_buf.size()) {
      param_heap.resize(param_count);
      params = param_heap.data();
    }
    for (size_t i = 0; i < param_count; ++i) {
      params[i] = {str(inv.http->params[i].name), str(inv.http->params[i].value)};
    }

    int64_t deadline_ms = deadline_unix_ms(inv);
    std::string_view trigger = to_string(inv.trigger);
    nimbus_invocation ci{};
    ci.abi_version = NIMBUS_ABI_VERSION;
    ci.attempt = static_cast<uint32_t>(inv.attempt);
    ci.id = str(inv.id);
    ci.function = str(inv.function);
    ci.trigger = str(trigger);
    if (inv.http) {
      ci.method = str(inv.http->method);
      ci.path = str(inv.http->path);
      ci.query = str(inv.http->query);
    }
    ci.body = str(inv.payload);
    ci.headers = headers;
    ci.header_count = src->size();
    ci.params = params;
    ci.param_count = param_count;
    ci.deadline_unix_ms = deadline_ms;
    ci.traceparent = str(inv.traceparent);
    ci.tracestate = str(inv.tracestate);
    ci.event_id = str(inv.event_id.empty() ? inv.id : inv.event_id);
    ci.event_type = str(inv.type);
    ci.event_source = str(inv.source);
    ci.event_subject = str(inv.subject);
    ci.message_id = str(inv.message_id);
    ci.time_unix_ms = inv.enqueued_ms != 0 ? inv.enqueued_ms
                                           : std::chrono::duration_cast<std::chrono::milliseconds>(inv.time.time_since_epoch()).count();

    int rc = entry_(&ci, &host);
    if (rc != 0 && !state.failed) {
      result = Result::failure(Outcome::error, "error",
                               "the function returned " + std::to_string(rc) + " without a reason");
    } else if (rc == 0 && state.failed && result.outcome == Outcome::success) {
      result.outcome = Outcome::error;
    }
    if (result.outcome == Outcome::success) result.outputs = std::move(state.outputs);
    return result;
  }

 private:
  void* handle_;
  nimbus_invoke_fn entry_;
  NativeLog log_;
  Services* services_;
};

}  // namespace

Expected<std::unique_ptr<Executor>> load_native_function(const FunctionSpec& function,
                                                         const std::filesystem::path& library,
                                                         const Clock&, Logger& logger, Services* services) {
  return load_native_function(
      function, library,
      [&logger](LogLevel level, const Invocation& inv, std::string_view message) {
        logger.user(level, inv.function, inv.id, message);
      },
      services);
}

Expected<std::unique_ptr<Executor>> load_native_function(const FunctionSpec& function,
                                                         const std::filesystem::path& library,
                                                         NativeLog log, Services* services) {
  const std::string where = "function '" + function.name + "': " + library.string();
  std::error_code ec;
  if (!std::filesystem::exists(library, ec)) {
    return Error{where + ": no such file; build the function, or fix its handler"};
  }
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    return Error{where + ": cannot be loaded: " + std::string(why ? why : "unknown dlopen error")};
  }
  auto version = reinterpret_cast<nimbus_abi_version_fn>(dlsym(handle, NIMBUS_VERSION_SYMBOL));
  auto entry = reinterpret_cast<nimbus_invoke_fn>(dlsym(handle, NIMBUS_ENTRY_SYMBOL));
  if (!entry) {
    dlclose(handle);
    return Error{where + ": has no entry point '" NIMBUS_ENTRY_SYMBOL
                         "'; declare the handler with NIMBUS_FUNCTION(handler) from <nimbus/function.h>"};
  }
  if (!version) {
    dlclose(handle);
    return Error{where + ": has no '" NIMBUS_VERSION_SYMBOL
                         "' symbol; rebuild it against this Nimbus's sdk/cpp"};
  }
  if (uint32_t v = version(); v < NIMBUS_ABI_OLDEST || v > NIMBUS_ABI_VERSION) {
    dlclose(handle);
    return Error{where + ": was built for native ABI version " + std::to_string(v) +
                 ", this host speaks version " + std::to_string(NIMBUS_ABI_VERSION) + " (and libraries built for " +
                 std::to_string(NIMBUS_ABI_OLDEST) + " and later); rebuild it against this Nimbus's sdk/cpp"};
  }
  return std::unique_ptr<Executor>(new NativeFunction(handle, entry, std::move(log), services));
}

}  // namespace nimbus
