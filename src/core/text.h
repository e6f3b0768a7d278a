#pragma once
// Small text helpers shared by the parts that show payloads as JSON (the admin API, stream
// batches): is it UTF-8, and its base64 when it is not.
#include <string>
#include <string_view>

namespace nimbus {

bool valid_utf8(std::string_view s);
std::string base64(std::string_view in);  // standard alphabet, padded

}  // namespace nimbus
