#pragma once
// Durable entities: keyed objects with operations, processed one batch of operations at a time
// per key, on every store. For every function with an `entity` trigger, a consumer of its
// queue (_entity/<name>) groups what it leases by key, runs a step per key (one at a time per
// key on this host; the state's ETag fences steps of two hosts) and commits, in one store
// commit, the acks, the new state and the replies to the orchestrations that called.
//
// A step invokes the entity function with
//   {"name", "key", "state", "exists", "operations": [{"op", "input"}, ...]}
// and takes back {"state", "exists", "results": [{"result": R} | {"error": {...}}, ...]}, one
// result per operation in order (the SDKs' @durable.entity / durable.entity do this).
//
// Routes on the public listener (behind the function's keys unless `auth: anonymous`):
//   POST /_nimbus/entities/<name>/<key>/<op>   signal (one way; body: the input) -> 202
//   GET  /_nimbus/entities/<name>/<key>        its state -> 200, or 404 when it has none
// Orchestrations signal (`signal_entity`) and call (`call_entity`, the result comes back as
// an event like an activity's) them; see orchestrations.cpp.
#include <memory>
#include <string>

#include "core/expected.h"
#include "triggers/trigger.h"

namespace nimbus::durable {

inline constexpr const char* kEntities = "_entities";  // state store: "<name>/<key>" -> the document
inline std::string entity_queue(const std::string& name) { return "_entity/" + name; }
inline std::string entity_state_key(const std::string& name, const std::string& key) { return name + "/" + key; }

// `- entity: {auth, batch_size, lease}`: the function is an entity (its name is the entity's).
struct EntityTriggerSpec final : TriggerSettings {
  AuthLevel auth = AuthLevel::function;  // of its routes
  int batch_size = 64;                   // operations received at a time
  Duration lease{};                      // 0 = the function's timeout + 30 s
};

Expected<std::unique_ptr<Trigger>> make_entity_trigger(const TriggerContext& context);

// An entity key: 1 to 200 characters of letters, digits and - _ . : @ (it is a URL segment).
bool valid_entity_key(const std::string& key);

// A critical section's lock request, named apart from the instance's other requests: the
// instance, when it was created (an id purged and started again is another instance), its
// generation and the task that asked. An entity holds the token; a release must name it (a late
// grant of an abandoned request cannot release a newer one's locks), while the holder's
// ordinary operations are known by the instance alone.
inline std::string lock_token(const std::string& instance, int64_t created_ms, int64_t generation, int64_t task) {
  return instance + "#" + std::to_string(created_ms) + "." + std::to_string(generation) + "." + std::to_string(task);
}
// The instance a token (or, in documents from before tokens, a bare instance id) names.
inline std::string lock_holder(const std::string& token) {
  const auto hash = token.rfind('#');
  return hash == std::string::npos ? token : token.substr(0, hash);
}

}  // namespace nimbus::durable
