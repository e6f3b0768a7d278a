// libFuzzer target for stream records on their way from outside to a consumer: appended to
// the real SQLite store as a function's stream output makes them (key, type and subject from
// its metadata), read back, and delivered as the JSON batch a stream trigger invokes with
// (triggers/stream/stream_trigger.h: stream_batch_payload), where a payload that is JSON is
// parsed into `data`. Input: one field a line: a key, a type, a subject, a metadata name, its
// value, then the payloads of up to 3 records separated by a line "--".
// Invariants: records commit and read back unchanged, in the partition their key picks; the
// batch is a JSON array of one object per record whose `data` (or `data_base64`) gives back
// the payload: the same JSON value, the same text, or the same bytes.
#include <boost/json.hpp>

#include "fuzz/fuzz_input.h"
#include "fuzz/fuzz_store.h"
#include "core/text.h"
#include "triggers/stream/stream_trigger.h"

namespace nimbus::fuzz {
namespace {

namespace json = boost::json;


// Does `o` (one element of the batch) give back `payload`?
std::string check_data(const json::object& o, const std::string& payload) {
  if (const json::value* b64 = o.if_contains("data_base64")) {
    FUZZ_EXPECT(b64->is_string() && !valid_utf8(payload), "data_base64 for a UTF-8 payload");
    auto bytes = base64_decode(b64->as_string());
    FUZZ_EXPECT(bytes && *bytes == payload, "data_base64 does not decode to the payload");
    return "";
  }
  const json::value* data = o.if_contains("data");
  FUZZ_EXPECT(data, "a record with neither data nor data_base64");
  boost::system::error_code ec;
  json::value parsed = payload.empty() ? json::value() : json::parse(payload, ec);
  // A JSON value a double cannot hold (1e999) cannot be written back as JSON: text then.
  boost::system::error_code again;
  if (!ec) (void)json::parse(json::serialize(parsed), again);
  if (!payload.empty() && !ec && !again) {
    FUZZ_EXPECT(*data == parsed, "data is not the payload's JSON value");
  } else if (payload.empty()) {
    FUZZ_EXPECT(data->is_string() && data->as_string().empty(), "an empty payload is not \"\"");
  } else {
    FUZZ_EXPECT(data->is_string() && std::string_view(data->as_string()) == payload, "data is not the payload's text");
  }
  return "";
}

}  // namespace

std::string check_stream_input(std::string_view text) {
  auto f = fields(text, 6);
  f.resize(6);
  std::vector<std::string> payloads;
  std::string_view rest = f[5];
  while (payloads.size() < 2) {
    auto sep = rest.find("\n--\n");
    if (sep == std::string_view::npos) break;
    payloads.emplace_back(rest.substr(0, sep));
    rest.remove_prefix(sep + 4);
  }
  payloads.emplace_back(rest);

  Store& store = fuzz_store();
  const std::string stream = "stream-fuzz";
  constexpr int kPartitions = 3;
  Batch b;
  for (const auto& p : payloads) {
    Batch::Append a;
    a.stream = stream;
    a.partitions = kPartitions;
    a.key = std::string(f[0]);
    a.record.type = std::string(f[1]);
    a.record.subject = std::string(f[2]);
    a.record.source = "/functions/fuzz";
    if (!f[3].empty()) a.record.metadata.push_back({std::string(f[3]), std::string(f[4])});
    a.record.payload = p;
    b.appends.push_back(std::move(a));
  }
  const Batch sent = b;
  auto r = store.commit_sync(std::move(b));
  FUZZ_EXPECT(r.ok(), "records do not commit: " + r.error().message);
  FUZZ_EXPECT(r->appended.size() == payloads.size(), "a position missing");
  std::vector<StreamRecord> records;
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    const auto at = r->appended[i];
    FUZZ_EXPECT(at.partition >= 0 && at.partition < kPartitions, "a record outside the partitions");
    if (!f[0].empty()) FUZZ_EXPECT(at.partition == stream_partition(f[0], kPartitions), "the key did not pick the partition");
    auto got = store.read_stream(stream, at.partition, at.offset, 1);
    FUZZ_EXPECT(got.ok() && got->size() == 1, "a record is not there");
    const StreamRecord& rec = got->front();
    const NewMessage& want = sent.appends[i].record;
    FUZZ_EXPECT(rec.payload == want.payload && rec.key == sent.appends[i].key && rec.type == want.type &&
                    rec.subject == want.subject && rec.source == want.source,
                "a record reads back changed");
    FUZZ_EXPECT(rec.metadata.size() == want.metadata.size() &&
                    (want.metadata.empty() || (rec.metadata[0].name == want.metadata[0].name &&
                                               rec.metadata[0].value == want.metadata[0].value)),
                "a record's metadata reads back changed");
    records.push_back(rec);
  }

  const std::string batch = stream_batch_payload(records);
  boost::system::error_code ec;
  json::value v = json::parse(batch, ec);
  FUZZ_EXPECT(!ec && v.is_array() && v.as_array().size() == records.size(), "the batch is not an array of the records");
  for (std::size_t i = 0; i < records.size(); ++i) {
    const json::value& e = v.as_array()[i];
    FUZZ_EXPECT(e.is_object(), "a batch element that is not an object");
    const json::object& o = e.as_object();
    FUZZ_EXPECT(o.contains("offset") && o.at("offset").as_int64() == records[i].offset, "a record's offset");
    FUZZ_EXPECT(std::string_view(o.at("key").as_string()) == replace_invalid_utf8(records[i].key), "a record's key");
    if (auto bad = check_data(o, records[i].payload); !bad.empty()) return bad;
  }
  return "";
}

}  // namespace nimbus::fuzz

NIMBUS_FUZZ_TARGET(nimbus::fuzz::check_stream_input, 8192)
