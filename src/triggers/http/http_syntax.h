#pragma once
// Small checks on raw HTTP/1.1 syntax that the server makes beyond what Beast's parser does.
// Pure functions over bytes: no Asio, no Beast.
#include <string>
#include <string_view>

namespace nimbus {

// `s` without leading and trailing optional whitespace (spaces and tabs: RFC 9110 5.6.3).
std::string_view trim_ows(std::string_view s);

// The first transfer coding in a Transfer-Encoding value that is not `chunked` (lower-cased,
// parameters dropped), "" when every coding is chunked, and "(empty)" for a list of none.
// RFC 9112 6.1: a server that receives a coding it does not understand answers 501.
std::string unsupported_transfer_coding(std::string_view value);

}  // namespace nimbus
