// The gateway's reverse proxy (upstream.h). Asio and Beast stay in this file. Every request
// runs as a coroutine on the loop that received it, with that loop's own connection pool;
// what loops share (a target's health, breaker and in-flight count) is atomics.
#include "gateway/upstream.h"
#include "triggers/http/asio_names.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <unordered_set>

#include "triggers/http/body_source.h"
#include "triggers/http/loop_context.h"
#include "triggers/http/server.h"

namespace nimbus {

namespace {
using SteadyTime = std::chrono::steady_clock::time_point;

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool idempotent(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "PUT" || m == "DELETE" || m == "TRACE";
}

bool body_expected(std::string_view m) { return m == "POST" || m == "PUT" || m == "PATCH"; }

enum class Breaker : int { closed = 0, open = 1, half_open = 2 };

}  // namespace

bool is_hop_by_hop(std::string_view n) {
  return n == "connection" || n == "keep-alive" || n == "proxy-connection" || n == "te" || n == "trailer" ||
         n == "transfer-encoding" || n == "upgrade" || n == "proxy-authenticate" || n == "proxy-authorization";
}

namespace {

// What loops share about one target.
struct TargetState {
  UpstreamTarget spec;
  std::string host_header;  // "10.0.0.5:8080"
  std::vector<tcp::endpoint> endpoints;
  std::atomic<int> in_flight{0};
  std::atomic<bool> healthy{true};
  std::atomic<int> failures_in_a_row{0};
  std::atomic<int> breaker{static_cast<int>(Breaker::closed)};
  std::atomic<int64_t> open_until_ns{0};
  std::atomic<uint64_t> requests{0}, failures{0};
  int health_ok = 0, health_bad = 0;  // loop 0 only
};

struct UpConn {
  explicit UpConn(asio::io_context& c) : socket(c) {}
  tcp::socket socket;
  beast::flat_buffer buffer;
  std::string head;  // the request head being written; its capacity is reused
  SteadyTime idle_since;
};

// Cancels a connection's I/O when its time is up. The handler holds the connection, so a
// fire that races the end of the exchange touches a live object.
struct Watchdog {
  struct State {
    bool done = false, fired = false;
  };
  Watchdog(asio::io_context& ctx) : timer(ctx), state(std::make_shared<State>()) {}
  ~Watchdog() { disarm(); }
  // Each arm starts afresh: fired() says whether this one fired.
  void arm(const std::shared_ptr<UpConn>& conn, Duration after) {
    state->done = true;
    state = std::make_shared<State>();
    timer.expires_after(after);
    timer.async_wait([s = state, conn](boost::system::error_code ec) {
      if (ec || s->done) return;
      s->fired = true;
      boost::system::error_code ignored;
      conn->socket.cancel(ignored);
    });
  }
  void disarm() {
    state->done = true;
    timer.cancel();
  }
  bool fired() const { return state->fired; }
  asio::steady_timer timer;
  std::shared_ptr<State> state;
};

// client_body: the client's streamed body could not be read (cut, too slow, over the limit).
enum class Fail : uint8_t { none, refused, connect_timeout, timeout, reset, bad_response, too_large, stopped, client_body };

struct Attempt {
  Fail fail = Fail::none;
  bool stale = false;  // a reused connection that failed before any reply byte
  bool keep_alive = false;  // the connection may carry the next request
  bool body_started = false;  // some of a streamed request body was read: it cannot be sent again
  boost::system::error_code client_error;  // Fail::client_body: why
  std::string detail;
  HttpReply reply;
};

bool counts_against_target(const Attempt& a) {
  if (a.fail == Fail::stopped || a.fail == Fail::client_body) return false;
  if (a.fail != Fail::none) return true;
  return a.reply.status == 502 || a.reply.status == 503 || a.reply.status == 504;
}

}  // namespace

// Per event loop: its pools and counters, touched only on that loop.
struct LoopPool {
  std::vector<std::vector<std::shared_ptr<UpConn>>> idle;  // per target, most recent last
  std::size_t next = 0;                                    // round-robin cursor
  int64_t window_start_ns = 0;
  int window_requests = 0, window_retries = 0;
  std::unordered_set<UpConn*> busy;  // exchanges under way, cancelled by stop()
};

// Replies are parsed into buffers the proxy hands out. A body whose length is known and at most
// kHeldWhole is held whole (it can be compressed and cached); a longer one, or one of unknown
// length that has not ended with what came along with the head, is sent on as it arrives.
// 64 KiB: a host with thousands of slow clients holds that much each at most, and a slow
// client gets read_timeout for each piece, not for a whole large body.
using StreamParser = http::response_parser<http::buffer_body>;
constexpr std::size_t kHeldWhole = 64 * 1024;
constexpr std::size_t kPiece = 64 * 1024;  // a streamed request body is sent on in pieces of at most this

struct Upstream::Impl : std::enable_shared_from_this<Upstream::Impl> {
  Impl(const UpstreamSpec& s, EventLoops& l) : spec(s), loops(l) {}
  struct UpstreamBody;
  UpstreamSpec spec;
  EventLoops& loops;
  std::vector<std::unique_ptr<TargetState>> targets;
  std::vector<std::unique_ptr<LoopPool>> pools;
  std::atomic<bool> stopped{false};
  std::atomic<bool> retired{false};  // replaced by a reload: no pooling, no health checks
  std::unique_ptr<asio::steady_timer> health_timer;  // loop 0
  std::shared_ptr<UpConn> health_conn;               // the check under way, loop 0

  asio::awaitable<void> run(LoopPool& lp, std::shared_ptr<ProxyRequest> req, Responder respond);
  asio::awaitable<Attempt> attempt(LoopPool& lp, int target, const ProxyRequest& req, bool may_replay);
  asio::awaitable<Fail> connect(LoopPool* lp, const std::shared_ptr<UpConn>& conn, const TargetState& t, Duration timeout);
  asio::awaitable<Attempt> exchange(LoopPool& lp, const std::shared_ptr<UpConn>& conn, const TargetState& t,
                                    const ProxyRequest& req);
  asio::awaitable<void> health_loop();
  asio::awaitable<bool> health_check(TargetState& t);

  // Picks a target not yet tried, healthy and admitted by its breaker; -1 when none is.
  // *probe says the pick is a half-open breaker's one probe.
  int pick(LoopPool& lp, const std::vector<int>& tried, bool* probe);
  bool admits(TargetState& t, bool* probe);
  void record(TargetState& t, bool failed, bool probe);
  bool budget_allows_retry(LoopPool& lp);
  std::shared_ptr<UpConn> take_idle(LoopPool& lp, int target);
  void put_idle(LoopPool& lp, int target, std::shared_ptr<UpConn> conn);
  HttpReply unavailable_reply() const;
};

Upstream::Upstream(const UpstreamSpec& spec, EventLoops& loops) : impl_(std::make_shared<Impl>(spec, loops)) {
  for (const auto& t : spec.targets) {
    auto state = std::make_unique<TargetState>();
    state->spec = t;
    bool v6 = t.host.find(':') != std::string::npos;
    state->host_header = (v6 ? "[" + t.host + "]" : t.host) + (t.port == 80 ? "" : ":" + std::to_string(t.port));
    impl_->targets.push_back(std::move(state));
  }
  for (int i = 0; i < loops.size(); ++i) {
    auto lp = std::make_unique<LoopPool>();
    lp->idle.resize(impl_->targets.size());
    impl_->pools.push_back(std::move(lp));
  }
}

Upstream::~Upstream() = default;

const std::string& Upstream::name() const { return impl_->spec.name; }

Status Upstream::start() {
  asio::io_context resolve_ctx;
  tcp::resolver resolver(resolve_ctx);
  for (auto& t : impl_->targets) {
    boost::system::error_code ec;
    auto results = resolver.resolve(t->spec.host, std::to_string(t->spec.port), ec);
    if (ec || results.empty()) {
      return Error{"upstream '" + impl_->spec.name + "': cannot resolve " + t->spec.host + " (" + t->spec.url +
                   "): " + (ec ? ec.message() : "no addresses")};
    }
    for (const auto& r : results) t->endpoints.push_back(r.endpoint());
  }
  if (!impl_->spec.health_path.empty()) {
    auto self = impl_;
    auto& ctx = loop_context(self->loops, 0);
    asio::post(ctx, [self, &ctx] {
      self->health_timer = std::make_unique<asio::steady_timer>(ctx);
      asio::co_spawn(ctx, self->health_loop(), asio::detached);
    });
  }
  return ok_status();
}

void Upstream::stop() {
  if (impl_->stopped.exchange(true)) return;
  for (int i = 0; i < impl_->loops.size(); ++i) {
    asio::post(loop_context(impl_->loops, i), [self = impl_, i] {
      LoopPool& lp = *self->pools[static_cast<std::size_t>(i)];
      boost::system::error_code ignored;
      for (UpConn* c : lp.busy) c->socket.cancel(ignored);
      for (auto& per_target : lp.idle) per_target.clear();
      if (i == 0) {
        if (self->health_timer) self->health_timer->cancel();
        if (self->health_conn) self->health_conn->socket.cancel(ignored);
      }
    });
  }
}

void Upstream::retire() {
  // A stopped upstream has nothing left to retire, and its loops may be gone (the host drops
  // its last route table after the loops have run dry): post nothing then.
  if (impl_->stopped.load() || impl_->retired.exchange(true)) return;
  for (int i = 0; i < impl_->loops.size(); ++i) {
    asio::post(loop_context(impl_->loops, i), [self = impl_, i] {
      LoopPool& lp = *self->pools[static_cast<std::size_t>(i)];
      for (auto& per_target : lp.idle) per_target.clear();
      if (i == 0) {
        boost::system::error_code ignored;
        if (self->health_timer) self->health_timer->cancel();
        if (self->health_conn) self->health_conn->socket.cancel(ignored);
      }
    });
  }
}

std::vector<TargetStatus> Upstream::status() const {
  std::vector<TargetStatus> out;
  for (const auto& t : impl_->targets) {
    TargetStatus s;
    s.url = t->spec.url;
    s.healthy = t->healthy.load();
    switch (static_cast<Breaker>(t->breaker.load())) {
      case Breaker::closed: s.breaker = "closed"; break;
      case Breaker::open: s.breaker = "open"; break;
      case Breaker::half_open: s.breaker = "half_open"; break;
    }
    s.in_flight = t->in_flight.load();
    s.requests = t->requests.load();
    s.failures = t->failures.load();
    out.push_back(std::move(s));
  }
  return out;
}

void Upstream::forward(ProxyRequest&& request, Responder respond) {
  int index = impl_->loops.current_index();
  auto req = std::make_shared<ProxyRequest>(std::move(request));
  if (req->timeout <= Duration::zero()) req->timeout = impl_->spec.timeout;
  auto self = impl_;
  if (index < 0) {  // off the loops (tests driving the handler): run on loop 0
    auto& ctx = loop_context(impl_->loops, 0);
    asio::post(ctx, [self, req, respond, &ctx]() mutable {
      asio::co_spawn(ctx, self->run(*self->pools[0], std::move(req), std::move(respond)), asio::detached);
    });
    return;
  }
  auto& ctx = loop_context(impl_->loops, index);
  asio::co_spawn(ctx, impl_->run(*impl_->pools[static_cast<std::size_t>(index)], std::move(req), std::move(respond)),
                 asio::detached);
}

// ---------------------------------------------------------------- choosing a target

bool Upstream::Impl::admits(TargetState& t, bool* probe) {
  *probe = false;
  switch (static_cast<Breaker>(t.breaker.load(std::memory_order_relaxed))) {
    case Breaker::closed: return true;
    case Breaker::half_open: return false;  // its probe is under way
    case Breaker::open: {
      if (now_ns() < t.open_until_ns.load(std::memory_order_relaxed)) return false;
      int expected = static_cast<int>(Breaker::open);
      if (!t.breaker.compare_exchange_strong(expected, static_cast<int>(Breaker::half_open))) return false;
      *probe = true;
      return true;
    }
  }
  return false;
}

void Upstream::Impl::record(TargetState& t, bool failed, bool probe) {
  t.requests.fetch_add(1, std::memory_order_relaxed);
  if (!failed) {
    t.failures_in_a_row.store(0, std::memory_order_relaxed);
    if (probe) t.breaker.store(static_cast<int>(Breaker::closed));
    return;
  }
  t.failures.fetch_add(1, std::memory_order_relaxed);
  int in_a_row = t.failures_in_a_row.fetch_add(1, std::memory_order_relaxed) + 1;
  if (spec.breaker_failures <= 0) return;
  auto reopen = [&] {
    t.open_until_ns.store(now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(spec.breaker_open_for).count());
    t.breaker.store(static_cast<int>(Breaker::open));
  };
  if (probe) {
    reopen();
  } else if (in_a_row >= spec.breaker_failures) {
    int expected = static_cast<int>(Breaker::closed);
    if (t.breaker.load() == expected) reopen();
  }
}

int Upstream::Impl::pick(LoopPool& lp, const std::vector<int>& tried, bool* probe) {
  const int n = static_cast<int>(targets.size());
  auto available = [&](int i) {
    return targets[static_cast<std::size_t>(i)]->healthy.load(std::memory_order_relaxed) &&
           std::find(tried.begin(), tried.end(), i) == tried.end();
  };
  const int start = static_cast<int>(lp.next++ % static_cast<std::size_t>(n));
  if (spec.balance == UpstreamSpec::Balance::least_requests) {
    // The fewest requests in flight, from the round-robin cursor so that ties take turns.
    std::vector<int> order;
    for (int k = 0; k < n; ++k)
      if (int i = (start + k) % n; available(i)) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
      return targets[static_cast<std::size_t>(a)]->in_flight.load(std::memory_order_relaxed) <
             targets[static_cast<std::size_t>(b)]->in_flight.load(std::memory_order_relaxed);
    });
    for (int i : order)
      if (admits(*targets[static_cast<std::size_t>(i)], probe)) return i;
    return -1;
  }
  for (int k = 0; k < n; ++k) {
    int i = (start + k) % n;
    if (available(i) && admits(*targets[static_cast<std::size_t>(i)], probe)) return i;
  }
  return -1;
}

bool Upstream::Impl::budget_allows_retry(LoopPool& lp) {
  // Ten a second always (so a quiet upstream still gets its retries), more as a share of the
  // requests: a failing upstream never sees more than (1 + budget) times the load.
  if (lp.window_retries < 10) return true;
  return lp.window_retries < static_cast<int>(spec.retry_budget * lp.window_requests);
}

HttpReply Upstream::Impl::unavailable_reply() const {
  bool any_healthy = false;
  int64_t soonest = INT64_MAX;
  for (const auto& t : targets) {
    if (!t->healthy.load()) continue;
    any_healthy = true;
    soonest = std::min(soonest, t->open_until_ns.load());
  }
  HttpReply r;
  if (!any_healthy) {
    r = json_error(503, "no_healthy_upstream",
                   "upstream '" + spec.name + "' has no healthy target: every one failed its health check", "");
    r.headers.push_back({"retry-after", "1"});
  } else {
    r = json_error(503, "circuit_open",
                   "upstream '" + spec.name + "' is failing: its circuit breaker is open on every target", "");
    int64_t wait_s = std::max<int64_t>(1, (soonest - now_ns() + 999'999'999) / 1'000'000'000);
    r.headers.push_back({"retry-after", std::to_string(wait_s)});
  }
  return r;
}

// ---------------------------------------------------------------- connections

std::shared_ptr<UpConn> Upstream::Impl::take_idle(LoopPool& lp, int target) {
  auto& idle = lp.idle[static_cast<std::size_t>(target)];
  const auto now = std::chrono::steady_clock::now();
  while (!idle.empty()) {
    auto conn = std::move(idle.back());
    idle.pop_back();
    if (now - conn->idle_since > spec.idle_timeout) continue;
    // A connection the upstream closed (or that has stray bytes) reads as ready: drop it
    // rather than find out by losing a request on it.
    char probe;
    ssize_t got = ::recv(conn->socket.native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return conn;
  }
  return nullptr;
}

void Upstream::Impl::put_idle(LoopPool& lp, int target, std::shared_ptr<UpConn> conn) {
  if (stopped.load(std::memory_order_relaxed) || retired.load(std::memory_order_relaxed)) return;
  auto& idle = lp.idle[static_cast<std::size_t>(target)];
  if (static_cast<int>(idle.size()) >= spec.max_idle) {
    if (spec.max_idle == 0) return;
    idle.erase(idle.begin());  // the oldest goes
  }
  conn->idle_since = std::chrono::steady_clock::now();
  idle.push_back(std::move(conn));
}

// Tries the target's addresses in turn, all within one deadline; stop() cancels it too (the
// socket is in `busy` meanwhile, on request paths).
asio::awaitable<Fail> Upstream::Impl::connect(LoopPool* lp, const std::shared_ptr<UpConn>& conn, const TargetState& t,
                                              Duration timeout) {
  auto& ctx = static_cast<asio::io_context&>(conn->socket.get_executor().context());
  Watchdog watchdog(ctx);
  watchdog.arm(conn, timeout);
  if (lp) lp->busy.insert(conn.get());
  struct Unbusy {
    LoopPool* lp;
    UpConn* c;
    ~Unbusy() {
      if (lp) lp->busy.erase(c);
    }
  } unbusy{lp, conn.get()};
  boost::system::error_code ec = asio::error::host_not_found;
  for (const auto& endpoint : t.endpoints) {
    boost::system::error_code ignored;
    conn->socket.close(ignored);
    std::tie(ec) = co_await conn->socket.async_connect(endpoint, kNoThrow);
    if (!ec || watchdog.fired() || stopped.load()) break;
  }
  watchdog.disarm();
  if (watchdog.fired()) co_return Fail::connect_timeout;
  if (stopped.load()) co_return Fail::stopped;
  if (ec) co_return Fail::refused;
  boost::system::error_code ignored;
  conn->socket.set_option(tcp::no_delay(true), ignored);
  co_return Fail::none;
}

// The rest of a large reply, read as the listener sends it on; the connection goes back to
// the pool when the body came whole and it may carry another request.
struct Upstream::Impl::UpstreamBody final : BodySource {
  UpstreamBody(std::shared_ptr<Impl> i, LoopPool& l, std::shared_ptr<UpConn> c, std::unique_ptr<StreamParser> p, Duration t)
      : impl(std::move(i)), lp(l), conn(std::move(c)), parser(std::move(p)), timeout(t) {}  // in `busy` still
  ~UpstreamBody() override {
    if (!finished) lp.busy.erase(conn.get());
  }
  asio::awaitable<std::pair<boost::system::error_code, std::size_t>> read(asio::mutable_buffer into) override {
    if (parser->is_done()) {
      finish();
      co_return std::pair{boost::system::error_code(), std::size_t{0}};
    }
    auto& ctx = static_cast<asio::io_context&>(conn->socket.get_executor().context());
    Watchdog watchdog(ctx);
    watchdog.arm(conn, timeout);  // each piece must come within the timeout
    // What has come, as soon as some has (a chunk's head alone gives no bytes: read on).
    std::size_t got = 0;
    while (got == 0 && !parser->is_done()) {
      parser->get().body().data = into.data();
      parser->get().body().size = into.size();
      auto [ec, n] = co_await http::async_read_some(conn->socket, conn->buffer, *parser, kNoThrow);
      got = into.size() - parser->get().body().size;
      if (ec == http::error::need_buffer) ec = {};
      if (ec) co_return std::pair{watchdog.fired() ? boost::system::error_code(asio::error::timed_out) : ec, got};
    }
    watchdog.disarm();
    if (got == 0 && parser->is_done()) finish();
    co_return std::pair{boost::system::error_code(), got};
  }
  void cancel() override {
    boost::system::error_code ignored;
    conn->socket.cancel(ignored);
  }
  void finish() {
    if (finished) return;
    finished = true;
    lp.busy.erase(conn.get());
    const auto& res = parser->get();
    if (res.keep_alive() && !res.need_eof() && conn->buffer.size() == 0) {
      for (std::size_t i = 0; i < impl->targets.size(); ++i) {
        if (impl->targets[i].get() == target) impl->put_idle(lp, static_cast<int>(i), conn);
      }
    }
  }
  std::shared_ptr<Impl> impl;
  LoopPool& lp;
  std::shared_ptr<UpConn> conn;
  std::unique_ptr<StreamParser> parser;
  Duration timeout;
  const TargetState* target = nullptr;
  bool finished = false;
};

asio::awaitable<Attempt> Upstream::Impl::exchange(LoopPool& lp, const std::shared_ptr<UpConn>& conn,
                                                  const TargetState& t, const ProxyRequest& req) {
  Attempt a;
  auto& ctx = static_cast<asio::io_context&>(conn->socket.get_executor().context());
  std::string& head = conn->head;
  head.clear();
  head += req.method;
  head += ' ';
  head += t.spec.base_path;
  head += req.target;
  head += " HTTP/1.1\r\nHost: ";
  head += req.host.empty() ? t.host_header : req.host;
  head += "\r\n";
  head += req.header_block;
  if (!req.upgrade.empty()) {
    head += "Connection: Upgrade\r\nUpgrade: ";
    head += req.upgrade;
    head += "\r\n";
  }
  const bool chunked = req.body_stream && !req.body_stream->length;
  if (chunked) {
    head += "Transfer-Encoding: chunked\r\n";
  } else if (req.body_stream || !req.body.empty() || body_expected(req.method)) {
    char len[24];
    auto [end, ec] = std::to_chars(len, len + sizeof len, req.body_stream ? *req.body_stream->length : req.body.size());
    head += "Content-Length: ";
    head.append(len, end);
    head += "\r\n";
  }
  head += "\r\n";

  Watchdog watchdog(ctx);
  watchdog.arm(conn, req.timeout);
  boost::system::error_code early_error;  // the upstream stopped taking a streamed body
  lp.busy.insert(conn.get());
  struct Unbusy {
    LoopPool& lp;
    UpConn* c;
    bool handed_off = false;  // a streamed body keeps it in `busy` until its end
    ~Unbusy() {
      if (!handed_off) lp.busy.erase(c);
    }
  } unbusy{lp, conn.get()};

  std::array<asio::const_buffer, 2> wire = {asio::buffer(head), asio::buffer(req.body)};
  auto [wec, written] = co_await asio::async_write(conn->socket, wire, kNoThrow);
  if (!wec && req.body_stream) {
    // The client's body, piece by piece as it comes: each piece within the timeout. An
    // upstream that stops taking it (it answered early, or went away) ends the sending; its
    // reply, if one came, is still read below.
    a.body_started = true;
    std::unique_ptr<char[]> piece(new char[kPiece + 32]);
    uint64_t sent = 0;
    while (true) {
      char* data = piece.get() + 16;  // room for a chunk's size line before the data
      watchdog.disarm();  // the client's pace is the listener's to bound (read_timeout a piece)
      auto [rec, n] = co_await req.body_stream->read(asio::mutable_buffer(data, kPiece));
      if (rec) {
        a.fail = Fail::client_body;
        a.client_error = rec;
        a.detail = rec.message();
        co_return a;
      }
      sent += n;
      if (!chunked && n == 0 && sent != *req.body_stream->length) {
        a.fail = Fail::client_body;
        a.client_error = http::error::partial_message;
        a.detail = "the body ended before its Content-Length";
        co_return a;
      }
      std::array<asio::const_buffer, 2> out;
      if (chunked) {
        char size_line[16];
        int len = n == 0 ? std::snprintf(size_line, sizeof size_line, "0\r\n\r\n")
                         : std::snprintf(size_line, sizeof size_line, "%zx\r\n", n);
        std::memcpy(data - len, size_line, static_cast<std::size_t>(len));
        if (n > 0) std::memcpy(data + n, "\r\n", 2);
        out = {asio::const_buffer(data - len, static_cast<std::size_t>(len) + (n > 0 ? n + 2 : 0)), asio::const_buffer()};
      } else {
        out = {asio::const_buffer(data, n), asio::const_buffer()};
      }
      if (out[0].size() > 0) {
        watchdog.arm(conn, req.timeout);  // each piece goes within the timeout
        std::tie(wec, written) = co_await asio::async_write(conn->socket, out, kNoThrow);
        if (wec) break;
      }
      if (n == 0) break;
    }
    const bool write_timed_out = wec && watchdog.fired();  // before the arm below starts afresh
    watchdog.arm(conn, req.timeout);  // now the reply, within the timeout
    if (wec) {
      // It stopped reading: perhaps it said why first. Its reply, if there is one, is the
      // answer; if not, the write's failure is.
      if (write_timed_out || stopped.load()) {
        a.fail = write_timed_out ? Fail::timeout : Fail::stopped;
        a.detail = wec.message();
        co_return a;
      }
      early_error = wec;
    }
  } else if (wec) {
    a.fail = watchdog.fired() ? Fail::timeout : stopped.load() ? Fail::stopped : Fail::reset;
    a.stale = !watchdog.fired();
    a.detail = wec.message();
    co_return a;
  }
  std::unique_ptr<StreamParser> parser;
  auto failed = [&](boost::system::error_code rec) {
    a.detail = rec.message();
    if (watchdog.fired()) {
      a.fail = Fail::timeout;
    } else if (stopped.load()) {
      a.fail = Fail::stopped;
    } else if (rec == http::error::body_limit) {
      a.fail = Fail::too_large;
    } else if (rec == http::error::end_of_stream || rec == http::error::partial_message || rec == asio::error::eof ||
               rec == asio::error::connection_reset || rec == asio::error::broken_pipe) {
      a.fail = Fail::reset;
      a.stale = !parser->got_some();
    } else {
      a.fail = Fail::bad_response;
    }
  };
  while (true) {
    parser = std::make_unique<StreamParser>();
    parser->header_limit(64 * 1024);
    parser->body_limit(spec.max_response);
    if (req.method == "HEAD") parser->skip(true);
    auto [rec, n] = co_await http::async_read_header(conn->socket, conn->buffer, *parser, kNoThrow);
    if (rec) {
      failed(early_error ? early_error : rec);
      if (early_error) a.stale = false;
      co_return a;
    }
    const int status = parser->get().result_int();
    if (status >= 100 && status < 200 && status != 101) continue;  // interim replies: read on
    break;
  }
  const auto length = parser->content_length();
  if (!parser->is_done() && length && *length > spec.max_response) {  // a HEAD's or 304's length is no body
    a.fail = Fail::too_large;
    a.detail = "Content-Length " + std::to_string(*length);
    co_return a;
  }
  std::string body;
  if (!parser->is_done() && length && *length <= kHeldWhole) {
    body.resize(*length);
    parser->get().body().data = body.data();
    parser->get().body().size = body.size();
    auto [rec, n] = co_await http::async_read(conn->socket, conn->buffer, *parser, kNoThrow);
    if (rec == http::error::need_buffer) rec = {};
    if (rec) {
      failed(rec);
      co_return a;
    }
    body.resize(body.size() - parser->get().body().size);
  } else if (!parser->is_done() && !length) {
    // Chunked or ended by the close: what has come by now decides (no waiting, so a stream of
    // events starts at once). The head's read took a first slice of the socket: take the rest
    // that is there (it does not block).
    boost::system::error_code aec;
    if (std::size_t there = conn->socket.available(aec); !aec && there > 0) {
      const std::size_t got = conn->socket.read_some(conn->buffer.prepare(std::min(there, kHeldWhole)), aec);
      if (!aec) conn->buffer.commit(got);
    }
    body.resize(conn->buffer.size());
    parser->get().body().data = body.data();
    parser->get().body().size = body.size();
    boost::system::error_code pec;
    while (conn->buffer.size() > 0 && !parser->is_done() && !pec) {
      const std::size_t used = parser->put(conn->buffer.data(), pec);
      conn->buffer.consume(used);
      if (pec == http::error::need_more || pec == http::error::need_buffer) pec = {};
      if (used == 0) break;
    }
    body.resize(body.size() - parser->get().body().size);
      if (pec) {
      failed(pec);
      co_return a;
    }
  }
  watchdog.disarm();
  auto& res = parser->get();
  a.reply.status = res.result_int();
  if (a.reply.status == 101 && req.upgrade.empty()) {
    a.fail = Fail::bad_response;
    a.detail = "the upstream switched protocols unasked";
    co_return a;
  }
  // Headers the Connection header names are this hop's too.
  std::vector<std::string> connection_tokens;
  if (auto c = res.find(http::field::connection); c != res.end()) {
    std::string_view rest = c->value();
    while (!rest.empty()) {
      auto comma = rest.find(',');
      std::string token(rest.substr(0, comma));
      std::erase_if(token, [](char ch) { return ch == ' ' || ch == '\t'; });
      for (auto& ch : token) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (!token.empty()) connection_tokens.push_back(std::move(token));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
  }
  a.reply.headers.reserve(8);
  for (const auto& f : res) {
    std::string name(f.name_string());
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    if (is_hop_by_hop(name) || name == "content-length") continue;
    if (std::find(connection_tokens.begin(), connection_tokens.end(), name) != connection_tokens.end()) continue;
    a.reply.headers.push_back({std::move(name), std::string(f.value())});
  }
  if (!parser->is_done()) {
    unbusy.handed_off = true;
    auto source = std::make_shared<UpstreamBody>(shared_from_this(), lp, conn, std::move(parser), req.timeout);
    source->first = std::move(body);
    if (auto length = source->parser->content_length()) source->length = *length;
    source->target = &t;
    a.reply.stream = std::move(source);
    co_return a;  // not kept alive here: the body's end gives the connection back
  }
  a.reply.body = std::move(body);
  if (req.method == "HEAD") {
    a.reply.head_length = HttpReply::kNoLength;  // the upstream gave none (a chunked GET): none is said
    if (auto it = res.find(http::field::content_length); it != res.end()) {
      uint64_t n = 0;
      if (std::from_chars(it->value().data(), it->value().data() + it->value().size(), n).ec == std::errc()) a.reply.head_length = n;
    }
  }
  if (a.reply.status == 101) {
    // The connection is the client's now: the listener takes the socket, with what the
    // upstream already sent past its head.
    std::string pending(static_cast<const char*>(conn->buffer.data().data()), conn->buffer.size());
    std::string protocol(res[http::field::upgrade]);
    if (protocol.empty()) protocol = req.upgrade;
    bool asked = false;  // RFC 9110 7.8: only to one of the protocols the client listed
    for (std::string_view offered = req.upgrade; !offered.empty();) {
      const auto comma = offered.find(',');
      std::string_view one = offered.substr(0, comma);
      while (!one.empty() && (one.front() == ' ' || one.front() == '\t')) one.remove_prefix(1);
      while (!one.empty() && (one.back() == ' ' || one.back() == '\t')) one.remove_suffix(1);
      asked = asked || beast::iequals(one, protocol);
      if (comma == std::string_view::npos) break;
      offered.remove_prefix(comma + 1);
    }
    if (!asked) {
      a.fail = Fail::bad_response;
      a.detail = "the upstream switched to '" + protocol + "', not to '" + req.upgrade + "'";
      co_return a;
    }
    boost::system::error_code ec;
    const int fd = conn->socket.release(ec);
    if (ec) {
      a.fail = Fail::reset;
      a.detail = ec.message();
      co_return a;
    }
    a.reply.upgrade = std::make_shared<UpgradedStream>(fd, std::move(pending), std::move(protocol), spec.websocket_idle);
    co_return a;
  }
  // Reusable when the upstream keeps it open and nothing unasked-for follows the reply.
  a.keep_alive = res.keep_alive() && !res.need_eof() && conn->buffer.size() == 0 && !early_error;
  co_return a;
}


asio::awaitable<Attempt> Upstream::Impl::attempt(LoopPool& lp, int target, const ProxyRequest& req, bool may_replay) {
  TargetState& t = *targets[static_cast<std::size_t>(target)];
  auto conn = req.upgrade.empty() ? take_idle(lp, target) : nullptr;  // an upgrade takes its connection away
  for (int round = 0; round < 2; ++round) {
    const bool reused = conn != nullptr;
    if (!conn) {
      auto& loop_ctx = static_cast<asio::io_context&>((co_await asio::this_coro::executor).context());
      conn = std::make_shared<UpConn>(loop_ctx);
      Fail f = co_await connect(&lp, conn, t, spec.connect_timeout);
      if (f != Fail::none) {
        Attempt a;
        a.fail = f;
        a.detail = f == Fail::connect_timeout ? "connect timed out" : "connection refused or unreachable";
        co_return a;
      }
    }
    Attempt a = co_await exchange(lp, conn, t, req);
    if (a.fail == Fail::none) {
      if (a.keep_alive) put_idle(lp, target, std::move(conn));
      co_return a;
    }
    // A keep-alive connection the upstream had closed: once more on a fresh one, when
    // nothing of the reply came and the request may be sent again.
    if (reused && a.stale && (may_replay || (req.body_stream && !a.body_started))) {
      conn.reset();
      continue;
    }
    co_return a;
  }
  Attempt a;
  a.fail = Fail::reset;
  a.detail = "the connection closed";
  co_return a;
}

// ---------------------------------------------------------------- one request

asio::awaitable<void> Upstream::Impl::run(LoopPool& lp, std::shared_ptr<ProxyRequest> req, Responder respond) {
  auto self = shared_from_this();
  if (stopped.load()) {
    HttpReply r = json_error(503, "draining", "the gateway is shutting down", "");
    r.headers.push_back({"retry-after", "1"});
    respond(std::move(r));
    co_return;
  }
  const int64_t now = now_ns();
  if (now - lp.window_start_ns > 1'000'000'000) {
    lp.window_start_ns = now;
    lp.window_requests = 0;
    lp.window_retries = 0;
  }
  ++lp.window_requests;
  const bool may_replay = idempotent(req->method) && !req->body_stream;  // a streamed body goes once
  std::vector<int> tried;
  Attempt last;
  int last_target = -1;
  for (int attempt_no = 0;; ++attempt_no) {
    bool probe = false;
    int target = pick(lp, tried, &probe);
    if (target < 0) {
      if (last_target >= 0) break;  // retries ran out of targets: report the last failure
      respond(unavailable_reply());
      co_return;
    }
    TargetState& t = *targets[static_cast<std::size_t>(target)];
    t.in_flight.fetch_add(1, std::memory_order_relaxed);
    last = co_await attempt(lp, target, *req, may_replay);
    t.in_flight.fetch_sub(1, std::memory_order_relaxed);
    last_target = target;
    record(t, counts_against_target(last), probe);
    if (last.fail == Fail::none) break;
    if (last.fail == Fail::stopped) break;
    const bool nothing_sent = last.fail == Fail::refused || last.fail == Fail::connect_timeout;
    const bool retryable = nothing_sent || (may_replay && (last.fail == Fail::reset || last.fail == Fail::bad_response));
    if (!retryable || attempt_no >= spec.retries || !budget_allows_retry(lp)) break;
    ++lp.window_retries;
    tried.push_back(target);
    if (tried.size() >= targets.size()) tried.clear();  // one target: try it again
  }
  const std::string& url = targets[static_cast<std::size_t>(last_target)]->spec.url;
  switch (last.fail) {
    case Fail::none: {
      if (req->response_edits) {
        auto& hs = last.reply.headers;
        for (const auto& name : req->response_edits->remove) {
          std::erase_if(hs, [&](const Header& h) { return h.name == name; });
        }
        for (const auto& h : req->response_edits->set) {
          std::erase_if(hs, [&](const Header& x) { return x.name == h.name; });
          hs.push_back(h);
        }
      }
      for (auto& h : req->reply_headers) {
        std::erase_if(last.reply.headers, [&](const Header& x) { return x.name == h.name; });
        last.reply.headers.push_back(std::move(h));
      }
      respond(std::move(last.reply));
      break;
    }
    case Fail::refused:
      respond(json_error(502, "upstream_unreachable", "upstream '" + spec.name + "' (" + url + ") refused the connection", ""));
      break;
    case Fail::connect_timeout:
      respond(json_error(504, "upstream_connect_timeout",
                         "upstream '" + spec.name + "' (" + url + ") did not accept a connection in time", ""));
      break;
    case Fail::timeout:
      respond(json_error(504, "upstream_timeout", "upstream '" + spec.name + "' (" + url + ") did not reply in time", ""));
      break;
    case Fail::reset:
      respond(json_error(502, "upstream_reset",
                         "upstream '" + spec.name + "' (" + url + ") closed the connection before replying whole: " + last.detail, ""));
      break;
    case Fail::client_body:
      // Not the upstream's doing: the client's body did not come whole.
      if (last.client_error == http::error::body_limit) {
        respond(json_error(413, "payload_too_large", "the request body is over this route's limit", ""));
      } else if (last.client_error == asio::error::timed_out) {
        respond(json_error(408, "request_timeout", "the request body did not arrive whole in time", ""));
      } else {
        respond(json_error(400, "bad_request", "the request body could not be read whole: " + last.detail, ""));
      }
      break;
    case Fail::bad_response:
      respond(json_error(502, "upstream_bad_response",
                         "upstream '" + spec.name + "' (" + url + ") sent a malformed HTTP reply: " + last.detail, ""));
      break;
    case Fail::too_large:
      respond(json_error(502, "upstream_response_too_large",
                         "upstream '" + spec.name + "' (" + url + ") sent a reply over the limit of " +
                             std::to_string(spec.max_response) + " bytes",
                         ""));
      break;
    case Fail::stopped: {
      HttpReply r = json_error(503, "draining", "the gateway is shutting down", "");
      r.headers.push_back({"retry-after", "1"});
      respond(std::move(r));
      break;
    }
  }
}

// ---------------------------------------------------------------- health checks

asio::awaitable<bool> Upstream::Impl::health_check(TargetState& t) {
  auto& ctx = loop_context(loops, 0);
  health_conn = std::make_shared<UpConn>(ctx);
  auto conn = health_conn;
  struct Clear {
    Impl& impl;
    ~Clear() { impl.health_conn.reset(); }
  } clear{*this};
  if (co_await connect(nullptr, conn, t, spec.health_timeout) != Fail::none) co_return false;
  Watchdog watchdog(ctx);
  watchdog.arm(conn, spec.health_timeout);
  std::string request = "GET " + t.spec.base_path + spec.health_path + " HTTP/1.1\r\nHost: " + t.host_header +
                        "\r\nUser-Agent: nimbus-health-check\r\nConnection: close\r\n\r\n";
  auto [wec, w] = co_await asio::async_write(conn->socket, asio::buffer(request), kNoThrow);
  if (wec) co_return false;
  http::response_parser<http::string_body> parser;
  parser.body_limit(1 << 20);
  auto [rec, r] = co_await http::async_read(conn->socket, conn->buffer, parser, kNoThrow);
  if (rec) co_return false;
  int status = parser.get().result_int();
  co_return status >= 200 && status < 400;
}

asio::awaitable<void> Upstream::Impl::health_loop() {
  auto self = shared_from_this();
  while (!stopped.load() && !retired.load()) {
    for (auto& t : targets) {
      if (stopped.load() || retired.load()) co_return;
      bool ok = co_await health_check(*t);
      if (ok) {
        t->health_bad = 0;
        if (++t->health_ok >= spec.health_healthy) t->healthy.store(true);
      } else {
        t->health_ok = 0;
        if (++t->health_bad >= spec.health_unhealthy) t->healthy.store(false);
      }
    }
    if (stopped.load() || retired.load()) co_return;
    health_timer->expires_after(spec.health_interval);
    co_await health_timer->async_wait(kNoThrow);
  }
}

}  // namespace nimbus
