// The sandbox launcher: one clone into new namespaces, the file system built by the clone
// itself, one exec of the worker. Written here rather than run through bubblewrap because a
// helper program is an exec (or three, with setpriv and prlimit) on every cold start: on this
// VM each costs ~3 ms, which put a sandbox 20 ms behind a plain worker; built in the clone it
// costs about as much as the namespaces themselves (bench/sandbox.sh).
//
// The parent (any host thread) prepares every path and byte the clone will need, since the
// clone of a multithreaded process may not allocate or take a lock: it makes system calls
// only. The sequence follows bubblewrap's:
//   parent: clone(NEWUSER|NEWNS|NEWPID|NEWIPC|NEWUTS[|NEWNET]); write the clone's uid/gid
//           maps (sandbox uid 64000 inside; 64000 outside too for a root host, the host's
//           own uid otherwise); let it go; wait for its exec (or the step that failed).
//   clone:  join the cgroup; drop supplementary groups; become 64000; make every mount
//           private; a tmpfs on /tmp as a base, pivot into it (the host's tree stays visible
//           at /oldroot); a tmpfs at /newroot, built from the plan's steps with sources read
//           through /oldroot; /newroot read-only; pivot into it and detach everything old;
//           set the hostname, the parent-death signal, the rlimits; drop every capability
//           (bounding, ambient, permitted); no_new_privs; the seccomp filter; lay out the
//           fds; exec.
// The worker is PID 1 of its namespace: when it exits, the kernel kills whatever it left.
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/mount.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <deque>
#include <set>

#include "runtime/process/sandbox.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

namespace nimbus {
namespace fs = std::filesystem;

namespace {

// What failed, for the parent's message. The clone writes {step, op, errno}.
enum Step : int {
  kSync = 1, kCgroup, kGroups, kGid, kUid, kPrivate, kBase, kPivotBase, kNewRoot, kMkdir, kBind, kBindAttr, kTmpfs,
  kSymlink, kFile, kProc, kProcKnob, kDevNode, kRemount, kRootRo, kPivot, kDetach, kCwd, kFds, kLimit, kCaps,
  kNoNewPrivs, kSeccomp, kExec, kSession, kOrphaned,
};

const char* step_text(int step) {
  switch (step) {
    case kSync: return "wait for its user namespace";
    case kCgroup: return "join its cgroup";
    case kGroups: return "drop the supplementary groups";
    case kGid: return "become the sandbox group";
    case kUid: return "become the sandbox user";
    case kPrivate: return "make the mounts private";
    case kBase: return "mount the base tmpfs";
    case kPivotBase: return "pivot into the base tmpfs";
    case kNewRoot: return "mount the new root";
    case kMkdir: return "make the mount point of";
    case kBind: return "bind";
    case kBindAttr: return "make read-only or nosuid the bind of";
    case kTmpfs: return "mount a tmpfs at";
    case kSymlink: return "make the link";
    case kFile: return "write the file";
    case kProc: return "mount /proc at";
    case kProcKnob: return "make read-only under";
    case kDevNode: return "bind a device into";
    case kRemount: return "make read-only";
    case kRootRo: return "make the root read-only";
    case kPivot: return "pivot into the new root";
    case kDetach: return "detach the host's file system";
    case kCwd: return "enter the working folder";
    case kFds: return "lay out the worker's fds";
    case kLimit: return "set the rlimits";
    case kCaps: return "drop the capabilities";
    case kNoNewPrivs: return "set no_new_privs";
    case kSeccomp: return "load the seccomp filter";
    case kExec: return "exec";
    case kSession: return "start a session";
    case kOrphaned: return "start: the host went away during the launch";
    default: return "start";
  }
}

struct Report {
  int step = 0;
  int op = -1;  // the plan step it was at, or -1
  int error = 0;
};

// One plan step with every path and byte the clone needs, made by the parent.
struct Prepared {
  SandboxMount::Kind kind;
  const char* source = nullptr;  // "/oldroot/usr", a link's text, a file's content
  std::size_t length = 0;        // a file's content length
  const char* target = nullptr;  // "/newroot/usr"
  bool file_point = false;       // the mount point is a file, not a folder
  std::vector<const char*> mkdirs;  // folders to make first, outermost first
  std::vector<const char*> extra;   // proc: knobs to make read-only; dev: node targets, then links
  std::vector<const char*> extra2;  // dev: node sources, then link texts
  const char* options = nullptr;    // tmpfs options
  int op = 0;
};

constexpr const char* kOld = "/oldroot";
constexpr std::chrono::seconds kLaunchTimeout{10};
constexpr const char* kNew = "/newroot";
constexpr const char* kProcKnobs[] = {"sys", "sysrq-trigger", "irq", "bus"};
constexpr const char* kDevNodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
constexpr const char* kDevLinks[][2] = {
    {"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
    {"stderr", "/proc/self/fd/2"}};

}  // namespace

struct SandboxLaunchSteps {
  std::deque<std::string> strings;  // stable addresses for the clone
  uint64_t dispositions = ~uint64_t{0};  // the signals the clone resets (see changed_dispositions)
  std::vector<Prepared> steps;
  std::set<std::string> made;  // folders an earlier step makes or mounts
  const char* hold(std::string s) { return strings.emplace_back(std::move(s)).c_str(); }
  // "/newroot/a/b/c" -> /newroot/a, /newroot/a/b, less those an earlier step made.
  std::vector<const char*> folders(const std::string& path) {
    std::vector<const char*> out;
    for (std::size_t at = std::strlen(kNew) + 1; (at = path.find('/', at)) != std::string::npos; ++at) {
      if (made.insert(path.substr(0, at)).second) out.push_back(hold(path.substr(0, at)));
    }
    return out;
  }
  // A folder mounted at `path`: it exists, and what was made below it before is covered.
  void mounted(const std::string& path) {
    for (auto it = made.lower_bound(path + "/"); it != made.end() && it->rfind(path + "/", 0) == 0;) it = made.erase(it);
    made.insert(path);
  }
};

namespace {

// -- The clone's side: system calls only. --------------------------------------------------

[[noreturn]] void fail(int fd, int step, int op = -1) {
  Report r{step, op, errno};
  (void)!::write(fd, &r, sizeof r);
  ::_exit(127);
}

int set_attr(const char* path, unsigned flags, uint64_t set) {
  struct mount_attr attr {};
  attr.attr_set = set;
  return static_cast<int>(::syscall(SYS_mount_setattr, AT_FDCWD, path, flags, &attr, sizeof attr));
}

void make_point(const char* path, bool file) {
  if (file) {
    ::mknod(path, S_IFREG | 0644, 0);
  } else {
    ::mkdir(path, 0755);
  }
}

void make_folders(int report, const Prepared& s) {
  for (const char* dir : s.mkdirs) {
    if (::mkdir(dir, 0755) != 0 && errno != EEXIST) fail(report, kMkdir, s.op);
  }
}

void run_step(int report, const Prepared& s) {
  using Kind = SandboxMount::Kind;
  make_folders(report, s);
  switch (s.kind) {
    case Kind::bind_ro:
    case Kind::bind_rw: {
      make_point(s.target, s.file_point);
      if (::mount(s.source, s.target, nullptr, MS_BIND | MS_REC, nullptr) != 0) fail(report, kBind, s.op);
      uint64_t attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
      if (s.kind == Kind::bind_ro) attrs |= MOUNT_ATTR_RDONLY;
      if (set_attr(s.target, AT_RECURSIVE, attrs) != 0) fail(report, kBindAttr, s.op);
      break;
    }
    case Kind::tmpfs:
      ::mkdir(s.target, 0755);
      if (::mount("tmpfs", s.target, "tmpfs", MS_NOSUID | MS_NODEV, s.options) != 0) fail(report, kTmpfs, s.op);
      break;
    case Kind::symlink:
      if (::symlink(s.source, s.target) != 0 && errno != EEXIST) fail(report, kSymlink, s.op);
      break;
    case Kind::file: {
      int fd = ::open(s.target, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
      if (fd < 0) fail(report, kFile, s.op);
      for (std::size_t done = 0; done < s.length;) {
        ssize_t n = ::write(fd, s.source + done, s.length - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) fail(report, kFile, s.op);
        done += static_cast<std::size_t>(n);
      }
      ::close(fd);
      break;
    }
    case Kind::proc:
      ::mkdir(s.target, 0755);
      if (::mount("proc", s.target, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) fail(report, kProc, s.op);
      for (const char* knob : s.extra) {
        if (::access(knob, F_OK) != 0) continue;
        if (::mount(knob, knob, nullptr, MS_BIND | MS_REC, nullptr) != 0 ||
            set_attr(knob, AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) != 0) {
          fail(report, kProcKnob, s.op);
        }
      }
      break;
    case Kind::dev: {
      ::mkdir(s.target, 0755);
      if (::mount("tmpfs", s.target, "tmpfs", MS_NOSUID | MS_NOEXEC, s.options) != 0) fail(report, kTmpfs, s.op);
      const std::size_t nodes = std::size(kDevNodes);
      for (std::size_t i = 0; i < s.extra.size(); ++i) {
        if (i < nodes) {
          make_point(s.extra[i], true);
          if (::mount(s.extra2[i], s.extra[i], nullptr, MS_BIND, nullptr) != 0 ||
              set_attr(s.extra[i], 0, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC) != 0) {
            fail(report, kDevNode, s.op);
          }
        } else if (::symlink(s.extra2[i], s.extra[i]) != 0) {
          fail(report, kSymlink, s.op);
        }
      }
      break;
    }
    case Kind::remount_ro:
      if (set_attr(s.target, 0, MOUNT_ATTR_RDONLY) != 0) fail(report, kRemount, s.op);
      break;
  }
}

struct Child {
  const SandboxPlan* plan;
  const SandboxLaunchSteps* launch;
  const char* cgroup_procs;  // null: no cgroup
  const char* cwd;
  char* const* argv;
  char* const* envp;
  const int* fds;
  int nfds;
  int sync;    // read end: the parent wrote the maps
  int sync_w;  // the parent's ends, copied into the clone: closed first
  int report_r;
  int report;  // write end, close-on-exec
  bool root_host;
  uint64_t dispositions;  // signals the host catches or ignores (bit n-1 for signal n)
  sigset_t mask;          // the parent thread's, restored in the parent after the clone
};

[[noreturn]] void child_main(const Child& c) {
  // Default dispositions: the host's handlers mean nothing here, and an ignored SIGPIPE would
  // stay ignored across the exec.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig <= 64; ++sig) {
    if (c.dispositions & (uint64_t{1} << (sig - 1))) ::sigaction(sig, &dfl, nullptr);
  }
  // Its copies of the parent's ends: else a parent that died would leave the read below, and
  // the check for a parent gone before the exec, waiting on an end the clone holds itself.
  ::close(c.sync_w);
  ::close(c.report_r);
  char go = 0;
  ssize_t got;
  while ((got = ::read(c.sync, &go, 1)) < 0 && errno == EINTR) {
  }
  if (got != 1) fail(c.report, kSync);  // the parent is gone (its end closed)
  if (c.cgroup_procs) {
    int fd = ::open(c.cgroup_procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, "0", 1) != 1) fail(c.report, kCgroup);
    ::close(fd);
    ::unshare(CLONE_NEWCGROUP);  // its cgroup becomes its root, where the kernel allows it
  }
  // Raw calls: glibc's wrappers would signal the host's other threads, copied but not here.
  if (c.root_host && ::syscall(SYS_setgroups, 0, nullptr) != 0) fail(c.report, kGroups);
  if (::syscall(SYS_setresgid, kSandboxGid, kSandboxGid, kSandboxGid) != 0) fail(c.report, kGid);
  if (::syscall(SYS_setresuid, kSandboxUid, kSandboxUid, kSandboxUid) != 0) fail(c.report, kUid);
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) fail(c.report, kPrivate);
  if (::mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=64k") != 0) fail(c.report, kBase);
  if (::mkdir("/tmp/oldroot", 0755) != 0 || ::mkdir("/tmp/newroot", 0755) != 0 ||
      ::syscall(SYS_pivot_root, "/tmp", "/tmp/oldroot") != 0 || ::chdir("/") != 0) {
    fail(c.report, kPivotBase);
  }
  if (::mount("tmpfs", kNew, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") != 0) fail(c.report, kNewRoot);
  for (const Prepared& s : c.launch->steps) run_step(c.report, s);
  if (set_attr(kNew, 0, MOUNT_ATTR_RDONLY) != 0) fail(c.report, kRootRo);
  // Into the new root; the old one (base tmpfs, and the host's tree under it) is stacked
  // beneath and detached whole.
  if (::chdir(kNew) != 0 || ::syscall(SYS_pivot_root, ".", ".") != 0) fail(c.report, kPivot);
  if (::umount2(".", MNT_DETACH) != 0) fail(c.report, kDetach);
  if (::chdir(c.cwd) != 0) fail(c.report, kCwd);
  ::sethostname("sandbox", 7);
  if (::setsid() < 0) fail(c.report, kSession);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // after the uid change, which clears it
  // A host that died before the line above sends no signal: its end of the sync pipe, held
  // until the launch is over, says so instead.
  pollfd gone{c.sync, POLLIN, 0};
  if (::poll(&gone, 1, 0) > 0 && (gone.revents & (POLLHUP | POLLERR))) fail(c.report, kOrphaned);
  // The worker's fds: each source first above any target, then into place; every other fd
  // closes at the exec (the report pipe stays usable until then).
  int high[8];
  for (int i = 0; i < c.nfds; ++i) {
    // Each above 63 first, /dev/null too: opened low, it could be the very fd it must become,
    // and a dup2 onto itself would leave it close-on-exec.
    int from = c.fds[i] >= 0 ? c.fds[i] : ::open("/dev/null", O_RDWR | O_CLOEXEC);
    high[i] = from >= 0 ? ::fcntl(from, F_DUPFD_CLOEXEC, 64) : -1;
    if (c.fds[i] < 0 && from >= 0) ::close(from);
    if (high[i] < 0) fail(c.report, kFds);
  }
  for (int i = 0; i < c.nfds; ++i) {
    if (::dup2(high[i], i) != i) fail(c.report, kFds);
  }
  if (::syscall(SYS_close_range, c.nfds, ~0U, CLOSE_RANGE_CLOEXEC) != 0) fail(c.report, kFds);
  // Limits set in the new user namespace: RLIMIT_NPROC counts this sandbox's processes only.
  auto limit = [&](int resource, rlim_t value) {
    rlimit r{value, value};
    if (::setrlimit(static_cast<__rlimit_resource>(resource), &r) != 0) fail(c.report, kLimit);
  };
  if (c.plan->max_processes > 0) limit(RLIMIT_NPROC, static_cast<rlim_t>(c.plan->max_processes));
  if (c.plan->data_limit > 0) limit(RLIMIT_DATA, c.plan->data_limit);
  if (c.plan->cpu_seconds > 0) limit(RLIMIT_CPU, static_cast<rlim_t>(c.plan->cpu_seconds));
  if (c.plan->open_files > 0) limit(RLIMIT_NOFILE, static_cast<rlim_t>(c.plan->open_files));
  // No capability, now or after the exec: the bounding set, the ambient set, then the rest.
  for (int cap = 0; cap <= 63; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) fail(c.report, kCaps);
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) fail(c.report, kCaps);
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct none[2] = {};
  if (::syscall(SYS_capset, &header, none) != 0) fail(c.report, kCaps);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail(c.report, kNoNewPrivs);
  sock_fprog program{static_cast<unsigned short>(c.plan->seccomp.size() / sizeof(sock_filter)),
                     reinterpret_cast<sock_filter*>(const_cast<char*>(c.plan->seccomp.data()))};
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &program, 0, 0) != 0) fail(c.report, kSeccomp);
  sigset_t unblocked;
  sigemptyset(&unblocked);
  ::sigprocmask(SIG_SETMASK, &unblocked, nullptr);  // not the host thread's (which blocks SIGTERM)
  ::execve(c.argv[0], c.argv, c.envp);
  fail(c.report, kExec);
}

// -- The parent's side. -----------------------------------------------------------------------

Status write_file(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return Error{"sandbox: cannot open " + path + ": " + std::strerror(errno)};
  ssize_t n = ::write(fd, text.data(), text.size());
  int e = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(text.size())) return Error{"sandbox: cannot write " + path + ": " + std::strerror(e)};
  return ok_status();
}

// The signals whose disposition is not the default, from /proc/self/status (SigCgt, SigIgn):
// the clone resets just these (each call costs ~5 us on this VM; all 64 cost 0.4 ms). Read
// when a function's launch is prepared, at host start once the host's handlers are set, not
// at every launch (a launch may run on an event loop).
uint64_t changed_dispositions() {
  uint64_t bits = ~uint64_t{0};  // unknown: reset them all
  int fd = ::open("/proc/self/status", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return bits;
  char buf[4096];
  std::string text;
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  uint64_t found = 0;
  int fields = 0;
  for (const char* key : {"\nSigIgn:", "\nSigCgt:"}) {
    auto at = text.find(key);
    if (at == std::string::npos) continue;
    found |= std::strtoull(text.c_str() + at + std::strlen(key), nullptr, 16);
    ++fields;
  }
  return fields == 2 ? found : bits;
}

// Every step's paths, in the clone's terms; a missing optional source drops its step.
void prepare(const SandboxPlan& plan, SandboxLaunchSteps& l) {
  using Kind = SandboxMount::Kind;
  l.dispositions = changed_dispositions();
  int op = 0;
  for (const SandboxMount& m : plan.mounts) {
    Prepared p;
    p.kind = m.kind;
    p.op = op++;
    const std::string target = std::string(kNew) + m.target;
    struct stat st {};
    const bool bind = m.kind == Kind::bind_ro || m.kind == Kind::bind_rw;
    // A missing optional source drops its step before its folders are counted as made.
    // A missing required one is left for the clone to fail on, with the path in the message.
    if (bind && ::stat(m.source.c_str(), &st) != 0 && m.optional) continue;
    p.target = l.hold(target);
    p.mkdirs = l.folders(target);
    switch (m.kind) {
      case Kind::bind_ro:
      case Kind::bind_rw: {
        p.file_point = !S_ISDIR(st.st_mode);
        // Resolved here: a link's absolute text (/etc/localtime -> /usr/share/...) would be
        // read from the clone's base tmpfs, not from under /oldroot.
        std::error_code ec;
        const fs::path real = fs::canonical(m.source, ec);
        p.source = l.hold(std::string(kOld) + (ec ? m.source : real.string()));
        break;
      }
      case Kind::symlink: p.source = l.hold(m.source); break;
      case Kind::file:
        p.source = l.hold(m.content);
        p.length = m.content.size();
        break;
      case Kind::tmpfs: {
        char mode[16];
        std::snprintf(mode, sizeof mode, "%o", m.mode);
        p.options = l.hold("mode=" + std::string(mode) + (m.size ? ",size=" + std::to_string(m.size) : ""));
        break;
      }
      case Kind::proc:
        for (const char* knob : kProcKnobs) p.extra.push_back(l.hold(target + "/" + knob));
        break;
      case Kind::dev:
        p.options = "mode=0755,size=64k";
        for (const char* node : kDevNodes) {
          p.extra.push_back(l.hold(target + "/" + node));
          p.extra2.push_back(l.hold(std::string(kOld) + "/dev/" + node));
        }
        for (const auto& link : kDevLinks) {
          p.extra.push_back(l.hold(target + "/" + link[0]));
          p.extra2.push_back(link[1]);
        }
        break;
      case Kind::remount_ro: break;
    }
    const bool folder = m.kind == Kind::tmpfs || m.kind == Kind::proc || m.kind == Kind::dev ||
                        ((m.kind == Kind::bind_ro || m.kind == Kind::bind_rw) && !p.file_point);
    if (folder) l.mounted(target);
    l.steps.push_back(std::move(p));
  }
}

}  // namespace

void prepare_launch(SandboxPlan& plan) {
  auto steps = std::make_shared<SandboxLaunchSteps>();
  prepare(plan, *steps);
  plan.steps = std::move(steps);
}

Expected<pid_t> launch_sandboxed(const SandboxPlan& plan, const fs::path& cwd, const std::vector<std::string>& argv,
                                 const std::vector<std::string>& envp, const std::vector<int>& fds) {
  if (argv.empty()) return Error{"sandbox: the worker command is empty"};
  if (plan.seccomp.empty() || plan.seccomp.size() % sizeof(sock_filter) != 0) {
    return Error{"sandbox: no usable seccomp filter; refusing to start a sandbox without one"};
  }
  if (fds.size() > 8) return Error{"sandbox: at most 8 fds are handed to a worker"};
  std::shared_ptr<const SandboxLaunchSteps> steps = plan.steps;
  if (!steps) {
    auto made = std::make_shared<SandboxLaunchSteps>();
    prepare(plan, *made);
    steps = std::move(made);
  }
  std::vector<char*> args, env;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  for (const auto& e : envp) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);
  const std::string procs = plan.cgroup.empty() ? std::string() : (plan.cgroup / "cgroup.procs").string();
  const std::string inside_cwd = cwd.empty() ? std::string("/") : cwd.string();

  int sync[2] = {-1, -1}, report[2] = {-1, -1};
  if (::pipe2(sync, O_CLOEXEC) != 0 || ::pipe2(report, O_CLOEXEC) != 0) {
    int e = errno;
    for (int fd : {sync[0], sync[1], report[0], report[1]}) {
      if (fd >= 0) ::close(fd);
    }
    return Error{std::string("sandbox: cannot create its pipes: ") + std::strerror(e)};
  }
  Child c{&plan, steps.get(), procs.empty() ? nullptr : procs.c_str(), inside_cwd.c_str(), args.data(), env.data(),
          fds.data(), static_cast<int>(fds.size()), sync[0], sync[1], report[0], report[1], ::geteuid() == 0, steps->dispositions, {}};
  // No signal handler may run in the clone before it resets them.
  sigset_t all;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &c.mask);
  long flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | SIGCHLD;
  if (!plan.network) flags |= CLONE_NEWNET;
  // Its own cgroup namespace: /proc/self/cgroup shows "/", not the host's place. A sandbox
  // that joins a cgroup makes it after joining, so that its cgroup is its root.
  if (plan.cgroup.empty()) flags |= CLONE_NEWCGROUP;
  const long pid = ::syscall(SYS_clone, flags, nullptr, nullptr, nullptr, 0);
  if (pid == 0) child_main(c);
  const int clone_error = errno;
  ::pthread_sigmask(SIG_SETMASK, &c.mask, nullptr);
  ::close(sync[0]);
  ::close(report[1]);
  auto end = [&](const std::string& why) -> Error {
    ::close(sync[1]);
    ::close(report[0]);
    if (pid > 0) {
      ::kill(static_cast<pid_t>(pid), SIGKILL);
      int status = 0;
      while (::waitpid(static_cast<pid_t>(pid), &status, 0) < 0 && errno == EINTR) {
      }
    }
    return Error{why};
  };
  if (pid < 0) {
    return end(std::string("sandbox: cannot create its namespaces (clone): ") + std::strerror(clone_error) +
               (clone_error == EPERM || clone_error == ENOSPC ? " (are unprivileged user namespaces allowed?)" : ""));
  }
  // The maps: 64000 inside is 64000 outside for a root host (no host file is the sandbox's
  // own), the host's own uid and gid otherwise (the only ones it may map).
  const bool root_host = ::geteuid() == 0;
  const std::string proc = "/proc/" + std::to_string(pid) + "/";
  const std::string uid = std::to_string(kSandboxUid) + " " + std::to_string(root_host ? kSandboxUid : ::geteuid()) + " 1\n";
  const std::string gid = std::to_string(kSandboxGid) + " " + std::to_string(root_host ? kSandboxGid : ::getegid()) + " 1\n";
  Status mapped = ok_status();
  if (!root_host) mapped = write_file(proc + "setgroups", "deny");
  if (mapped) mapped = write_file(proc + "uid_map", uid);
  if (mapped) mapped = write_file(proc + "gid_map", gid);
  if (!mapped) return end(mapped.error().message);
  // The sync pipe stays open until the launch is over: the clone takes its closing for the
  // host's death (see child_main).
  if (::write(sync[1], "g", 1) != 1) return end(std::string("sandbox: cannot start its clone: ") + std::strerror(errno));
  // Bounded: a mount source that hangs (a dead NFS or FUSE server) must not hold this thread.
  Report r;
  ssize_t n = -1;
  const auto until = std::chrono::steady_clock::now() + kLaunchTimeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    pollfd ready{report[0], POLLIN, 0};
    const int polled = ::poll(&ready, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (polled < 0 && errno == EINTR) continue;
    if (polled <= 0) {
      return end("sandbox: its set-up did not finish within " + std::to_string(kLaunchTimeout.count()) +
                 " s (a bind source that hangs, such as a dead network mount?)");
    }
    while ((n = ::read(report[0], &r, sizeof r)) < 0 && errno == EINTR) {
    }
    break;
  }
  if (n == 0) {  // closed by the exec: the worker runs
    ::close(report[0]);
    ::close(sync[1]);
    return static_cast<pid_t>(pid);
  }
  std::string what = std::string("sandbox: cannot ") + step_text(n == sizeof r ? r.step : 0);
  if (n == sizeof r && r.op >= 0 && static_cast<std::size_t>(r.op) < plan.mounts.size()) {
    const SandboxMount& m = plan.mounts[static_cast<std::size_t>(r.op)];
    what += (m.kind == SandboxMount::Kind::bind_ro || m.kind == SandboxMount::Kind::bind_rw)
                ? " " + m.source + " at " + m.target
                : " " + m.target;
  } else if (n == sizeof r && r.step == kExec) {
    what += " " + argv[0];
  } else if (n == sizeof r && r.step == kCwd) {
    what += " " + inside_cwd;
  }
  if (n == sizeof r) what += std::string(": ") + std::strerror(r.error);
  return end(what);
}

}  // namespace nimbus
