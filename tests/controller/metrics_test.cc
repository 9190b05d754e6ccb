// The metrics registry and the text exposition format 0.0.4, without servers.
#include "controller/metrics.h"

#include <cmath>
#include <limits>
#include <sstream>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace controller {
namespace {

using testing::HasSubstr;
using testing::Not;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(MetricsTest, ACounterRendersHelpTypeAndItsSamples) {
  MetricsRegistry r;
  auto& f = r.AddCounter("fleetwave_requests_total", "Requests answered.", {"api", "result"});
  f.With({"get", "accepted"}).Inc();
  f.With({"get", "accepted"}).Inc(2);
  f.With({"update", "rejected:VersionMismatch"}).Inc();
  EXPECT_EQ(r.Render(),
            "# HELP fleetwave_requests_total Requests answered.\n"
            "# TYPE fleetwave_requests_total counter\n"
            "fleetwave_requests_total{api=\"get\",result=\"accepted\"} 3\n"
            "fleetwave_requests_total{api=\"update\",result=\"rejected:VersionMismatch\"} 1\n");
}

TEST(MetricsTest, AGaugeWithoutLabelsGoesUpAndDown) {
  MetricsRegistry r;
  Gauge& g = r.AddGauge("fleetwave_leader", "Leading.").Get();
  g.Set(1);
  g.Add(2.5);
  g.Add(-1);
  EXPECT_DOUBLE_EQ(g.Value(), 2.5);
  EXPECT_EQ(r.Render(),
            "# HELP fleetwave_leader Leading.\n"
            "# TYPE fleetwave_leader gauge\n"
            "fleetwave_leader 2.5\n");
}

TEST(MetricsTest, AFamilyWithoutChildrenRendersOnlyItsHeader) {
  MetricsRegistry r;
  r.AddCounter("a_total", "A.", {"x"});
  EXPECT_EQ(r.Render(), "# HELP a_total A.\n# TYPE a_total counter\n");
}

TEST(MetricsTest, FamiliesRenderInNameOrderAndChildrenInLabelOrder) {
  MetricsRegistry r;
  auto& b = r.AddGauge("b", "B.", {"k"});
  b.With({"z"}).Set(1);
  b.With({"a"}).Set(2);
  r.AddGauge("a", "A.").Get().Set(3);
  EXPECT_EQ(r.Render(),
            "# HELP a A.\n# TYPE a gauge\na 3\n"
            "# HELP b B.\n# TYPE b gauge\nb{k=\"a\"} 2\nb{k=\"z\"} 1\n");
}

TEST(MetricsTest, LabelValuesAndHelpAreEscaped) {
  MetricsRegistry r;
  r.AddCounter("x_total", "Back\\slash and\nnewline, \"quotes\" kept.", {"v"})
      .With({"a\\b\"c\nd"})
      .Inc();
  const auto lines = Lines(r.Render());
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], "# HELP x_total Back\\\\slash and\\nnewline, \"quotes\" kept.");
  EXPECT_EQ(lines[2], "x_total{v=\"a\\\\b\\\"c\\nd\"} 1");
  EXPECT_EQ(EscapeLabelValue("plain"), "plain");
  EXPECT_EQ(EscapeLabelValue("\\\"\n"), "\\\\\\\"\\n");
  EXPECT_EQ(EscapeHelp("\"\\\n"), "\"\\\\\\n");
}

TEST(MetricsTest, AHistogramRendersCumulativeBucketsSumAndCount) {
  MetricsRegistry r;
  Histogram& h = r.AddHistogram("lat_seconds", "Latency.", {}, {0.25, 0.5, 1}).Get();
  for (double v : {0.125, 0.25, 0.375, 0.75, 2.0, 3.0}) h.Observe(v);
  EXPECT_EQ(r.Render(),
            "# HELP lat_seconds Latency.\n"
            "# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{le=\"0.25\"} 2\n"  // le is inclusive: 0.25 counts
            "lat_seconds_bucket{le=\"0.5\"} 3\n"
            "lat_seconds_bucket{le=\"1\"} 4\n"
            "lat_seconds_bucket{le=\"+Inf\"} 6\n"
            "lat_seconds_sum 6.5\n"
            "lat_seconds_count 6\n");
  EXPECT_EQ(h.Count(), 6u);
  EXPECT_EQ(h.BucketCount(3), 2u);
}

TEST(MetricsTest, AHistogramsLabelsComeBeforeLe) {
  MetricsRegistry r;
  r.AddHistogram("h", "H.", {"api"}, {1}).With({"get"}).Observe(0.5);
  const std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("h_bucket{api=\"get\",le=\"1\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("h_bucket{api=\"get\",le=\"+Inf\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("h_sum{api=\"get\"} 0.5\n"));
  EXPECT_THAT(text, HasSubstr("h_count{api=\"get\"} 1\n"));
}

TEST(MetricsTest, AnUnobservedHistogramShowsZeroes) {
  MetricsRegistry r;
  r.AddHistogram("h", "H.", {}, {1, 2}).Get();
  EXPECT_EQ(r.Render(),
            "# HELP h H.\n# TYPE h histogram\n"
            "h_bucket{le=\"1\"} 0\nh_bucket{le=\"2\"} 0\nh_bucket{le=\"+Inf\"} 0\n"
            "h_sum 0\nh_count 0\n");
}

TEST(MetricsTest, ValuesUseTheShortestExactSpelling) {
  EXPECT_EQ(FormatValue(0), "0");
  EXPECT_EQ(FormatValue(42), "42");
  EXPECT_EQ(FormatValue(-3), "-3");
  EXPECT_EQ(FormatValue(0.1), "0.1");
  EXPECT_EQ(FormatValue(0.0005), "0.0005");
  EXPECT_EQ(FormatValue(1e-9), "1e-09");
  EXPECT_EQ(FormatValue(18446744073709551615.0), "1.8446744073709552e+19");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::nan("")), "NaN");
  EXPECT_EQ(std::stod(FormatValue(1.0 / 3)), 1.0 / 3);  // round-trips
}

TEST(MetricsTest, DeclaringTheSameFamilyAgainReturnsIt) {
  MetricsRegistry r;
  auto& a = r.AddCounter("c_total", "C.", {"x"});
  a.With({"1"}).Inc();
  auto& b = r.AddCounter("c_total", "C.", {"x"});
  EXPECT_EQ(&a, &b);
  EXPECT_EQ(&a.With({"1"}), &b.With({"1"}));
  EXPECT_EQ(b.With({"1"}).Value(), 1u);
  auto& h1 = r.AddHistogram("h", "H.", {}, {1, 2});
  EXPECT_EQ(&h1, &r.AddHistogram("h", "H.", {}, {1, 2}));
}

TEST(MetricsTest, BadDefinitionsAreRefused) {
  MetricsRegistry r;
  r.AddCounter("c_total", "C.", {"x"});
  EXPECT_THROW(r.AddGauge("c_total", "C.", {"x"}), std::invalid_argument);    // other type
  EXPECT_THROW(r.AddCounter("c_total", "C.", {"y"}), std::invalid_argument);  // other labels
  EXPECT_THROW(r.AddCounter("c_total", "Other.", {"x"}), std::invalid_argument);
  r.AddHistogram("h", "H.", {}, {1});
  EXPECT_THROW(r.AddHistogram("h", "H.", {}, {2}), std::invalid_argument);  // other buckets
  EXPECT_THROW(r.AddCounter("", "E."), std::invalid_argument);
  EXPECT_THROW(r.AddCounter("1abc", "E."), std::invalid_argument);
  EXPECT_THROW(r.AddCounter("a-b", "E."), std::invalid_argument);
  EXPECT_NO_THROW(r.AddCounter("ns:a_b1", "E."));
  EXPECT_THROW(r.AddCounter("ok", "E.", {"bad-label"}), std::invalid_argument);
  EXPECT_THROW(r.AddCounter("ok2", "E.", {"a:b"}), std::invalid_argument);
  EXPECT_THROW(r.AddCounter("ok3", "E.", {"__reserved"}), std::invalid_argument);
  EXPECT_THROW(r.AddCounter("ok4", "E.", {"a", "a"}), std::invalid_argument);
  EXPECT_THROW(r.AddHistogram("h2", "E.", {"le"}, {1}), std::invalid_argument);
  EXPECT_THROW(r.AddHistogram("h3", "E.", {}, {}), std::invalid_argument);
  EXPECT_THROW(r.AddHistogram("h4", "E.", {}, {2, 1}), std::invalid_argument);
  EXPECT_THROW(r.AddHistogram("h5", "E.", {}, {1, 1}), std::invalid_argument);
  EXPECT_THROW(r.AddHistogram("h6", "E.", {}, {1, std::numeric_limits<double>::infinity()}),
               std::invalid_argument);
  auto& c = r.AddCounter("c2_total", "C.", {"x", "y"});
  EXPECT_THROW(c.With({"only-one"}), std::invalid_argument);
  EXPECT_THROW(c.Get(), std::invalid_argument);
}

TEST(MetricsTest, BucketHelpers) {
  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  const auto latency = LatencyBuckets();
  EXPECT_TRUE(std::is_sorted(latency.begin(), latency.end()));
  EXPECT_EQ(latency.front(), 0.0005);
  EXPECT_EQ(latency.back(), 10);
}

// Many threads counting while others render: every increment lands, and every rendering is
// well-formed with +Inf == _count.
TEST(MetricsTest, ConcurrentUseLosesNothing) {
  MetricsRegistry r;
  auto& counters = r.AddCounter("c_total", "C.", {"t"});
  Histogram& h = r.AddHistogram("h", "H.", {}, {0.5, 1.5}).Get();
  Gauge& g = r.AddGauge("g", "G.").Get();
  constexpr int kThreads = 4, kPerThread = 20000;
  std::atomic<bool> done{false};
  std::thread renderer([&] {
    while (!done) {
      const std::string text = r.Render();
      uint64_t inf = 0, count = 0;
      for (const auto& line : Lines(text)) {
        if (line.starts_with("h_bucket{le=\"+Inf\"} ")) inf = std::stoull(line.substr(20));
        if (line.starts_with("h_count ")) count = std::stoull(line.substr(8));
      }
      ASSERT_EQ(inf, count);
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Counter& mine = counters.With({std::to_string(t % 2)});  // two threads share each child
      for (int i = 0; i < kPerThread; ++i) {
        mine.Inc();
        h.Observe(i % 3);  // 0, 1, 2
        g.Add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  done = true;
  renderer.join();
  EXPECT_EQ(counters.With({"0"}).Value() + counters.With({"1"}).Value(),
            uint64_t{kThreads * kPerThread});
  EXPECT_EQ(h.Count(), uint64_t{kThreads * kPerThread});
  EXPECT_DOUBLE_EQ(g.Value(), kThreads * kPerThread);
  // 0 → le 0.5, 1 → le 1.5, 2 → +Inf, in thirds.
  EXPECT_EQ(h.BucketCount(0) + h.BucketCount(1) + h.BucketCount(2), h.Count());
  EXPECT_NEAR(h.Sum(), kThreads * (kPerThread / 3.0) * 3, kThreads * 3);
  EXPECT_THAT(r.Render(), Not(HasSubstr("nan")));
}

}  // namespace
}  // namespace controller
