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
#include <atomic>
#include <memory>
#include <string>

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
  const AppSpec& app_;
  Store& store_;
  const Clock& clock_;
  Logger& logger_;
  std::unique_ptr<Connection> connection_;
};

}  // namespace nimbus
