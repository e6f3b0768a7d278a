// The sandbox's pieces that need no running host: cgroup v2 detection on a fake file system
// root (this machine has a hybrid layout, so the delegated case is only reachable this way),
// the bubblewrap command line, the seccomp program, and extra fds handed to a worker.
#include <unistd.h>

#include <algorithm>
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

bool has(const std::vector<std::string>& argv, std::initializer_list<std::string> run) {
  return std::search(argv.begin(), argv.end(), run.begin(), run.end()) != argv.end();
}

TEST(SandboxCommand, BuildsTheFileSystemFromNothingAndSetsLimitsInside) {
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
  auto c = sandbox_command(app, fn, SandboxView{app.dir, {"/opt/sdk"}}, SandboxSetup{}, {"/usr/bin/python3", "-c", "x"});
  const auto& a = c.argv;
  EXPECT_FALSE(has(a, {"--ro-bind", "/", "/"}));
  EXPECT_TRUE(has(a, {"--unshare-user", "--uid", std::to_string(kSandboxUid)}));
  for (const char* flag : {"--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--new-session",
                           "--die-with-parent", "--disable-userns"}) {
    EXPECT_TRUE(has(a, {flag})) << flag;
  }
  EXPECT_TRUE(has(a, {"--cap-drop", "ALL"}));
  EXPECT_TRUE(has(a, {"--seccomp", std::to_string(kWorkerOutFd + 1)}));
  EXPECT_TRUE(has(a, {"--ro-bind", app.dir.string(), app.dir.string(), "--tmpfs", (app.dir / ".nimbus").string()}));
  EXPECT_TRUE(has(a, {"--ro-bind", "/dev/null", (app.dir / "data/state.db").string()}));
  EXPECT_TRUE(has(a, {"--bind", (app.dir / "out").string(), (app.dir / "out").string()}));
  EXPECT_TRUE(has(a, {"--ro-bind", "/opt/sdk", "/opt/sdk"}));
  EXPECT_FALSE(has(a, {"--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"}));  // no network, no resolver
  const auto data = std::to_string(sandbox_data_limit(fn));  // the default, but for ASan builds
  EXPECT_TRUE(has(a, {kPrlimit, "--nproc=32:32"}));
  EXPECT_EQ(has(a, {"--nproc=32:32", "--data=" + data + ":" + data}), sandbox_data_limit(fn) > 0);
  fn.memory_limit = 64u << 20;
  EXPECT_TRUE(has(sandbox_command(app, fn, SandboxView{app.dir, {}}, SandboxSetup{}, {"/bin/true"}).argv,
                  {"--data=67108864:67108864"}));
  fn.memory_limit = 0;
  EXPECT_TRUE(has(a, {"--", "/usr/bin/python3", "-c", "x"}));
  EXPECT_EQ(a.front(), ::geteuid() == 0 ? kSetpriv : kBubblewrap);
  ASSERT_EQ(c.files.size(), 3u);
  EXPECT_NE(c.files[1].find("nimbus:x:" + std::to_string(kSandboxUid)), std::string::npos);

  fn.network = true;
  auto online = sandbox_command(app, fn, SandboxView{app.dir, {}}, SandboxSetup{"/sys/fs/cgroup/x", ""}, {"/bin/true"});
  EXPECT_FALSE(has(online.argv, {"--unshare-net"}));
  EXPECT_TRUE(has(online.argv, {"--ro-bind-try", "/etc/resolv.conf", "/etc/resolv.conf"}));
  EXPECT_EQ(online.argv.front(), "/bin/sh");  // joins its cgroup before bubblewrap forks
}

TEST(SandboxSeccomp, TheProgramBuilds) {
  const auto& program = seccomp_program();
  ASSERT_TRUE(program) << program.error().message;
  EXPECT_GT(program->size(), 8u * 20);
  EXPECT_EQ(program->size() % 8, 0u);  // whole sock_filter instructions
}

// The fds a sandbox's command reads its seccomp program and passwd from reach it as 5, 6, ...
TEST(SandboxFiles, ReachTheWorkerAtFixedFds) {
  auto first = ScratchFile::with("first\n", 16);
  auto second = ScratchFile::with("second\n", 16);
  ASSERT_TRUE(first && second);
  EXPECT_GE(first->fd(), 16);
  WorkerSpawn spec;
  spec.argv = {"/bin/sh", "-c", "cat <&5 >&2; cat <&6 >&2"};
  spec.inherit_fds = {first->fd(), second->fd()};
  std::mutex mu;
  std::condition_variable cv;
  std::string lines;
  bool ended = false;
  auto w = WorkerProcess::spawn(spec, WorkerCallbacks{{}, [&](std::string_view line, bool) {
                                                        std::lock_guard lock(mu);
                                                        lines += std::string(line) + ";";
                                                      },
                                                      [&](int, const std::string&) {
                                                        std::lock_guard lock(mu);
                                                        ended = true;
                                                        cv.notify_all();
                                                      }});
  ASSERT_TRUE(w) << w.error().message;
  std::unique_lock lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(10), [&] { return ended; }));
  lock.unlock();
  w->reset();  // joins the output thread: every line is in
  EXPECT_EQ(lines, "first;second;");

  WorkerSpawn low;
  low.argv = {"/bin/true"};
  low.inherit_fds = {5};
  auto refused = WorkerProcess::spawn(low, {});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message.find("below"), std::string::npos);
}

}  // namespace
}  // namespace nimbus
