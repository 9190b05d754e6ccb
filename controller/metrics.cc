#include "controller/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>

namespace controller {
namespace {

void AtomicAdd(std::atomic<double>& a, double d) {
  double old = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(old, old + d, std::memory_order_relaxed)) {
  }
}

bool ValidName(std::string_view s, bool allow_colon) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alpha =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string_view TypeName(MetricType t) {
  switch (t) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// {a="x",b="y"} plus an optional extra label (le for buckets); nothing when there are none.
void AppendLabels(std::string* out, const std::vector<std::string>& names,
                  const LabelValues& values, std::string_view extra_name = {},
                  std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return;
  out->push_back('{');
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out->push_back(',');
    *out += names[i];
    *out += "=\"";
    *out += EscapeLabelValue(values[i]);
    out->push_back('"');
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out->push_back(',');
    *out += extra_name;
    *out += "=\"";
    *out += extra_value;
    out->push_back('"');
  }
  out->push_back('}');
}

void AppendSample(std::string* out, std::string_view name, std::string_view suffix,
                  const std::vector<std::string>& names, const LabelValues& values, double value,
                  std::string_view extra_name = {}, std::string_view extra_value = {}) {
  *out += name;
  *out += suffix;
  AppendLabels(out, names, values, extra_name, extra_value);
  out->push_back(' ');
  *out += FormatValue(value);
  out->push_back('\n');
}

}  // namespace

// ---- Values -------------------------------------------------------------------------------

void Gauge::Add(double d) { AtomicAdd(value_, d); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  // le is inclusive: v lands in the first bucket whose bound is >= v.
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, v);
}

uint64_t Histogram::Count() const {
  uint64_t n = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) n += BucketCount(i);
  return n;
}

template <typename T>
T& Family<T>::With(const LabelValues& values) {
  if (values.size() != label_names_.size()) {
    throw std::invalid_argument(name_ + ": " + std::to_string(values.size()) +
                                " label value(s) given, " + std::to_string(label_names_.size()) +
                                " expected");
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = children_.find(values);
  if (it == children_.end()) {
    std::unique_ptr<T> child;
    if constexpr (std::is_same_v<T, Histogram>) {
      child = std::make_unique<Histogram>(bounds_);
    } else {
      child = std::make_unique<T>();
    }
    it = children_.emplace(values, std::move(child)).first;
  }
  return *it->second;
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---- Registry -----------------------------------------------------------------------------

MetricsRegistry::Entry& MetricsRegistry::Add(MetricType type, const std::string& name,
                                             const std::string& help,
                                             const std::vector<std::string>& label_names,
                                             const std::vector<double>& bounds) {
  if (!ValidName(name, /*allow_colon=*/true))
    throw std::invalid_argument("invalid metric name \"" + name + "\"");
  for (size_t i = 0; i < label_names.size(); ++i) {
    const std::string& l = label_names[i];
    if (!ValidName(l, false) || l.starts_with("__"))
      throw std::invalid_argument(name + ": invalid label name \"" + l + "\"");
    if (type == MetricType::kHistogram && l == "le")
      throw std::invalid_argument(name + ": a histogram may not have a label \"le\"");
    if (std::find(label_names.begin(), label_names.begin() + i, l) != label_names.begin() + i)
      throw std::invalid_argument(name + ": label \"" + l + "\" given twice");
  }
  if (type == MetricType::kHistogram) {
    if (bounds.empty()) throw std::invalid_argument(name + ": a histogram needs buckets");
    for (size_t i = 0; i < bounds.size(); ++i) {
      if (!std::isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
        throw std::invalid_argument(name + ": buckets must be finite and strictly increasing");
    }
  }

  std::lock_guard<std::mutex> lock(mu_);
  auto it = families_.find(name);
  if (it != families_.end()) {
    const Entry& e = it->second;
    bool same = e.type == type;
    if (same) {
      switch (type) {
        case MetricType::kCounter:
          same = e.counter->help_ == help && e.counter->label_names_ == label_names;
          break;
        case MetricType::kGauge:
          same = e.gauge->help_ == help && e.gauge->label_names_ == label_names;
          break;
        case MetricType::kHistogram:
          same = e.histogram->help_ == help && e.histogram->label_names_ == label_names &&
                 e.histogram->bounds_ == bounds;
          break;
      }
    }
    if (!same) throw std::invalid_argument("metric " + name + " is already registered differently");
    return it->second;
  }
  Entry e{type, nullptr, nullptr, nullptr};
  switch (type) {
    case MetricType::kCounter:
      e.counter.reset(new Family<Counter>(name, help, label_names, {}));
      break;
    case MetricType::kGauge:
      e.gauge.reset(new Family<Gauge>(name, help, label_names, {}));
      break;
    case MetricType::kHistogram:
      e.histogram.reset(new Family<Histogram>(name, help, label_names, bounds));
      break;
  }
  return families_.emplace(name, std::move(e)).first->second;
}

Family<Counter>& MetricsRegistry::AddCounter(const std::string& name, const std::string& help,
                                             const std::vector<std::string>& label_names) {
  return *Add(MetricType::kCounter, name, help, label_names, {}).counter;
}

Family<Gauge>& MetricsRegistry::AddGauge(const std::string& name, const std::string& help,
                                         const std::vector<std::string>& label_names) {
  return *Add(MetricType::kGauge, name, help, label_names, {}).gauge;
}

Family<Histogram>& MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                                 const std::vector<std::string>& label_names,
                                                 const std::vector<double>& bounds) {
  return *Add(MetricType::kHistogram, name, help, label_names, bounds).histogram;
}

std::string MetricsRegistry::Render() const {
  std::string out;
  RenderTo(&out);
  return out;
}

void MetricsRegistry::RenderTo(std::string* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, e] : families_) {
    const std::string* help = nullptr;
    switch (e.type) {
      case MetricType::kCounter:
        help = &e.counter->help_;
        break;
      case MetricType::kGauge:
        help = &e.gauge->help_;
        break;
      case MetricType::kHistogram:
        help = &e.histogram->help_;
        break;
    }
    *out += "# HELP " + name + " " + EscapeHelp(*help) + "\n";
    *out += "# TYPE " + name + " ";
    *out += TypeName(e.type);
    out->push_back('\n');
    switch (e.type) {
      case MetricType::kCounter: {
        std::lock_guard<std::mutex> children(e.counter->mu_);
        for (const auto& [values, c] : e.counter->children_)
          AppendSample(out, name, "", e.counter->label_names_, values,
                       static_cast<double>(c->Value()));
        break;
      }
      case MetricType::kGauge: {
        std::lock_guard<std::mutex> children(e.gauge->mu_);
        for (const auto& [values, g] : e.gauge->children_)
          AppendSample(out, name, "", e.gauge->label_names_, values, g->Value());
        break;
      }
      case MetricType::kHistogram: {
        const Family<Histogram>& f = *e.histogram;
        std::lock_guard<std::mutex> children(f.mu_);
        for (const auto& [values, h] : f.children_) {
          // Read each bucket once; the cumulative counts and _count come from these reads.
          const double sum = h->Sum();
          uint64_t cumulative = 0;
          for (size_t i = 0; i <= f.bounds_.size(); ++i) {
            cumulative += h->BucketCount(i);
            AppendSample(out, name, "_bucket", f.label_names_, values,
                         static_cast<double>(cumulative), "le",
                         i < f.bounds_.size() ? FormatValue(f.bounds_[i]) : "+Inf");
          }
          AppendSample(out, name, "_sum", f.label_names_, values, sum);
          AppendSample(out, name, "_count", f.label_names_, values,
                       static_cast<double>(cumulative));
        }
        break;
      }
    }
  }
}

// ---- Text format pieces -------------------------------------------------------------------

std::vector<double> LatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Integral values (every counter) print without exponent up to 2^63, like Go's client.
  if (v == std::trunc(v) && std::fabs(v) < 9.2e18) return std::to_string(static_cast<int64_t>(v));
  char buf[64];
  // Shortest round-trip digits, spelled like %g (and Go's client): 0.0005, 1e-09.
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
  return std::string(buf, r.ptr);
}

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace controller
