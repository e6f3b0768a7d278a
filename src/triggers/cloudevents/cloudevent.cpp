#include "triggers/cloudevents/cloudevent.h"

#include <strings.h>

#include <boost/json.hpp>
#include <cctype>
#include <chrono>
#include <date/date.h>

#include "core/text.h"

namespace nimbus {
namespace {

namespace json = boost::json;

constexpr std::string_view kStructured = "application/cloudevents+json";
constexpr std::string_view kBatch = "application/cloudevents-batch+json";

// The media type of a Content-Type value: before any ';', trimmed, lower case.
std::string media_type(std::string_view content_type) {
  content_type = content_type.substr(0, content_type.find(';'));
  while (!content_type.empty() && content_type.back() == ' ') content_type.remove_suffix(1);
  while (!content_type.empty() && content_type.front() == ' ') content_type.remove_prefix(1);
  return ascii_lower(content_type);
}

bool is_json_type(const std::string& type) {
  const std::string m = media_type(type);
  return m.empty() || m == "application/json" || m == "text/json" ||
         (m.size() > 5 && m.compare(m.size() - 5, 5, "+json") == 0);
}

Error bad(std::string message) { return Error{std::move(message), "400"}; }

// Attribute names: lower-case letters and digits only (spec 1.0.2, "Attribute Naming").
bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  return true;
}

// Header values of the binary mode are percent-encoded where they hold '%', '"' or bytes
// outside printable ASCII (binding 3.1.3.2).
std::optional<std::string> percent_decode(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] != '%') {
      out += v[i];
      continue;
    }
    if (i + 2 >= v.size() || !std::isxdigit(static_cast<unsigned char>(v[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(v[i + 2]))) {
      return std::nullopt;
    }
    out += static_cast<char>(std::stoi(std::string(v.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  return out;
}

// Checks the attributes every event has and fills the named fields from `attributes`
// ("ce.<name>" -> text). `where` names the event in messages ("" or "event 3: ").
Status finish_event(CloudEvent& ev, const std::string& where) {
  auto take = [&ev](std::string_view name) -> std::optional<std::string> {
    for (auto it = ev.attributes.begin(); it != ev.attributes.end(); ++it) {
      if (std::string_view(it->name).substr(3) == name) {
        std::string v = std::move(it->value);
        ev.attributes.erase(it);
        return v;
      }
    }
    return std::nullopt;
  };
  const std::string* version = find_header(ev.attributes, "ce.specversion");
  if (!version) return bad(where + "specversion is missing; expected \"1.0\"");
  if (*version != "1.0") return bad(where + "specversion is '" + *version + "'; only CloudEvents 1.0 is taken");
  for (const char* required : {"id", "source", "type"}) {
    auto v = take(required);
    if (!v || v->empty()) return bad(where + required + " is missing or empty; every CloudEvent needs id, source, type and specversion");
    (required[0] == 'i' ? ev.id : required[0] == 's' ? ev.source : ev.type) = std::move(*v);
  }
  if (auto v = take("subject")) {
    if (v->empty()) return bad(where + "subject is empty; expected it absent or not empty");
    ev.subject = std::move(*v);
  }
  if (const std::string* t = find_header(ev.attributes, "ce.time")) {
    auto ms = parse_rfc3339_ms(*t);
    if (!ms) return bad(where + "time '" + *t + "' is not an RFC 3339 time such as 2026-12-02T18:53:06Z");
    ev.time_ms = *ms;
  }
  if (const std::string* s = find_header(ev.attributes, "ce.dataschema"); s && s->empty()) {
    return bad(where + "dataschema is empty; expected a URI");
  }
  return ok_status();
}

// One event in the JSON format (structured mode, or an element of a batch).
Expected<CloudEvent> from_json(const json::value& v, const std::string& where) {
  if (!v.is_object()) return bad(where + "is not a JSON object; expected an event such as {\"specversion\":\"1.0\",...}");
  CloudEvent ev;
  const json::object& o = v.as_object();
  const json::value* data = nullptr;
  const json::value* data_base64 = nullptr;
  for (const auto& [key, value] : o) {
    if (key == "data") {
      data = &value;
      continue;
    }
    if (key == "data_base64") {
      data_base64 = &value;
      continue;
    }
    if (!valid_name(key)) {
      return bad(where + "attribute '" + std::string(key) + "' is not a valid name; expected lower-case letters and digits");
    }
    std::string text;
    if (value.is_string()) text = std::string(value.as_string());
    else if (value.is_bool()) text = value.as_bool() ? "true" : "false";
    else if (value.is_int64() || value.is_uint64()) text = json::serialize(value);
    else if (value.is_null()) continue;  // absent
    else return bad(where + "attribute '" + std::string(key) + "' is " + (value.is_object() ? "an object" : value.is_array() ? "an array" : "a fractional number") +
                    "; expected a string, an integer or a boolean");
    ev.attributes.push_back({"ce." + std::string(key), std::move(text)});
  }
  if (data && data_base64) return bad(where + "has both data and data_base64; expected one of them");
  if (data_base64) {
    if (!data_base64->is_string()) return bad(where + "data_base64 is not a string; expected base64 text");
    auto bytes = base64_decode(data_base64->as_string());
    if (!bytes) return bad(where + "data_base64 is not valid base64");
    ev.data = std::move(*bytes);
  } else if (data && !data->is_null()) {
    const std::string* type = find_header(ev.attributes, "ce.datacontenttype");
    // A string under a type other than JSON is the data itself; anything else is JSON text.
    if (data->is_string() && type && !is_json_type(*type)) ev.data = std::string(data->as_string());
    else ev.data = json::serialize(*data);
  }
  if (auto st = finish_event(ev, where); !st) return st.error();
  return ev;
}

Expected<json::value> parse_json(const std::string& body, const char* what) {
  boost::system::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec) return bad(std::string("the body is not valid JSON (") + ec.message() + "); expected " + what);
  return v;
}

}  // namespace

std::optional<int64_t> parse_rfc3339_ms(std::string_view t) {
  // YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)
  auto digits = [&t](std::size_t at, std::size_t n) -> std::optional<int> {
    if (at + n > t.size()) return std::nullopt;
    int v = 0;
    for (std::size_t i = at; i < at + n; ++i) {
      if (!std::isdigit(static_cast<unsigned char>(t[i]))) return std::nullopt;
      v = v * 10 + (t[i] - '0');
    }
    return v;
  };
  auto y = digits(0, 4), mo = digits(5, 2), d = digits(8, 2), h = digits(11, 2), mi = digits(14, 2), s = digits(17, 2);
  if (!y || !mo || !d || !h || !mi || !s || t[4] != '-' || t[7] != '-' || (t[10] != 'T' && t[10] != 't') ||
      t[13] != ':' || t[16] != ':' || *h > 23 || *mi > 59 || *s > 60) {
    return std::nullopt;
  }
  const date::year_month_day ymd{date::year(*y), date::month(static_cast<unsigned>(*mo)), date::day(static_cast<unsigned>(*d))};
  if (!ymd.ok()) return std::nullopt;
  std::size_t at = 19;
  int64_t ms = 0;
  if (at < t.size() && t[at] == '.') {
    std::size_t start = ++at;
    int64_t scale = 100;
    while (at < t.size() && std::isdigit(static_cast<unsigned char>(t[at]))) {
      ms += (t[at] - '0') * scale;
      scale /= 10;
      ++at;
    }
    if (at == start) return std::nullopt;
  }
  int64_t offset_min = 0;
  if (at < t.size() && (t[at] == 'Z' || t[at] == 'z')) {
    ++at;
  } else if (at < t.size() && (t[at] == '+' || t[at] == '-')) {
    auto oh = digits(at + 1, 2), om = digits(at + 4, 2);
    if (!oh || !om || at + 3 >= t.size() || t[at + 3] != ':' || *oh > 23 || *om > 59) return std::nullopt;
    offset_min = (t[at] == '+' ? 1 : -1) * (*oh * 60 + *om);
    at += 6;
  } else {
    return std::nullopt;
  }
  if (at != t.size()) return std::nullopt;
  const int64_t days = date::sys_days(ymd).time_since_epoch().count();
  return ((days * 24 + *h) * 60 + *mi - offset_min) * 60000 + int64_t(*s) * 1000 + ms;
}

Expected<std::vector<CloudEvent>> read_cloudevents(const Headers& headers, std::string body) {
  const std::string* content_type = find_header(headers, "content-type");
  const std::string media = content_type ? media_type(*content_type) : "";
  std::vector<CloudEvent> out;
  if (media == kBatch) {
    auto v = parse_json(body, "a JSON array of CloudEvents");
    if (!v) return v.error();
    if (!v->is_array()) return bad("a batch is not a JSON array; expected [ {event}, ... ]");
    const json::array& a = v->as_array();
    out.reserve(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      auto ev = from_json(a[i], "event " + std::to_string(i) + ": ");
      if (!ev) return ev.error();
      out.push_back(std::move(*ev));
    }
    return out;
  }
  if (media == kStructured) {
    auto v = parse_json(body, "one CloudEvent in the JSON format");
    if (!v) return v.error();
    auto ev = from_json(*v, "");
    if (!ev) return ev.error();
    out.push_back(std::move(*ev));
    return out;
  }
  if (media.rfind("application/cloudevents", 0) == 0) {
    return Error{"the event format '" + media + "' is not taken; expected application/cloudevents+json, "
                 "application/cloudevents-batch+json, or binary mode (ce-* headers)", "415"};
  }
  // Binary mode: every attribute in a ce-* header.
  CloudEvent ev;
  for (const auto& h : headers) {
    const std::string name = ascii_lower(h.name);
    if (name.rfind("ce-", 0) != 0) continue;
    const std::string attribute = name.substr(3);
    if (!valid_name(attribute)) {
      return bad("header '" + h.name + "' names no valid attribute; expected ce- and lower-case letters and digits");
    }
    auto value = percent_decode(h.value);
    if (!value) return bad("header '" + h.name + "' has a bad percent-encoding");
    if (find_header(ev.attributes, "ce." + attribute)) return bad("header '" + h.name + "' appears twice");
    ev.attributes.push_back({"ce." + attribute, std::move(*value)});
  }
  if (ev.attributes.empty()) {
    return bad("the request is not a CloudEvent: expected ce-specversion, ce-id, ce-source and ce-type headers "
               "(binary mode), or Content-Type application/cloudevents+json or application/cloudevents-batch+json");
  }
  if (content_type) ev.attributes.push_back({"ce.datacontenttype", *content_type});
  // The distributed tracing extension: in binary mode the W3C headers themselves carry it.
  // A tracestate belongs to the traceparent it came with: the event's own goes only with its own.
  if (const std::string* tp = find_header(headers, "traceparent"); tp && !find_header(ev.attributes, "ce.traceparent")) {
    std::erase_if(ev.attributes, [](const Header& a) { return a.name == "ce.tracestate"; });
    ev.attributes.push_back({"ce.traceparent", *tp});
    std::string state;  // repeated headers, combined
    for (const auto& h : headers) {
      if (h.name.size() == 10 && strncasecmp(h.name.data(), "tracestate", 10) == 0) state += (state.empty() ? "" : ",") + h.value;
    }
    if (!state.empty()) ev.attributes.push_back({"ce.tracestate", std::move(state)});
  }
  ev.data = std::move(body);
  if (auto st = finish_event(ev, ""); !st) return st.error();
  out.push_back(std::move(ev));
  return out;
}

}  // namespace nimbus
