#pragma once
// MQTT topics (MQTT 3.1.1, section 4.7): the filters a trigger subscribes with ("devices/+/telemetry",
// "site/#"), the names a message is published to, the templates of MQTT outputs
// ("devices/{device}/commands") and broker URLs. Pure text: the manifest validates with it, the
// MQTT trigger matches and publishes with it.
#include <string>
#include <string_view>
#include <vector>

#include "core/invocation.h"

namespace nimbus {

// "" when `filter` is a valid topic filter, else what is wrong and what is expected. '+' must be
// a whole level; '#' a whole level and the last one. A "$share/<group>/" prefix (a shared
// subscription: the broker gives each message to one member of the group) is allowed.
std::string check_topic_filter(std::string_view filter);

// "" when `topic` is a valid topic name to publish to (no wildcards), else what is wrong.
std::string check_topic_name(std::string_view topic);

// Does a message published to `topic` match `filter` (as the broker decides)? When it does,
// `captures` (if given) receives what each '+' matched, in order, then what '#' matched.
// Topics starting with '$' match only filters that name that first level literally.
bool topic_matches(std::string_view filter, std::string_view topic, std::vector<std::string>* captures = nullptr);

// "" when `pattern` is a valid output topic: a topic name whose levels may hold {name}
// placeholders, filled from the output's metadata when it is published.
std::string check_topic_template(std::string_view pattern);

// `pattern` with each {name} replaced by the metadata value `name`. A placeholder without a
// value, or a value that would change the topic's levels ('/', '+', '#'), sets *problem.
std::string fill_topic_template(std::string_view pattern, const Headers& metadata, std::string* problem);

struct MqttAddress {
  std::string host;
  int port = 1883;
};

// Parses "mqtt://HOST[:PORT]" (or tcp://); "" in *problem, or what is wrong and what is expected.
MqttAddress parse_mqtt_url(std::string_view url, std::string* problem);

}  // namespace nimbus
