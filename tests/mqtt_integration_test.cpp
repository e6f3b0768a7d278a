// MQTT end to end: the real `nimbus` binary against a real Mosquitto broker started by the test
// on a free loopback port (persistence on), with clients publishing and subscribing over it.
#include <libpq-fe.h>
#include <signal.h>
#include <sqlite3.h>

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include "core/clock.h"
#include "harness.h"
#include "mosquitto_broker.h"
#include "postgres_server.h"
#include "redis_server.h"
#include <hiredis/hiredis.h>
#include "store/store.h"

namespace nimbus::testing {
namespace {

namespace json = boost::json;

// The messages of `queue` in the app's store, read the way any part reads them (a reader
// connection beside the running host's).
std::vector<Message> peek(const TempDir& app, const std::string& queue, const std::string& url = "sqlite:.nimbus/state.db") {
  ManualClock clock;
  auto store = open_store(url, app.path(), clock);
  if (!store) return {};
  auto messages = (*store)->peek(queue, 1000);
  (*store)->close();
  return messages ? *messages : std::vector<Message>{};
}

std::string mqtt_app(const MosquittoBroker& broker, const std::string& functions, const std::string& store = "") {
  return "name: iot\n" + (store.empty() ? std::string() : "store: \"" + store + "\"\n") + "mqtt: {url: \"" +
         broker.url() + "\"}\nfunctions:\n" + functions;
}

// The kill -9 tests run on every backend: the store URL of one (a fresh PostgreSQL database).
class MqttOnEveryBackend : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "sqlite") {
      url_ = "sqlite:.nimbus/state.db";
      return;
    }
    std::string why;
    if (GetParam() == "redis") {
      RedisServer* server = shared_redis(&why);
      ASSERT_NE(server, nullptr) << why;
      url_ = server->create_url();
      return;
    }
    PostgresServer* server = shared_postgres(&why);
    ASSERT_NE(server, nullptr) << why;
    url_ = server->create_database();
    ASSERT_FALSE(url_.empty()) << server->error();
  }
  std::string url_;
};

std::string native_stage(const std::string& name, const std::string& library, const std::string& topic,
                         const std::string& output, const std::string& extra = "") {
  return "  " + name + ":\n    runtime: native\n    handler: " + test_function(library).string() +
         "\n    triggers: [{mqtt: {topic: \"" + topic + "\", qos: 1" + extra + "}}]\n    outputs: {next: " + output + "}\n";
}

// Subscribes `device` to `replies`, publishes `payload` to `topic` (QoS 1, acknowledged) and
// returns the one reply; an empty topic when none came.
MqttMessage reply_to(Host& host, MqttTestClient& device, const std::string& replies, const std::string& topic,
                     const std::string& payload) {
  EXPECT_TRUE(device.connected());
  EXPECT_TRUE(device.subscribe(replies));
  EXPECT_TRUE(device.publish(topic, payload));
  auto got = device.wait_messages(1);
  EXPECT_EQ(got.size(), 1u) << host.output();
  return got.empty() ? MqttMessage{} : got[0];
}

// A message from a device runs the function: it sees the payload, the topic, the QoS, the
// retain flag and what '+' matched; its queue output is committed and its MQTT output reaches
// a subscriber of the command topic.
TEST(Mqtt, AMessageRunsTheFunctionWhoseOutputsReachAQueueAndTheBroker) {
  TempDir dir;
  MosquittoBroker broker(dir.path() / "broker");
  ASSERT_TRUE(broker.start()) << broker.error();
  dir.write("nimbus.yaml", mqtt_app(broker, "  handle:\n    runtime: python\n    handler: app.py:handle\n"
                                            "    triggers: [{mqtt: {topic: \"devices/+/telemetry\"}}]\n"
                                            "    outputs:\n      seen: {queue: seen}\n"
                                            "      commands: {mqtt: \"devices/{device}/commands\"}\n"));
  dir.write("app.py", R"PY(
def handle(req, ctx):
    m = req.metadata
    ctx.output("seen", {"topic": m.get("mqtt.topic"), "qos": m.get("mqtt.qos"), "retain": m.get("mqtt.retain"),
                        "device": m.get("mqtt.match.1"), "trigger": req.trigger,
                        "subject": req.attributes.get("subject"), "type": req.attributes.get("type"),
                        "body": req.text()})
    ctx.output("commands", "slow down " + m.get("mqtt.match.1"), {"device": m.get("mqtt.match.1")})
)PY");
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  ASSERT_TRUE(host.wait_for_output("\"msg\":\"mqtt subscribed\"")) << host.output();
  MqttTestClient device(broker.port());
  MqttMessage command = reply_to(host, device, "devices/+/commands", "devices/d7/telemetry", "{\"temp\": 21.5}");
  EXPECT_EQ(command.topic, "devices/d7/commands");
  EXPECT_EQ(command.payload, "slow down d7");
  std::vector<Message> seen;
  ASSERT_TRUE(eventually([&] { return (seen = peek(dir, "seen")).size() == 1; })) << host.output();
  json::object v = json::parse(seen[0].payload).as_object();
  EXPECT_EQ(v["topic"], "devices/d7/telemetry");
  EXPECT_EQ(v["qos"], "1");
  EXPECT_EQ(v["retain"], "false");
  EXPECT_EQ(v["device"], "d7");
  EXPECT_EQ(v["trigger"], "mqtt");
  EXPECT_EQ(v["subject"], "devices/d7/telemetry");  // the CloudEvents subject is the topic
  EXPECT_EQ(v["type"], "nimbus.mqtt.message");
  EXPECT_EQ(v["body"], "{\"temp\": 21.5}");
  // Nothing waits: the handed-off message is acked, and so is the published command.
  EXPECT_TRUE(eventually([&] { return peek(dir, "_mqtt.handle").empty() && peek(dir, "_mqtt-out").empty(); }));
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

// kill -9 while the function runs: the message was committed before its PUBACK, so the next
// host runs it again once its lease is over, and it is processed once.
TEST_P(MqttOnEveryBackend, KillNineMidInvocationRunsTheMessageAgainOnTheNextHost) {
  TempDir dir;
  MosquittoBroker broker(dir.path() / "broker");
  ASSERT_TRUE(broker.start()) << broker.error();
  dir.write("nimbus.yaml",
            mqtt_app(broker, native_stage("stall", "stall", "plant/+/reading", "{queue: done}", ", lease: 1s"), url_));
  auto peek = [&](const TempDir& app, const std::string& queue) { return testing::peek(app, queue, url_); };
  {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    ASSERT_TRUE(host.wait_for_output("\"msg\":\"mqtt subscribed\"")) << host.output();
    MqttTestClient device(broker.port());
    ASSERT_TRUE(device.publish("plant/p1/reading", "stall 42"));
    // Running: the consumer holds the message's lease while the function sleeps.
    ASSERT_TRUE(eventually([&] {
      auto waiting = peek(dir, "_mqtt.stall");
      return waiting.size() == 1 && !waiting[0].lease.empty();
    })) << host.output();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_EQ(host.signal_and_wait(SIGKILL), 128 + SIGKILL);
  }
  EXPECT_TRUE(peek(dir, "done").empty());
  Host again(dir.path());
  ASSERT_TRUE(again.started()) << again.errors();
  std::vector<Message> done;
  ASSERT_TRUE(eventually([&] { return (done = peek(dir, "done")).size() == 1; })) << again.output();
  EXPECT_EQ(done[0].payload, "stall 42|attempt 2");
  EXPECT_EQ(done[0].subject, "plant/p1/reading");
  EXPECT_TRUE(peek(dir, "_mqtt.stall").empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(peek(dir, "done").size(), 1u) << "processed twice";
  EXPECT_EQ(again.signal_and_wait(SIGTERM), 0);
}

// kill -9 before the message could be committed (the store is held by another writer): no
// PUBACK went out, so the broker keeps the message in the host's persistent session and sends
// it again to the next host.
TEST_P(MqttOnEveryBackend, KillNineBeforeTheCommitLeavesTheMessageWithTheBroker) {
  TempDir dir;
  MosquittoBroker broker(dir.path() / "broker");
  ASSERT_TRUE(broker.start()) << broker.error();
  dir.write("nimbus.yaml", mqtt_app(broker, native_stage("relay", "relay", "plant/#", "{queue: done}"), url_));
  auto peek = [&](const TempDir& app, const std::string& queue) { return testing::peek(app, queue, url_); };
  {
    Host host(dir.path());
    ASSERT_TRUE(host.started()) << host.errors();
    ASSERT_TRUE(host.wait_for_output("\"msg\":\"mqtt subscribed\"")) << host.output();
    // Another writer holds the store, so every commit waits: SQLite's write lock, a lock on
    // PostgreSQL's messages table that blocks every insert, or Redis's clients paused for writes.
    sqlite3* db = nullptr;
    PGconn* pg = nullptr;
    redisContext* redis = nullptr;
    if (GetParam() == "redis") {
      redis = redisConnect("127.0.0.1", std::stoi(url_.substr(url_.rfind(':') + 1)));
      ASSERT_TRUE(redis && !redis->err);
      auto* r = static_cast<redisReply*>(redisCommand(redis, "CLIENT PAUSE 20000 WRITE"));
      ASSERT_TRUE(r && r->type == REDIS_REPLY_STATUS) << (r && r->str ? r->str : "no reply");
      freeReplyObject(r);
    } else if (GetParam() == "sqlite") {
      ASSERT_EQ(sqlite3_open((dir.path() / ".nimbus" / "state.db").c_str(), &db), SQLITE_OK);
      ASSERT_EQ(sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);
    } else {
      pg = PQconnectdb(url_.c_str());
      PGresult* r = PQexec(pg, "BEGIN; LOCK TABLE messages IN EXCLUSIVE MODE");
      ASSERT_EQ(PQresultStatus(r), PGRES_COMMAND_OK) << PQerrorMessage(pg);
      PQclear(r);
    }
    MqttTestClient device(broker.port());
    ASSERT_TRUE(device.publish("plant/p1/reading", "r1"));
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the host has it and waits on the store
    EXPECT_EQ(host.signal_and_wait(SIGKILL), 128 + SIGKILL);
    if (db) {
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      sqlite3_close(db);
    }
    if (pg) {
      PQclear(PQexec(pg, "ROLLBACK"));
      PQfinish(pg);
    }
    if (redis) {
      freeReplyObject(redisCommand(redis, "CLIENT UNPAUSE"));
      redisFree(redis);
    }
  }
  EXPECT_TRUE(peek(dir, "_mqtt.relay").empty()) << "the message was committed after all: the test proved nothing";
  Host again(dir.path());
  ASSERT_TRUE(again.started()) << again.errors();
  std::vector<Message> done;
  ASSERT_TRUE(eventually([&] { return (done = peek(dir, "done")).size() == 1; })) << again.output();
  EXPECT_EQ(done[0].payload, "r1|relay");
  EXPECT_EQ(done[0].subject, "plant/p1/reading");
  EXPECT_EQ(again.signal_and_wait(SIGTERM), 0);
}

// Hosts on a shared store share the subscriptions: each holds a session slot and subscribes
// through $share, so the broker gives each message to one host (without it, each host would
// commit its own copy and every output would come twice). A host killed with SIGKILL leaves
// its session with the broker, which keeps queuing its share there; the other host takes the
// session over once the slot's lease expires, and nothing published is lost.
TEST(MqttCluster, HostsShareTheSubscriptionsAndOneTakesOverTheSessionOfAKilledHost) {
  TempDir a_dir, b_dir;
  MosquittoBroker broker(a_dir.path() / "broker");
  ASSERT_TRUE(broker.start()) << broker.error();
  std::string why;
  PostgresServer* server = shared_postgres(&why);
  ASSERT_NE(server, nullptr) << why;
  const std::string url = server->create_database();
  ASSERT_FALSE(url.empty()) << server->error();
  const std::string app = mqtt_app(broker, native_stage("relay", "relay", "plant/#", "{queue: done}"), url);
  a_dir.write("nimbus.yaml", app);
  b_dir.write("nimbus.yaml", app);
  auto a = std::make_unique<Host>(a_dir.path());
  Host b(b_dir.path());
  ASSERT_TRUE(a->started() && b.started()) << a->errors() << b.errors();
  ASSERT_TRUE(a->wait_for_output("\"msg\":\"mqtt subscribed\"")) << a->output();
  ASSERT_TRUE(b.wait_for_output("\"msg\":\"mqtt subscribed\"")) << b.output();
  EXPECT_NE(a->output().find("$share/nimbus-iot/plant/#"), std::string::npos) << a->output();
  MqttTestClient device(broker.port());
  auto publish = [&](int from, int to) {
    for (int i = from; i < to; ++i) ASSERT_TRUE(device.publish("plant/p1/reading", "r" + std::to_string(i)));
  };
  // Every payload from 0 to n-1 is in `done`, each once.
  auto all_once = [&](int n) {
    auto done = peek(a_dir, "done", url);
    if (done.size() < static_cast<std::size_t>(n)) return false;
    std::multiset<std::string> got;
    for (const auto& m : done) got.insert(m.payload);
    for (int i = 0; i < n; ++i) EXPECT_EQ(got.count("r" + std::to_string(i) + "|relay"), 1u) << "message " << i;
    EXPECT_EQ(done.size(), static_cast<std::size_t>(n)) << "a message was received by both hosts";
    return true;
  };
  publish(0, 100);
  ASSERT_TRUE(eventually([&] { return all_once(100); }, 30000)) << a->output() << b.output();

  EXPECT_EQ(a->signal_and_wait(SIGKILL), 128 + SIGKILL);
  a.reset();
  publish(100, 200);  // about half of them queue in the killed host's session
  ASSERT_TRUE(eventually([&] { return peek(a_dir, "done", url).size() >= 200; }, 30000))
      << "the killed host's session was not taken over\n" << b.output();
  auto done = peek(a_dir, "done", url);
  std::set<std::string> got;
  for (const auto& m : done) got.insert(m.payload);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(got.count("r" + std::to_string(i) + "|relay"), 1u) << "message " << i << " lost";
  EXPECT_NE(b.output().find("mqtt session slot taken"), std::string::npos);
  EXPECT_EQ(b.signal_and_wait(SIGTERM), 0);
}

INSTANTIATE_TEST_SUITE_P(Backends, MqttOnEveryBackend, ::testing::Values("sqlite", "postgres", "redis"),
                         [](const auto& info) { return info.param; });

// No broker at start: the host starts anyway, says it is retrying, and once the broker is up
// subscribes, runs the function and publishes its MQTT output.
TEST(Mqtt, ABrokerDownAtStartIsWaitedFor) {
  TempDir dir;
  MosquittoBroker broker(dir.path() / "broker");
  dir.write("nimbus.yaml", mqtt_app(broker, native_stage("relay", "relay", "in/#", "{mqtt: out/relayed}")));
  Host host(dir.path());
  ASSERT_TRUE(host.started()) << host.errors();
  ASSERT_TRUE(host.wait_for_output("mqtt broker not connected; retrying")) << host.output();
  CommandResult down = run_nimbus({"status"}, dir.path());
  EXPECT_NE(down.out.find("mqtt     " + broker.url() + " (not connected; retrying)"), std::string::npos) << down.out;
  ASSERT_TRUE(broker.start()) << broker.error();
  ASSERT_TRUE(host.wait_for_output("\"msg\":\"mqtt subscribed\"", 40000)) << host.output();
  CommandResult up = run_nimbus({"status"}, dir.path());
  EXPECT_NE(up.out.find(broker.url() + " (connected)"), std::string::npos) << up.out;
  MqttTestClient device(broker.port());
  MqttMessage out = reply_to(host, device, "out/#", "in/x", "hello");
  EXPECT_EQ(out.topic, "out/relayed");
  EXPECT_EQ(out.payload, "hello|relay");
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing

namespace nimbus::testing {
namespace {

TEST(Examples, IotTelemetry) {
  TempDir dir;
  std::filesystem::copy(std::filesystem::path(NIMBUS_SOURCE_DIR) / "examples" / "iot-telemetry", dir.path(),
                        std::filesystem::copy_options::recursive);
  std::filesystem::remove_all(dir.path() / ".nimbus");
  MosquittoBroker broker(dir.path() / "broker");
  ASSERT_TRUE(broker.start()) << broker.error();
  ::setenv("MQTT_URL", broker.url().c_str(), 1);  // the manifest's ${MQTT_URL:-...}
  Host host(dir.path());
  ::unsetenv("MQTT_URL");
  ASSERT_TRUE(host.started()) << host.errors();
  ASSERT_TRUE(host.wait_for_output("\"msg\":\"mqtt subscribed\"")) << host.output();
  MqttTestClient devices(broker.port());
  ASSERT_TRUE(devices.subscribe("devices/+/commands"));
  // d1: one minute averaging 21, the next 37.5 (above the threshold of 30); d2: one reading.
  for (auto [device, t, temp] : {std::tuple{"d1", 1700000000, 20}, {"d1", 1700000010, 22}, {"d1", 1700000060, 40},
                                 {"d1", 1700000070, 35}, {"d2", 1700000005, 10}}) {
    std::string reading = "{\"device\": \"" + std::string(device) + "\", \"t\": " + std::to_string(t) +
                          ", \"temp\": " + std::to_string(temp) + "}";
    ASSERT_TRUE(devices.publish("devices/" + std::string(device) + "/telemetry", reading));
  }
  ASSERT_TRUE(devices.publish("devices/d3/telemetry", "not json"));

  json::object d1;
  ASSERT_TRUE(eventually([&] {
    Response r = request(host.http_port(), "GET", "/devices/d1/minutes");
    if (r.status != 200) return false;
    d1 = json::parse(r.body).as_object();
    auto& rows = d1["minutes"].as_array();
    return rows.size() == 2 && rows[0].as_object().at("count") == 2 && rows[1].as_object().at("count") == 2;
  }, 30000)) << json::serialize(d1) << host.output();
  auto& rows = d1["minutes"].as_array();
  EXPECT_EQ(rows[0].as_object().at("minute"), "2023-11-14T22:13:00Z");
  EXPECT_EQ(rows[0].as_object().at("avg").to_number<double>(), 21.0);
  EXPECT_EQ(rows[1].as_object().at("minute"), "2023-11-14T22:14:00Z");
  EXPECT_EQ(rows[1].as_object().at("avg").to_number<double>(), 37.5);
  EXPECT_EQ(rows[1].as_object().at("max").to_number<double>(), 40.0);
  // d2's reading is on another partition of the stream, aggregated on its own: wait for it too.
  Response d2;
  ASSERT_TRUE(eventually([&] { return (d2 = request(host.http_port(), "GET", "/devices/d2/minutes")).status == 200; },
                         30000))
      << d2.status << " " << d2.body << host.output();
  EXPECT_EQ(json::parse(d2.body).at("minutes").as_array().at(0).at("avg").to_number<double>(), 10.0);
  EXPECT_EQ(request(host.http_port(), "GET", "/devices/nobody/minutes").status, 404);

  // One alert, for d1's second minute: logged by the topic's subscriber, and a command to d1.
  std::vector<Message> alerts;
  ASSERT_TRUE(eventually([&] { return (alerts = peek(dir, "alert-log")).size() == 1; })) << host.output();
  json::object alert = json::parse(alerts[0].payload).as_object();
  EXPECT_EQ(alert["device"], "d1");
  EXPECT_EQ(alert["minute"], "2023-11-14T22:14:00Z");
  auto commands = devices.wait_messages(1);
  ASSERT_EQ(commands.size(), 1u) << host.output();
  EXPECT_EQ(commands[0].topic, "devices/d1/commands");
  EXPECT_EQ(json::parse(commands[0].payload).at("command"), "cool-down");
  // The malformed reading waits with its error after its two attempts.
  std::vector<Message> dead;
  ASSERT_TRUE(eventually([&] { return (dead = peek(dir, "_mqtt.ingest.dead")).size() == 1; })) << host.output();
  EXPECT_EQ(dead[0].payload, "not json");
  EXPECT_NE(dead[0].last_error.find("ValueError"), std::string::npos) << dead[0].last_error;
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(peek(dir, "alert-log").size(), 1u) << "an alert raised twice";
  EXPECT_EQ(devices.wait_messages(2, 0).size(), 1u);
  EXPECT_EQ(host.signal_and_wait(SIGTERM), 0);
}

}  // namespace
}  // namespace nimbus::testing
