#pragma once
// What an app is once its manifest has been read and checked: plain values that every part
// configures itself from. The manifest part builds these; nothing else parses YAML.
#include <chrono>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/blob_path.h"
#include "core/clock.h"
#include "core/invocation.h"

namespace nimbus {

enum class RuntimeKind : uint8_t { native, python, node, process };
std::string_view to_string(RuntimeKind kind);

// Where a function's code runs: in the host's address space (native only), in a worker
// process, or in a sandboxed worker process: an unprivileged user in its own
// namespaces, a seccomp filter, a minimal file system, no network (docs/security.md).
enum class Isolation : uint8_t { none, process, sandbox };
std::string_view to_string(Isolation isolation);

enum class AuthLevel : uint8_t { anonymous, function };

struct HttpTriggerSpec {
  std::string route;                 // "/orders/{id}"
  std::vector<std::string> methods;  // upper case; empty = any
  AuthLevel auth = AuthLevel::anonymous;
  // async: the request is queued (durably) and answered 202 with a status URL at once; the
  // function runs from the queue `_async.<function>` with retries, and its reply is kept.
  bool asynchronous = false;
  // upload: a PUT or POST body is stored as a blob in this container, named by the route's
  // last parameter, and answered 201 with the blob's metadata; the function is not invoked.
  std::string upload_container;
};

// Where async HTTP requests wait and their outcomes are kept.
inline std::string async_queue_for(const std::string& function) { return "_async." + function; }
inline constexpr const char* kJobStore = "_jobs";
inline constexpr const char* kJobsPath = "/_nimbus/jobs/";

// A queue (or a topic subscription, which is a queue named <topic>/<subscription>) that
// delivers messages to the function.
struct QueueTriggerSpec {
  std::string name;                                    // the queue, or the topic
  int batch_size = 16;                                 // received at a time (never above free capacity)
  Duration max_wait = std::chrono::seconds(1);         // an idle consumer looks again at least this often
  Duration lease{};                                    // visibility timeout; 0 = the function's timeout + 30 s
  // Topics only: the subscription (default: the function's name) and its filters.
  std::string subscription;
  std::string type, source, subject_prefix;
};

// A schedule: cron (6 fields with seconds, or 5) in an IANA time zone.
struct TimerTriggerSpec {
  std::string schedule;
  std::string time_zone = "UTC";
  bool run_on_startup = false;
};

// Ordered batches from every partition of a stream, for one consumer group.
struct StreamTriggerSpec {
  std::string name;
  std::string group;                            // default: the function's name
  int batch_size = 100;                         // records per invocation, at most
  Duration max_wait = std::chrono::seconds(1);  // an idle partition is looked at again this often
  bool from_latest = false;                     // a new group starts at the end (true) or the start
};

// A folder that legacy systems drop files into; each file whose name matches `pattern` (a
// glob) is one invocation, then moves to processed/ or failed/ under the folder.
struct FileTriggerSpec {
  std::filesystem::path path;  // absolute: relative manifest paths are resolved against the app folder
  std::string pattern = "*";
  std::size_t max_size = 64u << 20;  // larger files fail without running the function
};

// Messages from the app's MQTT broker on topics matching `filter`. Each is committed to the
// queue mqtt_queue_for(function) before the broker hears PUBACK; the function runs from there
// (`queue` of the TriggerSpec: lease and batch size) like a queue trigger.
struct MqttTriggerSpec {
  std::string filter;  // "devices/+/telemetry", "site/#"
  int qos = 1;         // 0 or 1
};
inline std::string mqtt_queue_for(const std::string& function) { return "_mqtt." + function; }
// MQTT outputs wait here (committed with the function's other outputs) until the broker has
// acknowledged their publish.
inline constexpr const char* kMqttOutbox = "_mqtt-out";

// The broker an app's mqtt triggers and outputs use, through one connection per host.
struct MqttBrokerSpec {
  std::string url;  // as written
  std::string host;
  int port = 1883;
  std::string client_id;  // stable: the broker keeps the session (and unacknowledged messages) under it
  std::string username, password;
  Duration keepalive = std::chrono::seconds(30);
};

// Blobs in `container` whose names match `pattern`: one invocation per blob version and event
// asked for, from the queue `_blobs.<function>` (retries and dead letters as any queue).
struct BlobTriggerSpec {
  std::string container;
  std::string pattern;  // the name part, after the container: "{name}.csv"
  unsigned events = kBlobCreated | kBlobUpdated;
  Duration lease{};  // visibility timeout of an event; 0 = the function's timeout + 30 s (the longest of a function's triggers counts)
};
inline std::string blob_queue_for(const std::string& function) { return "_blobs." + function; }

struct TriggerSpec {
  TriggerKind kind = TriggerKind::http;
  HttpTriggerSpec http;
  QueueTriggerSpec queue;  // kind queue or topic
  TimerTriggerSpec timer;
  StreamTriggerSpec stream;
  FileTriggerSpec file;
  MqttTriggerSpec mqtt;
  BlobTriggerSpec blob;
};

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
  std::vector<OutputSpec> outputs;
  RetryPolicy retry;
  std::vector<EnvVar> env;
  Duration timeout = std::chrono::seconds(30);
  int concurrency = 64;   // invocations in flight at once
  int wait_queue = 64;    // invocations allowed to wait for a slot; beyond that: 503
  bool blocking = true;   // false: runs inline on the event loop (fast, must not block)
  // Functions in worker processes: instances, and `concurrency` counts per instance.
  int min_instances = 0;
  int max_instances = 4;
  Duration idle_timeout = std::chrono::minutes(5);
  bool in_worker() const { return runtime != RuntimeKind::native || isolation != Isolation::none; }
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
// stamps from `clock`, the function's deadline, and a trace continuing `traceparent` (or new).
Invocation new_invocation(const FunctionSpec& function, TriggerKind trigger, std::string source,
                          std::string type, const Clock& clock, std::string_view traceparent = {});

struct HttpSettings {
  std::size_t max_body = 10u << 20;
  std::size_t max_header = 16u << 10;
  Duration read_timeout = std::chrono::seconds(10);  // a request must arrive whole within this
  Duration idle_timeout = std::chrono::seconds(60);  // keep-alive connections with no request
};

struct AppSpec {
  std::string name;
  std::filesystem::path dir;       // the app folder (absolute)
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
