// The seccomp filter of a sandboxed worker: what a function has no business calling is
// denied with EPERM (ENOSYS for clone3), never with a kill, so that a runtime that probes a
// call (a JIT, a thread library) sees a plain error and carries on. Everything else is
// allowed: this is a deny list in front of the namespaces, not the only wall.
#include <linux/sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>

#include "runtime/process/sandbox.h"

namespace nimbus {
namespace {

// Kernel surface a function never needs, most of it the usual way out of a container: other
// processes' memory (ptrace, process_vm_*, pidfd_getfd, kcmp), the mount table, kernel modules
// and kexec, eBPF, the kernel keyring, new or other namespaces, the clock, the machine itself,
// perf counters, userfaultfd (a common exploit aid), open_by_handle_at (the "shocker" escape)
// and io_uring (a large, often-exploited surface that bypasses per-call filtering).
constexpr const char* kDenied[] = {
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr",
    "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog",
    "bpf", "keyctl", "add_key", "request_key",
    "unshare", "setns",
    "settimeofday", "clock_settime", "clock_adjtime", "sethostname", "setdomainname",
    "perf_event_open", "userfaultfd", "lookup_dcookie", "open_by_handle_at", "name_to_handle_at",
    "iopl", "ioperm", "vm86", "vm86old", "uselib", "_sysctl", "nfsservctl", "vhangup",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
};

// clone with any of these makes a namespace: denied. Threads and plain forks pass.
constexpr uint64_t kNamespaceFlags[] = {CLONE_NEWNS,   CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC,
                                        CLONE_NEWUSER, CLONE_NEWPID,    CLONE_NEWNET};

// personality() flags that weaken the process's own defences (ASLR off, executable data, a
// page at address 0). Bit 31 must be clear: 0xffffffff is the harmless query.
constexpr uint64_t kPersonalityFlags[] = {0x0040000 /* ADDR_NO_RANDOMIZE */, 0x0400000 /* READ_IMPLIES_EXEC */,
                                          0x0100000 /* MMAP_PAGE_ZERO */, 0x0200000 /* ADDR_COMPAT_LAYOUT */};

struct FilterDeleter {
  void operator()(void* ctx) const { seccomp_release(ctx); }
};

// One place that checks libseccomp's return codes (negative errno values).
Status call(int rc, const std::string& what) {
  if (rc < 0) return Error{"cannot build the sandbox's seccomp filter (" + what + "): " + std::strerror(-rc)};
  return ok_status();
}

Expected<std::string> build_program() {
  std::unique_ptr<void, FilterDeleter> ctx(seccomp_init(SCMP_ACT_ALLOW));
  if (!ctx) return Error{"cannot build the sandbox's seccomp filter: seccomp_init failed (is libseccomp usable?)"};
  const uint32_t deny = SCMP_ACT_ERRNO(EPERM);
  // A call made through another ABI (int 0x80, x32) would slip past rules written for this
  // one: those are denied too.
  if (auto st = call(seccomp_attr_set(ctx.get(), SCMP_FLTATR_ACT_BADARCH, deny), "foreign ABIs"); !st) return st.error();
  for (const char* name : kDenied) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // unknown to this libseccomp: nothing to deny
    if (auto st = call(seccomp_rule_add(ctx.get(), deny, nr, 0), name); !st) return st.error();
  }
  for (uint64_t flag : kNamespaceFlags) {
    auto st = call(seccomp_rule_add(ctx.get(), deny, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag)),
                   "clone");
    if (!st) return st.error();
  }
  // clone3 passes its flags in memory, out of a filter's sight. ENOSYS, not EPERM: glibc then
  // falls back to clone, whose flags the rules above do see.
  if (auto st = call(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0), "clone3"); !st) {
    return st.error();
  }
  for (uint64_t flag : kPersonalityFlags) {
    const uint64_t mask = flag | 0x80000000u;
    auto st = call(seccomp_rule_add(ctx.get(), deny, SCMP_SYS(personality), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, mask, flag)),
                   "personality");
    if (!st) return st.error();
  }
  // Exported as classic BPF, the form PR_SET_SECCOMP loads.
  int fd = ::memfd_create("nimbus-seccomp", MFD_CLOEXEC);
  if (fd < 0) return Error{std::string("cannot export the sandbox's seccomp filter: memfd_create: ") + std::strerror(errno)};
  std::string program;
  Status exported = call(seccomp_export_bpf(ctx.get(), fd), "export");
  if (exported && ::lseek(fd, 0, SEEK_SET) == 0) {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) program.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  if (!exported) return exported.error();
  if (program.empty()) return Error{"cannot export the sandbox's seccomp filter: the exported program is empty"};
  return program;
}

}  // namespace

const Expected<std::string>& seccomp_program() {
  static const Expected<std::string> program = build_program();  // the same for every sandbox
  return program;
}

}  // namespace nimbus
