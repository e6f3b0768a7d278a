#include "observe/trace.h"

#include <fcntl.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <bit>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <span>

#include "core/thread_role.h"
#include "core/gzip.h"
#include "core/ids.h"
#include "core/text.h"
#include "observe/log.h"

namespace nimbus {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

// What goes before the spans in a request of `protocol`: the encoded Resource (protobuf), or
// the JSON up to the spans' list.
std::string resource_of(OtlpProtocol protocol, std::string_view service, std::string_view service_version);

// `attributes` as a span's Span::preset_attributes in `protocol`: whole KeyValue fields
// (protobuf), or the JSON objects with commas between them; text that is not UTF-8 is fixed.
std::string encoded_attributes(OtlpProtocol protocol,
                               const std::vector<std::pair<std::string_view, Span::Value>>& attributes);

// A hex digit's value, -1 for a byte that is none.
constexpr std::array<int8_t, 256> kHexDigits = [] {
  std::array<int8_t, 256> t{};
  for (auto& v : t) v = -1;
  for (int i = 0; i < 10; ++i) t['0' + i] = static_cast<int8_t>(i);
  for (int i = 0; i < 6; ++i) t['a' + i] = t['A' + i] = static_cast<int8_t>(10 + i);
  return t;
}();

}  // namespace

TraceIdText& TraceIdText::operator=(std::string_view hex) {
  size_ = hex.size() == digits_.size() ? static_cast<uint8_t>(hex.size()) : 0;
  bytes_.fill(0);
  if (size_ == 0) return *this;
  std::copy(hex.begin(), hex.end(), digits_.begin());
  int bad = 0;  // a negative digit leaves its sign bit: no branch per digit
  for (std::size_t i = 0; i < bytes_.size(); ++i) {
    const int high = kHexDigits[static_cast<unsigned char>(hex[2 * i])];
    const int low = kHexDigits[static_cast<unsigned char>(hex[2 * i + 1])];
    bad |= high | low;
    bytes_[i] = static_cast<uint8_t>(((high & 0xf) << 4) | (low & 0xf));
  }
  if (bad < 0) bytes_.fill(0);
  return *this;
}

TraceIdText::TraceIdText(std::string_view hex, uint64_t high, uint64_t low) {
  if (hex.size() != digits_.size()) return;
  size_ = static_cast<uint8_t>(hex.size());
  std::copy(hex.begin(), hex.end(), digits_.begin());
  for (int i = 0; i < 8; ++i) {
    bytes_[static_cast<std::size_t>(i)] = static_cast<uint8_t>(high >> (56 - 8 * i));
    bytes_[static_cast<std::size_t>(8 + i)] = static_cast<uint8_t>(low >> (56 - 8 * i));
  }
}

TraceContext trace_context_of(std::string_view traceparent) {
  TraceContext c;
  if (const auto p = parse_traceparent(traceparent)) {
    c.trace_id = TraceIdText(p->trace_id, p->trace_high, p->trace_low);
    c.span_id = p->span_id;
  }
  return c;
}

namespace {

std::string hex16(uint64_t v) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) out[static_cast<std::size_t>(i)] = kHex[v & 15];
  return out;
}

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}

// "k=v,k2=v2" (values may be %-encoded, as the OpenTelemetry spec has it).
Expected<Headers> parse_headers(std::string_view text, const char* variable) {
  Headers out;
  std::size_t at = 0;
  while (at <= text.size()) {
    std::size_t end = text.find(',', at);
    if (end == std::string_view::npos) end = text.size();
    std::string_view item = text.substr(at, end - at);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) {
      const std::size_t eq = item.find('=');
      if (eq == std::string_view::npos || eq == 0) {
        return Error{std::string(variable) + ": '" + std::string(item) + "' is not name=value"};
      }
      std::string value;
      for (std::size_t i = eq + 1; i < item.size(); ++i) {
        if (item[i] == '%' && i + 2 < item.size()) {
          int byte = 0;
          auto [p, ec] = std::from_chars(item.data() + i + 1, item.data() + i + 3, byte, 16);
          if (ec == std::errc() && p == item.data() + i + 3) {
            value += static_cast<char>(byte);
            i += 2;
            continue;
          }
        }
        value += item[i];
      }
      out.push_back({std::string(item.substr(0, eq)), std::move(value)});
    }
    at = end + 1;
  }
  return out;
}

}  // namespace

Status TraceSettings::read_environment() {
  const bool endpoint_from_environment = endpoint.empty();
  if (endpoint.empty()) {
    if (const char* v = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) {
      endpoint = v;
    } else if (const char* base = env("OTEL_EXPORTER_OTLP_ENDPOINT")) {
      endpoint = base;
      if (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
      endpoint += "/v1/traces";
    }
  }
  if (endpoint.empty()) return ok_status();  // tracing is off: nothing else is read
  // The environment's headers (credentials, often) go only to the environment's collector.
  if (headers.empty() && endpoint_from_environment) {
    for (const char* name : {"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"}) {
      if (const char* v = env(name)) {
        auto h = parse_headers(v, name);
        if (!h) return h.error();
        for (auto& x : *h) headers.push_back(std::move(x));
      }
    }
  }
  // What goes into the request's head as it is: a name that is not an HTTP token, or a value
  // with a line break or another control character (a %0D%0A decoded), would write headers of
  // its own, or a request the collector cannot read.
  for (const auto& h : headers) {
    const bool token = !h.name.empty() && std::all_of(h.name.begin(), h.name.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    });
    if (!token) return Error{"the OTLP header name '" + h.name + "' is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)"};
    const bool clean = std::none_of(h.value.begin(), h.value.end(), [](char c) {
      const auto b = static_cast<unsigned char>(c);
      return (b < 0x20 && b != '\t') || b == 0x7f;
    });
    if (!clean) return Error{"the OTLP header '" + h.name + "' has a control character (a line break?) in its value"};
    // What frames the request is the exporter's: two lengths would make it ambiguous.
    for (const char* own : {"content-length", "transfer-encoding", "connection", "content-encoding"}) {
      if (beast::iequals(h.name, own)) {
        return Error{"the OTLP header '" + h.name + "' is the exporter's own to set (compression: gzip sets Content-Encoding)"};
      }
    }
  }
  if (!sample) {
    // Unset: the default (parent-based, always on), or the ratio when only its argument is set.
    std::string sampler = env("OTEL_TRACES_SAMPLER")            ? env("OTEL_TRACES_SAMPLER")
                          : env("OTEL_TRACES_SAMPLER_ARG") ? "parentbased_traceidratio"
                                                                 : "parentbased_always_on";
    if (sampler.rfind("parentbased_", 0) == 0) sampler = sampler.substr(12);
    if (sampler == "always_on") {
      sample = 1.0;
    } else if (sampler == "always_off") {
      sample = 0.0;
    } else if (sampler == "traceidratio") {
      sample = 1.0;  // the default argument
      if (const char* v = env("OTEL_TRACES_SAMPLER_ARG")) {
        char* end = nullptr;
        const double r = std::strtod(v, &end);
        if (*end != '\0' || !std::isfinite(r) || r < 0 || r > 1) {
          return Error{"OTEL_TRACES_SAMPLER_ARG: '" + std::string(v) + "' is not a ratio between 0 and 1"};
        }
        sample = r;
      }
    } else {
      return Error{"OTEL_TRACES_SAMPLER: '" + std::string(env("OTEL_TRACES_SAMPLER")) +
                   "' is not a sampler Nimbus has; use parentbased_always_on, parentbased_always_off or "
                   "parentbased_traceidratio (with OTEL_TRACES_SAMPLER_ARG)"};
    }
  }
  // The signal's own variable wins over the general one (OTEL_EXPORTER_OTLP_TRACES_X, then _X).
  auto variable = [](const char* suffix) -> std::pair<std::string, const char*> {
    for (const std::string prefix : {"OTEL_EXPORTER_OTLP_TRACES_", "OTEL_EXPORTER_OTLP_"}) {
      const std::string name = prefix + suffix;
      if (const char* v = env(name.c_str())) return {name, v};
    }
    return {"", nullptr};
  };
  if (!protocol) {
    protocol = OtlpProtocol::protobuf;
    if (auto [name, v] = variable("PROTOCOL"); v) {
      const std::string_view p(v);
      if (p == "http/json") {
        protocol = OtlpProtocol::json;
      } else if (p != "http/protobuf") {
        return Error{name + ": '" + std::string(p) + "' is not a protocol Nimbus exports with; use http/protobuf or http/json" +
                     (p == "grpc" ? " (OTLP/gRPC is not supported: a collector takes OTLP/HTTP on port 4318)" : "")};
      }
    }
  }
  if (!gzip) {
    gzip = false;
    if (auto [name, v] = variable("COMPRESSION"); v) {
      const std::string_view c(v);
      if (c != "gzip" && c != "none") return Error{name + ": '" + std::string(c) + "' is not gzip or none"};
      gzip = c == "gzip";
    }
  }
  if (ca_file.empty()) {
    if (auto [name, v] = variable("CERTIFICATE"); v) ca_file = v;
  }
  if (auto [name, v] = variable("TIMEOUT"); v) {
    int64_t ms = 0;
    const std::string_view t(v);
    auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), ms);
    if (ec != std::errc() || p != t.data() + t.size() || ms <= 0) {
      return Error{name + ": '" + std::string(t) + "' is not a timeout in milliseconds (a positive integer)"};
    }
    timeout = std::chrono::milliseconds(ms);
  }
  // The batch span processor's variables (what an OpenTelemetry SDK reads for the same knobs).
  auto positive = [](const char* name, int64_t most) -> Expected<std::optional<int64_t>> {
    const char* v = env(name);
    if (!v) return std::optional<int64_t>();
    int64_t n = 0;
    const std::string_view t(v);
    auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), n);
    if (ec != std::errc() || p != t.data() + t.size() || n <= 0 || n > most) {
      return Error{std::string(name) + ": '" + std::string(t) + "' is not a whole number from 1 to " + std::to_string(most)};
    }
    return std::optional<int64_t>(n);
  };
  auto queue_size = positive("OTEL_BSP_MAX_QUEUE_SIZE", 1 << 20);
  if (!queue_size) return queue_size.error();
  if (*queue_size) max_queue = static_cast<std::size_t>(**queue_size);
  auto batch_size = positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1 << 16);
  if (!batch_size) return batch_size.error();
  if (*batch_size) max_batch = static_cast<std::size_t>(**batch_size);
  if (max_batch > max_queue) {
    return Error{"OTEL_BSP_MAX_EXPORT_BATCH_SIZE (" + std::to_string(max_batch) + ") is more than the export queue holds (" +
                 std::to_string(max_queue) + ", OTEL_BSP_MAX_QUEUE_SIZE)"};
  }
  auto delay = positive("OTEL_BSP_SCHEDULE_DELAY", 3'600'000);
  if (!delay) return delay.error();
  if (*delay) flush = std::chrono::milliseconds(**delay);
  auto u = boost::urls::parse_uri(endpoint);
  if (!u || (u->scheme() != "http" && u->scheme() != "https") || u->host().empty()) {
    return Error{"the OTLP endpoint '" + endpoint + "' is not an http:// or https:// URL"};
  }
  if (!ca_file.empty()) {
    if (u->scheme() != "https") {
      return Error{"an OTLP certificate file (" + ca_file + ") is set for '" + endpoint + "', which is not https://"};
    }
    if (!std::ifstream(ca_file).good()) return Error{"the OTLP certificate file '" + ca_file + "' cannot be read"};
  }
  return ok_status();
}

// One connection to the collector, kept alive from export to export (a new TCP and TLS
// handshake per batch would cost more than the batch), opened again when the collector closes
// it. Used by the exporter thread only; every step has the export's deadline.
class OtlpClient {
 public:
  explicit OtlpClient(const TraceSettings& settings) : settings_(settings) {
    auto u = boost::urls::parse_uri(settings.endpoint);
    if (!u) {
      broken_ = "the OTLP endpoint '" + settings.endpoint + "' is not a URL";
      return;
    }
    tls_ = u->scheme() == "https";
    host_ = std::string(u->host_address());
    port_ = u->has_port() ? std::string(u->port()) : tls_ ? "443" : "80";
    host_header_ = std::string(u->encoded_host_and_port());  // [::1]:4318 keeps its brackets
    target_ = std::string(u->encoded_path());
    if (target_.empty()) target_ = "/";
    if (u->has_query()) target_ += "?" + std::string(u->encoded_query());
    if (!tls_) {
      // The request's head up to Content-Length's value (read_environment checked the headers;
      // a Host or Content-Type of theirs takes the place of ours, as Beast's set() does).
      const auto given = [&settings](std::string_view name) {
        return std::any_of(settings.headers.begin(), settings.headers.end(),
                           [name](const auto& h) { return beast::iequals(h.name, name); });
      };
      head_prefix_ = "POST " + target_ + " HTTP/1.1\r\n";
      if (!given("host")) head_prefix_ += "Host: " + host_header_ + "\r\n";
      if (!given("content-type")) head_prefix_ += std::string("Content-Type: ") + content_type() + "\r\n";
      if (settings.gzip.value_or(false)) head_prefix_ += "Content-Encoding: gzip\r\n";
      for (const auto& h : settings.headers) head_prefix_ += h.name + ": " + h.value + "\r\n";
      head_prefix_ += "Content-Length: ";
      return;
    }
    ssl_.emplace(asio::ssl::context::tls_client);
    ssl_->set_verify_mode(asio::ssl::verify_peer);
    beast::error_code ec;
    if (settings.ca_file.empty()) {
      ssl_->set_default_verify_paths(ec);
    } else {
      ssl_->load_verify_file(settings.ca_file, ec);
    }
    if (ec) broken_ = "cannot load the CA certificates for " + settings.endpoint + ": " + ec.message();
  }

  // Sends one export, whose body is `parts` back to back; false with *problem when the
  // collector did not take it (*retryable: the same body may be sent again).
  bool post(std::span<const std::string_view> parts, std::string* problem, bool* retryable) {
    if (!broken_.empty()) {
      *problem = broken_;
      *retryable = false;
      return false;
    }
    http::response<http::string_body> res;
    for (int round = 0; round < 2; ++round) {
      const bool reused = plain_ || secure_;
      if (!reused && !connect(problem)) return false;
      bool resend = false, keep = false;
      const std::string failed =
          tls_ ? secure_exchange(parts, res, &resend, &keep) : plain_exchange(parts, res, &resend, &keep);
      if (!failed.empty()) {
        close();
        // A kept connection the collector closed while it was idle: once more on a new one
        // (not when some of an answer came: the collector may have taken the batch).
        if (reused && resend) continue;
        *problem = "the export to " + settings_.endpoint + " failed: " + failed;
        return false;
      }
      if (!keep) close();
      const int status = static_cast<int>(res.result_int());
      if (status < 200 || status >= 300) {
        *problem = "the collector answered " + std::to_string(status) + ": " + res.body().substr(0, 200);
        // OTLP/HTTP: 429, 502, 503 and 504 may be tried again; other refusals would be refused again.
        *retryable = status == 429 || status == 502 || status == 503 || status == 504;
        return false;
      }
      return true;
    }
    *problem = "the export to " + settings_.endpoint + " failed: the connection closed twice";
    return false;
  }

  uint64_t connects() const { return connects_; }

 private:
  // A name lookup on a thread of its own: getaddrinfo has no deadline and cannot be cancelled
  // (nor can Asio's resolver, which runs it the same way), and a resolver that never answers
  // must not hold the exports, nor the host's stop, beyond the export timeout. A lookup that
  // runs late is waited for by the next export rather than started again.
  struct Lookup {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    beast::error_code ec;
    asio::ip::tcp::resolver::results_type results;
  };

  bool resolve(asio::ip::tcp::resolver::results_type& results, std::string* problem) {
    beast::error_code ec;
    beast::error_code not_address;
    asio::ip::make_address(host_, not_address);
    if (!not_address) {  // an address: nothing to look up
      asio::ip::tcp::resolver resolver(io_);
      results = resolver.resolve(host_, port_, asio::ip::resolver_base::numeric_host, ec);
      if (ec) *problem = "cannot resolve " + host_ + ": " + ec.message();
      return !ec;
    }
    if (!lookup_) {
      lookup_ = std::make_shared<Lookup>();
      std::thread([l = lookup_, host = host_, port = port_] {
        asio::io_context io;
        asio::ip::tcp::resolver resolver(io);
        beast::error_code e;
        auto found = resolver.resolve(host, port, e);
        std::lock_guard lock(l->mu);
        l->ec = e;
        l->results = std::move(found);
        l->done = true;
        l->cv.notify_all();
      }).detach();
    }
    std::unique_lock lock(lookup_->mu);
    if (!lookup_->cv.wait_for(lock, settings_.timeout, [&] { return lookup_->done; })) {
      *problem = "resolving " + host_ + " took longer than the export timeout (" +
                 std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(settings_.timeout).count()) +
                 " ms); the collector's address (or a resolver that answers) avoids it";
      return false;
    }
    ec = lookup_->ec;
    results = lookup_->results;
    lock.unlock();
    lookup_.reset();  // the next connection looks the name up afresh
    if (ec) *problem = "cannot resolve " + host_ + ": " + ec.message();
    return !ec;
  }

  bool connect(std::string* problem) {
    beast::error_code ec;
    asio::ip::tcp::resolver::results_type results;
    if (!resolve(results, problem)) return false;
    beast::tcp_stream* tcp = nullptr;
    if (tls_) {
      secure_.emplace(io_, *ssl_);
      tcp = &beast::get_lowest_layer(*secure_);
      // Server name indication (not for an address) and the certificate checked against the name.
      beast::error_code not_address;
      asio::ip::make_address(host_, not_address);
      if (not_address) SSL_set_tlsext_host_name(secure_->native_handle(), host_.c_str());
      secure_->set_verify_callback(asio::ssl::host_name_verification(host_));
    } else {
      plain_.emplace(io_);
      tcp = &*plain_;
    }
    tcp->expires_after(settings_.timeout);
    // Asynchronous with a deadline: a collector that accepts and never answers is cut off.
    io_.restart();
    tcp->async_connect(results, [&](beast::error_code e, const auto&) { ec = e; });
    io_.run();
    if (ec) {
      close();
      *problem = "cannot connect to " + host_ + ":" + port_ + ": " + ec.message();
      return false;
    }
    if (tls_) {
      io_.restart();
      secure_->async_handshake(asio::ssl::stream_base::client, [&](beast::error_code e) { ec = e; });
      io_.run();
      if (ec) {
        close();
        *problem = "the TLS handshake with " + host_ + ":" + port_ + " failed: " + ec.message();
        return false;
      }
    } else {
      // plain_exchange's own I/O: non-blocking, and each request out at once (no Nagle wait
      // for the last segment of a batch).
      const int fd = plain_->socket().native_handle();
      plain_->socket().set_option(asio::ip::tcp::no_delay(true), ec);
      if (ec || ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        close();
        *problem = "cannot set up the connection to " + host_ + ":" + port_;
        return false;
      }
    }
    ++connects_;
    return true;
  }

  // Over TLS, through Beast: the body joined into one buffer (TLS copies it as it encrypts anyway).
  std::string secure_exchange(std::span<const std::string_view> parts, http::response<http::string_body>& res,
                              bool* resend, bool* keep) {
    http::request<http::string_body> req{http::verb::post, target_, 11};
    req.set(http::field::host, host_header_);
    req.set(http::field::content_type, content_type());
    if (settings_.gzip.value_or(false)) req.set(http::field::content_encoding, "gzip");
    for (const auto& h : settings_.headers) req.set(h.name, h.value);
    for (const auto part : parts) req.body().append(part);
    req.prepare_payload();
    beast::error_code ec;
    beast::get_lowest_layer(*secure_).expires_after(settings_.timeout);
    buffer_.clear();
    res = {};
    io_.restart();
    http::async_write(*secure_, req, [&](beast::error_code e, std::size_t) {
      ec = e;
      if (!e) http::async_read(*secure_, buffer_, res, [&](beast::error_code e2, std::size_t) { ec = e2; });
    });
    io_.run();
    *resend = ec != beast::error::timeout;
    *keep = !ec && res.keep_alive();
    return ec ? ec.message() : std::string();
  }

  // Plain HTTP on the kept socket, without Asio's composed operations (per export they cost the
  // host's core more than the kernel's send of a 70 kB batch did): the request's head and the
  // body's parts go out in one sendmsg, from where they are (the batch is not copied), and the
  // answer is read through Beast's parser (past any 1xx). Every wait is a poll() against the
  // export's deadline. "" when the exchange went through (*keep: the connection may carry the
  // next); else what went wrong (*resend: the collector cannot have taken the request, as when
  // a kept connection it had closed failed before any of an answer came).
  std::string plain_exchange(std::span<const std::string_view> parts, http::response<http::string_body>& res,
                             bool* resend, bool* keep) {
    const int fd = plain_->socket().native_handle();
    const auto deadline = std::chrono::steady_clock::now() + settings_.timeout;
    const auto wait = [&](short events) -> std::string {
      for (;;) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
        if (left <= 0) {
          return "no answer within the export timeout (" +
                 std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(settings_.timeout).count()) + " ms)";
        }
        pollfd p{fd, events, 0};
        const int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1 << 30)));
        if (n > 0) return {};
        if (n < 0 && errno != EINTR) return std::strerror(errno);
      }
    };
    std::size_t length = 0;
    for (const auto part : parts) length += part.size();
    head_.assign(head_prefix_).append(std::to_string(length)).append("\r\n\r\n");
    std::array<iovec, 8> iov{};
    std::size_t count = 0;
    iov[count++] = {head_.data(), head_.size()};
    for (const auto part : parts) {
      if (part.empty()) continue;
      if (count == iov.size()) return "a request of more than " + std::to_string(iov.size() - 1) + " parts (a bug)";
      iov[count++] = {const_cast<char*>(part.data()), part.size()};
    }
    for (iovec* at = iov.data(); count > 0;) {
      msghdr m{};
      m.msg_iov = at;
      m.msg_iovlen = count;
      const ssize_t n = ::sendmsg(fd, &m, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          *resend = errno == EPIPE || errno == ECONNRESET;
          return std::strerror(errno);
        }
        if (auto e = wait(POLLOUT); !e.empty()) return e;
        continue;
      }
      auto sent = static_cast<std::size_t>(n);
      while (count > 0 && sent >= at->iov_len) {
        sent -= at->iov_len;
        ++at;
        --count;
      }
      if (count > 0) {
        at->iov_base = static_cast<char*>(at->iov_base) + sent;
        at->iov_len -= sent;
      }
    }
    std::optional<http::response_parser<http::string_body>> parser;
    const auto fresh = [&parser] {
      parser.emplace();
      parser->eager(true);
      parser->body_limit(1 << 20);  // a collector's answer is small; a huge one is not read whole
    };
    fresh();
    unread_.clear();
    bool answered = false;  // some of an answer came (a 1xx included)
    char chunk[4096];
    for (;;) {
      // What has come, through the parser; a 1xx answer is passed over for the one after it.
      while (!unread_.empty() && !parser->is_done()) {
        beast::error_code ec;
        const std::size_t used = parser->put(asio::buffer(unread_), ec);
        unread_.erase(0, used);
        if (ec == http::error::need_more) break;
        if (ec) return "cannot read the collector's answer: " + ec.message();
        if (used == 0) break;
      }
      if (parser->is_done()) {
        if (const unsigned status = parser->get().result_int(); status >= 100 && status < 200) {
          fresh();
          continue;
        }
        break;
      }
      const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
          *resend = !answered && errno == ECONNRESET;
          return std::strerror(errno);
        }
        if (auto e = wait(POLLIN); !e.empty()) return e;
        continue;
      }
      if (n == 0) {
        // An answer that ends with the connection, or none (the parser must have seen some).
        beast::error_code ec;
        if (parser->got_some()) parser->put_eof(ec);
        if (ec || !parser->is_done()) {
          *resend = !answered;
          return "the collector closed the connection before it answered";
        }
        break;
      }
      answered = true;
      unread_.append(chunk, static_cast<std::size_t>(n));
    }
    *keep = parser->keep_alive();  // the parser's: false when the answer ended with the connection
    res = parser->release();
    return {};
  }

  const char* content_type() const {
    return settings_.protocol == OtlpProtocol::json ? "application/json" : "application/x-protobuf";
  }

  void close() {
    beast::error_code ignored;
    if (secure_) beast::get_lowest_layer(*secure_).socket().close(ignored);
    if (plain_) plain_->socket().close(ignored);
    secure_.reset();
    plain_.reset();
  }

  const TraceSettings& settings_;
  std::string host_, port_, host_header_, target_;
  std::string head_prefix_, head_, unread_;  // plain HTTP: the request's head, the answer's bytes not yet parsed
  bool tls_ = false;
  uint64_t connects_ = 0;
  std::shared_ptr<Lookup> lookup_;  // a name lookup under way (its thread holds it too)
  std::string broken_;  // set when the endpoint can never be sent to (a CA file that does not load)
  asio::io_context io_;
  std::optional<asio::ssl::context> ssl_;
  std::optional<beast::tcp_stream> plain_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure_;
  beast::flat_buffer buffer_;
};

Tracer::Tracer(TraceSettings settings, std::string service, std::string service_version, Logger& logger)
    : settings_(std::move(settings)),
      service_(std::move(service)),
      service_version_(std::move(service_version)),
      resource_(resource_of(settings_.protocol.value_or(OtlpProtocol::protobuf), service_, service_version_)),
      logger_(logger) {
  set_trace_sample_ratio(settings_.sample.value_or(1.0));
  client_ = std::make_unique<OtlpClient>(settings_);
  thread_ = std::thread([this] {
    name_this_thread("otlp-export");
    run();
  });
}

Tracer::~Tracer() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Tracer::record(Span span) { record(&span, 1); }

void Tracer::record(Span* spans, std::size_t n) {
  // Encoded here, outside the lock, into this thread's own buffer (it keeps its room).
  thread_local std::string encoded;
  thread_local std::vector<uint32_t> ends;
  encoded.clear();
  ends.clear();
  for (std::size_t i = 0; i < n; ++i) {
    encode(spans[i], encoded);
    ends.push_back(static_cast<uint32_t>(encoded.size()));
  }
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    stats_.recorded += n;
    const std::size_t room = settings_.max_queue - std::min(settings_.max_queue, ends_.size());
    const std::size_t taken = std::min(n, room);
    stats_.dropped += n - taken;
    if (taken > 0) {
      const std::size_t base = pending_.size();
      pending_.append(encoded, 0, ends[taken - 1]);
      for (std::size_t i = 0; i < taken; ++i) ends_.push_back(static_cast<uint32_t>(base + ends[i]));
      wake = ends_.size() >= settings_.max_batch && ends_.size() - taken < settings_.max_batch;
    }
  }
  if (wake) cv_.notify_one();
}

namespace {

// Spans made on this thread, written over by each use: their strings and lists keep their
// room, and are allocated and freed on the thread that records (the allocator's per-thread
// cache), never handed to another.
Span* reused_spans(std::size_t n) {
  thread_local std::array<Span, 5> spans;
  for (std::size_t i = 0; i < n; ++i) {
    Span& s = spans[i];
    s.trace_id = TraceIdText();
    s.span_id = s.parent_span_id = 0;
    s.trace_state.clear();
    s.name.clear();
    s.kind = SpanKind::internal;
    s.start_unix_ns = s.end_unix_ns = 0;
    s.error = false;
    s.status_message.clear();
    s.attributes.clear();
    s.links.clear();
    s.preset_attributes = {};
  }
  return spans.data();
}

}  // namespace

namespace {

// What an invocation's span says that is the same for every invocation of a function with its
// trigger, outcome and version: its kind, and faas.name, faas.trigger, nimbus.trigger,
// nimbus.outcome, nimbus.version and messaging.operation.type, encoded once per thread in the
// exporter's protocol and then copied whole (written field by field they were a third of an
// invocation's spans' cost in trace_bench).
struct PresetAttributes {
  std::string function, trigger, version;
  Outcome outcome = Outcome::success;
  OtlpProtocol protocol = OtlpProtocol::protobuf;
  SpanKind kind = SpanKind::internal;
  std::string bytes;
};

const PresetAttributes& preset_attributes(const InvocationRecord& r, OtlpProtocol protocol) {
  thread_local std::vector<PresetAttributes> presets;
  const std::string_view trigger = to_string(r.trigger);
  for (const auto& p : presets) {
    if (p.outcome == r.outcome && p.protocol == protocol && p.function == r.function && p.trigger == trigger &&
        p.version == r.version) {
      return p;
    }
  }
  if (presets.size() >= 64) presets.clear();  // a host with more functions than that: start over
  PresetAttributes& p = presets.emplace_back();
  p.function = r.function;
  p.trigger = trigger;
  p.version = r.version;
  p.outcome = r.outcome;
  p.protocol = protocol;
  // faas.trigger: http, pubsub, datasource, timer or other (OpenTelemetry FaaS conventions).
  std::string_view faas = "other";
  if (r.trigger == TriggerKind::http || r.trigger == TriggerKind::admin) faas = "http";
  else if (trigger == "queue" || trigger == "topic" || trigger == "stream" || trigger == "mqtt" || trigger == "cloudevents") faas = "pubsub";
  else if (trigger == "timer") faas = "timer";
  else if (trigger == "file" || trigger == "blob") faas = "datasource";
  p.kind = faas == "http" ? SpanKind::server : faas == "timer" ? SpanKind::internal : SpanKind::consumer;
  std::vector<std::pair<std::string_view, Span::Value>> attributes = {
      {"faas.name", std::string_view(p.function)},
      {"faas.trigger", faas},
      {"nimbus.trigger", std::string_view(p.trigger)},
      {"nimbus.outcome", std::string_view(to_string(r.outcome))}};
  if (!p.version.empty()) attributes.emplace_back("nimbus.version", std::string_view(p.version));
  if (faas == "pubsub") attributes.emplace_back("messaging.operation.type", std::string_view("process"));
  p.bytes = encoded_attributes(protocol, attributes);
  return p;
}

}  // namespace

void Tracer::invocation(const InvocationRecord& r, WallTime finished) {
  if (!trace_sampled(r.traceparent)) return;
  const auto [trace_id, span_id] = trace_context_of(r.traceparent);
  if (trace_id.empty() || span_id == 0) return;
  const auto ns = [](Duration d) { return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(); };
  const int64_t waited = ns(r.waited), ran = ns(r.ran);
  const bool queue_wait = r.queued && r.parent_span != 0, cold = r.cold_start > Duration::zero();
  const bool wait = waited >= 100000 || cold;  // a wait under 0.1 ms has no span
  // Queue wait, wait, cold start, execution, then the invocation's own.
  const std::size_t spans = 1 + queue_wait + wait + cold + (ran > 0);
  Span* out = reused_spans(spans);
  Span& s = out[spans - 1];
  s.trace_id = trace_id;
  s.span_id = span_id;
  s.parent_span_id = r.parent_span;
  s.trace_state.assign(r.tracestate);
  s.name.assign(r.function);
  if (r.links) {
    for (const auto& tp : *r.links) {
      if (s.links.size() >= kMaxLinks) break;
      const auto [link_trace, link_span] = trace_context_of(tp);
      if (link_span != 0) s.links.push_back({link_trace, link_span});  // 0: not a valid traceparent
    }
  }
  const PresetAttributes& preset = preset_attributes(r, settings_.protocol.value_or(OtlpProtocol::protobuf));
  s.kind = preset.kind;
  s.preset_attributes = preset.bytes;
  const auto end = std::chrono::duration_cast<std::chrono::nanoseconds>(finished.time_since_epoch()).count();
  s.end_unix_ns = end;
  s.start_unix_ns = end - std::chrono::duration_cast<std::chrono::nanoseconds>(r.duration).count();
  s.attributes.reserve(3);
  s.attributes.emplace_back("faas.invocation_id", std::string_view(r.invocation_id));
  if (r.status != 0) s.attributes.emplace_back("http.response.status_code", int64_t{r.status});
  if (r.outcome != Outcome::success || r.status >= 500) {
    s.error = true;
    s.status_message.assign(r.error_type.empty() ? std::string_view(to_string(r.outcome)) : std::string_view(r.error_type));
    if (!r.error_type.empty()) s.attributes.emplace_back("error.type", std::string_view(r.error_type));
  }
  // The spans inside it, laid from its start: the wait, then the run (each clamped to it).
  const int64_t start = s.start_unix_ns;
  std::size_t n = 0;  // spans laid in out[0..n), then the invocation's own
  auto inner = [&](const char* name, uint64_t parent, int64_t from, int64_t to) -> Span& {
    Span& c = out[n++];
    c.trace_id = s.trace_id;
    c.span_id = new_span_id();
    c.parent_span_id = parent;
    c.trace_state.assign(s.trace_state);
    c.name.assign(name);
    c.start_unix_ns = std::clamp(from, start, end);
    c.end_unix_ns = std::clamp(to, c.start_unix_ns, end);
    return c;
  };
  if (queue_wait) {
    // Before the invocation began, under the span that sent the message.
    Span& q = out[n++];
    q.trace_id = s.trace_id;
    q.span_id = new_span_id();
    q.parent_span_id = r.parent_span;
    q.trace_state.assign(s.trace_state);
    q.name.assign("queue wait");
    q.start_unix_ns = start - ns(*r.queued);
    q.end_unix_ns = start;
    q.attributes.emplace_back("faas.name", std::string_view(r.function));
  }
  if (wait) {
    Span& w = inner("wait", s.span_id, start, start + waited);
    w.attributes.emplace_back("faas.coldstart", cold);
    if (cold) inner("cold start", w.span_id, start + waited - ns(r.cold_start), start + waited);
  }
  if (ran > 0) inner("execution", s.span_id, start + waited, start + waited + ran).error = s.error;
  record(out, spans);  // one lock for them all
}

void Tracer::store_commit(const TraceContext& invocation, std::string_view tracestate, WallTime began, WallTime ended,
                          std::string_view what, bool ok) {
  if (invocation.trace_id.empty() || invocation.span_id == 0) return;
  Span& s = *reused_spans(1);
  s.trace_id = invocation.trace_id;
  s.parent_span_id = invocation.span_id;
  s.trace_state.assign(tracestate);
  s.span_id = new_span_id();
  s.name.assign("store commit");
  s.start_unix_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(began.time_since_epoch()).count();
  s.end_unix_ns = std::max(s.start_unix_ns,
                           std::chrono::duration_cast<std::chrono::nanoseconds>(ended.time_since_epoch()).count());
  s.attributes.emplace_back("nimbus.commit", std::string_view(what));
  if (!ok) {
    s.error = true;
    s.status_message.assign("the commit failed");
  }
  record(&s, 1);
}

void Tracer::host_call(std::string_view caller, std::string_view caller_state, uint64_t span_id, std::string_view op,
                       const Headers& args, WallTime began, WallTime ended, bool ok, std::string_view error) {
  Span& s = *reused_spans(1);
  const TraceContext c = trace_context_of(caller);
  s.trace_id = c.trace_id;
  s.parent_span_id = c.span_id;
  if (s.trace_id.empty() || s.parent_span_id == 0 || span_id == 0) return;
  s.trace_state.assign(caller_state);
  s.span_id = span_id;
  const auto unix_ns = [](WallTime t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  };
  s.start_unix_ns = unix_ns(began);
  s.end_unix_ns = std::max(s.start_unix_ns, unix_ns(ended));
  const auto arg = [&](std::string_view name) {
    const std::string* v = find_header(args, name);
    return v ? *v : std::string();
  };
  s.attributes.reserve(5);
  s.attributes.emplace_back("nimbus.host_call", std::string_view(op));
  // Names after the OpenTelemetry conventions: "{operation} {destination}".
  if (op == "publish" || op == "enqueue") {
    const std::string destination = arg(op == "publish" ? "topic" : "queue");
    s.name.append(op).append(" ").append(destination);
    s.kind = SpanKind::producer;
    s.attributes.emplace_back("messaging.system", std::string_view("nimbus"));
    s.attributes.emplace_back("messaging.operation.type", std::string_view("send"));
    s.attributes.emplace_back("messaging.operation.name", std::string_view(op));
    s.attributes.emplace_back("messaging.destination.name", destination);  // a copy: the local ends before record()
  } else if (op.rfind("state.", 0) == 0) {
    const std::string store = arg("store");
    s.name.append(op).append(" ").append(store);
    s.kind = SpanKind::client;
    s.attributes.emplace_back("db.system.name", std::string_view("nimbus"));
    s.attributes.emplace_back("db.operation.name", std::string_view(op));
    s.attributes.emplace_back("db.collection.name", store);  // a copy: the local ends before record()
  } else if (op == "invoke") {
    const std::string function = arg("function");
    s.name.append("invoke ").append(function);
    s.kind = SpanKind::client;
    s.attributes.emplace_back("faas.invoked_name", function);
    if (const std::string mode = arg("mode"); !mode.empty()) s.attributes.emplace_back("nimbus.invoke.mode", mode);
  } else {
    s.name.assign(op);
    s.kind = SpanKind::client;
  }
  if (!ok) {
    s.error = true;
    s.status_message.assign(error.substr(0, 512));
  }
  record(&s, 1);
}

TraceStats Tracer::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void Tracer::metrics_text(std::string& out) const {
  const TraceStats s = stats();
  auto counter = [&out](const char* name, const char* help, uint64_t v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n" + name + " " +
           std::to_string(v) + "\n";
  };
  counter("nimbus_trace_spans_recorded_total", "Spans recorded for export.", s.recorded);
  counter("nimbus_trace_spans_exported_total", "Spans the collector accepted.", s.exported);
  counter("nimbus_trace_spans_dropped_total", "Spans dropped because the export queue was full.", s.dropped);
  counter("nimbus_trace_spans_failed_total", "Spans given up on after the collector refused or could not be reached.",
          s.failed);
  counter("nimbus_trace_export_requests_total", "Export requests sent to the collector.", s.export_requests);
  counter("nimbus_trace_export_failures_total", "Export requests that failed (each retry counts).", s.export_failures);
  counter("nimbus_trace_export_connections_total", "Connections opened to the collector (one is kept alive).",
          s.connections);
}

namespace {

// A JSON string, always valid UTF-8 (the log's escaper: bytes that are not UTF-8 become
// U+FFFD, which a collector takes; a raw bad byte would make it refuse the whole batch).
void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  append_json_escaped(out, s);
  out += '"';
}

// The text of an attribute's value, in `out`; false when it is not text.
inline bool text_of(const Span::Value& v, std::string_view& out) {
  switch (v.index()) {
    case 0: out = *std::get_if<0>(&v); return true;
    case 3: out = *std::get_if<3>(&v); return true;
    default: return false;
  }
}

void append_attribute(std::string& out, std::string_view key, const Span::Value& v) {
  out += "{\"key\":";
  append_json_string(out, key);
  if (std::string_view text; text_of(v, text)) {
    out += ",\"value\":{\"stringValue\":";
    append_json_string(out, text);
  } else if (const bool* flag = std::get_if<bool>(&v)) {
    out += *flag ? ",\"value\":{\"boolValue\":true" : ",\"value\":{\"boolValue\":false";
  } else {
    out += ",\"value\":{\"intValue\":\"";  // int64 is a string in OTLP/JSON
    out += std::to_string(std::get<int64_t>(v));
    out += '"';
  }
  out += "}}";
}

// One span as it goes into the request's list: a comma, then the object (the request drops
// its first list's first comma). Written by hand, not through a JSON DOM: the host's threads
// encode each span they record.
void append_json_span(std::string& out, const Span& s) {
  out += ",{\"traceId\":";
  append_json_string(out, s.trace_id.view());
  out += ",\"spanId\":\"" + hex16(s.span_id) + '"';
  if (!s.trace_state.empty()) {
    out += ",\"traceState\":";
    append_json_string(out, s.trace_state);
  }
  if (s.parent_span_id != 0) out += ",\"parentSpanId\":\"" + hex16(s.parent_span_id) + '"';
  out += ",\"name\":";
  append_json_string(out, s.name);
  out += ",\"kind\":";
  out += std::to_string(static_cast<int>(s.kind));
  out += ",\"startTimeUnixNano\":\"" + std::to_string(s.start_unix_ns) + "\",\"endTimeUnixNano\":\"" +
         std::to_string(s.end_unix_ns) + "\",\"attributes\":[";
  out += s.preset_attributes;
  for (std::size_t i = 0; i < s.attributes.size(); ++i) {
    if (i || !s.preset_attributes.empty()) out += ',';
    append_attribute(out, s.attributes[i].first, s.attributes[i].second);
  }
  out += ']';
  if (!s.links.empty()) {
    out += ",\"links\":[";
    for (std::size_t i = 0; i < s.links.size(); ++i) {
      if (i) out += ',';
      out += "{\"traceId\":";
      append_json_string(out, s.links[i].trace_id.view());
      out += ",\"spanId\":\"" + hex16(s.links[i].span_id) + "\"}";
    }
    out += ']';
  }
  if (s.error) {
    out += ",\"status\":{\"code\":2,\"message\":";
    append_json_string(out, s.status_message);
    out += '}';
  }
  out += '}';
}

std::string json_prefix(std::string_view service, std::string_view service_version) {
  std::string out = "{\"resourceSpans\":[{\"resource\":{\"attributes\":[";
  append_attribute(out, "service.name", std::string(service));
  out += ',';
  append_attribute(out, "telemetry.sdk.name", std::string("nimbus"));
  if (!service_version.empty()) {
    out += ',';
    append_attribute(out, "service.version", std::string(service_version));
  }
  out += "]},\"scopeSpans\":[{\"scope\":{\"name\":\"nimbus\"},\"spans\":[";
  return out;
}

// What closes the request after the spans (json_prefix's opening, then the spans).
constexpr std::string_view kJsonEnd = "]}]}]}";

// The spans as they go after json_prefix: without the first one's comma.
std::string_view json_spans(std::string_view spans) { return spans.empty() ? spans : spans.substr(1); }

// The request: `prefix` (json_prefix), the spans (append_json_span's, back to back), the end.
std::string wrap_json(std::string_view prefix, std::string_view spans) {
  std::string out;
  out.reserve(prefix.size() + spans.size() + kJsonEnd.size());
  out.append(prefix).append(json_spans(spans)).append(kJsonEnd);
  return out;
}

}  // namespace

std::string Tracer::otlp_json(const std::vector<Span>& spans, std::string_view service,
                              std::string_view service_version) {
  std::string body;
  for (const auto& s : spans) append_json_span(body, s);
  return wrap_json(json_prefix(service, service_version), body);
}

namespace {

// Protobuf's wire format, the little of it OTLP needs: varints, 64-bit fixed, and
// length-delimited fields (strings, bytes, nested messages). Every message's size is known
// before it is written (each field's is), so the body is one buffer of its exact size, written
// front to back: no nested message is built apart and copied in (a span each, then the whole
// batch twice), and a trace id is decoded into the buffer, not into a string of its own.
namespace pb {

constexpr uint32_t kVarint = 0, kFixed64 = 1, kLength = 2;

constexpr std::size_t varint_size(uint64_t v) {
  std::size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}
constexpr std::size_t key_size(uint32_t field) { return varint_size(uint64_t{field} << 3); }
// A length-delimited field of `n` bytes, its key and length included.
constexpr std::size_t field_size(uint32_t field, std::size_t n) { return key_size(field) + varint_size(n) + n; }

using Value = Span::Value;

// AnyValue {string_value = 1; bool_value = 2; int_value = 3} (a string already UTF-8).
std::size_t value_size(const Value& v) {
  if (std::string_view str; text_of(v, str)) return field_size(1, str.size());
  if (std::holds_alternative<bool>(v)) return 2;
  return 1 + varint_size(static_cast<uint64_t>(std::get<int64_t>(v)));  // int64: ten bytes when negative
}
// KeyValue {string key = 1; AnyValue value = 2}
std::size_t attribute_size(std::string_view k, const Value& v) { return field_size(1, k.size()) + field_size(2, value_size(v)); }

constexpr std::size_t kTraceId = 16, kSpanId = 8;
constexpr std::size_t kLinkSize = field_size(1, kTraceId) + field_size(2, kSpanId);  // Link {trace_id = 1; span_id = 2}

// Status {string message = 2; StatusCode code = 3}
std::size_t status_size(const Span& s) { return (s.status_message.empty() ? 0 : field_size(2, s.status_message.size())) + 2; }

std::size_t span_size(const Span& s) {
  std::size_t n = field_size(1, kTraceId) + field_size(2, kSpanId);
  if (!s.trace_state.empty()) n += field_size(3, s.trace_state.size());
  if (s.parent_span_id != 0) n += field_size(4, kSpanId);
  if (!s.name.empty()) n += field_size(5, s.name.size());  // proto3 leaves out what is empty
  n += 1 + varint_size(static_cast<uint64_t>(s.kind));
  n += 2 * (1 + 8);
  n += s.preset_attributes.size();  // whole KeyValue fields already
  for (const auto& [k, v] : s.attributes) n += field_size(9, attribute_size(k, v));
  n += s.links.size() * field_size(13, kLinkSize);
  if (s.error) n += field_size(15, status_size(s));
  return n;
}

// Writes into a buffer already sized for what is written.
class Writer {
 public:
  explicit Writer(char* at) : p_(at) {}
  char* at() const { return p_; }
  // Inlined: most varints written are a field's key or a short length, one constant byte.
  [[gnu::always_inline]] void varint(uint64_t v) {
    if (v < 0x80) {
      *p_++ = static_cast<char>(v);
      return;
    }
    long_varint(v);
  }
  [[gnu::noinline]] void long_varint(uint64_t v) {
    while (v >= 0x80) {
      *p_++ = static_cast<char>((v & 0x7f) | 0x80);
      v >>= 7;
    }
    *p_++ = static_cast<char>(v);
  }
  [[gnu::always_inline]] void key(uint32_t field, uint32_t wire) { varint((uint64_t{field} << 3) | wire); }
  // The head of a length-delimited field; its `n` bytes follow.
  [[gnu::always_inline]] void head(uint32_t field, std::size_t n) {
    key(field, kLength);
    varint(n);
  }
  void bytes(uint32_t field, std::string_view b) {
    head(field, b.size());
    copy(b.data(), b.size());
  }
  // Most of what is copied is a key or a short value (under 32 bytes): two overlapping loads
  // and stores, not a call to memcpy each (a span has ~20 such pieces).
  [[gnu::always_inline]] void copy(const char* from, std::size_t n) {
    if (n >= 8 && n <= 16) {
      uint64_t a, b;
      std::memcpy(&a, from, 8);
      std::memcpy(&b, from + n - 8, 8);
      std::memcpy(p_, &a, 8);
      std::memcpy(p_ + n - 8, &b, 8);
    } else if (n > 16 && n <= 32) {
      uint64_t a[2], b[2];
      std::memcpy(a, from, 16);
      std::memcpy(b, from + n - 16, 16);
      std::memcpy(p_, a, 16);
      std::memcpy(p_ + n - 16, b, 16);
    } else if (n >= 4 && n < 8) {
      uint32_t a, b;
      std::memcpy(&a, from, 4);
      std::memcpy(&b, from + n - 4, 4);
      std::memcpy(p_, &a, 4);
      std::memcpy(p_ + n - 4, &b, 4);
    } else {
      std::memcpy(p_, from, n);
    }
    p_ += n;
  }
  void fixed64(uint32_t field, uint64_t v) {
    key(field, kFixed64);
    put64(v, std::endian::little);
  }
  void trace_id(uint32_t field, const TraceIdText& id) {
    head(field, kTraceId);
    std::memcpy(p_, id.bytes().data(), kTraceId);
    p_ += kTraceId;
  }
  void span_id(uint32_t field, uint64_t id) {
    head(field, kSpanId);
    put64(id, std::endian::big);
  }
  void attribute(uint32_t field, std::string_view k, const Value& v) {
    if (std::string_view str; text_of(v, str)) {  // most are: written without a second look
      const std::size_t value = field_size(1, str.size());
      head(field, field_size(1, k.size()) + field_size(2, value));
      bytes(1, k);
      head(2, value);
      bytes(1, str);
      return;
    }
    const std::size_t value = value_size(v);
    head(field, field_size(1, k.size()) + field_size(2, value));
    bytes(1, k);
    head(2, value);
    if (const bool* flag = std::get_if<bool>(&v)) {
      key(2, kVarint);
      *p_++ = *flag ? 1 : 0;
    } else {
      key(3, kVarint);
      varint(static_cast<uint64_t>(std::get<int64_t>(v)));
    }
  }
  void span(const Span& s) {
    trace_id(1, s.trace_id);
    span_id(2, s.span_id);
    if (!s.trace_state.empty()) bytes(3, s.trace_state);
    if (s.parent_span_id != 0) span_id(4, s.parent_span_id);
    if (!s.name.empty()) bytes(5, s.name);
    key(6, kVarint);
    varint(static_cast<uint64_t>(s.kind));
    fixed64(7, static_cast<uint64_t>(s.start_unix_ns));
    fixed64(8, static_cast<uint64_t>(s.end_unix_ns));
    if (!s.preset_attributes.empty()) copy(s.preset_attributes.data(), s.preset_attributes.size());
    for (const auto& [k, v] : s.attributes) attribute(9, k, v);
    for (const auto& l : s.links) {
      head(13, kLinkSize);
      trace_id(1, l.trace_id);
      span_id(2, l.span_id);
    }
    if (s.error) {
      head(15, status_size(s));
      if (!s.status_message.empty()) bytes(2, s.status_message);
      key(3, kVarint);
      varint(2);  // STATUS_CODE_ERROR
    }
  }

 private:
  // `v`'s eight bytes in the given order, one store.
  void put64(uint64_t v, std::endian order) {
    if (order != std::endian::native) v = __builtin_bswap64(v);
    std::memcpy(p_, &v, 8);
    p_ += 8;
  }
  char* p_;
};

// A proto3 string must be UTF-8 (a collector refuses the whole batch otherwise): a span with
// bytes that are not gets a copy with U+FFFD in their place, as in the JSON.
// The top bits of `t`'s bytes OR-ed together (0x80 set: a byte past ASCII), eight at a time.
inline uint64_t high_bits(std::string_view t) {
  uint64_t acc = 0;
  std::size_t i = 0;
  for (uint64_t word; i + 8 <= t.size(); i += 8) {
    std::memcpy(&word, t.data() + i, 8);
    acc |= word;
  }
  // The tail (under eight bytes) in at most three loads, not a loop per byte.
  if (t.size() - i >= 4) {
    uint32_t word;
    std::memcpy(&word, t.data() + i, 4);
    acc |= word;
    i += 4;
  }
  if (t.size() - i >= 2) {
    uint16_t word;
    std::memcpy(&word, t.data() + i, 2);
    acc |= word;
    i += 2;
  }
  if (i < t.size()) acc |= static_cast<unsigned char>(t[i]);
  return acc & 0x8080808080808080ull;
}

bool utf8_throughout(const Span& s) {
  // Almost every span is ASCII throughout: one pass over its text says so.
  uint64_t high = high_bits(s.name) | high_bits(s.status_message) | high_bits(s.trace_state);
  for (const auto& a : s.attributes) {
    if (std::string_view str; text_of(a.second, str)) high |= high_bits(str);
  }
  if (high == 0) return true;
  if (!valid_utf8(s.name) || !valid_utf8(s.status_message) || !valid_utf8(s.trace_state)) return false;
  return std::all_of(s.attributes.begin(), s.attributes.end(), [](const auto& a) {
    std::string_view str;
    return !text_of(a.second, str) || valid_utf8(str);
  });
}
Span made_utf8(const Span& s) {
  Span c = s;
  c.name = replace_invalid_utf8(s.name);
  c.trace_state = replace_invalid_utf8(s.trace_state);
  c.status_message = replace_invalid_utf8(s.status_message);
  for (auto& [k, v] : c.attributes) {
    if (std::string_view str; text_of(v, str)) v = replace_invalid_utf8(str);  // owned from here on
  }
  return c;
}

}  // namespace pb

}  // namespace

namespace {

// One span as it goes into the request: ScopeSpans' field 2, its length, the Span.
void append_protobuf_span(std::string& out, const Span& given) {
  std::optional<Span> fixed;  // a span with bytes that are not UTF-8 (rare) is written from a fixed copy
  if (!pb::utf8_throughout(given)) fixed = pb::made_utf8(given);
  const Span& s = fixed ? *fixed : given;
  const std::size_t size = pb::span_size(s);
  const std::size_t at = out.size();
  out.resize(at + pb::field_size(2, size));
  pb::Writer w(out.data() + at);
  w.head(2, size);
  w.span(s);
  if (w.at() != out.data() + out.size()) {  // a size that disagrees with its writing: a bug here
    std::fprintf(stderr, "nimbus: a span's protobuf wrote %td bytes into %zu\n", w.at() - out.data() - at, out.size() - at);
    std::abort();
  }
}

// Resource {repeated KeyValue attributes = 1}: its content.
std::string protobuf_resource(std::string_view service, std::string_view service_version) {
  const std::string name = replace_invalid_utf8(service), version = replace_invalid_utf8(service_version);
  std::vector<std::pair<std::string_view, pb::Value>> attributes = {{"service.name", name},
                                                                    {"telemetry.sdk.name", std::string("nimbus")}};
  if (!version.empty()) attributes.emplace_back("service.version", version);
  std::size_t size = 0;
  for (const auto& [k, v] : attributes) size += pb::field_size(1, pb::attribute_size(k, v));
  std::string out(size, '\0');
  pb::Writer w(out.data());
  for (const auto& [k, v] : attributes) w.attribute(1, k, v);
  return out;
}

// ExportTraceServiceRequest {repeated ResourceSpans resource_spans = 1}; ResourceSpans
// {Resource resource = 1; repeated ScopeSpans scope_spans = 2}; ScopeSpans
// {InstrumentationScope scope = 1; repeated Span spans = 2}; InstrumentationScope {string
// name = 1}: the request up to its spans, around `resource` (protobuf_resource), for spans
// (append_protobuf_span's, back to back) of `spans_size` bytes.
std::string protobuf_head(std::string_view resource, std::size_t spans_size) {
  constexpr std::string_view kScope = "nimbus";
  const std::size_t scope = pb::field_size(1, kScope.size());
  const std::size_t scope_spans = pb::field_size(1, scope) + spans_size;
  const std::size_t resource_spans = pb::field_size(1, resource.size()) + pb::field_size(2, scope_spans);
  const std::size_t total = pb::field_size(1, resource_spans);
  std::string out(total - spans_size, '\0');
  pb::Writer w(out.data());
  w.head(1, resource_spans);
  w.bytes(1, resource);
  w.head(2, scope_spans);
  w.head(1, scope);
  w.bytes(1, kScope);
  if (w.at() != out.data() + out.size()) {
    std::fprintf(stderr, "nimbus: otlp_protobuf's head wrote %td bytes into %zu\n", w.at() - out.data(), out.size());
    std::abort();
  }
  return out;
}

std::string wrap_protobuf(std::string_view resource, std::string_view spans) {
  return protobuf_head(resource, spans.size()).append(spans);
}

std::string encoded_attributes(OtlpProtocol protocol,
                               const std::vector<std::pair<std::string_view, Span::Value>>& attributes) {
  std::string out;
  if (protocol == OtlpProtocol::json) {
    for (const auto& [k, v] : attributes) {
      if (!out.empty()) out += ',';
      append_attribute(out, k, v);  // its strings escaped and made UTF-8
    }
    return out;
  }
  std::vector<std::pair<std::string_view, pb::Value>> fixed;
  for (const auto& [k, v] : attributes) {
    std::string_view text;
    fixed.emplace_back(k, text_of(v, text) ? pb::Value(replace_invalid_utf8(text)) : v);
  }
  std::size_t size = 0;
  for (const auto& [k, v] : fixed) size += pb::field_size(9, pb::attribute_size(k, v));
  out.resize(size);
  pb::Writer w(out.data());
  for (const auto& [k, v] : fixed) w.attribute(9, k, v);
  return out;
}

std::string resource_of(OtlpProtocol protocol, std::string_view service, std::string_view service_version) {
  return protocol == OtlpProtocol::json ? json_prefix(service, service_version)
                                        : protobuf_resource(service, service_version);
}

}  // namespace

// Span {bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4;
// string name = 5; SpanKind kind = 6; fixed64 start_time_unix_nano = 7; fixed64
// end_time_unix_nano = 8; repeated KeyValue attributes = 9; repeated Link links = 13; Status
// status = 15}; Link {bytes trace_id = 1; bytes span_id = 2}; Status {string message = 2;
// StatusCode code = 3}. Written by hand, as the JSON is: the schema is stable and small, and
// generated code would bring libprotobuf for seven messages.
std::string Tracer::otlp_protobuf(const std::vector<Span>& spans, std::string_view service,
                                  std::string_view service_version) {
  std::string body;
  for (const auto& s : spans) append_protobuf_span(body, s);
  return wrap_protobuf(protobuf_resource(service, service_version), body);
}

void Tracer::encode(const Span& s, std::string& out) const {
  if (settings_.protocol == OtlpProtocol::json) {
    append_json_span(out, s);
  } else {
    append_protobuf_span(out, s);
  }
}

void Tracer::run() {
  std::unique_lock lock(mu_);
  Duration backoff = std::chrono::milliseconds(100);
  std::string batch;  // encoded spans
  std::string head, packed;  // the protobuf request's head; a gzipped body
  const bool json = settings_.protocol == OtlpProtocol::json;
  while (true) {
    cv_.wait_for(lock, settings_.flush, [&] { return stopping_ || ends_.size() >= settings_.max_batch; });
    if (ends_.empty()) {
      if (stopping_) return;
      continue;
    }
    batch.clear();
    std::size_t spans = ends_.size();
    if (spans <= settings_.max_batch) {
      batch.swap(pending_);  // pending_ takes the emptied batch's room
      ends_.clear();
    } else {  // a backlog: the oldest max_batch
      spans = settings_.max_batch;
      const uint32_t cut = ends_[spans - 1];
      batch.assign(pending_, 0, cut);
      pending_.erase(0, cut);
      ends_.erase(ends_.begin(), ends_.begin() + static_cast<std::ptrdiff_t>(spans));
      for (auto& e : ends_) e -= cut;
    }
    const bool last_round = stopping_;
    lock.unlock();
    // The request's parts: what goes before the spans, the spans where they are, what closes it.
    if (!json) head = protobuf_head(resource_, batch.size());
    std::array<std::string_view, 3> parts = {json ? std::string_view(resource_) : std::string_view(head),
                                             json ? json_spans(batch) : std::string_view(batch),
                                             json ? kJsonEnd : std::string_view()};
    std::span<const std::string_view> body = parts;
    // gzip at the fastest level: the exporter shares the host's cores.
    if (settings_.gzip.value_or(false)) {
      std::string whole;
      for (const auto part : parts) whole.append(part);
      if (gzip_compress(whole, packed, 1)) body = std::span<const std::string_view>(&(parts[0] = packed), 1);
    }
    bool sent = false;
    std::string problem;
    // On the way out, one try (a dead collector must not hold the host's stop).
    const int attempts = last_round ? 1 : std::max(1, settings_.max_attempts);
    for (int attempt = 1; attempt <= attempts && !sent; ++attempt) {
      bool retryable = true;
      sent = client_->post(body, &problem, &retryable);
      lock.lock();
      ++stats_.export_requests;
      if (!sent) ++stats_.export_failures;
      stats_.connections = client_->connects();
      const bool stop_now = stopping_;
      lock.unlock();
      if (sent || !retryable || attempt == attempts || stop_now) break;
      // Backoff with the wait cut short by a stop; new spans queue meanwhile (bounded).
      lock.lock();
      cv_.wait_for(lock, backoff, [&] { return stopping_; });
      lock.unlock();
      backoff = std::min<Duration>(backoff * 2, std::chrono::seconds(5));
    }
    lock.lock();
    if (sent) {
      stats_.exported += spans;
      backoff = std::chrono::milliseconds(100);
    } else {
      stats_.failed += spans;
      if (stopping_) {
        // Stopping and the collector failed: the rest is given up at once, not tried batch
        // by batch (one that never answers would hold the stop a timeout per batch).
        stats_.failed += ends_.size();
        pending_.clear();
        ends_.clear();
      }
      if (!warned_) {
        warned_ = true;
        lock.unlock();
        logger_.host(LogLevel::warn, "traces: the collector did not take a batch; spans are dropped and counted (nimbus_trace_spans_failed_total)",
                     {{"endpoint", settings_.endpoint}, {"error", problem}});
        lock.lock();
      }
    }
  }
}

}  // namespace nimbus
