#include "runtime/process/worker_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>

#include "core/thread_role.h"
#include "runtime/process/sandbox.h"

namespace nimbus {
namespace {

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

// The host writes to a worker and ignores SIGPIPE, so that a worker that died makes a write
// fail (EPIPE) rather than end the host. Its workers get the default back (see spawn).
void ignore_sigpipe_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction old {};
    if (::sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) ::signal(SIGPIPE, SIG_IGN);
  });
}

Expected<std::unique_ptr<WorkerProcess>> WorkerProcess::spawn(const WorkerSpawn& spec, WorkerCallbacks callbacks,
                                                              Reactor* reactor) {
  if (spec.argv.empty()) return Error{"worker command is empty"};
  ignore_sigpipe_once();
  // Two pipes, one each way: on this VM a pipe round trip costs half a socket pair's (no
  // socket buffers to allocate and account per write).
  int to[2] = {-1, -1}, from[2] = {-1, -1}, out[2] = {-1, -1}, err[2] = {-1, -1};
  auto close_all = [&] {
    for (int* p : {to, from, out, err}) {
      close_fd(p[0]);
      close_fd(p[1]);
    }
  };
  if (::pipe2(to, O_CLOEXEC) != 0 || ::pipe2(from, O_CLOEXEC) != 0) {
    int e = errno;
    close_all();
    return Error{std::string("cannot create the worker's pipes: ") + std::strerror(e)};
  }
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    int e = errno;
    close_all();
    return Error{std::string("cannot create the worker's output pipes: ") + std::strerror(e)};
  }
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  // Where the protocol is: set here, where the fds are laid out (any given value is replaced).
  std::vector<std::string> env;
  for (const auto& e : spec.env) {
    if (e.rfind("NIMBUS_WORKER_FD=", 0) != 0 && e.rfind("NIMBUS_WORKER_OUT_FD=", 0) != 0) env.push_back(e);
  }
  env.push_back("NIMBUS_WORKER_FD=" + std::to_string(kWorkerInFd));
  env.push_back("NIMBUS_WORKER_OUT_FD=" + std::to_string(kWorkerOutFd));
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = -1;
  std::string failed;
  if (spec.sandbox) {
    static_assert(kWorkerInFd == 3 && kWorkerOutFd == 4);
    auto launched = launch_sandboxed(*spec.sandbox, spec.cwd, spec.argv, env, {-1, out[1], err[1], to[0], from[1]});
    if (launched) pid = *launched;
    else failed = launched.error().message;
  } else {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, to[0], kWorkerInFd);  // dup2 clears close-on-exec
    posix_spawn_file_actions_adddup2(&fa, from[1], kWorkerOutFd);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    // Nothing else of the host's crosses: Asio's listening sockets are not close-on-exec.
    posix_spawn_file_actions_addclosefrom_np(&fa, kWorkerOutFd + 1);
    if (!spec.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, spec.cwd.c_str());
    // The worker gets SIGPIPE's default back (an ignored signal stays ignored across exec).
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t defaults;
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    // And no signal blocked: the host's threads block SIGINT and SIGTERM (taken by sigwait).
    sigset_t unblocked;
    sigemptyset(&unblocked);
    posix_spawnattr_setsigmask(&attr, &unblocked);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    int rc = posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) failed = "cannot start worker " + spec.argv[0] + ": " + std::strerror(rc);
  }
  close_fd(to[0]);
  close_fd(from[1]);
  close_fd(out[1]);
  close_fd(err[1]);
  if (!failed.empty()) {
    close_all();
    return Error{failed};
  }
  // Limits go on right after the exec: posix_spawn returns once the child runs the new image,
  // microseconds before an interpreter's first allocation, and long before user code. (A
  // sandbox set its own, inside, before the exec.)
  auto limit = [pid](int resource, rlim_t value) {
    rlimit r{value, value};
    ::prlimit(pid, static_cast<__rlimit_resource>(resource), &r, nullptr);
  };
  if (!spec.sandbox && spec.memory_limit > 0) limit(RLIMIT_DATA, spec.memory_limit);
  if (!spec.sandbox && spec.cpu_seconds > 0) limit(RLIMIT_CPU, static_cast<rlim_t>(spec.cpu_seconds));
  if (!spec.sandbox && spec.open_files > 0) limit(RLIMIT_NOFILE, static_cast<rlim_t>(spec.open_files));
  std::unique_ptr<WorkerProcess> w(new WorkerProcess());
  w->pid_ = pid;
  w->to_worker_ = std::exchange(to[1], -1);
  if (int size = ::fcntl(w->to_worker_, F_GETPIPE_SZ); size > 0) w->pipe_capacity_ = static_cast<std::size_t>(size);
  // Writes never block: what the pipe cannot take waits in the outbox.
  ::fcntl(w->to_worker_, F_SETFL, ::fcntl(w->to_worker_, F_GETFL) | O_NONBLOCK);
  w->max_outbox_ = spec.max_outbox > 0 ? spec.max_outbox : 2 * spec.max_frame;
  w->input_stall_ = spec.input_stall;
  w->clock_ = spec.clock;
  w->reactor_ = reactor;
  w->from_worker_ = std::exchange(from[0], -1);
  w->out_ = std::exchange(out[0], -1);
  w->err_ = std::exchange(err[0], -1);
  w->max_frame_ = spec.max_frame;
  w->callbacks_ = std::move(callbacks);
  w->decoder_ = std::make_unique<FrameDecoder>(spec.max_frame);
  if (spec.typed_results) w->decoder_->decode_typed(FrameType::result);
  if (reactor) {
    // pidfd_open on a child we have not reaped works even if it has already ended.
    w->pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (w->pidfd_ < 0) {
      w->kill();
      w->reap();
      return Error{std::string("cannot watch worker ") + std::to_string(pid) + ": " + std::strerror(errno)};
    }
    std::lock_guard lock(w->callback_mu_);  // no callback before both watches are in place
    // Read on the loop: non-blocking (the drain at the end relies on it, whoever reads first).
    ::fcntl(w->from_worker_, F_SETFL, ::fcntl(w->from_worker_, F_GETFL) | O_NONBLOCK);
    w->pipe_watch_ = reactor->read(w->from_worker_, [p = w.get()](std::string_view data) {
      std::lock_guard cb(p->callback_mu_);
      if (p->dying_ || p->pipe_done_) return;
      if (data.empty() || !p->deliver(data.data(), data.size())) {
        // The end of the stream (or a malformed frame): the process's end is reported by its
        // pidfd. A worker that closed its pipe and lives on is ended by its deadlines.
        p->pipe_done_ = true;
        p->pipe_watch_.reset();  // from inside its own callback: stops further calls
      }
    });
    w->pid_watch_ = reactor->watch(w->pidfd_, [p = w.get()] { p->on_pidfd(); });
  } else {
    w->wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->wake_fd_ < 0) {
      w->kill();
      w->reap();
      return Error{std::string("cannot make a wake-up fd for worker ") + std::to_string(pid) + ": " + std::strerror(errno)};
    }
    w->reader_ = std::thread([p = w.get()] {
      name_this_thread("worker-frames");
      p->read_frames();
    });
  }
  w->output_stop_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  w->output_ = std::thread([p = w.get()] {
    name_this_thread("worker-output");
    p->read_output();
  });
  return w;
}

WorkerProcess::~WorkerProcess() {
  kill();
  if (reader_.joinable()) reader_.join();
  std::unique_ptr<Reactor::Watch> write_watch;
  {
    std::lock_guard lock(send_mu_);
    write_watch = std::move(write_watch_);
  }
  write_watch.reset();  // waits for a flush in progress on the loop
  std::unique_ptr<Reactor::Watch> pipe_watch, pid_watch;
  {
    std::lock_guard lock(callback_mu_);
    dying_ = true;
    pipe_watch = std::move(pipe_watch_);
    pid_watch = std::move(pid_watch_);
  }
  pipe_watch.reset();  // waits for a callback in progress on the loop
  pid_watch.reset();
  { std::lock_guard wait_for_callbacks(callback_mu_); }
  if (!reaped_) reap();
  if (output_stop_ >= 0) {
    uint64_t one = 1;
    (void)!::write(output_stop_, &one, sizeof one);
  }
  if (output_.joinable()) output_.join();
  close_fd(to_worker_);
  close_fd(from_worker_);
  close_fd(out_);
  close_fd(err_);
  close_fd(pidfd_);
  close_fd(wake_fd_);
  close_fd(output_stop_);
}

Status WorkerProcess::send(FrameType type, const boost::json::object& header, std::string_view body) {
  std::string wire;
  encode_frame(type, header, body, wire);
  if (!send_raw(wire)) {
    std::string why;
    {
      std::lock_guard lock(send_mu_);
      why = write_error_;
    }
    std::lock_guard lock(why_mu_);
    if (!why_.empty()) why = why_;
    return Error{"cannot write to worker " + std::to_string(pid_) + ": " + (why.empty() ? "it has ended" : why)};
  }
  return ok_status();
}

// The straight path: nothing waits, and the pipe takes the whole frame (the usual case: one
// write, no allocation). What it cannot take waits in the outbox, which is written out when
// the pipe has room; nothing here ever waits for the worker.
bool WorkerProcess::send_raw(std::string_view wire) {
  std::lock_guard lock(send_mu_);
  const char* p = wire.data();
  std::size_t left = wire.size();
  const TimePoint now = this->now();
  if (outbox_sent_ == outbox_.size()) {
    while (left > 0) {
      ssize_t n = ::write(to_worker_, p, left);  // a worker gone: EPIPE (SIGPIPE is ignored)
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n < 0) {
        closed_input_locked(errno);
        return false;
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
    if (left == 0) return true;
    outbox_.clear();
    outbox_sent_ = 0;
    last_progress_ = now;  // the pipe was empty enough a moment ago: the wait starts here
  } else if (now - last_progress_ > input_stall_) {
    kill_because("did not read its input for " + std::to_string(input_stall_.count()) + " ms (" +
                 std::to_string(outbox_.size() - outbox_sent_) + " bytes waited for it); killed");
    return false;
  }
  const std::size_t waiting = outbox_.size() - outbox_sent_;
  if (waiting + left > max_outbox_) {
    kill_because("did not read its input (" + std::to_string(waiting + left) + " bytes would wait for it, more than " +
                 std::to_string(max_outbox_) + "); killed");
    return false;
  }
  if (outbox_sent_ > 0 && outbox_sent_ >= outbox_.size() / 2) {
    outbox_.erase(0, outbox_sent_);  // keep the outbox from creeping: drop what was written
    outbox_sent_ = 0;
  }
  outbox_.append(p, left);
  want_writable_locked();
  return true;
}

std::size_t WorkerProcess::outbox_size() const {
  std::lock_guard lock(send_mu_);
  return outbox_.size() - outbox_sent_;
}

void WorkerProcess::want_writable_locked() {
  if (reactor_) {
    if (!write_watch_) write_watch_ = reactor_->writable(to_worker_, [this] { on_writable(); });
  } else if (wake_fd_ >= 0) {
    uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);  // an eventfd: never blocks below 2^64-1
  }
}

bool WorkerProcess::flush_locked() {
  const TimePoint now = this->now();
  while (outbox_sent_ < outbox_.size()) {
    ssize_t n = ::write(to_worker_, outbox_.data() + outbox_sent_, outbox_.size() - outbox_sent_);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    if (n < 0) return false;
    outbox_sent_ += static_cast<std::size_t>(n);
    last_progress_ = now;
  }
  if (outbox_.capacity() > (1u << 20)) {
    std::string().swap(outbox_);  // a burst is over: give its memory back
  } else {
    outbox_.clear();
  }
  outbox_sent_ = 0;
  return true;
}

void WorkerProcess::on_writable() {
  std::unique_ptr<Reactor::Watch> done;  // ended outside the lock (from inside its own callback)
  {
    std::lock_guard lock(send_mu_);
    bool alive = !killed_.load() && flush_locked();
    if (!alive) {
      outbox_.clear();
      outbox_sent_ = 0;
      if (!killed_.load()) closed_input_locked(errno);
    }
    if (outbox_sent_ == outbox_.size()) done = std::move(write_watch_);
  }
}

// A write failed (EPIPE: the worker is gone, or closed its input). Usually it has died, and
// its end says how; one that lives on without its input is killed.
void WorkerProcess::closed_input_locked(int error) {
  write_error_ = std::strerror(error);
  kill();
}

void WorkerProcess::kill_because(const std::string& why) {
  {
    std::lock_guard lock(why_mu_);
    if (why_.empty()) why_ = why;
  }
  kill();
}

void WorkerProcess::kill() {
  if (!killed_.exchange(true) && pid_ > 0) {
    ::kill(pid_, SIGKILL);
  }
}

bool WorkerProcess::deliver(const char* data, std::size_t size) {
  decoder_->feed(data, size);
  Frame frame;
  std::string error;
  FrameDecoder::Status st;
  while ((st = decoder_->next(frame, error)) == FrameDecoder::Status::frame) {
    if (callbacks_.frame) callbacks_.frame(std::move(frame));
  }
  if (st == FrameDecoder::Status::error) {
    kill_because("sent a malformed frame (" + error + "); killed");
    return false;
  }
  return true;
}

std::string WorkerProcess::reap() {
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  killed_.store(true);  // the pid may be reused from here on: never signal it again
  {
    std::lock_guard lock(why_mu_);
    if (!why_.empty()) return why_;
  }
  return WIFEXITED(status) ? "exited with code " + std::to_string(exit_code_)
                           : std::string("was killed by signal ") + strsignal(WTERMSIG(status));
}

// Thread mode: this thread reads the worker's frames and writes its outbox out when the pipe
// has room (send_raw wakes it through wake_fd_).
void WorkerProcess::read_frames() {
  char buf[65536];
  while (true) {
    pollfd fds[3] = {{from_worker_, POLLIN, 0}, {wake_fd_, POLLIN, 0}, {-1, POLLOUT, 0}};
    {
      std::lock_guard lock(send_mu_);
      if (outbox_sent_ < outbox_.size() && !killed_.load()) fds[2].fd = to_worker_;
    }
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t n;
      (void)!::read(wake_fd_, &n, sizeof n);
    }
    if (fds[2].revents) on_writable();
    if (fds[0].revents) {
      ssize_t n = ::read(from_worker_, buf, sizeof buf);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) break;
      if (!deliver(buf, static_cast<std::size_t>(n))) break;
    }
  }
  std::string why = reap();
  if (callbacks_.exited) callbacks_.exited(exit_code_, why);
}

void WorkerProcess::drain_pipe_locked() {
  if (pipe_done_) return;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(from_worker_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0 || !deliver(buf, static_cast<std::size_t>(n))) return;
  }
}

void WorkerProcess::on_pidfd() {
  std::lock_guard lock(callback_mu_);
  if (dying_ || reaped_) return;
  drain_pipe_locked();  // what it wrote before it ended comes first
  pipe_done_ = true;
  pipe_watch_.reset();
  pid_watch_.reset();
  std::string why = reap();  // the pidfd is readable: it has ended, this does not block
  if (callbacks_.exited) callbacks_.exited(exit_code_, why);
}

// The worker's stdout and stderr, line by line, until both end — or until the WorkerProcess
// goes (output_stop_): a grandchild that inherited them may keep them open for ever, and the
// destructor must not wait for it. What is readable then is still read.
void WorkerProcess::read_output() {
  std::string pending[2];
  pollfd fds[3] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}, {output_stop_, POLLIN, 0}};
  int open = 2;
  bool stopping = false;
  char buf[8192];
  while (open > 0) {
    int ready = ::poll(fds, 3, stopping ? 0 : -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (ready == 0) break;  // stopping, and nothing more is readable
    if (fds[2].revents & POLLIN) {
      stopping = true;
      fds[2].fd = -1;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        if (!pending[i].empty() && callbacks_.output) callbacks_.output(pending[i], i == 1);
        pending[i].clear();
        fds[i].fd = -1;
        --open;
        continue;
      }
      pending[i].append(buf, static_cast<std::size_t>(n));
      std::size_t start = 0, nl;
      while ((nl = pending[i].find('\n', start)) != std::string::npos) {
        if (callbacks_.output) callbacks_.output(std::string_view(pending[i]).substr(start, nl - start), i == 1);
        start = nl + 1;
      }
      pending[i].erase(0, start);
      if (pending[i].size() > 64 * 1024) {  // a line with no end: hand it over in pieces
        if (callbacks_.output) callbacks_.output(pending[i], i == 1);
        pending[i].clear();
      }
    }
  }
  for (int i = 0; i < 2; ++i) {
    if (!pending[i].empty() && callbacks_.output) callbacks_.output(pending[i], i == 1);
  }
}

}  // namespace nimbus
