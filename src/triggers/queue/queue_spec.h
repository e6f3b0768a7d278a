#pragma once
// The queue trigger's settings (`- queue: {name, batch_size, max_wait, lease}`) and the topic
// trigger's, which add a subscription and its filters; read in queue/kind.cpp and
// topic/kind.cpp.
#include <string>

#include "core/app_spec.h"

namespace YAML {
class Node;
}

namespace nimbus {

class ManifestReader;

struct QueueTriggerSpec : TriggerSettings {
  std::string name;                             // the queue, or the topic
  int batch_size = 16;                          // received at a time (never above free capacity)
  Duration max_wait = std::chrono::seconds(1);  // an idle consumer looks again at least this often
  Duration lease{};                             // visibility timeout; 0 = the function's timeout + 30 s
};

// A topic subscription is a queue named <topic>/<subscription>. (A topic trigger's settings are
// a QueueTriggerSpec too: tell them apart by TriggerSpec::kind, or ask for this type.)
struct TopicTriggerSpec final : QueueTriggerSpec {
  std::string subscription;  // default: the function's name
  std::string type, source, subject_prefix;  // filters
};

// The keys both share (name, batch_size, max_wait, lease), at `path`, into `q`; `what` is
// "queue" or "topic". `extra` are the keys the caller reads itself. False after reporting.
bool read_queue_keys(ManifestReader& r, const YAML::Node& n, const std::string& path, const char* what,
                     std::initializer_list<std::string_view> extra, QueueTriggerSpec& q);

}  // namespace nimbus
