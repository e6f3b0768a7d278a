#pragma once
// Which stream partitions this host reads, when several hosts share a store. Each (group,
// stream, partition) a host's stream trigger consumes is a unit; a lease on it is a state
// entry `_stream_leases/<stream>/<partition>/<group>` holding the host's id, with a time to
// live. Every round (each second) a host:
//   1. learns who is alive: the host registry's records (`_hosts`, host/cluster.h) and itself;
//   2. works out its share: the units in the manifest's order, dealt round-robin over the
//      live hosts sorted by id (every host with the same manifest computes the same deal);
//   3. renews the leases of its share (a write conditional on the ETag it holds), claims the
//      ones of its share that are free (a create-only write: an expired lease is free), and
//      gives back the ones no longer its share once their batch has committed.
// So a host that joins gets its share within a round or two of being seen, a host that stops
// gives its leases back at once, and a host that dies loses them when they expire. A host
// that cannot renew (cut off from the store) stops reading at once. Nothing runs twice in a
// handover: each batch's checkpoint commit is still fenced by the checkpoint it read from.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"

namespace nimbus {

class Logger;
class Store;

inline constexpr const char* kStreamLeasesStore = "_stream_leases";

class PartitionLeases {
 public:
  struct Unit {
    std::string key;  // <stream>/<partition>/<group>
    std::function<void(bool)> set_owned;  // called on changes, on the thread running round()
    std::function<bool()> busy;           // a batch is running (a lease given back waits for it)
  };
  PartitionLeases(Store& store, const Clock& clock, Logger& logger, std::string host_id, std::vector<Unit> units,
                  Duration ttl);

  // One round (see above). Blocks on the store: run it on a thread that may wait.
  void round();
  // Gives back every lease held (a host that stops), waiting for the commits.
  void release_all();
  const std::string& host_id() const { return host_id_; }

 private:
  struct Held {
    std::optional<std::string> etag;  // the lease's ETag while this host holds it
    bool owned = false;
  };
  std::vector<std::string> live_hosts();
  void set_owned(std::size_t i, bool owned);

  Store& store_;
  const Clock& clock_;
  Logger& logger_;
  std::string host_id_;
  std::vector<Unit> units_;
  std::vector<Held> held_;
  Duration ttl_;
};

}  // namespace nimbus
