#pragma once
// gzip (RFC 1952) through zlib: the HTTP trigger's compressed replies and gzipped OTLP exports.
#include <string>

namespace nimbus {

// `in` compressed at `level` (1 fastest .. 9 smallest) into `out`; false when zlib fails.
bool gzip_compress(const std::string& in, std::string& out, int level);

}  // namespace nimbus
