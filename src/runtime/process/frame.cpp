#include "runtime/process/frame.h"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <array>
#include <chrono>

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

namespace json = boost::json;

// Where a value of a typed header goes. A schema routes each key of the objects it knows;
// everything else is skipped.
struct Slot {
  enum Kind : uint8_t { skip, text, number, object, pairs, pair } kind = skip;
  std::string* to_text = nullptr;
  int64_t* to_number = nullptr;
  int which = 0;            // kind object: which of the schema's objects
  Headers* list = nullptr;  // kind pairs: [["name","value"],...] or {"name":"value",...}
};

Slot text(std::string& s) { return {Slot::text, &s}; }
Slot number(int64_t& n) { return {Slot::number, nullptr, &n}; }
Slot object(int which) { return {Slot::object, nullptr, nullptr, which}; }
Slot pairs(Headers& list) { return {Slot::pairs, nullptr, nullptr, 0, &list}; }

struct InvokeSchema {
  InvokeHeader& h;
  Slot route(int object_id, std::string_view key) {
    Invocation& inv = h.inv;
    switch (object_id) {
      case 0:
        if (key == "id") return text(inv.id);
        if (key == "trigger") return text(h.trigger);
        if (key == "attempt") return number(h.attempt);
        if (key == "deadline_ms") return number(h.deadline_ms);
        if (key == "traceparent") return text(inv.traceparent);
        if (key == "tracestate") return text(inv.tracestate);
        if (key == "message_id") return text(inv.message_id);
        if (key == "attributes") return object(1);
        if (key == "metadata") return pairs(inv.metadata);
        if (key == "http") return object(2);
        break;
      case 1:
        if (key == "id") return text(inv.event_id);
        if (key == "source") return text(inv.source);
        if (key == "type") return text(inv.type);
        if (key == "subject") return text(inv.subject);
        if (key == "time_ms") return number(h.time_ms);
        break;
      case 2:
        if (key == "method") return text(inv.http->method);
        if (key == "path") return text(inv.http->path);
        if (key == "query") return text(inv.http->query);
        if (key == "headers") return pairs(inv.http->headers);
        if (key == "params") return pairs(inv.http->params);
        break;
    }
    return {};
  }
  void opened(int which) {
    if (which == 2 && !h.inv.http) h.inv.http.emplace();
  }
  void malformed_pairs() {}  // the host writes them; a worker takes what it can
};

struct ResultSchema {
  ResultHeader& h;
  Slot route(int object_id, std::string_view key) {
    switch (object_id) {
      case 0:
        if (key == "id") return text(h.id);
        if (key == "status") return text(h.status);
        if (key == "error") return object(1);
        if (key == "http") return object(2);
        break;
      case 1:
        if (key == "type") return text(h.error_type);
        if (key == "message") return text(h.error_message);
        if (key == "stack") return text(h.error_stack);
        break;
      case 2:
        if (key == "status") return number(h.http_status);
        if (key == "headers") return pairs(h.headers);
        break;
    }
    return {};
  }
  void opened(int which) {
    if (which == 1) h.has_error = true;
    if (which == 2) h.has_http = true;
  }
  void malformed_pairs() { h.malformed_headers = true; }
};

// Boost.JSON's SAX handler for a typed header: the document must be an object; each value
// lands in the slot its key routes it to (the schema hears when one of its objects opens). A value of another kind than its slot's is skipped
// (as an absent key would be); inside a pairs list the schema hears of it.
template <class Schema>
class TypedHandler {
 public:
  static constexpr std::size_t max_array_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_object_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_string_size = static_cast<std::size_t>(-1);
  static constexpr std::size_t max_key_size = static_cast<std::size_t>(-1);

  explicit TypedHandler(Schema schema) : schema_(schema) {}
  bool not_an_object = false;

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }

  bool on_object_begin(json::error_code& ec) {
    if (stack_.empty()) return push({Level::object, nullptr, 0}, ec);
    Slot s = begin_value(Value::object);
    if (s.kind == Slot::object) {
      schema_.opened(s.which);
      return push({Level::object, nullptr, s.which}, ec);
    }
    return push(s.kind == Slot::pairs ? Level{Level::pairs_object, s.list} : Level{}, ec);
  }
  bool on_object_end(std::size_t, json::error_code&) {
    stack_.pop_back();
    return true;
  }
  bool on_array_begin(json::error_code& ec) {
    if (stack_.empty()) return root_not_object(ec);
    Slot s = begin_value(Value::array);
    if (s.kind == Slot::pairs) return push({Level::pairs_array, s.list}, ec);
    if (s.kind == Slot::pair) return push({Level::pair, s.list}, ec);
    return push({}, ec);
  }
  bool on_array_end(std::size_t, json::error_code&) {
    if (stack_.back().kind == Level::pair && (stack_.back().bad || stack_.back().index != 2)) {
      schema_.malformed_pairs();
      stack_.back().list->pop_back();  // not a [name, value]: left out
    }
    stack_.pop_back();
    return true;
  }

  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    key_.append(s.data(), s.size());
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code&) {
    std::string_view key(s.data(), s.size());
    if (!key_.empty()) {
      key_.append(s.data(), s.size());
      key = key_;
    }
    Level& top = stack_.back();
    if (top.kind == Level::object) {
      next_ = schema_.route(top.which, key);
    } else if (top.kind == Level::pairs_object) {
      top.list->push_back({std::string(key), std::string()});
      next_ = text(top.list->back().value);
    } else {
      next_ = {};
    }
    key_.clear();
    return true;
  }

  bool on_string_part(json::string_view s, std::size_t, json::error_code& ec) {
    if (!string_open_) {
      if (stack_.empty()) return root_not_object(ec);
      begin_string();
    }
    if (string_) string_->append(s.data(), s.size());
    return true;
  }
  bool on_string(json::string_view s, std::size_t n, json::error_code& ec) {
    if (!on_string_part(s, n, ec)) return false;
    string_ = nullptr;
    string_open_ = false;
    return true;
  }

  bool on_number_part(json::string_view, json::error_code&) { return true; }
  bool on_int64(int64_t i, json::string_view, json::error_code& ec) {
    if (stack_.empty()) return root_not_object(ec);
    Slot s = begin_value(Value::other);
    if (s.kind == Slot::number) *s.to_number = i;
    return true;
  }
  bool on_uint64(uint64_t, json::string_view, json::error_code& ec) { return scalar(ec); }
  bool on_double(double, json::string_view, json::error_code& ec) { return scalar(ec); }
  bool on_bool(bool, json::error_code& ec) { return scalar(ec); }
  bool on_null(json::error_code& ec) { return scalar(ec); }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }

 private:
  enum class Value : uint8_t { object, array, string, other };
  struct Level {
    enum Kind : uint8_t { skip, object, pairs_object, pairs_array, pair } kind = skip;
    Headers* list = nullptr;
    int which = 0;  // kind object: which of the schema's objects
    int index = 0;     // kind pair: elements so far
    bool bad = false;  // kind pair: an element was not a string
  };

  // The slot of a value that starts now, as a member of an object or an element of an array.
  Slot begin_value(Value v) {
    Level& top = stack_.back();
    switch (top.kind) {
      case Level::object: return std::exchange(next_, Slot{});
      case Level::pairs_object: {
        Slot s = std::exchange(next_, Slot{});
        if (v != Value::string) {  // {"name": 3}: not a pair
          schema_.malformed_pairs();
          top.list->pop_back();
          return {};
        }
        return s;
      }
      case Level::pairs_array:
        if (v != Value::array) {
          schema_.malformed_pairs();
          return {};
        }
        top.list->emplace_back();
        return {Slot::pair, nullptr, nullptr, 0, top.list};
      case Level::pair: {
        const int i = top.index++;
        if (v != Value::string || i > 1) {
          schema_.malformed_pairs();
          top.bad = true;
          return {};
        }
        Header& h = top.list->back();
        return text(i == 0 ? h.name : h.value);
      }
      case Level::skip: break;
    }
    return {};
  }
  void begin_string() {
    Slot s = begin_value(Value::string);
    string_ = s.kind == Slot::text ? s.to_text : nullptr;
    if (string_) string_->clear();  // a repeated key: the last one wins
    string_open_ = true;
  }
  bool scalar(json::error_code& ec) {
    if (stack_.empty()) return root_not_object(ec);
    (void)begin_value(Value::other);
    return true;
  }
  bool root_not_object(json::error_code& ec) {
    not_an_object = true;
    ec = json::error::syntax;
    return false;
  }

  // A fixed stack, as deep as Boost.JSON's parser goes by default: no allocation per frame.
  class Stack {
   public:
    bool empty() const { return size_ == 0; }
    bool full() const { return size_ == levels_.size(); }
    Level& back() { return levels_[size_ - 1]; }
    void push_back(const Level& l) { levels_[size_++] = l; }
    void pop_back() { --size_; }

   private:
    std::array<Level, json::parse_options{}.max_depth + 1> levels_;
    std::size_t size_ = 0;
  };
  bool push(const Level& l, json::error_code& ec) {
    if (stack_.full()) {
      ec = json::error::too_deep;
      return false;
    }
    stack_.push_back(l);
    return true;
  }

  Schema schema_;
  Stack stack_;
  Slot next_;
  std::string key_;
  std::string* string_ = nullptr;
  bool string_open_ = false;
};

// Parses `text` into the schema's targets; false (and *error) when it is not a JSON object.
template <class Schema>
bool parse_typed(std::string_view text, Schema schema, std::string* error) {
  json::basic_parser<TypedHandler<Schema>> parser(json::parse_options{}, schema);
  json::error_code ec;
  const std::size_t used = parser.write_some(false, text.data(), text.size(), ec);
  if (!ec && !parser.done()) ec = json::error::incomplete;
  if (!ec && used != text.size()) ec = json::error::extra_data;
  if (ec) {
    *error = parser.handler().not_an_object ? std::string() : " (" + ec.message() + ")";
    return false;
  }
  return true;
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

void encode_invoke(const Invocation& inv, std::string& out) {
  // One allocation: the fixed part, every string (escapes aside) and the body.
  std::size_t size = 400 + inv.id.size() * 2 + inv.traceparent.size() + inv.tracestate.size() + inv.event_id.size() + inv.source.size() +
                     inv.type.size() + inv.subject.size() + inv.message_id.size() + inv.payload.size();
  for (const auto& m : inv.metadata) size += m.name.size() + m.value.size() + 8;
  if (inv.http) {
    size += inv.http->path.size() + inv.http->query.size();
    for (const auto& h : inv.http->headers) size += h.name.size() + h.value.size() + 8;
    for (const auto& p : inv.http->params) size += p.name.size() + p.value.size() + 8;
  }
  out.reserve(out.size() + size);
  const std::size_t start = begin_frame(FrameType::invoke, out);
  auto key = [&out](std::string_view k) {
    out += ",\"";
    out += k;
    out += "\":";
  };
  auto pairs_object = [&out](const Headers& list) {
    out.push_back('{');
    bool first = true;
    for (const auto& p : list) {
      if (!first) out.push_back(',');
      first = false;
      json_string(out, p.name);
      out.push_back(':');
      json_string(out, p.value);
    }
    out.push_back('}');
  };
  out += "{\"id\":";
  json_string(out, inv.id);
  key("trigger");
  json_string(out, to_string(inv.trigger));
  key("attempt");
  out += std::to_string(inv.attempt);
  key("deadline_ms");
  out += std::to_string(deadline_unix_ms(inv));
  key("traceparent");
  json_string(out, inv.traceparent);
  if (!inv.tracestate.empty()) {  // (absent when none came: most invocations)
    key("tracestate");
    json_string(out, inv.tracestate);
  }
  key("attributes");
  out += "{\"id\":";
  json_string(out, inv.event_id.empty() ? inv.id : inv.event_id);
  key("source");
  json_string(out, inv.source);
  key("type");
  json_string(out, inv.type);
  key("subject");
  json_string(out, inv.subject);
  key("time_ms");
  out += std::to_string(inv.enqueued_ms != 0
                            ? inv.enqueued_ms
                            : std::chrono::duration_cast<std::chrono::milliseconds>(inv.time.time_since_epoch()).count());
  out.push_back('}');
  if (!inv.message_id.empty()) {
    key("message_id");
    json_string(out, inv.message_id);
  }
  key("metadata");
  pairs_object(inv.metadata);
  if (inv.http) {
    key("http");
    out += "{\"method\":";
    json_string(out, inv.http->method);
    key("path");
    json_string(out, inv.http->path);
    key("query");
    json_string(out, inv.http->query);
    key("headers");
    json_pairs(out, inv.http->headers);
    key("params");
    pairs_object(inv.http->params);
    out.push_back('}');
  }
  out.push_back('}');
  end_frame(start, inv.payload, out);
}

void encode_http_result(std::string_view id, const HttpReply& reply, std::string& out) {
  std::size_t size = 80 + id.size() + reply.body.size();
  for (const auto& h : reply.headers) size += h.name.size() + h.value.size() + 8;
  out.reserve(out.size() + size);
  const std::size_t start = begin_frame(FrameType::result, out);
  out += "{\"id\":";
  json_string(out, id);
  out += ",\"status\":\"ok\",\"http\":{\"status\":";
  out += std::to_string(reply.status);
  out += ",\"headers\":";
  json_pairs(out, reply.headers);
  out += "}}";
  end_frame(start, reply.body, out);
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
  const std::string_view text(p + 9, header_len);
  const auto frame_type = static_cast<FrameType>(type);
  auto not_an_object = [&](const std::string& why) {
    return fail(std::string(to_string(frame_type)) + " frame header is not a JSON object" + why);
  };
  if (typed_ & (1u << type)) {
    out.header.clear();
    std::string why;
    bool ok = true;
    if (frame_type == FrameType::invoke) {
      out.invoke = InvokeHeader{};
      ok = parse_typed(text, InvokeSchema{out.invoke}, &why);
    } else if (frame_type == FrameType::result) {
      out.result = ResultHeader{};
      ok = parse_typed(text, ResultSchema{out.result}, &why);
    }
    if (!ok) return not_an_object(why);
  } else {
    boost::system::error_code ec;
    boost::json::value header = boost::json::parse(text, ec);
    if (ec || !header.is_object()) return not_an_object(ec ? " (" + ec.message() + ")" : "");
    out.header = std::move(header.as_object());
  }
  out.type = frame_type;
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
