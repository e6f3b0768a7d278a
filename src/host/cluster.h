#pragma once
// The host registry: every host on one store writes a record of itself (its id, addresses,
// load, when it started, the hash of its manifest) to the state store `_hosts` every
// `interval`, with a time to live of three intervals, so a host that dies drops out by itself
// and one that stops removes its record. From the records each host learns who else runs the
// app, and says so in its log when another's manifest differs from its own.
// `GET /admin/cluster` (and `nimbus status`) lists them.
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/clock.h"
#include "triggers/trigger.h"

namespace nimbus {

class Logger;
class Store;

class HostRegistry {
 public:
  struct Self {
    std::string id;               // unique per host process
    std::string manifest_sha256;  // of the manifest file's bytes
    std::function<std::string()> http, admin;  // its listeners' URLs (known once they listen)
    std::function<std::pair<int, int>()> load;  // invocations running, waiting
  };
  HostRegistry(Store& store, const Clock& clock, Timers timers, Logger& logger, Self self,
               Duration interval = std::chrono::seconds(2));
  ~HostRegistry();

  // The first beat now, then every interval (on the timer thread; the writes are asynchronous
  // and the read of the others' records runs on the store's I/O threads).
  void start();
  // Stops beating and removes this host's record (waits for that commit).
  void stop();
  // GET /admin/cluster: every live host's record, this one marked; reads the store.
  AdminView view();
  // In GET /admin/status: the hosts whose manifest differs from this one's (no store read).
  StatusField status_field();

 private:
  void beat();
  void compare_with_others();  // on an I/O thread

  Store& store_;
  const Clock& clock_;
  Timers timers_;
  Logger& logger_;
  Self self_;
  Duration interval_;
  TimePoint started_;

 public:
  struct Shared;  // what callbacks may still reach after stop() (cluster.cpp)

 private:
  std::shared_ptr<Shared> shared_;
};

// The hex SHA-256 of a file's bytes; empty if it cannot be read.
std::string file_sha256(const std::string& path);

}  // namespace nimbus
