#include "host/cluster.h"

#include <boost/json.hpp>
#include <condition_variable>
#include <fstream>
#include <iterator>
#include <map>
#include <set>

#include "core/blob_path.h"
#include "observe/log.h"
#include "store/store.h"
#include "triggers/stream/partition_leases.h"

namespace nimbus {
namespace json = boost::json;

namespace {
constexpr const char* kHostsStore = kHostsStateStore;
}  // namespace

struct HostRegistry::Shared {
  std::mutex mu;
  std::condition_variable idle;
  bool running = false;
  int in_flight = 0;  // callbacks using the registry now: stop() waits for them
  TimerQueue::Id timer = 0;
  std::set<std::string> told;  // hosts whose different manifest was logged already
  json::array differing;       // {id, manifest_sha256} of hosts whose manifest differs
};

namespace {

// A callback's hold on the registry: taken only while it runs (running, alive); stop() waits
// until none is held.
class Hold {
 public:
  explicit Hold(const std::weak_ptr<HostRegistry::Shared>& weak) : shared_(weak.lock()) {
    if (!shared_) return;
    std::lock_guard lock(shared_->mu);
    if (!shared_->running) {
      shared_.reset();
      return;
    }
    ++shared_->in_flight;
  }
  ~Hold() {
    if (!shared_) return;
    std::lock_guard lock(shared_->mu);
    if (--shared_->in_flight == 0) shared_->idle.notify_all();
  }
  Hold(const Hold&) = delete;
  Hold& operator=(const Hold&) = delete;
  explicit operator bool() const { return shared_ != nullptr; }

 private:
  std::shared_ptr<HostRegistry::Shared> shared_;
};

}  // namespace

std::string file_sha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  return sha256_hex(bytes);
}

HostRegistry::HostRegistry(Store& store, const Clock& clock, Timers timers, Logger& logger, Self self, Duration interval)
    : store_(store),
      clock_(clock),
      timers_(timers),
      logger_(logger),
      self_(std::move(self)),
      interval_(interval),
      started_(clock.now()),
      shared_(std::make_shared<Shared>()) {}

HostRegistry::~HostRegistry() { stop(); }

void HostRegistry::start() {
  {
    std::lock_guard lock(shared_->mu);
    shared_->running = true;
  }
  beat();
}

void HostRegistry::beat() {
  const auto [running, waiting] = self_.load ? self_.load() : std::pair<int, int>{0, 0};
  json::object record{{"id", self_.id},
                      {"http", self_.http ? self_.http() : std::string()},
                      {"admin", self_.admin ? self_.admin() : std::string()},
                      {"manifest_sha256", self_.manifest_sha256},
                      {"started_ms", unix_ms(clock_) - std::chrono::duration_cast<std::chrono::milliseconds>(
                                                           clock_.now() - started_).count()},
                      {"heartbeat_ms", unix_ms(clock_)},
                      {"running", running},
                      {"waiting", waiting}};
  Batch b;
  const auto ttl = std::chrono::duration_cast<std::chrono::milliseconds>(interval_ * 3).count();
  b.puts.push_back({kHostsStore, self_.id, json::serialize(record), std::nullopt, ttl});
  std::weak_ptr<Shared> weak = shared_;
  store_.commit(std::move(b), [this, weak](Expected<BatchResult> r) {
    if (!r) return;  // the store says why in its health; the next beat tries again
    Hold hold(weak);
    if (!hold) return;
    store_.run_blocking([this, weak] {
      Hold inner(weak);
      if (inner) compare_with_others();
    });
  });
  std::lock_guard lock(shared_->mu);
  if (!shared_->running) return;
  shared_->timer = timers_.at(clock_.now() + interval_, [this, weak] {
    Hold hold(weak);
    if (hold) beat();
  });
}

void HostRegistry::compare_with_others() {
  auto hosts = store_.scan(kHostsStore, "", 1000);
  if (!hosts) return;
  json::array differing;
  std::vector<std::pair<std::string, std::string>> news;
  for (const auto& entry : *hosts) {
    boost::system::error_code ec;
    json::value v = json::parse(entry.value, ec);
    if (ec || !v.is_object()) continue;
    const auto& o = v.as_object();
    const auto* sha = o.if_contains("manifest_sha256");
    if (entry.key == self_.id || !sha || !sha->is_string() || sha->as_string() == self_.manifest_sha256) continue;
    differing.push_back(json::object{{"id", entry.key}, {"manifest_sha256", sha->as_string()}});
    news.emplace_back(entry.key, std::string(sha->as_string()));
  }
  std::vector<std::pair<std::string, std::string>> to_log;
  {
    std::lock_guard lock(shared_->mu);
    shared_->differing = std::move(differing);
    for (auto& n : news) {
      if (shared_->told.insert(n.first).second) to_log.push_back(n);
    }
  }
  for (const auto& [id, sha] : to_log) {
    logger_.host(LogLevel::warn, "another host on this store runs a different manifest",
                 {{"host", id}, {"its_manifest_sha256", sha}, {"this_manifest_sha256", self_.manifest_sha256}});
  }
}

void HostRegistry::stop() {
  {
    std::unique_lock lock(shared_->mu);
    if (!shared_->running) return;
    shared_->running = false;
    if (shared_->timer != 0) timers_.cancel(shared_->timer);
    // A beat under way finishes first, so its record cannot land after the delete below.
    shared_->idle.wait(lock, [&] { return shared_->in_flight == 0; });
  }
  Batch b;
  b.deletes.push_back({kHostsStore, self_.id, std::nullopt});
  (void)store_.commit_sync(std::move(b));  // a clean leave; a crash leaves it to its TTL
}

AdminView HostRegistry::view() {
  return AdminView{"/admin/cluster", [this] {
                     json::array hosts;
                     auto entries = store_.scan(kHostsStore, "", 1000);
                     // The stream partitions each host holds a lease on (triggers/stream/partition_leases.h).
                     std::map<std::string, json::array> held;
                     if (auto leases = store_.scan(kStreamLeasesStore, "", 100000)) {
                       for (const auto& l : *leases) held[l.value].push_back(json::string(l.key));
                     }
                     if (entries) {
                       for (const auto& entry : *entries) {
                         boost::system::error_code ec;
                         json::value v = json::parse(entry.value, ec);
                         if (ec || !v.is_object()) continue;
                         v.as_object()["self"] = entry.key == self_.id;
                         v.as_object()["same_manifest"] =
                             v.as_object()["manifest_sha256"] == json::value(self_.manifest_sha256);
                         v.as_object()["partitions"] = std::move(held[entry.key]);
                         hosts.push_back(std::move(v));
                       }
                     }
                     json::object out{{"hosts", std::move(hosts)}};
                     if (!entries) out["error"] = entries.error().message;
                     return json::serialize(out);
                   }};
}

StatusField HostRegistry::status_field() {
  return StatusField{"manifest_differs_on", [shared = shared_] {
                       std::lock_guard lock(shared->mu);
                       return json::serialize(shared->differing);
                     }};
}

}  // namespace nimbus
