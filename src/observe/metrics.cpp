#include "observe/metrics.h"

#include "observe/thread_shard.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <regex>
#include <set>
#include <sstream>

namespace nimbus {
namespace {

std::atomic<uint64_t> g_metrics_generation{1};
thread_local ThreadShardCache t_metrics_shard;

// Single-writer counter: the owning thread adds without a locked instruction.
inline void bump(std::atomic<uint64_t>& c, uint64_t by = 1) {
  c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}
inline void bump_signed(std::atomic<int64_t>& c, int64_t by) {
  c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
}

struct Histogram {
  std::atomic<uint64_t> buckets[Metrics::kBuckets + 1]{};  // last = +Inf
  std::atomic<uint64_t> sum_ns{0};
  std::atomic<uint64_t> count{0};

  void observe(Duration d) {
    double s = std::chrono::duration<double>(d).count();
    int i = 0;
    while (i < Metrics::kBuckets && s > Metrics::kBucketBounds[i]) ++i;
    bump(buckets[i]);
    bump(sum_ns, static_cast<uint64_t>(d.count() < 0 ? 0 : d.count()));
    bump(count);
  }
};

std::string format_double(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void append_label_value(std::string& out, std::string_view v) {
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

}  // namespace

const double Metrics::kBucketBounds[Metrics::kBuckets] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,   0.1,     0.25,   0.5,   1,      2.5,   10};

struct Metrics::Shard {
  explicit Shard(std::size_t functions)
      : invocations(functions * TriggerKind::kMax * kOutcomeCount),
        durations(functions * TriggerKind::kMax),
        in_flight(functions),
        cold_starts(functions),
        cold_start_durations(functions),
        queue_waits(functions) {}
  std::vector<std::atomic<uint64_t>> invocations;
  std::vector<Histogram> durations;
  std::vector<std::atomic<int64_t>> in_flight;
  std::vector<std::atomic<uint64_t>> cold_starts;
  std::vector<Histogram> cold_start_durations;
  std::vector<Histogram> queue_waits;
  std::atomic<uint64_t> http_responses[600]{};
};

Metrics::Metrics(std::vector<std::string> functions)
    : functions_(std::move(functions)),
      instances_(new std::atomic<int>[functions_.size()]()),
      worker_exits_(new std::atomic<uint64_t>[functions_.size() * kWorkerExits]()),
      generation_(g_metrics_generation.fetch_add(1)) {}

Metrics::~Metrics() = default;

Metrics::Shard& Metrics::shard() {
  if (void* s = t_metrics_shard.find(generation_)) return *static_cast<Shard*>(s);
  std::lock_guard lock(mu_);
  shards_.push_back(std::make_unique<Shard>(functions_.size()));
  t_metrics_shard.remember(generation_, shards_.back().get());
  return *shards_.back();
}

void Metrics::invocation(int fn, TriggerKind trigger, Outcome outcome, Duration duration) {
  Shard& s = shard();
  auto t = static_cast<std::size_t>(trigger.index());
  auto f = static_cast<std::size_t>(fn);
  bump(s.invocations[(f * TriggerKind::kMax + t) * kOutcomeCount + static_cast<std::size_t>(outcome)]);
  if (outcome != Outcome::overloaded && outcome != Outcome::unavailable) {
    s.durations[f * TriggerKind::kMax + t].observe(duration);
  }
}

void Metrics::in_flight(int fn, int delta) { bump_signed(shard().in_flight[static_cast<std::size_t>(fn)], delta); }

void Metrics::cold_start(int fn, Duration duration) {
  Shard& s = shard();
  bump(s.cold_starts[static_cast<std::size_t>(fn)]);
  s.cold_start_durations[static_cast<std::size_t>(fn)].observe(duration);
}

void Metrics::queue_wait(int fn, Duration waited) {
  shard().queue_waits[static_cast<std::size_t>(fn)].observe(waited);
}

void Metrics::worker_exit(int fn, WorkerExit why) {
  worker_exits_[static_cast<std::size_t>(fn) * kWorkerExits + static_cast<std::size_t>(why)].fetch_add(1, std::memory_order_relaxed);
}

void Metrics::instances(int fn, int count) {
  instances_[static_cast<std::size_t>(fn)].store(count, std::memory_order_relaxed);
}

void Metrics::http_response(int status) {
  if (status >= 100 && status < 600) bump(shard().http_responses[status]);
}

std::string Metrics::render() const {
  std::lock_guard lock(mu_);
  const std::size_t nf = functions_.size();
  std::string out;
  out.reserve(4096);
  auto load = [](const std::atomic<uint64_t>& c) { return c.load(std::memory_order_relaxed); };

  out += "# HELP nimbus_invocations_total Invocations finished, by function, trigger and outcome.\n";
  out += "# TYPE nimbus_invocations_total counter\n";
  for (std::size_t f = 0; f < nf; ++f) {
    for (int t = 0; t < TriggerKind::kMax; ++t) {
      if (t != TriggerKind::http.index() && t != TriggerKind::admin.index()) {
        // Only triggers this host has emit series; the rest would be noise at zero.
        bool any = false;
        for (const auto& s : shards_)
          for (int o = 0; o < kOutcomeCount; ++o)
            any |= load(s->invocations[(f * TriggerKind::kMax + t) * kOutcomeCount + o]) != 0;
        if (!any) continue;
      }
      for (int o = 0; o < kOutcomeCount; ++o) {
        uint64_t sum = 0;
        for (const auto& s : shards_) sum += load(s->invocations[(f * TriggerKind::kMax + t) * kOutcomeCount + o]);
        out += "nimbus_invocations_total{function=\"";
        append_label_value(out, functions_[f]);
        out += "\",trigger=\"";
        out += TriggerKind::at(t).name();
        out += "\",outcome=\"";
        out += to_string(static_cast<Outcome>(o));
        out += "\"} " + std::to_string(sum) + "\n";
      }
    }
  }

  auto render_histogram = [&](const char* name, const char* help, auto&& get, const char* extra_label,
                              auto&& label_value, std::size_t series) {
    out += std::string("# HELP ") + name + " " + help + "\n";
    out += std::string("# TYPE ") + name + " histogram\n";
    for (std::size_t i = 0; i < series; ++i) {
      uint64_t buckets[kBuckets + 1] = {};
      uint64_t sum_ns = 0, count = 0;
      for (const auto& s : shards_) {
        const Histogram& h = get(*s, i);
        for (int b = 0; b <= kBuckets; ++b) buckets[b] += load(h.buckets[b]);
        sum_ns += load(h.sum_ns);
        count += load(h.count);
      }
      std::string labels = "function=\"";
      append_label_value(labels, functions_[i / (series / nf)]);
      labels += "\"";
      if (extra_label) {
        labels += std::string(",") + extra_label + "=\"" + std::string(label_value(i)) + "\"";
      }
      if (extra_label && count == 0 && label_value(i) != "http") continue;
      uint64_t cumulative = 0;
      for (int b = 0; b <= kBuckets; ++b) {
        cumulative += buckets[b];
        out += std::string(name) + "_bucket{" + labels + ",le=\"" +
               (b == kBuckets ? std::string("+Inf") : format_double(kBucketBounds[b])) + "\"} " +
               std::to_string(cumulative) + "\n";
      }
      out += std::string(name) + "_sum{" + labels + "} " + format_double(static_cast<double>(sum_ns) / 1e9) + "\n";
      out += std::string(name) + "_count{" + labels + "} " + std::to_string(count) + "\n";
    }
  };
  if (nf > 0) {
    render_histogram(
        "nimbus_invocation_duration_seconds", "Time from dispatch to result, by function and trigger.",
        [](const Shard& s, std::size_t i) -> const Histogram& { return s.durations[i]; }, "trigger",
        [](std::size_t i) { return TriggerKind::at(static_cast<int>(i % TriggerKind::kMax)).name(); },
        nf * TriggerKind::kMax);
  }

  out += "# HELP nimbus_invocations_in_flight Invocations running or waiting for a slot now.\n";
  out += "# TYPE nimbus_invocations_in_flight gauge\n";
  for (std::size_t f = 0; f < nf; ++f) {
    int64_t sum = 0;
    for (const auto& s : shards_) sum += s->in_flight[f].load(std::memory_order_relaxed);
    out += "nimbus_invocations_in_flight{function=\"";
    append_label_value(out, functions_[f]);
    out += "\"} " + std::to_string(sum) + "\n";
  }

  out += "# HELP nimbus_cold_starts_total Function instances started (library loads, worker starts).\n";
  out += "# TYPE nimbus_cold_starts_total counter\n";
  for (std::size_t f = 0; f < nf; ++f) {
    uint64_t sum = 0;
    for (const auto& s : shards_) sum += load(s->cold_starts[f]);
    out += "nimbus_cold_starts_total{function=\"";
    append_label_value(out, functions_[f]);
    out += "\"} " + std::to_string(sum) + "\n";
  }
  if (nf > 0) {
    render_histogram(
        "nimbus_cold_start_duration_seconds", "Time to start a function instance.",
        [](const Shard& s, std::size_t i) -> const Histogram& { return s.cold_start_durations[i]; },
        nullptr, [](std::size_t) { return std::string_view(); }, nf);
  }

  if (nf > 0) {
    render_histogram(
        "nimbus_queue_wait_seconds", "Time invocations waited for a slot or a starting instance.",
        [](const Shard& s, std::size_t i) -> const Histogram& { return s.queue_waits[i]; }, nullptr,
        [](std::size_t) { return std::string_view(); }, nf);
  }
  out += "# HELP nimbus_instances Instances of each function now (worker processes; in-process functions count 1).\n";
  out += "# TYPE nimbus_instances gauge\n";
  for (std::size_t f = 0; f < nf; ++f) {
    out += "nimbus_instances{function=\"";
    append_label_value(out, functions_[f]);
    out += "\"} " + std::to_string(instances_[f].load(std::memory_order_relaxed)) + "\n";
  }

  out += "# HELP nimbus_worker_exits_total Worker processes that ended while the host ran, by reason (crashed, "
         "timeout: killed for an overrun, failed_start, retired: idle or scaled in).\n";
  out += "# TYPE nimbus_worker_exits_total counter\n";
  static constexpr const char* kWhy[kWorkerExits] = {"crashed", "timeout", "failed_start", "retired"};
  for (std::size_t f = 0; f < nf; ++f) {
    for (std::size_t w = 0; w < kWorkerExits; ++w) {
      // Every reason from 0: increase() sees the first exit too.
      const uint64_t n = worker_exits_[f * kWorkerExits + w].load(std::memory_order_relaxed);
      out += "nimbus_worker_exits_total{function=\"";
      append_label_value(out, functions_[f]);
      out += "\",reason=\"";
      out += kWhy[w];
      out += "\"} " + std::to_string(n) + "\n";
    }
  }

  out += "# HELP nimbus_http_responses_total HTTP responses sent by the public listener, by status code.\n";
  out += "# TYPE nimbus_http_responses_total counter\n";
  for (int code = 100; code < 600; ++code) {
    uint64_t sum = 0;
    for (const auto& s : shards_) sum += load(s->http_responses[code]);
    if (sum == 0) continue;
    out += "nimbus_http_responses_total{code=\"" + std::to_string(code) + "\"} " + std::to_string(sum) + "\n";
  }
  return out;
}

std::string check_prometheus_text(const std::string& text) {
  static const std::regex kHelp(R"(^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$)");
  static const std::regex kType(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$)");
  static const std::regex kSample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*"(,[a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*")*,?)?\})? ([^ ]+)( -?[0-9]+)?$)");
  std::map<std::string, std::string> types;
  std::set<std::string> seen_samples;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  std::string last_le_family;
  double last_le_value = 0;
  double last_bucket = -1;
  if (!text.empty() && text.back() != '\n') return "the text does not end with a newline";
  while (std::getline(in, line)) {
    ++n;
    auto where = "line " + std::to_string(n) + ": ";
    if (line.empty()) continue;
    std::smatch m;
    if (line.rfind("# HELP ", 0) == 0) {
      if (!std::regex_match(line, m, kHelp)) return where + "malformed HELP";
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      if (!std::regex_match(line, m, kType)) return where + "malformed TYPE";
      if (!types.emplace(m[1], m[2]).second) return where + "second TYPE for " + m[1].str();
      continue;
    }
    if (line[0] == '#') continue;
    if (!std::regex_match(line, m, kSample)) return where + "malformed sample: " + line;
    std::string name = m[1];
    std::string value = m[7];
    if (value != "+Inf" && value != "-Inf" && value != "NaN") {
      char* end = nullptr;
      std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0') return where + "value '" + value + "' is not a number";
    }
    if (!seen_samples.insert(name + m[2].str()).second) return where + "duplicate sample " + name + m[2].str();
    std::string family = name;
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      std::string s = suffix;
      if (family.size() > s.size() && family.compare(family.size() - s.size(), s.size(), s) == 0 &&
          types.count(family.substr(0, family.size() - s.size()))) {
        family.resize(family.size() - s.size());
        break;
      }
    }
    auto t = types.find(family);
    if (t == types.end()) return where + "sample " + name + " has no TYPE line before it";
    if (t->second == "histogram" && name == family + "_bucket") {
      std::string labels = m[2];
      auto le_pos = labels.find("le=\"");
      if (le_pos == std::string::npos) return where + "histogram bucket without le label";
      std::string le = labels.substr(le_pos + 4, labels.find('"', le_pos + 4) - le_pos - 4);
      double le_v = le == "+Inf" ? INFINITY : std::strtod(le.c_str(), nullptr);
      std::string series = family + labels.substr(0, le_pos);
      double count = std::strtod(value.c_str(), nullptr);
      if (series == last_le_family) {
        if (le_v <= last_le_value) return where + "bucket bounds not increasing";
        if (count < last_bucket) return where + "bucket counts not cumulative";
      }
      last_le_family = series;
      last_le_value = le_v;
      last_bucket = count;
    }
    if (t->second == "counter" && value.size() && value[0] == '-') return where + "negative counter";
  }
  return "";
}

}  // namespace nimbus
