#include "fleet/plan.h"

#include <cmath>
#include <initializer_list>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>

#include "fleet/json_text.h"

namespace fleet {
namespace {

using Json = nlohmann::json;

// Reading happens in two steps: the JSON is mapped onto a Plan (types and names only), then
// CheckPlan() judges the values. Keeping the value rules in one place means a plan built in code
// (the CLI's defaults, tests) passes exactly the checks a plan file does.

std::string Path(const std::string& parent, std::string_view key) {
  return parent.empty() ? std::string(key) : parent + "." + std::string(key);
}

std::string Index(const std::string& parent, size_t i) {
  return parent + "[" + std::to_string(i) + "]";
}

class Reader {
 public:
  explicit Reader(std::string* error) : error_(error) {}

  bool Fail(std::string message) {
    if (error_) *error_ = std::move(message);
    return false;
  }

  bool ExpectObject(const Json& value, const std::string& path) {
    if (value.is_object()) return true;
    return Fail((path.empty() ? std::string("the plan") : path) + " must be an object, got " +
                Describe(value));
  }

  bool ExpectArray(const Json& value, const std::string& path) {
    if (value.is_array()) return true;
    return Fail(path + " must be an array, got " + Describe(value));
  }

  // Every key of `object` must be in `allowed`.
  bool OnlyKeys(const Json& object, const std::string& path,
                std::initializer_list<std::string_view> allowed) {
    for (const auto& [key, value] : object.items()) {
      bool known = false;
      for (std::string_view a : allowed) known = known || a == key;
      if (known) continue;
      std::string list;
      for (std::string_view a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return Fail("unknown field " + Path(path, key) + " (allowed" +
                  (path.empty() ? "" : " in " + path) + ": " + list + ")");
    }
    return true;
  }

  // Each Get* leaves `out` unchanged (the default) when the field is absent.
  bool GetInt(const Json& object, const std::string& path, const char* key, int64_t* out) {
    auto it = object.find(key);
    if (it == object.end()) return true;
    if (it->is_number_unsigned()) {
      if (it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return Fail(Path(path, key) + " is out of range, got " + it->dump());
      *out = static_cast<int64_t>(it->get<uint64_t>());
      return true;
    }
    if (it->is_number_integer()) {
      *out = it->get<int64_t>();
      return true;
    }
    return Fail(Path(path, key) + " must be an integer, got " + Describe(*it));
  }

  bool GetNumber(const Json& object, const std::string& path, const char* key, double* out) {
    auto it = object.find(key);
    if (it == object.end()) return true;
    if (!it->is_number()) return Fail(Path(path, key) + " must be a number, got " + Describe(*it));
    *out = it->get<double>();
    return true;
  }

  bool GetString(const Json& object, const std::string& path, const char* key, std::string* out) {
    auto it = object.find(key);
    if (it == object.end()) return true;
    if (!it->is_string()) return Fail(Path(path, key) + " must be a string, got " + Describe(*it));
    *out = it->get<std::string>();
    return true;
  }

  bool GetFailureType(const Json& object, const std::string& path, const char* key,
                      FailureType* out) {
    auto it = object.find(key);
    if (it == object.end()) return true;
    std::optional<FailureType> type;
    if (it->is_string()) type = ParseFailureType(it->get<std::string>());
    if (!type)
      return Fail(Path(path, key) + " must be one of FAILED, REJECTED, TIMED_OUT, ALL, got " +
                  Describe(*it));
    *out = *type;
    return true;
  }

  bool GetAction(const Json& object, const std::string& path, const char* key, GateAction* out) {
    auto it = object.find(key);
    if (it == object.end()) return true;
    std::optional<GateAction> action;
    if (it->is_string()) action = ParseGateAction(it->get<std::string>());
    if (!action) return Fail(Path(path, key) + " must be pause or abort, got " + Describe(*it));
    *out = *action;
    return true;
  }

  bool Required(const Json& object, const std::string& path, const char* key) {
    if (object.contains(key)) return true;
    return Fail(Path(path, key) + " is required");
  }

 private:
  std::string* error_;
};

bool ReadPlan(const Json& root, Plan* plan, Reader& r) {
  if (!r.ExpectObject(root, "")) return false;
  if (!r.OnlyKeys(
          root, "",
          {"waves", "successThresholdPercent", "abort", "timeouts", "retries", "soakSeconds",
           "health", "approval", "maxPerMinute", "maxAttemptsPerRelease", "cycleIntervalSeconds"}))
    return false;

  if (auto it = root.find("waves"); it != root.end()) {
    if (!r.ExpectArray(*it, "waves")) return false;
    plan->waves.clear();
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& w = (*it)[i];
      std::string path = Index("waves", i);
      WaveSpec spec;
      if (!r.ExpectObject(w, path) || !r.OnlyKeys(w, path, {"percent", "minDevices"}) ||
          !r.Required(w, path, "percent") || !r.GetNumber(w, path, "percent", &spec.percent) ||
          !r.GetInt(w, path, "minDevices", &spec.min_devices))
        return false;
      plan->waves.push_back(spec);
    }
  }
  if (!r.GetNumber(root, "", "successThresholdPercent", &plan->success_threshold_percent))
    return false;

  if (auto it = root.find("abort"); it != root.end()) {
    if (!r.ExpectArray(*it, "abort")) return false;
    plan->abort.clear();
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& a = (*it)[i];
      std::string path = Index("abort", i);
      AbortCriterion c;
      if (!r.ExpectObject(a, path) ||
          !r.OnlyKeys(a, path, {"failureType", "thresholdPercent", "minExecuted", "action"}) ||
          !r.GetFailureType(a, path, "failureType", &c.failure_type) ||
          !r.GetNumber(a, path, "thresholdPercent", &c.threshold_percent) ||
          !r.GetInt(a, path, "minExecuted", &c.min_executed) ||
          !r.GetAction(a, path, "action", &c.action))
        return false;
      plan->abort.push_back(c);
    }
  }

  if (auto it = root.find("timeouts"); it != root.end()) {
    if (!r.ExpectObject(*it, "timeouts") ||
        !r.OnlyKeys(*it, "timeouts", {"queuedSeconds", "inProgressSeconds"}) ||
        !r.GetInt(*it, "timeouts", "queuedSeconds", &plan->timeouts.queued_seconds) ||
        !r.GetInt(*it, "timeouts", "inProgressSeconds", &plan->timeouts.in_progress_seconds))
      return false;
  }

  if (auto it = root.find("retries"); it != root.end()) {
    if (!r.ExpectArray(*it, "retries")) return false;
    plan->retries.clear();
    for (size_t i = 0; i < it->size(); ++i) {
      const Json& e = (*it)[i];
      std::string path = Index("retries", i);
      RetryRule rule;
      if (!r.ExpectObject(e, path) || !r.OnlyKeys(e, path, {"failureType", "count"}) ||
          !r.Required(e, path, "failureType") ||
          !r.GetFailureType(e, path, "failureType", &rule.failure_type) ||
          !r.GetInt(e, path, "count", &rule.count))
        return false;
      plan->retries.push_back(rule);
    }
  }

  if (!r.GetInt(root, "", "soakSeconds", &plan->soak_seconds)) return false;

  if (auto it = root.find("health"); it != root.end() && !it->is_null()) {
    HealthGate h;
    if (!r.ExpectObject(*it, "health") ||
        !r.OnlyKeys(*it, "health",
                    {"metric", "maxRatio", "confidence", "maxSoakSeconds", "action"}) ||
        !r.GetString(*it, "health", "metric", &h.metric) ||
        !r.GetNumber(*it, "health", "maxRatio", &h.max_ratio) ||
        !r.GetNumber(*it, "health", "confidence", &h.confidence) ||
        !r.GetInt(*it, "health", "maxSoakSeconds", &h.max_soak_seconds) ||
        !r.GetAction(*it, "health", "action", &h.action))
      return false;
    plan->health = h;
  }

  if (auto it = root.find("approval"); it != root.end() && !it->is_null()) {
    Approval a;
    if (!r.ExpectObject(*it, "approval") ||
        !r.OnlyKeys(*it, "approval", {"beforeWaves", "ttlSeconds"}) ||
        !r.GetInt(*it, "approval", "ttlSeconds", &a.ttl_seconds))
      return false;
    if (auto w = it->find("beforeWaves"); w != it->end()) {
      if (!r.ExpectArray(*w, "approval.beforeWaves")) return false;
      for (size_t i = 0; i < w->size(); ++i) {
        std::string path = Index("approval.beforeWaves", i);
        const Json& n = (*w)[i];
        if (!n.is_number_integer())
          return r.Fail(path + " must be an integer (a wave number), got " + Describe(n));
        // Checked here as well as in CheckPlan because the field is an int.
        const int64_t count = static_cast<int64_t>(plan->waves.size());
        int64_t wave = 0;
        if (!n.is_number_unsigned())
          wave = n.get<int64_t>();
        else if (n.get<uint64_t>() <= static_cast<uint64_t>(count))
          wave = n.get<int64_t>();
        if (wave < 1 || wave > count)
          return r.Fail(path + " must be a wave number in [1, " + std::to_string(count) +
                        "], got " + n.dump());
        a.before_waves.push_back(static_cast<int>(wave));
      }
    }
    plan->approval = a;
  }

  return r.GetInt(root, "", "maxPerMinute", &plan->max_per_minute) &&
         r.GetInt(root, "", "maxAttemptsPerRelease", &plan->max_attempts_per_release) &&
         r.GetInt(root, "", "cycleIntervalSeconds", &plan->cycle_interval_seconds);
}

// Value checks. Each returns the message for a bad value, or nullopt.

// Values are already in [0, 100], so ppm <= 10^6 and the product's rounding error is below
// 10^-9: an absolute tolerance separates "written with 4 decimals" from "more decimals" safely.
bool HasAtMost4Decimals(double percent) {
  double ppm = percent * 10000.0;
  return std::fabs(ppm - std::round(ppm)) <= 1e-6;
}

std::optional<std::string> CheckPercent(const std::string& path, double value, bool allow_zero) {
  bool in_range = allow_zero ? value >= 0 && value <= 100 : value > 0 && value <= 100;
  if (!in_range)
    return path + " must be in " + (allow_zero ? "[0, 100]" : "(0, 100]") + ", got " +
           FormatNumber(value);
  if (!HasAtMost4Decimals(value))
    return path + " must have at most 4 decimal places, got " + FormatNumber(value);
  return std::nullopt;
}

std::optional<std::string> CheckSeconds(const std::string& path, int64_t value, bool allow_zero) {
  if (value < (allow_zero ? 0 : 1) || value > kMaxPlanSeconds)
    return path + " must be in [" + (allow_zero ? "0" : "1") + ", " +
           std::to_string(kMaxPlanSeconds) + "] seconds, got " + std::to_string(value);
  return std::nullopt;
}

std::optional<std::string> CheckMin(const std::string& path, int64_t value, int64_t min) {
  if (value < min)
    return path + " must be at least " + std::to_string(min) + ", got " + std::to_string(value);
  return std::nullopt;
}

bool IsIdentifier(std::string_view s) {
  if (s.empty() || s.size() > 64 || (s[0] >= '0' && s[0] <= '9')) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
      return false;
  return true;
}

Json PercentJson(double percent) {
  if (percent == std::floor(percent)) return static_cast<int64_t>(percent);
  return percent;
}

}  // namespace

std::string_view ToString(FailureType type) {
  switch (type) {
    case FailureType::kFailed:
      return "FAILED";
    case FailureType::kRejected:
      return "REJECTED";
    case FailureType::kTimedOut:
      return "TIMED_OUT";
    case FailureType::kAll:
      return "ALL";
  }
  return "ALL";
}

std::optional<FailureType> ParseFailureType(std::string_view text) {
  for (FailureType t :
       {FailureType::kFailed, FailureType::kRejected, FailureType::kTimedOut, FailureType::kAll})
    if (ToString(t) == text) return t;
  return std::nullopt;
}

std::string_view ToString(GateAction action) {
  return action == GateAction::kPause ? "pause" : "abort";
}

std::optional<GateAction> ParseGateAction(std::string_view text) {
  if (text == "pause") return GateAction::kPause;
  if (text == "abort") return GateAction::kAbort;
  return std::nullopt;
}

int64_t PercentPpm(double percent) { return std::llround(percent * 10000.0); }

std::optional<std::string> CheckPlan(const Plan& plan) {
  if (plan.waves.empty()) return "waves must list at least one wave, got []";
  for (size_t i = 0; i < plan.waves.size(); ++i) {
    const WaveSpec& w = plan.waves[i];
    std::string path = Index("waves", i);
    if (auto e = CheckPercent(path + ".percent", w.percent, false)) return e;
    if (i > 0 && PercentPpm(w.percent) <= PercentPpm(plan.waves[i - 1].percent))
      return path + ".percent must be greater than " + Index("waves", i - 1) + ".percent (" +
             FormatNumber(plan.waves[i - 1].percent) + "), got " + FormatNumber(w.percent);
    if (auto e = CheckMin(path + ".minDevices", w.min_devices, 0)) return e;
  }
  if (PercentPpm(plan.waves.back().percent) != kPpmPerHundredPercent)
    return Index("waves", plan.waves.size() - 1) +
           ".percent must be 100 (the last wave reaches every device), got " +
           FormatNumber(plan.waves.back().percent);
  if (auto e = CheckPercent("successThresholdPercent", plan.success_threshold_percent, true))
    return e;
  for (size_t i = 0; i < plan.abort.size(); ++i) {
    std::string path = Index("abort", i);
    if (auto e = CheckPercent(path + ".thresholdPercent", plan.abort[i].threshold_percent, true))
      return e;
    if (auto e = CheckMin(path + ".minExecuted", plan.abort[i].min_executed, 0)) return e;
  }
  if (auto e = CheckSeconds("timeouts.queuedSeconds", plan.timeouts.queued_seconds, false))
    return e;
  if (auto e = CheckSeconds("timeouts.inProgressSeconds", plan.timeouts.in_progress_seconds, false))
    return e;
  for (size_t i = 0; i < plan.retries.size(); ++i) {
    std::string path = Index("retries", i);
    const RetryRule& rule = plan.retries[i];
    for (size_t j = 0; j < i; ++j)
      if (plan.retries[j].failure_type == rule.failure_type)
        return path + ".failureType " + std::string(ToString(rule.failure_type)) + " repeats " +
               Index("retries", j) + ".failureType; one rule per failureType";
    if (rule.count < 0 || rule.count > kMaxRetries)
      return path + ".count must be in [0, " + std::to_string(kMaxRetries) + "], got " +
             std::to_string(rule.count);
  }
  if (auto e = CheckSeconds("soakSeconds", plan.soak_seconds, true)) return e;
  if (const auto& h = plan.health) {
    if (!IsIdentifier(h->metric))
      return "health.metric must be a telemetry field name (1-64 of A-Z a-z 0-9 _, not starting "
             "with a digit), got " +
             Json(h->metric).dump();
    if (!(h->max_ratio >= 1) || !std::isfinite(h->max_ratio))
      return "health.maxRatio must be at least 1, got " + FormatNumber(h->max_ratio);
    if (!(h->confidence > 0.5 && h->confidence < 1))
      return "health.confidence must be in (0.5, 1), got " + FormatNumber(h->confidence);
    if (auto e = CheckSeconds("health.maxSoakSeconds", h->max_soak_seconds, true)) return e;
    if (h->max_soak_seconds < plan.soak_seconds)
      return "health.maxSoakSeconds must be at least soakSeconds (" +
             std::to_string(plan.soak_seconds) + "), got " + std::to_string(h->max_soak_seconds);
  }
  if (const auto& a = plan.approval) {
    for (size_t i = 0; i < a->before_waves.size(); ++i) {
      std::string path = Index("approval.beforeWaves", i);
      int wave = a->before_waves[i];
      if (wave < 1 || static_cast<size_t>(wave) > plan.waves.size())
        return path + " must be a wave number in [1, " + std::to_string(plan.waves.size()) +
               "], got " + std::to_string(wave);
      for (size_t j = 0; j < i; ++j)
        if (a->before_waves[j] == wave)
          return path + " repeats wave " + std::to_string(wave) + " (approval.beforeWaves[" +
                 std::to_string(j) + "])";
    }
    if (auto e = CheckSeconds("approval.ttlSeconds", a->ttl_seconds, false)) return e;
  }
  if (auto e = CheckMin("maxPerMinute", plan.max_per_minute, 0)) return e;
  if (auto e = CheckMin("maxAttemptsPerRelease", plan.max_attempts_per_release, 1)) return e;
  if (auto e = CheckSeconds("cycleIntervalSeconds", plan.cycle_interval_seconds, true)) return e;
  return std::nullopt;
}

std::optional<Plan> ParsePlan(std::string_view json, std::string* error) {
  Reader reader(error);
  // nlohmann keeps the last of duplicate keys silently; a plan with "soakSeconds" twice is
  // ambiguous, so the parser callback tracks the keys of each open object and refuses repeats.
  std::vector<std::set<std::string>> open;
  std::optional<std::string> duplicate;
  auto callback = [&](int, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      open.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      if (!open.empty()) open.pop_back();
    } else if (event == Json::parse_event_t::key && !open.empty()) {
      std::string key = parsed.get<std::string>();
      if (!open.back().insert(key).second && !duplicate) duplicate = key;
    }
    return true;
  };
  Json root;
  try {
    root = Json::parse(json.begin(), json.end(), callback);
  } catch (const Json::exception& e) {
    std::string what = e.what();
    if (auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    reader.Fail("the plan is not valid JSON: " + what);
    return std::nullopt;
  }
  if (duplicate) {
    reader.Fail("field " + Json(*duplicate).dump() + " appears twice in one object");
    return std::nullopt;
  }
  Plan plan;
  if (!ReadPlan(root, &plan, reader)) return std::nullopt;
  if (auto e = CheckPlan(plan)) {
    reader.Fail(*e);
    return std::nullopt;
  }
  return plan;
}

std::string PlanToJson(const Plan& plan) {
  using Ordered = nlohmann::ordered_json;
  Ordered out;
  Ordered waves = Ordered::array();
  for (const WaveSpec& w : plan.waves)
    waves.push_back({{"percent", PercentJson(w.percent)}, {"minDevices", w.min_devices}});
  out["waves"] = waves;
  out["successThresholdPercent"] = PercentJson(plan.success_threshold_percent);
  Ordered abort = Ordered::array();
  for (const AbortCriterion& c : plan.abort)
    abort.push_back({{"failureType", ToString(c.failure_type)},
                     {"thresholdPercent", PercentJson(c.threshold_percent)},
                     {"minExecuted", c.min_executed},
                     {"action", ToString(c.action)}});
  out["abort"] = abort;
  out["timeouts"] = {{"queuedSeconds", plan.timeouts.queued_seconds},
                     {"inProgressSeconds", plan.timeouts.in_progress_seconds}};
  Ordered retries = Ordered::array();
  for (const RetryRule& r : plan.retries)
    retries.push_back({{"failureType", ToString(r.failure_type)}, {"count", r.count}});
  out["retries"] = retries;
  out["soakSeconds"] = plan.soak_seconds;
  if (const auto& h = plan.health) {
    out["health"] = {{"metric", h->metric},
                     {"maxRatio", h->max_ratio},
                     {"confidence", h->confidence},
                     {"maxSoakSeconds", h->max_soak_seconds},
                     {"action", ToString(h->action)}};
  } else {
    out["health"] = nullptr;
  }
  if (const auto& a = plan.approval) {
    out["approval"] = {{"beforeWaves", a->before_waves}, {"ttlSeconds", a->ttl_seconds}};
  } else {
    out["approval"] = nullptr;
  }
  out["maxPerMinute"] = plan.max_per_minute;
  out["maxAttemptsPerRelease"] = plan.max_attempts_per_release;
  out["cycleIntervalSeconds"] = plan.cycle_interval_seconds;
  return out.dump();
}

}  // namespace fleet
