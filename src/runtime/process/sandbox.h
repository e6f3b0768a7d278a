#pragma once
// isolation: sandbox: the command line that puts a worker in a bubblewrap sandbox (its own
// unprivileged user, PID, IPC, UTS, mount and optionally network namespaces, no capabilities,
// a seccomp filter, a minimal read-only file system) and the limits around it (cgroup v2 when
// delegated to the host, rlimits inside the sandbox otherwise). docs/security.md says what this
// promises and what it does not.
#include <sys/types.h>

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/app_spec.h"
#include "core/expected.h"

namespace nimbus {

// Where the tools are expected (Debian: bubblewrap, util-linux).
inline constexpr const char* kBubblewrap = "/usr/bin/bwrap";
inline constexpr const char* kSetpriv = "/usr/bin/setpriv";  // a root host drops to the sandbox user with it
inline constexpr const char* kPrlimit = "/usr/bin/prlimit";  // sets the rlimits inside the sandbox

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
};

// At host start, for a function with isolation: sandbox: the tools are there, the sandbox
// user can reach what it must see, its writable folders exist and are its own, and its
// cgroup is made when cgroup v2 is delegated. `root` is "/" outside tests.
Expected<SandboxSetup> prepare_sandbox(const AppSpec& app, const FunctionSpec& function,
                                       const std::filesystem::path& root = "/");

// What the sandbox must show besides the runtime and the app folder.
struct SandboxView {
  std::filesystem::path cwd;
  std::vector<std::filesystem::path> read_only;  // files or folders, bound at the same path
};

struct SandboxCommand {
  std::vector<std::string> argv;
  // Handed to the command on fds kWorkerOutFd + 1 + i, where its argv expects them: the
  // seccomp program, then /etc/passwd and /etc/group.
  std::vector<std::string> files;
};

// Wraps `argv` (a worker command) in the sandbox. Without a usable seccomp filter (which
// prepare_sandbox reports at start) bubblewrap is handed an empty one and refuses to start.
SandboxCommand sandbox_command(const AppSpec& app, const FunctionSpec& function, const SandboxView& view,
                                         const SandboxSetup& setup, std::vector<std::string> argv);

// A file in memory (memfd) holding `content`, read from its start, its fd at `min_fd` or
// above (so that handing it to a worker as a low fd cannot clobber another). Closed with it.
class ScratchFile {
 public:
  static Expected<ScratchFile> with(std::string_view content, int min_fd);
  ScratchFile(ScratchFile&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  ScratchFile& operator=(ScratchFile&&) = delete;
  ~ScratchFile();
  int fd() const { return fd_; }

 private:
  explicit ScratchFile(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// The compiled seccomp program (classic BPF, as bubblewrap's --seccomp takes it), built once.
const Expected<std::string>& seccomp_program();

}  // namespace nimbus
