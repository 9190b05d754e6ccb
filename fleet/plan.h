// The rollout plan: how a release is split into waves and what each wave must show to pass.
//
// A plan is a JSON object (the `--plan` file, and the effective plan stored with each cycle and
// rollout). Every field is optional and has the default written beside it below; an empty object
// `{}` is the default plan. Unknown fields, duplicate fields and wrong JSON types are errors at any
// level, so a typo can never silently weaken a gate.
//
// Percentages (waves[].percent, successThresholdPercent, abort[].thresholdPercent) are numbers
// with at most 4 decimal places (steps of 0.0001%); code compares them exactly as integer parts
// per million with PercentPpm(), never as floating point. Durations are whole seconds, at most
// kMaxPlanSeconds (10 years), so adding one to an epoch time cannot overflow.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fleet {

// Which terminal statuses a rule counts. kAll = FAILED + REJECTED + TIMED_OUT (never CANCELED
// or REMOVED: those are the controller's doing, not the device's).
enum class FailureType { kFailed, kRejected, kTimedOut, kAll };
std::string_view ToString(FailureType type);  // "FAILED", "REJECTED", "TIMED_OUT", "ALL"
std::optional<FailureType> ParseFailureType(std::string_view text);

// What a failed wave does to its rollout.
enum class GateAction { kPause, kAbort };
std::string_view ToString(GateAction action);  // "pause", "abort"
std::optional<GateAction> ParseGateAction(std::string_view text);

// 1% = 10000 ppm; 100% = 1000000. REQUIRES: `percent` passed plan validation.
int64_t PercentPpm(double percent);
inline constexpr int64_t kPpmPerHundredPercent = 1000000;

inline constexpr int64_t kMaxPlanSeconds = 315360000;
inline constexpr int64_t kMaxRetries = 10;

struct WaveSpec {
  double percent = 100;     // REQUIRED in JSON: cumulative share of the rollout's devices, (0,100]
  int64_t min_devices = 0;  // "minDevices": lifts a small wave to at least this many devices

  friend bool operator==(const WaveSpec&, const WaveSpec&) = default;
};

struct AbortCriterion {
  FailureType failure_type = FailureType::kAll;  // "failureType"
  double threshold_percent = 10;                 // "thresholdPercent", [0,100]
  int64_t min_executed = 5;                      // "minExecuted", >= 0
  GateAction action = GateAction::kAbort;        // "action"

  friend bool operator==(const AbortCriterion&, const AbortCriterion&) = default;
};

struct Timeouts {
  int64_t queued_seconds = 86400;      // "queuedSeconds" (> 0): QUEUED longer -> TIMED_OUT
  int64_t in_progress_seconds = 1800;  // "inProgressSeconds" (> 0): IN_PROGRESS since started

  friend bool operator==(const Timeouts&, const Timeouts&) = default;
};

struct RetryRule {
  FailureType failure_type = FailureType::kAll;  // "failureType": REQUIRED in JSON
  int64_t count = 1;                             // "count", [0,10]: re-queues allowed

  friend bool operator==(const RetryRule&, const RetryRule&) = default;
};

struct HealthGate {
  std::string metric = "crashCount";       // telemetry field: an identifier, 1-64 of [A-Za-z0-9_]
  double max_ratio = 1.5;                  // "maxRatio" >= 1: updated/control rate bound
  double confidence = 0.95;                // in (0.5, 1)
  int64_t max_soak_seconds = 3600;         // "maxSoakSeconds" >= soakSeconds
  GateAction action = GateAction::kAbort;  // what a health failure does (an extension of issue 4)

  friend bool operator==(const HealthGate&, const HealthGate&) = default;
};

struct Approval {
  std::vector<int> before_waves;  // "beforeWaves": 1-based wave numbers, unique, <= waves.size()
  int64_t ttl_seconds = 86400;    // "ttlSeconds" > 0: how long an approval token is valid

  friend bool operator==(const Approval&, const Approval&) = default;
};

struct Plan {
  // Default waves: 1% (at least 1 device), 10%, 50%, 100%.
  std::vector<WaveSpec> waves = {{1, 1}, {10, 0}, {50, 0}, {100, 0}};
  double success_threshold_percent = 95;                   // "successThresholdPercent", [0,100]
  std::vector<AbortCriterion> abort = {AbortCriterion{}};  // [] = never abort on failures
  Timeouts timeouts;
  std::vector<RetryRule> retries;        // default []: no retries; at most one rule per failureType
  int64_t soak_seconds = 600;            // "soakSeconds" >= 0: watched after the threshold is met
  std::optional<HealthGate> health;      // absent or null: no health gate
  std::optional<Approval> approval;      // absent or null: no approvals
  int64_t max_per_minute = 0;            // "maxPerMinute" >= 0: executions queued; 0 = unlimited
  int64_t max_attempts_per_release = 3;  // "maxAttemptsPerRelease" >= 1: then quarantine
  int64_t cycle_interval_seconds = 60;   // "cycleIntervalSeconds" >= 0: idle between cycles

  friend bool operator==(const Plan&, const Plan&) = default;
};

// Parses and validates a plan. On failure returns nullopt and, when `error` is given, sets it to
// one line naming the field path, the bad value and what is allowed, e.g.
//   waves[2].percent must be greater than waves[1].percent (10), got 5
std::optional<Plan> ParsePlan(std::string_view json, std::string* error = nullptr);

// The first problem with an already built plan (the checks ParsePlan makes after reading it).
std::optional<std::string> CheckPlan(const Plan& plan);

// Every field spelled out (health and approval as null when absent), in the documented order.
// ParsePlan(PlanToJson(p)) == p for every valid plan.
std::string PlanToJson(const Plan& plan);

}  // namespace fleet
