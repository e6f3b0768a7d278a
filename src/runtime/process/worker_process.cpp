#include "runtime/process/worker_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace nimbus {
namespace {

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

}  // namespace

Expected<std::unique_ptr<WorkerProcess>> WorkerProcess::spawn(const WorkerSpawn& spec, WorkerCallbacks callbacks,
                                                              Reactor* reactor) {
  if (spec.argv.empty()) return Error{"worker command is empty"};
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return Error{std::string("cannot create the worker socket: ") + std::strerror(errno)};
  }
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) {
    ::close(sv[0]);
    ::close(sv[1]);
    return Error{std::string("cannot create the worker's output pipes: ") + std::strerror(errno)};
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, sv[1], 3);  // dup2 clears close-on-exec on fd 3
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  // Nothing else of the host's crosses: Asio's listening sockets are not close-on-exec.
  posix_spawn_file_actions_addclosefrom_np(&fa, 4);
  if (!spec.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, spec.cwd.c_str());
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(sv[1]);
  ::close(out[1]);
  ::close(err[1]);
  if (rc != 0) {
    ::close(sv[0]);
    ::close(out[0]);
    ::close(err[0]);
    return Error{"cannot start worker " + spec.argv[0] + ": " + std::strerror(rc)};
  }
  // Limits go on right after the exec: posix_spawn returns once the child runs the new image,
  // microseconds before an interpreter's first allocation, and long before user code.
  auto limit = [pid](int resource, rlim_t value) {
    rlimit r{value, value};
    ::prlimit(pid, static_cast<__rlimit_resource>(resource), &r, nullptr);
  };
  if (spec.memory_limit > 0) limit(RLIMIT_DATA, spec.memory_limit);
  if (spec.cpu_seconds > 0) limit(RLIMIT_CPU, static_cast<rlim_t>(spec.cpu_seconds));
  if (spec.open_files > 0) limit(RLIMIT_NOFILE, static_cast<rlim_t>(spec.open_files));
  std::unique_ptr<WorkerProcess> w(new WorkerProcess());
  w->pid_ = pid;
  w->sock_ = sv[0];
  w->out_ = out[0];
  w->err_ = err[0];
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
    w->socket_watch_ = reactor->read(w->sock_, [p = w.get()](std::string_view data) {
      std::lock_guard cb(p->callback_mu_);
      if (p->dying_ || p->socket_done_) return;
      if (data.empty() || !p->deliver(data.data(), data.size())) {
        // The end of the stream (or a malformed frame): the process's end is reported by its
        // pidfd. A worker that closed its socket and lives on is ended by its deadlines.
        p->socket_done_ = true;
        p->socket_watch_.reset();  // from inside its own callback: stops further calls
      }
    });
    w->pid_watch_ = reactor->watch(w->pidfd_, [p = w.get()] { p->on_pidfd(); });
  } else {
    w->reader_ = std::thread([p = w.get()] { p->read_frames(); });
  }
  w->output_ = std::thread([p = w.get()] { p->read_output(); });
  return w;
}

WorkerProcess::~WorkerProcess() {
  kill();
  if (reader_.joinable()) reader_.join();
  std::unique_ptr<Reactor::Watch> socket_watch, pid_watch;
  {
    std::lock_guard lock(callback_mu_);
    dying_ = true;
    socket_watch = std::move(socket_watch_);
    pid_watch = std::move(pid_watch_);
  }
  socket_watch.reset();  // waits for a callback in progress on the loop
  pid_watch.reset();
  { std::lock_guard wait_for_callbacks(callback_mu_); }
  if (!reaped_) reap();
  if (output_.joinable()) output_.join();
  close_fd(sock_);
  close_fd(out_);
  close_fd(err_);
  close_fd(pidfd_);
}

Status WorkerProcess::send(FrameType type, const boost::json::object& header, std::string_view body) {
  std::string wire;
  encode_frame(type, header, body, wire);
  if (!send_raw(wire)) {
    return Error{"cannot write to worker " + std::to_string(pid_) + ": " + std::strerror(errno)};
  }
  return ok_status();
}

bool WorkerProcess::send_raw(std::string_view wire) {
  std::lock_guard lock(send_mu_);
  const char* p = wire.data();
  std::size_t left = wire.size();
  while (left > 0) {
    ssize_t n = ::send(sock_, p, left, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      // Read on an event loop, the socket is non-blocking: wait for room as a blocking send would.
      pollfd room{sock_, POLLOUT, 0};
      if (::poll(&room, 1, -1) < 0 && errno != EINTR) return false;
      continue;
    }
    if (n < 0) return false;
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  return true;
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
    why_ = "sent a malformed frame (" + error + "); killed";
    kill();
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
  if (!why_.empty()) return why_;
  return WIFEXITED(status) ? "exited with code " + std::to_string(exit_code_)
                           : std::string("was killed by signal ") + strsignal(WTERMSIG(status));
}

void WorkerProcess::read_frames() {
  char buf[65536];
  while (true) {
    ssize_t n = ::recv(sock_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (!deliver(buf, static_cast<std::size_t>(n))) break;
  }
  std::string why = reap();
  if (callbacks_.exited) callbacks_.exited(exit_code_, why);
}

void WorkerProcess::drain_socket_locked() {
  if (socket_done_) return;
  char buf[65536];
  while (true) {
    ssize_t n = ::recv(sock_, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0 || !deliver(buf, static_cast<std::size_t>(n))) return;
  }
}

void WorkerProcess::on_pidfd() {
  std::lock_guard lock(callback_mu_);
  if (dying_ || reaped_) return;
  drain_socket_locked();  // what it wrote before it ended comes first
  socket_done_ = true;
  socket_watch_.reset();
  pid_watch_.reset();
  std::string why = reap();  // the pidfd is readable: it has ended, this does not block
  if (callbacks_.exited) callbacks_.exited(exit_code_, why);
}

void WorkerProcess::read_output() {
  std::string pending[2];
  pollfd fds[2] = {{out_, POLLIN, 0}, {err_, POLLIN, 0}};
  int open = 2;
  char buf[8192];
  while (open > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n <= 0) {
        if (!pending[i].empty() && callbacks_.output) callbacks_.output(pending[i], i == 1);
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
}

}  // namespace nimbus
