#include "triggers/mqtt/mqtt_trigger.h"

#include <mosquitto.h>
#include <boost/json.hpp>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "core/ids.h"
#include "core/mqtt_topic.h"
#include "observe/log.h"
#include "store/store.h"
#include "triggers/mqtt/mqtt_spec.h"

namespace nimbus {
namespace {

constexpr auto kFirstBackoff = std::chrono::milliseconds(500);
constexpr auto kMaxBackoff = std::chrono::seconds(30);
constexpr int kLoopTimeoutMs = 100;
constexpr int kOutboxWindow = 64;        // outbox messages published and not yet acknowledged, at most
constexpr int64_t kOutboxLeaseMs = 60000;  // a publish unacknowledged this long goes out again
constexpr auto kOutboxLookEvery = std::chrono::seconds(1);  // work committed by other hosts

// Session slots of hosts sharing a store (see mqtt_trigger.h).
constexpr auto kSlotEvery = std::chrono::seconds(2);
constexpr auto kSlotTtl = std::chrono::seconds(6);
constexpr int kMaxSlots = 1000;
constexpr const char* kMqttSlotsStore = "_mqtt_slots";
constexpr const char* kMqttSessionsStore = "_mqtt_sessions";

std::once_flag library_once;

// Every libmosquitto return code becomes a message here, so no call site forgets errno.
std::string mosquitto_error(int rc) {
  if (rc == MOSQ_ERR_ERRNO) return std::strerror(errno);
  return mosquitto_strerror(rc);
}

Status checked(int rc, const char* what) {
  if (rc == MOSQ_ERR_SUCCESS) return ok_status();
  return Error{std::string(what) + ": " + mosquitto_error(rc)};
}

struct Route {
  std::string function;
  std::string filter;
};

}  // namespace

class MqttTrigger::Connection {
 public:
  // `share`: the shared-subscription group its filters join ($share/<share>/<filter>), when
  // several hosts take turns; empty: plain subscriptions (one host).
  Connection(const AppSpec& app, const MqttBrokerSpec& broker, std::string share, Store& store, Logger& logger)
      : broker_(broker), share_(std::move(share)), store_(store), logger_(logger) {
    for (const auto& fn : app.functions) {
      for (const auto* t : fn.triggers_of<MqttTriggerSpec>()) {
        routes_.push_back({fn.name, t->filter});
        auto& qos = filters_[t->filter];
        qos = std::max(qos, t->qos);
      }
    }
  }

  ~Connection() {
    stop();
    if (mosq_) mosquitto_destroy(mosq_);
  }

  Status start() {
    // clean_session off: the broker keeps the subscriptions and unacknowledged QoS 1 messages
    // under the client id while no host is connected.
    mosq_ = mosquitto_new(broker_.client_id.c_str(), false, this);
    if (!mosq_) return Error{"mqtt: cannot create the client '" + broker_.client_id + "': " + std::strerror(errno)};
    // Threaded: packets queued in a callback (the PUBACK of a message) are written by the
    // network loop after the callback returns, never from inside it.
    if (auto st = checked(mosquitto_threaded_set(mosq_, true), "mqtt: threaded mode"); !st) return st;
    if (!broker_.username.empty()) {
      auto st = checked(mosquitto_username_pw_set(mosq_, broker_.username.c_str(),
                                                  broker_.password.empty() ? nullptr : broker_.password.c_str()),
                        "mqtt: username and password");
      if (!st) return st;
    }
    mosquitto_connect_with_flags_callback_set(mosq_, [](mosquitto*, void* self, int rc, int flags) {
      static_cast<Connection*>(self)->on_connect(rc, flags);
    });
    mosquitto_disconnect_callback_set(mosq_, [](mosquitto*, void* self, int rc) {
      static_cast<Connection*>(self)->on_disconnect(rc);
    });
    mosquitto_subscribe_callback_set(mosq_, [](mosquitto*, void* self, int mid, int count, const int* granted) {
      static_cast<Connection*>(self)->on_subscribe(mid, count, granted);
    });
    mosquitto_message_callback_set(mosq_, [](mosquitto*, void* self, const mosquitto_message* m) {
      static_cast<Connection*>(self)->on_message(*m);
    });
    mosquitto_publish_callback_set(mosq_, [](mosquitto*, void* self, int mid) {
      static_cast<Connection*>(self)->on_published(mid);
    });
    outbox_watch_ = store_.watch_changes([this](const std::vector<std::string>& names) {
      if (std::find(names.begin(), names.end(), kMqttOutbox) != names.end()) pump_outbox();
    });
    thread_ = std::thread([this] { run(); });
    return ok_status();
  }

  void stop() {
    outbox_watch_.reset();
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  bool connected() const { return connected_.load(); }
  const std::string& client_id() const { return broker_.client_id; }

 private:
  // The network thread: connects, runs libmosquitto's loop, reconnects with backoff.
  void run() {
    Duration backoff = kFirstBackoff;
    bool socket_open = false;
    auto last_look = std::chrono::steady_clock::now();
    while (!stopping()) {
      if (!socket_open) {
        int rc = mosquitto_connect_async(mosq_, broker_.host.c_str(), broker_.port,
                                         static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(broker_.keepalive).count()));
        if (rc != MOSQ_ERR_SUCCESS) {
          broker_down(mosquitto_error(rc), backoff);
          continue;
        }
        socket_open = true;
      }
      int rc = mosquitto_loop(mosq_, kLoopTimeoutMs, 1);
      if (rc != MOSQ_ERR_SUCCESS) {
        socket_open = false;
        connected_ = false;
        if (stopping()) break;
        broker_down(rc == MOSQ_ERR_CONN_LOST ? "the connection was lost" : mosquitto_error(rc), backoff);
        continue;
      }
      if (connected_) backoff = kFirstBackoff;
      if (const auto now = std::chrono::steady_clock::now(); now - last_look >= kOutboxLookEvery) {
        last_look = now;
        pump_outbox();
      }
    }
    if (socket_open) {
      // PUBACKs of committed messages are queued: write them, then say goodbye.
      mosquitto_disconnect(mosq_);
      for (int i = 0; i < 20 && mosquitto_loop(mosq_, 10, 1) == MOSQ_ERR_SUCCESS; ++i) {
      }
    }
    connected_ = false;
  }

  bool stopping() {
    std::lock_guard lock(mu_);
    return stopping_;
  }

  // Logs the failure, waits (a stop cuts the wait short), and doubles the next wait.
  void broker_down(const std::string& why, Duration& backoff) {
    logger_.host(LogLevel::warn, "mqtt broker not connected; retrying",
                 {{"broker", broker_.url}, {"error", why},
                  {"retry_in_ms", static_cast<int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(backoff).count())}});
    std::unique_lock lock(mu_);
    wake_.wait_for(lock, backoff, [&] { return stopping_; });
    backoff = std::min<Duration>(backoff * 2, kMaxBackoff);
  }

  void on_connect(int rc, int flags) {
    if (rc != 0) {
      logger_.host(LogLevel::error, "mqtt broker refused the connection",
                   {{"broker", broker_.url}, {"client_id", broker_.client_id}, {"reason", mosquitto_connack_string(rc)}});
      return;
    }
    connected_ = true;
    logger_.host(LogLevel::info, "mqtt broker connected",
                 {{"broker", broker_.url}, {"client_id", broker_.client_id},
                  {"session_present", (flags & 1) ? "true" : "false"}});
    for (const auto& [plain, qos] : filters_) {
      // Shared: the broker gives each message to one member of the group (one host).
      const std::string filter = share_.empty() ? plain : "$share/" + share_ + "/" + plain;
      int mid = 0;
      if (auto st = checked(mosquitto_subscribe(mosq_, &mid, filter.c_str(), qos), "mqtt: subscribe"); !st) {
        logger_.host(LogLevel::error, "mqtt subscribe failed", {{"topic", filter}, {"error", st.error().message}});
        continue;
      }
      std::lock_guard lock(mu_);
      subscribing_[mid] = filter;
    }
    pump_outbox();
  }

  void on_subscribe(int mid, int count, const int* granted) {
    std::string filter;
    {
      std::lock_guard lock(mu_);
      auto it = subscribing_.find(mid);
      if (it == subscribing_.end()) return;
      filter = std::move(it->second);
      subscribing_.erase(it);
    }
    const int qos = count > 0 ? granted[0] : -1;
    if (qos < 0 || qos > 2) {  // 0x80: the broker refused the filter
      logger_.host(LogLevel::error, "mqtt broker refused a subscription", {{"topic", filter}});
      return;
    }
    logger_.host(LogLevel::info, "mqtt subscribed", {{"topic", filter}, {"qos", qos}});
  }

  void on_disconnect(int rc) {
    const bool was_connected = connected_.exchange(false);  // libmosquitto calls this for failed connects too
    if (was_connected && rc != 0 && !stopping()) {
      logger_.host(LogLevel::warn, "mqtt connection lost", {{"broker", broker_.url}, {"error", mosquitto_error(rc)}});
    }
  }

  // On the network thread, with this message's PUBACK queued but not yet written: commit it
  // for every function whose filter matches before returning (see the header).
  void on_message(const mosquitto_message& msg) {
    const std::string topic = msg.topic ? msg.topic : "";
    Batch batch;
    std::set<std::string> taken;
    for (const auto& route : routes_) {
      std::vector<std::string> caught;
      if (taken.count(route.function) || !topic_matches(route.filter, topic, &caught)) continue;
      taken.insert(route.function);
      NewMessage m;
      m.type = "nimbus.mqtt.message";
      m.source = "mqtt://" + broker_.host + ":" + std::to_string(broker_.port);
      m.subject = topic;
      m.metadata = {{"mqtt.topic", topic},
                    {"mqtt.qos", std::to_string(msg.qos)},
                    {"mqtt.retain", msg.retain ? "true" : "false"}};
      for (std::size_t i = 0; i < caught.size(); ++i) m.metadata.push_back({"mqtt.match." + std::to_string(i + 1), caught[i]});
      if (msg.payloadlen > 0) m.payload.assign(static_cast<const char*>(msg.payload), static_cast<std::size_t>(msg.payloadlen));
      batch.enqueues.push_back({mqtt_queue_for(route.function), std::move(m)});
    }
    if (batch.empty()) {
      // A subscription the persistent session kept from an earlier manifest.
      logger_.host(LogLevel::warn, "mqtt message matches no trigger; acknowledged and dropped", {{"topic", topic}});
      return;
    }
    auto done = store_.commit_sync(std::move(batch));
    if (!done) {
      logger_.host(LogLevel::error,
                   "cannot commit an mqtt message; it is not acknowledged, and the broker sends it again after the reconnect",
                   {{"topic", topic}, {"error", done.error().message}});
      ::shutdown(mosquitto_socket(mosq_), SHUT_RDWR);  // the queued PUBACK can no longer leave
    }
  }

  // Publishes what waits in the outbox, up to the window. Any thread.
  void pump_outbox() {
    int want;
    {
      std::lock_guard lock(mu_);
      if (stopping_ || receiving_ || !connected_) return;
      want = kOutboxWindow - static_cast<int>(in_flight_.size());
      if (want <= 0) return;
      receiving_ = true;
    }
    store_.receive(kMqttOutbox, want, kOutboxLeaseMs, [this, want](Expected<std::vector<Message>> got) {
      int received = 0;
      if (!got) {
        logger_.host(LogLevel::warn, "cannot read the mqtt outbox", {{"error", got.error().message}});
      } else {
        received = static_cast<int>(got->size());
        for (const auto& m : *got) publish(m);
      }
      {
        std::lock_guard lock(mu_);
        receiving_ = false;
      }
      if (received == want) pump_outbox();
    });
  }

  void publish(const Message& m) {
    const std::string* topic = find_header(m.metadata, "mqtt.topic");
    std::lock_guard lock(mu_);  // before the publish: its PUBACK may come back at once
    int mid = 0;
    int rc = topic ? mosquitto_publish(mosq_, &mid, topic->c_str(), static_cast<int>(m.payload.size()),
                                       m.payload.data(), 1, false)
                   : MOSQ_ERR_INVAL;
    if (rc == MOSQ_ERR_SUCCESS) {
      in_flight_[mid] = {m.id, m.lease};
      return;
    }
    // Not sent: it goes out again when its lease runs out.
    logger_.host(LogLevel::warn, "mqtt publish failed; trying again later",
                 {{"topic", topic ? *topic : std::string("(none)")}, {"message_id", m.id}, {"error", mosquitto_error(rc)}});
  }

  // The broker acknowledged a QoS 1 publish: it leaves the outbox.
  void on_published(int mid) {
    LeaseRef ref;
    {
      std::lock_guard lock(mu_);
      auto it = in_flight_.find(mid);
      if (it == in_flight_.end()) return;
      ref = std::move(it->second);
      in_flight_.erase(it);
    }
    Batch batch;
    batch.acks.push_back(ref);
    store_.commit(std::move(batch), [this, id = ref.id](Expected<BatchResult> done) {
      if (!done) {
        // A lease that ran out while the broker was away: the message went out again, or will.
        logger_.host(LogLevel::info, "mqtt outbox ack not committed; the message may be published again",
                     {{"message_id", id}, {"error", done.error().message}});
      }
      pump_outbox();
    });
  }

  MqttBrokerSpec broker_;
  std::string share_;
  Store& store_;
  Logger& logger_;
  std::vector<Route> routes_;
  std::map<std::string, int> filters_;  // each filter once, at the highest QoS asked for
  mosquitto* mosq_ = nullptr;
  std::thread thread_;
  std::unique_ptr<Store::ChangeWatch> outbox_watch_;  // the outbox got messages
  std::atomic<bool> connected_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool receiving_ = false;                 // an outbox receive is under way
  std::map<int, LeaseRef> in_flight_;      // publish mid -> its outbox message
  std::map<int, std::string> subscribing_;  // subscribe mid -> filter
};

MqttTrigger::MqttTrigger(const TriggerContext& c)
    : app_(c.app), store_(c.store), clock_(c.clock), logger_(c.logger),
      host_id_(c.host_id.empty() ? "host-" + new_invocation_id().substr(0, 12) : c.host_id) {}

MqttTrigger::~MqttTrigger() { stop_taking_work(); }

Status MqttTrigger::start() {
  if (!app_.mqtt) return ok_status();
  std::call_once(library_once, [] { mosquitto_lib_init(); });
  // The embedded store is one host's: one session under the configured client id. A shared
  // store: each host takes a session slot (below).
  if (app_.store.rfind("sqlite:", 0) == 0) {
    auto conn = std::make_unique<Connection>(app_, *app_.mqtt, std::string(), store_, logger_);
    if (auto st = conn->start(); !st) return Error{"mqtt broker " + app_.mqtt->url + ": " + st.error().message};
    std::lock_guard lock(slots_mu_);
    slots_.push_back(Slot{-1, {}, std::move(conn)});
    return ok_status();
  }
  for (int k = 0; k < kMaxSlots; ++k) {
    auto st = take_slot(k);
    if (!st) return Error{"mqtt broker " + app_.mqtt->url + ": " + st.error().message};
    if (*st) break;
  }
  keeper_ = std::thread([this] { keep_slots(); });
  return ok_status();
}

// Takes session slot k if no live host holds it: a lease (create-only, with a time to live)
// in _mqtt_slots, and a mark in _mqtt_sessions that the session exists (the broker queues a
// share of the messages for it even while no one is connected, so a slot is never forgotten).
// Then connects as <client_id>-<k>. False: another host holds it.
Expected<bool> MqttTrigger::take_slot(int k) {
  const int64_t ttl_ms = std::chrono::duration_cast<std::chrono::milliseconds>(kSlotTtl).count();
  Batch b;
  b.puts.push_back({kMqttSlotsStore, std::to_string(k), host_id_, std::string(), ttl_ms});
  b.puts.push_back({kMqttSessionsStore, std::to_string(k), app_.mqtt->client_id, std::nullopt, 0});
  auto r = store_.commit_sync(std::move(b));
  if (!r) {
    if (r.error().code == store_error::conflict) return false;
    return r.error();
  }
  MqttBrokerSpec broker = *app_.mqtt;
  broker.client_id = app_.mqtt->client_id + "-" + std::to_string(k);
  auto conn = std::make_unique<Connection>(app_, broker, app_.mqtt->client_id, store_, logger_);
  if (auto st = conn->start(); !st) return st.error();
  logger_.host(LogLevel::info, "mqtt session slot taken", {{"slot", k}, {"client_id", broker.client_id}});
  std::lock_guard lock(slots_mu_);
  slots_.push_back(Slot{k, r->etags.at(0), std::move(conn)});
  return true;
}

// Every kSlotEvery: renews the slots this host holds (one it can no longer renew is given up
// at once: another host may have it); takes every slot whose host is gone (its session's
// queued messages are delivered to whoever connects under its id); and makes sure this host
// holds at least one.
void MqttTrigger::keep_slots() {
  const int64_t ttl_ms = std::chrono::duration_cast<std::chrono::milliseconds>(kSlotTtl).count();
  for (;;) {
    {
      std::unique_lock lock(slots_mu_);
      if (stop_cv_.wait_for(lock, kSlotEvery, [&] { return stopping_; })) return;
    }
    std::vector<std::pair<int, std::string>> held;
    {
      std::lock_guard lock(slots_mu_);
      for (const auto& s : slots_) held.emplace_back(s.index, s.etag);
    }
    for (const auto& [k, etag] : held) {
      Batch b;
      b.puts.push_back({kMqttSlotsStore, std::to_string(k), host_id_, etag, ttl_ms});
      auto r = store_.commit_sync(std::move(b));
      std::unique_ptr<Connection> dropped;
      {
        std::lock_guard lock(slots_mu_);
        for (auto it = slots_.begin(); it != slots_.end(); ++it) {
          if (it->index != k) continue;
          if (r) {
            it->etag = r->etags.at(0);
          } else {
            dropped = std::move(it->conn);
            slots_.erase(it);
          }
          break;
        }
      }
      if (dropped) {
        logger_.host(LogLevel::warn, "mqtt session slot lost; disconnecting it", {{"slot", k}, {"error", r.error().message}});
        dropped->stop();
      }
    }
    auto sessions = store_.scan(kMqttSessionsStore, "", kMaxSlots);
    if (!sessions) continue;
    for (const auto& s : *sessions) {
      int k = -1;
      try {
        k = std::stoi(s.key);
      } catch (...) {
        continue;
      }
      bool mine = false;
      {
        std::lock_guard lock(slots_mu_);
        for (const auto& slot : slots_) mine = mine || slot.index == k;
      }
      if (!mine) (void)take_slot(k);  // free only if its host is gone
    }
    bool none;
    {
      std::lock_guard lock(slots_mu_);
      none = slots_.empty();
    }
    for (int k = 0; none && k < kMaxSlots; ++k) {
      auto took = take_slot(k);
      if (!took) break;
      none = !*took;
    }
  }
}

void MqttTrigger::stop_taking_work() {
  {
    std::lock_guard lock(slots_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (keeper_.joinable()) keeper_.join();
  std::vector<Slot> slots;
  {
    std::lock_guard lock(slots_mu_);
    slots.swap(slots_);
  }
  for (auto& s : slots) s.conn->stop();
  // Gives the slots back at once: another host takes over their sessions without waiting.
  for (auto& s : slots) {
    if (s.index < 0) continue;
    Batch b;
    b.deletes.push_back({kMqttSlotsStore, std::to_string(s.index), s.etag});
    (void)store_.commit_sync(std::move(b));
  }
}

bool MqttTrigger::connected() const {
  std::lock_guard lock(slots_mu_);
  for (const auto& s : slots_) {
    if (s.conn->connected()) return true;
  }
  return false;
}

std::vector<StatusField> MqttTrigger::status_fields() {
  if (!app_.mqtt) return {};
  return {{"mqtt", [this] {
             boost::json::array clients;
             {
               std::lock_guard lock(slots_mu_);
               for (const auto& s : slots_) {
                 clients.push_back(boost::json::object{{"client_id", s.conn->client_id()}, {"connected", s.conn->connected()}});
               }
             }
             return boost::json::serialize(
                 boost::json::object{{"broker", app_.mqtt->url}, {"connected", connected()}, {"sessions", std::move(clients)}});
           }}};
}

}  // namespace nimbus
