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

struct Frame {
  FrameType type = FrameType::heartbeat;
  boost::json::object header;
  std::string body;
};

// Appends the encoded frame to `out`.
void encode_frame(FrameType type, const boost::json::object& header, std::string_view body, std::string& out);

// For the per-invocation frames, which are written often enough that building a JSON tree
// first shows in the process hop: the header is written as text straight into the frame.
// Start with begin_frame, append the header's JSON text to `out`, then end_frame.
std::size_t begin_frame(FrameType type, std::string& out);  // returns where the frame starts
void end_frame(std::size_t start, std::string_view body, std::string& out);
// Appends `s` as a JSON string (quoted and escaped); bytes >= 0x80 pass through as they are.
void json_string(std::string& out, std::string_view s);
// Appends name/value pairs as the protocol's header list: [["name","value"],...].
void json_pairs(std::string& out, const Headers& pairs);

class FrameDecoder {
 public:
  explicit FrameDecoder(std::size_t max_frame = kDefaultMaxFrame) : max_frame_(max_frame) {}

  void feed(const char* data, std::size_t size) { buffer_.append(data, size); }

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
};

}  // namespace nimbus
