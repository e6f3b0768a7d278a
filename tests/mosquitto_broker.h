#pragma once
// A real Mosquitto broker for tests and benchmarks, and a small libmosquitto client to talk to
// it. The broker runs on a free loopback port in a folder of its own, with persistence on (so
// a restart keeps sessions and unacknowledged messages), until stop() or destruction.
#include <sys/types.h>

#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "free_port.h"

struct mosquitto;

namespace nimbus::testing {

class MosquittoBroker {
 public:
  // Writes `dir`/mosquitto.conf for `port` (0: a free one); start() runs it.
  MosquittoBroker(std::filesystem::path dir, int port = 0);
  ~MosquittoBroker();
  MosquittoBroker(const MosquittoBroker&) = delete;
  MosquittoBroker& operator=(const MosquittoBroker&) = delete;

  // Starts the broker and waits until its port accepts connections. False (with the reason in
  // error()) when mosquitto is not installed or does not come up.
  bool start();
  // SIGTERM (the broker saves its sessions) and wait for the exit.
  void stop();
  int port() const { return port_; }
  std::string url() const { return "mqtt://127.0.0.1:" + std::to_string(port_); }
  const std::string& error() const { return error_; }

 private:
  std::filesystem::path dir_;
  int port_;
  pid_t pid_ = -1;
  std::string error_;
};

struct MqttMessage {
  std::string topic;
  std::string payload;
};

// A libmosquitto client on its own network thread. Every call waits (bounded) for the
// broker's answer: CONNACK, SUBACK, PUBACK.
class MqttTestClient {
 public:
  explicit MqttTestClient(int port, const std::string& client_id = "");
  ~MqttTestClient();
  MqttTestClient(const MqttTestClient&) = delete;
  MqttTestClient& operator=(const MqttTestClient&) = delete;

  bool connected() const;
  bool subscribe(const std::string& filter, int qos = 1);
  // Publishes and, for QoS 1, waits for the broker's PUBACK.
  bool publish(const std::string& topic, const std::string& payload, int qos = 1);
  // Waits until `count` messages have arrived; returns what has.
  std::vector<MqttMessage> wait_messages(std::size_t count, int timeout_ms = 15000);

 private:
  void acked_callback(mosquitto* mosq, int mid);  // PUBACK or SUBACK
  mosquitto* mosq_ = nullptr;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool connected_ = false;
  std::map<int, bool> acked_;  // mid -> acknowledged (PUBACK or SUBACK)
  std::vector<MqttMessage> messages_;
};

}  // namespace nimbus::testing
