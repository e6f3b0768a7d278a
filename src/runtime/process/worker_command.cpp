// How a manifest function becomes a worker: its command (the Python or Node worker of the SDK,
// the native worker, or the manifest's own command), its whole environment, working folder and
// limits, and under isolation: sandbox the plan of the sandbox it is launched into (sandbox.cpp).
#include <unistd.h>

#include <cstdlib>

#include "runtime/native/native_build.h"
#include "runtime/process/frames_transport.h"
#include "runtime/process/sandbox.h"

namespace nimbus {

namespace {

// A program named without a folder is looked up on the worker's PATH (posix_spawn does not).
std::string resolve_program(const AppSpec& app, const std::string& program) {
  if (program.find('/') != std::string::npos) {
    std::filesystem::path p = program;
    return (p.is_absolute() ? p : (app.dir / p).lexically_normal()).string();
  }
  for (const char* dir : {"/usr/local/bin", "/usr/bin", "/bin"}) {
    std::filesystem::path p = std::filesystem::path(dir) / program;
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return program;  // the spawn fails and says which program was missing
}

}  // namespace

WorkerLaunch worker_launch_for(const AppSpec& app, const FunctionSpec& fn, const std::filesystem::path& native_library,
                               const SandboxSetup& sandbox) {
  const bool boxed = fn.isolation == Isolation::sandbox;
  WorkerLaunch o;
  const auto sdk = sdk_cpp_dir().parent_path();
  o.cwd = fn.working_dir.empty() ? app.dir : (app.dir / fn.working_dir).lexically_normal();
  o.memory_limit = boxed ? sandbox_data_limit(fn) : fn.memory_limit;
  o.cpu_seconds = std::chrono::duration_cast<std::chrono::seconds>(fn.cpu_limit).count();
  if (fn.cpu_limit > Duration::zero() && o.cpu_seconds == 0) o.cpu_seconds = 1;
  o.open_files = fn.open_files;
  // The worker may run in another folder (working_dir): hand it the handler's absolute path.
  if (auto colon = fn.handler.rfind(':'); colon != std::string::npos) {
    std::filesystem::path file = fn.handler.substr(0, colon);
    if (file.is_relative()) file = (app.dir / file).lexically_normal();
    o.handler = file.string() + fn.handler.substr(colon);
  } else {
    o.handler = fn.handler;
  }
  o.runtime = std::string(to_string(fn.runtime));
  o.concurrency = fn.concurrency;
  // A clean, explicit environment: nothing of the host's leaks in (and nothing that slows a
  // start, such as NODE_EXTRA_CA_CERTS or a pyenv shim on PATH).
  // A sandbox has no home folder: its HOME is its private /tmp.
  o.env = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + (boxed ? std::string("/tmp") : app.dir.string()), "LANG=C.UTF-8",
           "NIMBUS_FUNCTION=" + fn.name, "NIMBUS_APP=" + app.name};
  // Where data every version shares lives (a sandbox sees only its own folders: not there).
  if (!boxed) o.env.push_back("NIMBUS_APP_DIR=" + (app.home.empty() ? app.dir : app.home).string());
  if (fn.runtime == RuntimeKind::python) {
    // Not `-m nimbus`: runpy pulls in importlib.util and friends, ~5 ms of every cold start
    // here. The same code by import, with the working folder first on sys.path as with -m.
    o.argv = {"/usr/bin/python3", "-c", "from nimbus.worker import main; main()"};
    o.env.push_back("PYTHONPATH=" + (sdk / "python").string());
    // Bytecode (the SDK's and the function's modules) cached under .nimbus, not beside the
    // sources: later cold starts skip compiling. A sandbox reads it (bound read-only; the host
    // fills it for the SDK and the handler) and compiles anything else afresh.
    o.env.push_back("PYTHONPYCACHEPREFIX=" + (app.dir / ".nimbus" / "pycache").string());
  } else if (fn.runtime == RuntimeKind::node) {
    o.argv = {"/usr/bin/node", (sdk / "node" / "worker.js").string()};
    o.env.push_back("NODE_PATH=" + (sdk / "node" / "lib").string());
    o.env.push_back("NODE_ENV=production");
  } else if (fn.runtime == RuntimeKind::process) {
    o.argv = fn.command;
    if (!o.argv.empty()) o.argv[0] = resolve_program(app, o.argv[0]);
  } else {
    o.argv = {native_worker_program().string()};
    o.handler = native_library.string();
  }
  if (boxed) {
    // Besides the runtime and the app folder, a sandbox sees the SDK, and the program and
    // library it runs when they live elsewhere (a build folder; .nimbus/build, masked).
    SandboxView view{o.cwd, {sdk}};
    if (!o.argv.empty()) view.read_only.push_back(o.argv[0]);
    if (!native_library.empty()) view.read_only.push_back(native_library);
    auto plan = sandbox_plan(app, fn, view, sandbox);
    prepare_launch(plan);
    o.sandbox = std::make_shared<const SandboxPlan>(std::move(plan));
  }
#if defined(__SANITIZE_ADDRESS__)
  // An ASan build's native worker: LeakSanitizer stops the world with ptrace, which a sandbox
  // denies; it would end every sandboxed worker with a fatal error instead of a clean exit.
  if (boxed && fn.runtime == RuntimeKind::native) o.env.push_back("ASAN_OPTIONS=detect_leaks=0");
#endif
  for (const auto& name : fn.env_allow) {
    if (const char* v = std::getenv(name.c_str())) o.env.push_back(name + "=" + v);
  }
  for (const auto& e : fn.env) o.env.push_back(e.name + "=" + e.value);
  return o;
}

}  // namespace nimbus
