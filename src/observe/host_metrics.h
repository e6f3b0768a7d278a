#pragma once
// The metrics a scrape reads at the time it asks, rather than counts as things happen: the
// process (process_*, named as the Prometheus client libraries name them), the build, and what
// the store holds (queue depths, stream lag). All in the Prometheus text format 0.0.4.
#include <string>
#include <string_view>

#include "core/app_spec.h"
#include "core/expected.h"

namespace nimbus {

class Store;

// CPU seconds, resident and virtual memory, open and maximum fds, threads and start time,
// from /proc/self (in memory: no disk I/O).
void process_metrics_text(std::string& out);

// nimbus_build_info{version="..."} 1
void build_info_text(std::string& out, std::string_view version);

// Per queue: messages ready, delayed and in flight, and dead letters; per stream partition:
// records kept and the next offset; per consumer group and partition: the lag. Reads the
// store: a store I/O thread (Store::run_blocking).
Status store_state_metrics_text(Store& store, const AppSpec& app, std::string& out);

}  // namespace nimbus
