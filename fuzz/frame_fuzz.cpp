// libFuzzer target for the worker protocol's frames (runtime/process/frame.h), both
// directions: the host reads result frames typed and the other frames as JSON trees; a worker
// (the native one, in C++) reads invoke frames typed. The first byte picks a mode:
//   0: a raw byte stream, decoded typed (invoke and result) as both sides do;
//   1: a raw byte stream, decoded as JSON trees, then re-encoded and decoded again;
//   2: an invocation from text fields, encoded as an invoke frame and decoded typed;
//   3: an HTTP reply from text fields, encoded as a result frame and decoded typed.
// Raw streams must decode the same whether fed whole or in pieces; a typed header must be
// refused exactly when the JSON tree reader refuses it; round trips give back what went in
// (strings exactly when they are UTF-8: the encoder replaces other bytes with U+FFFD).
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include "fuzz/fuzz_input.h"
#include "core/text.h"
#include "runtime/process/frame.h"

namespace nimbus::fuzz {
namespace {

constexpr std::size_t kMaxFrames = 64;
enum class Reading : uint8_t { typed, tree };  // how decode_all reads invoke and result headers

std::string same_headers(const Headers& got, const Headers& want, const char* what) {
  if (got.size() != want.size()) {
    return std::string(what) + ": " + std::to_string(got.size()) + " pairs back, " + std::to_string(want.size()) + " sent";
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (valid_utf8(want[i].name) && got[i].name != want[i].name) return std::string(what) + ": name " + shown(got[i].name);
    if (valid_utf8(want[i].value) && got[i].value != want[i].value) return std::string(what) + ": value " + shown(got[i].value);
  }
  return "";
}

// One decoded frame as text, to compare two decodings of the same stream.
std::string describe(const Frame& f) {
  std::string out = std::string(to_string(f.type)) + "|" + boost::json::serialize(f.header) + "|" + f.body + "|";
  if (f.type == FrameType::invoke) {
    const auto& h = f.invoke;
    out += h.inv.id + "|" + h.trigger + "|" + std::to_string(h.attempt) + "|" + std::to_string(h.deadline_ms) + "|" +
           std::to_string(h.time_ms) + "|" + h.inv.event_id + "|" + h.inv.source + "|" + h.inv.type + "|" + h.inv.subject +
           "|" + h.inv.message_id + "|" + h.inv.traceparent + "|";
    for (const auto& m : h.inv.metadata) out += m.name + "=" + m.value + ";";
    if (h.inv.http) {
      out += "|" + h.inv.http->method + " " + h.inv.http->path + "?" + h.inv.http->query;
      for (const auto& m : h.inv.http->headers) out += m.name + ":" + m.value + ";";
      for (const auto& m : h.inv.http->params) out += m.name + "=" + m.value + ";";
    }
  }
  if (f.type == FrameType::result) {
    const auto& r = f.result;
    out += r.id + "|" + r.status + "|" + std::to_string(r.has_error) + r.error_type + "|" + r.error_message + "|" +
           r.error_stack + "|" + std::to_string(r.has_http) + std::to_string(r.http_status) + "|" +
           std::to_string(r.malformed_headers);
    for (const auto& m : r.headers) out += m.name + ":" + m.value + ";";
  }
  return out;
}

// Decodes `stream` fed in pieces of `piece` bytes (0: whole): the frames, then "error: ..." or
// "need_more".
std::vector<std::string> decode_all(std::string_view stream, std::size_t piece, Reading reading, std::string* broken) {
  FrameDecoder decoder(1u << 16);
  if (reading == Reading::typed) {
    decoder.decode_typed(FrameType::invoke);
    decoder.decode_typed(FrameType::result);
  }
  std::vector<std::string> out;
  std::size_t fed = 0;
  while (out.size() < kMaxFrames) {
    Frame frame;
    std::string error;
    auto status = decoder.next(frame, error);
    if (status == FrameDecoder::Status::frame) {
      out.push_back(describe(frame));
      continue;
    }
    if (status == FrameDecoder::Status::error) {
      if (error.empty()) *broken = "an error with no message";
      std::string again;
      if (decoder.next(frame, again) != FrameDecoder::Status::error) *broken = "a failed stream decoded again";
      out.push_back("error");
      return out;
    }
    if (fed == stream.size()) break;
    std::size_t n = piece == 0 ? stream.size() - fed : std::min(piece, stream.size() - fed);
    decoder.feed(stream.data() + fed, n);
    fed += n;
  }
  out.push_back("need_more");
  return out;
}

std::string check_raw(std::string_view stream, std::size_t piece, Reading reading) {
  std::string broken;
  auto whole = decode_all(stream, 0, reading, &broken);
  FUZZ_EXPECT(broken.empty(), broken);
  auto pieces = decode_all(stream, piece, reading, &broken);
  FUZZ_EXPECT(broken.empty(), broken);
  // Fed whole, the decoder may stop at kMaxFrames before reaching an error the other sees.
  if (whole.size() < kMaxFrames && pieces.size() < kMaxFrames) {
    FUZZ_EXPECT(whole == pieces, "the stream decodes differently in pieces of " + std::to_string(piece));
  }
  // A typed header is refused exactly when the JSON tree reader refuses it.
  FrameDecoder typed_decoder(1u << 16), tree_decoder(1u << 16);
  typed_decoder.decode_typed(FrameType::invoke);
  typed_decoder.decode_typed(FrameType::result);
  typed_decoder.feed(stream.data(), stream.size());
  tree_decoder.feed(stream.data(), stream.size());
  for (std::size_t i = 0; i < kMaxFrames; ++i) {
    Frame a, b;
    std::string ea, eb;
    auto sa = typed_decoder.next(a, ea);
    auto sb = tree_decoder.next(b, eb);
    FUZZ_EXPECT(sa == sb, "typed and tree decoding disagree on frame " + std::to_string(i) + ": " + ea + " / " + eb);
    if (sa != FrameDecoder::Status::frame) break;
    if (reading == Reading::tree) {
      // Round trip: a frame read as a tree, written again, reads back the same.
      std::string again;
      encode_frame(b.type, b.header, b.body, again);
      FrameDecoder d;
      d.feed(again.data(), again.size());
      Frame c;
      std::string ec;
      FUZZ_EXPECT(d.next(c, ec) == FrameDecoder::Status::frame, "a re-encoded frame does not decode: " + ec);
      FUZZ_EXPECT(c.type == b.type && c.header == b.header && c.body == b.body, "a re-encoded frame reads back changed");
    }
  }
  return "";
}

std::string check_invoke_round_trip(std::string_view text) {
  auto f = fields(text, 16);
  f.resize(16);
  Invocation inv;
  inv.id = std::string(f[0]);
  inv.trigger = TriggerKind::at(static_cast<int>(f[1].size() % 2));  // http or admin: the kinds every host has
  inv.traceparent = std::string(f[2]);
  inv.event_id = std::string(f[3]);
  inv.source = std::string(f[4]);
  inv.type = std::string(f[5]);
  inv.subject = std::string(f[6]);
  inv.message_id = std::string(f[7]);
  inv.attempt = static_cast<int>(f[8].size()) + 1;
  inv.enqueued_ms = static_cast<int64_t>(f[8].size()) * 1000;
  if (!f[9].empty()) inv.metadata.push_back({std::string(f[9]), std::string(f[10])});
  if (!f[11].empty()) {
    auto& http = inv.http.emplace();
    http.method = std::string(f[11]);
    http.path = std::string(f[12]);
    http.query = std::string(f[13]);
    http.headers.push_back({std::string(f[14]), std::string(f[13])});
    http.params.push_back({std::string(f[12]), std::string(f[14])});
  }
  inv.payload = std::string(f[15]);
  std::string wire;
  encode_invoke(inv, wire);
  FrameDecoder decoder;
  decoder.decode_typed(FrameType::invoke);
  decoder.feed(wire.data(), wire.size());
  Frame frame;
  std::string error;
  FUZZ_EXPECT(decoder.next(frame, error) == FrameDecoder::Status::frame, "an encoded invoke frame does not decode: " + error);
  FUZZ_EXPECT(decoder.buffered() == 0, "an encoded invoke frame leaves bytes behind");
  const InvokeHeader& h = frame.invoke;
  auto same = [](const std::string& got, const std::string& sent) { return !valid_utf8(sent) || got == sent; };
  FUZZ_EXPECT(frame.type == FrameType::invoke && frame.body == inv.payload, "invoke body");
  FUZZ_EXPECT(same(h.inv.id, inv.id) && h.trigger == to_string(inv.trigger) && h.attempt == inv.attempt, "invoke id");
  FUZZ_EXPECT(same(h.inv.traceparent, inv.traceparent) && same(h.inv.message_id, inv.message_id), "invoke trace");
  FUZZ_EXPECT(same(h.inv.event_id, inv.event_id.empty() ? inv.id : inv.event_id), "invoke event id");
  FUZZ_EXPECT(same(h.inv.source, inv.source) && same(h.inv.type, inv.type) && same(h.inv.subject, inv.subject),
              "invoke attributes");
  FUZZ_EXPECT(h.time_ms == inv.enqueued_ms, "invoke time");
  if (auto bad = same_headers(h.inv.metadata, inv.metadata, "metadata"); !bad.empty()) return bad;
  FUZZ_EXPECT(h.inv.http.has_value() == inv.http.has_value(), "invoke http");
  if (inv.http) {
    FUZZ_EXPECT(same(h.inv.http->method, inv.http->method) && same(h.inv.http->path, inv.http->path) &&
                    same(h.inv.http->query, inv.http->query),
                "invoke http request line");
    if (auto bad = same_headers(h.inv.http->headers, inv.http->headers, "http headers"); !bad.empty()) return bad;
    if (auto bad = same_headers(h.inv.http->params, inv.http->params, "http params"); !bad.empty()) return bad;
  }
  return "";
}

std::string check_result_round_trip(std::string_view text) {
  auto f = fields(text, 7);
  f.resize(7);
  HttpReply reply;
  reply.status = 100 + static_cast<int>(f[1].size() % 500);
  for (std::size_t i = 2; i + 1 < 6; i += 2) {
    if (!f[i].empty()) reply.headers.push_back({std::string(f[i]), std::string(f[i + 1])});
  }
  reply.body = std::string(f[6]);
  std::string wire;
  encode_http_result(f[0], reply, wire);
  FrameDecoder decoder;
  decoder.decode_typed(FrameType::result);
  decoder.feed(wire.data(), wire.size());
  Frame frame;
  std::string error;
  FUZZ_EXPECT(decoder.next(frame, error) == FrameDecoder::Status::frame, "an encoded result frame does not decode: " + error);
  const ResultHeader& r = frame.result;
  FUZZ_EXPECT(frame.type == FrameType::result && frame.body == reply.body, "result body");
  FUZZ_EXPECT(!valid_utf8(f[0]) || r.id == f[0], "result id");
  FUZZ_EXPECT(r.status == "ok" && r.has_http && r.http_status == reply.status && !r.has_error, "result status");
  FUZZ_EXPECT(!r.malformed_headers, "result headers called malformed");
  return same_headers(r.headers, reply.headers, "result headers");
}

}  // namespace

std::string check_frame_input(std::string_view data) {
  if (data.empty()) return "";
  const auto mode = static_cast<unsigned char>(data[0]);
  data.remove_prefix(1);
  switch (mode % 4) {
    case 0: return check_raw(data, 1 + mode / 4 % 16, Reading::typed);
    case 1: return check_raw(data, 1 + mode / 4 % 16, Reading::tree);
    case 2: return check_invoke_round_trip(data);
    default: return check_result_round_trip(data);
  }
}

}  // namespace nimbus::fuzz

NIMBUS_FUZZ_TARGET(nimbus::fuzz::check_frame_input, 1u << 16)
