#pragma once
// Durable orchestrations (the Durable Task Framework's model): an orchestration instance is
// an id, an input, an append-only history and a status, all in the store, so they run on every
// backend. An orchestrator function is re-run from its history (deterministic replay, done by
// the SDKs) and answers with the actions it takes; the host turns new actions into history and
// messages (activities to run, timers, sub-orchestrations) and commits them, with the ack of
// the events that woke it and the instance record, in one store commit. Activities are
// ordinary functions with an `activity` trigger; their results come back as events.
//
// Where things live:
//   state store _orch            instance id -> the instance record (JSON, below); its ETag
//                                fences every step, so two hosts never both advance one.
//   state store _orch_history    "<id>/<generation>/<page, 8 digits>" -> a JSON array of the
//                                events one step appended (history is paged: one page a step).
//   queue _orch/<orchestrator>   events for its instances: {"instance", "event": {...}}
//   queue _activity/<activity>   calls: the input as payload; metadata durable-instance,
//                                durable-task, durable-reply (the orchestrator's queue)
// docs/durable.md is the user's guide; this file is the shared vocabulary of the host's side.
#include <cstdint>
#include <cstdio>
#include <map>
#include <optional>
#include <string>

#include "core/app_spec.h"

namespace nimbus::durable {

inline constexpr const char* kInstances = "_orch";
inline constexpr const char* kHistory = "_orch_history";
inline std::string orchestrator_queue(const std::string& name) { return "_orch/" + name; }
inline std::string activity_queue(const std::string& name) { return "_activity/" + name; }

// Activity call metadata.
inline constexpr const char* kMetaInstance = "durable-instance";
inline constexpr const char* kMetaTask = "durable-task";
inline constexpr const char* kMetaReply = "durable-reply";

// What a step does when its instance started on another version of the orchestrator's code.
enum class OnMismatch : uint8_t {
  replay,  // run the new code (the default): a replay that differs fails as non-determinism
  fail,    // fail the instance at once, naming both versions
  keep_old,  // run it on the code it started on (a deployed version this host keeps loaded)
};

// `- orchestration: {auth}`: the function is an orchestrator (its name is the orchestration's).
struct OrchestrationTriggerSpec final : TriggerSettings {
  AuthLevel auth = AuthLevel::function;  // of its management routes
  int batch_size = 64;                   // events received at a time
  Duration lease{};                      // of a step's events; 0 = the function's timeout + 30 s
  Duration retention{};                  // a finished instance is purged this long after; 0 = kept
  std::string version;                   // the code's version; "" = a hash of the handler's file
  OnMismatch on_mismatch = OnMismatch::replay;  // versioning.on_mismatch
};

// `- activity: {}`: the function is an activity (called by its name).
struct ActivityTriggerSpec final : TriggerSettings {
  int batch_size = 16;
  Duration lease{};  // of a call; 0 = the function's timeout + 30 s
};

// An instance's runtime status, as Durable Functions names them.
enum class RuntimeStatus : uint8_t { pending, running, completed, failed, terminated, suspended };
const char* to_string(RuntimeStatus s);
std::optional<RuntimeStatus> status_from(std::string_view text);
inline bool finished(RuntimeStatus s) {
  return s == RuntimeStatus::completed || s == RuntimeStatus::failed || s == RuntimeStatus::terminated;
}

// The instance record in _orch.
struct Instance {
  std::string id, name;
  RuntimeStatus status = RuntimeStatus::pending;
  std::string input = "null";   // JSON
  std::string output = "null";  // JSON, once completed
  std::string error;            // once failed
  std::string custom_status = "null";  // JSON
  int64_t created_ms = 0, updated_ms = 0;
  int generation = 0;   // continue-as-new starts the next
  int pages = 0;        // history pages of this generation
  int64_t events = 0;   // history events of this generation
  std::string parent_instance, parent_queue;  // a sub-orchestration's parent
  int64_t parent_task = -1;
  // Entity locks it asked for or holds (JSON, "" = none):
  // {"task": N, "generation": G, "entities": [{"name", "key"}], "held": bool}
  std::string locks;
  std::string version;  // of the orchestrator's code it started on (orchestrator_version)
  std::string app_version;  // the deployed version (deploy/) that code came from; "" = the host's folder
};
std::string encode(const Instance& i);

// The version of `fn`'s code as instances record it: its trigger's `version:` if set, else the
// first 16 hex digits of the SHA-256 of its handler's file (Python, Node; a native handler's
// folder or .so path, a process's command line, are hashed as text). Reads the file: not on an
// event loop.
std::string orchestrator_version(const AppSpec& app, const FunctionSpec& fn);
// Every orchestration's name -> its version.
std::map<std::string, std::string> orchestrator_versions(const AppSpec& app);
std::optional<Instance> decode_instance(const std::string& json);

inline std::string page_key(const std::string& id, int generation, int page) {
  char digits[16];
  std::snprintf(digits, sizeof digits, "%08d", page);
  return id + "/" + std::to_string(generation) + "/" + digits;
}
inline std::string history_prefix(const std::string& id, int generation) {
  return id + "/" + std::to_string(generation) + "/";
}

}  // namespace nimbus::durable
