#pragma once
// isolation: sandbox: what a sandboxed worker sees and may do, and the launcher that builds it
// (sandbox_launch.cpp). The worker is cloned straight into its own user, mount, PID, IPC, UTS
// and (without `network: true`) network namespaces; the clone builds a file system from
// nothing, joins the function's cgroup when cgroup v2 is delegated to the host, sets its
// rlimits, becomes an unprivileged user with no capabilities, loads a seccomp filter and execs
// the worker, which is PID 1 of its namespace. One clone and one exec, as for a plain worker:
// no helper programs. docs/security.md says what this promises and what it does not.
#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/app_spec.h"
#include "core/expected.h"

namespace nimbus {

// The sandbox's user and group, inside; outside too when the host runs as root. A host uid
// nothing else uses: then no host file is the sandbox's own (a root-owned 0600 token would be,
// were it mapped to root), and RLIMIT_NPROC, which the kernel never enforces for root, holds.
inline constexpr uid_t kSandboxUid = 64000;
inline constexpr gid_t kSandboxGid = 64000;
// A sandbox with no memory_limit gets this one: a memory bomb must never reach the host.
inline constexpr std::size_t kSandboxDefaultMemory = 512u << 20;
// The RLIMIT_DATA a sandboxed worker gets (0 = none): memory_limit, else the default. Except
// the default in a build with AddressSanitizer (make test), whose native workers map
// terabytes of shadow memory, which RLIMIT_DATA counts: they could not start under it.
std::size_t sandbox_data_limit(const FunctionSpec& function);
// Its /dev/shm (POSIX shared memory, Python's multiprocessing) holds at most this much.
inline constexpr std::size_t kSandboxShmSize = 64u << 20;

// cgroup v2 under a file system root (tests pass a fake one): usable when the unified
// hierarchy is mounted at /sys/fs/cgroup and the host's own cgroup has the memory, pids and
// cpu controllers and is writable to it (delegated).
struct CgroupV2 {
  std::filesystem::path own;  // the host's cgroup folder
  std::string why_not;        // empty when usable
  bool usable() const { return why_not.empty(); }
};
CgroupV2 detect_cgroup_v2(const std::filesystem::path& root);

// What the host prepared for one sandboxed function at start.
struct SandboxSetup {
  std::filesystem::path cgroup;  // the function's cgroup; empty: rlimits only
  std::string limits;            // for the log: which path enforces the limits, and why
  std::filesystem::path etc;     // the sandbox's /etc, made at start (empty: bind file by file)
};

// The sandbox's /etc as one folder, bound read-only in one mount instead of one per file (each
// mount is ~30 us of every cold start here): copies of what a C library, Python and Node read
// (sandbox.cpp: kEtcFiles), a passwd and group naming the sandbox user, and a hosts file with
// localhost only. Made anew in `dir` at every host start, so it is as fresh as the host; the
// resolver's files are bound over it, live, for functions with `network: true`.
Expected<std::filesystem::path> make_sandbox_etc(const std::filesystem::path& dir);

// At host start, for a function with isolation: sandbox: the kernel lets a sandbox be built
// here (a trial launch, once per host), the sandbox user can reach what it must see, its writable folders exist and are its own, and its
// cgroup is made when cgroup v2 is delegated. `root` is "/" outside tests.
Expected<SandboxSetup> prepare_sandbox(const AppSpec& app, const FunctionSpec& function,
                                       const std::filesystem::path& root = "/");

// What the sandbox must show besides the runtime and the app folder.
struct SandboxView {
  std::filesystem::path cwd;
  std::vector<std::filesystem::path> read_only;  // files or folders, bound at the same path
};

// One step in building the sandbox's file system, in order; paths are as seen inside (a bind's
// source is the host's path).
struct SandboxMount {
  enum class Kind {
    bind_ro,     // source bound read-only (and nosuid, nodev) at target
    bind_rw,     // source bound writable (nosuid, nodev) at target
    tmpfs,       // a fresh tmpfs of at most `size` bytes (0: the kernel's default), mode `mode`
    symlink,     // target is a symbolic link to source
    file,        // target is a read-only file holding `content`
    proc,        // a fresh /proc of the sandbox's PID namespace, its kernel knobs read-only
    dev,         // a minimal /dev: null, zero, full, random, urandom, tty and the usual links
    remount_ro,  // target (a mount made above) becomes read-only
  };
  Kind kind = Kind::bind_ro;
  std::string source;
  std::string target;
  std::size_t size = 0;
  unsigned mode = 0755;
  std::string content;
  bool optional = false;  // a bind whose source is missing is skipped, not an error

  static SandboxMount bind(std::string source, std::string target, Kind kind = Kind::bind_ro, bool optional = false) {
    SandboxMount m;
    m.kind = kind;
    m.source = std::move(source);
    m.target = std::move(target);
    m.optional = optional;
    return m;
  }
  static SandboxMount at(Kind kind, std::string target, std::size_t size = 0, unsigned mode = 0755) {
    SandboxMount m;
    m.kind = kind;
    m.target = std::move(target);
    m.size = size;
    m.mode = mode;
    return m;
  }
  static SandboxMount link(std::string text, std::string target) {
    SandboxMount m = bind(std::move(text), std::move(target), Kind::symlink);
    return m;
  }
  static SandboxMount file(std::string target, std::string content) {
    SandboxMount m = at(Kind::file, std::move(target), 0, 0644);
    m.content = std::move(content);
    return m;
  }
};

// Everything the launcher needs besides the worker's command, made once per function.
struct SandboxPlan {
  std::vector<SandboxMount> mounts;
  bool network = false;          // keeps the host's network namespace
  std::filesystem::path cgroup;  // joined first when not empty (cgroup v2)
  int max_processes = 0;         // RLIMIT_NPROC, counted in the sandbox's own user namespace
  std::size_t data_limit = 0;    // RLIMIT_DATA; 0 = none
  int64_t cpu_seconds = 0;       // RLIMIT_CPU; 0 = none
  int open_files = 0;            // RLIMIT_NOFILE; 0 = none
  std::string seccomp;           // the classic BPF program (seccomp_program())
  // The launcher's own form of the mounts (every path it needs, made once: a lookup costs
  // ~5 us a call here, and a plan has ~30 paths). prepare_launch fills it; null: each launch
  // makes its own.
  std::shared_ptr<const struct SandboxLaunchSteps> steps;
};

// Readies `plan` for many launches (see SandboxPlan::steps). Sources are looked up now: one
// that appears later is not seen, as with the rest of the plan.
void prepare_launch(SandboxPlan& plan);

// Refuses, at start, a plan whose file system a sandbox could redirect: nothing it binds (and
// no mask) may lie inside a folder that a sandboxed function of the app may write, since
// mounts follow links at every launch and a function can put a link there between two
// launches. So: no store inside a writable folder, no writable folder inside another, no
// program or library of a sandbox inside one. Errors name the function and both paths.
Status check_sandbox_plan(const AppSpec& app, const std::string& function, const SandboxPlan& plan);

// Just enough to run a program from /usr: /usr, its links, /proc, /dev and a small /tmp.
std::vector<SandboxMount> sandbox_minimal_mounts();

SandboxPlan sandbox_plan(const AppSpec& app, const FunctionSpec& function, const SandboxView& view,
                         const SandboxSetup& setup);

// Starts `argv` (argv[0] an absolute path) with `envp` in the sandboxed clone. `fds[i]` becomes
// fd i in the worker (-1: /dev/null); everything else the host has open is closed at exec.
// Returns the worker's pid (as the host sees it) once it runs the new program, or why a step
// failed ("sandbox: cannot bind /usr at /usr: Permission denied").
Expected<pid_t> launch_sandboxed(const SandboxPlan& plan, const std::filesystem::path& cwd,
                                 const std::vector<std::string>& argv, const std::vector<std::string>& envp,
                                 const std::vector<int>& fds);

// The compiled seccomp program (classic BPF, for PR_SET_SECCOMP), built once.
const Expected<std::string>& seccomp_program();

}  // namespace nimbus
