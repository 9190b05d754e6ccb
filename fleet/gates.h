// The gates of a rollout, decided purely from counts, times and health samples.
//
// The controller loads a snapshot, applies timeouts (TimeoutDeadline) and retries
// (DecideFailure) first, then asks EvaluateWave what the running wave's gate says. Time is a
// parameter: epoch seconds. No I/O.
//
// Counting. An execution is *finished* when SUCCEEDED, FAILED, REJECTED or TIMED_OUT; CANCELED
// and REMOVED executions are the controller's doing and count nowhere. A retried execution counts
// by its current status (QUEUED again), so a failure that is retried is not (yet) a failure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fleet/jobs.h"
#include "fleet/plan.h"

namespace fleet {

struct StatusCounts {
  int64_t queued = 0;
  int64_t in_progress = 0;
  int64_t succeeded = 0;
  int64_t failed = 0;
  int64_t rejected = 0;
  int64_t timed_out = 0;
  int64_t canceled = 0;
  int64_t removed = 0;

  void Add(JobStatus status, int64_t n = 1);
  int64_t Total() const;     // every execution
  int64_t Pending() const;   // queued + in_progress
  int64_t Finished() const;  // succeeded + failed + rejected + timed_out
  // failed, rejected, timed_out, or their sum for kAll.
  int64_t Failures(FailureType type) const;

  friend bool operator==(const StatusCounts&, const StatusCounts&) = default;
};

// ---- Abort criteria -------------------------------------------------------------------------
//
// Criterion c trips on counts R (the rollout so far) when
//   R.Finished() >= c.minExecuted  and  R.Failures(c.failureType) >= 1  and
//   R.Failures(c.failureType) * 100 >= c.thresholdPercent * R.Finished()
// (so thresholdPercent 0 means "the first failure", once minExecuted have finished). When several
// trip, an abort criterion wins over a pause one, and among equals the first in plan order.
struct TrippedCriterion {
  size_t index = 0;  // into plan.abort
  GateAction action = GateAction::kAbort;
  std::string reason;  // e.g. "abort[0]: 3 of 20 finished executions (15%) were FAILED, ..."
};
std::optional<TrippedCriterion> CheckAbortCriteria(const Plan& plan, const StatusCounts& rollout);

// ---- Timeouts --------------------------------------------------------------------------------
//
// A QUEUED execution times out at queued_at + queuedSeconds; an IN_PROGRESS one at
// (started_at, or queued_at when unknown) + inProgressSeconds. A step timeout the device set
// (step_timeout_at) applies as well: the earlier deadline wins. Finished executions have none.
struct ExecutionTimes {
  JobStatus status = JobStatus::kQueued;
  int64_t queued_at = 0;
  std::optional<int64_t> started_at;
  std::optional<int64_t> step_timeout_at;
};
// When the execution becomes TIMED_OUT (the `deadline` column), or nullopt when it never will.
std::optional<int64_t> TimeoutDeadline(const ExecutionTimes& e, const Timeouts& timeouts);
// Whether it is TIMED_OUT at `now` (now >= deadline).
bool IsTimedOut(const ExecutionTimes& e, const Timeouts& timeouts, int64_t now);
// The indexes of `executions` that are timed out at `now`, ascending.
std::vector<size_t> TimedOut(const std::vector<ExecutionTimes>& executions,
                             const Timeouts& timeouts, int64_t now);

// ---- Retries and quarantine -------------------------------------------------------------------
//
// The retry count for a failure status is that of the rule naming it, else the ALL rule's, else
// 0. An execution that failed on its attempt number `attempts` (1 = the first) is re-queued (new
// executionNumber, attempts + 1) while attempts <= count. Independently, a device whose failures
// of this release over all cycles (`release_failures`, counting this one) reach
// maxAttemptsPerRelease is quarantined for the release instead - quarantine wins over a retry.
int64_t RetriesFor(const Plan& plan, JobStatus failure);  // 0 for a non-failure status
enum class FailureOutcome { kRetry, kFinal, kQuarantine };
std::string_view ToString(FailureOutcome outcome);  // "retry", "final", "quarantine"
// REQUIRES: status is FAILED, REJECTED or TIMED_OUT; attempts >= 1; release_failures >= 1.
FailureOutcome DecideFailure(const Plan& plan, JobStatus status, int64_t attempts,
                             int64_t release_failures);
bool ShouldQuarantine(const Plan& plan, int64_t release_failures);

// ---- Health -----------------------------------------------------------------------------------
//
// The test: a one-sided exact Poisson rate-ratio test. Each group's events (the metric's
// increase, e.g. crashes, summed over its devices during the observation window) are taken as
// Poisson with rate r per device-second of exposure. Conditional on the total n = x_u + x_c, the
// updated group's count is Binomial(n, pi) with pi = R e_u / (R e_u + e_c), where R = r_u / r_c
// is the rate ratio. Exact (Clopper-Pearson) one-sided bounds on pi at level `confidence` map to
// bounds on R = pi / (1 - pi) * e_c / e_u. Then
//   PASS          when R_upper <= maxRatio   (confidently not worse than allowed),
//   FAIL          when R_lower >  maxRatio   (confidently worse),
//   INCONCLUSIVE  otherwise.
// Special cases, checked in this order:
//   - the updated group has no device with exposure: INCONCLUSIVE (silence is not health);
//   - the control group has no device with exposure: NO_CONTROL (nothing to compare with; the
//     gate passes it - typically the last wave, whose control devices have all been updated);
//   - the updated devices reported no event at all (x_u = 0): PASS - no data can look better,
//     and with rare events (x_c = 0 too) no ratio could ever be bounded.
// The minimum sample is thus one reporting device with positive exposure in each group; the
// exact bounds stay valid for tiny counts. Assumes events are Poisson across devices: one device
// crash-looping counts as many independent events, which errs toward failing the release.
// Looking again every kHealthRecheckSeconds while inconclusive is a sequential test: the error
// rates hold per look, not overall, so keep `confidence` high (0.95 or more).
//
// Both groups are observed over the same window, e.g. [threshold_met_at, now]: a device's events
// are the increase of its counter (last report minus first report in the window, a negative
// increase - a reset - counts as 0) and its exposure the seconds between those reports.
struct HealthGroup {
  int64_t devices = 0;          // devices that reported during the window
  int64_t events = 0;           // total metric increase over them; REQUIRES >= 0
  double exposure_seconds = 0;  // total device-seconds observed
};
struct HealthSample {
  // The rollout's devices running the new release (this wave and earlier ones).
  HealthGroup updated;
  // Control: same-model devices targeted by the rollout that do not run it yet (later waves).
  HealthGroup control;
};
enum class HealthVerdict { kPass, kFail, kInconclusive, kNoControl };
std::string_view ToString(HealthVerdict verdict);  // "pass", "fail", "inconclusive", "no_control"
struct HealthResult {
  HealthVerdict verdict = HealthVerdict::kInconclusive;
  double ratio = 0;  // point estimate (x_u/e_u) / (x_c/e_c); 0 when x_u = 0, +inf when x_c = 0
  double lower = 0;  // one-sided bounds on the rate ratio at the confidence level
  double upper = 0;  // +inf when unbounded
  std::string reason;
};
HealthResult CompareHealth(const HealthSample& sample, double max_ratio, double confidence);

// Statistics used above, exposed for tests.
double LogGamma(double x);                             // REQUIRES: x > 0
double RegularizedBeta(double x, double a, double b);  // I_x(a, b); REQUIRES: a, b > 0
// The p with RegularizedBeta(p, a, b) = q, q in [0, 1].
double BetaQuantile(double q, double a, double b);
// One-sided Clopper-Pearson bounds for a binomial proportion, x of n at `confidence`:
// lower = 0 when x = 0, upper = 1 when x = n. REQUIRES: 0 <= x <= n.
double BinomialLowerBound(int64_t x, int64_t n, double confidence);
double BinomialUpperBound(int64_t x, int64_t n, double confidence);

// ---- The wave gate ----------------------------------------------------------------------------
//
// A wave's *eligible* executions are its planned devices less its CANCELED and REMOVED
// executions; planned devices not queued yet (maxPerMinute) count as pending. Its threshold is met
// when succeeded * 100 >= successThresholdPercent * eligible (at once when eligible = 0). One pass:
//   1. an abort criterion trips (rollout counts)                 -> kFailed, its action;
//   2. threshold not met and unreachable even if every pending execution succeeds
//                                                                -> kFailed, pause;
//   3. threshold not met                                         -> kWatch;
//   4. met (threshold_met_at recorded now if unset); an empty wave (eligible = 0) passes at once;
//      now < met + soakSeconds                                   -> kSoaking;
//   5. no health gate, or health PASS / NO_CONTROL               -> kPassed, or
//      kPassedWithFailures when the wave has any FAILED, REJECTED or TIMED_OUT execution;
//   6. health FAIL                                               -> kFailed, health.action;
//   7. INCONCLUSIVE before met + maxSoakSeconds                  -> kSoaking (look again);
//      at or after it                                            -> kFailed, health.action.
// Executions still pending when a wave passes keep running; their outcome counts for the
// rollout's abort criteria in later waves.
inline constexpr int64_t kHealthRecheckSeconds = 60;

enum class GateVerdict { kWatch, kSoaking, kPassed, kPassedWithFailures, kFailed };
// "watch", "soaking", and for the final ones the waves.verdict values "passed",
// "passed_with_failures", "failed".
std::string_view ToString(GateVerdict verdict);
bool IsFinal(GateVerdict verdict);  // passed, passed_with_failures, failed

enum class FailureCause {
  kNone,
  kAbortCriterion,
  kThresholdUnreachable,
  kHealth,
  kHealthInconclusive
};
std::string_view ToString(FailureCause cause);

struct WaveGateInput {
  int64_t planned = 0;  // devices planned for the wave (waves.planned)
  StatusCounts wave;    // the wave's executions
  // What the abort criteria count: the rollout's executions so far. After an operator resumes a
  // rollout a gate paused, count only the waves started since, or the same failures trip again.
  StatusCounts rollout;
  std::optional<int64_t> threshold_met_at;  // as recorded by an earlier pass
  // REQUIRED once HealthDue(); absent then means no telemetry (INCONCLUSIVE).
  std::optional<HealthSample> health;
  int64_t now = 0;
};

struct GateDecision {
  GateVerdict verdict = GateVerdict::kWatch;
  FailureCause cause = FailureCause::kNone;
  GateAction action = GateAction::kPause;  // kFailed only: what happens to the rollout
  // Set when the threshold was met in this pass: record it as the wave's threshold_met_at.
  std::optional<int64_t> threshold_met_at;
  // When a time-driven change is due (end of soak, next health look); nullopt while watching:
  // then only a device report or an execution deadline (TimeoutDeadline) changes anything.
  std::optional<int64_t> recheck_at;
  std::optional<HealthResult> health;  // when health was compared in this pass
  std::string reason;                  // one line for the events row and the console
};

// Whether EvaluateWave will compare health at `now` (so the controller loads telemetry only then).
bool HealthDue(const Plan& plan, std::optional<int64_t> threshold_met_at, int64_t now);

GateDecision EvaluateWave(const Plan& plan, const WaveGateInput& input);

}  // namespace fleet
