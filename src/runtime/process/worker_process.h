#pragma once
// One worker process and its protocol pipes: spawns it with a clean, explicit environment,
// frames to it on fd 3 and from it on fd 4, sends frames (thread-safe), and delivers what it
// says (frames), what it prints (stdout/stderr lines) and how it ended, each through a
// callback. A worker that sends a malformed or oversized frame is killed, and its end reports
// why.
//
// Its frames are read either by a thread of its own, or, given a Reactor, on that event loop
// (the pipe and a pidfd are watched there; no reader thread), which saves a context switch
// per reply when the loop is also where the results are wanted.
#include <sys/types.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/expected.h"
#include "core/reactor.h"
#include "runtime/process/frame.h"

namespace nimbus {

// Where a worker finds the protocol: it reads frames from fd 3 and writes frames to fd 4
// (also in its environment as NIMBUS_WORKER_FD and NIMBUS_WORKER_OUT_FD).
inline constexpr int kWorkerInFd = 3;
inline constexpr int kWorkerOutFd = 4;

struct WorkerSpawn {
  std::vector<std::string> argv;  // argv[0] is an absolute path: no PATH search
  std::vector<std::string> env;   // NAME=value, the worker's whole environment
  std::filesystem::path cwd;
  std::size_t max_frame = kDefaultMaxFrame;
  std::size_t memory_limit = 0;  // RLIMIT_DATA bytes; 0 = none
  int64_t cpu_seconds = 0;       // RLIMIT_CPU; 0 = none
  int open_files = 0;            // RLIMIT_NOFILE; 0 = none
  bool typed_results = false;    // result frames arrive in Frame::result, not Frame::header
  // Extra fds the worker gets as kWorkerOutFd + 1, + 2, ... in this order (a sandbox's seccomp
  // program). Each must be above those numbers; the caller keeps and closes its own.
  std::vector<int> inherit_fds = {};
};

struct WorkerCallbacks {
  std::function<void(Frame&&)> frame;                                 // reader thread or loop
  std::function<void(std::string_view line, bool from_stderr)> output;  // output thread
  std::function<void(int exit_code, const std::string& why)> exited;    // once, after the last frame
};

class WorkerProcess {
 public:
  // With a reactor, frames and the exit are delivered on its thread; without, on a thread of
  // the worker's own.
  static Expected<std::unique_ptr<WorkerProcess>> spawn(const WorkerSpawn& spec, WorkerCallbacks callbacks,
                                                        Reactor* reactor = nullptr);
  // Kills the worker if it still runs, and joins its threads. Never from inside one of its
  // own callbacks.
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  Status send(FrameType type, const boost::json::object& header, std::string_view body = {});
  bool send_raw(std::string_view wire);  // an already encoded frame
  // What the pipe to the worker holds before a write blocks (F_GETPIPE_SZ; 64 KiB unless the
  // user's pipe pages ran short).
  std::size_t pipe_capacity() const { return pipe_capacity_; }
  void kill();
  pid_t pid() const { return pid_; }

 private:
  WorkerProcess() = default;
  void read_frames();
  void read_output();
  // Feeds received bytes to the decoder and delivers whole frames; false on a malformed one
  // (why_ says what).
  bool deliver(const char* data, std::size_t size);
  // The process ended (the reactor's pidfd callback); what is left in the pipe is read first.
  void on_pidfd();
  void drain_pipe_locked();
  std::string reap();  // waits for the process; returns how it ended (why_ first)

  pid_t pid_ = -1;
  int to_worker_ = -1;    // the pipe the worker reads frames from
  int from_worker_ = -1;  // the pipe the worker writes frames to
  int out_ = -1;
  int err_ = -1;
  std::size_t max_frame_ = kDefaultMaxFrame;
  std::size_t pipe_capacity_ = 0;
  WorkerCallbacks callbacks_;
  std::mutex send_mu_;
  std::atomic<bool> killed_{false};
  std::unique_ptr<FrameDecoder> decoder_;
  std::string why_;  // set when the host ended the worker
  int exit_code_ = 0;
  bool reaped_ = false;
  std::thread reader_;
  std::thread output_;
  // Reactor mode: the watches, and the lock every reactor callback holds (the destructor takes
  // it to wait for one in progress).
  int pidfd_ = -1;
  bool pipe_done_ = false;
  bool dying_ = false;
  std::mutex callback_mu_;
  std::unique_ptr<Reactor::Watch> pipe_watch_;
  std::unique_ptr<Reactor::Watch> pid_watch_;
};

}  // namespace nimbus
