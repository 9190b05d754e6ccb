#include "fleet/gates.h"

#include <chrono>
#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace fleet {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

StatusCounts Counts(int64_t succeeded, int64_t failed = 0, int64_t rejected = 0,
                    int64_t timed_out = 0, int64_t queued = 0, int64_t in_progress = 0,
                    int64_t canceled = 0, int64_t removed = 0) {
  StatusCounts c;
  c.succeeded = succeeded;
  c.failed = failed;
  c.rejected = rejected;
  c.timed_out = timed_out;
  c.queued = queued;
  c.in_progress = in_progress;
  c.canceled = canceled;
  c.removed = removed;
  return c;
}

bool Contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// ---- Counts -----------------------------------------------------------------------------------

TEST(StatusCounts, AddAndSums) {
  StatusCounts c;
  const JobStatus all[] = {JobStatus::kQueued,   JobStatus::kInProgress, JobStatus::kSucceeded,
                           JobStatus::kFailed,   JobStatus::kRejected,   JobStatus::kTimedOut,
                           JobStatus::kCanceled, JobStatus::kRemoved};
  int64_t n = 1;
  for (JobStatus s : all) c.Add(s, n++);
  EXPECT_EQ(c, Counts(3, 4, 5, 6, 1, 2, 7, 8));
  EXPECT_EQ(c.Pending(), 3);
  EXPECT_EQ(c.Finished(), 3 + 4 + 5 + 6);
  EXPECT_EQ(c.Total(), 36);
  EXPECT_EQ(c.Failures(FailureType::kFailed), 4);
  EXPECT_EQ(c.Failures(FailureType::kRejected), 5);
  EXPECT_EQ(c.Failures(FailureType::kTimedOut), 6);
  EXPECT_EQ(c.Failures(FailureType::kAll), 15);
  c.Add(JobStatus::kSucceeded);
  EXPECT_EQ(c.succeeded, 4);
}

// ---- Abort criteria ---------------------------------------------------------------------------

Plan WithCriteria(std::vector<AbortCriterion> criteria) {
  Plan plan;
  plan.abort = std::move(criteria);
  return plan;
}

TEST(AbortCriteria, MinExecutedBoundary) {
  Plan plan;                                             // ALL >= 10% once 5 finished -> abort
  EXPECT_FALSE(CheckAbortCriteria(plan, Counts(0, 4)));  // 4 finished: too few
  EXPECT_FALSE(CheckAbortCriteria(plan, Counts(0, 4, 0, 0, 50)));          // pending do not count
  EXPECT_FALSE(CheckAbortCriteria(plan, Counts(0, 4, 0, 0, 0, 0, 9, 9)));  // nor canceled/removed
  auto t = CheckAbortCriteria(plan, Counts(1, 4));                         // 5 finished
  ASSERT_TRUE(t);
  EXPECT_EQ(t->index, 0u);
  EXPECT_EQ(t->action, GateAction::kAbort);
  EXPECT_TRUE(Contains(t->reason, "abort[0]: 4 of 5 finished executions (80%)")) << t->reason;
  EXPECT_TRUE(Contains(t->reason, "FAILED, REJECTED or TIMED_OUT")) << t->reason;
  EXPECT_TRUE(Contains(t->reason, "10% once 5 have finished")) << t->reason;
  plan.abort[0].min_executed = 0;
  EXPECT_TRUE(CheckAbortCriteria(plan, Counts(0, 1)));
  EXPECT_FALSE(CheckAbortCriteria(plan, Counts(0)));
}

TEST(AbortCriteria, ThresholdBoundaryIsInclusive) {
  Plan plan;
  EXPECT_TRUE(CheckAbortCriteria(plan, Counts(9, 1)));    // 1 of 10 = 10%
  EXPECT_FALSE(CheckAbortCriteria(plan, Counts(10, 1)));  // 1 of 11 = 9.09%
  EXPECT_TRUE(CheckAbortCriteria(plan, Counts(45, 5)));   // 5 of 50 exactly
  EXPECT_FALSE(CheckAbortCriteria(plan, Counts(46, 5)));
  plan.abort[0].threshold_percent = 33.3333;
  EXPECT_TRUE(CheckAbortCriteria(plan, Counts(666667, 333333)));   // exactly 33.3333%
  EXPECT_FALSE(CheckAbortCriteria(plan, Counts(666668, 333332)));  // 33.3332%
  plan.abort[0].threshold_percent = 100;
  EXPECT_FALSE(CheckAbortCriteria(plan, Counts(1, 9)));
  EXPECT_TRUE(CheckAbortCriteria(plan, Counts(0, 9)));
}

TEST(AbortCriteria, ZeroThresholdTripsOnTheFirstFailure) {
  Plan plan = WithCriteria({{FailureType::kAll, 0, 5, GateAction::kPause}});
  EXPECT_FALSE(CheckAbortCriteria(plan, Counts(100)));
  EXPECT_TRUE(CheckAbortCriteria(plan, Counts(100, 1)));
  EXPECT_FALSE(CheckAbortCriteria(plan, Counts(3, 1)));  // minExecuted still applies
}

TEST(AbortCriteria, EachFailureTypeCountsItsOwnStatus) {
  struct Case {
    FailureType type;
    StatusCounts counts;
    bool trips;
  };
  const Case cases[] = {
      {FailureType::kFailed, Counts(8, 2, 0, 0), true},
      {FailureType::kFailed, Counts(8, 0, 2, 0), false},
      {FailureType::kFailed, Counts(8, 0, 0, 2), false},
      {FailureType::kRejected, Counts(8, 0, 2, 0), true},
      {FailureType::kRejected, Counts(8, 2, 0, 2), false},
      {FailureType::kTimedOut, Counts(8, 0, 0, 2), true},
      {FailureType::kTimedOut, Counts(8, 2, 2, 0), false},
      {FailureType::kAll, Counts(18, 1, 1, 0), true},   // 2 of 20 = 10%
      {FailureType::kAll, Counts(27, 1, 1, 1), true},   // 3 of 30 = 10%
      {FailureType::kAll, Counts(28, 1, 1, 1), false},  // 3 of 31
      {FailureType::kAll, Counts(10, 0, 0, 0, 0, 0, 5, 5), false},
  };
  for (const Case& c : cases) {
    Plan plan = WithCriteria({{c.type, 10, 5, GateAction::kAbort}});
    EXPECT_EQ(CheckAbortCriteria(plan, c.counts).has_value(), c.trips)
        << ToString(c.type) << " " << c.counts.failed << "/" << c.counts.rejected << "/"
        << c.counts.timed_out;
  }
}

TEST(AbortCriteria, AbortWinsOverPauseThenPlanOrder) {
  Plan plan = WithCriteria({{FailureType::kFailed, 5, 1, GateAction::kPause},
                            {FailureType::kAll, 5, 1, GateAction::kPause},
                            {FailureType::kAll, 10, 1, GateAction::kAbort},
                            {FailureType::kFailed, 1, 1, GateAction::kAbort}});
  auto t = CheckAbortCriteria(plan, Counts(90, 10));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->index, 2u);
  EXPECT_EQ(t->action, GateAction::kAbort);
  t = CheckAbortCriteria(plan, Counts(93, 7));  // 7%: both pause rules and the 1% abort rule
  ASSERT_TRUE(t);
  EXPECT_EQ(t->index, 3u);
  EXPECT_EQ(t->action, GateAction::kAbort);
  Plan pauses = WithCriteria({{FailureType::kFailed, 5, 1, GateAction::kPause},
                              {FailureType::kAll, 5, 1, GateAction::kPause}});
  t = CheckAbortCriteria(pauses, Counts(90, 10));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->index, 0u);
  EXPECT_EQ(t->action, GateAction::kPause);
  EXPECT_TRUE(Contains(t->reason, "(pause)")) << t->reason;
  EXPECT_FALSE(CheckAbortCriteria(WithCriteria({}), Counts(0, 100)));
}

// ---- Timeouts ---------------------------------------------------------------------------------

TEST(Timeouts, QueuedCountsFromQueuedAt) {
  Timeouts t{100, 50};
  ExecutionTimes e{JobStatus::kQueued, 1000};
  EXPECT_EQ(TimeoutDeadline(e, t), 1100);
  EXPECT_FALSE(IsTimedOut(e, t, 1099));
  EXPECT_TRUE(IsTimedOut(e, t, 1100));
  e.started_at = 1050;  // ignored while QUEUED
  EXPECT_EQ(TimeoutDeadline(e, t), 1100);
}

TEST(Timeouts, InProgressCountsFromStartedAt) {
  Timeouts t{100, 50};
  ExecutionTimes e{JobStatus::kInProgress, 1000, 1080};
  EXPECT_EQ(TimeoutDeadline(e, t), 1130);
  EXPECT_FALSE(IsTimedOut(e, t, 1129));
  EXPECT_TRUE(IsTimedOut(e, t, 1130));
  e.started_at.reset();  // unknown start: from queued_at
  EXPECT_EQ(TimeoutDeadline(e, t), 1050);
}

TEST(Timeouts, StepTimeoutAppliesWhenEarlier) {
  Timeouts t{100, 500};
  ExecutionTimes e{JobStatus::kInProgress, 1000, 1000, 1060};
  EXPECT_EQ(TimeoutDeadline(e, t), 1060);
  EXPECT_FALSE(IsTimedOut(e, t, 1059));
  EXPECT_TRUE(IsTimedOut(e, t, 1060));
  e.step_timeout_at = 9999;  // a later step timer does not extend the in-progress limit
  EXPECT_EQ(TimeoutDeadline(e, t), 1500);
  e = {JobStatus::kQueued, 1000, std::nullopt, 1010};
  EXPECT_EQ(TimeoutDeadline(e, t), 1010);
}

TEST(Timeouts, FinishedExecutionsNeverTimeOut) {
  Timeouts t{1, 1};
  for (JobStatus s : {JobStatus::kSucceeded, JobStatus::kFailed, JobStatus::kRejected,
                      JobStatus::kTimedOut, JobStatus::kCanceled, JobStatus::kRemoved}) {
    ExecutionTimes e{s, 0, 0, 0};
    EXPECT_FALSE(TimeoutDeadline(e, t)) << ToString(s);
    EXPECT_FALSE(IsTimedOut(e, t, 1000000)) << ToString(s);
  }
}

TEST(Timeouts, TimedOutListsIndexes) {
  Timeouts t{100, 50};
  std::vector<ExecutionTimes> executions = {
      {JobStatus::kQueued, 0},              // deadline 100
      {JobStatus::kQueued, 50},             // 150
      {JobStatus::kInProgress, 0, 40},      // 90
      {JobStatus::kInProgress, 0, 60},      // 110
      {JobStatus::kSucceeded, 0, 0},        // never
      {JobStatus::kInProgress, 0, 90, 95},  // 95 (step)
  };
  EXPECT_EQ(TimedOut(executions, t, 100), (std::vector<size_t>{0, 2, 5}));
  EXPECT_EQ(TimedOut(executions, t, 89), (std::vector<size_t>{}));
  EXPECT_EQ(TimedOut(executions, t, 150), (std::vector<size_t>{0, 1, 2, 3, 5}));
}

// ---- Retries and quarantine -------------------------------------------------------------------

TEST(Retries, CountPerFailureTypeWithAllAsFallback) {
  Plan plan;
  EXPECT_EQ(RetriesFor(plan, JobStatus::kTimedOut), 0);
  plan.retries = {{FailureType::kTimedOut, 2}};
  EXPECT_EQ(RetriesFor(plan, JobStatus::kTimedOut), 2);
  EXPECT_EQ(RetriesFor(plan, JobStatus::kFailed), 0);
  plan.retries = {{FailureType::kAll, 1}, {FailureType::kRejected, 0}, {FailureType::kFailed, 3}};
  EXPECT_EQ(RetriesFor(plan, JobStatus::kFailed), 3);
  EXPECT_EQ(RetriesFor(plan, JobStatus::kRejected), 0);
  EXPECT_EQ(RetriesFor(plan, JobStatus::kTimedOut), 1);
  for (JobStatus s : {JobStatus::kQueued, JobStatus::kInProgress, JobStatus::kSucceeded,
                      JobStatus::kCanceled, JobStatus::kRemoved})
    EXPECT_EQ(RetriesFor(plan, s), 0) << ToString(s);
}

TEST(Retries, RequeueWhileAttemptsAllow) {
  Plan plan;
  plan.max_attempts_per_release = 10;
  plan.retries = {{FailureType::kTimedOut, 1}, {FailureType::kFailed, 2}};
  EXPECT_EQ(DecideFailure(plan, JobStatus::kTimedOut, 1, 1), FailureOutcome::kRetry);
  EXPECT_EQ(DecideFailure(plan, JobStatus::kTimedOut, 2, 2), FailureOutcome::kFinal);
  EXPECT_EQ(DecideFailure(plan, JobStatus::kFailed, 1, 1), FailureOutcome::kRetry);
  EXPECT_EQ(DecideFailure(plan, JobStatus::kFailed, 2, 2), FailureOutcome::kRetry);
  EXPECT_EQ(DecideFailure(plan, JobStatus::kFailed, 3, 3), FailureOutcome::kFinal);
  EXPECT_EQ(DecideFailure(plan, JobStatus::kRejected, 1, 1), FailureOutcome::kFinal);
  EXPECT_EQ(ToString(FailureOutcome::kRetry), "retry");
  EXPECT_EQ(ToString(FailureOutcome::kFinal), "final");
  EXPECT_EQ(ToString(FailureOutcome::kQuarantine), "quarantine");
}

TEST(Quarantine, MaxAttemptsPerReleaseWinsOverRetries) {
  Plan plan;  // maxAttemptsPerRelease 3
  plan.retries = {{FailureType::kAll, 10}};
  EXPECT_FALSE(ShouldQuarantine(plan, 2));
  EXPECT_TRUE(ShouldQuarantine(plan, 3));
  EXPECT_TRUE(ShouldQuarantine(plan, 4));
  EXPECT_EQ(DecideFailure(plan, JobStatus::kFailed, 1, 2), FailureOutcome::kRetry);
  EXPECT_EQ(DecideFailure(plan, JobStatus::kFailed, 1, 3), FailureOutcome::kQuarantine);
  EXPECT_EQ(DecideFailure(plan, JobStatus::kRejected, 5, 3), FailureOutcome::kQuarantine);
  plan.max_attempts_per_release = 1;
  EXPECT_EQ(DecideFailure(plan, JobStatus::kTimedOut, 1, 1), FailureOutcome::kQuarantine);
}

// ---- Statistics -------------------------------------------------------------------------------

TEST(Statistics, LogGamma) {
  EXPECT_NEAR(LogGamma(1), 0, 1e-14);
  EXPECT_NEAR(LogGamma(2), 0, 1e-14);
  EXPECT_NEAR(LogGamma(0.5), 0.5723649429247004, 1e-13);
  EXPECT_NEAR(LogGamma(0.1), 2.2527126517342055, 1e-13);
  EXPECT_NEAR(LogGamma(10), 12.801827480081467, 1e-12);
  EXPECT_NEAR(LogGamma(100), 359.1342053695754, 1e-10);
  EXPECT_NEAR(LogGamma(1e6), 12815504.569147611, 1e-6);
}

TEST(Statistics, RegularizedBeta) {
  EXPECT_NEAR(RegularizedBeta(0.5, 2, 3), 0.6875, 1e-14);
  EXPECT_NEAR(RegularizedBeta(0.3, 2.5, 7.25), 0.66048227358190725, 1e-12);
  for (double x : {0.01, 0.2, 0.5, 0.77, 0.99}) {
    EXPECT_NEAR(RegularizedBeta(x, 1, 1), x, 1e-14);
    EXPECT_NEAR(RegularizedBeta(x, 4, 1), std::pow(x, 4), 1e-14);
    EXPECT_NEAR(RegularizedBeta(x, 1, 3), 1 - std::pow(1 - x, 3), 1e-14);
    EXPECT_NEAR(RegularizedBeta(x, 7, 3), 1 - RegularizedBeta(1 - x, 3, 7), 1e-14);
  }
  EXPECT_NEAR(RegularizedBeta(0.5, 50, 50), 0.5, 1e-12);
  EXPECT_EQ(RegularizedBeta(0, 2, 2), 0);
  EXPECT_EQ(RegularizedBeta(1, 2, 2), 1);
}

TEST(Statistics, BetaQuantileInvertsTheBeta) {
  for (double q : {0.001, 0.05, 0.5, 0.95, 0.999})
    for (auto [a, b] : {std::pair{1.0, 1.0}, {2.0, 30.0}, {40.0, 3.0}, {500.0, 700.0}})
      EXPECT_NEAR(RegularizedBeta(BetaQuantile(q, a, b), a, b), q, 1e-10) << q << " " << a;
  EXPECT_EQ(BetaQuantile(0, 2, 2), 0);
  EXPECT_EQ(BetaQuantile(1, 2, 2), 1);
}

TEST(Statistics, ClopperPearsonKnownValues) {
  // Reference values from mpmath at 40 digits.
  EXPECT_NEAR(BinomialLowerBound(5, 10, 0.975), 0.18708602844739857, 1e-12);
  EXPECT_NEAR(BinomialUpperBound(5, 10, 0.975), 0.81291397155260143, 1e-12);
  EXPECT_EQ(BinomialLowerBound(0, 10, 0.95), 0);
  EXPECT_NEAR(BinomialUpperBound(0, 10, 0.95), 1 - std::pow(0.05, 0.1), 1e-12);
  EXPECT_NEAR(BinomialLowerBound(10, 10, 0.95), std::pow(0.05, 0.1), 1e-12);
  EXPECT_EQ(BinomialUpperBound(10, 10, 0.95), 1);
  EXPECT_NEAR(BinomialLowerBound(3, 3, 0.95), 0.36840314986403877, 1e-12);
  EXPECT_NEAR(BinomialLowerBound(1, 1, 0.95), 0.05, 1e-12);
  EXPECT_NEAR(BinomialLowerBound(1, 1000, 0.95), 5.1291978909017855e-5, 1e-15);
  EXPECT_NEAR(BinomialUpperBound(1, 1000, 0.95), 0.0047349935754997766, 1e-13);
  EXPECT_NEAR(BinomialLowerBound(50, 100, 0.95), 0.41362171463091178, 1e-12);
  EXPECT_NEAR(BinomialUpperBound(50, 100, 0.95), 0.58637828536908822, 1e-12);
  EXPECT_NEAR(BinomialLowerBound(20, 2000, 0.95), 0.0066368793976045105, 1e-12);
  EXPECT_NEAR(BinomialUpperBound(20, 2000, 0.95), 0.014498062606976633, 1e-12);
}

TEST(Statistics, LargeCountsAreFastAndSane) {
  // A million events: near the normal approximation p +- 1.645 sqrt(p(1-p)/n), and fast.
  auto start = std::chrono::steady_clock::now();
  double lo = BinomialLowerBound(10000, 1000000, 0.95);
  double hi = BinomialUpperBound(10000, 1000000, 0.95);
  double lo2 = BinomialLowerBound(5000000, 10000000, 0.99);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double se = std::sqrt(0.01 * 0.99 / 1e6);
  EXPECT_NEAR(lo, 0.01 - 1.6449 * se, 2e-6);
  EXPECT_NEAR(hi, 0.01 + 1.6449 * se, 2e-6);
  EXPECT_NEAR(lo2, 0.5 - 2.3263 * std::sqrt(0.25 / 1e7), 1e-6);
  EXPECT_LT(seconds, 2.0);
}

// ---- Health -----------------------------------------------------------------------------------

HealthSample Sample(int64_t xu, double eu, int64_t xc, double ec, int64_t du = 10,
                    int64_t dc = 100) {
  return {{du, xu, eu}, {dc, xc, ec}};
}

TEST(Health, ClearlyWorseFails) {
  // 30 events in 1000 device-s against 100 in 10000: ratio 3, bounds [2.07, 4.28].
  HealthResult r = CompareHealth(Sample(30, 1000, 100, 10000), 1.5, 0.95);
  EXPECT_EQ(r.verdict, HealthVerdict::kFail);
  EXPECT_NEAR(r.ratio, 3, 1e-12);
  EXPECT_NEAR(r.lower, 2.066640085261541, 1e-9);
  EXPECT_NEAR(r.upper, 4.2802274259498567, 1e-9);
  EXPECT_TRUE(Contains(r.reason, "worse than the limit")) << r.reason;
  // With a looser bound the same data is no longer conclusive, then passes.
  EXPECT_EQ(CompareHealth(Sample(30, 1000, 100, 10000), 3, 0.95).verdict,
            HealthVerdict::kInconclusive);
  EXPECT_EQ(CompareHealth(Sample(30, 1000, 100, 10000), 4.5, 0.95).verdict, HealthVerdict::kPass);
}

TEST(Health, NotClearlyEitherIsInconclusive) {
  HealthResult r = CompareHealth(Sample(12, 1000, 100, 10000), 1.5, 0.95);
  EXPECT_EQ(r.verdict, HealthVerdict::kInconclusive);
  EXPECT_NEAR(r.ratio, 1.2, 1e-12);
  EXPECT_NEAR(r.lower, 0.67232134394859475, 1e-9);
  EXPECT_NEAR(r.upper, 2.0164819782427146, 1e-9);
  // More data of the same rates becomes conclusive.
  EXPECT_EQ(CompareHealth(Sample(1200, 100000, 10000, 1000000), 1.5, 0.95).verdict,
            HealthVerdict::kPass);
}

TEST(Health, ClearlyBetterPasses) {
  HealthResult r = CompareHealth(Sample(5, 1000, 100, 10000), 1.5, 0.95);
  EXPECT_EQ(r.verdict, HealthVerdict::kPass);
  EXPECT_NEAR(r.lower, 0.19314213301807454, 1e-9);
  EXPECT_NEAR(r.upper, 1.0805013142081238, 1e-9);
  EXPECT_TRUE(Contains(r.reason, "not worse than the limit")) << r.reason;
}

TEST(Health, HigherConfidenceWidensTheBounds) {
  HealthResult a = CompareHealth(Sample(12, 1000, 100, 10000), 1.5, 0.9);
  HealthResult b = CompareHealth(Sample(12, 1000, 100, 10000), 1.5, 0.99);
  EXPECT_LT(b.lower, a.lower);
  EXPECT_GT(b.upper, a.upper);
}

TEST(Health, ZeroCounts) {
  // No events anywhere: the updated devices cannot look better.
  HealthResult r = CompareHealth(Sample(0, 1000, 0, 10000), 1.5, 0.95);
  EXPECT_EQ(r.verdict, HealthVerdict::kPass);
  EXPECT_EQ(r.ratio, 0);
  EXPECT_EQ(r.lower, 0);
  EXPECT_EQ(r.upper, kInf);
  EXPECT_TRUE(Contains(r.reason, "no events on updated devices")) << r.reason;
  // None on the updated devices, some on the control: pass.
  EXPECT_EQ(CompareHealth(Sample(0, 100, 5, 10000), 1.5, 0.95).verdict, HealthVerdict::kPass);
  // Events only on updated devices: the ratio is unbounded above.
  r = CompareHealth(Sample(3, 100, 0, 10000), 1.5, 0.95);
  EXPECT_EQ(r.verdict, HealthVerdict::kFail);
  EXPECT_EQ(r.ratio, kInf);
  EXPECT_EQ(r.upper, kInf);
  EXPECT_NEAR(r.lower, 58.328845336187816, 1e-8);
  // One event on 1 of 100 devices against none on 99: 1% chance under equal rates -> fail.
  r = CompareHealth(Sample(1, 100, 0, 9900, 1, 99), 1.5, 0.95);
  EXPECT_EQ(r.verdict, HealthVerdict::kFail);
  EXPECT_NEAR(r.lower, 5.2105263157894786, 1e-8);
  // One event with equal exposure is not evidence of anything.
  EXPECT_EQ(CompareHealth(Sample(1, 1000, 0, 1000), 1.5, 0.95).verdict,
            HealthVerdict::kInconclusive);
  // Negative increases (a counter reset) count as none.
  EXPECT_EQ(CompareHealth(Sample(-5, 1000, 3, 1000), 1.5, 0.95).verdict, HealthVerdict::kPass);
}

TEST(Health, TinySamples) {
  // No updated device reported: silence is not health.
  HealthResult r = CompareHealth(Sample(0, 0, 5, 1000, 0, 10), 1.5, 0.95);
  EXPECT_EQ(r.verdict, HealthVerdict::kInconclusive);
  EXPECT_TRUE(Contains(r.reason, "no telemetry from updated devices")) << r.reason;
  EXPECT_EQ(CompareHealth(Sample(0, 100, 5, 1000, 0, 10), 1.5, 0.95).verdict,
            HealthVerdict::kInconclusive);
  // No control device: nothing to compare with.
  r = CompareHealth(Sample(50, 1000, 0, 0, 10, 0), 1.5, 0.95);
  EXPECT_EQ(r.verdict, HealthVerdict::kNoControl);
  EXPECT_EQ(CompareHealth(Sample(50, 1000, 0, 0, 10, 3), 1.5, 0.95).verdict,
            HealthVerdict::kNoControl);
  // One device each is enough for the exact test when the counts speak.
  EXPECT_EQ(CompareHealth(Sample(40, 3600, 2, 3600, 1, 1), 1.5, 0.95).verdict,
            HealthVerdict::kFail);
}

TEST(Health, Names) {
  EXPECT_EQ(ToString(HealthVerdict::kPass), "pass");
  EXPECT_EQ(ToString(HealthVerdict::kFail), "fail");
  EXPECT_EQ(ToString(HealthVerdict::kInconclusive), "inconclusive");
  EXPECT_EQ(ToString(HealthVerdict::kNoControl), "no_control");
}

// ---- The wave gate ----------------------------------------------------------------------------

constexpr int64_t kNow = 1700000000;

WaveGateInput Input(int64_t planned, StatusCounts wave, std::optional<int64_t> met = std::nullopt) {
  WaveGateInput in;
  in.planned = planned;
  in.wave = wave;
  in.rollout = wave;
  in.threshold_met_at = met;
  in.now = kNow;
  return in;
}

Plan HealthPlan() {
  Plan plan;
  plan.health = HealthGate{};  // crashCount, 1.5, 0.95, 3600, abort
  return plan;
}

TEST(WaveGate, WatchesUntilTheThreshold) {
  GateDecision d = EvaluateWave(Plan{}, Input(100, Counts(50, 0, 0, 0, 20, 30)));
  EXPECT_EQ(d.verdict, GateVerdict::kWatch);
  EXPECT_FALSE(d.threshold_met_at);
  EXPECT_FALSE(d.recheck_at);
  EXPECT_TRUE(Contains(d.reason, "50 of 100 executions succeeded, 50 pending; 95% needs 95"))
      << d.reason;
}

TEST(WaveGate, ThresholdBoundary) {
  EXPECT_EQ(EvaluateWave(Plan{}, Input(100, Counts(94, 0, 0, 0, 0, 6))).verdict,
            GateVerdict::kWatch);
  GateDecision d = EvaluateWave(Plan{}, Input(100, Counts(95, 0, 0, 0, 0, 5)));
  EXPECT_EQ(d.verdict, GateVerdict::kSoaking);
  EXPECT_EQ(d.threshold_met_at, kNow);
  EXPECT_EQ(d.recheck_at, kNow + 600);
  Plan plan;
  plan.success_threshold_percent = 99.5;  // of 200: 199
  EXPECT_EQ(EvaluateWave(plan, Input(200, Counts(198, 0, 0, 0, 2))).verdict, GateVerdict::kWatch);
  EXPECT_EQ(EvaluateWave(plan, Input(200, Counts(199, 0, 0, 0, 1))).verdict, GateVerdict::kSoaking);
  plan.success_threshold_percent = 0;
  EXPECT_EQ(EvaluateWave(plan, Input(10, Counts(0, 0, 0, 0, 10))).verdict, GateVerdict::kSoaking);
  plan.success_threshold_percent = 100;
  EXPECT_EQ(EvaluateWave(plan, Input(10, Counts(9, 0, 0, 0, 1))).verdict, GateVerdict::kWatch);
  EXPECT_EQ(EvaluateWave(plan, Input(10, Counts(10))).verdict, GateVerdict::kSoaking);
}

TEST(WaveGate, SoaksThenPasses) {
  GateDecision d = EvaluateWave(Plan{}, Input(100, Counts(100), kNow - 599));
  EXPECT_EQ(d.verdict, GateVerdict::kSoaking);
  EXPECT_FALSE(d.threshold_met_at);  // already recorded
  EXPECT_EQ(d.recheck_at, kNow + 1);
  d = EvaluateWave(Plan{}, Input(100, Counts(100), kNow - 600));
  EXPECT_EQ(d.verdict, GateVerdict::kPassed);
  EXPECT_FALSE(d.health);
  EXPECT_TRUE(IsFinal(d.verdict));
}

TEST(WaveGate, PassedWithCaughtFailures) {
  GateDecision d = EvaluateWave(Plan{}, Input(100, Counts(97, 1, 1, 1), kNow - 600));
  EXPECT_EQ(d.verdict, GateVerdict::kPassedWithFailures);
  EXPECT_TRUE(Contains(d.reason, "3 failed executions")) << d.reason;
  EXPECT_EQ(ToString(d.verdict), "passed_with_failures");
}

TEST(WaveGate, NoSoakPassesInTheSamePass) {
  Plan plan;
  plan.soak_seconds = 0;
  GateDecision d = EvaluateWave(plan, Input(10, Counts(10)));
  EXPECT_EQ(d.verdict, GateVerdict::kPassed);
  EXPECT_EQ(d.threshold_met_at, kNow);
}

TEST(WaveGate, UnreachableThresholdFailsWithPause) {
  // 90 succeeded, 8 failed (8.2%: under the 10% abort rule), 2 pending: at most 92 of 100.
  GateDecision d = EvaluateWave(Plan{}, Input(100, Counts(90, 8, 0, 0, 0, 2)));
  EXPECT_EQ(d.verdict, GateVerdict::kFailed);
  EXPECT_EQ(d.cause, FailureCause::kThresholdUnreachable);
  EXPECT_EQ(d.action, GateAction::kPause);
  EXPECT_TRUE(Contains(d.reason, "unreachable")) << d.reason;
  // One more pending and it is still reachable.
  EXPECT_EQ(EvaluateWave(Plan{}, Input(100, Counts(90, 5, 0, 0, 0, 5))).verdict,
            GateVerdict::kWatch);
}

TEST(WaveGate, DevicesNotQueuedYetArePending) {
  // maxPerMinute: only 50 of 100 queued so far.
  GateDecision d = EvaluateWave(Plan{}, Input(100, Counts(45, 3, 0, 0, 0, 2)));
  EXPECT_EQ(d.verdict, GateVerdict::kWatch);
  EXPECT_TRUE(Contains(d.reason, "52 pending")) << d.reason;
}

TEST(WaveGate, CanceledAndRemovedAreNotEligible) {
  // 10 canceled of 100: 95% of 90 = 85.5 -> 86 needed.
  EXPECT_EQ(EvaluateWave(Plan{}, Input(100, Counts(85, 0, 0, 0, 0, 0, 10, 5))).verdict,
            GateVerdict::kSoaking);
  EXPECT_EQ(EvaluateWave(Plan{}, Input(100, Counts(85, 0, 0, 0, 0, 5, 10))).verdict,
            GateVerdict::kWatch);
  EXPECT_EQ(EvaluateWave(Plan{}, Input(100, Counts(86, 0, 0, 0, 0, 4, 10))).verdict,
            GateVerdict::kSoaking);
}

TEST(WaveGate, EmptyWavePassesAtOnce) {
  GateDecision d = EvaluateWave(HealthPlan(), Input(0, Counts(0)));
  EXPECT_EQ(d.verdict, GateVerdict::kPassed);
  EXPECT_EQ(d.threshold_met_at, kNow);
  EXPECT_TRUE(Contains(d.reason, "no devices")) << d.reason;
  EXPECT_EQ(EvaluateWave(Plan{}, Input(3, Counts(0, 0, 0, 0, 0, 0, 3))).verdict,
            GateVerdict::kPassed);
}

TEST(WaveGate, AbortCriteriaTripInAnyState) {
  WaveGateInput in = Input(100, Counts(100), kNow - 10);  // soaking
  in.rollout = Counts(150, 20);                           // earlier waves' stragglers failed
  GateDecision d = EvaluateWave(Plan{}, in);
  EXPECT_EQ(d.verdict, GateVerdict::kFailed);
  EXPECT_EQ(d.cause, FailureCause::kAbortCriterion);
  EXPECT_EQ(d.action, GateAction::kAbort);
  EXPECT_TRUE(Contains(d.reason, "abort[0]")) << d.reason;
  Plan plan = WithCriteria({{FailureType::kFailed, 10, 5, GateAction::kPause}});
  in = Input(10, Counts(3, 2, 0, 0, 5));  // watching
  d = EvaluateWave(plan, in);
  EXPECT_EQ(d.verdict, GateVerdict::kFailed);
  EXPECT_EQ(d.action, GateAction::kPause);
  // Under minExecuted nothing trips yet.
  EXPECT_EQ(EvaluateWave(plan, Input(100, Counts(2, 2, 0, 0, 96))).verdict, GateVerdict::kWatch);
}

TEST(WaveGate, HealthPasses) {
  WaveGateInput in = Input(100, Counts(100), kNow - 600);
  in.health = Sample(5, 1000, 100, 10000);
  GateDecision d = EvaluateWave(HealthPlan(), in);
  EXPECT_EQ(d.verdict, GateVerdict::kPassed);
  ASSERT_TRUE(d.health);
  EXPECT_EQ(d.health->verdict, HealthVerdict::kPass);
  EXPECT_TRUE(Contains(d.reason, "crashCount")) << d.reason;
  in.health = Sample(0, 1000, 0, 10000);
  EXPECT_EQ(EvaluateWave(HealthPlan(), in).verdict, GateVerdict::kPassed);
  in.health = Sample(5, 1000, 0, 0, 10, 0);  // no control: not compared
  d = EvaluateWave(HealthPlan(), in);
  EXPECT_EQ(d.verdict, GateVerdict::kPassed);
  EXPECT_EQ(d.health->verdict, HealthVerdict::kNoControl);
}

TEST(WaveGate, HealthIsNotComparedBeforeTheSoakEnds) {
  WaveGateInput in = Input(100, Counts(100), kNow - 599);
  in.health = Sample(30, 1000, 100, 10000);  // bad, but not looked at yet
  GateDecision d = EvaluateWave(HealthPlan(), in);
  EXPECT_EQ(d.verdict, GateVerdict::kSoaking);
  EXPECT_FALSE(d.health);
}

TEST(WaveGate, HealthFails) {
  WaveGateInput in = Input(100, Counts(100), kNow - 600);
  in.health = Sample(30, 1000, 100, 10000);
  GateDecision d = EvaluateWave(HealthPlan(), in);
  EXPECT_EQ(d.verdict, GateVerdict::kFailed);
  EXPECT_EQ(d.cause, FailureCause::kHealth);
  EXPECT_EQ(d.action, GateAction::kAbort);
  EXPECT_TRUE(Contains(d.reason, "unhealthy: crashCount")) << d.reason;
  Plan plan = HealthPlan();
  plan.health->action = GateAction::kPause;
  EXPECT_EQ(EvaluateWave(plan, in).action, GateAction::kPause);
}

TEST(WaveGate, InconclusiveHealthSoaksUntilMaxSoakThenFails) {
  WaveGateInput in = Input(100, Counts(100), kNow - 600);
  in.health = Sample(12, 1000, 100, 10000);
  GateDecision d = EvaluateWave(HealthPlan(), in);
  EXPECT_EQ(d.verdict, GateVerdict::kSoaking);
  EXPECT_EQ(d.recheck_at, kNow + kHealthRecheckSeconds);
  EXPECT_EQ(d.health->verdict, HealthVerdict::kInconclusive);
  in.threshold_met_at = kNow - 3590;  // the next look is capped at maxSoakSeconds
  EXPECT_EQ(EvaluateWave(HealthPlan(), in).recheck_at, kNow + 10);
  in.threshold_met_at = kNow - 3600;
  d = EvaluateWave(HealthPlan(), in);
  EXPECT_EQ(d.verdict, GateVerdict::kFailed);
  EXPECT_EQ(d.cause, FailureCause::kHealthInconclusive);
  EXPECT_EQ(d.action, GateAction::kAbort);
  EXPECT_TRUE(Contains(d.reason, "maxSoakSeconds (3600)")) << d.reason;
}

TEST(WaveGate, MissingTelemetryIsInconclusive) {
  WaveGateInput in = Input(100, Counts(100), kNow - 600);
  GateDecision d = EvaluateWave(HealthPlan(), in);
  EXPECT_EQ(d.verdict, GateVerdict::kSoaking);
  EXPECT_TRUE(Contains(d.reason, "no health telemetry")) << d.reason;
  in.threshold_met_at = kNow - 4000;
  EXPECT_EQ(EvaluateWave(HealthPlan(), in).cause, FailureCause::kHealthInconclusive);
}

TEST(WaveGate, HealthDue) {
  EXPECT_FALSE(HealthDue(Plan{}, kNow - 10000, kNow));
  EXPECT_FALSE(HealthDue(HealthPlan(), kNow - 599, kNow));
  EXPECT_TRUE(HealthDue(HealthPlan(), kNow - 600, kNow));
  EXPECT_FALSE(HealthDue(HealthPlan(), std::nullopt, kNow));
  Plan plan = HealthPlan();
  plan.soak_seconds = 0;
  EXPECT_TRUE(HealthDue(plan, std::nullopt, kNow));
}

TEST(WaveGate, Names) {
  EXPECT_EQ(ToString(GateVerdict::kWatch), "watch");
  EXPECT_EQ(ToString(GateVerdict::kSoaking), "soaking");
  EXPECT_EQ(ToString(GateVerdict::kPassed), "passed");
  EXPECT_EQ(ToString(GateVerdict::kFailed), "failed");
  EXPECT_FALSE(IsFinal(GateVerdict::kWatch));
  EXPECT_FALSE(IsFinal(GateVerdict::kSoaking));
  EXPECT_TRUE(IsFinal(GateVerdict::kPassedWithFailures));
  EXPECT_EQ(ToString(FailureCause::kNone), "none");
  EXPECT_EQ(ToString(FailureCause::kAbortCriterion), "abort_criterion");
  EXPECT_EQ(ToString(FailureCause::kThresholdUnreachable), "threshold_unreachable");
  EXPECT_EQ(ToString(FailureCause::kHealth), "health");
  EXPECT_EQ(ToString(FailureCause::kHealthInconclusive), "health_inconclusive");
}

}  // namespace
}  // namespace fleet
