// What the host checks and prepares at start for a sandboxed function: the tools, user
// namespaces, a seccomp filter that builds, folders the sandbox user can reach and write, and
// the function's cgroup when cgroup v2 is delegated to the host (else rlimits do the work).
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>

#include "runtime/native/native_build.h"
#include "runtime/process/sandbox.h"

namespace nimbus {
namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool write_text(const fs::path& file, const std::string& text) {
  std::ofstream out(file);
  out << text;
  out.flush();
  return static_cast<bool>(out);
}

bool has_word(const std::string& list, const std::string& word) {
  std::istringstream in(list);
  for (std::string w; in >> w;) {
    if (w == word) return true;
  }
  return false;
}

// A root host's sandbox builds its file system as kSandboxUid, which must be able to enter
// every folder on the way to what it binds (the clone opens them as that user).
Status check_reachable(const std::string& function, const fs::path& path) {
  for (fs::path p = path; !p.empty() && p != p.root_path(); p = p.parent_path()) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    bool enters = (st.st_mode & S_IXOTH) || (st.st_uid == kSandboxUid && (st.st_mode & S_IXUSR)) ||
                  (st.st_gid == kSandboxGid && (st.st_mode & S_IXGRP));
    if (!enters) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
      return Error{"function '" + function + "': isolation: sandbox runs as uid " + std::to_string(kSandboxUid) +
                   ", which cannot enter " + p.string() + " (mode " + mode + "); allow it (chmod o+x " + p.string() +
                   ") or move the app somewhere it can"};
    }
  }
  return ok_status();
}

// writable: folders the sandbox user owns. A symbolic link out of the app (data -> /etc) would
// hand the sandbox, and our chown, whatever it points at: refused.
Status prepare_writable(const AppSpec& app, const FunctionSpec& fn) {
  std::error_code ec;
  const fs::path app_real = fs::canonical(app.dir, ec);
  for (const auto& dir : fn.writable) {
    const fs::path path = app.dir / dir;
    fs::create_directories(path, ec);
    if (ec) return Error{"function '" + fn.name + "': cannot create writable folder " + path.string() + ": " + ec.message()};
    const fs::path real = fs::canonical(path, ec);
    auto rel = real.lexically_relative(app_real);
    if (ec || rel.empty() || rel.begin()->string() == ".." || fs::is_symlink(fs::symlink_status(path))) {
      return Error{"function '" + fn.name + "': writable folder " + path.string() +
                   " leads outside the app folder (a symbolic link?); expected a real folder inside " + app.dir.string()};
    }
    if (rel.begin()->string() == ".nimbus" || rel == ".") {
      return Error{"function '" + fn.name + "': writable folder " + path.string() +
                   " would hand the sandbox the host's own files (.nimbus: the admin token, keys, the store); "
                   "name a folder of its own inside the app"};
    }
    // Not following a link: the folder was checked to be real just above, and a link put in
    // its place since must not make this chown someone else's file.
    if (::geteuid() == 0 && ::fchownat(AT_FDCWD, path.c_str(), kSandboxUid, kSandboxGid, AT_SYMLINK_NOFOLLOW) != 0) {
      return Error{"function '" + fn.name + "': cannot give writable folder " + path.string() + " to the sandbox user (uid " +
                   std::to_string(kSandboxUid) + "): " + std::strerror(errno)};
    }
  }
  return ok_status();
}

// The function's cgroup: the host moves itself into a leaf (a cgroup with processes cannot
// enable controllers for its children), enables memory, pids and cpu below its own, and sets
// the function's limits for all its instances together; each instance's rlimits still apply.
Expected<fs::path> make_function_cgroup(const CgroupV2& cg, const AppSpec& app, const FunctionSpec& fn) {
  std::error_code ec;
  const fs::path leaf = cg.own / "nimbus-host";
  fs::create_directories(leaf, ec);
  if (ec || !write_text(leaf / "cgroup.procs", "0")) return Error{"cannot move the host into " + leaf.string()};
  if (!write_text(cg.own / "cgroup.subtree_control", "+memory +pids +cpu")) {
    return Error{"cannot enable memory, pids and cpu in " + (cg.own / "cgroup.subtree_control").string()};
  }
  const fs::path dir = cg.own / ("nimbus-" + app.name + "-" + fn.name);
  fs::create_directories(dir, ec);
  const int n = fn.max_instances;
  const std::size_t memory = fn.memory_limit > 0 ? fn.memory_limit : kSandboxDefaultMemory;
  bool ok = !ec && write_text(dir / "memory.max", std::to_string(memory * static_cast<std::size_t>(n))) &&
            write_text(dir / "pids.max", std::to_string(fn.max_processes * n)) &&
            write_text(dir / "cpu.max", std::to_string(100000 * n) + " 100000");        // a CPU per instance
  if (!ok) return Error{"cannot set the limits of " + dir.string()};
  return dir;
}

// A sandbox cannot write bytecode where the next one would find it, so each cold start would
// compile the SDK and the handler again (~15 ms here). The host compiles them once into the
// cache process workers use, which sandboxes read (bound read-only). Best effort: without it
// a sandbox only starts slower.
// True when `cache` (a PYTHONPYCACHEPREFIX) holds bytecode of `source` at least as new as it.
bool bytecode_fresh(const fs::path& cache, const fs::path& source) {
  std::error_code ec;
  const auto written = fs::last_write_time(source, ec);
  if (ec) return false;
  const std::string stem = source.stem().string() + ".";
  for (const auto& e : fs::directory_iterator(cache / source.parent_path().relative_path(), ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(stem, 0) == 0 && e.path().extension() == ".pyc" && e.last_write_time(ec) >= written) return true;
  }
  return false;
}

void precompile_python(const AppSpec& app, const FunctionSpec& fn) {
  const std::string handler = fn.handler.substr(0, fn.handler.rfind(':'));
  const fs::path file = fs::path(handler).is_absolute() ? fs::path(handler) : app.dir / handler;
  const fs::path cache = app.dir / ".nimbus" / "pycache";
  const fs::path sdk_worker = sdk_cpp_dir().parent_path() / "python" / "nimbus" / "worker.py";
  if (bytecode_fresh(cache, file) && bytecode_fresh(cache, sdk_worker)) return;  // the usual restart: ~100 ms saved
  std::vector<std::string> args = {"/usr/bin/python3", "-m", "compileall", "-q",
                                   (sdk_cpp_dir().parent_path() / "python").string(), file.string()};
  std::vector<std::string> env = {"PATH=/usr/bin:/bin", "PYTHONPYCACHEPREFIX=" + cache.string()};
  std::vector<char*> argv, envp;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  if (::posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data()) == 0) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  posix_spawn_file_actions_destroy(&fa);
}

// A sandbox around /bin/true, once per host: a kernel or container that does not allow what
// the launcher does (user namespaces, mounts in them, a fresh /proc) is refused at start with
// the step that failed, not at a function's first cold start.
const Status& trial_launch() {
  static const Status result = [] {
    SandboxPlan plan;
    plan.mounts = sandbox_minimal_mounts();
    if (const auto& program = seccomp_program(); program) plan.seccomp = *program;
    auto pid = launch_sandboxed(plan, "/", {"/usr/bin/true"}, {}, {-1, -1, -1});
    if (!pid) return Status(pid.error());
    int status = 0;
    while (::waitpid(*pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return Status(Error{"a sandboxed /usr/bin/true ended with status " + std::to_string(status)});
    }
    return ok_status();
  }();
  return result;
}

}  // namespace

CgroupV2 detect_cgroup_v2(const fs::path& root) {
  CgroupV2 cg;
  const fs::path mount = root / "sys/fs/cgroup";
  std::error_code ec;
  if (!fs::exists(mount / "cgroup.controllers", ec)) {
    cg.why_not = "no cgroup v2 hierarchy at /sys/fs/cgroup (a v1 or hybrid layout)";
    return cg;
  }
  std::istringstream lines(read_text(root / "proc/self/cgroup"));
  std::string own;
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("0::", 0) == 0) own = line.substr(3);
  }
  if (own.empty()) {
    cg.why_not = "the host is in no cgroup v2 (/proc/self/cgroup has no 0:: line)";
    return cg;
  }
  cg.own = (mount / fs::path(own).relative_path()).lexically_normal();
  if (cg.own.filename().empty()) cg.own = cg.own.parent_path();
  if (cg.own.filename() == "nimbus-host") cg.own = cg.own.parent_path();  // moved there by an earlier function
  const std::string controllers = read_text(cg.own / "cgroup.controllers");
  for (const char* c : {"memory", "pids", "cpu"}) {
    if (!has_word(controllers, c)) {
      cg.why_not = "controller " + std::string(c) + " is not delegated to " + cg.own.string() + " (it has: " +
                   (controllers.empty() ? "none" : controllers.substr(0, controllers.find('\n'))) + ")";
      return cg;
    }
  }
  for (const char* f : {"", "cgroup.subtree_control", "cgroup.procs"}) {
    if (::access((cg.own / f).c_str(), W_OK) != 0) {
      cg.why_not = (cg.own / f).string() + " is not writable by the host (not delegated to it)";
      return cg;
    }
  }
  return cg;
}

Expected<SandboxSetup> prepare_sandbox(const AppSpec& app, const FunctionSpec& fn, const fs::path& root) {
  const bool root_host = ::geteuid() == 0;
  if (read_text(root / "proc/sys/user/max_user_namespaces").rfind("0", 0) == 0) {
    return Error{"function '" + fn.name + "': isolation: sandbox needs user namespaces, which this kernel has "
                 "turned off (user.max_user_namespaces = 0); enable them: sysctl -w user.max_user_namespaces=10000"};
  }
  if (const auto& program = seccomp_program(); !program) return Error{"function '" + fn.name + "': " + program.error().message};
  if (const Status& tried = trial_launch(); !tried) {
    return Error{"function '" + fn.name + "': isolation: sandbox cannot be built on this machine: " + tried.error().message};
  }
  if (root_host) {
    for (const fs::path& p : {app.dir, sdk_cpp_dir().parent_path(), native_worker_program().parent_path()}) {
      if (auto st = check_reachable(fn.name, p); !st) return st.error();
    }
  }
  if (auto st = prepare_writable(app, fn); !st) return st.error();
  if (fn.runtime == RuntimeKind::python) precompile_python(app, fn);
  SandboxSetup setup;
  {
    // Once per app folder and host: every sandboxed function shares it.
    static std::mutex mu;
    static std::map<fs::path, fs::path> made;
    std::lock_guard lock(mu);
    auto& etc = made[app.dir];
    if (std::error_code ec; etc.empty() || !fs::is_directory(etc, ec)) {
      auto built = make_sandbox_etc(app.dir / ".nimbus" / "sandbox");
      if (!built) return Error{"function '" + fn.name + "': " + built.error().message};
      etc = *built;
    }
    setup.etc = etc;
  }
  const CgroupV2 cg = detect_cgroup_v2(root);
  if (!cg.usable()) {
    setup.limits = "rlimits inside the sandbox (processes, memory, CPU time); cgroup v2 not used: " + cg.why_not;
    return setup;
  }
  auto dir = make_function_cgroup(cg, app, fn);
  if (!dir) {
    setup.limits = "rlimits inside the sandbox; cgroup v2 failed: " + dir.error().message;
    return setup;
  }
  setup.cgroup = *dir;
  setup.limits = "cgroup v2 " + dir->string() + " (memory, pids, cpu) and rlimits inside the sandbox";
  return setup;
}

}  // namespace nimbus
