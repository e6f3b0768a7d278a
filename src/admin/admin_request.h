#pragma once
// What the admin API reads from a request besides its path: the queue message a POST
// .../messages makes, the stream record a POST .../records makes, and whole numbers in the
// query. Plain functions of the request, so the unit tests and the fuzzer reach them with no
// server running.
#include <cstdint>
#include <optional>
#include <string_view>

#include "core/app_spec.h"
#include "store/store.h"
#include "triggers/http/server.h"

namespace nimbus {

// POST /admin/queues/NAME/messages and /admin/topics/NAME/messages: the body is the payload;
// ce-type, ce-subject, ce-source (default /admin) and ce-id are its CloudEvents attributes,
// x-delay-ms its delay, content-type goes into its metadata. Takes the body.
NewMessage message_from_request(IncomingRequest& request);

// POST /admin/streams/NAME/records: the body is the record; x-key picks the partition; ce-type,
// ce-subject and ce-id are its attributes (source /admin); content-type goes into its
// metadata. Takes the body.
Batch::Append record_from_request(IncomingRequest& request, const StreamSpec& stream);

// Query parameter `name` of `target` (path?query) as a whole number; nullopt when it is
// absent, empty or not a whole number.
std::optional<int64_t> query_int(std::string_view target, std::string_view name);

}  // namespace nimbus
