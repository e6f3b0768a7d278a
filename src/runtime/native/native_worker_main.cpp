// nimbus-native-worker: runs one native function (a library built against sdk/cpp) in its own
// process, for `isolation: process` or `sandbox`. It speaks the worker protocol
// (docs/worker-protocol.md) on the fds the host passes as NIMBUS_WORKER_FD (frames in) and
// NIMBUS_WORKER_OUT_FD (frames out): init names the
// library, invoke frames become calls through the same loader the host uses in-process, and
// replies, errors and the function's log lines go back as frames. With concurrency above one,
// invocations run on threads started as the load needs them, up to that concurrency.
#include <signal.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include <atomic>
#include <future>
#include <map>

#include "core/app_spec.h"
#include "core/services.h"
#include "observe/log.h"
#include "runtime/native/native_runtime.h"
#include "runtime/process/frame.h"

namespace nimbus {
namespace {
namespace json = boost::json;

std::string str(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

class Channel {
 public:
  Channel(int in, int out) : in_(in), out_(out) { decoder_.decode_typed(FrameType::invoke); }

  void send(FrameType type, const json::object& header, std::string_view body = {}) {
    std::string wire;
    encode_frame(type, header, body, wire);
    send_wire(wire);
  }

  void send_wire(const std::string& wire) {
    std::lock_guard lock(mu_);
    std::size_t off = 0;
    while (off < wire.size()) {
      ssize_t n = ::write(out_, wire.data() + off, wire.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) std::_Exit(3);  // the host is gone: nothing left to serve
      off += static_cast<std::size_t>(n);
    }
  }

  // Blocks for the next frame; false at end of stream. A malformed frame from the host ends
  // the worker with a message on stderr (which the host logs). Frames set aside by a host
  // call that waited on this thread come first.
  bool next(Frame& frame) {
    if (!backlog_.empty()) {
      frame = std::move(backlog_.front());
      backlog_.pop_front();
      return true;
    }
    return read_frame(frame);
  }
  void set_aside(Frame&& frame) { backlog_.push_back(std::move(frame)); }

  bool read_frame(Frame& frame) {
    std::string error;
    for (;;) {
      switch (decoder_.next(frame, error)) {
        case FrameDecoder::Status::frame: return true;
        case FrameDecoder::Status::error:
          std::fprintf(stderr, "nimbus-native-worker: malformed frame from the host: %s\n", error.c_str());
          std::_Exit(4);
        case FrameDecoder::Status::need_more: break;
      }
      char buf[64 * 1024];
      ssize_t n = ::read(in_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      decoder_.feed(buf, static_cast<std::size_t>(n));
    }
  }

 private:
  int in_;
  int out_;
  std::mutex mu_;
  FrameDecoder decoder_;
  std::deque<Frame> backlog_;  // reader thread only
};

ServiceResult service_result(const Frame& f) {
  ServiceResult r;
  auto* ok = f.header.if_contains("ok");
  r.ok = ok && ok->is_bool() && ok->as_bool();
  r.error = str(f.header, "error");
  r.body = f.body;
  if (auto* fields = f.header.if_contains("fields"); fields && fields->is_object()) {
    for (const auto& [k, v] : fields->as_object()) {
      if (v.is_string()) r.fields.push_back({std::string(k), std::string(v.as_string())});
    }
  }
  return r;
}

// Host services over the protocol. A call made on the reader thread (a function running
// inline, concurrency 1) reads frames itself until its answer, setting the others aside; a
// call from a runner thread waits for the reader thread to hand it its answer.
class WorkerServices final : public Services {
 public:
  explicit WorkerServices(Channel& channel) : channel_(channel), reader_(std::this_thread::get_id()) {}

  void call(ServiceCall c, std::function<void(ServiceResult)> done) override {
    std::string call_id = std::to_string(next_id_.fetch_add(1) + 1);
    json::object args;
    for (const auto& a : c.args) args[a.name] = a.value;
    std::promise<ServiceResult> answer;
    auto future = answer.get_future();
    const bool on_reader = std::this_thread::get_id() == reader_;
    if (!on_reader) {
      std::lock_guard lock(mu_);
      if (closed_) return done(ServiceResult::failure("the worker is shutting down"));
      waiting_.emplace(call_id, std::move(answer));
    }
    channel_.send(FrameType::host_call, {{"id", ""}, {"call_id", call_id}, {"op", c.op}, {"args", std::move(args)}}, c.body);
    if (on_reader) {
      Frame f;
      while (channel_.read_frame(f)) {
        if (f.type == FrameType::host_result && str(f.header, "call_id") == call_id) return done(service_result(f));
        channel_.set_aside(std::move(f));
      }
      return done(ServiceResult::failure("the host closed the connection"));
    }
    done(future.get());
  }

  // Reader thread: an answer for a call waiting on another thread.
  void answer(const Frame& f) {
    std::promise<ServiceResult> p;
    {
      std::lock_guard lock(mu_);
      auto it = waiting_.find(str(f.header, "call_id"));
      if (it == waiting_.end()) return;
      p = std::move(it->second);
      waiting_.erase(it);
    }
    p.set_value(service_result(f));
  }

  // The host is gone: nobody will answer.
  void fail_all() {
    std::lock_guard lock(mu_);
    closed_ = true;
    for (auto& [id, p] : waiting_) p.set_value(ServiceResult::failure("the host closed the connection"));
    waiting_.clear();
  }

 private:
  Channel& channel_;
  std::thread::id reader_;
  std::atomic<uint64_t> next_id_{0};
  std::mutex mu_;
  std::map<std::string, std::promise<ServiceResult>> waiting_;
  bool closed_ = false;
};


Invocation invocation_from(const std::string& function, Frame& f) {
  InvokeHeader& h = f.invoke;
  Invocation inv = std::move(h.inv);
  inv.function = function;
  inv.trigger = TriggerKind::named(h.trigger);
  inv.attempt = static_cast<int>(h.attempt);
  inv.started = std::chrono::steady_clock::now();
  inv.time = std::chrono::system_clock::now();
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(inv.time.time_since_epoch()).count();
  inv.deadline = h.deadline_ms != 0 ? inv.started + std::chrono::milliseconds(h.deadline_ms - now_ms)
                                    : inv.started + std::chrono::hours(24);
  inv.enqueued_ms = h.time_ms != 0 ? h.time_ms : now_ms;
  inv.payload = std::move(f.body);
  return inv;
}

void reply(Channel& channel, const std::string& id, Result&& r) {
  if (r.outcome == Outcome::success) {
    // Outputs go first, each as an `output` host call; the host keeps them for the result.
    for (const auto& out : r.outputs) {
      json::object metadata;
      for (const auto& m : out.metadata) metadata[m.name] = m.value;
      channel.send(FrameType::host_call,
                   {{"id", id}, {"op", "output"}, {"args", {{"binding", out.binding}, {"metadata", std::move(metadata)}}}},
                   out.payload);
    }
  }
  if (r.outcome != Outcome::success) {
    channel.send(FrameType::result,
                 {{"id", id},
                  {"status", "error"},
                  {"error", {{"type", r.error.type.empty() ? "error" : r.error.type}, {"message", r.error.message}, {"stack", ""}}}});
    return;
  }
  if (!r.http) {
    channel.send(FrameType::result, {{"id", id}, {"status", "ok"}});
    return;
  }
  std::string wire;
  encode_http_result(id, *r.http, wire);
  channel.send_wire(wire);
}

// Runs invocations on up to `limit` threads, started as the queue needs them.
class Runner {
 public:
  Runner(Executor& fn, Channel& channel, int limit) : fn_(fn), channel_(channel), limit_(limit) {}
  ~Runner() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void run(Invocation&& inv) {
    if (limit_ <= 1) {
      serve(inv);
      return;
    }
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(inv));
    if (idle_ == 0 && static_cast<int>(threads_.size()) < limit_) {
      threads_.emplace_back([this] { loop(); });
    } else {
      cv_.notify_one();
    }
  }

 private:
  void loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      ++idle_;
      cv_.wait(lock, [&] { return done_ || !queue_.empty(); });
      --idle_;
      if (queue_.empty()) return;
      Invocation inv = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      serve(inv);
      lock.lock();
    }
  }

  void serve(Invocation& inv) {
    if (inv.deadline <= std::chrono::steady_clock::now()) {
      // Reached after its deadline (it waited behind init while the worker started, or in
      // this queue): the host has answered its caller, so it does not run.
      reply(channel_, inv.id, Result::failure(Outcome::timeout, "DeadlineExceeded", "the deadline passed before the invocation started"));
      return;
    }
    reply(channel_, inv.id, fn_.call(inv));
  }

  Executor& fn_;
  Channel& channel_;
  int limit_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Invocation> queue_;
  std::vector<std::thread> threads_;
  int idle_ = 0;
  bool done_ = false;
};

int run() {
  const char* fd_text = std::getenv("NIMBUS_WORKER_FD");
  if (!fd_text) {
    std::fprintf(stderr, "nimbus-native-worker: NIMBUS_WORKER_FD is not set; the Nimbus host starts this program\n");
    return 2;
  }
  const char* out_text = std::getenv("NIMBUS_WORKER_OUT_FD");  // absent: one socket both ways
  ::signal(SIGPIPE, SIG_IGN);  // a host gone shows as a failed write, and the worker ends
  Channel channel(std::atoi(fd_text), std::atoi(out_text ? out_text : fd_text));
  Frame init;
  if (!channel.next(init)) return 0;
  if (init.type != FrameType::init) {
    channel.send(FrameType::fatal, {{"message", "expected init as the first frame, got " + std::string(to_string(init.type))}});
    return 2;
  }
  auto* protocol = init.header.if_contains("protocol");
  if (!protocol || !protocol->is_int64() || protocol->as_int64() != kWorkerProtocolVersion) {
    channel.send(FrameType::fatal, {{"message", "the host speaks worker protocol " +
                                                     (protocol ? json::serialize(*protocol) : std::string("(none)")) +
                                                     ", this worker speaks version " + std::to_string(kWorkerProtocolVersion)}});
    return 2;
  }
  FunctionSpec spec;
  spec.name = str(init.header, "function");
  std::string library = str(init.header, "handler");
  int concurrency = 1;
  if (auto* c = init.header.if_contains("concurrency"); c && c->is_int64()) concurrency = static_cast<int>(c->as_int64());
  WorkerServices services(channel);
  auto fn = load_native_function(
      spec, library,
      [&channel](LogLevel level, const Invocation& inv, std::string_view message) {
        static constexpr const char* kLevels[] = {"debug", "info", "warn", "error"};
        channel.send(FrameType::log, {{"id", inv.id}, {"level", kLevels[static_cast<int>(level) & 3]}, {"message", message}});
      },
      &services);
  if (!fn) {
    channel.send(FrameType::fatal, {{"message", fn.error().message}});
    return 1;
  }
  channel.send(FrameType::ready, {{"protocol", kWorkerProtocolVersion}, {"pid", static_cast<int64_t>(::getpid())}, {"runtime", "native"}});
  Runner runner(**fn, channel, std::min(concurrency, 256));
  Frame f;
  while (channel.next(f)) {
    switch (f.type) {
      case FrameType::invoke: runner.run(invocation_from(spec.name, f)); break;
      case FrameType::host_result: services.answer(f); break;
      case FrameType::shutdown:
        services.fail_all();  // no reader from here on: calls still waiting cannot be answered
        return 0;             // ~Runner finishes what is queued and running
      case FrameType::fatal:
        services.fail_all();
        return 1;
      default: break;  // heartbeats, later additions
    }
  }
  services.fail_all();  // the host closed the socket
  return 0;
}

}  // namespace
}  // namespace nimbus

int main() { return nimbus::run(); }
