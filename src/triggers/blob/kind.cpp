// The blob kind: its keys; its Trigger, which tells the store every blob trigger of the app
// when the host starts (replacing what an earlier run subscribed); and its feed: the
// function's blob event queue, whose events get the blob's bytes at delivery.
#include <yaml-cpp/yaml.h>

#include "manifest/manifest_reader.h"
#include "store/store.h"
#include "triggers/blob/blob_spec.h"
#include "triggers/blob/blob_trigger.h"
#include "triggers/kind.h"

namespace nimbus {
namespace {

std::shared_ptr<const TriggerSettings> read(ManifestReader& r, const YAML::Node& n, const std::string& path,
                                            const FunctionSpec&) {
  std::size_t errors_before = r.diagnostics.size();
  if (!r.check_map(n, path, {"path", "events", "lease"})) return nullptr;
  auto b = std::make_shared<BlobTriggerSpec>();
  if (auto v = n["lease"]) {
    if (auto d = r.duration(v, path + ".lease")) b->lease = *d;
  }
  if (auto v = n["path"]; !v) {
    r.error(n, path + ".path", "is missing; expected the container and a name pattern, e.g. path: \"uploads/{name}.csv\"");
  } else if (auto parsed = r.blob_path(v, path + ".path", "uploads/{name}.csv")) {
    for (const auto& c : parsed->pattern.captures()) {
      for (const char* builtin : {"container", "path", "event", "version", "etag", "size", "content_type", "sha256"}) {
        if (c == builtin) {
          r.error(v, path + ".path", "captures {" + c + "}, which would hide the built-in blob." + c +
                                         "; expected another name (name is allowed: it replaces blob.name)");
        }
      }
    }
    b->container = parsed->container;
    b->pattern = parsed->text;
  }
  if (auto v = n["events"]) {
    std::vector<YAML::Node> items;
    if (v.IsSequence()) {
      for (std::size_t i = 0; i < v.size(); ++i) items.push_back(v[i]);
    } else {
      items.push_back(v);
    }
    b->events = 0;
    for (std::size_t i = 0; i < items.size(); ++i) {
      std::string p = path + ".events" + (v.IsSequence() ? "[" + std::to_string(i) + "]" : "");
      if (auto e = r.choice(items[i], p, {"created", "updated", "deleted"})) {
        b->events |= *e == "created" ? kBlobCreated : *e == "updated" ? kBlobUpdated : kBlobDeleted;
      }
    }
    if (items.empty()) r.error(v, path + ".events", "is empty; expected some of: created, updated, deleted");
  }
  if (r.diagnostics.size() != errors_before) return nullptr;
  return b;
}

// One store serves one app: its blob triggers replace whatever subscriptions it had.
class BlobSubscriptions final : public Trigger {
 public:
  explicit BlobSubscriptions(const TriggerContext& c) : app_(c.app), store_(c.store) {}
  std::string_view kind() const override { return "blob"; }
  Status start() override {
    if (auto st = store_.set_blob_subscriptions_sync(blob_subscriptions(app_)); !st) {
      return Error{"cannot subscribe the blob triggers: " + st.error().message};
    }
    return ok_status();
  }
  void stop_taking_work() override {}
  bool drain(Duration) override { return true; }  // the dispatcher runs the events

 private:
  const AppSpec& app_;
  Store& store_;
};

Expected<std::unique_ptr<Trigger>> make(const TriggerContext& context) {
  return std::unique_ptr<Trigger>(std::make_unique<BlobSubscriptions>(context));
}

class BlobHooks final : public FeedHooks {
 public:
  // The bytes are read now, and the captures fill blob output names later.
  Status prepare(Store& store, const Message&, Invocation& inv, std::shared_ptr<const Headers>& trigger_metadata,
                 int64_t) const override {
    if (auto st = load_blob_payload(store, inv); !st) return Error{st.error().message, "blob_read"};
    trigger_metadata = std::make_shared<const Headers>(inv.metadata);
    return ok_status();
  }
};

std::optional<StoreFeed> feed(const FunctionSpec& fn, const TriggerSpec& trigger) {
  const auto* b = trigger.as<BlobTriggerSpec>();
  if (!b) return std::nullopt;
  static const auto hooks = std::make_shared<const BlobHooks>();
  StoreFeed f;
  f.queue = blob_queue_for(fn.name);  // every blob trigger of a function feeds one queue
  f.lease = b->lease;
  f.hooks = hooks;
  return f;
}

}  // namespace

extern const TriggerTemplate kBlobTemplate;
extern const TriggerKindInfo kBlobKind = {"blob", read, &kBlobTemplate, make, feed};

}  // namespace nimbus
