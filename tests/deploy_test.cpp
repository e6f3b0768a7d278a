// Versions (deploy/): packages made the same way every time and unpacked without escaping
// their folder; the store's version and alias records; and the pool's routing over versions:
// weights within 2% over 10,000 invocations, pins by header, sticky keys.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include "deploy/package.h"
#include "deploy/versions.h"
#include "manifest/manifest.h"
#include "observe/metrics.h"
#include "pool/function_pool.h"
#include "pool/worker_threads.h"
#include "store/store.h"

namespace nimbus::deploy {
namespace {

namespace fs = std::filesystem;

struct Folder {
  fs::path path;
  Folder() {
    char tmpl[] = "/tmp/nimbus-deploy-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~Folder() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  void write(const std::string& name, const std::string& text) const {
    fs::create_directories((path / name).parent_path());
    std::ofstream(path / name, std::ios::binary) << text;
  }
  std::string read(const std::string& name) const {
    std::ifstream in(path / name, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
};

// A tar archive whose entries `write` adds, made by hand (what a hostile package could hold).
std::string tar_by_hand(const std::function<void(archive*)>& write) {
  std::string out;
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  archive_write_open(
      a, &out, nullptr,
      [](archive*, void* data, const void* buffer, size_t n) -> la_ssize_t {
        static_cast<std::string*>(data)->append(static_cast<const char*>(buffer), n);
        return static_cast<la_ssize_t>(n);
      },
      nullptr);
  write(a);
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

// A tar archive with the given entries: (name, type, content or a link's target).
std::string tar_of(const std::vector<std::tuple<std::string, int, std::string>>& entries) {
  return tar_by_hand([&](archive* a) {
    for (const auto& [name, type, content] : entries) {
      archive_entry* e = archive_entry_new();
      archive_entry_set_pathname(e, name.c_str());
      archive_entry_set_filetype(e, static_cast<unsigned>(type));
      archive_entry_set_perm(e, 0644);
      if (type == AE_IFLNK) {
        archive_entry_set_symlink(e, content.c_str());
      } else if (type == AE_IFREG) {
        archive_entry_set_size(e, static_cast<la_int64_t>(content.size()));
      }
      archive_write_header(a, e);
      if (type == AE_IFREG) archive_write_data(a, content.data(), content.size());
      archive_entry_free(e);
    }
  });
}

TEST(Package, TheSameFilesMakeTheSameBytesAndUnpackAsTheyWere) {
  Folder app, copy, out;
  app.write("nimbus.yaml", "name: a\n");
  app.write("fns/hello.py", "def hello(req):\n    return 'hi'\n");
  app.write("run.sh", "#!/bin/sh\necho hi\n");
  ::chmod((app.path / "run.sh").c_str(), 0755);
  app.write("node_modules/pkg/index.js", "module.exports = 1;\n");
  fs::create_directories(app.path / "node_modules/.bin");
  fs::create_symlink("../pkg/index.js", app.path / "node_modules/.bin/pkg");
  app.write(".nimbus/state.db", "host state");
  app.write(".git/HEAD", "ref");
  app.write("inbox/drop.csv", "data");
  app.write("secret/key", "k");
  app.write(".nimbusignore", "# not code\nsecret\n");
  // The same files, written in another order, elsewhere.
  copy.write("run.sh", "#!/bin/sh\necho hi\n");
  ::chmod((copy.path / "run.sh").c_str(), 0755);
  copy.write("node_modules/pkg/index.js", "module.exports = 1;\n");
  fs::create_directories(copy.path / "node_modules/.bin");
  fs::create_symlink("../pkg/index.js", copy.path / "node_modules/.bin/pkg");
  copy.write("fns/hello.py", "def hello(req):\n    return 'hi'\n");
  copy.write("nimbus.yaml", "name: a\n");
  copy.write(".nimbusignore", "# not code\nsecret\n");

  // Other times than the first folder's: times are not packaged.
  fs::last_write_time(copy.path / "fns/hello.py", fs::last_write_time(copy.path / "fns/hello.py") - std::chrono::hours(48));
  PackOptions options;
  options.leave_out = {app.path / "inbox"};
  auto a = pack_app(app.path, options);
  ASSERT_TRUE(a) << a.error().message;
  auto b = pack_app(copy.path);
  ASSERT_TRUE(b) << b.error().message;
  EXPECT_EQ(package_digest(*a), package_digest(*b));
  EXPECT_EQ(package_digest(*a).size(), 64u);

  const fs::path into = out.path / "v";
  ASSERT_TRUE(unpack_app(*a, into));
  Folder check;
  check.path = into;
  EXPECT_EQ(check.read("fns/hello.py"), "def hello(req):\n    return 'hi'\n");
  EXPECT_TRUE(::access((into / "run.sh").c_str(), X_OK) == 0);
  EXPECT_EQ(fs::read_symlink(into / "node_modules/.bin/pkg"), "../pkg/index.js");
  EXPECT_EQ(check.read("node_modules/.bin/pkg"), "module.exports = 1;\n");
  EXPECT_FALSE(fs::exists(into / ".nimbus"));
  EXPECT_FALSE(fs::exists(into / ".git"));
  EXPECT_FALSE(fs::exists(into / "inbox"));
  EXPECT_FALSE(fs::exists(into / "secret"));
  check.path.clear();
  // Unpacked once: a second time into the same place is refused.
  EXPECT_FALSE(unpack_app(*a, into));
}

TEST(Package, ALinkToOutsideIsRefusedOrLeftOutAsAsked) {
  Folder app;
  app.write("nimbus.yaml", "name: a\n");
  fs::create_symlink("/etc/passwd", app.path / "passwd");
  auto strict = pack_app(app.path);
  ASSERT_FALSE(strict);
  EXPECT_NE(strict.error().message.find("link to outside the folder"), std::string::npos) << strict.error().message;
  PackOptions lenient;
  lenient.skip_unpackable = true;
  std::vector<std::string> skipped;
  auto got = pack_app(app.path, lenient, &skipped);
  ASSERT_TRUE(got) << got.error().message;
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("passwd"), std::string::npos);
}

// Links that lead through other links and stay inside are kept (npm workspaces: the .bin link
// of a workspace package goes through node_modules/NAME, itself a link to the package).
TEST(Package, AChainOfLinksThatStaysInsideUnpacksAndLeadsWhereItSays) {
  Folder app, out;
  app.write("nimbus.yaml", "name: a\n");
  app.write("packages/tool/cli.js", "console.log('tool');\n");
  fs::create_directories(app.path / "node_modules/.bin");
  fs::create_symlink("../packages/tool", app.path / "node_modules/tool");
  fs::create_symlink("../tool/cli.js", app.path / "node_modules/.bin/tool");
  fs::create_symlink("node_modules/.bin", app.path / "bin");  // and one more link on the way
  fs::create_symlink("bin/tool", app.path / "tool");
  auto package = pack_app(app.path);
  ASSERT_TRUE(package) << package.error().message;
  const fs::path into = out.path / "v";
  auto st = unpack_app(*package, into);
  ASSERT_TRUE(st) << st.error().message;
  Folder check;
  check.path = into;
  EXPECT_EQ(check.read("node_modules/.bin/tool"), "console.log('tool');\n");
  EXPECT_EQ(check.read("tool"), "console.log('tool');\n");
  check.path.clear();
}

// A package is input from the network: nothing in it may write outside its folder.
TEST(Package, AHostilePackageWritesNothingOutsideItsFolder) {
  Folder out;
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"absolute", tar_of({{"/tmp/nimbus-escape", AE_IFREG, "x"}})},
      {"dot-dot", tar_of({{"a/../../nimbus-escape", AE_IFREG, "x"}})},
      {"link out", tar_of({{"l", AE_IFLNK, "/tmp"}})},
      {"link up", tar_of({{"l", AE_IFLNK, "../.."}})},
      // A link inside that points up, then a file written through it.
      {"through a link", tar_of({{"d", AE_IFDIR, ""}, {"d/up", AE_IFLNK, ".."}, {"d/up/x", AE_IFREG, "x"}})},
      // Links that each stay inside by their words but climb out as a chain, in either order.
      {"a chain of links", tar_of({{"p", AE_IFLNK, "."}, {"q", AE_IFLNK, "p/.."}, {"r", AE_IFLNK, "q/.."}})},
      {"a chain made backwards", tar_of({{"q", AE_IFLNK, "p/.."}, {"p", AE_IFLNK, "."}})},
      // A link up to the folder, then one that reads as inside but climbs out through it twice;
      // and a loop.
      {"a chain through a link up", tar_of({{"d", AE_IFDIR, ""}, {"d/up", AE_IFLNK, ".."}, {"z", AE_IFLNK, "d/up/d/up/.."}})},
      {"a loop of links", tar_of({{"a", AE_IFLNK, "b"}, {"b", AE_IFLNK, "a"}})},
      {"device", tar_of({{"dev", AE_IFCHR, ""}})},
      {"not a tar", std::string("this is not an archive at all, just text long enough to be read")},
  };
  int n = 0;
  // A hard link, and a sparse file claiming far more than the package holds (made by hand:
  // tar_of writes plain entries only).
  for (const std::string what : {"hard link", "sparse"}) {
    const std::string bytes = tar_by_hand([&](archive* a) {
      archive_entry* e = archive_entry_new();
      archive_entry_set_pathname(e, "f");
      archive_entry_set_filetype(e, AE_IFREG);
      if (what == "hard link") {
        archive_entry_set_hardlink(e, "/etc/passwd");
        archive_write_header(a, e);
      } else {
        archive_entry_set_size(e, int64_t{1} << 30);
        archive_entry_sparse_add_entry(e, 0, 1);
        archive_write_header(a, e);
        archive_write_data(a, "x", 1);
      }
      archive_entry_free(e);
    });
    const fs::path into = out.path / what;
    EXPECT_FALSE(unpack_app(bytes, into)) << what;
    EXPECT_FALSE(fs::exists(into)) << what;
  }
  for (const auto& [what, package] : refused) {
    const fs::path into = out.path / ("v" + std::to_string(n++));
    EXPECT_FALSE(unpack_app(package, into)) << what;
    EXPECT_FALSE(fs::exists(into)) << what << ": a refused package leaves nothing";
  }
  EXPECT_FALSE(fs::exists("/tmp/nimbus-escape"));
  EXPECT_FALSE(fs::exists(out.path / "x"));
  // Nothing half-unpacked is left beside them either.
  int left = 0;
  for (const auto& e : fs::directory_iterator(out.path)) {
    (void)e;
    ++left;
  }
  EXPECT_EQ(left, 0);
}

TEST(Versions, WeightsAndStickyKeysParseOrSayWhatIsWrong) {
  auto ok = parse_weights({"v3=90", "v4=10"});
  ASSERT_TRUE(ok) << ok.error().message;
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[1].version, "v4");
  EXPECT_EQ((*ok)[1].weight, 10);
  auto bare = parse_weights({"v7"});
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->front().weight, 100);
  EXPECT_NE(parse_weights({"v3=90", "v4=20"}).error().message.find("sum to 110"), std::string::npos);
  EXPECT_NE(parse_weights({"v3=50", "v3=50"}).error().message.find("named twice"), std::string::npos);
  EXPECT_FALSE(parse_weights({"live=100"}));
  EXPECT_FALSE(parse_weights({"v3=abc"}));
  EXPECT_FALSE(parse_weights({}));
  auto s = parse_sticky("header:X-User");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->from, Sticky::From::header);
  EXPECT_EQ(s->name, "x-user");
  EXPECT_EQ(to_string(*parse_sticky("cookie:sid")), "cookie:sid");
  EXPECT_FALSE(parse_sticky("query:x"));
  EXPECT_TRUE(valid_alias_name("staging"));
  EXPECT_FALSE(valid_alias_name("v3"));
  EXPECT_FALSE(valid_alias_name("Live"));
  EXPECT_EQ(version_number("v12"), 12);
  EXPECT_EQ(version_number("v012"), 0);
}

TEST(Versions, TheCatalogNumbersPackagesOnceAndWritesAliasesUnderTheirEtag) {
  Folder dir;
  ManualClock clock;
  auto store = open_store("sqlite:state.db", dir.path, clock);
  ASSERT_TRUE(store) << store.error().message;
  VersionCatalog catalog(**store, clock);
  auto v1 = catalog.add("package one", "first");
  ASSERT_TRUE(v1) << v1.error().message;
  EXPECT_EQ(v1->id, "v1");
  auto v2 = catalog.add("package two", "second");
  ASSERT_TRUE(v2);
  EXPECT_EQ(v2->id, "v2");
  auto again = catalog.add("package one", "the same bytes again");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->id, "v1") << "the same package is the same version";
  EXPECT_EQ(again->message, "first");
  auto all = catalog.list();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  auto bytes = catalog.package(*v2);
  ASSERT_TRUE(bytes);
  EXPECT_EQ(*bytes, "package two");

  Alias live{"live", {{"v1", 100}}, {}, {}, 0, ""};
  ASSERT_TRUE(catalog.put_aliases({live}));
  EXPECT_FALSE(catalog.put_aliases({live})) << "a new alias that exists already is a conflict";
  auto read = catalog.alias("live");
  ASSERT_TRUE(read && *read);
  Alias next = **read;
  next.previous = next.targets;
  next.targets = {{"v1", 90}, {"v2", 10}};
  next.sticky = *parse_sticky("header:x-user");
  ASSERT_TRUE(catalog.put_aliases({next}));
  auto stale = catalog.put_aliases({next});
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.error().code, store_error::conflict);
  auto now = catalog.alias("live");
  ASSERT_TRUE(now && *now);
  EXPECT_EQ((*now)->targets.size(), 2u);
  EXPECT_EQ((*now)->previous.size(), 1u);
  EXPECT_EQ(to_string((*now)->sticky), "header:x-user");
  auto aliases = catalog.aliases();
  ASSERT_TRUE(aliases);
  ASSERT_EQ(aliases->size(), 1u);
  EXPECT_EQ(aliases->front().name, "live");
  (*store)->close();
}

TEST(Versions, AVersionMayChangeCodeSettingsButNotWhatTheTriggersUse) {
  const std::string base = "name: a\nfunctions:\n  f:\n    runtime: python\n    handler: a.py:f\n"
                           "    triggers: [{http: {route: /f}}]\n";
  EXPECT_TRUE(topology_differences(base, "name: a\nfunctions:\n  f:\n    runtime: node\n    handler: a.js:f\n"
                                         "    env: {A: b}\n    triggers: [{http: {route: /f}}]\n")
                  .empty());
  auto diffs = topology_differences(base, "name: a\nfunctions:\n  f:\n    runtime: python\n    handler: a.py:f\n"
                                          "    triggers: [{http: {route: /g}}]\n  g:\n    runtime: python\n"
                                          "    handler: a.py:g\n");
  ASSERT_EQ(diffs.size(), 2u);
  EXPECT_NE(diffs[0].find("'f' changes its triggers"), std::string::npos) << diffs[0];
  EXPECT_NE(diffs[1].find("'g' is new"), std::string::npos) << diffs[1];
  EXPECT_EQ(topology_differences(base, "name: b\nfunctions:\n  f:\n    runtime: python\n    handler: a.py:f\n"
                                       "    triggers: [{http: {route: /f}}]\n"),
            std::vector<std::string>{"`name:` differs"});
}

// An executor that answers with its version's name at once.
class NamedExecutor final : public Executor {
 public:
  explicit NamedExecutor(std::string name) : name_(std::move(name)) {}
  Mode mode() const override { return Mode::synchronous; }
  int capacity(const FunctionSpec& fn) const override { return fn.concurrency; }
  Result call(const Invocation&) override {
    Result r;
    r.http = HttpReply{200, {}, name_};
    return r;
  }

 private:
  std::string name_;
};

class VersionRouting : public ::testing::Test {
 protected:
  std::unique_ptr<FunctionPool> pool(const std::string& version) {
    FunctionSpec spec;
    spec.name = "f";
    spec.blocking = false;  // inline: the fast path routes too
    return std::make_unique<FunctionPool>(spec, 0, std::make_unique<NamedExecutor>(version),
                                          PoolContext{clock_, Timers(timers_, nullptr), workers_, metrics_});
  }
  std::string run(FunctionPool& front, const Headers& headers = {}) {
    Invocation inv;
    inv.function = "f";
    if (!headers.empty()) inv.http.emplace().headers = headers;
    auto r = front.try_run_inline(inv);
    if (!r) {
      ADD_FAILURE() << "not run inline";
      return "";
    }
    return r->http ? r->http->body : r->error.type + ": " + r->error.message;
  }
  ManualClock clock_;
  TimerQueue timers_;
  WorkerThreads workers_{1};
  Metrics metrics_{{"f"}};
};

TEST_F(VersionRouting, WeightsHoldWithinTwoPercentOverTenThousandInvocations) {
  auto front = pool("v1");
  std::shared_ptr<FunctionPool> v2 = pool("v2");
  auto routes = std::make_shared<VersionRoutes>();
  routes->versions = {{"v1", nullptr}, {"v2", v2.get()}};
  routes->aliases["live"].weights = {{nullptr, 90}, {v2.get(), 10}};
  routes->pools = {v2};
  front->set_routes(routes);
  std::map<std::string, int> seen;
  for (int i = 0; i < 10000; ++i) ++seen[run(*front)];
  EXPECT_NEAR(seen["v1"], 9000, 200);
  EXPECT_NEAR(seen["v2"], 1000, 200);
  EXPECT_EQ(seen["v1"] + seen["v2"], 10000);

  // A pin by version or by alias; one this host does not run is refused, saying so.
  routes = std::make_shared<VersionRoutes>(*routes);
  routes->aliases["staging"].weights = {{v2.get(), 100}};
  front->set_routes(routes);
  EXPECT_EQ(run(*front, {{"Nimbus-Version", "v2"}}), "v2");
  EXPECT_EQ(run(*front, {{"Nimbus-Version", "v1"}}), "v1");
  EXPECT_EQ(run(*front, {{"Nimbus-Version", "staging"}}), "v2");
  EXPECT_NE(run(*front, {{"Nimbus-Version", "v9"}}).find("does not run"), std::string::npos);

  // No routes: the pool's own code, as before versions.
  front->set_routes(nullptr);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(run(*front), "v1");
}

TEST_F(VersionRouting, AStickyKeyKeepsOneUserOnOneVersionAndSplitsUsersByWeight) {
  auto front = pool("v1");
  std::shared_ptr<FunctionPool> v2 = pool("v2");
  auto routes = std::make_shared<VersionRoutes>();
  routes->versions = {{"v1", nullptr}, {"v2", v2.get()}};
  auto& live = routes->aliases["live"];
  live.weights = {{nullptr, 50}, {v2.get(), 50}};
  live.sticky_cookie = "sid";
  routes->pools = {v2};
  front->set_routes(routes);
  std::map<std::string, int> users;
  for (int u = 0; u < 2000; ++u) {
    const std::string cookie = "theme=dark; sid=user-" + std::to_string(u);
    const std::string first = run(*front, {{"Cookie", cookie}});
    for (int k = 0; k < 5; ++k) ASSERT_EQ(run(*front, {{"Cookie", cookie}}), first) << "user " << u << " moved";
    ++users[first];
  }
  EXPECT_NEAR(users["v1"], 1000, 100);
  EXPECT_NEAR(users["v2"], 1000, 100);
}

}  // namespace
}  // namespace nimbus::deploy
