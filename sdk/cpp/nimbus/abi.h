/* The native function ABI: the only thing that crosses between the Nimbus host and a function
 * library. Plain C: no C++ types, no exceptions, no allocation across the line. The host calls
 * nimbus_invoke_v1 with a borrowed view of the invocation and a table of host calls; the
 * function answers through host->reply or host->fail before it returns.
 * Bump NIMBUS_ABI_VERSION on any change; the host refuses a library built for a version it
 * does not speak (older than NIMBUS_ABI_OLDEST, or newer than its own) with a message naming
 * them. Fields are only ever added at the end of a struct, so a library built for an older
 * version reads a prefix of what a newer host gives it. */
#ifndef NIMBUS_ABI_H
#define NIMBUS_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NIMBUS_ABI_VERSION 3u
#define NIMBUS_ABI_OLDEST 2u

typedef struct nimbus_str {
  const char* data;
  size_t size;
} nimbus_str;

typedef struct nimbus_pair {
  nimbus_str name;
  nimbus_str value;
} nimbus_pair;

enum nimbus_log_level { NIMBUS_LOG_DEBUG = 0, NIMBUS_LOG_INFO = 1, NIMBUS_LOG_WARN = 2, NIMBUS_LOG_ERROR = 3 };

/* Everything borrowed: valid only during the call. */
typedef struct nimbus_invocation {
  uint32_t abi_version;
  uint32_t attempt;
  nimbus_str id;
  nimbus_str function;
  nimbus_str trigger; /* "http", "queue", ... */
  nimbus_str method;  /* HTTP only */
  nimbus_str path;    /* HTTP only, percent-encoded */
  nimbus_str query;   /* HTTP only, raw, without '?' */
  nimbus_str body;    /* the payload: binary-safe */
  const nimbus_pair* headers; /* HTTP headers, or message metadata */
  size_t header_count;
  const nimbus_pair* params; /* route parameters, decoded */
  size_t param_count;
  int64_t deadline_unix_ms; /* when the host stops waiting */
  nimbus_str traceparent;   /* W3C trace context */
  /* Since version 2: the CloudEvents attributes, and for store-backed triggers the message. */
  nimbus_str event_id;      /* CloudEvents id (a published event keeps it in every copy) */
  nimbus_str event_type;
  nimbus_str event_source;
  nimbus_str event_subject;
  nimbus_str message_id;    /* queue/topic: the delivered message; empty otherwise */
  int64_t time_unix_ms;     /* CloudEvents time: for a message, when it was enqueued */
  /* Since version 3. */
  nimbus_str tracestate;    /* W3C tracestate that goes with traceparent; empty when none came */
} nimbus_invocation;

/* The answer to a host call, borrowed for the duration of on_result. */
typedef struct nimbus_call_result {
  int ok;                    /* 1, or 0 with error set */
  nimbus_str error;
  nimbus_str body;
  const nimbus_pair* fields; /* e.g. etag, found, event_id, status */
  size_t field_count;
} nimbus_call_result;

typedef struct nimbus_host {
  uint32_t abi_version;
  void* ctx;
  void (*log)(void* ctx, int level, const char* message, size_t size);
  /* Sets the reply: status, headers, body (copied by the host). */
  void (*reply)(void* ctx, int status, const nimbus_pair* headers, size_t header_count,
                const char* body, size_t body_size);
  /* Marks the invocation failed; type and message go to the log, never to an HTTP client. */
  void (*fail)(void* ctx, const char* type, size_t type_size, const char* message,
               size_t message_size);
  /* Since version 2: a message for the named output binding (the function's `outputs:`),
   * committed together with the invocation's completion (the ack of a message, or before an
   * HTTP reply). For a state output, metadata "key" names the key. */
  void (*output)(void* ctx, const char* binding, size_t binding_size, const char* payload, size_t payload_size,
                 const nimbus_pair* metadata, size_t metadata_count);
  /* Since version 2: a host service (state.get, state.put, state.delete, publish, enqueue,
   * invoke; see docs/worker-protocol.md for their args and fields). Blocks until the host
   * answers, then calls on_result once, before returning. */
  void (*call)(void* ctx, const char* op, size_t op_size, const nimbus_pair* args, size_t arg_count, const char* body,
               size_t body_size, void (*on_result)(void* user, const nimbus_call_result* result), void* user);
} nimbus_host;

/* Exported by every function library. Returns 0 on success, non-zero after host->fail. */
typedef int (*nimbus_invoke_fn)(const nimbus_invocation* invocation, const nimbus_host* host);
typedef uint32_t (*nimbus_abi_version_fn)(void);

#define NIMBUS_ENTRY_SYMBOL "nimbus_invoke_v1"
#define NIMBUS_VERSION_SYMBOL "nimbus_abi_version"

#ifdef __cplusplus
}
#endif

#endif /* NIMBUS_ABI_H */
