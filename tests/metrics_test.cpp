// Prometheus metrics: the rendered text is valid 0.0.4, counts from every thread add up, and
// histograms are cumulative; the checker itself rejects malformed text.
#include "observe/metrics.h"

#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <thread>
#include <vector>

namespace nimbus {
namespace {

using namespace std::chrono_literals;

// Every sample line of `text`, keyed by "name{labels}".
std::map<std::string, double> samples_of(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    auto space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

double sample(const std::map<std::string, double>& samples, const std::string& key) {
  auto it = samples.find(key);
  EXPECT_NE(it, samples.end()) << "no sample " << key;
  return it == samples.end() ? -1 : it->second;
}

// The bucket counts of one histogram series, in the order they appear, with their bounds.
std::vector<std::pair<std::string, double>> buckets_of(const std::string& text, const std::string& prefix) {
  std::vector<std::pair<std::string, double>> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    auto le = line.find("le=\"");
    if (le == std::string::npos) continue;
    auto end = line.find('"', le + 4);
    out.emplace_back(line.substr(le + 4, end - le - 4), std::stod(line.substr(line.rfind(' ') + 1)));
  }
  return out;
}

const std::string kOrdersHttp = "function=\"orders\",trigger=\"http\"";

TEST(MetricsTest, RenderedTextIsValidPrometheus) {
  Metrics m({"orders", "hello"});
  m.invocation(0, TriggerKind::http, Outcome::success, 3ms);
  m.invocation(0, TriggerKind::http, Outcome::error, 20ms);
  m.invocation(1, TriggerKind::admin, Outcome::success, 100us);
  m.invocation(1, TriggerKind::named("timer"), Outcome::timeout, 2s);
  m.in_flight(0, +3);
  m.in_flight(0, -1);
  m.cold_start(1, 40ms);
  m.http_response(200);
  m.http_response(200);
  m.http_response(503);
  m.http_response(700);  // out of range: ignored

  std::string text = m.render();
  EXPECT_EQ(check_prometheus_text(text), "") << text;

  auto s = samples_of(text);
  EXPECT_EQ(sample(s, "nimbus_invocations_total{" + kOrdersHttp + ",outcome=\"success\"}"), 1);
  EXPECT_EQ(sample(s, "nimbus_invocations_total{" + kOrdersHttp + ",outcome=\"error\"}"), 1);
  EXPECT_EQ(sample(s, "nimbus_invocations_total{" + kOrdersHttp + ",outcome=\"timeout\"}"), 0);
  EXPECT_EQ(sample(s, "nimbus_invocations_total{function=\"hello\",trigger=\"admin\",outcome=\"success\"}"), 1);
  EXPECT_EQ(sample(s, "nimbus_invocations_total{function=\"hello\",trigger=\"timer\",outcome=\"timeout\"}"), 1);
  EXPECT_EQ(s.count("nimbus_invocations_total{function=\"orders\",trigger=\"queue\",outcome=\"success\"}"), 0u)
      << "triggers with no traffic other than http/admin emit no series";
  EXPECT_EQ(sample(s, "nimbus_invocation_duration_seconds_count{" + kOrdersHttp + "}"), 2);
  EXPECT_NEAR(sample(s, "nimbus_invocation_duration_seconds_sum{" + kOrdersHttp + "}"), 0.023, 1e-9);
  EXPECT_EQ(sample(s, "nimbus_invocations_in_flight{function=\"orders\"}"), 2);
  EXPECT_EQ(sample(s, "nimbus_invocations_in_flight{function=\"hello\"}"), 0);
  EXPECT_EQ(sample(s, "nimbus_cold_starts_total{function=\"hello\"}"), 1);
  EXPECT_EQ(sample(s, "nimbus_cold_start_duration_seconds_count{function=\"hello\"}"), 1);
  EXPECT_EQ(sample(s, "nimbus_http_responses_total{code=\"200\"}"), 2);
  EXPECT_EQ(sample(s, "nimbus_http_responses_total{code=\"503\"}"), 1);
  EXPECT_EQ(s.count("nimbus_http_responses_total{code=\"700\"}"), 0u);
  EXPECT_EQ(s.count("nimbus_http_responses_total{code=\"404\"}"), 0u);
}

TEST(MetricsTest, EmptyMetricsRenderValidText) {
  Metrics none({});
  EXPECT_EQ(check_prometheus_text(none.render()), "");
  Metrics idle({"a"});
  std::string text = idle.render();
  EXPECT_EQ(check_prometheus_text(text), "") << text;
  EXPECT_EQ(sample(samples_of(text), "nimbus_invocation_duration_seconds_count{function=\"a\",trigger=\"http\"}"), 0);
}

TEST(MetricsTest, CountsAreSummedAcrossThreads) {
  Metrics m({"orders", "hello"});
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&m, t] {
      for (int i = 0; i < kPerThread; ++i) {
        m.invocation(0, TriggerKind::http, i % 5 == 0 ? Outcome::error : Outcome::success,
                     Duration(std::chrono::microseconds(100 * (i % 50 + 1))));
        m.in_flight(1, +1);
        m.http_response(200 + t);
      }
    });
  }
  for (auto& th : threads) th.join();
  // This thread records too: it has its own shard.
  m.invocation(1, TriggerKind::http, Outcome::success, 1ms);

  std::string text = m.render();
  ASSERT_EQ(check_prometheus_text(text), "") << text;
  auto s = samples_of(text);
  const double errors = kThreads * (kPerThread / 5);
  EXPECT_EQ(sample(s, "nimbus_invocations_total{" + kOrdersHttp + ",outcome=\"error\"}"), errors);
  EXPECT_EQ(sample(s, "nimbus_invocations_total{" + kOrdersHttp + ",outcome=\"success\"}"),
            kThreads * kPerThread - errors);
  EXPECT_EQ(sample(s, "nimbus_invocation_duration_seconds_count{" + kOrdersHttp + "}"), kThreads * kPerThread);
  EXPECT_EQ(sample(s, "nimbus_invocations_in_flight{function=\"hello\"}"), kThreads * kPerThread);
  EXPECT_EQ(sample(s, "nimbus_invocations_total{function=\"hello\",trigger=\"http\",outcome=\"success\"}"), 1);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(sample(s, "nimbus_http_responses_total{code=\"" + std::to_string(200 + t) + "\"}"), kPerThread);
  }
}

TEST(MetricsTest, HistogramBucketsAreCumulativeAndCountMatches) {
  Metrics m({"orders"});
  // One observation per bucket bound (exactly on it: le is inclusive), plus one above all.
  for (double bound : Metrics::kBucketBounds) {
    m.invocation(0, TriggerKind::http, Outcome::success,
                 std::chrono::duration_cast<Duration>(std::chrono::duration<double>(bound)));
  }
  m.invocation(0, TriggerKind::http, Outcome::success, 60s);
  // Shed invocations are counted but never timed.
  m.invocation(0, TriggerKind::http, Outcome::overloaded, Duration::zero());
  m.invocation(0, TriggerKind::http, Outcome::unavailable, Duration::zero());

  std::string text = m.render();
  ASSERT_EQ(check_prometheus_text(text), "") << text;
  auto s = samples_of(text);
  const double timed = Metrics::kBuckets + 1;
  EXPECT_EQ(sample(s, "nimbus_invocation_duration_seconds_count{" + kOrdersHttp + "}"), timed);
  EXPECT_EQ(sample(s, "nimbus_invocations_total{" + kOrdersHttp + ",outcome=\"overloaded\"}"), 1);
  EXPECT_EQ(sample(s, "nimbus_invocations_total{" + kOrdersHttp + ",outcome=\"unavailable\"}"), 1);

  auto buckets = buckets_of(text, "nimbus_invocation_duration_seconds_bucket{" + kOrdersHttp + ",");
  ASSERT_EQ(buckets.size(), static_cast<std::size_t>(Metrics::kBuckets + 1));
  for (int i = 0; i < Metrics::kBuckets; ++i) {
    EXPECT_DOUBLE_EQ(std::stod(buckets[i].first), Metrics::kBucketBounds[i]);
    EXPECT_EQ(buckets[i].second, i + 1) << "le=" << buckets[i].first << " holds all observations up to it";
    if (i > 0) {
      EXPECT_GE(buckets[i].second, buckets[i - 1].second);
    }
  }
  EXPECT_EQ(buckets.back().first, "+Inf");
  EXPECT_EQ(buckets.back().second, timed) << "+Inf equals _count";
}

TEST(MetricsTest, LabelValuesAreEscaped) {
  Metrics m({"we\"ird\\na\nme"});
  m.invocation(0, TriggerKind::http, Outcome::success, 1ms);
  std::string text = m.render();
  EXPECT_EQ(check_prometheus_text(text), "") << text;
  EXPECT_NE(text.find("function=\"we\\\"ird\\\\na\\nme\""), std::string::npos) << text;
}

TEST(MetricsTest, SeparateInstancesDoNotShareCounts) {
  Metrics a({"f"});
  a.invocation(0, TriggerKind::http, Outcome::success, 1ms);
  {
    Metrics b({"f"});
    b.invocation(0, TriggerKind::http, Outcome::success, 1ms);
    b.invocation(0, TriggerKind::http, Outcome::success, 1ms);
    EXPECT_EQ(sample(samples_of(b.render()), "nimbus_invocations_total{function=\"f\",trigger=\"http\",outcome=\"success\"}"), 2);
  }
  a.invocation(0, TriggerKind::http, Outcome::success, 1ms);
  EXPECT_EQ(sample(samples_of(a.render()), "nimbus_invocations_total{function=\"f\",trigger=\"http\",outcome=\"success\"}"), 2);
}

TEST(CheckPrometheusTextTest, AcceptsWellFormedText) {
  EXPECT_EQ(check_prometheus_text(""), "");
  EXPECT_EQ(check_prometheus_text("# HELP up Whether it is up.\n# TYPE up gauge\nup 1\n"), "");
  EXPECT_EQ(check_prometheus_text("# TYPE c counter\nc{a=\"x\",b=\"y\\\"z\"} 3 1700000000000\n"), "");
  EXPECT_EQ(check_prometheus_text("# TYPE h histogram\n"
                                  "h_bucket{le=\"0.1\"} 1\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 3\n"
                                  "h_sum 1.2\nh_count 3\n"),
            "");
}

TEST(CheckPrometheusTextTest, RejectsMalformedText) {
  struct Case {
    const char* text;
    const char* mentions;
  };
  const Case cases[] = {
      {"# TYPE good counter\nbad-name 1\n", "malformed sample"},
      {"# TYPE 1bad counter\n", "malformed TYPE"},
      {"# TYPE x countr\n", "malformed TYPE"},
      {"# HELP 9x help\n", "malformed HELP"},
      {"orphan_total 1\n", "no TYPE line"},
      {"# TYPE g gauge\ng abc\n", "not a number"},
      {"# TYPE g gauge\ng 1x\n", "not a number"},
      {"# TYPE h histogram\nh_bucket{le=\"0.1\"} 5\nh_bucket{le=\"1\"} 3\n", "not cumulative"},
      {"# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"0.1\"} 2\n", "not increasing"},
      {"# TYPE h histogram\nh_bucket{a=\"b\"} 1\n", "without le"},
      {"# TYPE g gauge\ng 1", "newline"},
      {"# TYPE c counter\nc -1\n", "negative counter"},
      {"# TYPE g gauge\ng 1\ng 2\n", "duplicate sample"},
      {"# TYPE g gauge\n# TYPE g counter\n", "second TYPE"},
      {"# TYPE g gauge\ng{a=\"unterminated} 1\n", "malformed sample"},
  };
  for (const auto& c : cases) {
    std::string problem = check_prometheus_text(c.text);
    EXPECT_NE(problem, "") << c.text;
    EXPECT_NE(problem.find(c.mentions), std::string::npos) << c.text << " -> " << problem;
  }
  EXPECT_EQ(check_prometheus_text("# TYPE g gauge\ng 1\ng abc\n"), "line 3: value 'abc' is not a number")
      << "the problem names its line";
}

TEST(CheckPrometheusTextTest, RejectsARenderWithATruncatedTail) {
  Metrics m({"orders"});
  m.invocation(0, TriggerKind::http, Outcome::success, 1ms);
  std::string text = m.render();
  ASSERT_EQ(check_prometheus_text(text), "");
  text.pop_back();  // drop the final newline
  EXPECT_NE(check_prometheus_text(text), "");
}

}  // namespace
}  // namespace nimbus
