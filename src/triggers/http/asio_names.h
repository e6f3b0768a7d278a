#pragma once
// The short names the Asio/Beast .cpp files share (the listener, the gateway's proxy and its
// fetches): never include from a header.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http.hpp>

namespace nimbus {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
// co_await op(..., kNoThrow) gives (error_code, ...) instead of throwing.
inline constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

}  // namespace nimbus
