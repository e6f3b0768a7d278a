#include "runtime/process/frame.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "observe/log.h"

namespace nimbus {
namespace {

void put_u32(std::string& out, uint32_t v) {
  char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
               static_cast<char>(v)};
  out.append(b, 4);
}

uint32_t get_u32(const char* p) {
  auto u = [p](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(p[i])); };
  return (u(0) << 24) | (u(1) << 16) | (u(2) << 8) | u(3);
}

}  // namespace

std::string_view to_string(FrameType type) {
  switch (type) {
    case FrameType::init: return "init";
    case FrameType::ready: return "ready";
    case FrameType::invoke: return "invoke";
    case FrameType::result: return "result";
    case FrameType::log: return "log";
    case FrameType::host_call: return "host_call";
    case FrameType::host_result: return "host_result";
    case FrameType::heartbeat: return "heartbeat";
    case FrameType::shutdown: return "shutdown";
    case FrameType::fatal: return "fatal";
  }
  return "unknown";
}

void encode_frame(FrameType type, const boost::json::object& header, std::string_view body, std::string& out) {
  std::string json = boost::json::serialize(header);
  put_u32(out, static_cast<uint32_t>(1 + 4 + json.size() + body.size()));
  out.push_back(static_cast<char>(type));
  put_u32(out, static_cast<uint32_t>(json.size()));
  out += json;
  out.append(body.data(), body.size());
}

std::size_t begin_frame(FrameType type, std::string& out) {
  std::size_t start = out.size();
  out.append(4, '\0');
  out.push_back(static_cast<char>(type));
  out.append(4, '\0');
  return start;
}

void end_frame(std::size_t start, std::string_view body, std::string& out) {
  const std::size_t header = out.size() - start - 9;
  out.append(body.data(), body.size());
  const uint32_t length = static_cast<uint32_t>(out.size() - start - 4);
  const uint32_t header_length = static_cast<uint32_t>(header);
  for (int i = 0; i < 4; ++i) {
    out[start + static_cast<std::size_t>(i)] = static_cast<char>(length >> (24 - 8 * i));
    out[start + 5 + static_cast<std::size_t>(i)] = static_cast<char>(header_length >> (24 - 8 * i));
  }
}

void json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  append_json_escaped(out, s);
  out.push_back('"');
}

void json_pairs(std::string& out, const Headers& pairs) {
  out.push_back('[');
  bool first = true;
  for (const auto& p : pairs) {
    out += first ? "[" : ",[";
    first = false;
    json_string(out, p.name);
    out.push_back(',');
    json_string(out, p.value);
    out.push_back(']');
  }
  out.push_back(']');
}

FrameDecoder::Status FrameDecoder::next(Frame& out, std::string& error) {
  if (failed_) {
    error = "the stream already failed";
    return Status::error;
  }
  auto fail = [&](std::string why) {
    failed_ = true;
    error = std::move(why);
    return Status::error;
  };
  std::size_t available = buffer_.size() - consumed_;
  if (available < 4) return Status::need_more;
  const char* p = buffer_.data() + consumed_;
  uint32_t length = get_u32(p);
  if (length < 5) return fail("frame length " + std::to_string(length) + " is too small to hold a type and a header length");
  if (length > max_frame_) {
    return fail("frame length " + std::to_string(length) + " is over the limit of " + std::to_string(max_frame_) + " bytes");
  }
  if (available < 4 + static_cast<std::size_t>(length)) return Status::need_more;
  auto type = static_cast<uint8_t>(p[4]);
  if (type < 1 || type > 10) return fail("unknown frame type " + std::to_string(type));
  uint32_t header_len = get_u32(p + 5);
  if (header_len > length - 5) {
    return fail("header length " + std::to_string(header_len) + " runs past the end of a " + std::to_string(length) + "-byte frame");
  }
  boost::system::error_code ec;
  boost::json::value header = boost::json::parse(std::string_view(p + 9, header_len), ec);
  if (ec || !header.is_object()) {
    return fail(std::string(to_string(static_cast<FrameType>(type))) + " frame header is not a JSON object" +
                (ec ? " (" + ec.message() + ")" : ""));
  }
  out.type = static_cast<FrameType>(type);
  out.header = std::move(header.as_object());
  out.body.assign(p + 9 + header_len, length - 5 - header_len);
  consumed_ += 4 + static_cast<std::size_t>(length);
  // Drop consumed bytes now and then, not on every frame.
  if (consumed_ > (64u << 10) && consumed_ * 2 > buffer_.size()) {
    buffer_.erase(0, consumed_);
    consumed_ = 0;
  }
  return Status::frame;
}

}  // namespace nimbus
