#include "observe/host_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "core/prometheus_text.h"
#include "store/store.h"

namespace nimbus {

namespace {

void sample(std::string& out, const char* name, const std::string& labels, double value) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.17g", value);
  out += name;
  if (!labels.empty()) {
    out += '{';
    out += labels;
    out += '}';
  }
  out += ' ';
  out += buf;
  out += '\n';
}

std::string label(const char* name, std::string_view value) {
  return std::string(name) + "=\"" + prometheus_label(value) + "\"";
}

int64_t boot_time_seconds() {
  std::ifstream in("/proc/stat");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("btime ", 0) == 0) return std::atoll(line.c_str() + 6);
  }
  return 0;
}

}  // namespace

void process_metrics_text(std::string& out) {
  std::ifstream in("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  // The command name is in parentheses and may hold spaces: the fields start after the last ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return;
  std::istringstream fields(stat.substr(close + 2));
  std::vector<std::string> f;  // f[0] is field 3 (state)
  for (std::string x; fields >> x;) f.push_back(x);
  if (f.size() < 22) return;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  const double cpu = (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) / ticks;  // utime + stime
  const double threads = std::atof(f[17].c_str());
  const double start = static_cast<double>(boot_time_seconds()) + std::atof(f[19].c_str()) / ticks;
  const double vsize = std::atof(f[20].c_str());
  const double rss = std::atof(f[21].c_str()) * page;
  int fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] != '.') ++fds;
    }
    closedir(d);
    --fds;  // the one opendir holds
  }
  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  prometheus_family(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.");
  sample(out, "process_cpu_seconds_total", "", cpu);
  prometheus_family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  sample(out, "process_resident_memory_bytes", "", rss);
  prometheus_family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
  sample(out, "process_virtual_memory_bytes", "", vsize);
  prometheus_family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
  sample(out, "process_open_fds", "", fds);
  prometheus_family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
  sample(out, "process_max_fds", "", static_cast<double>(nofile.rlim_cur));
  prometheus_family(out, "process_threads", "gauge", "Number of OS threads in the process.");
  sample(out, "process_threads", "", threads);
  prometheus_family(out, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
  sample(out, "process_start_time_seconds", "", start);
}

ScrapeCache::ScrapeCache(std::function<std::string()> render, std::function<void(std::function<void()>)> run,
                         std::chrono::steady_clock::duration max_age)
    : render_(std::move(render)), run_(std::move(run)), max_age_(max_age) {}

std::string ScrapeCache::text() {
  const auto now = std::chrono::steady_clock::now();
  std::string text;
  bool start = false;
  {
    std::lock_guard lock(state_->mu);
    text = state_->text;
    if (!state_->rendering && (state_->at == std::chrono::steady_clock::time_point{} || now - state_->at >= max_age_)) {
      state_->rendering = start = true;
    }
  }
  // Outside the lock: `run_` may run it here and now (a store that is closing).
  if (start) {
    run_([state = state_, render = render_] {
      std::string fresh = render();
      std::lock_guard lock(state->mu);
      state->text = std::move(fresh);
      state->at = std::chrono::steady_clock::now();
      state->rendering = false;
    });
  }
  return text;
}

void build_info_text(std::string& out, std::string_view version) {
  prometheus_family(out, "nimbus_build_info", "gauge", "The build of this host: always 1, with its version as a label.");
  sample(out, "nimbus_build_info", label("version", version), 1);
}

Status store_state_metrics_text(Store& store, const AppSpec& app, std::string& out) {
  auto stats = store.stats();
  if (!stats) return stats.error();
  std::string text;
  struct Depth {
    int64_t ready = 0, delayed = 0, in_flight = 0, dead = 0;
  };
  std::map<std::string, Depth> queues;
  for (const auto& q : *stats) {
    const bool dead = q.queue.size() > 5 && q.queue.compare(q.queue.size() - 5, 5, ".dead") == 0;
    Depth& d = queues[dead ? q.queue.substr(0, q.queue.size() - 5) : q.queue];
    if (dead) {
      d.dead += q.ready + q.delayed + q.in_flight;
    } else {
      d.ready += q.ready;
      d.delayed += q.delayed;
      d.in_flight += q.in_flight;
    }
  }
  prometheus_family(text, "nimbus_queue_messages", "gauge", "Messages in a queue, by state (ready, delayed, in_flight).");
  for (const auto& [name, d] : queues) {
    const std::string q = label("queue", name);
    sample(text, "nimbus_queue_messages", q + ",state=\"ready\"", static_cast<double>(d.ready));
    sample(text, "nimbus_queue_messages", q + ",state=\"delayed\"", static_cast<double>(d.delayed));
    sample(text, "nimbus_queue_messages", q + ",state=\"in_flight\"", static_cast<double>(d.in_flight));
  }
  prometheus_family(text, "nimbus_queue_dead_letters", "gauge", "Messages in a queue's dead letters (QUEUE.dead).");
  for (const auto& [name, d] : queues) sample(text, "nimbus_queue_dead_letters", label("queue", name), static_cast<double>(d.dead));

  std::string records, next, lag;
  for (const auto& st : app.streams) {
    auto info = store.stream_info(st.name);
    if (!info) return info.error();
    auto checkpoints = store.stream_checkpoints(st.name);
    if (!checkpoints) return checkpoints.error();
    std::map<int, int64_t> next_of;
    for (const auto& p : *info) {
      const std::string l = label("stream", st.name) + ",partition=\"" + std::to_string(p.partition) + "\"";
      sample(records, "nimbus_stream_records", l, static_cast<double>(p.records));
      sample(next, "nimbus_stream_next_offset", l, static_cast<double>(p.next_offset));
      next_of[p.partition] = p.next_offset;
    }
    for (const auto& c : *checkpoints) {
      const int64_t behind = std::max<int64_t>(0, (next_of.count(c.partition) ? next_of[c.partition] : 0) - c.offset);
      sample(lag, "nimbus_stream_lag_records",
             label("stream", st.name) + "," + label("group", c.group) + ",partition=\"" + std::to_string(c.partition) + "\"",
             static_cast<double>(behind));
    }
  }
  prometheus_family(text, "nimbus_stream_records", "gauge", "Records a stream partition keeps.");
  text += records;
  prometheus_family(text, "nimbus_stream_next_offset", "gauge", "The offset the next record appended to a partition gets.");
  text += next;
  prometheus_family(text, "nimbus_stream_lag_records", "gauge", "Records a consumer group has yet to read in a partition.");
  text += lag;
  out += text;
  return ok_status();
}

}  // namespace nimbus
