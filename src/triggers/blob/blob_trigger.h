#pragma once
// Blob triggers, and blobs over HTTP (the admin API and upload routes).
// A blob trigger is a store subscription plus a queue: the commit that puts or deletes a blob
// also enqueues one event per interested function into `_blobs.<function>` (store.h), so an
// acknowledged put never loses its events and each version fires each function once. The
// queue trigger consumes those queues with its leases, retries and dead letters; at delivery
// the blob's bytes become the payload.
#include <string>
#include <vector>

#include "core/app_spec.h"
#include "core/expected.h"
#include "store/store.h"
#include "triggers/http/server.h"

namespace nimbus {

// What the store is told: every blob trigger of the app, each into its function's queue.
std::vector<BlobSubscription> blob_subscriptions(const AppSpec& app);

// Reads the bytes of the blob a blob event names into inv.payload (none for a delete). When a
// newer put replaced that version meanwhile, the payload is the newer bytes and metadata
// blob.payload_version says which version they are ("0": the blob is gone).
Status load_blob_payload(Store& store, Invocation& inv);

// The condition of a blob write: If-Match (an ETag, quoted or not), or If-None-Match: *
// ("": create only); nullopt when there is none.
std::optional<std::string> blob_condition(const IncomingRequest& request);

// A PUT or POST of a blob: the body, its content-type, and blob_condition() for the put.
Batch::BlobPut blob_put_from(IncomingRequest& request, std::string container, std::string name);
// The traceparent a write through `request` gives its blob events: the request's own, so their
// functions' spans are children of the caller's (empty when it sent none: they start traces).
std::string blob_traceparent(IncomingRequest& request);
// And the request's tracestate, when its traceparent is passed on.
std::string blob_tracestate(IncomingRequest& request);

// 201 with the blob's metadata as JSON (and its ETag), or the store's error with the fitting
// status: 412 for a condition that does not hold, 400 for a bad name, 413 for too large.
HttpReply blob_written_reply(const Expected<BatchResult>& result);
HttpReply blob_error_reply(const Error& error);

// {"container", "name", "path", "version", "etag", "size", "content_type", "sha256",
// "created_ms", "updated_ms", "metadata"} as JSON text.
std::string blob_info_json(const BlobInfo& info);
// {"container", "blobs": [...], "next_after"} as JSON text.
std::string blob_page_json(const std::string& container, const BlobPage& page);

}  // namespace nimbus
