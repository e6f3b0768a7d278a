#pragma once
// What the libFuzzer targets in fuzz/ share. Each target is a check function, `std::string
// check_<target>_input(std::string_view)`, that returns "" when every invariant holds and
// says which broke otherwise: libFuzzer's entry point (NIMBUS_FUZZ_MAIN, the fuzz build) aborts
// on it, and tests/fuzz_corpus_test.cpp runs the committed corpus through it in every build.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace nimbus::fuzz {

// Splits `in` on '\n' into at most `max` fields (the last keeps the rest, newlines and all),
// so that corpus files stay readable text: one field a line.
inline std::vector<std::string_view> fields(std::string_view in, std::size_t max) {
  std::vector<std::string_view> out;
  while (out.size() + 1 < max) {
    auto nl = in.find('\n');
    if (nl == std::string_view::npos) break;
    out.push_back(in.substr(0, nl));
    in.remove_prefix(nl + 1);
  }
  out.push_back(in);
  return out;
}

// Printable, for messages about inputs that may hold any byte.
inline std::string shown(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

}  // namespace nimbus::fuzz

// Returns from the enclosing check function with what broke.
#define FUZZ_EXPECT(condition, what)                                                 \
  do {                                                                               \
    if (!(condition)) return std::string(what) + " [failed: " #condition "]";        \
  } while (0)

#ifdef NIMBUS_FUZZ_MAIN
// libFuzzer's entry point for `check`; inputs longer than `max_size` are skipped (the parsers
// bound their inputs elsewhere; longer ones only slow the search down).
#define NIMBUS_FUZZ_TARGET(check, max_size)                                               \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {               \
    if (size > (max_size)) return 0;                                                      \
    std::string broken = check(std::string_view(reinterpret_cast<const char*>(data), size)); \
    if (!broken.empty()) {                                                                \
      std::fprintf(stderr, "invariant broken: %s\n", broken.c_str());                     \
      std::abort();                                                                       \
    }                                                                                     \
    return 0;                                                                             \
  }
#else
#define NIMBUS_FUZZ_TARGET(check, max_size)
#endif
