#pragma once
// Frames of the worker protocol (docs/worker-protocol.md): a big-endian u32 length, a type
// byte, a big-endian u32 header length, a JSON object header and raw body bytes. The decoder
// is incremental (feed it whatever the socket gave) and turns every malformed input into an
// error value; it never trusts a length it has not bounded.
#include <boost/json/object.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/invocation.h"

namespace nimbus {

inline constexpr int kWorkerProtocolVersion = 1;
inline constexpr std::size_t kDefaultMaxFrame = 16u << 20;

enum class FrameType : uint8_t {
  init = 1,
  ready = 2,
  invoke = 3,
  result = 4,
  log = 5,
  host_call = 6,
  host_result = 7,
  heartbeat = 8,
  shutdown = 9,
  fatal = 10,
};
std::string_view to_string(FrameType type);

// The per-invocation frames' headers, read without a JSON tree by a decoder told to
// (FrameDecoder::decode_typed): building and walking a tree for every invocation was the
// largest piece of the process hop's user time. Unknown keys are skipped, as the protocol asks.
struct InvokeHeader {
  Invocation inv;       // id, event attributes, message_id, metadata, traceparent, http
  std::string trigger;  // as written (to_string(TriggerKind))
  int64_t attempt = 1;
  int64_t deadline_ms = 0;  // Unix ms; 0 = not given
  int64_t time_ms = 0;      // attributes.time_ms, Unix ms; 0 = not given
};

struct ResultHeader {
  std::string id;
  std::string status;  // "ok" or "error"
  bool has_error = false;
  std::string error_type;
  std::string error_message;
  std::string error_stack;
  bool has_http = false;
  int64_t http_status = 200;  // when http.status is absent or not an integer
  Headers headers;
  bool malformed_headers = false;  // http.headers held something other than [name, value] strings
};

struct Frame {
  FrameType type = FrameType::heartbeat;
  boost::json::object header;  // empty for a frame decoded typed
  std::string body;
  InvokeHeader invoke;  // an invoke frame decoded typed
  ResultHeader result;  // a result frame decoded typed
};

// Appends the encoded frame to `out`.
void encode_frame(FrameType type, const boost::json::object& header, std::string_view body, std::string& out);

// For the per-invocation frames, which are written often enough that building a JSON tree
// first shows in the process hop: the header is written as text straight into the frame.
// Start with begin_frame, append the header's JSON text to `out`, then end_frame.
std::size_t begin_frame(FrameType type, std::string& out);  // returns where the frame starts
void end_frame(std::size_t start, std::string_view body, std::string& out);
// Appends `s` as a JSON string (quoted and escaped); UTF-8 passes through as it is, bytes that
// are not UTF-8 become U+FFFD (headers are JSON text, which strict readers take as UTF-8 only).
void json_string(std::string& out, std::string_view s);
// Appends name/value pairs as the protocol's header list: [["name","value"],...].
void json_pairs(std::string& out, const Headers& pairs);

// The invoke frame of an invocation, and the result frame of an HTTP reply.
void encode_invoke(const Invocation& inv, std::string& out);
void encode_http_result(std::string_view id, const HttpReply& reply, std::string& out);

class FrameDecoder {
 public:
  explicit FrameDecoder(std::size_t max_frame = kDefaultMaxFrame) : max_frame_(max_frame) {}

  void feed(const char* data, std::size_t size) { buffer_.append(data, size); }

  // Frames of this type (invoke or result) are read into Frame::invoke / Frame::result
  // instead of Frame::header.
  void decode_typed(FrameType type) { typed_ |= 1u << static_cast<unsigned>(type); }

  enum class Status : uint8_t { frame, need_more, error };
  // Takes the next whole frame out of what was fed. After an error the stream is unusable:
  // *error says what was wrong, for the log.
  Status next(Frame& out, std::string& error);

  std::size_t buffered() const { return buffer_.size() - consumed_; }

 private:
  std::size_t max_frame_;
  std::string buffer_;
  std::size_t consumed_ = 0;
  bool failed_ = false;
  uint32_t typed_ = 0;
};

}  // namespace nimbus
