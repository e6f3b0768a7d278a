#pragma once
// Identifiers: invocation ids (unique, sortable by time within a host), W3C trace ids, and
// secrets (function keys, admin tokens) from the OS's CSPRNG.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nimbus {

// 32 lowercase hex characters; cheap enough for every request (per-thread state, no locks).
std::string new_invocation_id();

// A W3C traceparent continuing `incoming` when it is valid (its sampled flag kept: parent-based
// sampling), else starting a new trace, sampled with the ratio set below.
std::string continue_trace(std::string_view incoming);
// The share of new traces marked sampled (1.0 until the tracer, observe/trace.h, sets it).
void set_trace_sample_ratio(double ratio);
// A new span id (never 0), for a span inside an invocation's own.
uint64_t new_span_id();
// The span id in a traceparent's parent-id field (0 when malformed), and its sampled flag.
uint64_t span_id_of(std::string_view traceparent);
bool trace_sampled(std::string_view traceparent);
bool valid_traceparent(std::string_view traceparent);
// A valid traceparent's parts, read in one pass (nullopt when it is not valid): its trace id
// (the 32 digits, and their value as two halves), its parent-id and its sampled flag.
struct TraceparentParts {
  std::string_view trace_id;
  uint64_t trace_high = 0, trace_low = 0;
  uint64_t span_id = 0;
  bool sampled = false;
};
std::optional<TraceparentParts> parse_traceparent(std::string_view traceparent);
// The trace-id part of a traceparent ("" when malformed).
std::string_view trace_id_of(std::string_view traceparent);
// `traceparent` (valid) with `span` as its parent-id: what a span of ours passes on to the work
// it causes.
std::string with_span_id(std::string_view traceparent, uint64_t span);
// The W3C `tracestate` that goes on with a trace continued from `incoming_traceparent`: empty
// when that traceparent starts a new trace (continue_trace would not continue it), or when the
// tracestate is not a list of at most 32 printable members; else the list as it came (blank
// members and the whitespace around members dropped), members dropped from its end until it
// fits 512 characters (members over 128 characters first). We add no member of our own: the
// spec's "pass it on unchanged".
std::string continue_tracestate(std::string_view incoming_traceparent, std::string_view tracestate);

// Compares a presented secret with the real one in time that does not depend on where they
// differ. (OpenSSL's CRYPTO_memcmp does the same; linking libcrypto for it alone cost the host
// a millisecond of start-up in dynamic relocations.)
bool secrets_equal(std::string_view presented, std::string_view secret);

// `bytes` random bytes from the OS, as URL-safe base64 without padding.
std::string new_secret(std::size_t bytes = 32);

}  // namespace nimbus
