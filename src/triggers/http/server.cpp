// Boost.Beast lives only in this file (and the CLI's client): everything else sees server.h.
#include "triggers/http/server.h"
#include "triggers/http/asio_names.h"
#include "triggers/http/body_source.h"
#include "triggers/http/loop_context.h"
#include "triggers/http/tls_context.h"

#include <fcntl.h>
#include <sched.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <brotli/encode.h>
#include <cstdio>
#include <algorithm>
#include <array>
#include <span>
#include <charconv>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "observe/log.h"
#include "observe/metrics.h"
#include "triggers/http/http_syntax.h"
#include "core/gzip.h"
#include "core/thread_role.h"

namespace nimbus {

std::string tracestate_of(const IncomingRequest& request) {
  std::string out;
  request.for_each_header([&out](std::string_view name, std::string_view value) {
    if (name.size() != 10 || strncasecmp(name.data(), "tracestate", 10) != 0) return;
    if (!out.empty()) out += ',';
    out += value;
  });
  return out;
}

// Phase stamps only feed timeouts of 100 ms and more: the coarse clock (a few ms of
// resolution, no TSC read) is plenty and costs a fraction of steady_clock::now().
using PhaseTime = std::chrono::steady_clock::time_point;
PhaseTime coarse_now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return PhaseTime(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
}

// ---------------------------------------------------------------- event loops

// A Reactor on one io_context. The descriptor object is asio's, over a dup of the caller's
// fd (so asio may close its own copy whenever it likes); it is only touched on the loop.
class LoopReactor final : public Reactor {
 public:
  explicit LoopReactor(asio::io_context& ctx) : ctx_(ctx) {}

  std::unique_ptr<Watch> watch(int fd, std::function<void()> on_readable) override {
    auto state = std::make_shared<State>(ctx_, fd);
    state->on_readable = std::move(on_readable);
    asio::post(ctx_, [state] { arm(state); });
    return std::make_unique<LoopWatch>(state);
  }

  std::unique_ptr<Watch> writable(int fd, std::function<void()> on_writable) override {
    auto state = std::make_shared<State>(ctx_, fd);
    state->on_readable = std::move(on_writable);
    state->wait = asio::posix::descriptor_base::wait_write;
    asio::post(ctx_, [state] { arm(state); });
    return std::make_unique<LoopWatch>(state);
  }

  std::unique_ptr<Watch> read(int fd, std::function<void(std::string_view)> on_data) override {
    auto state = std::make_shared<State>(ctx_, fd);
    state->on_data = std::move(on_data);
    state->buffer.resize(64 * 1024);
    asio::post(ctx_, [state] { arm_read(state); });
    return std::make_unique<LoopWatch>(state);
  }

 private:
  struct State {
    // The loop watches a copy of the fd: closing it when the watch ends leaves the caller's.
    State(asio::io_context& c, int fd) : descriptor(c) {
      int copy = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
      boost::system::error_code ec;
      if (copy >= 0) descriptor.assign(copy, ec);
      if (copy < 0 || ec) {
        if (copy >= 0) ::close(copy);
        throw std::runtime_error("cannot watch fd " + std::to_string(fd) + " on an event loop");
      }
    }
    asio::posix::stream_descriptor descriptor;
    std::function<void()> on_readable;  // or on writable, as `wait` says
    asio::posix::descriptor_base::wait_type wait = asio::posix::descriptor_base::wait_read;
    std::function<void(std::string_view)> on_data;
    std::vector<char> buffer;
    std::recursive_mutex mu;  // held while a callback runs; the callback may end its own watch
    bool alive = true;
  };

  class LoopWatch final : public Watch {
   public:
    explicit LoopWatch(std::shared_ptr<State> s) : state_(std::move(s)) {}
    ~LoopWatch() override {
      {
        std::lock_guard lock(state_->mu);
        state_->alive = false;
      }
      asio::post(state_->descriptor.get_executor(), [s = state_] {
        boost::system::error_code ignored;
        s->descriptor.close(ignored);  // completes the pending operation with operation_aborted
      });
    }

   private:
    std::shared_ptr<State> state_;
  };

  // A wait re-arms the fd with the kernel each time (epoll_ctl): for fds that seldom speak.
  static void arm(const std::shared_ptr<State>& state) {
    state->descriptor.async_wait(state->wait, [state](boost::system::error_code ec) {
      if (ec) return;
      std::lock_guard lock(state->mu);
      if (!state->alive) return;
      state->on_readable();
      if (state->alive) arm(state);
    });
  }

  // A read leaves the registration alone: after a short read Asio knows the socket is drained
  // and queues the next read without a system call until the loop hears of more data.
  static void arm_read(const std::shared_ptr<State>& state) {
    state->descriptor.async_read_some(asio::buffer(state->buffer), [state](boost::system::error_code ec, std::size_t n) {
      std::lock_guard lock(state->mu);
      if (!state->alive) return;
      if (ec || n == 0) {
        state->alive = false;
        state->on_data({});
        return;
      }
      state->on_data(std::string_view(state->buffer.data(), n));
      if (state->alive) arm_read(state);
    });
  }

  asio::io_context& ctx_;
};

struct EventLoops::Impl {
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::vector<std::unique_ptr<LoopReactor>> reactors;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::vector<std::thread> threads;
};

EventLoops::EventLoops(int threads) : impl_(std::make_unique<Impl>()) {
  for (int i = 0; i < std::max(1, threads); ++i) {
    impl_->contexts.push_back(std::make_unique<asio::io_context>(1));
    impl_->reactors.push_back(std::make_unique<LoopReactor>(*impl_->contexts.back()));
    impl_->guards.push_back(asio::make_work_guard(*impl_->contexts.back()));
  }
}

EventLoops::~EventLoops() { stop(); }

int EventLoops::size() const { return static_cast<int>(impl_->contexts.size()); }

namespace {
thread_local const EventLoops::Impl* tl_loops = nullptr;
thread_local int tl_loop_index = -1;
}  // namespace

int EventLoops::current_index() const { return tl_loops == impl_.get() ? tl_loop_index : -1; }

asio::io_context& loop_context(EventLoops& loops, int index) {
  return *loops.impl().contexts[static_cast<std::size_t>(index)];
}

void EventLoops::start() {
  int index = 0;
  for (auto& ctx : impl_->contexts) {
    impl_->threads.emplace_back([c = ctx.get(), index = index++, owner = impl_.get()] {
      set_thread_role(ThreadRole::event_loop);
      name_this_thread((std::string("loop-") + std::to_string(index)).c_str());
      tl_loops = owner;
      tl_loop_index = index;
      c->run();
    });
  }
}

void EventLoops::stop() {
  for (auto& ctx : impl_->contexts) ctx->stop();
  for (auto& t : impl_->threads)
    if (t.joinable()) t.join();
  impl_->threads.clear();
}

void EventLoops::drain() {
  impl_->guards.clear();  // run() returns once a loop has no work left
  for (auto& t : impl_->threads)
    if (t.joinable()) t.join();
  impl_->threads.clear();
}

void EventLoops::post(int index, std::function<void()> fn) {
  asio::post(*impl_->contexts[static_cast<std::size_t>(index)], std::move(fn));
}

Reactor& EventLoops::reactor(int index) { return *impl_->reactors[static_cast<std::size_t>(index)]; }

int default_loop_count() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

// ---------------------------------------------------------------- responder

struct Responder::Slot {
  std::mutex mu;
  uint64_t generation = 0;
  bool ready = false;
  HttpReply reply;
  std::function<void()> wake;  // set when the connection parks waiting for the reply
};

Responder::Responder(std::shared_ptr<Slot> slot, uint64_t generation)
    : slot_(std::move(slot)), generation_(generation) {}

void Responder::operator()(HttpReply&& reply) const {
  std::function<void()> wake;
  {
    std::lock_guard lock(slot_->mu);
    if (slot_->generation != generation_ || slot_->ready) return;  // a second answer: ignored
    slot_->reply = std::move(reply);
    slot_->ready = true;
    wake = std::move(slot_->wake);
  }
  if (wake) wake();
}

Responder detached_responder(std::shared_ptr<HttpReply> out) {
  auto slot = std::make_shared<Responder::Slot>();
  slot->generation = 1;
  slot->wake = [slot_ptr = slot.get(), out] { *out = std::move(slot_ptr->reply); };
  return Responder(slot, 1);
}

UpgradedStream::UpgradedStream(int fd, std::string pending_bytes, std::string protocol_name, Duration idle)
    : pending(std::move(pending_bytes)), protocol(std::move(protocol_name)), idle_timeout(idle), fd_(fd) {}

UpgradedStream::~UpgradedStream() {
  if (fd_ >= 0) ::close(fd_);
}

int UpgradedStream::take_fd() { return std::exchange(fd_, -1); }

Responder intercept(Responder inner, std::function<void(HttpReply&)> edit) {
  auto slot = std::make_shared<Responder::Slot>();
  slot->generation = 1;
  slot->wake = [slot_ptr = slot.get(), inner = std::move(inner), edit = std::move(edit)] {
    HttpReply reply = std::move(slot_ptr->reply);
    edit(reply);
    inner(std::move(reply));
  };
  return Responder(slot, 1);
}

HttpReply json_error(int status, std::string_view code, std::string_view message,
                     std::string_view invocation_id) {
  HttpReply r;
  r.status = status;
  r.headers.push_back({"content-type", "application/json"});
  std::string& b = r.body;
  b.reserve(96 + message.size());
  b += "{\"error\":{\"code\":\"";
  append_json_escaped(b, code);
  b += "\",\"message\":\"";
  append_json_escaped(b, message);
  b += "\",\"invocation_id\":\"";
  append_json_escaped(b, invocation_id);
  b += "\"}}";
  return r;
}

// ---------------------------------------------------------------- compression

namespace {

bool carries_body(int status);

bool compressible(std::string_view type) {
  type = type.substr(0, type.find(';'));
  return type.rfind("text/", 0) == 0 || type == "application/json" || type == "application/javascript" ||
         type == "application/xml" || type == "image/svg+xml" || type == "application/manifest+json" ||
         type.ends_with("+json") || type.ends_with("+xml");
}

// The q-value the client gives `coding` (or "*"), 0 when refused or absent.
double accepts(std::string_view header, std::string_view coding) {
  double star = 0, exact = -1;
  while (!header.empty()) {
    auto comma = header.find(',');
    std::string_view item = header.substr(0, comma);
    auto semi = item.find(';');
    std::string_view name = item.substr(0, semi);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    double q = 1;
    if (semi != std::string_view::npos) {
      auto qpos = item.find("q=", semi);
      if (qpos != std::string_view::npos) q = std::atof(std::string(item.substr(qpos + 2)).c_str());
    }
    if (beast::iequals(name, coding)) exact = q;
    else if (name == "*") star = q;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return exact >= 0 ? exact : star;
}

bool brotli(const std::string& in, std::string& out) {
  std::size_t size = BrotliEncoderMaxCompressedSize(in.size());
  if (size == 0) return false;
  out.resize(size);
  if (!BrotliEncoderCompress(4, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_GENERIC, in.size(),
                             reinterpret_cast<const uint8_t*>(in.data()), &size, reinterpret_cast<uint8_t*>(out.data()))) {
    return false;
  }
  out.resize(size);
  return true;
}

}  // namespace

// Compression runs on the event loop: past this size a reply goes as it is (a few ms of
// brotli at most per reply, not tens).
constexpr std::size_t kMaxCompressedOnLoop = 1u << 20;

std::string_view compress_reply(HttpReply& reply, std::string_view accept_encoding, const CompressionOptions& options) {
  if (!options.enabled || accept_encoding.empty() || reply.body.size() < options.min_size || reply.status == 206 ||
      !carries_body(reply.status) || reply.body.size() > kMaxCompressedOnLoop) {
    return {};
  }
  std::string_view type;
  for (const auto& h : reply.headers) {
    if (beast::iequals(h.name, "content-encoding") || beast::iequals(h.name, "content-range")) return {};
    if (beast::iequals(h.name, "content-type")) type = h.value;
  }
  if (!compressible(type)) return {};
  const double br = accepts(accept_encoding, "br"), gz = accepts(accept_encoding, "gzip");
  std::string_view coding = br > 0 && br >= gz ? "br" : gz > 0 ? "gzip" : "";
  if (coding.empty()) return {};
  std::string out;
  if (!(coding == "br" ? brotli(reply.body, out) : gzip_compress(reply.body, out, 5)) || out.size() >= reply.body.size()) return {};
  reply.body = std::move(out);
  reply.headers.push_back({"content-encoding", std::string(coding)});
  reply.headers.push_back({"vary", "Accept-Encoding"});
  for (auto& h : reply.headers) {
    // Another representation: its strong validator would lie (RFC 9110 8.8.1).
    if (beast::iequals(h.name, "etag") && h.value.rfind("W/", 0) != 0) h.value = "W/" + h.value;
  }
  return coding;
}

// ---------------------------------------------------------------- connections

namespace {

using Parser = http::request_parser<http::string_body>;

// upstream: a streamed reply waits for its next piece (the proxy's own timeout bounds that).
enum class Phase : uint8_t { handshake, reading, handling, writing, draining, tunnel, upstream };

struct Connection {
  explicit Connection(tcp::socket s)
      : socket(std::move(s)), wait_timer(socket.get_executor()), slot(std::make_shared<Responder::Slot>()) {}
  tcp::socket socket;
  asio::steady_timer wait_timer;
  std::shared_ptr<Responder::Slot> slot;
  std::string head;  // the response head being written; its capacity is reused
  Phase phase = Phase::reading;
  PhaseTime phase_started;
  std::optional<std::string> peer;  // the client's address, once asked for
  std::shared_ptr<asio::ssl::context> tls_context;  // TLS connections: the pair they started with
  std::optional<asio::ssl::stream<tcp::socket&>> tls;
  tcp::socket* tunnel_peer = nullptr;  // a spliced upstream connection (Phase::tunnel)
  bool abortive = false;  // a reply cut short: reset the connection, no clean end it could take for the whole
  Duration tunnel_idle{};
  http::basic_parser<true>* parser = nullptr;  // the request being read, if any
  beast::flat_buffer in;  // what came from the client and is not parsed yet
  bool timed_out = false;
  bool timed_out_mid_request = false;
  bool closing = false;  // the server is closing: stop waiting for a reply
  // A reply sent as it arrives: the read under way (Phase::upstream), and whether it is a
  // server-sent event stream (text/event-stream), which a shutdown ends rather than awaits.
  BodySource* streaming = nullptr;
  bool event_stream = false;
  bool ending = false;  // the event stream is being ended: the end of its reads is its clean end
  Connection* prev = nullptr;
  Connection* next = nullptr;
};

bool carries_body(int status) { return status >= 200 && status != 204 && status != 304; }

bool is_token_char(unsigned char c) {
  return c > 32 && c < 127 && std::string_view("()<>@,;:\\\"/[]?={}").find(static_cast<char>(c)) == std::string_view::npos;
}

// Writes the status line and headers of `reply` into `out` (reused across a connection's
// requests). The server owns framing: Content-Length and Connection come from here, and a
// header that could split the response (bad name, CR or LF in the value) is dropped.
void serialize_head(const HttpReply& reply, unsigned version, bool keep_alive, std::string& out) {
  out.clear();
  out += version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  char code[4] = {static_cast<char>('0' + reply.status / 100 % 10), static_cast<char>('0' + reply.status / 10 % 10),
                  static_cast<char>('0' + reply.status % 10), ' '};
  out.append(code, 4);
  out += http::obsolete_reason(static_cast<http::status>(reply.status));
  out += "\r\n";
  for (const auto& h : reply.headers) {
    if (h.name.empty() || !std::all_of(h.name.begin(), h.name.end(), [](char c) { return is_token_char(static_cast<unsigned char>(c)); }) ||
        h.value.find_first_of("\r\n") != std::string::npos) {
      continue;
    }
    if (beast::iequals(h.name, "content-length") || beast::iequals(h.name, "transfer-encoding") ||
        beast::iequals(h.name, "connection") || beast::iequals(h.name, "keep-alive") || beast::iequals(h.name, "upgrade")) {
      continue;
    }
    out += h.name;
    out += ": ";
    out += h.value;
    out += "\r\n";
  }
  if (reply.stream && !reply.stream->length) {
    if (version != 10) out += "Transfer-Encoding: chunked\r\n";  // HTTP/1.0: the close ends it
  } else if (carries_body(reply.status) && reply.head_length != HttpReply::kNoLength) {
    char len[24];
    const uint64_t length = reply.stream ? *reply.stream->length : reply.head_length ? *reply.head_length : reply.body.size();
    auto [end, ec] = std::to_chars(len, len + sizeof len, length);
    out += "Content-Length: ";
    out.append(len, end);
    out += "\r\n";
  }
  if (!keep_alive) out += "Connection: close\r\n";
  else if (version == 10) out += "Connection: keep-alive\r\n";
  out += "\r\n";
}

class BeastRequest final : public IncomingRequest {
 public:
  // `body`: the body read whole (null: none, or it comes through `stream`).
  BeastRequest(http::request_header<>& r, std::string* body, const tcp::socket& s, std::optional<std::string>& peer,
               bool secure, std::shared_ptr<BodySource> stream = nullptr)
      : r_(r), body_(body), socket_(s), peer_(peer), secure_(secure), stream_(std::move(stream)) {}
  bool secure() const override { return secure_; }
  // Asked once per connection (a system call), then kept with it.
  std::string remote_address() const override {
    if (!peer_) {
      boost::system::error_code ec;
      auto endpoint = socket_.remote_endpoint(ec);
      if (ec) {
        peer_.emplace();
      } else {
        auto a = endpoint.address();
        if (a.is_v6() && a.to_v6().is_v4_mapped()) a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
        peer_ = a.to_string();
      }
    }
    return *peer_;
  }
  std::string_view method() const override { return r_.method_string(); }
  std::string_view target() const override { return r_.target(); }
  std::optional<std::string_view> header(std::string_view name) const override {
    auto it = r_.find(name);
    if (it == r_.end()) return std::nullopt;
    return it->value();
  }
  void for_each_header(const std::function<void(std::string_view, std::string_view)>& fn) const override {
    for (const auto& f : r_) fn(f.name_string(), f.value());
  }
  std::size_t header_count() const override {
    std::size_t n = 0;
    for (auto it = r_.begin(); it != r_.end(); ++it) ++n;
    return n;
  }
  std::string take_body() override { return body_ ? std::move(*body_) : std::string(); }
  std::shared_ptr<BodySource> body_stream() override { return stream_; }

 private:
  http::request_header<>& r_;
  std::string* body_;
  const tcp::socket& socket_;
  std::optional<std::string>& peer_;
  bool secure_;
  std::shared_ptr<BodySource> stream_;
};

// A request body read as the handler asks for it (RequestHandler::streams_body): each read
// takes what the client has sent, within read_timeout; the first sends 100 Continue if the
// client waits for it (a request refused before its body is read never asks for the body).
// It holds the connection, so a read under way when the server closes finds it alive.
using BodyParser = http::request_parser<http::buffer_body>;
template <class Stream>
struct ClientBody final : BodySource {
  ClientBody(std::shared_ptr<Connection> c, Stream& s, std::shared_ptr<BodyParser> p, bool expects_continue)
      : conn(std::move(c)), stream(s), parser(std::move(p)), send_continue(expects_continue) {
    if (auto n = parser->content_length()) length = *n;
  }
  asio::awaitable<std::pair<boost::system::error_code, std::size_t>> read(asio::mutable_buffer into) override {
    using Result = std::pair<boost::system::error_code, std::size_t>;
    Connection& c = *conn;
    if (over) co_return Result{asio::error::operation_aborted, 0};
    if (send_continue) {
      send_continue = false;
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      auto [wec, w] = co_await asio::async_write(stream, asio::buffer(kContinue.data(), kContinue.size()), kNoThrow);
      if (wec) co_return Result{wec, 0};
    }
    std::size_t got = 0;
    const Phase was = c.phase;
    while (got == 0 && !parser->is_done() && !over) {
      parser->get().body().data = into.data();
      parser->get().body().size = into.size();
      c.phase = Phase::reading;  // mid-request: each piece within read_timeout
      c.phase_started = coarse_now();
      c.parser = parser.get();
      auto [ec, n] = co_await http::async_read_some(stream, c.in, *parser, kNoThrow);
      c.parser = nullptr;
      c.phase = was;
      c.phase_started = coarse_now();
      got = into.size() - parser->get().body().size;
      if (ec == http::error::need_buffer) ec = {};
      if (ec) co_return Result{c.timed_out ? boost::system::error_code(asio::error::timed_out) : ec, got};
    }
    co_return Result{{}, got};
  }
  std::shared_ptr<Connection> conn;
  Stream& stream;
  std::shared_ptr<BodyParser> parser;
  bool send_continue;
  bool over = false;  // the request was answered: no more reads
};

}  // namespace

// Per loop: the acceptor (if any), the live connections, and the sweep that enforces timeouts.
struct LoopState {
  explicit LoopState(asio::io_context& c) : ctx(c), sweep(c) {}
  asio::io_context& ctx;
  std::optional<tcp::acceptor> acceptor;
  asio::steady_timer sweep;
  Connection* head = nullptr;

  void add(Connection* c) {
    c->next = head;
    if (head) head->prev = c;
    head = c;
  }
  void remove(Connection* c) {
    if (c->prev) c->prev->next = c->next;
    else head = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = nullptr;
  }
};

struct HttpServer::Impl : std::enable_shared_from_this<HttpServer::Impl> {
  Impl(EventLoops& l, RequestHandler& h) : loops(l), handler(h) {}
  EventLoops& loops;
  RequestHandler& handler;
  ListenOptions options;
  std::vector<std::unique_ptr<LoopState>> states;
  std::atomic<int> active{0};
  std::atomic<bool> stopping{false};
  std::atomic<bool> closed{false};

  asio::awaitable<void> accept_loop(LoopState& ls);
  asio::awaitable<void> serve(LoopState& ls, tcp::socket socket);
  template <class Stream>
  asio::awaitable<void> serve_requests(std::shared_ptr<Connection> conn, Stream& stream);
  void arm_sweep(LoopState& ls);
  // Runs fn on each loop's own thread, with this server's state for that loop.
  void on_every_loop(void (*fn)(Impl&, LoopState&)) {
    for (auto& s : states) {
      asio::post(s->ctx, [self = shared_from_this(), ls = s.get(), fn] { fn(*self, *ls); });
    }
  }
  void sweep(LoopState& ls);
  template <class Stream>
  asio::awaitable<bool> send_streamed(Connection& c, Stream& stream, BodySource& body, bool may_chunk);
  template <class Stream>
  asio::awaitable<void> tunnel(std::shared_ptr<Connection> conn, Stream& stream, beast::flat_buffer& buffer,
                               UpgradedStream& upgraded);
  asio::awaitable<void> linger(Connection& c);
  template <class Stream>
  asio::awaitable<void> send_error_and_close(Connection& c, Stream& stream, int status, std::string_view code,
                                             std::string_view message);
};

HttpServer::HttpServer(EventLoops& loops, RequestHandler& handler)
    : impl_(std::make_shared<Impl>(loops, handler)) {}

HttpServer::~HttpServer() = default;

int HttpServer::active_requests() const { return impl_->active.load(); }

void HttpServer::close() {
  impl_->stopping.store(true);
  impl_->closed.store(true);
  impl_->on_every_loop([](Impl&, LoopState& ls) {
    boost::system::error_code ignored;
    if (ls.acceptor) ls.acceptor->close(ignored);
    ls.sweep.cancel();
    for (Connection* c = ls.head; c; c = c->next) {
      c->closing = true;
      c->socket.close(ignored);
      c->wait_timer.cancel();
    }
  });
}

Expected<int> HttpServer::listen(const ListenOptions& options) {
  impl_->options = options;
  auto& contexts = impl_->loops.impl().contexts;
  boost::system::error_code ec;
  auto address = asio::ip::make_address(options.address, ec);
  if (ec) return Error{"listen address '" + options.address + "' is not an IP address"};
  int port = options.port;
  std::size_t count = options.every_loop ? contexts.size() : 1;
  if (count > 1 && port != 0) {
    // SO_REUSEPORT would let us join another process's listener on this port and split its
    // traffic; refuse when anything already answers there.
    asio::io_context probe_ctx;
    tcp::socket probe(probe_ctx);
    auto target = address.is_unspecified()
                      ? (address.is_v6() ? asio::ip::address(asio::ip::address_v6::loopback())
                                         : asio::ip::address(asio::ip::address_v4::loopback()))
                      : address;
    probe.connect(tcp::endpoint(target, static_cast<unsigned short>(port)), ec);
    if (!ec) {
      return Error{"cannot listen on " + options.address + ":" + std::to_string(port) +
                   ": address already in use; choose another port, or --port 0 for a free one"};
    }
    ec.clear();
  }
  for (std::size_t i = 0; i < count; ++i) {
    auto state = std::make_unique<LoopState>(*contexts[i]);
    tcp::acceptor acceptor(*contexts[i]);
    tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec && count > 1) {
      int one = 1;
      ::setsockopt(acceptor.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    }
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return Error{"cannot listen on " + options.address + ":" + std::to_string(port) + ": " +
                   ec.message() + (port != 0 ? "; choose another port, or --port 0 for a free one" : "")};
    }
    port = acceptor.local_endpoint().port();  // later acceptors share the first one's port
    state->acceptor.emplace(std::move(acceptor));
    impl_->states.push_back(std::move(state));
  }
  for (auto& s : impl_->states) {
    LoopState* ls = s.get();
    auto self = impl_;
    asio::co_spawn(ls->ctx, [self, ls]() { return self->accept_loop(*ls); }, asio::detached);
    asio::post(ls->ctx, [self, ls] { self->arm_sweep(*ls); });
  }
  return port;
}

Status HttpServer::serve_connected(int fd, const ListenOptions& options) {
  if (impl_->states.empty()) {
    impl_->options = options;
    impl_->states.push_back(std::make_unique<LoopState>(*impl_->loops.impl().contexts.front()));
    asio::post(impl_->states.front()->ctx, [self = impl_, ls = impl_->states.front().get()] { self->arm_sweep(*ls); });
  }
  LoopState* ls = impl_->states.front().get();
  tcp::socket socket(ls->ctx);
  boost::system::error_code ec;
  socket.assign(tcp::v4(), fd, ec);  // Asio reads and writes any stream socket alike
  if (ec) {
    ::close(fd);
    return Error{"cannot serve fd " + std::to_string(fd) + ": " + ec.message()};
  }
  asio::co_spawn(ls->ctx, impl_->serve(*ls, std::move(socket)), asio::detached);
  return ok_status();
}

void HttpServer::stop_accepting() {
  impl_->stopping.store(true);
  impl_->on_every_loop([](Impl& self, LoopState& ls) {
    boost::system::error_code ignored;
    if (ls.acceptor) ls.acceptor->close(ignored);
    self.sweep(ls);  // idle keep-alive connections close now
  });
}

asio::awaitable<void> HttpServer::Impl::accept_loop(LoopState& ls) {
  auto self = shared_from_this();
  while (!stopping.load(std::memory_order_relaxed)) {
    auto [ec, socket] = co_await ls.acceptor->async_accept(kNoThrow);
    if (ec) {
      if (ec == asio::error::operation_aborted || stopping.load()) co_return;
      // Out of file descriptors and the like: back off briefly rather than spin.
      asio::steady_timer pause(ls.ctx, std::chrono::milliseconds(50));
      co_await pause.async_wait(kNoThrow);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    asio::co_spawn(ls.ctx, serve(ls, std::move(socket)), asio::detached);
  }
}

void HttpServer::Impl::arm_sweep(LoopState& ls) {
  auto period = std::min(options.limits.read_timeout, options.limits.idle_timeout) / 4;
  period = std::clamp<Duration>(period, std::chrono::milliseconds(10), std::chrono::seconds(1));
  ls.sweep.expires_after(period);
  auto self = shared_from_this();
  ls.sweep.async_wait([self, &ls](boost::system::error_code ec) {
    if (ec || self->closed.load()) return;  // closed: a tick already queued must not re-arm
    self->sweep(ls);
    self->arm_sweep(ls);
  });
}

void HttpServer::Impl::sweep(LoopState& ls) {
  auto now = coarse_now();
  bool closing = stopping.load();
  for (Connection* c = ls.head; c; c = c->next) {
    if (c->timed_out) continue;
    auto age = now - c->phase_started;
    bool mid_request = c->parser && c->parser->got_some();
    bool expire = false;
    switch (c->phase) {
      case Phase::handshake: expire = closing || age > options.limits.read_timeout; break;
      case Phase::reading:
        expire = mid_request ? age > options.limits.read_timeout
                             : (closing || age > options.limits.idle_timeout);
        break;
      case Phase::writing: expire = age > options.limits.read_timeout; break;
      case Phase::draining: expire = closing || age > std::chrono::seconds(1); break;
      case Phase::handling: break;  // the pool's deadline bounds this
      case Phase::tunnel: expire = closing || age > c->tunnel_idle; break;
      case Phase::upstream:
        // An event stream never ends by itself: a shutdown ends it (cleanly), as it does tunnels.
        if (closing && c->event_stream && c->streaming && !c->ending) {
          c->ending = true;
          c->streaming->cancel();
        }
        break;
    }
    if (expire) {
      c->timed_out = true;
      c->timed_out_mid_request = c->phase == Phase::reading && mid_request;
      boost::system::error_code ignored;
      if (c->phase == Phase::tunnel) {
        // Either way may be between operations: shut both so the next one fails too.
        c->socket.shutdown(tcp::socket::shutdown_both, ignored);
        if (c->tunnel_peer) c->tunnel_peer->shutdown(tcp::socket::shutdown_both, ignored);
      }
      c->socket.cancel(ignored);
      if (c->tunnel_peer) c->tunnel_peer->cancel(ignored);
    }
  }
}

template <class Stream>
asio::awaitable<void> HttpServer::Impl::send_error_and_close(Connection& c, Stream& stream, int status, std::string_view code,
                                                             std::string_view message) {
  HttpReply reply = json_error(status, code, message, "");
  http::response<http::string_body> res{static_cast<http::status>(status), 11};
  for (auto& h : reply.headers) res.set(h.name, h.value);
  res.set(http::field::connection, "close");
  res.body() = std::move(reply.body);
  res.prepare_payload();
  if (options.metrics) options.metrics->http_response(status);
  c.phase = Phase::writing;
  c.phase_started = coarse_now();
  c.timed_out = false;
  auto [ec, n] = co_await http::async_write(stream, res, kNoThrow);
  if (ec) co_return;
  co_await linger(c);
}

// Lingering close: stop sending, then read and discard briefly so the client sees our reply
// instead of a reset caused by unread request bytes. TLS: the close_notify at the end of
// serve() says the rest.
asio::awaitable<void> HttpServer::Impl::linger(Connection& c) {
  if (c.tls) co_return;
  c.timed_out = false;  // the drain has its own bound
  boost::system::error_code ignored;
  c.socket.shutdown(tcp::socket::shutdown_send, ignored);
  c.phase = Phase::draining;
  c.phase_started = coarse_now();
  char scratch[16384];
  std::size_t total = 0;
  while (total < (1u << 20)) {
    auto [rec, got] = co_await c.socket.async_read_some(asio::buffer(scratch), kNoThrow);
    if (rec) break;
    total += got;
  }
}

asio::awaitable<void> HttpServer::Impl::serve(LoopState& ls, tcp::socket socket) {
  auto self = shared_from_this();
  auto conn = std::make_shared<Connection>(std::move(socket));
  Connection& c = *conn;
  ls.add(&c);
  struct Unlink {
    LoopState& ls;
    Connection& c;
    ~Unlink() { ls.remove(&c); }
  } unlink{ls, c};

  if (options.tls) {
    c.tls_context = options.tls->impl().current();
    c.tls.emplace(c.socket, *c.tls_context);
    c.phase = Phase::handshake;
    c.phase_started = coarse_now();
    auto [hec] = co_await c.tls->async_handshake(asio::ssl::stream_base::server, kNoThrow);
    if (!hec) {
      co_await serve_requests(conn, *c.tls);
      // close_notify, so the client can tell the end from a cut; bounded by the sweep.
      c.phase = Phase::draining;
      c.phase_started = coarse_now();
      c.timed_out = false;
      if (!c.closing && !c.abortive) co_await c.tls->async_shutdown(kNoThrow);
    }
  } else {
    co_await serve_requests(conn, c.socket);
  }
  boost::system::error_code ignored;
  if (c.abortive) {
    c.socket.set_option(asio::socket_base::linger(true, 0), ignored);  // RST at close, and no FIN before it
  } else {
    c.socket.shutdown(tcp::socket::shutdown_send, ignored);
  }
  c.socket.close(ignored);
}

// Writes c.head, then the body as it arrives (chunked when it has no length and the client
// speaks HTTP/1.1). Whether all of it went: else the connection must close, so the client
// cannot take a part for the whole. Each piece waits for the client to take the last one.
template <class Stream>
asio::awaitable<bool> HttpServer::Impl::send_streamed(Connection& c, Stream& stream, BodySource& body, bool may_chunk) {
  const bool chunked = !body.length && may_chunk;
  c.phase = Phase::writing;
  c.phase_started = coarse_now();
  auto send = [&](const char* data, std::size_t n) -> asio::awaitable<bool> {
    c.phase = Phase::writing;  // the client must take each piece within read_timeout
    c.phase_started = coarse_now();
    char size_line[24];
    std::array<asio::const_buffer, 4> wire;
    std::size_t parts = 0;
    if (!c.head.empty()) wire[parts++] = asio::buffer(c.head);
    if (chunked && n > 0) {
      int len = std::snprintf(size_line, sizeof size_line, "%zx\r\n", n);
      wire[parts++] = asio::buffer(size_line, static_cast<std::size_t>(len));
    }
    if (n > 0) wire[parts++] = asio::buffer(data, n);
    if (chunked && n > 0) wire[parts++] = asio::buffer("\r\n", 2);
    auto [ec, w] = co_await asio::async_write(stream, std::span(wire.data(), parts), kNoThrow);
    c.head.clear();
    c.phase_started = coarse_now();
    co_return !ec;
  };
  uint64_t sent = body.first.size();
  if (!co_await send(body.first.data(), body.first.size())) co_return false;
  std::vector<char> chunk(64 * 1024);
  while (true) {
    if (c.ending && !body.length) break;  // a shutdown ends an event stream (and a cancel can miss)
    c.phase = Phase::upstream;
    c.streaming = &body;
    auto [ec, n] = co_await body.read(asio::buffer(chunk));
    c.streaming = nullptr;
    c.phase = Phase::writing;
    c.phase_started = coarse_now();
    if (ec && c.ending && !body.length) break;  // a shutdown ends an event stream: cleanly
    if (ec) co_return false;
    if (n == 0) break;
    sent += n;
    if (!co_await send(chunk.data(), n)) co_return false;
  }
  if (body.length && sent != *body.length) co_return false;
  if (chunked) {
    auto [ec, w] = co_await asio::async_write(stream, asio::buffer("0\r\n\r\n", 5), kNoThrow);
    if (ec) co_return false;
  }
  co_return true;
}

// Copies bytes both ways between the client's stream and the upstream's socket: this coroutine
// the client's way up, a second one the upstream's way down. Either side closing, an error, or
// `idle_timeout` with nothing passing (the sweep) ends both; the second is awaited, so nothing
// writes to the client's stream after this returns.
template <class Stream>
asio::awaitable<void> HttpServer::Impl::tunnel(std::shared_ptr<Connection> conn, Stream& stream, beast::flat_buffer& buffer,
                                               UpgradedStream& upgraded) {
  Connection& c = *conn;
  auto upstream = std::make_shared<tcp::socket>(c.socket.get_executor());
  const int fd = upgraded.take_fd();
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  boost::system::error_code ec;
  upstream->assign(addr.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd, ec);
  if (ec) {
    ::close(fd);
    co_return;
  }
  c.tunnel_peer = upstream.get();
  c.tunnel_idle = upgraded.idle_timeout;
  c.phase = Phase::tunnel;
  c.phase_started = coarse_now();
  c.timed_out = false;
  struct Untunnel {
    Connection& c;
    ~Untunnel() { c.tunnel_peer = nullptr; }
  } untunnel{c};
  // What each side sent before the tunnel opened.
  if (!upgraded.pending.empty()) {
    auto [wec, n] = co_await asio::async_write(stream, asio::buffer(upgraded.pending), kNoThrow);
    if (wec) co_return;
  }
  if (buffer.size() > 0) {
    auto [wec, n] = co_await asio::async_write(*upstream, buffer.data(), kNoThrow);
    if (wec) co_return;
    buffer.consume(buffer.size());
  }
  auto down_done = std::make_shared<asio::steady_timer>(c.socket.get_executor(), asio::steady_timer::time_point::max());
  auto down_running = std::make_shared<bool>(true);
  asio::co_spawn(
      c.socket.get_executor(),
      [conn, upstream, &stream, down_done, down_running]() -> asio::awaitable<void> {
        std::vector<char> chunk(16384);
        boost::system::error_code ended;
        while (true) {
          auto [rec, n] = co_await upstream->async_read_some(asio::buffer(chunk), kNoThrow);
          if (rec) {
            ended = rec;
            break;
          }
          conn->phase_started = coarse_now();
          auto [wec, w] = co_await asio::async_write(stream, asio::buffer(chunk.data(), n), kNoThrow);
          if (wec) {
            ended = wec;
            break;
          }
        }
        boost::system::error_code ignored;
        if (ended == asio::error::eof && std::is_same_v<Stream, tcp::socket>) {
          // The upstream finished: so does this side, while the client may still say its last
          // (a WebSocket close reply) before it closes; the idle timeout bounds the wait.
          // (Over TLS the end is a close_notify, sent once both ways have stopped.)
          conn->socket.shutdown(tcp::socket::shutdown_send, ignored);
        } else {
          conn->socket.cancel(ignored);  // an error, or the client's way ended first
        }
        *down_running = false;
        down_done->cancel();
      },
      asio::detached);
  std::vector<char> chunk(16384);
  boost::system::error_code ended;
  while (true) {
    auto [rec, n] = co_await stream.async_read_some(asio::buffer(chunk), kNoThrow);
    if (rec) {
      ended = rec;
      break;
    }
    c.phase_started = coarse_now();
    auto [wec, w] = co_await asio::async_write(*upstream, asio::buffer(chunk.data(), n), kNoThrow);
    if (wec) {
      ended = wec;
      break;
    }
  }
  // The client finished: pass the end on and let the upstream say its last (bounded by the
  // idle timeout). Anything else: the way down ends now.
  upstream->shutdown(tcp::socket::shutdown_send, ec);
  if (!(ended == asio::error::eof && std::is_same_v<Stream, tcp::socket>)) upstream->cancel(ec);
  while (*down_running) co_await down_done->async_wait(kNoThrow);
  upstream->close(ec);
}

template <class Stream>
asio::awaitable<void> HttpServer::Impl::serve_requests(std::shared_ptr<Connection> conn, Stream& stream) {
  Connection& c = *conn;
  beast::flat_buffer& buffer = c.in;
  uint64_t generation = 0;
  while (true) {
    Parser parser;
    std::shared_ptr<BodyParser> body_parser;  // a body the handler reads as it comes
    std::shared_ptr<ClientBody<Stream>> streamed;
    c.timed_out = false;  // each request starts with its own clock
    parser.header_limit(static_cast<std::uint32_t>(options.limits.max_header));
    parser.body_limit(options.limits.max_body);
    c.parser = &parser;
    c.phase = Phase::reading;
    c.phase_started = coarse_now();
    auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, kNoThrow);
    if (!ec) {
      // Beast decodes chunked and takes any other coding before it as opaque bytes: a coding
      // we cannot undo must be refused (RFC 9112 6.1), not handed on as if it were the body.
      if (auto te = parser.get().find(http::field::transfer_encoding); te != parser.get().end()) {
        if (std::string unknown = unsupported_transfer_coding(te->value()); !unknown.empty()) {
          co_await send_error_and_close(c, stream, 501, "not_implemented",
                                        "the transfer coding '" + unknown + "' is not supported (only chunked is)");
          break;
        }
      }
    }
    if (!ec && !parser.is_done()) {
      // A body follows: read whole now, or as the handler reads it.
      auto expect = parser.get().find(http::field::expect);
      const bool expects_continue = expect != parser.get().end() && beast::iequals(expect->value(), "100-continue");
      std::optional<uint64_t> limit;
      try {
        BeastRequest head(parser.get(), nullptr, c.socket, c.peer, c.tls.has_value());
        limit = handler.streams_body(head);
      } catch (const std::exception&) {
        limit.reset();
      }
      if (limit) {
        body_parser = std::make_shared<BodyParser>(std::move(parser));
        body_parser->body_limit(*limit);
        streamed = std::make_shared<ClientBody<Stream>>(conn, stream, body_parser, expects_continue);
      }
      // Clients that sent Expect: 100-continue wait for our go-ahead.
      if (streamed) {
      } else if (expects_continue) {
        http::response<http::empty_body> go{http::status::continue_, parser.get().version()};
        std::tie(ec, n) = co_await http::async_write(stream, go, kNoThrow);
      }
      if (!ec && !streamed) std::tie(ec, n) = co_await http::async_read(stream, buffer, parser, kNoThrow);
    }
    c.parser = nullptr;
    if (ec) {
      if (c.timed_out) {
        if (c.timed_out_mid_request) {
          co_await send_error_and_close(c, stream, 408, "request_timeout",
                                        "the request did not arrive whole in time");
        }
      } else if (ec == http::error::body_limit) {
        co_await send_error_and_close(c, stream, 413, "payload_too_large",
                                      "the request body is over the limit of " +
                                          std::to_string(options.limits.max_body) + " bytes");
      } else if (ec == http::error::header_limit && parser.get().target().empty()) {
        // Beast hands the start line to the message as soon as it has it whole: with no
        // target yet, the request line itself is what went over the limit.
        co_await send_error_and_close(c, stream, 414, "uri_too_long",
                                      "the request line is over the limit of " +
                                          std::to_string(options.limits.max_header) + " bytes");
      } else if (ec == http::error::header_limit) {
        co_await send_error_and_close(c, stream, 431, "header_fields_too_large",
                                      "the request headers are over the limit of " +
                                          std::to_string(options.limits.max_header) + " bytes");
      } else if (ec.category() == http::make_error_code(http::error::bad_method).category() &&
                 ec != http::error::end_of_stream && ec != http::error::partial_message) {
        co_await send_error_and_close(c, stream, 400, "bad_request", "malformed HTTP request: " + ec.message());
      }
      break;
    }
    // The head (a streamed body's parser took it over from `parser`).
    http::request_header<>& request = body_parser ? static_cast<http::request_header<>&>(body_parser->get())
                                                  : static_cast<http::request_header<>&>(parser.get());
    const bool request_keep_alive = body_parser ? body_parser->get().keep_alive() : parser.get().keep_alive();
    active.fetch_add(1, std::memory_order_relaxed);
    c.phase = Phase::handling;

    // Ask the handler; it answers now (inline) or later from another thread.
    HttpReply reply;
    {
      std::lock_guard lock(c.slot->mu);
      c.slot->generation = ++generation;
      c.slot->ready = false;
      c.slot->wake = nullptr;
    }
    try {
      BeastRequest view(request, streamed ? nullptr : &parser.get().body(), c.socket, c.peer, c.tls.has_value(), streamed);
      handler.handle(view, Responder(c.slot, generation));
    } catch (const std::exception& e) {
      // A bug or exhaustion inside the host: the caller gets a 500, the connection lives on.
      std::fprintf(stderr, "nimbus: request handler failed: %s\n", e.what());
      Responder(c.slot, generation)(json_error(500, "internal", "the host failed to handle the request", ""));
    }
    bool ready;
    {
      std::lock_guard lock(c.slot->mu);
      ready = c.slot->ready;
      if (!ready) {
        c.wait_timer.expires_at(asio::steady_timer::time_point::max());
        c.slot->wake = [conn] { asio::post(conn->socket.get_executor(), [conn] { conn->wait_timer.cancel(); }); };
      }
    }
    while (!ready && !c.closing) {
      co_await c.wait_timer.async_wait(kNoThrow);
      std::lock_guard lock(c.slot->mu);
      ready = c.slot->ready;
    }
    if (streamed) streamed->over = true;
    if (!ready) {
      active.fetch_sub(1, std::memory_order_relaxed);
      break;
    }
    {
      std::lock_guard lock(c.slot->mu);
      reply = std::move(c.slot->reply);
    }
    // A body the handler did not read to its end (refused first, or cut): the reply is the
    // connection's last, and the rest of the body is read and dropped briefly after it.
    const bool body_left = streamed && !body_parser->is_done();
    if (streamed) c.timed_out = false;  // a piece that timed out has been answered: the reply's own clock now

    if (reply.status == 101 && reply.upgrade) {
      // Switching protocols: the head, then the connection is a tunnel to the upstream's.
      if (options.metrics) options.metrics->http_response(101);
      c.head = "HTTP/1.1 101 Switching Protocols\r\n";
      for (const auto& h : reply.headers) {
        if (h.name.empty() || h.value.find_first_of("\r\n") != std::string::npos ||
            !std::all_of(h.name.begin(), h.name.end(), [](char ch) { return is_token_char(static_cast<unsigned char>(ch)); })) {
          continue;
        }
        c.head += h.name + ": " + h.value + "\r\n";
      }
      c.head += "Connection: Upgrade\r\nUpgrade: " + reply.upgrade->protocol + "\r\n\r\n";
      c.phase = Phase::writing;
      c.phase_started = coarse_now();
      auto [hec, hn] = co_await asio::async_write(stream, asio::buffer(c.head), kNoThrow);
      active.fetch_sub(1, std::memory_order_relaxed);  // a tunnel is no request: shutdown does not wait for it
      if (!hec) co_await tunnel(conn, stream, buffer, *reply.upgrade);
      break;
    }
    bool keep_alive = request_keep_alive && !body_left && !stopping.load(std::memory_order_relaxed);
    bool head = request.method() == http::verb::head;
    if (reply.stream && !head) {
      if (!reply.stream->length && request.version() == 10) keep_alive = false;
      if (options.metrics) options.metrics->http_response(reply.status);
      serialize_head(reply, request.version(), keep_alive, c.head);
      for (const auto& h : reply.headers) {
        if (beast::iequals(h.name, "content-type") && h.value.size() >= 17 &&
            beast::iequals(std::string_view(h.value).substr(0, 17), "text/event-stream")) {
          c.event_stream = true;
        }
      }
      // An event stream is no request a shutdown waits for (like a tunnel): it ends it.
      if (c.event_stream) active.fetch_sub(1, std::memory_order_relaxed);
      const bool whole = co_await send_streamed(c, stream, *reply.stream, request.version() != 10);
      if (!c.event_stream) active.fetch_sub(1, std::memory_order_relaxed);
      c.event_stream = false;
      if (c.ending) keep_alive = false;
      if (!whole) {
        c.abortive = true;
        break;
      }
      if (!keep_alive) {
        if (body_left) co_await linger(c);
        break;
      }
      continue;
    }
    if (options.compression.enabled && !head) {
      if (auto ae = request.find(http::field::accept_encoding); ae != request.end()) {
        compress_reply(reply, ae->value(), options.compression);
      }
    }
    if (options.metrics) options.metrics->http_response(reply.status);
    serialize_head(reply, request.version(), keep_alive, c.head);
    std::array<asio::const_buffer, 2> wire = {asio::buffer(c.head), asio::buffer(reply.body)};
    if (head || !carries_body(reply.status)) wire[1] = asio::const_buffer();

    c.phase = Phase::writing;
    c.phase_started = coarse_now();
    auto [wec, written] = co_await asio::async_write(stream, wire, kNoThrow);
    active.fetch_sub(1, std::memory_order_relaxed);
    if (wec || !keep_alive) {
      if (!wec && body_left) co_await linger(c);
      break;
    }
  }
}

}  // namespace nimbus
