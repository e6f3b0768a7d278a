#pragma once
// Small pieces of the Prometheus text format 0.0.4, for the parts that render their own
// metrics (the store's writer, the host's scrape-time metrics, the timers, the history).
#include <string>
#include <string_view>

namespace nimbus {

// "# HELP name help\n# TYPE name type\n"
inline void prometheus_family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

// A label value escaped as the format has it (\\, \" and \n).
inline std::string prometheus_label(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

}  // namespace nimbus
