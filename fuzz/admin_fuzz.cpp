// libFuzzer target for what the admin API reads from a request (admin/admin_request.h, and
// the blob put it shares with upload routes), committed to the real SQLite store as the admin
// API commits it. Input: a request as text:
//   METHOD TARGET
//   name: value        (headers, up to an empty line)
//
//   body
// Invariants: a queue message and a stream record made from any request commit (names aside,
// they hold bytes) and read back as they went in; a stream record lands in the partition its
// key picks; a blob put either is refused with a message or reads back whole; query numbers
// parse or are absent, never anything in between.
#include <map>

#include "fuzz/fuzz_input.h"
#include "fuzz/fuzz_store.h"
#include "admin/admin_request.h"
#include "triggers/blob/blob_trigger.h"
#include "triggers/http/router.h"

namespace nimbus::fuzz {

// A request read from text, as the HTTP server's would be (names case-insensitive).
class TextRequest final : public IncomingRequest {
 public:
  explicit TextRequest(std::string_view text) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    auto sp = line.find(' ');
    method_ = line.substr(0, sp);
    target_ = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
    while (!text.empty()) {
      nl = text.find('\n');
      std::string_view h = text.substr(0, nl);
      text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
      if (h.empty()) break;
      auto colon = h.find(':');
      std::string_view value = colon == std::string_view::npos ? std::string_view() : h.substr(colon + 1);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      headers_.push_back({std::string(h.substr(0, colon)), std::string(value)});
    }
    body_ = std::string(text);
  }
  std::string_view method() const override { return method_; }
  std::string_view target() const override { return target_; }
  std::optional<std::string_view> header(std::string_view name) const override {
    if (const std::string* v = find_header(headers_, name)) return std::string_view(*v);
    return std::nullopt;
  }
  void for_each_header(const std::function<void(std::string_view, std::string_view)>& fn) const override {
    for (const auto& h : headers_) fn(h.name, h.value);
  }
  std::size_t header_count() const override { return headers_.size(); }
  std::string take_body() override { return body_; }  // a copy: each reader takes it once
  const std::string& body() const { return body_; }

 private:
  std::string_view method_, target_;
  Headers headers_;
  std::string body_;
};

namespace {

std::string check_message(TextRequest& request) {
  NewMessage m = message_from_request(request);
  FUZZ_EXPECT(m.payload == request.body(), "the message payload is not the body");
  Store& store = fuzz_store();
  const std::string queue = "admin-fuzz";
  auto purged = store.purge_sync(queue);
  FUZZ_EXPECT(purged.ok(), "purge: " + purged.error().message);
  Batch b;
  b.enqueues.push_back({queue, m});
  auto r = store.commit_sync(std::move(b));
  FUZZ_EXPECT(r.ok(), "a message from a request does not commit: " + r.error().message);
  auto peek = store.peek(queue, 2);
  FUZZ_EXPECT(peek.ok() && peek->size() == 1, "the message is not there");
  const Message& got = peek->front();
  FUZZ_EXPECT(got.id == r->message_ids.at(0), "the message has another id");
  FUZZ_EXPECT(got.payload == m.payload && got.type == m.type && got.subject == m.subject && got.source == m.source,
              "the message reads back changed");
  FUZZ_EXPECT(got.event_id == (m.event_id.empty() ? got.id : m.event_id), "the message's event id");
  FUZZ_EXPECT(got.metadata.size() == m.metadata.size(), "the message's metadata");
  FUZZ_EXPECT(got.due_ms >= got.enqueued_ms, "a message due before it was enqueued");
  return "";
}

std::string check_record(TextRequest& request) {
  StreamSpec stream;
  stream.name = "admin-fuzz";
  stream.partitions = 4;
  Batch::Append a = record_from_request(request, stream);
  FUZZ_EXPECT(a.record.payload == request.body() && a.partitions == 4, "the record is not the request's");
  const Batch::Append sent = a;
  Store& store = fuzz_store();
  Batch b;
  b.appends.push_back(std::move(a));
  auto r = store.commit_sync(std::move(b));
  FUZZ_EXPECT(r.ok(), "a record from a request does not commit: " + r.error().message);
  const auto at = r->appended.at(0);
  FUZZ_EXPECT(at.partition >= 0 && at.partition < 4, "a record outside the stream's partitions");
  if (!sent.key.empty()) FUZZ_EXPECT(at.partition == stream_partition(sent.key, 4), "the key did not pick the partition");
  auto records = store.read_stream(stream.name, at.partition, at.offset, 1);
  FUZZ_EXPECT(records.ok() && records->size() == 1, "the record is not there");
  const StreamRecord& got = records->front();
  FUZZ_EXPECT(got.offset == at.offset && got.partition == at.partition && got.key == sent.key, "the record's place");
  FUZZ_EXPECT(got.payload == sent.record.payload && got.type == sent.record.type &&
                  got.subject == sent.record.subject && got.source == sent.record.source,
              "the record reads back changed");
  return "";
}

// PUT /admin/blobs/CONTAINER/PATH, as AdminApi::blobs reads it.
std::string check_blob(TextRequest& request) {
  std::string_view path = request.target().substr(0, request.target().find('?'));
  constexpr std::string_view kPrefix = "/admin/blobs/";
  if (path.substr(0, kPrefix.size()) != kPrefix) return "";
  std::string decoded;
  if (!percent_decode(path.substr(kPrefix.size()), decoded)) return "";
  const auto slash = decoded.find('/');
  if (slash == std::string::npos) return "";
  Batch b;
  b.blob_puts.push_back(blob_put_from(request, decoded.substr(0, slash), decoded.substr(slash + 1)));
  const Batch::BlobPut put = b.blob_puts.back();
  Store& store = fuzz_store();
  auto r = store.commit_sync(std::move(b));
  if (!r) {
    FUZZ_EXPECT(!r.error().message.empty(), "a blob put refused with no message");
    return "";
  }
  FUZZ_EXPECT(check_blob_container(put.container).empty() && check_blob_name(put.name).empty(),
              "the store took a blob with an invalid name");
  auto blob = store.get_blob(put.container, put.name);
  FUZZ_EXPECT(blob.ok() && blob->has_value() && (*blob)->data == put.data, "the blob does not read back");
  return "";
}

}  // namespace

std::string check_admin_input(std::string_view text) {
  TextRequest request(text);
  for (std::string_view name : {"limit", "from", "partition", "from_offset", "from_time_ms"}) {
    auto n = query_int(request.target(), name);
    if (n) FUZZ_EXPECT(std::to_string(*n).size() <= 20, "a query number out of range");
  }
  if (auto bad = check_message(request); !bad.empty()) return bad;
  if (auto bad = check_record(request); !bad.empty()) return bad;
  return check_blob(request);
}

}  // namespace nimbus::fuzz

NIMBUS_FUZZ_TARGET(nimbus::fuzz::check_admin_input, 8192)
