// libFuzzer target for HTTP requests as a client sends them: the input is the raw bytes of one
// connection, written into one end of a socketpair whose other end the real HTTP server
// (triggers/http/server.h: Boost.Beast's parser, the connection loop, its limits) serves with
// the real HTTP trigger as its handler (routing, function keys, query strings, async routes
// and uploads into the real SQLite store). The functions are an in-process echo. No network.
// Invariants: the server answers with well-formed responses (a status line, token-named
// headers, Content-Length framing) and then closes, within seconds; the handler never throws
// (that would be a 500 "internal").
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include "fuzz/fuzz_input.h"
#include "fuzz/fuzz_store.h"
#include "manifest/manifest.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "pool/function_pools.h"
#include "pool/worker_threads.h"
#include "triggers/http/http_trigger.h"
#include "triggers/http/server.h"

namespace nimbus::fuzz {
namespace {

constexpr std::string_view kManifest = R"(name: fuzz
http: {max_body: 4KiB, max_header: 2KiB}
functions:
  hello:
    runtime: native
    handler: functions/hello
    blocking: false
    triggers:
      - http: {route: /hello, methods: [GET]}
      - http: {route: "/orders/{id}/items/{item}", methods: [GET, POST, DELETE]}
      - http: {route: "/files/{*path}"}
  keyed:
    runtime: native
    handler: functions/keyed
    blocking: false
    triggers:
      - http: {route: "/keyed/{id}", auth: function}
  slow:
    runtime: native
    handler: functions/slow
    triggers:
      - http: {route: "/jobs/{id}", methods: [POST], async: true}
      - http: {route: "/up/{*name}", methods: [PUT, POST], upload: {container: uploads}}
      - http: {route: /blocking}
)";

// Answers with what it was asked: the request's headers come back as reply headers (the
// server must drop those that could split or re-frame the response).
class Echo final : public Executor {
 public:
  Mode mode() const override { return Mode::synchronous; }
  Result call(const Invocation& inv) override {
    Result r;
    HttpReply& reply = r.http.emplace();
    reply.status = 200;
    reply.body = "echo " + (inv.http ? inv.http->method + " " + inv.http->path : std::string());
    if (inv.http) {
      for (const auto& p : inv.http->params) reply.body += " " + p.name + "=" + p.value;
      reply.headers = inv.http->headers;
    }
    reply.body += " " + inv.payload;
    return r;
  }
};

struct Host {
  SystemClock clock;
  AppSpec app;
  std::unique_ptr<Metrics> metrics;
  TimerQueue timers;
  WorkerThreads workers{2};
  FunctionPools pools;
  std::unique_ptr<LogSink> sink;
  std::unique_ptr<Logger> logger;
  EventLoops loops{1};
  std::unique_ptr<HttpTrigger> trigger;
  std::unique_ptr<HttpServer> server;
  ListenOptions options;

  Host() {
    auto load = parse_manifest(kManifest, "nimbus.yaml", "/nonexistent", [](std::string_view) { return std::nullopt; });
    if (!load.app) {
      std::fprintf(stderr, "fuzz: the HTTP target's manifest: %s\n", load.report().c_str());
      std::abort();
    }
    app = std::move(*load.app);
    std::vector<std::string> names;
    for (const auto& fn : app.functions) names.push_back(fn.name);
    metrics = std::make_unique<Metrics>(names);
    for (std::size_t i = 0; i < app.functions.size(); ++i) {
      pools.add(std::make_unique<FunctionPool>(app.functions[i], static_cast<int>(i), std::make_unique<Echo>(),
                                               PoolContext{clock, Timers(timers, nullptr), workers, *metrics}));
    }
    sink = std::make_unique<LogSink>(::open("/dev/null", O_WRONLY | O_CLOEXEC));
    logger = std::make_unique<Logger>(*sink, clock, "fuzz", LogLevel::error);
    Store& store = fuzz_store();
    auto keys = FunctionKeys::load_or_create(store_dir() / "keys.json", app);
    if (!keys) std::abort();
    HttpTriggerOptions to;
    to.store = &store;
    trigger = std::make_unique<HttpTrigger>(app, pools, std::move(*keys), loops, *logger, *metrics, clock, to);
    server = std::make_unique<HttpServer>(loops, static_cast<RequestHandler&>(*trigger));
    options.limits = app.http;
    options.metrics = metrics.get();
    loops.start();
  }
  ~Host() {
    server->close();
    trigger->close();
    loops.drain();
    std::error_code ec;
    std::filesystem::remove_all(store_dir(), ec);
  }
  static std::filesystem::path store_dir();
};

std::filesystem::path Host::store_dir() {
  static const std::filesystem::path dir = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "nimbus-http-fuzz-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) std::abort();
    return std::filesystem::path(tmpl);
  }();
  return dir;
}

Host& host() {
  static Host h;
  return h;
}

// Writes `request` into `fd` while reading what comes back, until the server closes.
std::string exchange(int fd, std::string_view request, bool* timed_out) {
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  std::string out;
  std::size_t sent = 0;
  bool write_open = true;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (true) {
    if (write_open && sent == request.size()) {
      ::shutdown(fd, SHUT_WR);
      write_open = false;
    }
    pollfd p{fd, static_cast<short>(POLLIN | (write_open ? POLLOUT : 0)), 0};
    if (std::chrono::steady_clock::now() > give_up) {
      *timed_out = true;
      return out;
    }
    if (::poll(&p, 1, 100) <= 0) continue;
    if (p.revents & POLLOUT) {
      ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
      if (n > 0) sent += static_cast<std::size_t>(n);
      else if (n < 0 && errno != EAGAIN) write_open = false;  // the server closed: it read enough
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[16384];
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n > 0) out.append(buf, static_cast<std::size_t>(n));
      else if (n == 0 || errno != EAGAIN) return out;
    }
  }
}

bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (c <= 32 || c >= 127 || std::string_view("()<>@,;:\\\"/[]?={}").find(static_cast<char>(c)) != std::string_view::npos) {
      return false;
    }
  }
  return true;
}

// Checks that `out` is a sequence of whole responses.
std::string check_responses(std::string_view out) {
  int count = 0;
  while (!out.empty()) {
    ++count;
    const std::string which = "response " + std::to_string(count);
    FUZZ_EXPECT(out.substr(0, 9) == "HTTP/1.1 " || out.substr(0, 9) == "HTTP/1.0 ", which + " has no status line");
    auto end = out.find("\r\n\r\n");
    FUZZ_EXPECT(end != std::string_view::npos, which + " has no end of head");
    std::string_view head = out.substr(0, end + 2);
    out.remove_prefix(end + 4);
    const int status = std::atoi(std::string(head.substr(9, 3)).c_str());
    FUZZ_EXPECT(status >= 100 && status <= 599, which + " has status " + std::to_string(status));
    head.remove_prefix(head.find("\r\n") + 2);
    std::optional<std::size_t> length;
    while (!head.empty()) {
      auto eol = head.find("\r\n");
      std::string_view line = head.substr(0, eol);
      head.remove_prefix(eol + 2);
      auto colon = line.find(": ");
      FUZZ_EXPECT(colon != std::string_view::npos && is_token(line.substr(0, colon)),
                  which + " has header line " + shown(line));
      std::string name(line.substr(0, colon));
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (name == "content-length") {
        FUZZ_EXPECT(!length, which + " has two Content-Length headers");
        length = std::strtoull(std::string(line.substr(colon + 2)).c_str(), nullptr, 10);
      }
      FUZZ_EXPECT(name != "transfer-encoding", which + " has Transfer-Encoding");
    }
    FUZZ_EXPECT(length.has_value() == (status >= 200 && status != 204 && status != 304),
                which + " has Content-Length on a status without a body, or none with one");
    // A reply to HEAD has the length of the body it does not send: the next response follows.
    // (No body here starts with "HTTP/1.": the echo's start with "echo ", the host's with '{'.)
    const bool reply_to_head = length && *length > 0 && (out.empty() || out.substr(0, 7) == "HTTP/1.");
    if (length && !reply_to_head) {
      FUZZ_EXPECT(out.size() >= *length, which + " is cut short");
      std::string_view body = out.substr(0, *length);
      FUZZ_EXPECT(!(status == 500 && body.find("\"internal\"") != std::string_view::npos),
                  which + " says the handler threw: " + shown(body));
      out.remove_prefix(*length);
    }
  }
  return "";
}

}  // namespace

std::string check_http_input(std::string_view bytes) {
  Host& h = host();
  int fds[2];
  FUZZ_EXPECT(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0, "socketpair");
  auto served = h.server->serve_connected(fds[0], h.options);
  FUZZ_EXPECT(served.ok(), "serve_connected: " + served.error().message);
  bool timed_out = false;
  const std::string out = exchange(fds[1], bytes, &timed_out);
  ::close(fds[1]);
  FUZZ_EXPECT(!timed_out, "the server neither answered nor closed within 10 s");
  return check_responses(out);
}

}  // namespace nimbus::fuzz

NIMBUS_FUZZ_TARGET(nimbus::fuzz::check_http_input, 1u << 14)
