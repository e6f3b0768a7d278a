// nimbus.yaml: every trigger kind's keys, outputs, routes that conflict, retries.
#include "trigger_settings.h"
#include "manifest_test.h"

namespace nimbus {
namespace {

TEST(ManifestTest, TriggersMustBeAList) {
  auto load = parse(one_function(kBasicFn + "triggers:\n  http:\n    route: /x\n"));
  const Diagnostic& d = expect_diag(load, "functions.orders.triggers", "is a mapping");
  EXPECT_NE(d.message.find("expected a list of triggers"), std::string::npos) << d.message;
}

TEST(ManifestTest, TriggerWithTwoKeysIsAnError) {
  auto load = parse(one_function(kBasicFn +
                                 "triggers:\n"
                                 "  - http: {route: /a}\n"
                                 "    queue: {name: q}\n"));
  const Diagnostic& d = expect_diag(load, "functions.orders.triggers[0]", "not a single trigger");
  EXPECT_NE(d.message.find("expected one key"), std::string::npos) << d.message;
}

TEST(ManifestTest, UnknownTriggerKindIsAnError) {
  auto close = parse(one_function(kBasicFn + "triggers:\n  - htp: {route: /a}\n"));
  const Diagnostic& d = expect_diag(close, "functions.orders.triggers[0].htp", "unknown trigger kind 'htp'");
  EXPECT_NE(d.message.find("did you mean 'http'?"), std::string::npos) << d.message;

  auto far = parse(one_function(kBasicFn + "triggers:\n  - carrier_pigeon: {}\n"));
  const Diagnostic& f = expect_diag(far, "functions.orders.triggers[0].carrier_pigeon", "unknown trigger kind");
  EXPECT_NE(f.message.find("expected one of: http, queue"), std::string::npos) << f.message;
}

TEST(ManifestTest, EveryTriggerKindIsBuiltAndAnUnknownOneListsThem) {
  auto load = parse(one_function(kBasicFn + "triggers:\n  - webhook: {url: x}\n"));
  const Diagnostic& d = expect_diag(load, "functions.orders.triggers[0].webhook", "unknown trigger kind");
  EXPECT_NE(d.message.find("stream, blob, mqtt, file"), std::string::npos) << d.message;
}

TEST(ManifestTest, MqttBrokerTriggersAndOutputs) {
  const std::string broker =
      "mqtt: {url: \"mqtt://broker.local:1884\", client_id: shop-1, username: u, password: p, keepalive: 20s}\n";
  auto load = parse(broker + one_function(kBasicFn + "triggers:\n"
                                                     "  - mqtt: {topic: \"devices/+/telemetry\", qos: 1, lease: 5s, batch_size: 8}\n"
                                                     "  - mqtt: {topic: \"site/#\", qos: 0}\n"
                                                     "outputs:\n  commands: {mqtt: \"devices/{device}/commands\"}\n"
                                                     "  any: {mqtt: \"\"}\n"));
  ASSERT_TRUE(load.app.has_value() && load.app->mqtt.has_value()) << load.report();
  const AppSpec& app = *load.app;
  EXPECT_EQ(app.mqtt->host, "broker.local");
  EXPECT_EQ(app.mqtt->port, 1884);
  EXPECT_EQ(app.mqtt->client_id, "shop-1");
  EXPECT_EQ(app.mqtt->username, "u");
  EXPECT_EQ(app.mqtt->password, "p");
  EXPECT_EQ(app.mqtt->keepalive, std::chrono::seconds(20));
  const auto& t = app.functions[0].triggers;
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].kind, TriggerKind::named("mqtt"));
  EXPECT_EQ(settings_of<MqttTriggerSpec>(t[0]).filter, "devices/+/telemetry");
  EXPECT_EQ(settings_of<MqttTriggerSpec>(t[0]).qos, 1);
  EXPECT_EQ(find_trigger_kind("mqtt")->feed(app.functions[0], t[0])->queue, "_mqtt.orders");  // where its messages wait
  EXPECT_EQ(settings_of<MqttTriggerSpec>(t[0]).lease, std::chrono::seconds(5));
  EXPECT_EQ(settings_of<MqttTriggerSpec>(t[0]).batch_size, 8);
  EXPECT_EQ(settings_of<MqttTriggerSpec>(t[1]).qos, 0);
  const auto& outs = app.functions[0].outputs;
  ASSERT_EQ(outs.size(), 2u);
  EXPECT_EQ(outs[0].kind, OutputSpec::Kind::mqtt);
  EXPECT_EQ(outs[0].target, "devices/{device}/commands");
  EXPECT_EQ(outs[1].target, "");  // the topic comes from each message's metadata

  auto defaults = parse("name: shop\nmqtt: {url: mqtt://127.0.0.1}\nfunctions:\n");
  ASSERT_TRUE(defaults.app.has_value()) << defaults.report();
  EXPECT_EQ(defaults.app->mqtt->port, 1883);
  EXPECT_EQ(defaults.app->mqtt->client_id, "nimbus-shop");  // stable: the broker keeps the session under it
}

TEST(ManifestTest, MqttProblemsNameTheKeyAndWhatIsExpected) {
  const std::string at = "functions.orders.triggers[0].mqtt";
  const std::string broker = "mqtt: {url: mqtt://127.0.0.1:1883}\n";
  auto with_broker = [&](const std::string& body) { return broker + one_function(kBasicFn + body); };
  expect_diag(parse(with_broker("triggers:\n  - mqtt: {qos: 1}\n")), at + ".topic", "is missing");
  expect_diag(parse(with_broker("triggers:\n  - mqtt: {topic: \"a/b#\"}\n")), at + ".topic", "'#' inside a level");
  expect_diag(parse(with_broker("triggers:\n  - mqtt: {topic: \"a/#/b\"}\n")), at + ".topic", "before the last level");
  expect_diag(parse(with_broker("triggers:\n  - mqtt: {topic: \"a/b+/c\"}\n")), at + ".topic", "'+' inside a level");
  expect_diag(parse(with_broker("triggers:\n  - mqtt: {topic: t, qos: 2}\n")), at + ".qos", "from 0 to 1");
  expect_diag(parse(with_broker("triggers:\n  - mqtt: {topic: t, qso: 1}\n")), at + ".qso", "did you mean 'qos'?");
  expect_diag(parse(with_broker("outputs:\n  c: {mqtt: \"devices/+/commands\"}\n")), "functions.orders.outputs.c.mqtt",
              "wildcard");
  expect_diag(parse(with_broker("outputs:\n  c: {mqtt: \"devices/{dev/commands\"}\n")),
              "functions.orders.outputs.c.mqtt", "placeholder across a '/'");
  // Triggers and outputs need the app's broker.
  const auto no_broker = parse(one_function(kBasicFn + "triggers:\n  - mqtt: {topic: t}\n"));  // held: none points into it
  const Diagnostic& none = expect_diag(no_broker, "mqtt", "is missing, but function 'orders' uses MQTT");
  EXPECT_NE(none.message.find("mqtt: {url: mqtt://127.0.0.1:1883}"), std::string::npos) << none.message;
  expect_diag(parse("name: shop\nmqtt: {url: \"http://x\"}\nfunctions:\n"), "mqtt.url", "not an MQTT broker URL");
  expect_diag(parse("name: shop\nmqtt: {url: \"mqtts://x:8883\"}\nfunctions:\n"), "mqtt.url", "TLS");
  expect_diag(parse("name: shop\nmqtt: {url: \"mqtt://x:99999\"}\nfunctions:\n"), "mqtt.url", "port '99999'");
  expect_diag(parse("name: shop\nmqtt: {client_id: c}\nfunctions:\n"), "mqtt.url", "is missing");
  expect_diag(parse("name: shop\nmqtt: {url: mqtt://x, password: p}\nfunctions:\n"), "mqtt.password",
              "without mqtt.username");
}

TEST(ManifestTest, BlobTriggersOutputsUploadRoutesAndTheSizeLimit) {
  auto load = parse("name: shop\nblobs: {max_size: 8MiB}\nfunctions:\n  orders:\n    runtime: native\n"
                    "    handler: functions/orders\n"
                    "    triggers:\n      - blob: {path: \"uploads/{name}.csv\", events: [created, updated, deleted], lease: 10s}\n"
                    "      - blob: {path: \"in/{year}/{rest*}\"}\n"
                    "      - http: {route: \"/up/{*path}\", auth: function, upload: {container: uploads}}\n"
                    "    outputs:\n      thumbs: {blob: \"thumbnails/{name}.png\"}\n");
  ASSERT_TRUE(load.app.has_value()) << load.report();
  const AppSpec& app = *load.app;
  EXPECT_EQ(app.max_blob_size, 8u << 20);
  const auto& t = app.functions[0].triggers;
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].kind, TriggerKind::named("blob"));
  EXPECT_EQ(settings_of<BlobTriggerSpec>(t[0]).container, "uploads");
  EXPECT_EQ(settings_of<BlobTriggerSpec>(t[0]).pattern, "{name}.csv");
  EXPECT_EQ(settings_of<BlobTriggerSpec>(t[0]).events, kBlobCreated | kBlobUpdated | kBlobDeleted);
  EXPECT_EQ(settings_of<BlobTriggerSpec>(t[0]).lease, std::chrono::seconds(10));
  EXPECT_EQ(settings_of<BlobTriggerSpec>(t[1]).container, "in");
  EXPECT_EQ(settings_of<BlobTriggerSpec>(t[1]).events, kBlobCreated | kBlobUpdated);  // the default
  EXPECT_EQ(settings_of<HttpTriggerSpec>(t[2]).upload_container, "uploads");
  EXPECT_EQ(settings_of<HttpTriggerSpec>(t[2]).methods, (std::vector<std::string>{"PUT", "POST"}));
  ASSERT_EQ(app.functions[0].outputs.size(), 1u);
  EXPECT_EQ(app.functions[0].outputs[0].kind, OutputSpec::Kind::blob);
  EXPECT_EQ(app.functions[0].outputs[0].target, "thumbnails");
  EXPECT_EQ(app.functions[0].outputs[0].blob_name, "{name}.png");

  const std::string at = "functions.orders.triggers[0]";
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - blob: {events: [created]}\n")), at + ".blob.path", "is missing");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - blob: {path: uploads}\n")), at + ".blob.path",
              "names a container only");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - blob: {path: \"Up/{name}\"}\n")), at + ".blob.path",
              "container 'Up'");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - blob: {path: \"up/{name\"}\n")), at + ".blob.path",
              "no closing '}'");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - blob: {path: \"up/{size}.csv\"}\n")), at + ".blob.path",
              "hide the built-in blob.size");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - blob: {path: \"up/{a}\", events: [changed]}\n")),
              at + ".blob.events[0]", "'changed' is not allowed");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - http: {route: /up, upload: {container: uploads}}\n")),
              at + ".http.upload", "route parameter");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - http: {route: \"/up/{p}\", methods: [GET], upload: {container: up}}\n")),
              at + ".http.upload", "PUT and POST only");
  expect_diag(parse(one_function(kBasicFn + "outputs:\n  thumbs: {blob: \"thumbnails/../{x}\"}\n")),
              "functions.orders.outputs.thumbs.blob", "'..'");
  expect_diag(parse("name: shop\nblobs: {max_size: huge}\nfunctions:\n"), "blobs.max_size", "not a size");
}

TEST(ManifestTest, StreamsTheirTriggersAndOutputs) {
  auto load = parse("name: shop\nstreams:\n  telemetry: {partitions: 8, retention: 7d, max_records: 100000}\n"
                    "functions:\n  orders:\n    runtime: native\n    handler: functions/orders\n"
                    "    triggers:\n      - stream: {name: telemetry, batch_size: 50, max_wait: 200ms, start: latest}\n"
                    "      - stream: {name: clicks, group: clicks-v2}\n"
                    "    outputs:\n      alerts: {stream: alerts}\n      again: {stream: telemetry}\n");
  ASSERT_TRUE(load.app.has_value()) << load.report();
  const AppSpec& app = *load.app;
  ASSERT_EQ(app.streams.size(), 3u);  // declared, plus those named with defaults
  const StreamSpec* t = app.find_stream("telemetry");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->partitions, 8);
  EXPECT_EQ(t->retention, std::chrono::hours(24 * 7));
  EXPECT_EQ(t->max_records, 100000);
  ASSERT_NE(app.find_stream("clicks"), nullptr);
  EXPECT_EQ(app.find_stream("clicks")->partitions, 4);
  const auto& tr = app.functions[0].triggers;
  EXPECT_EQ(tr[0].kind, TriggerKind::named("stream"));
  EXPECT_EQ(settings_of<StreamTriggerSpec>(tr[0]).group, "orders");  // the function's name by default
  EXPECT_EQ(settings_of<StreamTriggerSpec>(tr[0]).batch_size, 50);
  EXPECT_EQ(settings_of<StreamTriggerSpec>(tr[0]).max_wait, std::chrono::milliseconds(200));
  EXPECT_TRUE(settings_of<StreamTriggerSpec>(tr[0]).from_latest);
  EXPECT_EQ(settings_of<StreamTriggerSpec>(tr[1]).group, "clicks-v2");
  EXPECT_FALSE(settings_of<StreamTriggerSpec>(tr[1]).from_latest);
  const auto& outs = app.functions[0].outputs;
  ASSERT_EQ(outs.size(), 2u);
  EXPECT_EQ(outs[0].kind, OutputSpec::Kind::stream);
  EXPECT_EQ(outs[0].partitions, 4);
  EXPECT_EQ(outs[1].partitions, 8);  // learnt from the declaration

  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - stream: {batch_size: 5}\n")),
              "functions.orders.triggers[0].stream.name", "is missing");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - stream: {name: s, start: middle}\n")),
              "functions.orders.triggers[0].stream.start", "'middle' is not allowed");
  expect_diag(parse("name: shop\nstreams:\n  s: {partitions: 0}\nfunctions:\n"), "streams.s.partitions", "");
  expect_diag(parse("name: shop\nstreams:\n  s: {shards: 3}\nfunctions:\n"), "streams.s.shards", "unknown key");
  expect_diag(parse("name: shop\nstreams:\n  Bad_Name: {}\nfunctions:\n"), "streams.Bad_Name", "not a valid stream name");
}

TEST(ManifestTest, FileTriggersTakeAFolderAPatternAndAMaximumSize) {
  auto load = parse(one_function(kBasicFn + "triggers:\n  - file: {path: inbox, pattern: \"*.csv\", max_size: 1MiB}\n"
                                            "  - file: {path: /var/spool/legacy}\n"));
  ASSERT_TRUE(load.app.has_value()) << load.report();
  const auto& t = load.app->functions[0].triggers;
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].kind, TriggerKind::named("file"));
  EXPECT_EQ(settings_of<FileTriggerSpec>(t[0]).path, "/srv/shop/inbox");  // relative to the app folder
  EXPECT_EQ(settings_of<FileTriggerSpec>(t[0]).pattern, "*.csv");
  EXPECT_EQ(settings_of<FileTriggerSpec>(t[0]).max_size, 1u << 20);
  EXPECT_EQ(settings_of<FileTriggerSpec>(t[1]).path, "/var/spool/legacy");
  EXPECT_EQ(settings_of<FileTriggerSpec>(t[1]).pattern, "*");
  EXPECT_EQ(settings_of<FileTriggerSpec>(t[1]).max_size, 64u << 20);
}

TEST(ManifestTest, OrchestrationAndActivityTriggersTakeAuthBatchSizeAndLease) {
  auto load = parse(one_function(kBasicFn + "triggers:\n  - orchestration: {auth: anonymous, lease: 5s}\n"
                                            "  - activity: {batch_size: 4}\n  - orchestration:\n"));
  ASSERT_TRUE(load.app.has_value()) << load.report();
  const auto& t = load.app->functions[0].triggers;
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].kind, TriggerKind::named("orchestration"));
  EXPECT_EQ(settings_of<durable::OrchestrationTriggerSpec>(t[0]).auth, AuthLevel::anonymous);
  EXPECT_EQ(settings_of<durable::OrchestrationTriggerSpec>(t[0]).lease, std::chrono::seconds(5));
  EXPECT_EQ(settings_of<durable::ActivityTriggerSpec>(t[1]).batch_size, 4);
  EXPECT_EQ(settings_of<durable::OrchestrationTriggerSpec>(t[2]).auth, AuthLevel::function) << "function keys by default";
  const std::string at = "functions.orders.triggers[0]";
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - orchestration: {auht: anonymous}\n")),
              at + ".orchestration.auht", "did you mean 'auth'?");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - activity: {batch_size: 0}\n")), at + ".activity.batch_size",
              "");
  auto kept = parse(one_function(kBasicFn + "triggers:\n  - orchestration: {retention: 7d}\n"));
  ASSERT_TRUE(kept.app.has_value()) << kept.report();
  EXPECT_EQ(settings_of<durable::OrchestrationTriggerSpec>(kept.app->functions[0].triggers[0]).retention,
            std::chrono::hours(24 * 7));
  EXPECT_EQ(settings_of<durable::OrchestrationTriggerSpec>(t[0]).retention, Duration::zero()) << "kept by default";
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - orchestration: {retention: forever}\n")),
              at + ".orchestration.retention", "");
  auto versioned = parse(one_function(kBasicFn + "triggers:\n  - orchestration: {version: \"2.1\", versioning: {on_mismatch: fail}}\n"));
  ASSERT_TRUE(versioned.app.has_value()) << versioned.report();
  EXPECT_EQ(settings_of<durable::OrchestrationTriggerSpec>(versioned.app->functions[0].triggers[0]).version, "2.1");
  EXPECT_EQ(settings_of<durable::OrchestrationTriggerSpec>(versioned.app->functions[0].triggers[0]).on_mismatch,
            durable::OnMismatch::fail);
  EXPECT_EQ(settings_of<durable::OrchestrationTriggerSpec>(t[0]).on_mismatch, durable::OnMismatch::replay);
  auto keep_old = parse(one_function(kBasicFn + "triggers:\n  - orchestration: {versioning: {on_mismatch: keep_old}}\n"));
  ASSERT_TRUE(keep_old.app.has_value()) << keep_old.report();
  EXPECT_EQ(settings_of<durable::OrchestrationTriggerSpec>(keep_old.app->functions[0].triggers[0]).on_mismatch,
            durable::OnMismatch::keep_old);
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - orchestration: {versioning: {on_mismach: fail}}\n")),
              at + ".orchestration.versioning.on_mismach", "did you mean 'on_mismatch'?");
}

TEST(ManifestTest, EntityTriggersTakeAuthBatchSizeAndLease) {
  auto load = parse(one_function(kBasicFn + "triggers:\n  - entity: {auth: anonymous, batch_size: 8, lease: 3s}\n  - entity:\n"));
  ASSERT_TRUE(load.app.has_value()) << load.report();
  const auto& t = load.app->functions[0].triggers;
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].kind, TriggerKind::named("entity"));
  EXPECT_EQ(settings_of<durable::EntityTriggerSpec>(t[0]).auth, AuthLevel::anonymous);
  EXPECT_EQ(settings_of<durable::EntityTriggerSpec>(t[0]).batch_size, 8);
  EXPECT_EQ(settings_of<durable::EntityTriggerSpec>(t[0]).lease, std::chrono::seconds(3));
  EXPECT_EQ(settings_of<durable::EntityTriggerSpec>(t[1]).auth, AuthLevel::function) << "function keys by default";
  const std::string at = "functions.orders.triggers[0].entity";
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - entity: {batch: 3}\n")), at + ".batch", "");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - entity: {auth: everyone}\n")), at + ".auth", "");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - entity: {retention: 1d}\n")), at + ".retention", "");
}

TEST(ManifestTest, FileTriggerProblemsNameTheFunctionAndTheKey) {
  const std::string at = "functions.orders.triggers[0].file";
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - file: {pattern: \"*.csv\"}\n")), at + ".path", "is missing");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - file: {path: inbox, patern: \"*.csv\"}\n")), at + ".patern",
              "did you mean 'pattern'?");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - file: {path: inbox, pattern: \"a/*.csv\"}\n")),
              at + ".pattern", "no '/'");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - file: {path: inbox, max_size: lots}\n")), at + ".max_size",
              "not a size");
  const std::string plain = "/tmp/nimbus-manifest-plain-" + new_suffix();
  std::ofstream(plain) << "not a folder";
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - file: {path: " + plain + "}\n")), at + ".path", "is a file");
  ::unlink(plain.c_str());
}

TEST(ManifestTest, TimerTriggersTakeACronAZoneAndRunOnStartup) {
  auto load = parse(one_function(kBasicFn + "triggers:\n  - timer: {schedule: \"0 30 2 * * MON-FRI\", time_zone: Europe/Berlin, "
                                            "run_on_startup: true}\n  - timer: {schedule: \"*/5 * * * *\"}\n"));
  ASSERT_TRUE(load.app.has_value()) << load.report();
  const auto& t = load.app->functions[0].triggers;
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].kind, TriggerKind::named("timer"));
  EXPECT_EQ(settings_of<TimerTriggerSpec>(t[0]).schedule, "0 30 2 * * MON-FRI");
  EXPECT_EQ(settings_of<TimerTriggerSpec>(t[0]).time_zone, "Europe/Berlin");
  EXPECT_TRUE(settings_of<TimerTriggerSpec>(t[0]).run_on_startup);
  EXPECT_EQ(settings_of<TimerTriggerSpec>(t[1]).time_zone, "UTC");
  auto bad = parse(one_function(kBasicFn + "triggers:\n  - timer: {schedule: \"0 61 * * * *\"}\n"));
  const Diagnostic& d = expect_diag(bad, "functions.orders.triggers[0].timer.schedule", "minute field '61'");
  EXPECT_GT(d.line, 0);
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - timer: {time_zone: UTC}\n")),
              "functions.orders.triggers[0].timer.schedule", "is missing");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - timer: {schedule: \"0 0 0 30 2 *\"}\n")),
              "functions.orders.triggers[0].timer.schedule", "never matches");
}

TEST(ManifestTest, QueueAndTopicTriggersOutputsRetryAndDurability) {
  auto load = parse("name: shop\ndurability: fsync\nfunctions:\n  orders:\n" +
                    std::string("    runtime: native\n    handler: functions/orders\n") +
                    "    triggers:\n"
                    "      - queue: {name: orders, batch_size: 4, max_wait: 250ms, lease: 2m}\n"
                    "      - topic: {name: order-events, filter: {type: order.created, subject_prefix: eu/}}\n"
                    "      - topic: {name: audit, subscription: orders-audit}\n"
                    "    outputs:\n"
                    "      done: {queue: shipped}\n"
                    "      events: {topic: order-events}\n"
                    "      view: {state: read-model}\n"
                    "    retry: {max_attempts: 3, backoff: fixed, initial: 500ms, max: 10s, jitter: 0}\n");
  ASSERT_TRUE(load.app.has_value()) << load.report();
  EXPECT_TRUE(load.app->fsync);
  const FunctionSpec& fn = load.app->functions[0];
  ASSERT_EQ(fn.triggers.size(), 3u);
  EXPECT_EQ(fn.triggers[0].kind, TriggerKind::named("queue"));
  EXPECT_EQ(settings_of<QueueTriggerSpec>(fn.triggers[0]).name, "orders");
  EXPECT_EQ(settings_of<QueueTriggerSpec>(fn.triggers[0]).batch_size, 4);
  EXPECT_EQ(settings_of<QueueTriggerSpec>(fn.triggers[0]).max_wait, 250ms);
  EXPECT_EQ(settings_of<QueueTriggerSpec>(fn.triggers[0]).lease, 2min);
  EXPECT_EQ(fn.triggers[1].kind, TriggerKind::named("topic"));
  EXPECT_EQ(settings_of<TopicTriggerSpec>(fn.triggers[1]).subscription, "orders") << "a subscription is named after its function";
  EXPECT_EQ(settings_of<TopicTriggerSpec>(fn.triggers[1]).type, "order.created");
  EXPECT_EQ(settings_of<TopicTriggerSpec>(fn.triggers[1]).subject_prefix, "eu/");
  EXPECT_EQ(settings_of<TopicTriggerSpec>(fn.triggers[2]).subscription, "orders-audit");
  ASSERT_EQ(fn.outputs.size(), 3u);
  EXPECT_EQ(fn.outputs[0].name, "done");
  EXPECT_EQ(fn.outputs[0].kind, OutputSpec::Kind::queue);
  EXPECT_EQ(fn.outputs[1].kind, OutputSpec::Kind::topic);
  EXPECT_EQ(fn.outputs[2].kind, OutputSpec::Kind::state);
  EXPECT_EQ(fn.outputs[2].target, "read-model");
  EXPECT_EQ(fn.retry.max_attempts, 3);
  EXPECT_FALSE(fn.retry.exponential);
  EXPECT_EQ(fn.retry.initial, 500ms);
  EXPECT_EQ(fn.retry.jitter, 0.0);
  EXPECT_FALSE(parse(one_function(kBasicFn)).app->fsync) << "default durability survives kill -9, not power loss";

  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - queue: {batch_size: 2}\n")),
              "functions.orders.triggers[0].queue.name", "is missing");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - queue: {name: Orders/1}\n")),
              "functions.orders.triggers[0].queue.name", "not a valid queue name");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - queue: {name: q, filter: {type: x}}\n")),
              "functions.orders.triggers[0].queue.filter", "unknown key");
  expect_diag(parse(one_function(kBasicFn + "outputs:\n  done: {bucket: x}\n")), "functions.orders.outputs.done.bucket",
              "expected queue, topic, state, stream, mqtt or blob");
  expect_diag(parse(one_function(kBasicFn + "retry: {max_attempts: 0}\n")), "functions.orders.retry.max_attempts",
              "out of range");
  expect_diag(parse(one_function(kBasicFn + "retry: {jitter: 2}\n")), "functions.orders.retry.jitter", "fraction");
  expect_diag(parse(one_function(kBasicFn + "retry: {backoff: linear}\n")), "functions.orders.retry.backoff",
              "not allowed");
  expect_diag(parse("name: shop\ndurability: maybe\nfunctions: {}\n"), "durability", "not allowed");
}

TEST(ManifestTest, AsyncRoutesAndTheReservedPrefix) {
  auto load = parse(one_function(kBasicFn + "triggers:\n  - http: {route: /jobs, methods: [POST], async: true}\n"));
  ASSERT_TRUE(load.app.has_value()) << load.report();
  EXPECT_TRUE(settings_of<HttpTriggerSpec>(load.app->functions[0].triggers[0]).asynchronous);
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - http: {route: /_nimbus/x}\n")),
              "functions.orders.triggers[0].http.route", "keeps for itself");
  expect_diag(parse(one_function(kBasicFn + "triggers:\n  - http: {route: /a, async: maybe}\n")),
              "functions.orders.triggers[0].http.async", "");
}

TEST(RetryPolicyTest, BackoffGrowsToItsCapWithBoundedJitter) {
  RetryPolicy r;
  r.initial = 1s;
  r.max = 10s;
  r.jitter = 0;
  EXPECT_EQ(r.delay_after(1, 0.5), 1s);
  EXPECT_EQ(r.delay_after(2, 0.5), 2s);
  EXPECT_EQ(r.delay_after(4, 0.5), 8s);
  EXPECT_EQ(r.delay_after(9, 0.5), 10s);
  r.jitter = 0.2;
  EXPECT_EQ(r.delay_after(1, 0.0), 800ms);
  EXPECT_EQ(r.delay_after(1, 1.0), 1200ms);
  r.exponential = false;
  r.jitter = 0;
  EXPECT_EQ(r.delay_after(5, 0.3), 1s);
}

TEST(ManifestTest, HttpTriggerProblems) {
  auto missing = parse(one_function(kBasicFn + "triggers:\n  - http: {methods: [GET]}\n"));
  expect_diag(missing, "functions.orders.triggers[0].http.route", "is missing");

  auto invalid = parse(one_function(kBasicFn + "triggers:\n  - http: {route: \"/a/{id}/{id}\"}\n"));
  expect_diag(invalid, "functions.orders.triggers[0].http.route", "twice");

  auto method = parse(one_function(kBasicFn + "triggers:\n  - http: {route: /a, methods: [GET, FETCH]}\n"));
  const Diagnostic& m = expect_diag(method, "functions.orders.triggers[0].http.methods[1]", "'FETCH' is not an HTTP method");
  EXPECT_NE(m.message.find("expected one of: GET, POST"), std::string::npos) << m.message;

  auto auth = parse(one_function(kBasicFn + "triggers:\n  - http: {route: /a, auth: admin}\n"));
  const Diagnostic& a = expect_diag(auth, "functions.orders.triggers[0].http.auth", "'admin' is not allowed");
  EXPECT_NE(a.message.find("anonymous"), std::string::npos) << a.message;

  auto key = parse(one_function(kBasicFn + "triggers:\n  - http: {route: /a, metods: [GET]}\n"));
  const Diagnostic& k = expect_diag(key, "functions.orders.triggers[0].http.metods", "unknown key");
  EXPECT_NE(k.message.find("did you mean 'methods'?"), std::string::npos) << k.message;
}

TEST(ManifestTest, ConflictingRoutesAcrossFunctionsAreAnError) {
  const std::string text = R"(name: shop
functions:
  a:
    runtime: native
    handler: functions/a
    triggers:
      - http: {route: "/orders/{id}", methods: [GET, POST]}
  b:
    runtime: native
    handler: functions/b
    triggers:
      - http: {route: "/orders/{key}", methods: [POST]}
)";
  auto load = parse(text);
  const Diagnostic& d = expect_diag(load, "functions.b.triggers", "already served by function 'a'");
  EXPECT_NE(d.message.find("/orders/{key}"), std::string::npos) << d.message;
  EXPECT_NE(d.message.find("expected"), std::string::npos) << d.message;
  EXPECT_EQ(d.to_string(), kFile + ": functions.b.triggers: " + d.message)
      << "a problem with no single place has no line";
}

TEST(ManifestTest, SameShapeWithDisjointMethodsIsAllowed) {
  const std::string text = R"(name: shop
functions:
  read:
    runtime: native
    handler: functions/read
    triggers:
      - http: {route: "/orders/{id}", methods: [GET]}
  write:
    runtime: native
    handler: functions/write
    triggers:
      - http: {route: "/orders/{key}", methods: [PUT, DELETE]}
)";
  auto load = parse(text);
  ASSERT_TRUE(load.app.has_value()) << load.report();
  EXPECT_EQ(load.app->functions.size(), 2u);
}

TEST(ManifestTest, AnyMethodRouteConflictsWithEveryMethod) {
  const std::string text = R"(name: shop
functions:
  a:
    runtime: native
    handler: functions/a
    triggers:
      - http: {route: /x}
  b:
    runtime: native
    handler: functions/b
    triggers:
      - http: {route: /x/, methods: [DELETE]}
)";
  expect_diag(parse(text), "functions.b.triggers", "already served by function 'a'");
}


TEST(ManifestTest, GatewayTlsTakesTwoPemFilesAPortAndARedirect) {
  const std::string dir = "/tmp/nimbus-tls-manifest-" + new_suffix();
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/cert.pem") << "x";
  std::ofstream(dir + "/key.pem") << "x";
  const std::string fn = kBasicFn + "triggers:\n  - http: {route: /a}\n";
  auto good = parse("name: shop\ngateway:\n  tls: {cert: " + dir + "/cert.pem, key: " + dir + "/key.pem, port: 9443, redirect_http: true}\n" +
                    one_function(fn).substr(std::string("name: shop\n").size()));
  ASSERT_TRUE(good.app.has_value()) << good.report();
  ASSERT_TRUE(good.app->gateway.tls.has_value());
  EXPECT_EQ(good.app->gateway.tls->cert, dir + "/cert.pem");
  EXPECT_EQ(good.app->gateway.tls->port, 9443);
  EXPECT_TRUE(good.app->gateway.tls->redirect_http);

  auto missing_key = parse("name: shop\ngateway:\n  tls: {cert: " + dir + "/cert.pem}\n" + one_function(fn).substr(11));
  expect_diag(missing_key, "gateway.tls.key", "is missing; expected the private key");
  auto no_file = parse("name: shop\ngateway:\n  tls: {cert: " + dir + "/nope.pem, key: " + dir + "/key.pem}\n" + one_function(fn).substr(11));
  expect_diag(no_file, "gateway.tls.cert", "is not a file");
  auto bad_port = parse("name: shop\ngateway:\n  tls: {cert: " + dir + "/cert.pem, key: " + dir + "/key.pem, port: 70000}\n" +
                        one_function(fn).substr(11));
  expect_diag(bad_port, "gateway.tls.port", "");
  auto typo = parse("name: shop\ngateway:\n  tls: {cert: " + dir + "/cert.pem, key: " + dir + "/key.pem, redirect: true}\n" +
                    one_function(fn).substr(11));
  expect_diag(typo, "gateway.tls.redirect", "unknown key");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace nimbus
