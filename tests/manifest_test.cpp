// nimbus.yaml: a full manifest becomes the right AppSpec; every class of mistake becomes a
// diagnostic that says where (FILE:LINE:COL and the key path), what, and what is expected.
#include "manifest/manifest.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <string>

namespace nimbus {
namespace {

using namespace std::chrono_literals;

const std::string kFile = "apps/shop/nimbus.yaml";

std::string new_suffix() {
  static std::atomic<int> n{0};
  return std::to_string(n.fetch_add(1)) + "_" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
}

EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

ManifestLoad parse(std::string_view text, std::map<std::string, std::string> vars = {}) {
  return parse_manifest(text, kFile, "/srv/shop", env_of(std::move(vars)));
}

// The 1-based line and column of the first occurrence of `needle` in `text`.
std::pair<int, int> position_of(std::string_view text, std::string_view needle) {
  auto at = text.find(needle);
  EXPECT_NE(at, std::string_view::npos) << needle;
  int line = 1, col = 1;
  for (std::size_t i = 0; i < at; ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return {line, col};
}

// The diagnostic for exactly `path` whose message contains `fragment`, or null.
const Diagnostic* find_diag(const ManifestLoad& load, std::string_view path,
                            std::string_view fragment = "") {
  for (const auto& d : load.diagnostics) {
    if (d.path == path && d.message.find(fragment) != std::string::npos) return &d;
  }
  return nullptr;
}

// Asserts the load failed with a diagnostic at `path` mentioning `fragment`; returns it.
const Diagnostic& expect_diag(const ManifestLoad& load, std::string_view path,
                              std::string_view fragment) {
  static const Diagnostic kNone;
  EXPECT_FALSE(load.app.has_value()) << "a manifest with errors must not produce an app";
  const Diagnostic* d = find_diag(load, path, fragment);
  EXPECT_NE(d, nullptr) << "no diagnostic at '" << path << "' mentioning '" << fragment
                        << "'; got:\n"
                        << load.report();
  if (d) {
    EXPECT_EQ(d->file, kFile);
  }
  return d ? *d : kNone;
}

// A manifest with one function whose body lines are `fn_body` (indented 4 spaces by us).
std::string one_function(const std::string& fn_body, const std::string& fn_name = "orders") {
  std::string out = "name: shop\nfunctions:\n  " + fn_name + ":\n";
  std::string line;
  for (char c : fn_body) {
    if (c == '\n') {
      out += "    " + line + "\n";
      line.clear();
    } else {
      line += c;
    }
  }
  if (!line.empty()) out += "    " + line + "\n";
  return out;
}

const std::string kBasicFn =
    "runtime: native\n"
    "handler: functions/orders\n";

const std::string kFullManifest = R"(# The whole surface of the manifest.
name: shop
store: ${STORE_URL}
http:
  max_body: 1MiB
  max_header: 8KiB
  read_timeout: 5s
  idle_timeout: 2m
shutdown_grace: 15s
worker_threads: 8
functions:
  orders:
    runtime: native
    handler: functions/orders
    timeout: 2500ms
    concurrency: 4
    wait_queue: 10
    blocking: false
    env:
      REGION: eu-${ZONE:-west}
      DB_PASSWORD:
        value: ${DB_PASSWORD}
        secret: true
      PLAIN:
        value: visible
    triggers:
      - http:
          route: /orders/{id}
          methods: [GET, put]
          auth: function
      - http:
          route: /orders
          methods: POST
  health:
    runtime: native
    handler: lib/health.so
    triggers:
      - http: {route: /health}
)";

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
  EXPECT_EQ(orders->triggers[0].http.route, "/orders/{id}");
  EXPECT_EQ(orders->triggers[0].http.methods, (std::vector<std::string>{"GET", "PUT"}))
      << "methods are upper-cased";
  EXPECT_EQ(orders->triggers[0].http.auth, AuthLevel::function);
  EXPECT_EQ(orders->triggers[1].http.route, "/orders");
  EXPECT_EQ(orders->triggers[1].http.methods, (std::vector<std::string>{"POST"}))
      << "a single method may be given without a list";
  EXPECT_EQ(orders->triggers[1].http.auth, AuthLevel::anonymous);

  const FunctionSpec* health = app.find("health");
  ASSERT_NE(health, nullptr);
  EXPECT_EQ(health->handler, "lib/health.so");
  ASSERT_EQ(health->triggers.size(), 1u);
  EXPECT_EQ(health->triggers[0].http.route, "/health");
  EXPECT_TRUE(health->triggers[0].http.methods.empty()) << "no methods means any method";
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
  EXPECT_EQ(t[0].kind, TriggerKind::mqtt);
  EXPECT_EQ(t[0].mqtt.filter, "devices/+/telemetry");
  EXPECT_EQ(t[0].mqtt.qos, 1);
  EXPECT_EQ(t[0].queue.name, "_mqtt.orders");  // where its messages wait for the function
  EXPECT_EQ(t[0].queue.lease, std::chrono::seconds(5));
  EXPECT_EQ(t[0].queue.batch_size, 8);
  EXPECT_EQ(t[1].mqtt.qos, 0);
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
  EXPECT_EQ(t[0].kind, TriggerKind::blob);
  EXPECT_EQ(t[0].blob.container, "uploads");
  EXPECT_EQ(t[0].blob.pattern, "{name}.csv");
  EXPECT_EQ(t[0].blob.events, kBlobCreated | kBlobUpdated | kBlobDeleted);
  EXPECT_EQ(t[0].blob.lease, std::chrono::seconds(10));
  EXPECT_EQ(t[1].blob.container, "in");
  EXPECT_EQ(t[1].blob.events, kBlobCreated | kBlobUpdated);  // the default
  EXPECT_EQ(t[2].http.upload_container, "uploads");
  EXPECT_EQ(t[2].http.methods, (std::vector<std::string>{"PUT", "POST"}));
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
  EXPECT_EQ(tr[0].kind, TriggerKind::stream);
  EXPECT_EQ(tr[0].stream.group, "orders");  // the function's name by default
  EXPECT_EQ(tr[0].stream.batch_size, 50);
  EXPECT_EQ(tr[0].stream.max_wait, std::chrono::milliseconds(200));
  EXPECT_TRUE(tr[0].stream.from_latest);
  EXPECT_EQ(tr[1].stream.group, "clicks-v2");
  EXPECT_FALSE(tr[1].stream.from_latest);
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
  EXPECT_EQ(t[0].kind, TriggerKind::file);
  EXPECT_EQ(t[0].file.path, "/srv/shop/inbox");  // relative to the app folder
  EXPECT_EQ(t[0].file.pattern, "*.csv");
  EXPECT_EQ(t[0].file.max_size, 1u << 20);
  EXPECT_EQ(t[1].file.path, "/var/spool/legacy");
  EXPECT_EQ(t[1].file.pattern, "*");
  EXPECT_EQ(t[1].file.max_size, 64u << 20);
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
  EXPECT_EQ(t[0].kind, TriggerKind::timer);
  EXPECT_EQ(t[0].timer.schedule, "0 30 2 * * MON-FRI");
  EXPECT_EQ(t[0].timer.time_zone, "Europe/Berlin");
  EXPECT_TRUE(t[0].timer.run_on_startup);
  EXPECT_EQ(t[1].timer.time_zone, "UTC");
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
  EXPECT_EQ(fn.triggers[0].kind, TriggerKind::queue);
  EXPECT_EQ(fn.triggers[0].queue.name, "orders");
  EXPECT_EQ(fn.triggers[0].queue.batch_size, 4);
  EXPECT_EQ(fn.triggers[0].queue.max_wait, 250ms);
  EXPECT_EQ(fn.triggers[0].queue.lease, 2min);
  EXPECT_EQ(fn.triggers[1].kind, TriggerKind::topic);
  EXPECT_EQ(fn.triggers[1].queue.subscription, "orders") << "a subscription is named after its function";
  EXPECT_EQ(fn.triggers[1].queue.type, "order.created");
  EXPECT_EQ(fn.triggers[1].queue.subject_prefix, "eu/");
  EXPECT_EQ(fn.triggers[2].queue.subscription, "orders-audit");
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
  EXPECT_TRUE(load.app->functions[0].triggers[0].http.asynchronous);
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
