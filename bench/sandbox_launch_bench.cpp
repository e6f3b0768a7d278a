// Where a sandboxed cold start's extra time goes: starting /usr/bin/true, plainly (posix_spawn)
// and through the sandbox launcher (sandbox_launch.cpp) with the minimal file system, with the
// full plan of a Python function, and keeping the host's network. Timed: until the exec is
// done, which is what a cold start waits for; the exit and the namespaces' teardown are not.
// bench/sandbox.sh runs it after the end-to-end cold starts.
#include <benchmark/benchmark.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "runtime/process/sandbox.h"

namespace nimbus {
namespace {

void wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

void BM_PlainSpawn(benchmark::State& state) {
  char* argv[] = {const_cast<char*>("/usr/bin/true"), nullptr};
  char* envp[] = {nullptr};
  for (auto _ : state) {
    pid_t pid = -1;
    if (::posix_spawn(&pid, argv[0], nullptr, nullptr, argv, envp) != 0) state.SkipWithError("posix_spawn");
    state.PauseTiming();
    wait_for(pid);
    state.ResumeTiming();
  }
}
BENCHMARK(BM_PlainSpawn)->Unit(benchmark::kMillisecond)->UseRealTime();

void run(benchmark::State& state, const SandboxPlan& plan) {
  for (auto _ : state) {
    auto pid = launch_sandboxed(plan, "/", {"/usr/bin/true"}, {}, {-1, -1, -1});
    if (!pid) {
      state.SkipWithError(pid.error().message.c_str());
      return;
    }
    state.PauseTiming();
    wait_for(*pid);
    state.ResumeTiming();
  }
}

SandboxPlan minimal(bool network) {
  SandboxPlan plan;
  plan.mounts = sandbox_minimal_mounts();
  plan.network = network;
  plan.seccomp = *seccomp_program();
  prepare_launch(plan);
  return plan;
}

void BM_SandboxMinimal(benchmark::State& state) { run(state, minimal(false)); }
BENCHMARK(BM_SandboxMinimal)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_SandboxMinimalWithHostNetwork(benchmark::State& state) { run(state, minimal(true)); }
BENCHMARK(BM_SandboxMinimalWithHostNetwork)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_SandboxPythonFunction(benchmark::State& state) {
  AppSpec app;
  app.dir = std::filesystem::temp_directory_path();
  app.store = "sqlite:.nimbus/state.db";
  FunctionSpec fn;
  fn.runtime = RuntimeKind::python;
  fn.isolation = Isolation::sandbox;
  SandboxSetup setup;
  setup.etc = *make_sandbox_etc(app.dir / "nimbus-bench-sandbox");
  SandboxPlan plan = sandbox_plan(app, fn, SandboxView{app.dir, {}}, setup);
  prepare_launch(plan);
  state.counters["mounts"] = static_cast<double>(plan.mounts.size());
  run(state, plan);
}
BENCHMARK(BM_SandboxPythonFunction)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace nimbus

BENCHMARK_MAIN();
