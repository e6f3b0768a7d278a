#pragma once
// Blob names and path patterns, shared by the store (which checks names and matches blob
// triggers' patterns inside the commit that writes a blob), the manifest and the triggers.
// A blob lives in a container ("uploads") under a name that is a path ("2024/05/a.csv").
// A pattern such as "{name}.csv" or "{year}/{rest*}" matches names: `{x}` captures one path
// segment (no '/'), `{x*}` captures one or more segments; captures are never empty.
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/expected.h"
#include "core/invocation.h"

namespace nimbus {

inline constexpr std::size_t kMaxBlobName = 1024;

// "" when valid, else what is wrong and what is expected (no '..' or '.' segment, no leading
// or trailing '/', no empty segment, no NUL or other control character, at most 1024 bytes).
std::string check_blob_name(std::string_view name);
// Containers: 1 to 63 of lower-case letters, digits, '.', '-', '_', starting with a letter or digit.
std::string check_blob_container(std::string_view container);

// "uploads/2024/a.csv" -> {"uploads", "2024/a.csv"}; an error naming what is wrong otherwise.
struct BlobAddress {
  std::string container;
  std::string name;
};
Expected<BlobAddress> split_blob_path(std::string_view path);

struct BlobPattern {
  struct Part {
    bool capture = false;
    bool many = false;   // {x*}: may span '/'
    std::string text;    // the literal, or the capture's name
  };
  std::vector<Part> parts;
  // The literal text every matching name starts with (for cheap filtering).
  std::string prefix() const;
  std::vector<std::string> captures() const;
};

// Parses the name part of a pattern (after the container). nullopt and a reason in *problem
// ("...; expected ...") when it is not valid: unclosed braces, an empty or bad capture name,
// two captures with nothing between them, a repeated capture name.
std::optional<BlobPattern> parse_blob_pattern(std::string_view pattern, std::string* problem);

// The captures when `name` matches `pattern` whole, in pattern order; nullopt otherwise.
std::optional<Headers> match_blob_pattern(const BlobPattern& pattern, std::string_view name);

// Fills the captures of `pattern` from `lookup`; an error naming the first one it has no value for.
Expected<std::string> fill_blob_pattern(const BlobPattern& pattern,
                                        const std::function<const std::string*(const std::string&)>& lookup);

// The blob events a trigger can ask for (a bit set).
enum BlobEvent : unsigned { kBlobCreated = 1, kBlobUpdated = 2, kBlobDeleted = 4 };
std::string_view blob_event_name(BlobEvent event);

// SHA-256 of `data` as 64 lower-case hex characters.
std::string sha256_hex(std::string_view data);

}  // namespace nimbus
