#include "cli/admin_client.h"

#include <signal.h>

#include <cctype>
#include <iostream>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>

#include "core/private_file.h"
#include "host/host.h"

namespace nimbus {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

Expected<RunningHost> find_running_host(const std::filesystem::path& app_dir) {
  auto file = host_file(app_dir);
  auto text = read_file(file);
  if (!text) {
    return Error{"no host is running for the app in " + app_dir.string() +
                 " (no .nimbus/host.json); start one with `nimbus start`"};
  }
  boost::system::error_code ec;
  json::value v = json::parse(*text, ec);
  if (ec || !v.is_object()) return Error{file.string() + " is not valid JSON; delete it and start the host again"};
  RunningHost h;
  const auto& o = v.as_object();
  auto admin = o.if_contains("admin");
  auto pid = o.if_contains("pid");
  if (!admin || !admin->is_string() || !pid || !pid->is_int64()) {
    return Error{file.string() + " lacks pid or admin; delete it and start the host again"};
  }
  h.pid = static_cast<int>(pid->as_int64());
  if (::kill(h.pid, 0) != 0 && errno == ESRCH) {
    return Error{"the host recorded in " + file.string() + " (pid " + std::to_string(h.pid) +
                 ") is not running; start one with `nimbus start`"};
  }
  const std::string admin_url(admin->as_string());  // parse_uri's view points into it
  auto parsed = boost::urls::parse_uri(admin_url);
  if (!parsed) return Error{file.string() + ": admin URL is not valid"};
  h.admin_host = std::string(parsed->host_address());
  if (!h.admin_host.empty() && h.admin_host.front() == '[') h.admin_host = h.admin_host.substr(1, h.admin_host.size() - 2);
  h.admin_port = parsed->port_number();
  auto token = read_file(app_dir / ".nimbus" / "admin.token");
  if (!token) return Error{"cannot read the admin token: " + token.error().message};
  h.token = *token;
  while (!h.token.empty() && (h.token.back() == '\n' || h.token.back() == '\r')) h.token.pop_back();
  return h;
}

namespace {

// One plain line for what went wrong on the way to the host: no Boost source locations.
Error unreachable(const std::string& host, int port, const char* step, const boost::system::error_code& ec) {
  std::string why = ec.message();
  if (!why.empty()) why[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(why[0])));
  const std::string at = host + ":" + std::to_string(port);
  if (ec == asio::error::connection_refused) {
    return Error{"no host is running for this app at " + at + " (connection refused)"};
  }
  return Error{std::string("cannot ") + step + " the host at " + at + " (" + why + ")"};
}

}  // namespace

Expected<HttpResponse> http_request(const std::string& host, int port, const std::string& method,
                                    const std::string& target, const std::string& body,
                                    const std::string& bearer_token,
                                    const std::vector<std::pair<std::string, std::string>>& headers) {
  asio::io_context ctx;
  asio::ip::tcp::resolver resolver(ctx);
  asio::ip::tcp::socket socket(ctx);
  boost::system::error_code ec;
  auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) return unreachable(host, port, "resolve the address of", ec);
  asio::connect(socket, endpoints, ec);
  if (ec) return unreachable(host, port, "connect to", ec);
  http::request<http::string_body> req{http::string_to_verb(method), target, 11};
  req.set(http::field::host, host);
  req.set(http::field::connection, "close");
  if (!bearer_token.empty()) req.set(http::field::authorization, "Bearer " + bearer_token);
  if (!body.empty()) req.set(http::field::content_type, "application/json");
  for (const auto& [name, value] : headers) req.set(name, value);
  req.body() = body;
  req.prepare_payload();
  http::write(socket, req, ec);
  if (ec) return unreachable(host, port, "send a request to", ec);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(1ull << 30);
  http::read(socket, buffer, parser, ec);
  if (ec) return unreachable(host, port, "read the answer of", ec);
  HttpResponse out;
  out.status = static_cast<int>(parser.get().result_int());
  out.content_type = std::string(parser.get()[http::field::content_type]);
  for (const auto& field : parser.get()) {
    std::string name(field.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers.emplace_back(std::move(name), std::string(field.value()));
  }
  out.body = std::move(parser.get().body());
  return out;
}

int fail(const std::string& message) {
  std::cerr << "nimbus: " << message << "\n";
  return 1;
}

Expected<boost::json::object> admin_call(const std::filesystem::path& app_dir, const std::string& method,
                                         const std::string& target, const std::string& body,
                                         const std::vector<std::pair<std::string, std::string>>& headers) {
  namespace json = boost::json;
  auto host = find_running_host(app_dir);
  if (!host) return host.error();
  auto res = http_request(host->admin_host, host->admin_port, method, target, body, host->token, headers);
  if (!res) return res.error();
  boost::system::error_code ec;
  json::value v = json::parse(res->body, ec);
  if (ec || !v.is_object()) return Error{"the host answered " + std::to_string(res->status) + " with: " + res->body};
  if (res->status >= 300) {
    auto message_of = [](const json::object& o) -> std::optional<std::string> {
      const auto* m = o.if_contains("message");
      if (m && m->is_string()) return std::string(m->as_string());
      return std::nullopt;
    };
    const auto* err = v.as_object().if_contains("error");
    if (err && err->is_object()) {
      if (auto m = message_of(err->as_object())) return Error{*m};
    }
    if (auto m = message_of(v.as_object())) return Error{*m};  // durable's shape
    return Error{res->body};
  }
  return v.as_object();
}

}  // namespace nimbus
