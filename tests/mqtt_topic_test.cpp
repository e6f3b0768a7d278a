// MQTT topics: filters are validated and matched as the broker does (MQTT 3.1.1, 4.7), output
// topic templates are filled from metadata, and broker URLs are parsed.
#include "core/mqtt_topic.h"

#include <gtest/gtest.h>

namespace nimbus {
namespace {

TEST(MqttTopicTest, ValidFiltersAndWhatIsWrongWithTheOthers) {
  for (const char* ok : {"devices/+/telemetry", "site/#", "#", "+", "+/+", "a//b", "/leading", "$SYS/#",
                         "$share/workers/devices/+/telemetry", "sensors/température"}) {
    EXPECT_EQ(check_topic_filter(ok), "") << ok;
  }
  struct Bad {
    const char* filter;
    const char* says;
  };
  for (const auto& [filter, says] : std::initializer_list<Bad>{{"", "is empty"},
                                                               {"a/b#", "'#' inside a level"},
                                                               {"a/#/b", "before the last level"},
                                                               {"a/b+", "'+' inside a level"},
                                                               {"+a/b", "'+' inside a level"},
                                                               {"$share/g", "shared subscription"},
                                                               {"$share//a", "shared subscription"},
                                                               {"\xff\xfe/x", "UTF-8"}}) {
    EXPECT_NE(check_topic_filter(filter).find(says), std::string::npos) << filter << ": " << check_topic_filter(filter);
  }
  EXPECT_NE(check_topic_filter(std::string("a\0b", 3)).find("NUL"), std::string::npos);
  EXPECT_NE(check_topic_filter(std::string(70000, 'a')).find("65535"), std::string::npos);
}

TEST(MqttTopicTest, TopicNamesHaveNoWildcards) {
  EXPECT_EQ(check_topic_name("devices/d1/commands"), "");
  EXPECT_NE(check_topic_name("devices/+/commands").find("wildcard"), std::string::npos);
  EXPECT_NE(check_topic_name("devices/#").find("wildcard"), std::string::npos);
  EXPECT_NE(check_topic_name("").find("empty"), std::string::npos);
}

TEST(MqttTopicTest, MatchingFollowsTheBrokersRules) {
  struct Case {
    const char* filter;
    const char* topic;
    bool matches;
  };
  for (const auto& c : std::initializer_list<Case>{
           {"devices/+/telemetry", "devices/d1/telemetry", true},
           {"devices/+/telemetry", "devices/d1/status", false},
           {"devices/+/telemetry", "devices/d1/x/telemetry", false},
           {"devices/+/telemetry", "devices//telemetry", true},  // '+' matches an empty level
           {"site/#", "site", true},                              // '#' includes the parent level
           {"site/#", "site/a/b/c", true},
           {"site/#", "sites/a", false},
           {"#", "anything/at/all", true},
           {"+", "one", true},
           {"+", "one/two", false},
           {"+/+", "/finance", true},
           {"a/b", "a/b", true},
           {"a/b", "a/b/", false},
           {"#", "$SYS/broker/uptime", false},  // wildcards do not reach '$' topics
           {"+/broker/uptime", "$SYS/broker/uptime", false},
           {"$SYS/#", "$SYS/broker/uptime", true},
           {"$share/g/devices/+", "devices/d9", true},
       }) {
    EXPECT_EQ(topic_matches(c.filter, c.topic), c.matches) << c.filter << " vs " << c.topic;
  }
}

TEST(MqttTopicTest, CapturesAreWhatTheWildcardsMatched) {
  std::vector<std::string> caught;
  ASSERT_TRUE(topic_matches("plant/+/line/+/temp", "plant/p1/line/7/temp", &caught));
  EXPECT_EQ(caught, (std::vector<std::string>{"p1", "7"}));
  ASSERT_TRUE(topic_matches("site/+/#", "site/north/a/b", &caught));
  EXPECT_EQ(caught, (std::vector<std::string>{"north", "a/b"}));
  ASSERT_TRUE(topic_matches("site/#", "site", &caught));
  EXPECT_EQ(caught, (std::vector<std::string>{""}));
  caught = {"untouched"};
  EXPECT_FALSE(topic_matches("a/+", "b/c", &caught));
  EXPECT_EQ(caught, (std::vector<std::string>{"untouched"}));
}

TEST(MqttTopicTest, OutputTemplatesAreCheckedAndFilledFromMetadata) {
  EXPECT_EQ(check_topic_template("devices/{device}/commands"), "");
  EXPECT_EQ(check_topic_template("alerts"), "");
  EXPECT_NE(check_topic_template("devices/{}/x").find("empty placeholder"), std::string::npos);
  EXPECT_NE(check_topic_template("devices/{device/x}").find("across a '/'"), std::string::npos);
  EXPECT_NE(check_topic_template("devices/device}").find("'}' with no '{'"), std::string::npos);
  EXPECT_NE(check_topic_template("devices/{device").find("never closed"), std::string::npos);
  EXPECT_NE(check_topic_template("devices/+").find("wildcard"), std::string::npos);

  std::string problem;
  EXPECT_EQ(fill_topic_template("devices/{device}/commands", {{"device", "d7"}}, &problem), "devices/d7/commands");
  EXPECT_EQ(problem, "");
  EXPECT_EQ(fill_topic_template("{site}/{device}", {{"device", "d7"}, {"site", "north"}}, &problem), "north/d7");
  EXPECT_EQ(fill_topic_template("devices/{device}/commands", {}, &problem), "");
  EXPECT_NE(problem.find("needs metadata \"device\""), std::string::npos) << problem;
  EXPECT_EQ(fill_topic_template("devices/{device}/commands", {{"device", "a/b"}}, &problem), "");
  EXPECT_NE(problem.find("one level"), std::string::npos) << problem;
  EXPECT_EQ(fill_topic_template("devices/{device}", {{"device", "#"}}, &problem), "");
  EXPECT_FALSE(problem.empty());
}

TEST(MqttTopicTest, BrokerUrls) {
  std::string problem;
  MqttAddress a = parse_mqtt_url("mqtt://127.0.0.1:1884", &problem);
  EXPECT_EQ(problem, "");
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 1884);
  a = parse_mqtt_url("tcp://broker.example/", &problem);
  EXPECT_EQ(problem, "");
  EXPECT_EQ(a.host, "broker.example");
  EXPECT_EQ(a.port, 1883);
  a = parse_mqtt_url("mqtt://[::1]:1885", &problem);
  EXPECT_EQ(problem, "");
  EXPECT_EQ(a.host, "::1");
  EXPECT_EQ(a.port, 1885);
  parse_mqtt_url("mqtts://broker:8883", &problem);
  EXPECT_NE(problem.find("TLS"), std::string::npos) << problem;
  parse_mqtt_url("http://broker", &problem);
  EXPECT_NE(problem.find("not an MQTT broker URL"), std::string::npos) << problem;
  parse_mqtt_url("mqtt://broker:0", &problem);
  EXPECT_NE(problem.find("from 1 to 65535"), std::string::npos) << problem;
  parse_mqtt_url("mqtt://user:pw@broker", &problem);
  EXPECT_FALSE(problem.empty());
  parse_mqtt_url("mqtt://", &problem);
  EXPECT_NE(problem.find("no usable host"), std::string::npos) << problem;
}

}  // namespace
}  // namespace nimbus
