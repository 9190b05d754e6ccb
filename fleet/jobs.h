// The job executions of the AWS IoT Jobs device API (DESIGN §2), decided purely.
//
// A ThingJobs holds what the database knows about one device's executions for the length of a
// batch; each request method decides the answer, applies an accepted change to that in-memory
// state (so later requests of the same device in the batch see it) and marks the execution dirty
// for the store to write. Time is a parameter (epoch seconds). No I/O.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fleet {

enum class JobStatus {
  kQueued,
  kInProgress,
  kSucceeded,
  kFailed,
  kRejected,
  kTimedOut,
  kCanceled,
  kRemoved
};
std::string_view ToString(JobStatus status);
std::optional<JobStatus> ParseJobStatus(std::string_view text);
bool IsTerminal(JobStatus status);  // every status but QUEUED and IN_PROGRESS
// The transition table for device updates: QUEUED and IN_PROGRESS may move to IN_PROGRESS,
// SUCCEEDED, FAILED or REJECTED; nothing else may be set by a device.
bool DeviceMayTransition(JobStatus from, JobStatus to);
bool DeviceMaySet(JobStatus to);

enum class JobsError {
  kInvalidTopic,
  kInvalidJson,
  kInvalidRequest,
  kInvalidStateTransition,
  kResourceNotFound,
  kVersionMismatch,
  kInternalError,
  kRequestThrottled,
  kTerminalStateReached
};
std::string_view ToString(JobsError code);

using StatusDetails = std::map<std::string, std::string>;
inline constexpr size_t kMaxStatusDetails = 10;
inline constexpr size_t kMaxStatusDetailKey = 128;
inline constexpr size_t kMaxStatusDetailValue = 1024;
// AWS limits: at most 10 entries, keys 1-128 of [a-zA-Z0-9:_-], values 1-1024 characters
// without control characters. Returns the problem, or nullopt.
std::optional<std::string> CheckStatusDetails(const StatusDetails& details);
// clientToken: 1-64 printable ASCII characters.
std::optional<std::string> CheckClientToken(std::string_view token);
// stepTimeoutInMinutes: 1-10080, or -1 (update only: cancel the step timer).
std::optional<std::string> CheckStepTimeout(int64_t minutes, bool allow_cancel);

struct Execution {
  std::string job_id;
  std::string thing_name;
  JobStatus status = JobStatus::kQueued;
  StatusDetails status_details;
  int64_t version_number = 1;
  int64_t execution_number = 1;
  int64_t queued_at = 0;
  std::optional<int64_t> started_at;
  int64_t last_updated_at = 0;
  std::optional<int64_t> step_timeout_at;
  std::optional<int64_t> deadline;  // the job document's expiresAt (QUEUED expiry)
  std::string job_document;         // JSON object text
  std::string release_version;      // the firmware a SUCCEEDED execution installs
  std::optional<std::string> last_client_token;
  std::optional<std::string> last_answer;  // the accepted answer to last_client_token
  // Set by ThingJobs when changed; the store writes it guarded by the version it read.
  bool dirty = false;
  int64_t loaded_version = 0;
  // Queued in the same transaction as this batch: the device has not been told of it yet.
  bool queued_in_batch = false;
};

struct UpdateRequest {
  JobStatus status = JobStatus::kInProgress;
  std::optional<StatusDetails> status_details;  // replaces the details when given
  std::optional<int64_t> expected_version;
  std::optional<int64_t> execution_number;
  std::optional<int64_t> step_timeout_minutes;
  bool include_job_execution_state = false;
  bool include_job_document = false;
};

struct StartNextRequest {
  std::optional<StatusDetails> status_details;
  std::optional<int64_t> step_timeout_minutes;
};

struct DescribeRequest {
  std::optional<int64_t> execution_number;
  bool include_job_document = true;
};

struct Rejection {
  JobsError code;
  std::string message;
  std::optional<Execution> execution_state;  // for VersionMismatch, InvalidStateTransition
};

struct Outcome {
  std::optional<Rejection> rejection;  // set: answer on /rejected
  // Accepted answers. get: the two lists. start-next and get of one job: `execution` (none when
  // nothing is pending). update: `execution` is the state after the update and the answer shows
  // its state/document per the include flags.
  std::vector<Execution> in_progress;
  std::vector<Execution> queued;
  std::optional<Execution> execution;
  bool include_job_execution_state = false;
  bool include_job_document = false;
  // A retried update (same clientToken as the last accepted one): send this stored answer.
  std::optional<std::string> replay;
};

class ThingJobs {
 public:
  // `executions`: the device's QUEUED and IN_PROGRESS executions plus any other execution a
  // request of the batch names.
  ThingJobs(std::string thing, std::vector<Execution> executions);

  Outcome GetPending() const;
  Outcome StartNext(const StartNextRequest& request, int64_t now);
  Outcome Describe(const std::string& job_id, const DescribeRequest& request) const;
  Outcome Update(const std::string& job_id, const UpdateRequest& request,
                 const std::optional<std::string>& client_token, int64_t now);

  // The controller's decisions. Each returns whether it changed the execution; an execution that
  // is absent or whose status no longer allows it (the device reported first) stays unchanged.
  // QUEUED or IN_PROGRESS -> TIMED_OUT (statusDetails.reason names the timeout).
  bool TimeOut(const std::string& job_id, int64_t now, const std::string& reason);
  // QUEUED -> CANCELED.
  bool Cancel(const std::string& job_id, int64_t now);
  // FAILED, REJECTED or TIMED_OUT -> QUEUED as a new execution: executionNumber + 1, no details,
  // queued now with the given expiry (the job document's issuedAt and expiresAt follow).
  bool Requeue(const std::string& job_id, int64_t now, std::optional<int64_t> deadline);

  // The execution a device works on next: the oldest IN_PROGRESS, else the oldest QUEUED.
  const Execution* Next() const;
  // Whether the device must be told: notify-next when the next execution (job id and
  // execution number) differs from the one it had before this batch; notify when the set of
  // pending executions differs.
  bool NextChanged() const;
  bool PendingChanged() const;

  // Records the accepted answer for `job_id` so a retry with the same client token replays it.
  void RememberAnswer(const std::string& job_id, const std::string& client_token,
                      std::string answer);

  const std::string& thing() const { return thing_; }
  std::vector<Execution>& executions() { return executions_; }
  const std::vector<Execution>& executions() const { return executions_; }

 private:
  Outcome NotFound(const std::string& job_id, const std::optional<int64_t>& execution_number) const;
  Execution* Find(const std::string& job_id);
  const Execution* Find(const std::string& job_id) const;
  static void ApplyStepTimeout(Execution& e, const std::optional<int64_t>& minutes, int64_t now);

  std::string Identity(const Execution* e) const;
  std::string PendingSet() const;

  std::string thing_;
  std::vector<Execution> executions_;
  std::string initial_next_;     // Identity() of Next() before the batch
  std::string initial_pending_;  // PendingSet() before the batch
};

}  // namespace fleet
