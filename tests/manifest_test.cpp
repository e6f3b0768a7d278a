// nimbus.yaml: a full manifest becomes the right AppSpec; every class of mistake becomes a
// diagnostic that says where (FILE:LINE:COL and the key path), what, and what is expected.
// App and function keys, values, environment expansion, loading (triggers: manifest_triggers_test.cpp).
#include "trigger_settings.h"
#include "manifest_test.h"

namespace nimbus {
namespace {

TEST(ManifestTest, FullManifestProducesTheAppSpec) {
  auto load = parse(kFullManifest, {{"STORE_URL", "redis://127.0.0.1:6379"}, {"DB_PASSWORD", "s3cret"}});
  ASSERT_TRUE(load.app.has_value()) << load.report();
  EXPECT_TRUE(load.diagnostics.empty());
  EXPECT_EQ(load.report(), "");
  const AppSpec& app = *load.app;

  EXPECT_EQ(app.name, "shop");
  EXPECT_EQ(app.store, "redis://127.0.0.1:6379");
  EXPECT_EQ(app.dir, std::filesystem::path("/srv/shop"));
  EXPECT_EQ(app.manifest, std::filesystem::path(kFile));
  EXPECT_EQ(app.http.max_body, 1024u * 1024);
  EXPECT_EQ(app.http.max_header, 8u * 1024);
  EXPECT_EQ(app.http.read_timeout, Duration(5s));
  EXPECT_EQ(app.http.idle_timeout, Duration(2min));
  EXPECT_EQ(app.shutdown_grace, Duration(15s));
  EXPECT_EQ(app.worker_threads, 8);

  ASSERT_EQ(app.functions.size(), 2u);
  const FunctionSpec* orders = app.find("orders");
  ASSERT_NE(orders, nullptr);
  EXPECT_EQ(orders->name, "orders");
  EXPECT_EQ(orders->runtime, RuntimeKind::native);
  EXPECT_EQ(orders->handler, "functions/orders");
  EXPECT_EQ(orders->timeout, Duration(2500ms));
  EXPECT_EQ(orders->concurrency, 4);
  EXPECT_EQ(orders->wait_queue, 10);
  EXPECT_FALSE(orders->blocking);

  ASSERT_EQ(orders->env.size(), 3u);
  EXPECT_EQ(orders->env[0].name, "REGION");
  EXPECT_EQ(orders->env[0].value, "eu-west") << "${ZONE:-west} falls back to its default";
  EXPECT_FALSE(orders->env[0].secret);
  EXPECT_EQ(orders->env[1].name, "DB_PASSWORD");
  EXPECT_EQ(orders->env[1].value, "s3cret");
  EXPECT_TRUE(orders->env[1].secret);
  EXPECT_EQ(orders->env[2].name, "PLAIN");
  EXPECT_EQ(orders->env[2].value, "visible");
  EXPECT_FALSE(orders->env[2].secret);

  ASSERT_EQ(orders->triggers.size(), 2u);
  EXPECT_EQ(orders->triggers[0].kind, TriggerKind::http);
  EXPECT_EQ(settings_of<HttpTriggerSpec>(orders->triggers[0]).route, "/orders/{id}");
  EXPECT_EQ(settings_of<HttpTriggerSpec>(orders->triggers[0]).methods, (std::vector<std::string>{"GET", "PUT"}))
      << "methods are upper-cased";
  EXPECT_EQ(settings_of<HttpTriggerSpec>(orders->triggers[0]).auth, AuthLevel::function);
  EXPECT_EQ(settings_of<HttpTriggerSpec>(orders->triggers[1]).route, "/orders");
  EXPECT_EQ(settings_of<HttpTriggerSpec>(orders->triggers[1]).methods, (std::vector<std::string>{"POST"}))
      << "a single method may be given without a list";
  EXPECT_EQ(settings_of<HttpTriggerSpec>(orders->triggers[1]).auth, AuthLevel::anonymous);

  const FunctionSpec* health = app.find("health");
  ASSERT_NE(health, nullptr);
  EXPECT_EQ(health->handler, "lib/health.so");
  ASSERT_EQ(health->triggers.size(), 1u);
  EXPECT_EQ(settings_of<HttpTriggerSpec>(health->triggers[0]).route, "/health");
  EXPECT_TRUE(settings_of<HttpTriggerSpec>(health->triggers[0]).methods.empty()) << "no methods means any method";
  EXPECT_EQ(app.find("missing"), nullptr);
}

TEST(ManifestTest, DefaultsApplyWhenKeysAreOmitted) {
  auto load = parse(one_function(kBasicFn));
  ASSERT_TRUE(load.app.has_value()) << load.report();
  const AppSpec defaults;
  const FunctionSpec fn_defaults;
  EXPECT_EQ(load.app->store, defaults.store);
  EXPECT_EQ(load.app->http.max_body, defaults.http.max_body);
  EXPECT_EQ(load.app->worker_threads, defaults.worker_threads);
  EXPECT_EQ(load.app->shutdown_grace, defaults.shutdown_grace);
  ASSERT_EQ(load.app->functions.size(), 1u);
  const auto& fn = load.app->functions[0];
  EXPECT_EQ(fn.timeout, fn_defaults.timeout);
  EXPECT_EQ(fn.concurrency, fn_defaults.concurrency);
  EXPECT_EQ(fn.wait_queue, fn_defaults.wait_queue);
  EXPECT_EQ(fn.blocking, fn_defaults.blocking);
  EXPECT_TRUE(fn.triggers.empty());
  EXPECT_TRUE(fn.env.empty());
}

TEST(ManifestTest, EmptyFunctionsIsAnAppWithNoFunctions) {
  auto load = parse("name: shop\nfunctions:\n");
  ASSERT_TRUE(load.app.has_value()) << load.report();
  EXPECT_TRUE(load.app->functions.empty());
}

TEST(ManifestTest, SqliteStoreUrlIsAccepted) {
  auto load = parse("name: shop\nstore: sqlite:/tmp/x.db\nfunctions:\n");
  ASSERT_TRUE(load.app.has_value()) << load.report();
  EXPECT_EQ(load.app->store, "sqlite:/tmp/x.db");
}

TEST(ManifestTest, DeployUnloadAfterIsADurationAndDefaultsToTenMinutes) {
  auto load = parse("name: shop\ndeploy: {unload_after: 90s}\nfunctions:\n");
  ASSERT_TRUE(load.app.has_value()) << load.report();
  EXPECT_EQ(load.app->unload_after, std::chrono::seconds(90));
  auto plain = parse("name: shop\nfunctions:\n");
  ASSERT_TRUE(plain.app.has_value()) << plain.report();
  EXPECT_EQ(plain.app->unload_after, std::chrono::minutes(10));
  expect_diag(parse("name: shop\ndeploy: {unload_after: soon}\nfunctions:\n"), "deploy.unload_after", "");
  expect_diag(parse("name: shop\ndeploy: {unload_afterr: 1m}\nfunctions:\n"), "deploy.unload_afterr", "");
}

TEST(ManifestTest, ObserveOtlpNamesTheCollectorItsHeadersAndTheSampleRatio) {
  auto load = parse("name: shop\nobserve:\n  otlp: {endpoint: \"http://127.0.0.1:4318/v1/traces\", sample: 10%,"
                    " headers: {api-key: \"${KEY}\"}}\nfunctions:\n", {{"KEY", "k1"}});
  ASSERT_TRUE(load.app.has_value()) << load.report();
  EXPECT_EQ(load.app->observe.otlp_endpoint, "http://127.0.0.1:4318/v1/traces");
  ASSERT_TRUE(load.app->observe.sample.has_value());
  EXPECT_DOUBLE_EQ(*load.app->observe.sample, 0.1);
  ASSERT_EQ(load.app->observe.otlp_headers.size(), 1u);
  EXPECT_EQ(load.app->observe.otlp_headers[0].value, "k1");
  expect_diag(parse("name: shop\nobserve:\n  otlp: {endpoint: \"grpc://x:4317\"}\nfunctions:\n"), "observe.otlp.endpoint",
              "is not an http:// or https:// URL");
  expect_diag(parse("name: shop\nobserve:\n  otlp: {endpoint: \"http://x\", protocol: grpc}\nfunctions:\n"),
              "observe.otlp.protocol", "OTLP/gRPC is not supported");
  expect_diag(parse("name: shop\nobserve:\n  otlp: {endpoint: \"http://x\", compression: zstd}\nfunctions:\n"),
              "observe.otlp.compression", "expected gzip or none");
  expect_diag(parse("name: shop\nobserve:\n  otlp: {endpoint: \"https://x\", ca: no-such.pem}\nfunctions:\n"),
              "observe.otlp.ca", "is not a file");
  auto chosen = parse("name: shop\nobserve:\n  otlp: {endpoint: \"https://x\", protocol: http/json, compression: gzip}\n"
                      "functions:\n");
  ASSERT_TRUE(chosen.app.has_value()) << chosen.report();
  EXPECT_EQ(chosen.app->observe.otlp_protocol, "http/json");
  EXPECT_EQ(chosen.app->observe.otlp_compression, "gzip");
  expect_diag(parse("name: shop\nobserve:\n  otlp: {endpoint: \"http://x\", sample: 2}\nfunctions:\n"), "observe.otlp.sample",
              "between 0 and 1");
  expect_diag(parse("name: shop\nobserve:\n  otlp: {endpont: \"http://x\"}\nfunctions:\n"), "observe.otlp.endpont", "");
  expect_diag(parse("name: shop\nobserve:\n  otlp: {headers: [a]}\nfunctions:\n"), "observe.otlp.headers", "expected a mapping");
}

TEST(ManifestTest, ObserveHistoryKeepsAThousandByDefaultAndZeroTurnsItOff) {
  auto plain = parse("name: shop\nfunctions:\n");
  ASSERT_TRUE(plain.app.has_value()) << plain.report();
  EXPECT_EQ(plain.app->observe.history_keep, 1000);
  auto off = parse("name: shop\nobserve:\n  history: {keep: 0}\nfunctions:\n");
  ASSERT_TRUE(off.app.has_value()) << off.report();
  EXPECT_EQ(off.app->observe.history_keep, 0);
  expect_diag(parse("name: shop\nobserve:\n  history: {keep: -1}\nfunctions:\n"), "observe.history.keep", "");
  expect_diag(parse("name: shop\nobserve:\n  history: {keep: 200000}\nfunctions:\n"), "observe.history.keep", "");
  expect_diag(parse("name: shop\nobserve:\n  history: {kept: 3}\nfunctions:\n"), "observe.history.kept", "");
}

TEST(ManifestTest, DiagnosticFormatIsFileLineColPathMessage) {
  const std::string text = one_function(kBasicFn +
                                        "triggers:\n"
                                        "  - http:\n"
                                        "      route: orders/{id}\n");
  auto load = parse(text);
  const Diagnostic& d = expect_diag(load, "functions.orders.triggers[0].http.route", "start with '/'");
  auto [line, col] = position_of(text, "orders/{id}");
  EXPECT_EQ(d.line, line);
  EXPECT_EQ(d.column, col);
  EXPECT_NE(d.message.find("expected"), std::string::npos) << d.message;
  EXPECT_EQ(d.to_string(), kFile + ":" + std::to_string(line) + ":" + std::to_string(col) +
                               ": functions.orders.triggers[0].http.route: " + d.message);
  EXPECT_EQ(load.report(), d.to_string() + "\n");
}

TEST(ManifestTest, InvalidYamlReportsLineAndColumn) {
  const std::string text = "name: shop\nfunctions: [1, 2]]\n";
  auto load = parse(text);
  ASSERT_FALSE(load.app.has_value());
  ASSERT_EQ(load.diagnostics.size(), 1u) << load.report();
  const auto& d = load.diagnostics[0];
  EXPECT_EQ(d.file, kFile);
  auto [line, col] = position_of(text, "]\n");
  EXPECT_EQ(d.line, line);
  EXPECT_EQ(d.column, col);
  EXPECT_NE(d.message.find("not valid YAML"), std::string::npos) << d.message;
  EXPECT_NE(d.message.find("expected"), std::string::npos) << d.message;
  EXPECT_EQ(d.to_string().rfind(kFile + ":" + std::to_string(line) + ":" + std::to_string(col) + ": ", 0), 0u)
      << d.to_string();
}

TEST(ManifestTest, EmptyManifestIsAnError) {
  for (const char* text : {"", "# only a comment\n", "~\n"}) {
    auto load = parse(text);
    ASSERT_FALSE(load.app.has_value()) << text;
    ASSERT_EQ(load.diagnostics.size(), 1u) << load.report();
    EXPECT_NE(load.diagnostics[0].message.find("empty"), std::string::npos);
    EXPECT_NE(load.diagnostics[0].message.find("expected"), std::string::npos);
  }
}

TEST(ManifestTest, TopLevelNotAMappingIsAnError) {
  auto load = parse("- a\n- b\n");
  ASSERT_FALSE(load.app.has_value());
  ASSERT_FALSE(load.diagnostics.empty());
  EXPECT_NE(load.diagnostics[0].message.find("expected a mapping"), std::string::npos)
      << load.report();
}

TEST(ManifestTest, MissingNameIsAnError) {
  auto load = parse("functions:\n");
  expect_diag(load, "name", "is missing");
}

TEST(ManifestTest, MissingFunctionsIsAnError) {
  auto load = parse("name: shop\n");
  expect_diag(load, "functions", "is missing");
}

TEST(ManifestTest, BadNameIsAnError) {
  for (const char* bad : {"Shop", "1shop", "shop!", "-x"}) {
    const std::string text = std::string("name: \"") + bad + "\"\nfunctions:\n";
    auto load = parse(text);
    const Diagnostic& d = expect_diag(load, "name", "not a valid name");
    EXPECT_EQ(d.line, 1);
    EXPECT_NE(d.message.find(bad), std::string::npos);
    EXPECT_NE(d.message.find("expected"), std::string::npos);
  }
}

TEST(ManifestTest, BadFunctionNameIsAnError) {
  auto load = parse(one_function(kBasicFn, "Orders"));
  expect_diag(load, "functions.Orders", "not a valid function name");
}

TEST(ManifestTest, BadStoreUrlIsAnError) {
  for (const char* bad : {"mysql://db", "sqlite:", "redis:/x", "state.db"}) {
    auto load = parse(std::string("name: shop\nstore: \"") + bad + "\"\nfunctions:\n");
    const Diagnostic& d = expect_diag(load, "store", "not a store URL");
    EXPECT_EQ(d.line, 2);
    EXPECT_NE(d.message.find("expected sqlite:PATH"), std::string::npos) << d.message;
  }
}

// Options only one backend has are in its URL, read by that backend (store/open_store.cpp).
TEST(ManifestTest, TheStoreBackendChecksItsOwnUrlOptions) {
  auto ok = parse("name: shop\nstore: sqlite:data/x.db?blobs=bytes\nfunctions:\n");
  ASSERT_TRUE(ok.app.has_value()) << ok.report();
  EXPECT_EQ(ok.app->store, "sqlite:data/x.db?blobs=bytes");
  auto load = parse("name: shop\nstore: sqlite:x.db?colour=blue\nfunctions:\n");
  const Diagnostic& d = expect_diag(load, "store", "unknown option 'colour'");
  EXPECT_EQ(d.line, 2);
  EXPECT_EQ(d.column, 8);
  EXPECT_NE(d.message.find("blobs=DIR"), std::string::npos) << d.message;
}

TEST(ManifestTest, UnknownTopLevelKeySuggestsTheClosest) {
  const std::string text = "name: shop\nfuctions:\n";
  auto load = parse(text);
  const Diagnostic& d = expect_diag(load, "fuctions", "unknown key 'fuctions'");
  EXPECT_NE(d.message.find("did you mean 'functions'?"), std::string::npos) << d.message;
  auto [line, col] = position_of(text, "fuctions");
  EXPECT_EQ(d.line, line);
  EXPECT_EQ(d.column, col);
}

TEST(ManifestTest, UnknownKeyFarFromAllListsTheChoices) {
  auto load = parse("name: shop\nfunctions:\nzzzzzzzzzz: 1\n");
  const Diagnostic& d = expect_diag(load, "zzzzzzzzzz", "unknown key");
  EXPECT_EQ(d.message.find("did you mean"), std::string::npos) << d.message;
  EXPECT_NE(d.message.find("expected one of: name, store, durability, http"), std::string::npos) << d.message;
}

TEST(ManifestTest, UnknownFunctionKeySuggestsTheClosest) {
  auto load = parse(one_function(kBasicFn + "timout: 5s\n"));
  const Diagnostic& d = expect_diag(load, "functions.orders.timout", "unknown key 'timout'");
  EXPECT_NE(d.message.find("did you mean 'timeout'?"), std::string::npos) << d.message;
}

TEST(ManifestTest, UnknownHttpSettingIsAnError) {
  auto load = parse("name: shop\nhttp:\n  max_bdy: 1MiB\nfunctions:\n");
  const Diagnostic& d = expect_diag(load, "http.max_bdy", "unknown key");
  EXPECT_NE(d.message.find("did you mean 'max_body'?"), std::string::npos) << d.message;
}

TEST(ManifestTest, DuplicateKeyIsAnError) {
  const std::string text = "name: shop\nname: other\nfunctions:\n";
  auto load = parse(text);
  const Diagnostic& d = expect_diag(load, "name", "appears twice");
  EXPECT_EQ(d.line, 2);
  EXPECT_EQ(d.column, 1);

  auto in_fn = parse(one_function(kBasicFn + "timeout: 1s\ntimeout: 2s\n"));
  expect_diag(in_fn, "functions.orders.timeout", "appears twice");
}

TEST(ManifestTest, DuplicateFunctionIsAnError) {
  auto load = parse("name: shop\nfunctions:\n  a:\n    runtime: native\n    handler: x\n"
                    "  a:\n    runtime: native\n    handler: y\n");
  const Diagnostic& d = expect_diag(load, "functions.a", "defined twice");
  EXPECT_EQ(d.line, 6);
}

TEST(ManifestTest, MissingRuntimeIsAnError) {
  auto load = parse(one_function("handler: functions/orders\n"));
  const Diagnostic& d = expect_diag(load, "functions.orders.runtime", "is missing");
  EXPECT_NE(d.message.find("expected one of: native"), std::string::npos) << d.message;
}

TEST(ManifestTest, ProcessRuntimeTakesACommandInAnyLanguage) {
  auto load = parse(one_function("runtime: process\ncommand: [./bin/worker, --fast, \"${MODE:-x}\"]\nmax_instances: 2\n"));
  ASSERT_TRUE(load.app.has_value()) << load.report();
  const FunctionSpec& fn = load.app->functions[0];
  EXPECT_EQ(fn.runtime, RuntimeKind::process);
  EXPECT_EQ(fn.command, (std::vector<std::string>{"./bin/worker", "--fast", "x"}));
  EXPECT_TRUE(fn.handler.empty());
  EXPECT_EQ(fn.isolation, Isolation::process);
  EXPECT_EQ(fn.concurrency, 1);
  EXPECT_EQ(fn.max_instances, 2);

  expect_diag(parse(one_function("runtime: process\n")), "functions.orders.command", "is missing");
  expect_diag(parse(one_function("runtime: process\ncommand: ./worker\n")), "functions.orders.command",
              "expected a non-empty list");
  expect_diag(parse(one_function("runtime: process\ncommand: []\n")), "functions.orders.command",
              "expected a non-empty list");
  expect_diag(parse(one_function("runtime: python\nhandler: a.py:h\ncommand: [x]\n")), "functions.orders.command",
              "runtime: process only");
}

TEST(ManifestTest, IsolationPutsNativeCodeInAWorkerAndSandboxesAnyWorker) {
  auto native = parse(one_function("runtime: native\nhandler: x.so\nisolation: process\nmemory_limit: 64MiB\n"
                                   "max_instances: 2\n"));
  ASSERT_TRUE(native.app.has_value()) << native.report();
  EXPECT_EQ(native.app->functions[0].isolation, Isolation::process);
  EXPECT_TRUE(native.app->functions[0].in_worker());
  EXPECT_EQ(native.app->functions[0].memory_limit, 64u << 20);

  auto in_host = parse(one_function("runtime: native\nhandler: x.so\n"));
  ASSERT_TRUE(in_host.app.has_value()) << in_host.report();
  EXPECT_EQ(in_host.app->functions[0].isolation, Isolation::none);
  EXPECT_FALSE(in_host.app->functions[0].in_worker());

  auto boxed = parse(one_function("runtime: node\nhandler: f.js:h\nisolation: sandbox\nnetwork: true\n"));
  ASSERT_TRUE(boxed.app.has_value()) << boxed.report();
  EXPECT_EQ(boxed.app->functions[0].isolation, Isolation::sandbox);
  EXPECT_TRUE(boxed.app->functions[0].network);
  auto closed = parse(one_function("runtime: python\nhandler: f.py:h\nisolation: sandbox\n"));
  ASSERT_TRUE(closed.app.has_value()) << closed.report();
  EXPECT_FALSE(closed.app->functions[0].network) << "a sandbox has no network unless asked";

  expect_diag(parse(one_function("runtime: python\nhandler: f.py:h\nisolation: none\n")),
              "functions.orders.isolation", "always run in a worker process");
  expect_diag(parse(one_function("runtime: python\nhandler: f.py:h\nisolation: jail\n")),
              "functions.orders.isolation", "'jail' is not allowed");
  expect_diag(parse(one_function("runtime: python\nhandler: f.py:h\nnetwork: true\n")), "functions.orders.network",
              "isolation: sandbox only");
}

TEST(ManifestTest, SandboxKeysWritableFoldersAndMaxProcesses) {
  auto boxed = parse(one_function("runtime: python\nhandler: f.py:h\nisolation: sandbox\nmax_processes: 16\n"
                                  "writable: [out, data/cache/]\n"));
  ASSERT_TRUE(boxed.app.has_value()) << boxed.report();
  EXPECT_EQ(boxed.app->functions[0].max_processes, 16);
  EXPECT_EQ(boxed.app->functions[0].writable, (std::vector<std::string>{"out", "data/cache"}));
  auto plain = parse(one_function("runtime: python\nhandler: f.py:h\nisolation: sandbox\n"));
  ASSERT_TRUE(plain.app.has_value()) << plain.report();
  EXPECT_EQ(plain.app->functions[0].max_processes, 64) << "a sandbox always has a process limit";
  EXPECT_TRUE(plain.app->functions[0].writable.empty()) << "nothing of the app is writable unless listed";

  expect_diag(parse(one_function("runtime: python\nhandler: f.py:h\nwritable: [out]\n")), "functions.orders.writable",
              "isolation: sandbox only");
  expect_diag(parse(one_function("runtime: python\nhandler: f.py:h\nmax_processes: 8\n")),
              "functions.orders.max_processes", "isolation: sandbox only");
  const std::string box = "runtime: python\nhandler: f.py:h\nisolation: sandbox\n";
  expect_diag(parse(one_function(box + "writable: out\n")), "functions.orders.writable", "expected a list of folders");
  expect_diag(parse(one_function(box + "writable: [../up]\n")), "functions.orders.writable[0]", "not a folder inside the app");
  expect_diag(parse(one_function(box + "writable: [/etc]\n")), "functions.orders.writable[0]", "not a folder inside the app");
  expect_diag(parse(one_function(box + "writable: [.]\n")), "functions.orders.writable[0]", "not a folder inside the app");
  expect_diag(parse(one_function(box + "writable: [a/../.nimbus/x]\n")), "functions.orders.writable[0]",
              "the host's own files");
  expect_diag(parse(one_function(box + "max_processes: 2\n")), "functions.orders.max_processes", "4");
}

TEST(ManifestTest, WorkerLimitsAndEnvironmentKeys) {
  auto load = parse(one_function("runtime: python\nhandler: a.py:h\nmemory_limit: 128MiB\ncpu_limit: 2s\n"
                                 "open_files: 256\nworking_dir: data/in\nenv_allow: [TZ, LANG]\n"));
  ASSERT_TRUE(load.app.has_value()) << load.report();
  const FunctionSpec& fn = load.app->functions[0];
  EXPECT_EQ(fn.memory_limit, 128u << 20);
  EXPECT_EQ(fn.cpu_limit, std::chrono::seconds(2));
  EXPECT_EQ(fn.open_files, 256);
  EXPECT_EQ(fn.working_dir, "data/in");
  EXPECT_EQ(fn.env_allow, (std::vector<std::string>{"TZ", "LANG"}));
  expect_diag(parse(one_function("runtime: python\nhandler: a.py:h\nworking_dir: ../elsewhere\n")),
              "functions.orders.working_dir", "leaves the app folder");
  expect_diag(parse(one_function("runtime: python\nhandler: a.py:h\nenv_allow: TZ\n")), "functions.orders.env_allow",
              "expected a list");
  expect_diag(parse(one_function("runtime: native\nhandler: x.so\nmemory_limit: 1MiB\n")),
              "functions.orders.memory_limit", "worker processes only");
}

TEST(ManifestTest, PythonFunctionsNameAFileAndAFunctionAndTakeInstanceKeys) {
  auto load = parse(one_function("runtime: python\nhandler: src/orders.py:handle\nmin_instances: 1\n"
                                 "max_instances: 3\nidle_timeout: 90s\nconcurrency: 4\n"));
  ASSERT_TRUE(load.app.has_value()) << load.report();
  const FunctionSpec& fn = load.app->functions[0];
  EXPECT_EQ(fn.runtime, RuntimeKind::python);
  EXPECT_EQ(fn.min_instances, 1);
  EXPECT_EQ(fn.max_instances, 3);
  EXPECT_EQ(fn.idle_timeout, std::chrono::seconds(90));
  EXPECT_EQ(fn.concurrency, 4);
  auto defaults = parse(one_function("runtime: python\nhandler: orders.py:handle\n"));
  ASSERT_TRUE(defaults.app.has_value()) << defaults.report();
  EXPECT_EQ(defaults.app->functions[0].concurrency, 1) << "per instance, one at a time unless asked";

  expect_diag(parse(one_function("runtime: python\nhandler: functions/orders\n")), "functions.orders.handler",
              "expected path/file.py:function");
  expect_diag(parse(one_function("runtime: python\nhandler: o.py:h\nmin_instances: 3\nmax_instances: 2\n")),
              "functions.orders.min_instances", "min_instances <= max_instances");
  expect_diag(parse(one_function("runtime: native\nhandler: x.so\nmin_instances: 1\n")),
              "functions.orders.min_instances", "worker processes only");
}

TEST(ManifestTest, BadRuntimeSuggestsTheClosest) {
  auto load = parse(one_function("runtime: natve\nhandler: functions/orders\n"));
  const Diagnostic& d = expect_diag(load, "functions.orders.runtime", "'natve' is not allowed");
  EXPECT_NE(d.message.find("did you mean 'native'?"), std::string::npos) << d.message;
}

TEST(ManifestTest, MissingHandlerIsAnError) {
  auto load = parse(one_function("runtime: native\n"));
  const Diagnostic& d = expect_diag(load, "functions.orders.handler", "is missing");
  EXPECT_NE(d.message.find("expected"), std::string::npos);

  auto empty = parse(one_function("runtime: native\nhandler: \"\"\n"));
  expect_diag(empty, "functions.orders.handler", "is empty");
}

TEST(ManifestTest, BadDurationIsAnError) {
  for (const char* bad : {"soon", "5x", "-1s", "0s"}) {
    auto load = parse(one_function(kBasicFn + "timeout: \"" + bad + "\"\n"));
    const Diagnostic& d = expect_diag(load, "functions.orders.timeout", "is not a duration");
    EXPECT_NE(d.message.find(bad), std::string::npos) << d.message;
    EXPECT_NE(d.message.find("expected a positive duration"), std::string::npos) << d.message;
  }
  auto top = parse("name: shop\nshutdown_grace: never\nfunctions:\n");
  expect_diag(top, "shutdown_grace", "is not a duration");
  auto http = parse("name: shop\nhttp:\n  read_timeout: [1]\nfunctions:\n");
  expect_diag(http, "http.read_timeout", "is a list; expected a duration");
}

TEST(ManifestTest, BadSizeIsAnError) {
  for (const char* bad : {"big", "10XB", "0"}) {
    auto load = parse(std::string("name: shop\nhttp:\n  max_body: \"") + bad + "\"\nfunctions:\n");
    const Diagnostic& d = expect_diag(load, "http.max_body", "is not a size");
    EXPECT_EQ(d.line, 3);
    EXPECT_NE(d.message.find("expected a positive size"), std::string::npos) << d.message;
  }
}

TEST(ManifestTest, IntegerOutOfRangeIsAnError) {
  auto zero = parse(one_function(kBasicFn + "concurrency: 0\n"));
  const Diagnostic& d = expect_diag(zero, "functions.orders.concurrency", "out of range");
  EXPECT_NE(d.message.find("expected an integer from 1 to 100000"), std::string::npos) << d.message;

  expect_diag(parse(one_function(kBasicFn + "concurrency: 100001\n")), "functions.orders.concurrency",
              "out of range");
  expect_diag(parse(one_function(kBasicFn + "wait_queue: -1\n")), "functions.orders.wait_queue",
              "out of range");
  expect_diag(parse(one_function(kBasicFn + "concurrency: 4x\n")), "functions.orders.concurrency",
              "out of range");
  expect_diag(parse("name: shop\nworker_threads: 5000\nfunctions:\n"), "worker_threads",
              "expected an integer from 1 to 1024");

  auto ok = parse(one_function(kBasicFn + "wait_queue: 0\n"));
  ASSERT_TRUE(ok.app.has_value()) << ok.report();
  EXPECT_EQ(ok.app->functions[0].wait_queue, 0);
}

TEST(ManifestTest, BadBooleanIsAnError) {
  auto load = parse(one_function(kBasicFn + "blocking: yes\n"));
  const Diagnostic& d = expect_diag(load, "functions.orders.blocking", "is not a boolean");
  EXPECT_NE(d.message.find("expected true or false"), std::string::npos) << d.message;

  auto secret = parse(one_function(kBasicFn + "env:\n  K:\n    value: v\n    secret: maybe\n"));
  expect_diag(secret, "functions.orders.env.K.secret", "is not a boolean");
}

TEST(ManifestTest, EnvironmentVariablesExpand) {
  auto load = parse(one_function("runtime: native\n"
                                 "handler: ${HANDLER_DIR}/orders\n"
                                 "timeout: ${TIMEOUT:-7s}\n"
                                 "env:\n"
                                 "  A: ${A}${B:-}x\n"
                                 "  B: plain $ and {braces}\n"),
                    {{"HANDLER_DIR", "build/fns"}, {"A", "alpha"}});
  ASSERT_TRUE(load.app.has_value()) << load.report();
  const auto& fn = load.app->functions[0];
  EXPECT_EQ(fn.handler, "build/fns/orders");
  EXPECT_EQ(fn.timeout, Duration(7s));
  ASSERT_EQ(fn.env.size(), 2u);
  EXPECT_EQ(fn.env[0].value, "alphax") << "an empty default expands to nothing";
  EXPECT_EQ(fn.env[1].value, "plain $ and {braces}");

  auto set_wins = parse(one_function(kBasicFn + "timeout: ${TIMEOUT:-7s}\n"), {{"TIMEOUT", "3s"}});
  ASSERT_TRUE(set_wins.app.has_value()) << set_wins.report();
  EXPECT_EQ(set_wins.app->functions[0].timeout, Duration(3s)) << "a set variable beats its default";
}

TEST(ManifestTest, UnsetEnvironmentVariableIsAnError) {
  auto load = parse(one_function(kBasicFn + "env:\n  DB: ${DB_URL}\n"));
  const Diagnostic& d = expect_diag(load, "functions.orders.env.DB", "DB_URL, which is not set");
  EXPECT_NE(d.message.find("${DB_URL:-value}"), std::string::npos) << d.message;

  auto unclosed = parse(one_function(kBasicFn + "env:\n  DB: ${DB_URL\n"));
  expect_diag(unclosed, "functions.orders.env.DB", "no closing '}'");

  auto bad_name = parse(one_function(kBasicFn + "env:\n  DB: ${DB-URL}\n"));
  expect_diag(bad_name, "functions.orders.env.DB", "expected an environment variable name");
}

TEST(ManifestTest, SecretEnvVarIsMarkedSecret) {
  auto load = parse(one_function(kBasicFn +
                                 "env:\n"
                                 "  API_KEY:\n"
                                 "    value: ${API_KEY}\n"
                                 "    secret: true\n"
                                 "  NOT_SECRET:\n"
                                 "    value: v\n"
                                 "    secret: false\n"),
                    {{"API_KEY", "k-123"}});
  ASSERT_TRUE(load.app.has_value()) << load.report();
  const auto& env = load.app->functions[0].env;
  ASSERT_EQ(env.size(), 2u);
  EXPECT_EQ(env[0].name, "API_KEY");
  EXPECT_EQ(env[0].value, "k-123");
  EXPECT_TRUE(env[0].secret);
  EXPECT_FALSE(env[1].secret);

  auto missing_value = parse(one_function(kBasicFn + "env:\n  K:\n    secret: true\n"));
  expect_diag(missing_value, "functions.orders.env.K.value", "is missing");
}

TEST(ManifestTest, FunctionWithNoBodyIsAnError) {
  auto load = parse("name: shop\nfunctions:\n  orders:\n");
  const Diagnostic& d = expect_diag(load, "functions.orders", "is empty");
  EXPECT_NE(d.message.find("expected a mapping"), std::string::npos) << d.message;
}

TEST(ManifestTest, DuplicateEnvVarIsAnError) {
  auto load = parse(one_function(kBasicFn + "env:\n  REGION: eu\n  REGION: us\n"));
  EXPECT_FALSE(load.app.has_value());
  expect_diag(load, "functions.orders.env.REGION", "appears twice");
}

TEST(ManifestTest, EveryProblemIsReported) {
  const std::string text = R"(name: Shop
store: nowhere
fuctions: {}
functions:
  orders:
    runtime: pyhton
    timout: 5s
    concurrency: zero
    triggers:
      - http: {route: "orders"}
      - queue: {name: Q}
)";
  auto load = parse(text);
  ASSERT_FALSE(load.app.has_value());
  expect_diag(load, "name", "not a valid name");
  expect_diag(load, "store", "not a store URL");
  expect_diag(load, "fuctions", "did you mean 'functions'?");
  expect_diag(load, "functions.orders.runtime", "did you mean 'python'?");
  expect_diag(load, "functions.orders.timout", "did you mean 'timeout'?");
  expect_diag(load, "functions.orders.handler", "is missing");
  expect_diag(load, "functions.orders.concurrency", "out of range");
  expect_diag(load, "functions.orders.triggers[0].http.route", "start with '/'");
  expect_diag(load, "functions.orders.triggers[1].queue.name", "not a valid queue name");
  EXPECT_EQ(load.diagnostics.size(), 9u) << load.report();
  // The report has one line per diagnostic, each in FILE:LINE:COL form.
  std::size_t lines = 0;
  for (char c : load.report()) lines += c == '\n';
  EXPECT_EQ(lines, load.diagnostics.size());
  for (const auto& d : load.diagnostics) {
    EXPECT_GT(d.line, 0) << d.to_string();
    EXPECT_GT(d.column, 0) << d.to_string();
  }
}

TEST(ManifestTest, LoadManifestReadsAFolderOrReportsMissingFile) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() /
                 ("nimbus_manifest_test_" + std::to_string(::getpid()) + "_" + new_suffix());
  fs::create_directories(dir);
  auto missing = load_manifest(dir, env_of({}));
  ASSERT_FALSE(missing.app.has_value());
  ASSERT_EQ(missing.diagnostics.size(), 1u);
  EXPECT_NE(missing.diagnostics[0].message.find("nimbus init"), std::string::npos);
  EXPECT_EQ(missing.diagnostics[0].file, (dir / "nimbus.yaml").string());

  {
    std::ofstream out(dir / "nimbus.yaml");
    out << one_function(kBasicFn);
  }
  auto load = load_manifest(dir, env_of({}));
  ASSERT_TRUE(load.app.has_value()) << load.report();
  EXPECT_EQ(load.app->dir, fs::absolute(dir));
  EXPECT_EQ(load.app->name, "shop");
  fs::remove_all(dir);
}

TEST(DidYouMeanTest, FindsTheClosestWithinASmallDistance) {
  std::vector<std::string_view> keys = {"name", "store", "functions", "http"};
  EXPECT_EQ(did_you_mean("fuctions", keys), "functions");
  EXPECT_EQ(did_you_mean("FUNCTIONS", keys), "functions") << "case is ignored";
  EXPECT_EQ(did_you_mean("stor", keys), "store");
  EXPECT_EQ(did_you_mean("completely-different", keys), "");
  EXPECT_EQ(did_you_mean("x", {}), "");
}


}  // namespace
}  // namespace nimbus
