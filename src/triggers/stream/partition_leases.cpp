#include "triggers/stream/partition_leases.h"

#include <algorithm>
#include <future>

#include "observe/log.h"
#include "store/store.h"
#include "triggers/trigger.h"

namespace nimbus {

PartitionLeases::PartitionLeases(Store& store, const Clock& clock, Logger& logger, std::string host_id,
                                 std::vector<Unit> units, Duration ttl)
    : store_(store), clock_(clock), logger_(logger), host_id_(std::move(host_id)), units_(std::move(units)),
      held_(units_.size()), ttl_(ttl) {}

std::vector<std::string> PartitionLeases::live_hosts() {
  std::vector<std::string> hosts{host_id_};
  // The registry's records expire by themselves: what is there is alive. A read that fails
  // leaves this host alone in its view; its writes then fail too, and it holds nothing.
  if (auto entries = store_.scan(kHostsStateStore, "", 100000)) {
    for (const auto& e : *entries) hosts.push_back(e.key);
  }
  std::sort(hosts.begin(), hosts.end());
  hosts.erase(std::unique(hosts.begin(), hosts.end()), hosts.end());
  return hosts;
}

void PartitionLeases::set_owned(std::size_t i, bool owned) {
  if (held_[i].owned == owned) return;
  held_[i].owned = owned;
  logger_.host(LogLevel::info, owned ? "stream partition taken" : "stream partition given up",
               {{"lease", units_[i].key}, {"host", host_id_}});
  units_[i].set_owned(owned);
}

void PartitionLeases::round() {
  const std::vector<std::string> hosts = live_hosts();
  const std::size_t me = static_cast<std::size_t>(std::find(hosts.begin(), hosts.end(), host_id_) - hosts.begin());
  const int64_t ttl_ms = std::chrono::duration_cast<std::chrono::milliseconds>(ttl_).count();
  // Every write of the round is submitted at once (one group commit), then waited for.
  std::vector<std::future<Expected<BatchResult>>> writes(units_.size());
  std::vector<char> kind(units_.size(), 0);  // 'c' claim, 'r' renew, 'g' give back
  auto submit = [&](std::size_t i, Batch b, char k) {
    auto done = std::make_shared<std::promise<Expected<BatchResult>>>();
    writes[i] = done->get_future();
    kind[i] = k;
    store_.commit(std::move(b), [done](Expected<BatchResult> r) { done->set_value(std::move(r)); });
  };
  for (std::size_t i = 0; i < units_.size(); ++i) {
    const bool mine = i % hosts.size() == me;
    Held& h = held_[i];
    Batch b;
    if (mine || (h.etag && units_[i].busy())) {
      // Claim (create-only: free, or expired) or renew (only if still ours). A batch still
      // running on a unit no longer ours keeps its lease until it has committed.
      b.puts.push_back({kStreamLeasesStore, units_[i].key, host_id_, h.etag ? h.etag : std::string(), ttl_ms});
      submit(i, std::move(b), h.etag ? 'r' : 'c');
      if (!mine) set_owned(i, false);  // no new batch starts here
    } else if (h.etag) {
      b.deletes.push_back({kStreamLeasesStore, units_[i].key, h.etag});
      submit(i, std::move(b), 'g');
      set_owned(i, false);
    }
  }
  for (std::size_t i = 0; i < units_.size(); ++i) {
    if (!kind[i]) continue;
    auto r = writes[i].get();
    Held& h = held_[i];
    const bool mine = i % hosts.size() == me;
    if (kind[i] == 'g') {
      h.etag.reset();
      continue;
    }
    if (r.ok()) {
      h.etag = r->etags.at(0);
      if (mine) set_owned(i, true);
      continue;
    }
    h.etag.reset();
    // A renewal refused: the lease expired and someone else holds it, or the store is out
    // of reach. Either way this host stops reading the partition now.
    set_owned(i, false);
    if (kind[i] == 'r' && r.error().code != store_error::conflict) {
      logger_.host(LogLevel::warn, "stream partition lease could not be renewed",
                   {{"lease", units_[i].key}, {"error", r.error().message}});
    }
  }
}

void PartitionLeases::release_all() {
  std::vector<std::future<Expected<BatchResult>>> writes;
  for (std::size_t i = 0; i < units_.size(); ++i) {
    if (!held_[i].etag) continue;
    Batch b;
    b.deletes.push_back({kStreamLeasesStore, units_[i].key, held_[i].etag});
    auto done = std::make_shared<std::promise<Expected<BatchResult>>>();
    writes.push_back(done->get_future());
    store_.commit(std::move(b), [done](Expected<BatchResult> r) { done->set_value(std::move(r)); });
    held_[i] = Held{};
  }
  for (auto& w : writes) (void)w.get();
}

}  // namespace nimbus
