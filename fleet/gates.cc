#include "fleet/gates.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace fleet {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

std::string Format(double x) {
  if (std::isinf(x)) return "inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", x);
  return buf;
}

std::string Percent(int64_t part, int64_t whole) {
  return whole == 0 ? "0%" : Format(100.0 * static_cast<double>(part) / whole) + "%";
}

std::string_view Describe(FailureType type) {
  return type == FailureType::kAll ? "FAILED, REJECTED or TIMED_OUT" : ToString(type);
}

std::optional<FailureType> TypeOf(JobStatus status) {
  switch (status) {
    case JobStatus::kFailed:
      return FailureType::kFailed;
    case JobStatus::kRejected:
      return FailureType::kRejected;
    case JobStatus::kTimedOut:
      return FailureType::kTimedOut;
    default:
      return std::nullopt;
  }
}

// Continued fraction for the incomplete beta function (modified Lentz), as in Numerical Recipes
// §6.4. It converges fast for x < (a + 1) / (a + b + 2); RegularizedBeta uses the symmetry
// I_x(a, b) = 1 - I_{1-x}(b, a) to stay in that region. Iterations grow like sqrt(max(a, b)), so
// the limit below covers event counts far beyond any fleet's.
double BetaContinuedFraction(double x, double a, double b) {
  constexpr int kMaxIterations = 1000000;
  constexpr double kEpsilon = 1e-15;
  constexpr double kTiny = 1e-300;
  double qab = a + b, qap = a + 1, qam = a - 1;
  double c = 1, d = 1 - qab * x / qap;
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= kMaxIterations; ++m) {
    int m2 = 2 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1) < kEpsilon) break;
  }
  return h;
}

}  // namespace

// ---- Counts -----------------------------------------------------------------------------------

void StatusCounts::Add(JobStatus status, int64_t n) {
  switch (status) {
    case JobStatus::kQueued:
      queued += n;
      break;
    case JobStatus::kInProgress:
      in_progress += n;
      break;
    case JobStatus::kSucceeded:
      succeeded += n;
      break;
    case JobStatus::kFailed:
      failed += n;
      break;
    case JobStatus::kRejected:
      rejected += n;
      break;
    case JobStatus::kTimedOut:
      timed_out += n;
      break;
    case JobStatus::kCanceled:
      canceled += n;
      break;
    case JobStatus::kRemoved:
      removed += n;
      break;
  }
}

int64_t StatusCounts::Total() const { return Pending() + Finished() + canceled + removed; }
int64_t StatusCounts::Pending() const { return queued + in_progress; }
int64_t StatusCounts::Finished() const { return succeeded + failed + rejected + timed_out; }

int64_t StatusCounts::Failures(FailureType type) const {
  switch (type) {
    case FailureType::kFailed:
      return failed;
    case FailureType::kRejected:
      return rejected;
    case FailureType::kTimedOut:
      return timed_out;
    case FailureType::kAll:
      return failed + rejected + timed_out;
  }
  return 0;
}

// ---- Abort criteria ---------------------------------------------------------------------------

std::optional<TrippedCriterion> CheckAbortCriteria(const Plan& plan, const StatusCounts& rollout) {
  std::optional<TrippedCriterion> tripped;
  const int64_t finished = rollout.Finished();
  for (size_t i = 0; i < plan.abort.size(); ++i) {
    const AbortCriterion& c = plan.abort[i];
    const int64_t failures = rollout.Failures(c.failure_type);
    // Integer comparison in parts per million, so 10% of 50 is exactly 5 failures.
    bool trips = finished >= c.min_executed && failures >= 1 &&
                 failures * kPpmPerHundredPercent >= PercentPpm(c.threshold_percent) * finished;
    if (!trips) continue;
    // Abort is the safer outcome, so it wins; otherwise the first criterion names the reason.
    if (tripped && !(tripped->action == GateAction::kPause && c.action == GateAction::kAbort))
      continue;
    tripped = TrippedCriterion{
        i, c.action,
        "abort[" + std::to_string(i) + "]: " + std::to_string(failures) + " of " +
            std::to_string(finished) + " finished executions (" + Percent(failures, finished) +
            ") were " + std::string(Describe(c.failure_type)) + "; the limit is " +
            Format(c.threshold_percent) + "% once " + std::to_string(c.min_executed) +
            " have finished (" + std::string(ToString(c.action)) + ")"};
  }
  return tripped;
}

// ---- Timeouts ---------------------------------------------------------------------------------

std::optional<int64_t> TimeoutDeadline(const ExecutionTimes& e, const Timeouts& timeouts) {
  std::optional<int64_t> deadline;
  if (e.status == JobStatus::kQueued) {
    deadline = e.queued_at + timeouts.queued_seconds;
  } else if (e.status == JobStatus::kInProgress) {
    deadline = e.started_at.value_or(e.queued_at) + timeouts.in_progress_seconds;
  } else {
    return std::nullopt;
  }
  if (e.step_timeout_at) deadline = std::min(*deadline, *e.step_timeout_at);
  return deadline;
}

bool IsTimedOut(const ExecutionTimes& e, const Timeouts& timeouts, int64_t now) {
  std::optional<int64_t> deadline = TimeoutDeadline(e, timeouts);
  return deadline && now >= *deadline;
}

std::vector<size_t> TimedOut(const std::vector<ExecutionTimes>& executions,
                             const Timeouts& timeouts, int64_t now) {
  std::vector<size_t> out;
  for (size_t i = 0; i < executions.size(); ++i)
    if (IsTimedOut(executions[i], timeouts, now)) out.push_back(i);
  return out;
}

// ---- Retries and quarantine -------------------------------------------------------------------

int64_t RetriesFor(const Plan& plan, JobStatus failure) {
  std::optional<FailureType> type = TypeOf(failure);
  if (!type) return 0;
  std::optional<int64_t> all;
  for (const RetryRule& rule : plan.retries) {
    if (rule.failure_type == *type) return rule.count;
    if (rule.failure_type == FailureType::kAll) all = rule.count;
  }
  return all.value_or(0);
}

std::string_view ToString(FailureOutcome outcome) {
  switch (outcome) {
    case FailureOutcome::kRetry:
      return "retry";
    case FailureOutcome::kFinal:
      return "final";
    case FailureOutcome::kQuarantine:
      return "quarantine";
  }
  return "final";
}

bool ShouldQuarantine(const Plan& plan, int64_t release_failures) {
  return release_failures >= plan.max_attempts_per_release;
}

FailureOutcome DecideFailure(const Plan& plan, JobStatus status, int64_t attempts,
                             int64_t release_failures) {
  // Quarantine first: maxAttemptsPerRelease is the operator's hard cap on how often one device
  // may be tried with one release, whatever the retry rules would still allow.
  if (ShouldQuarantine(plan, release_failures)) return FailureOutcome::kQuarantine;
  if (attempts <= RetriesFor(plan, status)) return FailureOutcome::kRetry;
  return FailureOutcome::kFinal;
}

// ---- Statistics -------------------------------------------------------------------------------

double LogGamma(double x) {
  // Lanczos approximation (g = 7, 9 terms), relative error about 1e-15. std::lgamma is not used
  // because glibc's writes the global `signgam`, a data race in a multi-threaded controller.
  static constexpr double kC[9] = {
      0.99999999999980993,  676.5203681218851,     -1259.1392167224028,
      771.32342877765313,   -176.61502916214059,   12.507343278686905,
      -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7};
  constexpr double kPi = 3.14159265358979323846;
  if (x < 0.5) return std::log(kPi / std::fabs(std::sin(kPi * x))) - LogGamma(1 - x);
  x -= 1;
  double a = kC[0];
  double t = x + 7.5;
  for (int i = 1; i < 9; ++i) a += kC[i] / (x + i);
  return 0.5 * std::log(2 * kPi) + (x + 0.5) * std::log(t) - t + std::log(a);
}

double RegularizedBeta(double x, double a, double b) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  double log_front =
      LogGamma(a + b) - LogGamma(a) - LogGamma(b) + a * std::log(x) + b * std::log1p(-x);
  double front = std::exp(log_front);
  if (x < (a + 1) / (a + b + 2)) return front * BetaContinuedFraction(x, a, b) / a;
  return 1 - front * BetaContinuedFraction(1 - x, b, a) / b;
}

double BetaQuantile(double q, double a, double b) {
  if (q <= 0) return 0;
  if (q >= 1) return 1;
  // Bisection: I_x(a, b) is increasing in x. 200 halvings reach below 1e-60, far under any
  // bound that matters, and cost little next to one database round trip.
  double lo = 0, hi = 1;
  for (int i = 0; i < 200 && hi - lo > 1e-300; ++i) {
    double mid = lo + (hi - lo) / 2;
    if (mid <= lo || mid >= hi) break;
    (RegularizedBeta(mid, a, b) < q ? lo : hi) = mid;
  }
  return lo + (hi - lo) / 2;
}

// P(X >= x | n, p) = I_p(x, n - x + 1) and P(X <= x | n, p) = 1 - I_p(x + 1, n - x): the exact
// bounds are Beta quantiles.
double BinomialLowerBound(int64_t x, int64_t n, double confidence) {
  if (x <= 0) return 0;
  return BetaQuantile(1 - confidence, static_cast<double>(x), static_cast<double>(n - x + 1));
}

double BinomialUpperBound(int64_t x, int64_t n, double confidence) {
  if (x >= n) return 1;
  return BetaQuantile(confidence, static_cast<double>(x + 1), static_cast<double>(n - x));
}

// ---- Health -----------------------------------------------------------------------------------

std::string_view ToString(HealthVerdict verdict) {
  switch (verdict) {
    case HealthVerdict::kPass:
      return "pass";
    case HealthVerdict::kFail:
      return "fail";
    case HealthVerdict::kInconclusive:
      return "inconclusive";
    case HealthVerdict::kNoControl:
      return "no_control";
  }
  return "inconclusive";
}

HealthResult CompareHealth(const HealthSample& sample, double max_ratio, double confidence) {
  HealthResult r;
  r.upper = kInf;
  const HealthGroup& u = sample.updated;
  const HealthGroup& c = sample.control;
  if (u.devices <= 0 || !(u.exposure_seconds > 0)) {
    r.verdict = HealthVerdict::kInconclusive;
    r.reason = "no telemetry from updated devices yet";
    return r;
  }
  if (c.devices <= 0 || !(c.exposure_seconds > 0)) {
    r.verdict = HealthVerdict::kNoControl;
    r.reason = "no control devices reported; health not compared";
    return r;
  }
  const int64_t xu = std::max<int64_t>(u.events, 0);
  const int64_t xc = std::max<int64_t>(c.events, 0);
  const int64_t n = xu + xc;
  const double scale = c.exposure_seconds / u.exposure_seconds;  // e_c / e_u
  r.ratio = xu == 0 ? 0 : xc == 0 ? kInf : (xu / u.exposure_seconds) / (xc / c.exposure_seconds);
  if (n > 0) {
    double lo = BinomialLowerBound(xu, n, confidence);
    double hi = BinomialUpperBound(xu, n, confidence);
    r.lower = lo / (1 - lo) * scale;
    r.upper = hi >= 1 ? kInf : hi / (1 - hi) * scale;
  }
  std::string figures =
      "rate ratio " + Format(r.ratio) + " (" + Format(confidence * 100) + "% bounds " +
      Format(r.lower) + ".." + Format(r.upper) + ", limit " + Format(max_ratio) +
      "): " + std::to_string(xu) + " events over " + Format(u.exposure_seconds) + " device-s on " +
      std::to_string(u.devices) + " updated devices, " + std::to_string(xc) + " over " +
      Format(c.exposure_seconds) + " device-s on " + std::to_string(c.devices) + " control devices";
  if (xu == 0) {
    r.verdict = HealthVerdict::kPass;
    r.reason = "no events on updated devices; " + figures;
  } else if (r.upper <= max_ratio) {
    r.verdict = HealthVerdict::kPass;
    r.reason = "not worse than the limit: " + figures;
  } else if (r.lower > max_ratio) {
    r.verdict = HealthVerdict::kFail;
    r.reason = "worse than the limit: " + figures;
  } else {
    r.verdict = HealthVerdict::kInconclusive;
    r.reason = "inconclusive: " + figures;
  }
  return r;
}

// ---- The wave gate ----------------------------------------------------------------------------

std::string_view ToString(GateVerdict verdict) {
  switch (verdict) {
    case GateVerdict::kWatch:
      return "watch";
    case GateVerdict::kSoaking:
      return "soaking";
    case GateVerdict::kPassed:
      return "passed";
    case GateVerdict::kPassedWithFailures:
      return "passed_with_failures";
    case GateVerdict::kFailed:
      return "failed";
  }
  return "watch";
}

bool IsFinal(GateVerdict verdict) {
  return verdict == GateVerdict::kPassed || verdict == GateVerdict::kPassedWithFailures ||
         verdict == GateVerdict::kFailed;
}

std::string_view ToString(FailureCause cause) {
  switch (cause) {
    case FailureCause::kNone:
      return "none";
    case FailureCause::kAbortCriterion:
      return "abort_criterion";
    case FailureCause::kThresholdUnreachable:
      return "threshold_unreachable";
    case FailureCause::kHealth:
      return "health";
    case FailureCause::kHealthInconclusive:
      return "health_inconclusive";
  }
  return "none";
}

bool HealthDue(const Plan& plan, std::optional<int64_t> threshold_met_at, int64_t now) {
  return plan.health && now >= threshold_met_at.value_or(now) + plan.soak_seconds;
}

GateDecision EvaluateWave(const Plan& plan, const WaveGateInput& in) {
  GateDecision d;
  // Abort criteria first, in every state of the wave: failures of stragglers and of earlier
  // waves keep counting while this one soaks.
  if (auto tripped = CheckAbortCriteria(plan, in.rollout)) {
    d.verdict = GateVerdict::kFailed;
    d.cause = FailureCause::kAbortCriterion;
    d.action = tripped->action;
    d.reason = std::move(tripped->reason);
    return d;
  }

  const StatusCounts& w = in.wave;
  const int64_t eligible = std::max<int64_t>(in.planned - w.canceled - w.removed, 0);
  const int64_t ppm = PercentPpm(plan.success_threshold_percent);
  const int64_t needed = (ppm * eligible + kPpmPerHundredPercent - 1) / kPpmPerHundredPercent;
  if (w.succeeded < needed) {
    // Devices the rate limit has not queued yet can still succeed, so they count as pending.
    const int64_t not_queued = std::max<int64_t>(in.planned - w.Total(), 0);
    const int64_t could_succeed = w.succeeded + w.Pending() + not_queued;
    std::string counts = std::to_string(w.succeeded) + " of " + std::to_string(eligible) +
                         " executions succeeded, " + std::to_string(w.Pending() + not_queued) +
                         " pending; " + Format(plan.success_threshold_percent) + "% needs " +
                         std::to_string(needed);
    if (could_succeed < needed) {
      // The abort criteria did not trip, so the plan did not ask for an abort: stop and let an
      // operator decide rather than watch a wave that can no longer pass.
      d.verdict = GateVerdict::kFailed;
      d.cause = FailureCause::kThresholdUnreachable;
      d.action = GateAction::kPause;
      d.reason = "success threshold unreachable: " + counts;
      return d;
    }
    d.verdict = GateVerdict::kWatch;
    d.reason = "waiting for the success threshold: " + counts;
    return d;
  }

  const int64_t met_at = in.threshold_met_at.value_or(in.now);
  if (!in.threshold_met_at) d.threshold_met_at = in.now;
  const bool with_failures = w.Failures(FailureType::kAll) > 0;
  auto pass = [&](std::string reason) {
    d.verdict = with_failures ? GateVerdict::kPassedWithFailures : GateVerdict::kPassed;
    d.reason = std::move(reason);
    if (with_failures)
      d.reason += " (" + std::to_string(w.Failures(FailureType::kAll)) + " failed executions)";
    return d;
  };
  if (eligible == 0) return pass("the wave has no devices to update");

  const int64_t soak_end = met_at + plan.soak_seconds;
  if (in.now < soak_end) {
    d.verdict = GateVerdict::kSoaking;
    d.recheck_at = soak_end;
    d.reason = "soaking until " + std::to_string(soak_end) + " (" + std::to_string(w.succeeded) +
               " of " + std::to_string(eligible) + " succeeded)";
    return d;
  }
  if (!plan.health) return pass("success threshold met and soaked");

  const HealthGate& h = *plan.health;
  HealthResult health;
  if (in.health) {
    health = CompareHealth(*in.health, h.max_ratio, h.confidence);
  } else {
    health.upper = kInf;
    health.reason = "no health telemetry";
  }
  health.reason = h.metric + ": " + health.reason;
  d.health = health;
  switch (health.verdict) {
    case HealthVerdict::kPass:
    case HealthVerdict::kNoControl:
      return pass("healthy: " + health.reason);
    case HealthVerdict::kFail:
      d.verdict = GateVerdict::kFailed;
      d.cause = FailureCause::kHealth;
      d.action = h.action;
      d.reason = "unhealthy: " + health.reason;
      return d;
    case HealthVerdict::kInconclusive:
      break;
  }
  const int64_t give_up = met_at + h.max_soak_seconds;
  if (in.now >= give_up) {
    d.verdict = GateVerdict::kFailed;
    d.cause = FailureCause::kHealthInconclusive;
    d.action = h.action;
    d.reason = "health still inconclusive after maxSoakSeconds (" +
               std::to_string(h.max_soak_seconds) + "): " + health.reason;
    return d;
  }
  d.verdict = GateVerdict::kSoaking;
  d.recheck_at = std::min(in.now + kHealthRecheckSeconds, give_up);
  d.reason = "soaking until health is conclusive: " + health.reason;
  return d;
}

}  // namespace fleet
