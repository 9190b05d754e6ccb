#include "fleet/jobs.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

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

// ---- The controller's decisions: TimeOut, Cancel, Requeue --------------------------------------

// The fields a refused decision must leave as they were.
void ExpectUnchanged(const Execution& after, const Execution& before) {
  EXPECT_EQ(after.status, before.status);
  EXPECT_EQ(after.status_details, before.status_details);
  EXPECT_EQ(after.version_number, before.version_number);
  EXPECT_EQ(after.execution_number, before.execution_number);
  EXPECT_EQ(after.queued_at, before.queued_at);
  EXPECT_EQ(after.started_at, before.started_at);
  EXPECT_EQ(after.last_updated_at, before.last_updated_at);
  EXPECT_EQ(after.step_timeout_at, before.step_timeout_at);
  EXPECT_EQ(after.deadline, before.deadline);
  EXPECT_EQ(after.job_document, before.job_document);
  EXPECT_EQ(after.last_client_token, before.last_client_token);
  EXPECT_FALSE(after.dirty);
}

// A finished execution as the controller finds it: started, with details, a step timer, a client
// token and an expiring document.
Execution Finished(std::string job, JobStatus status, int64_t queued_at = 10) {
  Execution e = Exec(std::move(job), status, queued_at, 4);
  e.status_details = {{"reason", "flash write failed"}, {"step", "installing"}};
  e.started_at = queued_at + 10;
  e.last_updated_at = queued_at + 20;
  e.step_timeout_at = queued_at + 610;
  e.deadline = queued_at + 3600;
  e.last_client_token = "tok-9";
  e.last_answer = R"({"clientToken":"tok-9"})";
  e.job_document = R"({"operation":"firmware.update","issuedAt":)" + std::to_string(queued_at) +
                   R"(,"expiresAt":)" + std::to_string(queued_at + 3600) + "}";
  return e;
}

TEST(ThingJobsTimeOut, QueuedBecomesTimedOutWithTheReason) {
  ThingJobs jobs("t1", {Exec("a", JobStatus::kQueued, 10)});
  EXPECT_TRUE(jobs.TimeOut("a", 100, "queued for more than 3600 s"));
  const Execution& e = jobs.executions()[0];
  EXPECT_EQ(e.status, JobStatus::kTimedOut);
  EXPECT_EQ(e.status_details.at("reason"), "queued for more than 3600 s");
  EXPECT_EQ(e.version_number, 2);
  EXPECT_EQ(e.execution_number, 1);
  EXPECT_EQ(e.last_updated_at, 100);
  EXPECT_TRUE(e.dirty);
  EXPECT_FALSE(jobs.Next());
  EXPECT_TRUE(jobs.NextChanged());
  EXPECT_TRUE(jobs.PendingChanged());
}

TEST(ThingJobsTimeOut, InProgressBecomesTimedOutWithTheReason) {
  Execution running = Exec("a", JobStatus::kInProgress, 10, 3);
  running.started_at = 20;
  running.status_details = {{"step", "installing"}};
  ThingJobs jobs("t1", {running, Exec("b", JobStatus::kQueued, 30)});
  ASSERT_EQ(jobs.Next()->job_id, "a");
  EXPECT_TRUE(jobs.TimeOut("a", 700, "step timeout"));
  const Execution& e = jobs.executions()[0];
  ASSERT_EQ(e.job_id, "a");
  EXPECT_EQ(e.status, JobStatus::kTimedOut);
  EXPECT_EQ(e.status_details.at("reason"), "step timeout");
  EXPECT_EQ(e.version_number, 4);
  EXPECT_EQ(e.last_updated_at, 700);
  EXPECT_TRUE(e.dirty);
  EXPECT_FALSE(jobs.executions()[1].dirty);  // the other execution is untouched
  EXPECT_EQ(jobs.Next()->job_id, "b");
  EXPECT_TRUE(jobs.NextChanged());
  EXPECT_TRUE(jobs.PendingChanged());
}

TEST(ThingJobsTimeOut, OfAnExecutionThatIsNotNextLeavesNextAlone) {
  ThingJobs jobs("t1", {Exec("a", JobStatus::kInProgress, 10), Exec("b", JobStatus::kQueued, 20)});
  EXPECT_TRUE(jobs.TimeOut("b", 100, "queued timeout"));
  EXPECT_EQ(jobs.Next()->job_id, "a");
  EXPECT_FALSE(jobs.NextChanged());
  EXPECT_TRUE(jobs.PendingChanged());
}

TEST(ThingJobsTimeOut, FinishedOrAbsentExecutionsAreUnchanged) {
  for (JobStatus s : kAll) {
    if (!IsTerminal(s)) continue;
    const Execution before = Finished("a", s);
    ThingJobs jobs("t1", {before});
    EXPECT_FALSE(jobs.TimeOut("a", 100, "too late")) << ToString(s);
    ExpectUnchanged(jobs.executions()[0], before);
    EXPECT_FALSE(jobs.NextChanged());
    EXPECT_FALSE(jobs.PendingChanged());
  }
  ThingJobs jobs("t1", {Exec("a", JobStatus::kQueued, 10)});
  EXPECT_FALSE(jobs.TimeOut("nope", 100, "absent"));
  ExpectUnchanged(jobs.executions()[0], Exec("a", JobStatus::kQueued, 10));
  EXPECT_FALSE(jobs.NextChanged());
  EXPECT_FALSE(jobs.PendingChanged());
}

TEST(ThingJobsTimeOut, TheDeviceReportedFirst) {
  // The device's SUCCEEDED arrives in the same batch before the controller's timeout.
  ThingJobs jobs("t1", {Exec("a", JobStatus::kInProgress, 10, 2)});
  ASSERT_FALSE(jobs.Update("a", Update(JobStatus::kSucceeded), std::nullopt, 50).rejection);
  EXPECT_FALSE(jobs.TimeOut("a", 60, "step timeout"));
  EXPECT_EQ(jobs.executions()[0].status, JobStatus::kSucceeded);
  EXPECT_EQ(jobs.executions()[0].version_number, 3);
  EXPECT_FALSE(jobs.executions()[0].status_details.contains("reason"));
}

TEST(ThingJobsCancel, QueuedBecomesCanceled) {
  ThingJobs jobs("t1", {Exec("a", JobStatus::kQueued, 10, 2), Exec("b", JobStatus::kQueued, 20)});
  ASSERT_EQ(jobs.Next()->job_id, "a");
  EXPECT_TRUE(jobs.Cancel("a", 100));
  const Execution& e = jobs.executions()[0];
  ASSERT_EQ(e.job_id, "a");
  EXPECT_EQ(e.status, JobStatus::kCanceled);
  EXPECT_EQ(e.version_number, 3);
  EXPECT_EQ(e.last_updated_at, 100);
  EXPECT_TRUE(e.dirty);
  EXPECT_EQ(jobs.Next()->job_id, "b");
  EXPECT_TRUE(jobs.NextChanged());
  EXPECT_TRUE(jobs.PendingChanged());
  EXPECT_FALSE(jobs.Cancel("a", 110));  // once
  EXPECT_EQ(jobs.executions()[0].version_number, 3);
}

TEST(ThingJobsCancel, OnlyQueuedIsCanceled) {
  for (JobStatus s : kAll) {
    if (s == JobStatus::kQueued) continue;
    const Execution before = Finished("a", s);
    ThingJobs jobs("t1", {before});
    EXPECT_FALSE(jobs.Cancel("a", 100)) << ToString(s);
    ExpectUnchanged(jobs.executions()[0], before);
    EXPECT_FALSE(jobs.NextChanged());
    EXPECT_FALSE(jobs.PendingChanged());
  }
  ThingJobs jobs("t1", {Exec("a", JobStatus::kQueued, 10)});
  EXPECT_FALSE(jobs.Cancel("nope", 100));
  ExpectUnchanged(jobs.executions()[0], Exec("a", JobStatus::kQueued, 10));
}

TEST(ThingJobsRequeue, FailedRejectedAndTimedOutBecomeANewQueuedExecution) {
  for (JobStatus s : {JobStatus::kFailed, JobStatus::kRejected, JobStatus::kTimedOut}) {
    SCOPED_TRACE(ToString(s));
    ThingJobs jobs("t1", {Finished("a", s)});
    EXPECT_FALSE(jobs.Next());
    EXPECT_TRUE(jobs.Requeue("a", 1000, 4600));
    const Execution& e = jobs.executions()[0];
    EXPECT_EQ(e.status, JobStatus::kQueued);
    EXPECT_EQ(e.execution_number, 2);
    EXPECT_EQ(e.version_number, 5);
    EXPECT_TRUE(e.status_details.empty());
    EXPECT_EQ(e.queued_at, 1000);
    EXPECT_EQ(e.last_updated_at, 1000);
    EXPECT_FALSE(e.started_at);
    EXPECT_FALSE(e.step_timeout_at);
    EXPECT_EQ(e.deadline, 4600);
    EXPECT_FALSE(e.last_client_token);
    EXPECT_FALSE(e.last_answer);
    EXPECT_TRUE(e.dirty);
    auto doc = nlohmann::json::parse(e.job_document);
    EXPECT_EQ(doc["issuedAt"], 1000);
    EXPECT_EQ(doc["expiresAt"], 4600);
    EXPECT_EQ(doc["operation"], "firmware.update");  // the rest of the document is kept
    // Nothing else pending: the device works on it next.
    ASSERT_TRUE(jobs.Next());
    EXPECT_EQ(jobs.Next()->job_id, "a");
    EXPECT_EQ(jobs.Next()->execution_number, 2);
    EXPECT_TRUE(jobs.NextChanged());
    EXPECT_TRUE(jobs.PendingChanged());
    Outcome pending = jobs.GetPending();
    ASSERT_EQ(pending.queued.size(), 1u);
    EXPECT_EQ(pending.queued[0].execution_number, 2);
  }
}

TEST(ThingJobsRequeue, WithoutADeadlineTheDocumentHasNoExpiry) {
  ThingJobs jobs("t1", {Finished("a", JobStatus::kFailed)});
  EXPECT_TRUE(jobs.Requeue("a", 1000, std::nullopt));
  const Execution& e = jobs.executions()[0];
  EXPECT_FALSE(e.deadline);
  auto doc = nlohmann::json::parse(e.job_document);
  EXPECT_EQ(doc["issuedAt"], 1000);
  EXPECT_FALSE(doc.contains("expiresAt"));
}

TEST(ThingJobsRequeue, OnlyFailedRejectedOrTimedOutIsRequeued) {
  for (JobStatus s : {JobStatus::kQueued, JobStatus::kInProgress, JobStatus::kSucceeded,
                      JobStatus::kCanceled, JobStatus::kRemoved}) {
    const Execution before = Finished("a", s);
    ThingJobs jobs("t1", {before});
    EXPECT_FALSE(jobs.Requeue("a", 1000, 4600)) << ToString(s);
    ExpectUnchanged(jobs.executions()[0], before);
    EXPECT_FALSE(jobs.NextChanged());
    EXPECT_FALSE(jobs.PendingChanged());
  }
  ThingJobs jobs("t1", {Finished("a", JobStatus::kFailed)});
  EXPECT_FALSE(jobs.Requeue("nope", 1000, 4600));
  ExpectUnchanged(jobs.executions()[0], Finished("a", JobStatus::kFailed));
  EXPECT_FALSE(jobs.PendingChanged());
}

TEST(ThingJobsRequeue, QueuesBehindOlderPendingExecutions) {
  ThingJobs jobs("t1", {Finished("a", JobStatus::kFailed, 10), Exec("b", JobStatus::kQueued, 50)});
  ASSERT_EQ(jobs.Next()->job_id, "b");
  EXPECT_TRUE(jobs.Requeue("a", 1000, 4600));
  EXPECT_EQ(jobs.Next()->job_id, "b");  // queued now: newer than b
  EXPECT_FALSE(jobs.NextChanged());
  EXPECT_TRUE(jobs.PendingChanged());
  Outcome pending = jobs.GetPending();
  ASSERT_EQ(pending.queued.size(), 2u);
  EXPECT_EQ(pending.queued[0].job_id, "b");
  EXPECT_EQ(pending.queued[1].job_id, "a");
  // And behind one in progress.
  ThingJobs busy("t1",
                 {Finished("a", JobStatus::kRejected, 10), Exec("c", JobStatus::kInProgress, 5)});
  EXPECT_TRUE(busy.Requeue("a", 1000, std::nullopt));
  EXPECT_EQ(busy.Next()->job_id, "c");
  EXPECT_FALSE(busy.NextChanged());
  EXPECT_TRUE(busy.PendingChanged());
}

TEST(ThingJobsRequeue, TimedOutAndRequeuedInOneBatchIsANewNext) {
  // The device had execution 1 of "a"; after a timeout and a retry it must hear of execution 2.
  Execution running = Exec("a", JobStatus::kInProgress, 10);
  running.started_at = 20;
  ThingJobs jobs("t1", {running});
  EXPECT_TRUE(jobs.TimeOut("a", 700, "step timeout"));
  EXPECT_TRUE(jobs.Requeue("a", 700, 4300));
  const Execution& e = jobs.executions()[0];
  EXPECT_EQ(e.status, JobStatus::kQueued);
  EXPECT_EQ(e.version_number, 3);
  EXPECT_EQ(e.execution_number, 2);
  EXPECT_TRUE(e.status_details.empty());  // the timeout's reason belongs to execution 1
  ASSERT_TRUE(jobs.Next());
  EXPECT_EQ(jobs.Next()->execution_number, 2);
  EXPECT_TRUE(jobs.NextChanged());
  EXPECT_TRUE(jobs.PendingChanged());
}

TEST(ThingJobsRequeue, TheNewExecutionRunsAndTheOldNumberIsGone) {
  ThingJobs jobs("t1", {Finished("a", JobStatus::kFailed)});
  ASSERT_TRUE(jobs.Requeue("a", 1000, 4600));
  Outcome started = jobs.StartNext({}, 1010);
  ASSERT_TRUE(started.execution);
  EXPECT_EQ(started.execution->execution_number, 2);
  EXPECT_EQ(started.execution->status, JobStatus::kInProgress);
  EXPECT_EQ(started.execution->started_at, 1010);
  EXPECT_EQ(started.execution->version_number, 6);
  // An update for execution 1 no longer finds it.
  UpdateRequest old = Update(JobStatus::kSucceeded);
  old.execution_number = 1;
  EXPECT_EQ(jobs.Update("a", old, std::nullopt, 1020).rejection->code,
            JobsError::kResourceNotFound);
  // The client token of execution 1 is not replayed for execution 2.
  Outcome fresh = jobs.Update("a", Update(JobStatus::kSucceeded), std::string("tok-9"), 1030);
  EXPECT_FALSE(fresh.replay);
  ASSERT_FALSE(fresh.rejection);
  EXPECT_EQ(fresh.execution->status, JobStatus::kSucceeded);
}

}  // namespace
}  // namespace fleet
