#pragma once
// MQTT triggers and outputs, through one connection (libmosquitto, MQTT 3.1.1) to the app's
// broker, with a persistent session (clean_session off, a stable client id) so that messages
// the broker has not had acknowledged are sent again after a reconnect or a new host.
// - Incoming (QoS 1): each message matching a function's topic filter is committed to the
//   store queue mqtt_queue_for(function) before its PUBACK can leave: libmosquitto 2.0 has no
//   manual acknowledgement, but in threaded mode it writes the PUBACK it queued only after
//   on_message returns, and on_message returns only once the commit is durable. A commit that
//   fails shuts the socket first, so the broker keeps the message and sends it again. From the
//   queue, the function runs at least once (the queue trigger: lease, retries, dead letters),
//   with its outputs committed together with the message's ack.
// - Outgoing: MQTT outputs wait in the queue kMqttOutbox (committed with the function's other
//   outputs); they are published with QoS 1 and acked there once the broker acknowledges the
//   publish. At least once: a host or a connection lost before that publishes them again.
// A broker that is down or refuses the connection never stops the host: connecting is retried
// with a doubling backoff (0.5 s to 30 s), each failure logged.
// Hosts sharing a store (PostgreSQL, Redis) share the subscriptions: each host holds a session
// slot k (a lease in the store) and connects as <client_id>-k, subscribed to
// $share/<client_id>/<filter>, so the broker gives each message to one host. The broker keeps
// queuing a share for a slot whose host died; a live host takes that slot over once its lease
// has expired (about 6 s) and receives them; a host that stops gives its slots back at once.
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/app_spec.h"
#include "core/clock.h"
#include "core/expected.h"
#include "triggers/trigger.h"

namespace nimbus {

class Logger;
class Store;

class MqttTrigger final : public Trigger {
 public:
  explicit MqttTrigger(const TriggerContext& context);
  ~MqttTrigger() override;
  MqttTrigger(const MqttTrigger&) = delete;
  MqttTrigger& operator=(const MqttTrigger&) = delete;

  // Starts connecting in the background when the app has a broker (without one: nothing to
  // do). Fails only when libmosquitto refuses the client's settings.
  std::string_view kind() const override { return "mqtt"; }
  Status start() override;
  // Disconnects once the message being committed (if any) is, and its PUBACK is written.
  void stop_taking_work() override;
  // The messages it committed are the queue trigger's to run: nothing of its own in flight.
  bool drain(Duration) override { return true; }
  bool connected() const;
  // "mqtt": {"broker", "connected"} in /admin/status, when the app has a broker.
  std::vector<StatusField> status_fields() override;

  class Connection;

 private:
  Expected<bool> take_slot(int k);
  void keep_slots();

  const AppSpec& app_;
  Store& store_;
  const Clock& clock_;
  Logger& logger_;
  std::string host_id_;
  struct Slot {
    int index;         // -1: the one session of a host alone on its store
    std::string etag;  // of its lease
    std::unique_ptr<Connection> conn;
  };
  mutable std::mutex slots_mu_;
  std::vector<Slot> slots_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  std::thread keeper_;  // renews and takes over slots (shared stores)
};

}  // namespace nimbus
