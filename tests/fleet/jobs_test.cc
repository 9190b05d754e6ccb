#include "fleet/jobs.h"

#include <gtest/gtest.h>

namespace fleet {
namespace {

Execution Exec(std::string job, JobStatus status, int64_t queued_at, int64_t version = 1) {
  Execution e;
  e.job_id = std::move(job);
  e.thing_name = "t1";
  e.status = status;
  e.queued_at = queued_at;
  e.last_updated_at = queued_at;
  e.version_number = version;
  e.job_document = R"({"operation":"firmware.update"})";
  return e;
}

UpdateRequest Update(JobStatus status) {
  UpdateRequest u;
  u.status = status;
  return u;
}

const JobStatus kAll[] = {JobStatus::kQueued,   JobStatus::kInProgress, JobStatus::kSucceeded,
                          JobStatus::kFailed,   JobStatus::kRejected,   JobStatus::kTimedOut,
                          JobStatus::kCanceled, JobStatus::kRemoved};

TEST(JobStatus, NamesRoundTrip) {
  for (JobStatus s : kAll) EXPECT_EQ(ParseJobStatus(ToString(s)), s);
  EXPECT_FALSE(ParseJobStatus("queued"));
  EXPECT_EQ(ToString(JobsError::kVersionMismatch), "VersionMismatch");
  EXPECT_EQ(ToString(JobsError::kTerminalStateReached), "TerminalStateReached");
}

// The whole transition table, exhaustively: DESIGN §2.
TEST(JobStatus, DeviceTransitionTable) {
  for (JobStatus from : kAll) {
    for (JobStatus to : kAll) {
      bool expected = (from == JobStatus::kQueued || from == JobStatus::kInProgress) &&
                      (to == JobStatus::kInProgress || to == JobStatus::kSucceeded ||
                       to == JobStatus::kFailed || to == JobStatus::kRejected);
      EXPECT_EQ(DeviceMayTransition(from, to), expected) << ToString(from) << "->" << ToString(to);
    }
  }
}

TEST(StatusDetails, Limits) {
  EXPECT_FALSE(CheckStatusDetails({{"step", "downloading"}}));
  StatusDetails many;
  for (int i = 0; i < 11; ++i) many["k" + std::to_string(i)] = "v";
  EXPECT_NE(CheckStatusDetails(many)->find("at most 10"), std::string::npos);
  EXPECT_TRUE(CheckStatusDetails({{std::string(129, 'k'), "v"}}));
  EXPECT_TRUE(CheckStatusDetails({{"bad key", "v"}}));
  EXPECT_TRUE(CheckStatusDetails({{"k", std::string(1025, 'v')}}));
  EXPECT_TRUE(CheckStatusDetails({{"k", ""}}));
  EXPECT_TRUE(CheckStatusDetails({{"k", "a\nb"}}));
  EXPECT_FALSE(CheckClientToken("abc-123"));
  EXPECT_TRUE(CheckClientToken(std::string(65, 'a')));
  EXPECT_TRUE(CheckClientToken("has space"));
  EXPECT_FALSE(CheckStepTimeout(-1, true));
  EXPECT_TRUE(CheckStepTimeout(-1, false));
  EXPECT_TRUE(CheckStepTimeout(10081, true));
}

TEST(ThingJobs, PendingListsAndNextOrder) {
  ThingJobs jobs("t1",
                 {Exec("b", JobStatus::kQueued, 20), Exec("a", JobStatus::kQueued, 10),
                  Exec("c", JobStatus::kInProgress, 30), Exec("d", JobStatus::kSucceeded, 5)});
  Outcome o = jobs.GetPending();
  ASSERT_EQ(o.in_progress.size(), 1u);
  EXPECT_EQ(o.in_progress[0].job_id, "c");
  ASSERT_EQ(o.queued.size(), 2u);
  EXPECT_EQ(o.queued[0].job_id, "a");   // oldest first
  EXPECT_EQ(jobs.Next()->job_id, "c");  // IN_PROGRESS before QUEUED
}

TEST(ThingJobs, StartNextMovesTheOldestQueuedToInProgress) {
  ThingJobs jobs("t1", {Exec("b", JobStatus::kQueued, 20), Exec("a", JobStatus::kQueued, 10)});
  StartNextRequest r;
  r.status_details = StatusDetails{{"step", "downloading"}};
  r.step_timeout_minutes = 5;
  Outcome o = jobs.StartNext(r, 100);
  ASSERT_TRUE(o.execution);
  EXPECT_EQ(o.execution->job_id, "a");
  EXPECT_EQ(o.execution->status, JobStatus::kInProgress);
  EXPECT_EQ(o.execution->version_number, 2);
  EXPECT_EQ(o.execution->started_at, 100);
  EXPECT_EQ(o.execution->step_timeout_at, 400);
  EXPECT_EQ(o.execution->status_details.at("step"), "downloading");
  EXPECT_TRUE(o.include_job_document);
  // Again: the IN_PROGRESS one comes back unchanged.
  Outcome again = jobs.StartNext({}, 200);
  EXPECT_EQ(again.execution->job_id, "a");
  EXPECT_EQ(again.execution->version_number, 2);
  EXPECT_FALSE(jobs.NextChanged());  // same execution, now started
  EXPECT_FALSE(jobs.PendingChanged());
}

TEST(ThingJobs, StartNextWithNothingPendingHasNoExecution) {
  ThingJobs jobs("t1", {Exec("a", JobStatus::kSucceeded, 10)});
  EXPECT_FALSE(jobs.StartNext({}, 100).execution);
  EXPECT_FALSE(jobs.Next());
}

TEST(ThingJobs, DescribeByIdAndNext) {
  ThingJobs jobs("t1", {Exec("a", JobStatus::kQueued, 10), Exec("z", JobStatus::kFailed, 1)});
  EXPECT_EQ(jobs.Describe("$next", {}).execution->job_id, "a");
  Outcome terminal = jobs.Describe("z", {});
  ASSERT_TRUE(terminal.execution);  // finished executions can still be described
  EXPECT_EQ(terminal.execution->status, JobStatus::kFailed);
  EXPECT_EQ(jobs.Describe("nope", {}).rejection->code, JobsError::kResourceNotFound);
  DescribeRequest numbered;
  numbered.execution_number = 2;
  EXPECT_EQ(jobs.Describe("a", numbered).rejection->code, JobsError::kResourceNotFound);
  numbered.include_job_document = false;
  numbered.execution_number = 1;
  EXPECT_FALSE(jobs.Describe("a", numbered).include_job_document);
  ThingJobs empty("t1", {});
  Outcome none = empty.Describe("$next", {});
  EXPECT_FALSE(none.rejection);
  EXPECT_FALSE(none.execution);
}

TEST(ThingJobs, UpdateLifecycleBumpsVersions) {
  ThingJobs jobs("t1", {Exec("a", JobStatus::kQueued, 10)});
  // The old SDK flow: QUEUED -> IN_PROGRESS by update, without start-next.
  Outcome o = jobs.Update("a", Update(JobStatus::kInProgress), std::nullopt, 50);
  ASSERT_FALSE(o.rejection);
  EXPECT_EQ(o.execution->version_number, 2);
  EXPECT_EQ(o.execution->started_at, 50);
  UpdateRequest step = Update(JobStatus::kInProgress);
  step.status_details = StatusDetails{{"step", "installing"}};
  o = jobs.Update("a", step, std::nullopt, 60);
  EXPECT_EQ(o.execution->version_number, 3);
  o = jobs.Update("a", Update(JobStatus::kSucceeded), std::nullopt, 70);
  EXPECT_EQ(o.execution->version_number, 4);
  EXPECT_EQ(o.execution->status_details.at("step"), "installing");  // unchanged when not given
  EXPECT_EQ(o.execution->last_updated_at, 70);
  EXPECT_TRUE(jobs.executions()[0].dirty);
  EXPECT_TRUE(jobs.NextChanged());
  EXPECT_TRUE(jobs.PendingChanged());
  EXPECT_FALSE(jobs.Next());
}

TEST(ThingJobs, UpdateRejections) {
  ThingJobs jobs(
      "t1", {Exec("a", JobStatus::kInProgress, 10, 5), Exec("f", JobStatus::kSucceeded, 1, 3)});
  EXPECT_EQ(jobs.Update("x", Update(JobStatus::kFailed), std::nullopt, 1).rejection->code,
            JobsError::kResourceNotFound);
  EXPECT_EQ(jobs.Update("$next", Update(JobStatus::kFailed), std::nullopt, 1).rejection->code,
            JobsError::kInvalidRequest);
  for (JobStatus s :
       {JobStatus::kQueued, JobStatus::kTimedOut, JobStatus::kCanceled, JobStatus::kRemoved}) {
    Outcome o = jobs.Update("a", Update(s), std::nullopt, 1);
    ASSERT_TRUE(o.rejection);
    EXPECT_EQ(o.rejection->code, JobsError::kInvalidRequest) << ToString(s);
  }
  UpdateRequest stale = Update(JobStatus::kSucceeded);
  stale.expected_version = 4;
  Outcome o = jobs.Update("a", stale, std::nullopt, 1);
  EXPECT_EQ(o.rejection->code, JobsError::kVersionMismatch);
  ASSERT_TRUE(o.rejection->execution_state);
  EXPECT_EQ(o.rejection->execution_state->version_number, 5);
  UpdateRequest numbered = Update(JobStatus::kSucceeded);
  numbered.execution_number = 9;
  EXPECT_EQ(jobs.Update("a", numbered, std::nullopt, 1).rejection->code,
            JobsError::kResourceNotFound);
  // A finished execution cannot move again: InvalidStateTransition with its state.
  o = jobs.Update("f", Update(JobStatus::kInProgress), std::nullopt, 1);
  EXPECT_EQ(o.rejection->code, JobsError::kInvalidStateTransition);
  EXPECT_EQ(o.rejection->execution_state->status, JobStatus::kSucceeded);
  o = jobs.Update("f", Update(JobStatus::kFailed), std::nullopt, 1);
  EXPECT_EQ(o.rejection->code, JobsError::kInvalidStateTransition);
  for (const auto& e : jobs.executions()) EXPECT_FALSE(e.dirty);  // nothing of a rejection sticks
}

TEST(ThingJobs, RepeatedRequestIsAnsweredNotApplied) {
  ThingJobs jobs("t1", {Exec("a", JobStatus::kInProgress, 10, 2)});
  UpdateRequest done = Update(JobStatus::kSucceeded);
  done.status_details = StatusDetails{{"firmware", "2.0.0"}};
  EXPECT_EQ(jobs.Update("a", done, std::nullopt, 20).execution->version_number, 3);
  Outcome again = jobs.Update("a", done, std::nullopt, 30);
  EXPECT_FALSE(again.rejection);
  EXPECT_EQ(again.execution->version_number, 3);
  EXPECT_EQ(again.execution->last_updated_at, 20);
  // Same status without details is a repeat too; with other details it is a transition error.
  EXPECT_FALSE(jobs.Update("a", Update(JobStatus::kSucceeded), std::nullopt, 40).rejection);
  UpdateRequest other = Update(JobStatus::kSucceeded);
  other.status_details = StatusDetails{{"firmware", "9.9.9"}};
  EXPECT_EQ(jobs.Update("a", other, std::nullopt, 40).rejection->code,
            JobsError::kInvalidStateTransition);
}

TEST(ThingJobs, ClientTokenRetryReplaysTheStoredAnswer) {
  ThingJobs jobs("t1", {Exec("a", JobStatus::kInProgress, 10, 2)});
  UpdateRequest step = Update(JobStatus::kInProgress);
  step.status_details = StatusDetails{{"step", "rebooting"}};
  step.expected_version = 2;
  Outcome first = jobs.Update("a", step, std::string("tok-1"), 20);
  ASSERT_FALSE(first.rejection);
  jobs.RememberAnswer("a", "tok-1", "{\"stored\":true}");
  // The retry would be a VersionMismatch now (version 3), but the token identifies it.
  Outcome retry = jobs.Update("a", step, std::string("tok-1"), 25);
  EXPECT_EQ(retry.replay, "{\"stored\":true}");
  EXPECT_EQ(jobs.executions()[0].version_number, 3);
  // Another token is a new request.
  EXPECT_EQ(jobs.Update("a", step, std::string("tok-2"), 26).rejection, std::nullopt);
}

TEST(ThingJobs, StepTimeoutRearmsAndCancels) {
  ThingJobs jobs("t1", {Exec("a", JobStatus::kInProgress, 10, 2)});
  UpdateRequest beat = Update(JobStatus::kInProgress);
  beat.step_timeout_minutes = 10;
  EXPECT_EQ(jobs.Update("a", beat, std::nullopt, 100).execution->step_timeout_at, 700);
  beat.step_timeout_minutes = -1;
  EXPECT_FALSE(jobs.Update("a", beat, std::nullopt, 200).execution->step_timeout_at);
  beat.step_timeout_minutes = 1;
  jobs.Update("a", beat, std::nullopt, 300);
  EXPECT_FALSE(jobs.Update("a", Update(JobStatus::kFailed), std::nullopt, 310)
                   .execution->step_timeout_at);  // terminal: no timer
}

TEST(ThingJobs, ExecutionsQueuedInTheBatchCountAsNews) {
  Execution fresh = Exec("new", JobStatus::kQueued, 50);
  fresh.queued_in_batch = true;
  ThingJobs jobs("t1", {Exec("old", JobStatus::kInProgress, 10), fresh});
  EXPECT_FALSE(jobs.NextChanged());    // the device still works on "old"
  EXPECT_TRUE(jobs.PendingChanged());  // but its pending list grew
  ThingJobs idle("t1", {fresh});
  EXPECT_TRUE(idle.NextChanged());
  EXPECT_EQ(idle.Next()->job_id, "new");
}

}  // namespace
}  // namespace fleet
