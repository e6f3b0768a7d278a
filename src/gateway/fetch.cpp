#include "gateway/fetch.h"
#include "triggers/http/asio_names.h"

#include <openssl/ssl.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/url/parse.hpp>
#include <optional>

namespace nimbus {


namespace {


template <class Stream>
asio::awaitable<std::string> exchange(Stream& stream, const std::string& host, const std::string& target, std::size_t max_bytes,
                                      const std::string& url) {
  http::request<http::empty_body> req{http::verb::get, target, 11};
  req.set(http::field::host, host);
  req.set(http::field::user_agent, "nimbus");
  req.set(http::field::accept, "application/json");
  req.set(http::field::connection, "close");
  auto [wec, w] = co_await http::async_write(stream, req, kNoThrow);
  if (wec) co_return "!cannot send the request to " + url + ": " + wec.message();
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(max_bytes);
  auto [rec, r] = co_await http::async_read(stream, buffer, parser, kNoThrow);
  if (rec == http::error::body_limit) co_return "!" + url + " sent more than " + std::to_string(max_bytes) + " bytes";
  if (rec) co_return "!no whole reply from " + url + ": " + rec.message();
  if (parser.get().result_int() != 200) {
    co_return "!" + url + " answered " + std::to_string(parser.get().result_int()) + "; expected 200";
  }
  co_return " " + parser.get().body();  // a leading ' ': the body; '!': an error
}

}  // namespace

Expected<std::string> fetch_url(const std::string& url, const std::string& ca_file, Duration timeout, std::size_t max_bytes) {
  auto parsed = boost::urls::parse_absolute_uri(url);
  if (!parsed || (parsed->scheme() != "http" && parsed->scheme() != "https") || parsed->host().empty()) {
    return Error{"'" + url + "' is not an http:// or https:// URL"};
  }
  const bool tls = parsed->scheme() == "https";
  const std::string host = parsed->host();
  const std::string port = parsed->has_port() ? std::string(parsed->port()) : tls ? "443" : "80";
  std::string target = parsed->encoded_path().empty() ? "/" : std::string(parsed->encoded_path());
  if (parsed->has_query()) target += "?" + std::string(parsed->encoded_query());
  const std::string host_header = parsed->has_port() ? host + ":" + port : host;

  std::optional<asio::ssl::context> ctx;  // outlives the io_context, whose frames may still hold a stream
  if (tls) {
    ctx.emplace(asio::ssl::context::tls_client);
    boost::system::error_code ec;
    if (ca_file.empty()) ctx->set_default_verify_paths(ec);
    else ctx->load_verify_file(ca_file, ec);
    if (ec) return Error{"cannot load the CA certificates" + (ca_file.empty() ? std::string() : " in " + ca_file) + ": " + ec.message()};
    ctx->set_verify_mode(asio::ssl::verify_peer);
  }
  auto outcome = std::make_shared<std::string>("!no reply from " + url + " within " +
                                               std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()) + " ms");
  asio::io_context ioc;
  asio::co_spawn(
      ioc,
      [outcome, ssl = ctx ? &*ctx : nullptr, host, port, host_header, target, max_bytes, url]() -> asio::awaitable<void> {
        auto executor = co_await asio::this_coro::executor;
        tcp::resolver resolver(executor);
        auto [rec, results] = co_await resolver.async_resolve(host, port, kNoThrow);
        if (rec) {
          *outcome = "!cannot resolve " + host + ": " + rec.message();
          co_return;
        }
        beast::tcp_stream tcp_stream(executor);
        auto [cec, ep] = co_await tcp_stream.async_connect(results, kNoThrow);
        if (cec) {
          *outcome = "!cannot connect to " + host_header + ": " + cec.message();
          co_return;
        }
        if (!ssl) {
          *outcome = co_await exchange(tcp_stream, host_header, target, max_bytes, url);
          co_return;
        }
        beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp_stream), *ssl);
        SSL_set_tlsext_host_name(stream.native_handle(), host.c_str());
        stream.set_verify_callback(asio::ssl::host_name_verification(host));
        auto [hec] = co_await stream.async_handshake(asio::ssl::stream_base::client, kNoThrow);
        if (hec) {
          *outcome = "!TLS with " + host_header + " failed: " + hec.message();
          co_return;
        }
        *outcome = co_await exchange(stream, host_header, target, max_bytes, url);
      },
      asio::detached);
  ioc.run_for(timeout);
  const std::string result = *outcome;
  if (result.empty() || result.front() == '!') return Error{result.empty() ? url : result.substr(1)};
  return result.substr(1);
}

}  // namespace nimbus
