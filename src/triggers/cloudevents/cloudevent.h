#pragma once
// CloudEvents 1.0 over HTTP (the HTTP protocol binding, 1.0.2): reading the events of one
// request in any of its three content modes, and checking each against the spec.
// - binary: the attributes in ce-* headers (percent-decoded), the body is the data, and
//   Content-Type is datacontenttype;
// - structured: Content-Type application/cloudevents+json, the body one JSON event (data as
//   JSON, or data_base64);
// - batch: Content-Type application/cloudevents-batch+json, the body a JSON array of them.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/expected.h"
#include "core/invocation.h"

namespace nimbus {

struct CloudEvent {
  std::string id, source, type, subject;
  int64_t time_ms = 0;  // `time`, when it has one
  std::string data;     // bytes: JSON text for JSON data, else as sent
  // Every other attribute as text, named "ce.<attribute>": specversion, time (as sent),
  // datacontenttype, dataschema and extensions (traceparent among them).
  Headers attributes;
};

// Errors carry the HTTP status to answer with in `code`: "400" (not a valid CloudEvent; the
// message says which event and what is wrong) or "415" (an event format other than JSON).
// `headers`: the request's Content-Type, ce-* and traceparent headers (names any case).
Expected<std::vector<CloudEvent>> read_cloudevents(const Headers& headers, std::string body);

// RFC 3339 (2026-12-02T18:53:06.5Z, or with an offset) as milliseconds since the Unix epoch.
std::optional<int64_t> parse_rfc3339_ms(std::string_view text);

}  // namespace nimbus
