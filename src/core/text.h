#pragma once
// Small text helpers shared by the parts that show payloads as JSON (the admin API, stream
// batches, log lines, worker frames): is it UTF-8, and its base64 when it is not.
#include <optional>
#include <string>
#include <string_view>

namespace nimbus {

// UTF-8 as RFC 3629 has it: no overlong forms, no surrogates, nothing above U+10FFFF.
bool valid_utf8(std::string_view s);
// The length of the well-formed UTF-8 sequence that starts at p (1 to 4), or 0 when the bytes
// there are not one. `left` bytes may be read.
std::size_t utf8_sequence(const char* p, std::size_t left);
// `s` with each byte that is not part of well-formed UTF-8 replaced by U+FFFD (as Node and
// browsers decode such bytes): for text that goes into JSON, which readers take as UTF-8 only.
std::string replace_invalid_utf8(std::string_view s);
std::string base64(std::string_view in);  // standard alphabet, padded
std::string hex(std::string_view in);     // lowercase, two digits a byte
std::string ascii_lower(std::string_view in);  // A-Z to a-z, other bytes as they are
// The bytes of standard base64 (padding optional); nullopt when `in` is not base64.
std::optional<std::string> base64_decode(std::string_view in);

}  // namespace nimbus
