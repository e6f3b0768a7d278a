#pragma once
// The HTTP/1.1 server that the HTTP trigger, the gateway and the admin API share: Boost.Beast
// on Boost.Asio, one event-loop thread per core, each with its own SO_REUSEPORT acceptor, and
// C++20 coroutines per connection. It owns protocol limits and their error replies (400, 408,
// 413, 431); what a request means is the RequestHandler's business. No Asio in this header.
#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/app_spec.h"
#include "core/expected.h"
#include "core/invocation.h"
#include "core/reactor.h"

namespace nimbus {

class Metrics;

// N io_contexts, each run by one thread.
class EventLoops {
 public:
  explicit EventLoops(int threads);
  ~EventLoops();
  int size() const;
  void start();
  void stop();   // stops the loops at once and joins their threads
  void drain();  // lets the loops finish the work they have (none may be endless), then joins
  // Runs `fn` on loop `index` (used to reach per-loop state).
  void post(int index, std::function<void()> fn);
  // Loop `index` as a Reactor (for worker sockets). A loop with a watch left has work:
  // drain() waits for every watch to be destroyed.
  Reactor& reactor(int index);
  // The index of the loop the calling thread runs, or -1 when it runs none of these loops.
  int current_index() const;
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Event-loop threads for this process: one per CPU it may run on (taskset counts).
int default_loop_count();

// A connection switched to another protocol by an upstream (HttpReply::upgrade): once the
// 101 head is written, the listener copies bytes both ways between it and the client until
// either side closes, or nothing passes for `idle_timeout`.
struct UpgradedStream {
  UpgradedStream(int fd, std::string pending, std::string protocol, Duration idle_timeout);
  ~UpgradedStream();  // closes the fd unless taken
  UpgradedStream(const UpgradedStream&) = delete;
  UpgradedStream& operator=(const UpgradedStream&) = delete;
  int take_fd();
  std::string pending;   // bytes the upstream sent after its 101 head
  std::string protocol;  // the Upgrade value ("websocket")
  Duration idle_timeout;

 private:
  int fd_;
};

struct BodySource;  // triggers/http/body_source.h

// A parsed request, valid during RequestHandler::handle.
class IncomingRequest {
 public:
  virtual ~IncomingRequest() = default;
  virtual std::string_view method() const = 0;
  virtual std::string_view target() const = 0;  // path?query, as received
  virtual std::optional<std::string_view> header(std::string_view name) const = 0;
  virtual void for_each_header(const std::function<void(std::string_view, std::string_view)>& fn) const = 0;
  virtual std::size_t header_count() const = 0;
  virtual std::string take_body() = 0;
  // The client's IP address ("203.0.113.7", "::1"), or "" when unknown (a socketpair).
  virtual std::string remote_address() const { return {}; }
  // Whether the request came over TLS.
  virtual bool secure() const { return false; }
  // The body as it arrives, when the handler's streams_body() asked for it (take_body() is
  // then empty); read it on the loop that called handle(), before answering. Null otherwise.
  virtual std::shared_ptr<BodySource> body_stream() { return nullptr; }
};

// A request's W3C tracestate: every tracestate header's value, joined with "," in order (the
// spec's combining of repeated headers); empty when there is none.
std::string tracestate_of(const IncomingRequest& request);

// Delivers the reply for one request. Call exactly once, from any thread, during or after
// RequestHandler::handle.
class Responder {
 public:
  struct Slot;
  Responder(std::shared_ptr<Slot> slot, uint64_t generation);
  void operator()(HttpReply&& reply) const;

 private:
  std::shared_ptr<Slot> slot_;
  uint64_t generation_;
};

// A Responder tied to no connection: the reply is moved into *out when given (for tests and
// benchmarks that drive a RequestHandler directly).
Responder detached_responder(std::shared_ptr<HttpReply> out);

// A Responder that hands the reply to `edit` (on the thread that answers) and then to `inner`.
Responder intercept(Responder inner, std::function<void(HttpReply&)> edit);

class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  virtual void handle(IncomingRequest& request, Responder respond) = 0;
  // Asked when a request's head has come and a body follows: a limit on the body, to have it
  // through body_stream() as it arrives instead of whole before handle(); nullopt: whole. A
  // body not read to its end before the reply closes the connection after it.
  virtual std::optional<uint64_t> streams_body(IncomingRequest& /*head*/) { return std::nullopt; }
};

// Response compression (gzip, br) for clients that accept it: compressible types only
// (text, JSON, JavaScript, XML, SVG), bodies of at least `min_size`, not ranges, not bodies
// already encoded; a strong ETag turns weak. Off unless enabled.
struct CompressionOptions {
  bool enabled = false;
  std::size_t min_size = 1024;
};

// A certificate chain and private key for TLS listeners (TLS 1.2 and 1.3, ALPN http/1.1).
// Connections take the current pair when they start; reload_if_changed() swaps in a new pair
// for the connections after it, and keeps the old one when the new files do not load.
class TlsCertificates {
 public:
  // Reads and checks both PEM files (they block: not on an event loop).
  static Expected<std::shared_ptr<TlsCertificates>> load(const std::string& cert_file, const std::string& key_file);
  ~TlsCertificates();
  // Reads the files again if their size, modification time or inode changed. Returns whether
  // a new pair is in use, or why the changed files were refused (the old pair stays).
  Expected<bool> reload_if_changed();
  // The leaf certificate's subject and expiry, for logs: "CN=localhost, not after 2027-...".
  std::string describe() const;
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  TlsCertificates() = default;
  std::unique_ptr<Impl> impl_;
};

struct ListenOptions {
  std::string address = "127.0.0.1";
  int port = 0;             // 0 picks a free port
  bool every_loop = true;   // one acceptor per loop (the public listener) or one in all (admin)
  HttpSettings limits;
  Metrics* metrics = nullptr;  // counts responses by status when set
  CompressionOptions compression;
  std::shared_ptr<TlsCertificates> tls;  // set: every connection speaks TLS first
};

// Compresses `reply` in place for a client whose Accept-Encoding is `accept_encoding`, when
// `options` allow and it pays (see CompressionOptions). Returns the coding used, or "".
std::string_view compress_reply(HttpReply& reply, std::string_view accept_encoding, const CompressionOptions& options);

class HttpServer {
 public:
  HttpServer(EventLoops& loops, RequestHandler& handler);
  ~HttpServer();
  // Binds and starts accepting; returns the bound port.
  Expected<int> listen(const ListenOptions& options);
  // Serves `fd`, a connected stream socket (one end of a socketpair, say), as if accepted
  // from a listener, and takes it over: the HTTP fuzzer and tests feed raw bytes through the
  // real connection code with no network. Use instead of listen() (address and port unused).
  Status serve_connected(int fd, const ListenOptions& options);
  // Graceful shutdown, step 1: no new connections; idle keep-alive connections close; those
  // with a request in progress finish it and then close.
  void stop_accepting();
  // Requests read and not yet answered.
  int active_requests() const;
  // Graceful shutdown, step 2 (with no requests left): closes every connection and timer on
  // its own loop, so that EventLoops::drain() finds no work left and nothing outlives it.
  void close();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// {"error":{"code":...,"message":...,"invocation_id":...}} with the status and content type.
HttpReply json_error(int status, std::string_view code, std::string_view message,
                     std::string_view invocation_id);

}  // namespace nimbus
