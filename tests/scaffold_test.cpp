// `nimbus init` / `nimbus new`: inserting a function into a manifest keeps the user's layout,
// and a scaffolded app is one the manifest parser accepts.
#include "trigger_settings.h"
#include "cli/scaffold.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <sstream>

#include "manifest/manifest.h"

namespace nimbus {
namespace {

namespace fs = std::filesystem;

const std::string kBody =
    "runtime: native\n"
    "handler: functions/orders\n"
    "triggers:\n"
    "  - http:\n"
    "      route: /orders\n";

EnvLookup no_env() {
  return [](std::string_view) -> std::optional<std::string> { return std::nullopt; };
}

ManifestLoad parse(const std::string& text) { return parse_manifest(text, "nimbus.yaml", "/app", no_env()); }

std::string insert(const std::string& manifest, const std::string& name = "orders",
                   const std::string& body = kBody) {
  auto out = insert_function_block(manifest, name, body);
  EXPECT_TRUE(out.ok()) << (out.ok() ? "" : out.error().message);
  return out.ok() ? *out : std::string();
}

// Names of the functions in `text`, in order, after checking it parses.
std::vector<std::string> functions_of(const std::string& text) {
  auto load = parse(text);
  EXPECT_TRUE(load.app.has_value()) << load.report() << "\n--- manifest ---\n" << text;
  std::vector<std::string> names;
  if (load.app) {
    for (const auto& f : load.app->functions) names.push_back(f.name);
  }
  return names;
}

TEST(InsertFunctionBlockTest, AppendsAfterTheLastFunction) {
  const std::string manifest =
      "name: shop\n"
      "functions:\n"
      "  hello:\n"
      "    runtime: native\n"
      "    handler: functions/hello\n";
  std::string out = insert(manifest);
  EXPECT_EQ(out, manifest +
                     "  orders:\n"
                     "    runtime: native\n"
                     "    handler: functions/orders\n"
                     "    triggers:\n"
                     "      - http:\n"
                     "          route: /orders\n");
  EXPECT_EQ(functions_of(out), (std::vector<std::string>{"hello", "orders"}));
  auto load = parse(out);
  ASSERT_TRUE(load.app.has_value());
  const FunctionSpec* orders = load.app->find("orders");
  ASSERT_NE(orders, nullptr);
  EXPECT_EQ(orders->handler, "functions/orders");
  ASSERT_EQ(orders->triggers.size(), 1u);
  EXPECT_EQ(settings_of<HttpTriggerSpec>(orders->triggers[0]).route, "/orders");
}

TEST(InsertFunctionBlockTest, EmptyFlowMappingBecomesABlock) {
  const std::string manifest = "name: shop\nfunctions: {}\n";
  std::string out = insert(manifest);
  EXPECT_EQ(out.find("{}"), std::string::npos) << out;
  EXPECT_EQ(out.rfind("name: shop\nfunctions:\n  orders:\n    runtime: native\n", 0), 0u) << out;
  EXPECT_EQ(functions_of(out), (std::vector<std::string>{"orders"}));
}

TEST(InsertFunctionBlockTest, EmptyFunctionsKey) {
  std::string out = insert("name: shop\nfunctions:\n");
  EXPECT_EQ(functions_of(out), (std::vector<std::string>{"orders"}));
  EXPECT_EQ(out.rfind("name: shop\nfunctions:\n  orders:\n", 0), 0u) << out;
}

TEST(InsertFunctionBlockTest, MissingFunctionsKeyIsAdded) {
  const std::string manifest = "name: shop\nworker_threads: 4\n";
  std::string out = insert(manifest);
  EXPECT_EQ(out.rfind(manifest + "functions:\n  orders:\n", 0), 0u) << out;
  EXPECT_EQ(functions_of(out), (std::vector<std::string>{"orders"}));
  EXPECT_EQ(parse(out).app->worker_threads, 4);
}

TEST(InsertFunctionBlockTest, FourSpaceIndentationIsKept) {
  const std::string manifest =
      "name: shop\n"
      "functions:\n"
      "    hello:\n"
      "        runtime: native\n"
      "        handler: functions/hello\n";
  std::string out = insert(manifest);
  EXPECT_EQ(out, manifest +
                     "    orders:\n"
                     "        runtime: native\n"
                     "        handler: functions/orders\n"
                     "        triggers:\n"
                     "          - http:\n"
                     "              route: /orders\n");
  EXPECT_EQ(functions_of(out), (std::vector<std::string>{"hello", "orders"}));
  EXPECT_EQ(settings_of<HttpTriggerSpec>(parse(out).app->find("orders")->triggers.at(0)).route, "/orders");
}

TEST(InsertFunctionBlockTest, CommentOnTheFunctionsLineIsKept) {
  std::string out = insert("name: shop\nfunctions: {}  # add functions with `nimbus new`\n");
  EXPECT_EQ(functions_of(out), (std::vector<std::string>{"orders"}));
  EXPECT_NE(out.find("# add functions with `nimbus new`"), std::string::npos) << out;
}

TEST(InsertFunctionBlockTest, FollowingTopLevelKeyKeepsItsPlace) {
  const std::string manifest =
      "name: shop\n"
      "functions:\n"
      "  hello:\n"
      "    runtime: native\n"
      "    handler: functions/hello\n"
      "\n"
      "worker_threads: 4\n";
  std::string out = insert(manifest);
  EXPECT_EQ(out,
            "name: shop\n"
            "functions:\n"
            "  hello:\n"
            "    runtime: native\n"
            "    handler: functions/hello\n"
            "  orders:\n"
            "    runtime: native\n"
            "    handler: functions/orders\n"
            "    triggers:\n"
            "      - http:\n"
            "          route: /orders\n"
            "\n"
            "worker_threads: 4\n");
  EXPECT_EQ(functions_of(out), (std::vector<std::string>{"hello", "orders"}));
  EXPECT_EQ(parse(out).app->worker_threads, 4);
}

TEST(InsertFunctionBlockTest, CommentOnTheFollowingKeyStaysWithIt) {
  const std::string manifest =
      "name: shop\n"
      "functions:\n"
      "  hello:\n"
      "    runtime: native\n"
      "    handler: functions/hello\n"
      "\n"
      "# tuning\n"
      "worker_threads: 4\n";
  std::string out = insert(manifest);
  // Still a valid manifest either way.
  EXPECT_EQ(functions_of(out), (std::vector<std::string>{"hello", "orders"}));
  EXPECT_EQ(parse(out).app->worker_threads, 4);
  const std::string expected =
      "name: shop\n"
      "functions:\n"
      "  hello:\n"
      "    runtime: native\n"
      "    handler: functions/hello\n"
      "  orders:\n"
      "    runtime: native\n"
      "    handler: functions/orders\n"
      "    triggers:\n"
      "      - http:\n"
      "          route: /orders\n"
      "\n"
      "# tuning\n"
      "worker_threads: 4\n";
  EXPECT_EQ(out, expected);
}

TEST(InsertFunctionBlockTest, FunctionsInTheMiddleOfTheManifest) {
  const std::string manifest =
      "name: shop\n"
      "functions:\n"
      "  hello:\n"
      "    runtime: native\n"
      "    handler: functions/hello\n"
      "http:\n"
      "  max_body: 1MiB\n";
  std::string out = insert(manifest);
  auto orders_at = out.find("  orders:\n");
  auto http_at = out.find("\nhttp:\n");
  ASSERT_NE(orders_at, std::string::npos) << out;
  ASSERT_NE(http_at, std::string::npos) << out;
  EXPECT_LT(orders_at, http_at) << out;
  EXPECT_EQ(functions_of(out), (std::vector<std::string>{"hello", "orders"}));
  EXPECT_EQ(parse(out).app->http.max_body, 1024u * 1024);
}

TEST(InsertFunctionBlockTest, DuplicateNameIsAnError) {
  const std::string manifest =
      "name: shop\n"
      "functions:\n"
      "  orders:\n"
      "    runtime: native\n"
      "    handler: functions/orders\n";
  auto out = insert_function_block(manifest, "orders", kBody);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.error().message.find("'orders' already exists"), std::string::npos) << out.error().message;

  const std::string four =
      "name: shop\nfunctions:\n    orders:\n        runtime: native\n        handler: x\n";
  EXPECT_FALSE(insert_function_block(four, "orders", kBody).ok());
}

TEST(InsertFunctionBlockTest, SimilarNamesAndNestedKeysAreNotDuplicates) {
  // "orders-v2" starts with "orders", and "handler:" is nested, not a function.
  const std::string manifest =
      "name: shop\n"
      "functions:\n"
      "  orders-v2:\n"
      "    runtime: native\n"
      "    handler: functions/orders-v2\n";
  std::string with_orders = insert(manifest, "orders",
                                   "runtime: native\nhandler: functions/orders\n");
  EXPECT_EQ(functions_of(with_orders), (std::vector<std::string>{"orders-v2", "orders"}));
  std::string with_handler = insert(manifest, "handler", "runtime: native\nhandler: functions/handler\n");
  EXPECT_EQ(functions_of(with_handler), (std::vector<std::string>{"orders-v2", "handler"}));
}

class ScaffoldDirTest : public ::testing::Test {
 protected:
  ScaffoldDirTest() {
    static std::atomic<int> n{0};
    dir_ = fs::temp_directory_path() /
           ("nimbus_scaffold_test_" + std::to_string(::getpid()) + "_" + std::to_string(n.fetch_add(1)) + "_" +
            std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
    fs::create_directories(dir_);
  }
  ~ScaffoldDirTest() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  fs::path dir_;
};

TEST_F(ScaffoldDirTest, InitThenNewGivesAValidManifest) {
  auto st = init_app(dir_, "shop");
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE(fs::exists(dir_ / "nimbus.yaml"));
  EXPECT_TRUE(fs::exists(dir_ / "functions/hello/CMakeLists.txt"));
  EXPECT_TRUE(fs::exists(dir_ / "functions/hello/hello.cpp"));
  EXPECT_EQ(read(dir_ / ".gitignore"), ".nimbus/\n");

  auto first = load_manifest(dir_, no_env());
  ASSERT_TRUE(first.app.has_value()) << first.report();
  EXPECT_EQ(first.app->name, "shop");
  ASSERT_EQ(first.app->functions.size(), 1u);

  st = add_function(dir_, NewFunction{.name = "orders"});
  ASSERT_TRUE(st.ok()) << st.error().message;
  st = add_function(dir_, NewFunction{.name = "order-items"});
  ASSERT_TRUE(st.ok()) << st.error().message;

  auto load = load_manifest(dir_, no_env());
  ASSERT_TRUE(load.app.has_value()) << load.report() << "\n" << read(dir_ / "nimbus.yaml");
  ASSERT_EQ(load.app->functions.size(), 3u);
  std::map<std::string, std::string> routes;
  for (const auto& f : load.app->functions) {
    EXPECT_EQ(f.runtime, RuntimeKind::native);
    EXPECT_EQ(f.handler, "functions/" + f.name);
    ASSERT_EQ(f.triggers.size(), 1u) << f.name;
    EXPECT_EQ(f.triggers[0].kind, TriggerKind::http);
    routes[f.name] = settings_of<HttpTriggerSpec>(f.triggers[0]).route;
  }
  EXPECT_EQ(routes, (std::map<std::string, std::string>{
                        {"hello", "/hello"}, {"orders", "/orders"}, {"order-items", "/order-items"}}));
  const FunctionSpec* hello = load.app->find("hello");
  EXPECT_FALSE(hello->blocking);
  EXPECT_EQ(settings_of<HttpTriggerSpec>(hello->triggers[0]).methods, (std::vector<std::string>{"GET"}));

  st = add_function(dir_, NewFunction{.name = "report", .runtime = "python"});
  ASSERT_TRUE(st.ok()) << st.error().message;
  auto with_python = load_manifest(dir_, no_env());
  ASSERT_TRUE(with_python.app.has_value()) << with_python.report();
  const FunctionSpec* report = with_python.app->find("report");
  ASSERT_NE(report, nullptr);
  EXPECT_EQ(report->runtime, RuntimeKind::python);
  EXPECT_EQ(report->handler, "functions/report/main.py:handler");
  EXPECT_NE(read(dir_ / "functions/report/main.py").find("def handler(req, ctx):"), std::string::npos);
  st = add_function(dir_, NewFunction{.name = "feed", .runtime = "node"});
  ASSERT_TRUE(st.ok()) << st.error().message;
  auto with_node = load_manifest(dir_, no_env());
  ASSERT_TRUE(with_node.app.has_value()) << with_node.report();
  EXPECT_EQ(with_node.app->find("feed")->runtime, RuntimeKind::node);
  EXPECT_EQ(with_node.app->find("feed")->handler, "functions/feed/index.js:handler");
  EXPECT_NE(read(dir_ / "functions/feed/index.js").find("exports.handler = async (req, ctx)"), std::string::npos);

  std::string source = read(dir_ / "functions/order-items/order-items.cpp");
  EXPECT_NE(source.find("NIMBUS_FUNCTION(order_items)"), std::string::npos) << source;
  EXPECT_NE(source.find("#include <nimbus/function.h>"), std::string::npos) << source;
  std::string cmake = read(dir_ / "functions/order-items/CMakeLists.txt");
  EXPECT_NE(cmake.find("nimbus_add_function(order-items order-items.cpp)"), std::string::npos) << cmake;
  EXPECT_NE(cmake.find("project(order_items"), std::string::npos) << cmake;
}

TEST_F(ScaffoldDirTest, InitRefusesBadNamesAndExistingApps) {
  auto bad = init_app(dir_, "My App");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("not valid"), std::string::npos);
  EXPECT_FALSE(fs::exists(dir_ / "nimbus.yaml"));

  ASSERT_TRUE(init_app(dir_, "shop").ok());
  std::string before = read(dir_ / "nimbus.yaml");
  auto again = init_app(dir_, "shop");
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message.find("already exists"), std::string::npos) << again.error().message;
  EXPECT_EQ(read(dir_ / "nimbus.yaml"), before);
}

TEST_F(ScaffoldDirTest, NewRefusesDuplicatesAndLeavesTheManifestAlone) {
  ASSERT_TRUE(init_app(dir_, "shop").ok());
  std::string before = read(dir_ / "nimbus.yaml");
  auto dup = add_function(dir_, NewFunction{.name = "hello"});
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.error().message.find("already exists"), std::string::npos) << dup.error().message;
  EXPECT_EQ(read(dir_ / "nimbus.yaml"), before);

  for (const NewFunction& bad : {NewFunction{.name = "Bad"}, NewFunction{.name = "x", .runtime = "process"},
                                 NewFunction{.name = "x", .trigger = "quue"}}) {
    auto st = add_function(dir_, bad);
    EXPECT_FALSE(st.ok()) << bad.name << " " << bad.runtime << " " << bad.trigger;
  }
  EXPECT_EQ(read(dir_ / "nimbus.yaml"), before);
  EXPECT_FALSE(fs::exists(dir_ / "functions/x"));
}

TEST_F(ScaffoldDirTest, NewRefusesAFunctionThatWouldMakeTheManifestInvalid) {
  {
    std::ofstream out(dir_ / "nimbus.yaml");
    out << "name: shop\n"
           "functions:\n"
           "  legacy:\n"
           "    runtime: native\n"
           "    handler: functions/legacy\n"
           "    triggers:\n"
           "      - http: {route: /orders}\n";
  }
  std::string before = read(dir_ / "nimbus.yaml");
  auto st = add_function(dir_, NewFunction{.name = "orders"});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("would not be valid"), std::string::npos) << st.error().message;
  EXPECT_NE(st.error().message.find("already served by function 'legacy'"), std::string::npos)
      << st.error().message;
  EXPECT_EQ(read(dir_ / "nimbus.yaml"), before);
  EXPECT_FALSE(fs::exists(dir_ / "functions/orders"));
}

TEST_F(ScaffoldDirTest, NewOutsideAnAppNamesTheNextStep) {
  auto st = add_function(dir_, NewFunction{.name = "orders"});
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("nimbus init"), std::string::npos) << st.error().message;
}

}  // namespace
}  // namespace nimbus
