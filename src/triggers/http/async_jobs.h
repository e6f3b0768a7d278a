#pragma once
// Async HTTP routes' job records, one shape for both sides of the protocol: the HTTP trigger
// writes the first (pending) when it queues the request, the dispatcher that runs it writes
// the rest (running, succeeded, failed, pending again before a retry). They live in the state
// store kJobStore under the job id (the request's message id) for kJobTtl, and
// GET /_nimbus/jobs/<id> returns the record as it is.
#include <cstdint>
#include <memory>
#include <string>

#include "core/invocation.h"

namespace nimbus {

inline constexpr int64_t kJobTtlMs = 7 * 24 * 3600 * 1000LL;  // a week after its last change

// {"id", "function", "status", "attempts", "updated_ms"[, "result": {"status", "content_type",
// "body" (when it holds no NUL), "body_size"}][, "error"]}.
std::string job_record(const std::string& id, const std::string& function, const char* status, int attempts,
                       int64_t updated_ms, const HttpReply* reply = nullptr, const std::string& error = {});

class FeedHooks;

// The dispatcher's hooks for function `function`'s async queue: at delivery the queued request
// becomes the invocation's HTTP request again and the record says running; each completion
// commits the record (succeeded with the reply, failed, or pending before a retry) with its
// ack or retry. A record shows the error's kind only; the details are in the log.
std::shared_ptr<const FeedHooks> async_job_hooks(std::string function);

}  // namespace nimbus
