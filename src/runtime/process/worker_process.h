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
//
// Sending never blocks, whatever thread sends: the pipe to the worker is non-blocking, and
// what it cannot take waits in a bounded outbox, written out when the pipe has room (on the
// reactor, or by the reader thread). A worker that lets its outbox grow past the bound, or
// takes nothing from it for `input_stall` while more is sent, is killed: its end says so.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/expected.h"
#include "core/reactor.h"
#include "runtime/process/frame.h"

namespace nimbus {

// Where a worker finds the protocol: it reads frames from fd 3 and writes frames to fd 4
// (also in its environment as NIMBUS_WORKER_FD and NIMBUS_WORKER_OUT_FD).
inline constexpr int kWorkerInFd = 3;
inline constexpr int kWorkerOutFd = 4;

struct SandboxPlan;

struct WorkerSpawn {
  std::vector<std::string> argv;  // argv[0] is an absolute path: no PATH search
  std::vector<std::string> env;   // NAME=value, the worker's whole environment
  std::filesystem::path cwd;
  std::size_t max_frame = kDefaultMaxFrame;
  std::size_t memory_limit = 0;  // RLIMIT_DATA bytes; 0 = none
  int64_t cpu_seconds = 0;       // RLIMIT_CPU; 0 = none
  int open_files = 0;            // RLIMIT_NOFILE; 0 = none
  bool typed_results = false;    // result frames arrive in Frame::result, not Frame::header
  // What may wait for a worker that does not read (0: twice max_frame, so one whole frame
  // always fits behind what is there), and how long it may take none of it.
  std::size_t max_outbox = 0;
  std::chrono::milliseconds input_stall{10'000};
  const Clock* clock = nullptr;  // what input_stall is measured by; null: the system's
  // isolation: sandbox: the worker is launched into this sandbox (sandbox.h), which sets its
  // limits from inside; null: a plain process, limited with prlimit from outside.
  std::shared_ptr<const SandboxPlan> sandbox = nullptr;
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

  // Queue a frame for the worker; never blocks. False when the worker has ended, or is killed
  // now because it does not read its input (see above).
  Status send(FrameType type, const boost::json::object& header, std::string_view body = {});
  bool send_raw(std::string_view wire);  // an already encoded frame
  // Bytes sent and not yet taken by the worker's pipe.
  std::size_t outbox_size() const;
  // What the pipe to the worker holds before a write blocks (F_GETPIPE_SZ; 64 KiB unless the
  // user's pipe pages ran short).
  std::size_t pipe_capacity() const { return pipe_capacity_; }
  void kill();
  pid_t pid() const { return pid_; }

 private:
  WorkerProcess() = default;
  void read_frames();
  // Writes what the outbox holds until the pipe is full; false if the worker is gone.
  bool flush_locked();
  void on_writable();
  void kill_because(const std::string& why);  // the first reason given is the one reported
  void closed_input_locked(int error);
  // Arms the reactor's write watch, or wakes the reader thread, to write the outbox out.
  void want_writable_locked();
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
  mutable std::mutex send_mu_;
  std::string outbox_;         // bytes the pipe could not take yet, from outbox_sent_ on
  std::size_t outbox_sent_ = 0;
  std::string write_error_;  // the last write that failed (strerror), for send()'s message
  std::size_t max_outbox_ = 0;
  std::chrono::milliseconds input_stall_{10'000};
  TimePoint last_progress_{};  // the worker last took bytes
  const Clock* clock_ = nullptr;
  TimePoint now() const { return clock_ ? clock_->now() : std::chrono::steady_clock::now(); }
  Reactor* reactor_ = nullptr;
  std::unique_ptr<Reactor::Watch> write_watch_;  // armed while the outbox holds bytes
  int wake_fd_ = -1;  // thread mode: an eventfd that wakes the reader to write
  int output_stop_ = -1;  // an eventfd: the output thread reads what is there, then ends
  std::atomic<bool> killed_{false};
  std::unique_ptr<FrameDecoder> decoder_;
  std::mutex why_mu_;
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
