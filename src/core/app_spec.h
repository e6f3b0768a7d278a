#pragma once
// What an app is once its manifest has been read and checked: plain values that every part
// configures itself from. The manifest part builds these; nothing else parses YAML.
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/blob_path.h"
#include "core/clock.h"
#include "core/gateway_spec.h"
#include "core/invocation.h"

namespace nimbus {

// The language a function is written in (the manifest's `runtime`): native (C++ against the
// C ABI), python, node, or any command that speaks the worker protocol (`process`).
enum class RuntimeKind : uint8_t { native, python, node, process };
std::string_view to_string(RuntimeKind kind);

// How the host talks to a function's code, the other axis (runtime/registry.h): a call into a
// library in its own process, or frames to worker processes. (An HTTP server on $PORT and the
// Lambda Runtime API are the transports to come.)
enum class Transport : uint8_t { in_process, frames };
std::string_view to_string(Transport transport);

// Where a function's code runs: in the host's address space (native only), in a worker
// process, or in a sandboxed worker process: an unprivileged user in its own
// namespaces, a seccomp filter, a minimal file system, no network (docs/security.md).
enum class Isolation : uint8_t { none, process, sandbox };
std::string_view to_string(Isolation isolation);

enum class AuthLevel : uint8_t { anonymous, function };

// One trigger kind's settings for one function, as its manifest keys said: a type of the
// kind's own, defined in its folder (triggers/<kind>/), read by the kind's key reader.
// What the app's checks ask of every kind: the routes it serves on the public listener (two
// functions may not serve one), the streams it reads (made with defaults when not declared),
// and whether it needs the app's MQTT broker.
struct PublicRoute {
  std::string route;                 // "/orders/{id}"
  std::vector<std::string> methods;  // upper case; empty = any
  AuthLevel auth = AuthLevel::anonymous;
};
struct TriggerSettings {
  virtual ~TriggerSettings() = default;
  virtual std::vector<PublicRoute> public_routes() const { return {}; }
  virtual std::vector<std::string> streams_read() const { return {}; }
  virtual bool uses_mqtt_broker() const { return false; }
  // Folders the trigger keeps data in (file drops): never part of a version's package.
  virtual std::vector<std::filesystem::path> data_folders() const { return {}; }
};

// One trigger of a function: its kind and that kind's settings.
struct TriggerSpec {
  TriggerKind kind;
  std::shared_ptr<const TriggerSettings> settings;

  // The settings as the kind's own type, or null when it is another kind's.
  template <class Settings>
  const Settings* as() const {
    return dynamic_cast<const Settings*>(settings.get());
  }
};

// The broker an app's mqtt triggers and outputs use, through one connection per host.
struct MqttBrokerSpec {
  std::string url;  // as written
  std::string host;
  int port = 1883;
  std::string client_id;  // stable: the broker keeps the session (and unacknowledged messages) under it
  std::string username, password;
  Duration keepalive = std::chrono::seconds(30);
};

// MQTT outputs wait here (committed with the function's other outputs) until the broker has
// acknowledged their publish.
inline constexpr const char* kMqttOutbox = "_mqtt-out";

// A stream the app uses: its partitions (fixed once records exist: keys would move) and
// retention. Streams a function names without declaring them get these defaults.
struct StreamSpec {
  std::string name;
  int partitions = 4;
  Duration retention{};      // drop records older than this; 0 = by age never
  int64_t max_records = 0;   // keep at most this many per partition; 0 = no limit
};

// Where a named output's messages go: a queue, a topic, a state store, a stream, an MQTT
// topic (target: a topic with {name} placeholders filled from the output's metadata) or a blob
// container (each message is a blob, named by metadata "path" or by `blob_name`).
struct OutputSpec {
  enum class Kind : uint8_t { queue, topic, state, stream, mqtt, blob };
  std::string name;
  Kind kind = Kind::queue;
  std::string target;
  int partitions = 1;  // streams: the stream's partition count (from the app's streams)
  std::string blob_name = {};  // blobs: a name template ("{name}.png") filled from the output's metadata or the trigger's captures
};

struct RetryPolicy {
  int max_attempts = 5;  // deliveries in all; after the last failure: <queue>.dead
  bool exponential = true;
  Duration initial = std::chrono::seconds(1);
  Duration max = std::chrono::minutes(5);
  double jitter = 0.2;  // +- this fraction of each delay, at random
  // The delay before delivery number attempt + 1, given a random draw in [0, 1).
  Duration delay_after(int attempt, double random01) const;
  // The same with a random draw of this thread's own: what every retrying trigger uses.
  Duration next_delay(int attempt) const;
};

struct EnvVar {
  std::string name;
  std::string value;
  bool secret = false;  // never logged, never shown by the admin API
};

struct FunctionSpec {
  std::string name;
  RuntimeKind runtime = RuntimeKind::native;
  std::string handler;  // native: source folder[:target] or a .so path
  std::vector<std::string> command;  // runtime process: the worker's argv
  Isolation isolation = Isolation::none;  // worker runtimes: process unless sandbox
  bool network = false;                   // sandbox: may the worker reach the network
  std::vector<TriggerSpec> triggers;
  // The settings of every trigger of one kind's type, in manifest order.
  template <class Settings>
  std::vector<const Settings*> triggers_of() const {
    std::vector<const Settings*> out;
    for (const auto& t : triggers)
      if (const auto* s = t.template as<Settings>()) out.push_back(s);
    return out;
  }
  std::vector<OutputSpec> outputs;
  RetryPolicy retry;
  std::vector<EnvVar> env;
  Duration timeout = std::chrono::seconds(30);
  int concurrency = 64;   // invocations in flight at once
  int wait_queue = 64;    // invocations allowed to wait for a slot; beyond that: 503
  bool blocking = true;   // false: runs inline on the event loop (fast, must not block)
  bool migration = false;  // runs before its version takes traffic (deploy/), never from a trigger
  // Functions in worker processes: instances, and `concurrency` counts per instance.
  int min_instances = 0;
  int max_instances = 4;
  Duration idle_timeout = std::chrono::minutes(5);
  bool in_worker() const { return runtime != RuntimeKind::native || isolation != Isolation::none; }
  Transport transport() const { return in_worker() ? Transport::frames : Transport::in_process; }
  // Limits and environment of each worker process (0 / empty = none).
  std::size_t memory_limit = 0;         // bytes of writable memory (RLIMIT_DATA)
  Duration cpu_limit{};                 // CPU time per instance (RLIMIT_CPU)
  int open_files = 0;                   // RLIMIT_NOFILE
  std::vector<std::string> env_allow;   // host variables passed through by name
  std::string working_dir;              // relative to the app folder
  // isolation: sandbox only.
  int max_processes = 64;               // processes and threads in one sandbox (RLIMIT_NPROC)
  std::vector<std::string> writable;    // folders relative to the app folder it may write
};

// A new Invocation of `function` from a trigger: fresh id, CloudEvents source and type, time
// stamps from `clock`, the function's deadline, and a trace continuing `traceparent` (or new)
// with its `tracestate`.
Invocation new_invocation(const FunctionSpec& function, TriggerKind trigger, std::string source,
                          std::string type, const Clock& clock, std::string_view traceparent = {},
                          std::string_view tracestate = {});

struct HttpSettings {
  std::size_t max_body = 10u << 20;
  std::size_t max_header = 16u << 10;
  Duration read_timeout = std::chrono::seconds(10);  // a request must arrive whole within this
  Duration idle_timeout = std::chrono::seconds(60);  // keep-alive connections with no request
};

struct AppSpec {
  std::string name;
  std::filesystem::path dir;       // the app folder (absolute)
  // Where the app's data lives, shared by all its versions: the folder the host was started
  // from (a deployed version's code is in a folder of its own, `dir`). Empty: `dir`.
  std::filesystem::path home;
  std::filesystem::path manifest;  // the nimbus.yaml it came from
  std::string store = "sqlite:.nimbus/state.db";
  bool fsync = false;  // durability: fsync (survives power loss) instead of process (survives kill -9)
  HttpSettings http;
  Duration shutdown_grace = std::chrono::seconds(10);
  int worker_threads = 16;  // pool for blocking in-process functions
  std::vector<FunctionSpec> functions;
  std::vector<StreamSpec> streams;  // declared ones and those functions name, with defaults
  std::optional<MqttBrokerSpec> mqtt;  // set when the manifest has `mqtt:`
  std::size_t max_blob_size = 256u << 20;  // blobs: {max_size}
  GatewaySpec gateway;  // gateway: {upstreams, routes}
  // deploy: {canary: {...}}: how a deploy of this version moves traffic to it (deploy/): in
  // steps of `steps` percent, each held `interval`, rolled back by itself when its error rate or
  // p99 crosses a bound (judged once `min_requests` reached it in the step).
  struct Canary {
    std::vector<int> steps;  // increasing, the last 100
    Duration interval = std::chrono::minutes(5);
    double max_error_rate = 0.01;
    Duration max_p99 = Duration::zero();  // 0: latency is not judged
    int min_requests = 20;
  };
  std::optional<Canary> canary;
  // deploy: {unload_after}: a version no alias names is unloaded from a host (its pools, worker
  // instances and metrics go) once it has run nothing for this long; it is loaded again from
  // its package when an alias names it or an orchestration instance needs it. Read from the
  // folder the host starts from.
  Duration unload_after = std::chrono::minutes(10);
  // observe: {otlp: {endpoint, headers, sample, protocol, compression, ca}, history: {keep}}: where spans are exported
  // (observe/trace.h; what is unset here comes from the OTEL_EXPORTER_OTLP_* variables) and
  // how many invocations of each function the store's history keeps (observe/history.h).
  struct Observe {
    std::string otlp_endpoint;
    Headers otlp_headers;
    std::optional<double> sample;
    std::string otlp_protocol;     // "http/protobuf" or "http/json"; empty: the variables', else protobuf
    std::string otlp_compression;  // "gzip" or "none"; empty: the variables', else none
    std::string otlp_ca;           // https: a PEM file of the CAs the collector's certificate is checked against
    int history_keep = 1000;  // 0: no history
  } observe;

  const StreamSpec* find_stream(std::string_view stream) const {
    for (const auto& s : streams)
      if (s.name == stream) return &s;
    return nullptr;
  }
  const FunctionSpec* find(std::string_view function) const {
    for (const auto& f : functions)
      if (f.name == function) return &f;
    return nullptr;
  }
};

}  // namespace nimbus
