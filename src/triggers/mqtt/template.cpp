#include "triggers/template.h"

namespace nimbus {

extern const TriggerTemplate kMqttTemplate = {
    "mqtt",
    [](const std::string& name) -> std::vector<std::string> { return {"- mqtt:", "    topic: " + name + "/#"}; },
    [](const std::string& name) {
      return "each MQTT message on " + name + "/# from the app's broker (`mqtt: {broker: ...}` in nimbus.yaml); it "
             "is stored before the broker hears PUBACK, so none is lost.";
    },
};

}  // namespace nimbus
