// `nimbus new NAME --trigger KIND` for every trigger kind the manifest knows: each scaffold is a
// manifest entry that validates and a handler that runs, and the queue one is shown running
// end to end on a real host.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "harness.h"

namespace nimbus::testing {
namespace {

TEST(CliNew, EveryTriggerKindScaffoldsAFunctionThatValidates) {
  TempDir dir;
  ASSERT_EQ(run_nimbus({"init", "app"}, dir.path()).exit_code, 0);
  const std::filesystem::path app = dir.path() / "app";
  for (const char* kind : {"queue", "topic", "timer", "stream", "blob", "file"}) {
    for (const char* runtime : {"python", "node"}) {
      const std::string name = std::string(kind) + "-" + runtime;
      CommandResult made = run_nimbus({"new", name, "--runtime", runtime, "--trigger", kind}, app);
      ASSERT_EQ(made.exit_code, 0) << kind << " " << runtime << ": " << made.err;
    }
  }
  const std::string manifest = dir.read("app/nimbus.yaml");
  EXPECT_NE(manifest.find("- queue:\n          name: queue-python"), std::string::npos) << manifest;
  EXPECT_NE(manifest.find("- timer:\n          schedule: \"0 */5 * * * *\""), std::string::npos) << manifest;
  EXPECT_NE(manifest.find("- blob:\n          path: \"blob-node/{name}\""), std::string::npos) << manifest;
  const std::string py = dir.read("app/functions/stream-python/main.py");
  EXPECT_EQ(py.rfind("# Called for batches of records appended to the stream stream-python-records", 0), 0u) << py;
  CommandResult valid = run_nimbus({"validate"}, app);
  EXPECT_EQ(valid.exit_code, 0) << valid.out << valid.err;

  // MQTT needs the app's broker: the manifest check says so, and nothing is written.
  CommandResult mqtt = run_nimbus({"new", "telemetry", "--runtime", "python", "--trigger", "mqtt"}, app);
  EXPECT_EQ(mqtt.exit_code, 1);
  EXPECT_NE(mqtt.err.find("broker"), std::string::npos) << mqtt.err;
  EXPECT_FALSE(std::filesystem::exists(app / "functions" / "telemetry"));
  CommandResult unknown = run_nimbus({"new", "x", "--trigger", "quee"}, app);
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.err.find("there is no trigger kind 'quee'; use --trigger with one of: http, queue, topic, timer, "
                             "stream, blob, mqtt, file, cloudevents"),
            std::string::npos)
      << unknown.err;
}

TEST(CliNew, AScaffoldedQueueFunctionRunsForEachMessage) {
  TempDir dir;
  ASSERT_EQ(run_nimbus({"init", "app"}, dir.path()).exit_code, 0);
  const std::filesystem::path app = dir.path() / "app";
  ASSERT_EQ(run_nimbus({"new", "orders", "--runtime", "python", "--trigger", "queue"}, app).exit_code, 0);
  ASSERT_EQ(run_nimbus({"new", "ledger", "--runtime", "node", "--trigger", "queue"}, app).exit_code, 0);
  Host host(app);
  ASSERT_TRUE(host.started()) << host.errors();
  const std::map<std::string, std::string> auth = {{"authorization", "Bearer " + host.admin_token()}};
  EXPECT_EQ(request(host.admin_port(), "POST", "/admin/queues/orders/messages", auth, "hello").status, 201);
  EXPECT_EQ(request(host.admin_port(), "POST", "/admin/queues/ledger/messages", auth, "hello!").status, 201);
  bool seen = false;
  for (int i = 0; i < 750 && !seen; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const std::string out = host.output();
    seen = out.find("orders: queue event, 5 bytes") != std::string::npos &&
           out.find("ledger: queue event, 6 bytes") != std::string::npos;
  }
  EXPECT_TRUE(seen) << host.output();
}

}  // namespace
}  // namespace nimbus::testing
