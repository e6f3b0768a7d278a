// The sandbox's pieces that need no running host: cgroup v2 detection on a fake file system
// root (this machine has a hybrid layout, so the delegated case is only reachable this way),
// the plan of a sandbox's file system and limits, the seccomp program, and the launcher itself
// (what a clone sees, and the step named when one fails).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <signal.h>

#include <algorithm>
#include <sstream>
#include <condition_variable>
#include <fstream>
#include <gtest/gtest.h>
#include <mutex>
#include <random>

#include "runtime/process/sandbox.h"
#include "runtime/process/worker_process.h"

namespace nimbus {
namespace {
namespace fs = std::filesystem;

struct FakeRoot {
  FakeRoot() : path(fs::temp_directory_path() / ("nimbus-cgroup-" + std::to_string(std::random_device{}()))) {}
  ~FakeRoot() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  void write(const std::string& relative, const std::string& content) const {
    fs::create_directories((path / relative).parent_path());
    std::ofstream(path / relative) << content;
  }
  fs::path path;
};

TEST(SandboxCgroup, AHybridOrV1LayoutFallsBackToRlimits) {
  FakeRoot root;
  root.write("sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n");
  root.write("sys/fs/cgroup/unified/cgroup.controllers", "");
  root.write("proc/self/cgroup", "12:memory:/\n0::/\n");
  auto cg = detect_cgroup_v2(root.path);
  EXPECT_FALSE(cg.usable());
  EXPECT_NE(cg.why_not.find("v1 or hybrid"), std::string::npos) << cg.why_not;
}

TEST(SandboxCgroup, ControllersMustBeDelegatedToTheHostsCgroup) {
  FakeRoot root;
  root.write("sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
  root.write("proc/self/cgroup", "0::/system.slice/nimbus.service\n");
  root.write("sys/fs/cgroup/system.slice/nimbus.service/cgroup.controllers", "cpu memory\n");
  auto cg = detect_cgroup_v2(root.path);
  EXPECT_FALSE(cg.usable());
  EXPECT_NE(cg.why_not.find("controller pids is not delegated"), std::string::npos) << cg.why_not;

  root.write("sys/fs/cgroup/system.slice/nimbus.service/cgroup.controllers", "cpu memory pids\n");
  root.write("sys/fs/cgroup/system.slice/nimbus.service/cgroup.subtree_control", "");
  root.write("sys/fs/cgroup/system.slice/nimbus.service/cgroup.procs", "");
  cg = detect_cgroup_v2(root.path);
  EXPECT_TRUE(cg.usable()) << cg.why_not;
  EXPECT_EQ(cg.own, root.path / "sys/fs/cgroup/system.slice/nimbus.service");
  // Once the host has moved itself into its leaf, the function cgroups stay beside it.
  root.write("proc/self/cgroup", "0::/system.slice/nimbus.service/nimbus-host\n");
  EXPECT_EQ(detect_cgroup_v2(root.path).own, root.path / "sys/fs/cgroup/system.slice/nimbus.service");
}

TEST(SandboxCgroup, ThisMachineSaysWhichPathItTakes) {
  auto cg = detect_cgroup_v2("/");
  EXPECT_TRUE(cg.usable() || !cg.why_not.empty());
}

using Kind = SandboxMount::Kind;

bool has(const SandboxPlan& plan, Kind kind, const std::string& target, const std::string& source = "") {
  return std::any_of(plan.mounts.begin(), plan.mounts.end(), [&](const SandboxMount& m) {
    return m.kind == kind && m.target == target && (source.empty() || m.source == source);
  });
}

std::size_t where(const SandboxPlan& plan, Kind kind, const std::string& target) {
  for (std::size_t i = 0; i < plan.mounts.size(); ++i) {
    if (plan.mounts[i].kind == kind && plan.mounts[i].target == target) return i;
  }
  return plan.mounts.size();
}

TEST(SandboxPlan, BuildsTheFileSystemFromNothingAndSetsLimitsInside) {
  FakeRoot app_dir;
  app_dir.write(".nimbus/admin.token", "t");
  app_dir.write("data/state.db", "");
  AppSpec app;
  app.dir = app_dir.path;
  app.store = "sqlite:data/state.db";  // a store outside .nimbus is masked too
  FunctionSpec fn;
  fn.name = "f";
  fn.isolation = Isolation::sandbox;
  fn.writable = {"out"};
  fn.max_processes = 32;
  auto p = sandbox_plan(app, fn, SandboxView{app.dir, {"/opt/sdk"}}, SandboxSetup{});
  EXPECT_FALSE(has(p, Kind::bind_ro, "/", "/"));
  EXPECT_FALSE(has(p, Kind::bind_ro, "/etc", "/etc"));
  EXPECT_TRUE(has(p, Kind::bind_ro, "/usr", "/usr"));
  const std::string dir = app.dir.string(), state = (app.dir / ".nimbus").string();
  EXPECT_TRUE(has(p, Kind::bind_ro, dir, dir));
  EXPECT_LT(where(p, Kind::bind_ro, dir), where(p, Kind::tmpfs, state)) << "the mask goes over the app folder";
  EXPECT_TRUE(has(p, Kind::bind_ro, (app.dir / "data/state.db").string(), "/dev/null"));
  EXPECT_TRUE(has(p, Kind::bind_rw, (app.dir / "out").string()));
  EXPECT_TRUE(has(p, Kind::bind_ro, "/opt/sdk", "/opt/sdk"));
  EXPECT_EQ(where(p, Kind::remount_ro, state), p.mounts.size() - 1) << "what was bound under the mask is read-only last";
  EXPECT_FALSE(has(p, Kind::bind_ro, "/etc/resolv.conf"));  // no network, no resolver
  EXPECT_FALSE(p.network);
  EXPECT_TRUE(has(p, Kind::proc, "/proc"));
  EXPECT_LT(where(p, Kind::tmpfs, "/dev/shm"), where(p, Kind::remount_ro, "/dev"));
  auto passwd = std::find_if(p.mounts.begin(), p.mounts.end(), [](const SandboxMount& m) { return m.target == "/etc/passwd"; });
  ASSERT_NE(passwd, p.mounts.end());
  EXPECT_EQ(passwd->kind, Kind::file);
  EXPECT_NE(passwd->content.find("nimbus:x:" + std::to_string(kSandboxUid)), std::string::npos);
  EXPECT_EQ(p.max_processes, 32);
  EXPECT_EQ(p.data_limit, sandbox_data_limit(fn));  // the default, but for ASan builds
  EXPECT_FALSE(p.seccomp.empty());
  fn.memory_limit = 64u << 20;
  EXPECT_EQ(sandbox_plan(app, fn, SandboxView{app.dir, {}}, SandboxSetup{}).data_limit, 64u << 20);
  fn.memory_limit = 0;

  fn.network = true;
  auto online = sandbox_plan(app, fn, SandboxView{app.dir, {}}, SandboxSetup{"/sys/fs/cgroup/x", "", {}});
  EXPECT_TRUE(online.network);
  EXPECT_TRUE(has(online, Kind::bind_ro, "/etc/resolv.conf"));
  EXPECT_EQ(online.cgroup, "/sys/fs/cgroup/x");
}

TEST(SandboxPlan, APreparedEtcIsOneMountWithTheResolverBoundOverItForTheNetwork) {
  FakeRoot dir;
  auto etc = make_sandbox_etc(dir.path / "sandbox");
  ASSERT_TRUE(etc) << etc.error().message;
  EXPECT_EQ(*etc, dir.path / "sandbox" / "etc");
  // What it holds: copies, the links into /usr kept as links, our own passwd and hosts.
  EXPECT_TRUE(fs::is_regular_file(*etc / "ld.so.cache"));
  EXPECT_TRUE(fs::is_symlink(*etc / "localtime"));
  EXPECT_FALSE(fs::exists(*etc / "shadow"));
  EXPECT_FALSE(fs::exists(*etc / "ssl" / "private"));
  std::ifstream passwd(*etc / "passwd");
  std::string text((std::istreambuf_iterator<char>(passwd)), {});
  EXPECT_NE(text.find("nimbus:x:" + std::to_string(kSandboxUid)), std::string::npos);
  EXPECT_EQ(fs::status(*etc / "passwd").permissions(), fs::perms(0644));
  EXPECT_TRUE(fs::exists(*etc / "resolv.conf")) << "a mount point for the live one";

  AppSpec app;
  app.dir = dir.path;
  FunctionSpec fn;
  fn.isolation = Isolation::sandbox;
  SandboxSetup setup;
  setup.etc = *etc;
  auto p = sandbox_plan(app, fn, SandboxView{app.dir, {}}, setup);
  EXPECT_TRUE(has(p, Kind::bind_ro, "/etc", etc->string()));
  EXPECT_FALSE(has(p, Kind::bind_ro, "/etc/ld.so.cache"));
  EXPECT_FALSE(has(p, Kind::file, "/etc/passwd"));
  EXPECT_FALSE(has(p, Kind::bind_ro, "/etc/resolv.conf"));
  fn.network = true;
  auto online = sandbox_plan(app, fn, SandboxView{app.dir, {}}, setup);
  EXPECT_LT(where(online, Kind::bind_ro, "/etc"), where(online, Kind::bind_ro, "/etc/resolv.conf"));
  // Made again: a second start replaces the first.
  std::ofstream(*etc / "stale") << "x";
  ASSERT_TRUE(make_sandbox_etc(dir.path / "sandbox"));
  EXPECT_FALSE(fs::exists(*etc / "stale"));
}

// Mounts follow links at every launch, and a sandbox can put a link in a folder it may write
// between two launches (found by a review: with writable: [data, data/x/y] a function swapped
// data/x for a folder holding y -> ../../.nimbus, and the next worker saw the admin token).
// So nothing a sandbox is shown may lie inside such a folder; each case is refused at start.
struct WritableApp {
  WritableApp() {
    app.dir = dir.path;
    app.store = "sqlite:.nimbus/state.db";
    fs::create_directories(dir.path / "data" / "x" / "y");
    fs::create_directories(dir.path / "bin");
    dir.write("bin/worker", "#!/bin/sh\n");
  }
  FunctionSpec function(const std::string& name, std::vector<std::string> writable) {
    FunctionSpec fn;
    fn.name = name;
    fn.isolation = Isolation::sandbox;
    fn.writable = std::move(writable);
    return fn;
  }
  Status check(const FunctionSpec& fn, SandboxView view = {}) {
    if (view.cwd.empty()) view.cwd = app.dir;
    return check_sandbox_plan(app, fn.name, sandbox_plan(app, fn, view, SandboxSetup{}));
  }
  FakeRoot dir;
  AppSpec app;
};

TEST(SandboxPlan, NothingItShowsMayLieInsideAWritableFolder) {
  WritableApp w;
  w.app.functions = {w.function("ok", {"data", "bin2"})};
  EXPECT_TRUE(w.check(w.app.functions[0]));

  w.app.functions = {w.function("nested", {"data", "data/x/y"})};
  auto nested = w.check(w.app.functions[0]);
  ASSERT_FALSE(nested);
  EXPECT_NE(nested.error().message.find("writable folder " + (w.dir.path / "data/x/y").string() + " is inside the folder data"),
            std::string::npos) << nested.error().message;

  w.app.store = "sqlite:data/app.db";
  w.dir.write("data/app.db", "");
  w.app.functions = {w.function("f", {"data"})};
  auto store = w.check(w.app.functions[0]);
  ASSERT_FALSE(store);
  EXPECT_NE(store.error().message.find("the store's file " + (w.dir.path / "data/app.db").string()), std::string::npos)
      << store.error().message;
  w.app.store = "sqlite:.nimbus/state.db";

  // Another function's writable folder counts: it may plant the link for this one.
  w.app.functions = {w.function("writer", {"bin"}), w.function("runner", {})};
  auto program = w.check(w.app.functions[1], SandboxView{w.app.dir, {w.dir.path / "bin" / "worker"}});
  ASSERT_FALSE(program);
  EXPECT_NE(program.error().message.find("function 'runner'"), std::string::npos) << program.error().message;
  EXPECT_NE(program.error().message.find("that function 'writer' may write"), std::string::npos) << program.error().message;
}

// The store part says where its backend keeps data (store_files): a blob folder named in
// the URL is hidden like the default one, and so are the database's files.
TEST(SandboxPlan, TheStoresFilesAndBlobFolderAreMaskedWhereverTheUrlPutsThem) {
  FakeRoot dir;
  dir.write("data/app.db", "");
  dir.write("data/app.db-wal", "");
  dir.write("uploads/c/0123", "bytes");
  AppSpec app;
  app.dir = dir.path;
  app.store = "sqlite:data/app.db?blobs=uploads";
  FunctionSpec fn;
  fn.isolation = Isolation::sandbox;
  auto p = sandbox_plan(app, fn, SandboxView{app.dir, {}}, SandboxSetup{});
  const std::string uploads = (dir.path / "uploads").string();
  EXPECT_TRUE(has(p, Kind::bind_ro, (dir.path / "data/app.db").string(), "/dev/null"));
  EXPECT_TRUE(has(p, Kind::bind_ro, (dir.path / "data/app.db-wal").string(), "/dev/null"));
  EXPECT_TRUE(has(p, Kind::tmpfs, uploads));
  EXPECT_TRUE(has(p, Kind::remount_ro, uploads));
}

TEST(SandboxPlan, TheMasksComeAfterTheWritableFolders) {
  FakeRoot dir;
  dir.write("data/app.db", "");
  AppSpec app;
  app.dir = dir.path;
  app.store = "sqlite:data/app.db";
  FunctionSpec fn;
  fn.isolation = Isolation::sandbox;
  fn.writable = {"data"};
  auto p = sandbox_plan(app, fn, SandboxView{app.dir, {}}, SandboxSetup{});
  EXPECT_LT(where(p, Kind::bind_rw, (dir.path / "data").string()), where(p, Kind::bind_ro, (dir.path / "data/app.db").string()));
}

TEST(SandboxSeccomp, TheProgramBuilds) {
  const auto& program = seccomp_program();
  ASSERT_TRUE(program) << program.error().message;
  EXPECT_GT(program->size(), 8u * 20);
  EXPECT_EQ(program->size() % 8, 0u);  // whole sock_filter instructions
}

// The launcher alone, around a shell: what a clone sees from the inside.
struct Launched {
  int status = -1;
  std::string out;
};

Launched launch(SandboxPlan plan, const std::string& script) {
  int out[2];
  EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
  if (const auto& program = seccomp_program(); program) plan.seccomp = *program;
  auto pid = launch_sandboxed(plan, "/", {"/bin/sh", "-c", script}, {"PATH=/usr/bin:/bin"}, {-1, out[1], out[1]});
  ::close(out[1]);
  Launched r;
  if (!pid) {
    ::close(out[0]);
    r.out = pid.error().message;
    return r;
  }
  char buf[4096];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) r.out.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  ::waitpid(*pid, &r.status, 0);
  return r;
}

SandboxPlan minimal() {
  SandboxPlan plan;
  plan.mounts = sandbox_minimal_mounts();
  return plan;
}

TEST(SandboxLaunch, TheWorkerIsPidOneOfItsOwnWorldAsTheSandboxUser) {
  auto r = launch(minimal(), "echo pid=$$ uid=$(id -u) gid=$(id -g); ls /; ls /proc | grep -c '^[0-9]'; "
                             "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; "
                             "echo x > /tmp/t && echo tmp-ok; echo x > /planted || echo root-ro; "
                             "echo x > /usr/planted || echo usr-ro; echo x > /dev/null && echo null-ok; hostname");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("pid=1 uid=64000 gid=64000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("bin\ndev\nlib\nlib64\nproc\ntmp\nusr\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("CapEff:\t0000000000000000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("CapBnd:\t0000000000000000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("NoNewPrivs:\t1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Seccomp:\t2"), std::string::npos) << r.out;
  for (const char* seen : {"tmp-ok", "root-ro", "usr-ro", "null-ok", "sandbox"}) {
    EXPECT_NE(r.out.find(seen), std::string::npos) << seen << " in " << r.out;
  }
}

TEST(SandboxLaunch, AFailingStepIsNamedWithItsPaths) {
  auto plan = minimal();
  plan.mounts.push_back(SandboxMount::bind("/nonexistent/nimbus", "/data"));
  auto r = launch(plan, "true");
  EXPECT_EQ(r.status, -1);
  EXPECT_NE(r.out.find("sandbox: cannot bind /nonexistent/nimbus at /data: No such file or directory"), std::string::npos)
      << r.out;
  plan.mounts.back().optional = true;  // ...unless the plan says it may be missing
  EXPECT_EQ(launch(plan, "true").status, 0);
}

TEST(SandboxLaunch, ItsCgroupIsItsRootAndNoSignalIsBlocked) {
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  ::pthread_sigmask(SIG_BLOCK, &block, &old);  // as the host's threads do
  auto r = launch(minimal(), "cat /proc/self/cgroup; grep SigBlk /proc/self/status");
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  ASSERT_EQ(r.status, 0) << r.out;
  std::istringstream lines(r.out);
  int cgroups = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("SigBlk:", 0) == 0) {
      EXPECT_EQ(line, "SigBlk:\t0000000000000000");
    } else {
      EXPECT_EQ(line.substr(line.rfind(':')), ":/") << "the host's cgroup shows: " << line;
      ++cgroups;
    }
  }
  EXPECT_GT(cgroups, 0) << r.out;
}

// A host started with stdin closed: /dev/null, opened for fd 0 of the worker, lands on fd 0
// itself, and must still reach the worker open.
TEST(SandboxLaunch, FdZeroIsThereWhenTheHostHasNone) {
  int saved = ::dup(0);
  ::close(0);
  auto r = launch(minimal(), "ls /proc/self/fd");
  ::dup2(saved, 0);
  ::close(saved);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out.substr(0, 2), "0\n") << r.out;
}

TEST(SandboxLaunch, NoFilterNoSandbox) {
  auto r = launch_sandboxed(minimal(), "/", {"/bin/true"}, {}, {-1, -1, -1});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("seccomp"), std::string::npos) << r.error().message;
}

TEST(SandboxLaunch, OnlyTheGivenFdsCross) {
  int keep[2];
  ASSERT_EQ(::pipe(keep), 0);  // not close-on-exec: a posix_spawn without closefrom would leak it
  auto r = launch(minimal(), "ls /proc/self/fd");
  ::close(keep[0]);
  ::close(keep[1]);
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "0\n1\n2\n3\n") << "fd 3 is ls's own listing";
}

}  // namespace
}  // namespace nimbus
