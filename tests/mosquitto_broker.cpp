#include "mosquitto_broker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

extern char** environ;

namespace nimbus::testing {
namespace fs = std::filesystem;

namespace {

bool accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

std::string broker_binary() {
  for (const char* p : {"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"}) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

}  // namespace

MosquittoBroker::MosquittoBroker(fs::path dir, int port) : dir_(std::move(dir)), port_(port > 0 ? port : free_port()) {
  fs::create_directories(dir_);
  // Run as whoever runs the test: as root, mosquitto would switch to the user 'mosquitto',
  // which cannot write its persistence file into our folder.
  const passwd* me = ::getpwuid(::geteuid());
  std::ofstream(dir_ / "mosquitto.conf") << "listener " << port_ << " 127.0.0.1\n"
                                         << "allow_anonymous true\n"
                                         << "persistence true\n"
                                         << "persistence_location " << dir_.string() << "/\n"
                                         << "user " << (me ? me->pw_name : "root") << "\n"
                                         << "log_dest stdout\n";
}

MosquittoBroker::~MosquittoBroker() { stop(); }

bool MosquittoBroker::start() {
  const std::string binary = broker_binary();
  if (binary.empty()) {
    error_ = "the mosquitto broker is not installed; run scripts/setup.sh (apt-get install mosquitto)";
    return false;
  }
  int log = ::open((dir_ / "broker.log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  std::string conf = (dir_ / "mosquitto.conf").string();
  std::vector<char*> argv{const_cast<char*>(binary.c_str()), const_cast<char*>("-c"), conf.data(), nullptr};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, log, 1);
  posix_spawn_file_actions_adddup2(&fa, log, 2);
  int rc = posix_spawn(&pid_, binary.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(log);
  if (rc != 0) {
    pid_ = -1;
    error_ = "cannot run " + binary;
    return false;
  }
  for (int i = 0; i < 500; ++i) {
    if (accepts(port_)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::ifstream in(dir_ / "broker.log");
  error_ = "mosquitto did not listen on port " + std::to_string(port_) + ": " +
           std::string(std::istreambuf_iterator<char>(in), {});
  stop();
  return false;
}

void MosquittoBroker::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

MqttTestClient::MqttTestClient(int port, const std::string& client_id) {
  mosquitto_lib_init();
  mosq_ = mosquitto_new(client_id.empty() ? nullptr : client_id.c_str(), true, this);
  mosquitto_connect_callback_set(mosq_, [](mosquitto*, void* self, int rc) {
    auto* c = static_cast<MqttTestClient*>(self);
    std::lock_guard lock(c->mu_);
    c->connected_ = rc == 0;
    c->cv_.notify_all();
  });
  mosquitto_publish_callback_set(mosq_, [](mosquitto* m, void* self, int mid) {
    static_cast<MqttTestClient*>(self)->acked_callback(m, mid);
  });
  mosquitto_subscribe_callback_set(mosq_, [](mosquitto* m, void* self, int mid, int, const int*) {
    static_cast<MqttTestClient*>(self)->acked_callback(m, mid);
  });
  mosquitto_message_callback_set(mosq_, [](mosquitto*, void* self, const mosquitto_message* m) {
    auto* c = static_cast<MqttTestClient*>(self);
    std::lock_guard lock(c->mu_);
    c->messages_.push_back({m->topic, std::string(static_cast<const char*>(m->payload), static_cast<size_t>(m->payloadlen))});
    c->cv_.notify_all();
  });
  if (mosquitto_connect(mosq_, "127.0.0.1", port, 30) == MOSQ_ERR_SUCCESS) mosquitto_loop_start(mosq_);
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, std::chrono::seconds(5), [&] { return connected_; });
}

void MqttTestClient::acked_callback(mosquitto*, int mid) {
  std::lock_guard lock(mu_);
  acked_[mid] = true;
  cv_.notify_all();
}

MqttTestClient::~MqttTestClient() {
  mosquitto_disconnect(mosq_);
  mosquitto_loop_stop(mosq_, true);
  mosquitto_destroy(mosq_);
}

bool MqttTestClient::connected() const {
  std::lock_guard lock(mu_);
  return connected_;
}

bool MqttTestClient::subscribe(const std::string& filter, int qos) {
  std::unique_lock lock(mu_);  // held across the call: the SUBACK may come back at once
  int mid = 0;
  if (mosquitto_subscribe(mosq_, &mid, filter.c_str(), qos) != MOSQ_ERR_SUCCESS) return false;
  return cv_.wait_for(lock, std::chrono::seconds(5), [&] { return acked_[mid]; });
}

bool MqttTestClient::publish(const std::string& topic, const std::string& payload, int qos) {
  std::unique_lock lock(mu_);
  int mid = 0;
  if (mosquitto_publish(mosq_, &mid, topic.c_str(), static_cast<int>(payload.size()), payload.data(), qos, false) !=
      MOSQ_ERR_SUCCESS) {
    return false;
  }
  if (qos == 0) return true;
  return cv_.wait_for(lock, std::chrono::seconds(5), [&] { return acked_[mid]; });
}

std::vector<MqttMessage> MqttTestClient::wait_messages(std::size_t count, int timeout_ms) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return messages_.size() >= count; });
  return messages_;
}

}  // namespace nimbus::testing
