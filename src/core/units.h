#pragma once
// Durations ("250ms", "5s", "2m", "1h", bare numbers are seconds) and sizes ("512", "64KiB",
// "10MiB", "1GiB", "10MB"): how the manifest and the CLI spell them.
#include <optional>
#include <string>
#include <string_view>

#include "core/clock.h"

namespace nimbus {

std::optional<Duration> parse_duration(std::string_view text);
std::optional<std::size_t> parse_size(std::string_view text);
std::string format_duration(Duration d);

}  // namespace nimbus
