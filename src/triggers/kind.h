#pragma once
// A trigger kind, whole: its name in the manifest, the reader of its keys, what `nimbus new
// --trigger` writes for it, the Trigger the host runs for it, and (for kinds whose work waits
// in the store) the queue its invocations are fed from. Each folder under triggers/ defines
// its kinds in kind.cpp; triggers/kinds.cpp lists them, one line each. Nothing else in
// Nimbus names a kind.
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/app_spec.h"
#include "core/expected.h"
#include "triggers/template.h"
#include "triggers/trigger.h"

namespace YAML {
class Node;
}

namespace nimbus {

class ManifestReader;
class Store;
struct Batch;
struct Message;

// What is special about the messages of one store-fed kind: the dispatcher
// (triggers/dispatch) leases, invokes and completes every kind's messages the same way, and
// calls these at the two points where kinds differ.
class FeedHooks {
 public:
  virtual ~FeedHooks() = default;
  // Before the function runs, from the message: fill what the kind adds to the invocation
  // (a blob's bytes, the queued HTTP request). `trigger_metadata` may be set to what output
  // names are filled from. An error fails this delivery (retried, then dead-lettered). The
  // message's payload and metadata have moved into the invocation already.
  virtual Status prepare(Store& store, const Message& message, Invocation& invocation,
                         std::shared_ptr<const Headers>& trigger_metadata, int64_t now_ms) const;
  // Added to the one commit that completes a delivery (ack and outputs, or retry, or dead
  // letter): `outcome` is the delivery's (an invalid output makes a success an error), `last`
  // when a failure was the last attempt.
  virtual void complete(Batch& batch, const std::string& message_id, int attempt, Outcome outcome, bool last,
                        const Result& result, const std::string& error_type, int64_t now_ms) const;
};

// Where one trigger's invocations wait in the store, and how they are taken.
struct StoreFeed {
  std::string queue;
  int batch_size = 16;                          // received at a time (never above free capacity)
  Duration max_wait = std::chrono::seconds(1);  // an idle consumer looks again at least this often
  Duration lease{};                             // 0 = the function's timeout + 30 s
  std::string default_type = "nimbus.queue.message";  // CloudEvents type when the message has none
  std::shared_ptr<const FeedHooks> hooks;       // null: a plain queue
  bool hand_off = false;                        // LeasedFeed::Options::hand_off
  // Done once before the first receive (a topic's subscription); may be empty.
  std::function<Status(Store&)> setup;
};

struct TriggerKindInfo {
  std::string_view name;  // the key under `triggers:`: http, queue, ...
  // Reads `- <name>: {...}` of function `fn` at key path `path`: the settings, or null after
  // every problem was reported through `keys` (FILE:LINE:COL and a did-you-mean, as for the
  // rest of the manifest).
  std::shared_ptr<const TriggerSettings> (*read)(ManifestReader& keys, const YAML::Node& node,
                                                 const std::string& path, const FunctionSpec& fn) = nullptr;
  const TriggerTemplate* scaffold = nullptr;  // `nimbus new NAME --trigger <name>`
  // The Trigger the host runs for this kind (built even when no function uses it, when it has
  // to clear what an earlier run left); null when all of its work comes from the store.
  Expected<std::unique_ptr<Trigger>> (*make)(const TriggerContext& context) = nullptr;
  // Store-fed kinds: the queue one trigger of function `fn` is fed from. Triggers of one
  // function fed from one queue share a consumer (the longest lease counts).
  std::optional<StoreFeed> (*feed)(const FunctionSpec& fn, const TriggerSpec& trigger) = nullptr;
};

// Every kind, in the order their Triggers start (and stop taking work).
const std::vector<const TriggerKindInfo*>& trigger_kinds();
const TriggerKindInfo* find_trigger_kind(std::string_view name);
const TriggerKindInfo* find_trigger_kind(TriggerKind kind);

// Settings of a kind's own type, made for one trigger: what every kind's reader returns.
template <class Settings>
TriggerSpec make_trigger(std::string_view kind, Settings settings) {
  return TriggerSpec{TriggerKind::named(kind), std::make_shared<const Settings>(std::move(settings))};
}

}  // namespace nimbus
