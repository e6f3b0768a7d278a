#include "runtime/process/frames_transport.h"

#include "core/services.h"
#include "observe/log.h"
#include "runtime/process/worker_process.h"

namespace nimbus {
namespace json = boost::json;

namespace {

std::string str(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// A worker's result frame (decoded typed) as a Result; malformed replies are the worker's
// error, not ours.
Result result_from(const std::string& function, Frame& f) {
  ResultHeader& h = f.result;
  if (h.status == "error") {
    std::string type = h.has_error ? h.error_type : "error";
    std::string message = h.has_error ? h.error_message : "the worker reported an error";
    const std::string& stack = h.error_stack;
    return Result::failure(Outcome::error, type.empty() ? "error" : type, stack.empty() ? message : message + "\n" + stack);
  }
  Result r;
  HttpReply reply;
  reply.status = 200;
  if (h.has_http) {
    if (h.http_status < 100 || h.http_status > 599) {
      return Result::failure(Outcome::error, "invalid_reply",
                             "function '" + function + "' replied with HTTP status " + std::to_string(h.http_status));
    }
    if (h.malformed_headers) {
      return Result::failure(Outcome::error, "invalid_reply", "function '" + function + "' replied with a malformed header");
    }
    reply.status = static_cast<int>(h.http_status);
    reply.headers = std::move(h.headers);
  } else if (f.body.empty()) {
    reply.status = 204;
  }
  reply.body = std::move(f.body);
  r.http = std::move(reply);
  return r;
}

LogLevel level_of(const std::string& level) {
  if (level == "debug") return LogLevel::debug;
  if (level == "warn") return LogLevel::warn;
  if (level == "error") return LogLevel::error;
  return LogLevel::info;
}

}  // namespace

// What the worker's callbacks reach (on its reader thread): never the process itself, whose
// last owner must not be a callback running on that process's own thread.
struct FrameLink {
  FrameLink(const FunctionSpec& spec, Logger& logger, Services* services, InstanceEvents events)
      : spec_(spec), logger_(logger), services_(services), events_(std::move(events)) {}

  void on_frame(Frame&& f) {
    switch (f.type) {
      case FrameType::ready:
        events_.ready();
        break;
      case FrameType::result: {
        std::string id = f.result.id;
        events_.result(id, result_from(spec_.name, f));
        break;
      }
      case FrameType::log:
        logger_.user(level_of(str(f.header, "level")), spec_.name, str(f.header, "id"), str(f.header, "message"));
        break;
      case FrameType::fatal:
        events_.fatal(str(f.header, "message"));
        break;
      case FrameType::host_call:
        if (str(f.header, "op") == "output") {
          // An output of an invocation in flight: its fleet keeps it until the result. No
          // reply, even to a call_id: nobody waits for one, and a worker writing outputs in a
          // loop would not read replies until it returns (a reply per output once filled both
          // pipes, worker and host each waiting for the other).
          OutputMessage out;
          out.payload = std::move(f.body);
          if (auto* args = f.header.if_contains("args"); args && args->is_object()) {
            out.binding = str(args->as_object(), "binding");
            if (auto* md = args->as_object().if_contains("metadata"); md && md->is_object()) {
              for (const auto& [k, v] : md->as_object()) {
                if (v.is_string()) out.metadata.push_back({std::string(k), std::string(v.as_string())});
              }
            }
          }
          events_.output(str(f.header, "id"), std::move(out));
          break;
        }
        host_call(std::move(f));
        break;
      default:
        break;  // heartbeats and anything a later version adds
    }
  }

  // A host service (state, publish, enqueue, invoke): answered whenever it is done, on
  // whatever thread finishes it; the worker matches the answer by call_id.
  void host_call(Frame&& f) {
    json::value call_id = f.header.contains("call_id") ? f.header.at("call_id") : json::value();
    std::shared_ptr<WorkerProcess> process = process_.lock();
    if (!process) return;
    auto answer = [process, call_id](ServiceResult r) {
      json::object fields;
      for (const auto& h : r.fields) fields[h.name] = h.value;
      json::object header{{"call_id", call_id}, {"ok", r.ok}, {"fields", std::move(fields)}};
      if (!r.ok) header["error"] = r.error;
      (void)process->send(FrameType::host_result, header, r.body);
    };
    if (!services_) return answer(ServiceResult::failure("host services are not available to this function"));
    ServiceCall c;
    c.op = str(f.header, "op");
    c.caller = spec_.name;
    if (auto* args = f.header.if_contains("args"); args && args->is_object()) {
      for (const auto& [k, v] : args->as_object()) {
        if (v.is_string()) c.args.push_back({std::string(k), std::string(v.as_string())});
        else if (v.is_int64()) c.args.push_back({std::string(k), std::to_string(v.as_int64())});
      }
    }
    std::tie(c.traceparent, c.tracestate) = events_.trace(str(f.header, "id"));
    c.body = std::move(f.body);
    services_->call(std::move(c), std::move(answer));
  }

  const FunctionSpec& spec_;
  Logger& logger_;
  Services* services_;
  InstanceEvents events_;
  std::weak_ptr<WorkerProcess> process_;
};

class FramesTransport::Connection final : public InstanceConnection {
 public:
  explicit Connection(std::shared_ptr<FrameLink> link) : link_(std::move(link)) {}

  bool send(std::string_view encoded) override { return process_->send_raw(encoded); }
  std::size_t pipeline_capacity() const override { return process_->pipe_capacity(); }
  std::size_t launch_bytes() const override { return launch_bytes_; }
  void shutdown(Duration grace) override {
    (void)process_->send(FrameType::shutdown,
                         {{"grace_ms", std::chrono::duration_cast<std::chrono::milliseconds>(grace).count()}});
  }
  void kill() override { process_->kill(); }
  int pid() const override { return static_cast<int>(process_->pid()); }

  std::shared_ptr<FrameLink> link_;
  std::shared_ptr<WorkerProcess> process_;  // shared with writes in progress outside the fleet's lock
  std::size_t launch_bytes_ = 0;
};

FramesTransport::FramesTransport(const FunctionSpec& function, WorkerLaunch launch, Logger& logger, Services* services,
                                 std::vector<Reactor*> reactors)
    : spec_(function), options_(std::move(launch)), logger_(logger), services_(services), reactors_(std::move(reactors)) {}

std::string FramesTransport::limits_note() const {
  std::string note;
  if (options_.memory_limit > 0) note += " (memory_limit " + std::to_string(options_.memory_limit) + " bytes)";
  if (options_.cpu_seconds > 0) note += " (cpu_limit " + std::to_string(options_.cpu_seconds) + " s)";
  return note;
}

FramesTransport::~FramesTransport() = default;

void FramesTransport::encode(const Invocation& invocation, std::string& out) const { encode_invoke(invocation, out); }

Expected<std::shared_ptr<InstanceConnection>> FramesTransport::launch(uint64_t serial, std::vector<std::string> extra_env,
                                                                       InstanceEvents events) {
  auto link = std::make_shared<FrameLink>(spec_, logger_, services_, std::move(events));
  auto conn = std::make_shared<Connection>(link);
  WorkerSpawn spawn{options_.argv, options_.env, options_.cwd, kDefaultMaxFrame,
                    options_.memory_limit, options_.cpu_seconds, options_.open_files};
  spawn.typed_results = true;
  for (auto& e : extra_env) spawn.env.push_back(std::move(e));
  WorkerCallbacks callbacks{
      [link](Frame&& f) { link->on_frame(std::move(f)); },
      [this, serial](std::string_view line, bool from_stderr) {
        logger_.host(from_stderr ? LogLevel::warn : LogLevel::info, line,
                     {{"function", spec_.name}, {"instance", static_cast<int64_t>(serial)},
                      {"stream", from_stderr ? "stderr" : "stdout"}});
      },
      [link](int code, const std::string& why) { link->events_.exit(code, why); }};
  Reactor* reactor = reactors_.empty() ? nullptr : reactors_[serial % reactors_.size()];
  spawn.sandbox = options_.sandbox;
  auto process = WorkerProcess::spawn(spawn, std::move(callbacks), reactor);
  if (!process) return process.error();
  conn->process_ = std::move(*process);
  link->process_ = conn->process_;
  json::object env;
  for (const auto& e : spec_.env) env[e.name] = e.value;
  std::string init;
  encode_frame(FrameType::init,
               {{"protocol", kWorkerProtocolVersion},
                {"function", spec_.name},
                {"handler", options_.handler},
                {"runtime", options_.runtime},
                {"max_frame", kDefaultMaxFrame},
                {"concurrency", options_.concurrency},
                {"env", std::move(env)}},
               {}, init);
  conn->launch_bytes_ = init.size();
  if (!conn->process_->send_raw(init)) conn->process_->kill();
  return std::shared_ptr<InstanceConnection>(std::move(conn));
}

}  // namespace nimbus
