#include "triggers/http/http_syntax.h"

#include <cctype>

namespace nimbus {

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string unsupported_transfer_coding(std::string_view value) {
  bool any = false;
  while (true) {
    auto comma = value.find(',');
    std::string_view item = trim_ows(value.substr(0, comma));
    if (auto semi = item.find(';'); semi != std::string_view::npos) item = trim_ows(item.substr(0, semi));
    if (!item.empty()) {
      any = true;
      std::string coding;
      for (char ch : item) coding += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (coding != "chunked") return coding;
    }
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return any ? std::string() : std::string("(empty)");
}

}  // namespace nimbus
