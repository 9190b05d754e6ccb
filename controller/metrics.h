// Prometheus metrics: a small thread-safe registry of counters, gauges and histograms with
// label sets, rendered in the text exposition format 0.0.4 (what `GET /metrics` serves).
//
// A metric *family* (name, help, label names) holds one *child* per label-value tuple.
// Children live as long as their registry and never move, so hot paths resolve them once
// (Family::With) and then only touch atomics:
//
//   MetricsRegistry registry;
//   auto& requests = registry.AddCounter("fleetwave_x_total", "Requests.", {"api"});
//   Counter& get = requests.With({"get"});   // once: takes a lock, may allocate
//   get.Inc();                               // per request: one relaxed atomic add
//
// Rendering takes a consistent-enough snapshot without stopping writers: each value is read
// atomically, a histogram's _count is the sum of the bucket counts it renders (so the +Inf
// bucket always equals _count), its _sum may lag by the observations in flight.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace controller {

// A value that only goes up (integral, so increments are exact and cheap).
class Counter {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double d);
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted in fixed buckets (upper bounds, strictly increasing, finite; +Inf is
// implicit), with their sum.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Non-cumulative count of bucket i (i == bounds().size() is the +Inf overflow bucket).
  uint64_t BucketCount(size_t i) const { return counts_[i].load(std::memory_order_relaxed); }
  uint64_t Count() const;
  double Sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

using LabelValues = std::vector<std::string>;

enum class MetricType { kCounter, kGauge, kHistogram };

// The children of one metric name. Thread-safe.
template <typename T>
class Family {
 public:
  // The child for `values` (one per label name, in order), created on first use.
  // REQUIRES: values.size() == label_names().size(); throws std::invalid_argument otherwise.
  T& With(const LabelValues& values);
  // The child without labels. REQUIRES: the family has no label names.
  T& Get() { return With({}); }

  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

 private:
  friend class MetricsRegistry;
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::vector<double> bounds)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        bounds_(std::move(bounds)) {}

  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  const std::vector<double> bounds_;  // histograms only
  mutable std::mutex mu_;
  std::map<LabelValues, std::unique_ptr<T>> children_;  // rendered in label-value order
};

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Registers a family, or returns the one registered before under `name` when its definition
  // (type, help, label names, buckets) is the same, so several users may declare it. Throws
  // std::invalid_argument for an invalid metric or label name (a histogram may not use "le"),
  // for bad buckets, or for a different definition under a name already taken.
  Family<Counter>& AddCounter(const std::string& name, const std::string& help,
                              const std::vector<std::string>& label_names = {});
  Family<Gauge>& AddGauge(const std::string& name, const std::string& help,
                          const std::vector<std::string>& label_names = {});
  Family<Histogram>& AddHistogram(const std::string& name, const std::string& help,
                                  const std::vector<std::string>& label_names,
                                  const std::vector<double>& bounds);

  // Every family in name order, children in label-value order, in the text format 0.0.4.
  // A family without children renders only its # HELP and # TYPE lines.
  std::string Render() const;
  void RenderTo(std::string* out) const;

 private:
  struct Entry {
    MetricType type;
    std::unique_ptr<Family<Counter>> counter;
    std::unique_ptr<Family<Gauge>> gauge;
    std::unique_ptr<Family<Histogram>> histogram;
  };
  Entry& Add(MetricType type, const std::string& name, const std::string& help,
             const std::vector<std::string>& label_names, const std::vector<double>& bounds);

  mutable std::mutex mu_;
  std::map<std::string, Entry> families_;
};

// Buckets for durations in seconds: 0.5 ms to 10 s.
std::vector<double> LatencyBuckets();
// bounds start, start*factor, ... (count of them).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// The text format's pieces, exposed for tests and for callers that render by hand.
// A sample value: shortest round-trip decimal, "+Inf", "-Inf", "NaN".
std::string FormatValue(double v);
// A label value with \ " and newline escaped.
std::string EscapeLabelValue(std::string_view v);
// A HELP text with \ and newline escaped.
std::string EscapeHelp(std::string_view v);

}  // namespace controller
