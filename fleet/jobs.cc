#include "fleet/jobs.h"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace fleet {
namespace {

constexpr std::string_view kStatusNames[] = {"QUEUED",   "IN_PROGRESS", "SUCCEEDED", "FAILED",
                                             "REJECTED", "TIMED_OUT",   "CANCELED",  "REMOVED"};
constexpr std::string_view kErrorNames[] = {
    "InvalidTopic",           "InvalidJson",      "InvalidRequest",
    "InvalidStateTransition", "ResourceNotFound", "VersionMismatch",
    "InternalError",          "RequestThrottled", "TerminalStateReached"};

// Oldest first, as devices see their pending list; ties by job id so the order is total.
bool Older(const Execution& a, const Execution& b) {
  return a.queued_at != b.queued_at ? a.queued_at < b.queued_at : a.job_id < b.job_id;
}

Rejection Reject(JobsError code, std::string message,
                 std::optional<Execution> state = std::nullopt) {
  return {code, std::move(message), std::move(state)};
}

Outcome Rejected(Rejection r) {
  Outcome o;
  o.rejection = std::move(r);
  return o;
}

}  // namespace

std::string_view ToString(JobStatus status) { return kStatusNames[static_cast<int>(status)]; }

std::optional<JobStatus> ParseJobStatus(std::string_view text) {
  for (int i = 0; i < 8; ++i)
    if (kStatusNames[i] == text) return static_cast<JobStatus>(i);
  return std::nullopt;
}

bool IsTerminal(JobStatus status) {
  return status != JobStatus::kQueued && status != JobStatus::kInProgress;
}

bool DeviceMaySet(JobStatus to) {
  return to == JobStatus::kInProgress || to == JobStatus::kSucceeded || to == JobStatus::kFailed ||
         to == JobStatus::kRejected;
}

bool DeviceMayTransition(JobStatus from, JobStatus to) {
  return !IsTerminal(from) && DeviceMaySet(to);
}

std::string_view ToString(JobsError code) { return kErrorNames[static_cast<int>(code)]; }

std::optional<std::string> CheckStatusDetails(const StatusDetails& details) {
  if (details.size() > kMaxStatusDetails)
    return "statusDetails has " + std::to_string(details.size()) + " entries; at most 10 allowed";
  for (const auto& [key, value] : details) {
    bool ok = !key.empty() && key.size() <= kMaxStatusDetailKey;
    for (char c : key)
      ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == ':' || c == '_' || c == '-');
    if (!ok)
      return "statusDetails key \"" + key.substr(0, 64) +
             "\" is invalid: use 1-128 of the characters a-z A-Z 0-9 : _ -";
    if (value.empty() || value.size() > kMaxStatusDetailValue)
      return "statusDetails." + key + " must be 1-1024 characters, not " +
             std::to_string(value.size());
    for (unsigned char c : value)
      if (c < 0x20 || c == 0x7f) return "statusDetails." + key + " contains a control character";
  }
  return std::nullopt;
}

std::optional<std::string> CheckClientToken(std::string_view token) {
  bool ok = !token.empty() && token.size() <= 64;
  for (char c : token) ok = ok && c >= 0x21 && c <= 0x7e;
  if (ok) return std::nullopt;
  return "clientToken must be 1-64 printable ASCII characters without spaces";
}

std::optional<std::string> CheckStepTimeout(int64_t minutes, bool allow_cancel) {
  if ((minutes >= 1 && minutes <= 10080) || (allow_cancel && minutes == -1)) return std::nullopt;
  return std::string("stepTimeoutInMinutes must be 1-10080") +
         (allow_cancel ? " (or -1 to cancel the step timer)" : "");
}

ThingJobs::ThingJobs(std::string thing, std::vector<Execution> executions)
    : thing_(std::move(thing)), executions_(std::move(executions)) {
  for (Execution& e : executions_) e.loaded_version = e.version_number;
  std::sort(executions_.begin(), executions_.end(), Older);
  // What the device knew: everything but the executions queued with this batch.
  std::vector<Execution> fresh;
  auto known_end = std::stable_partition(executions_.begin(), executions_.end(),
                                         [](const Execution& e) { return !e.queued_in_batch; });
  fresh.assign(std::make_move_iterator(known_end), std::make_move_iterator(executions_.end()));
  executions_.erase(known_end, executions_.end());
  initial_next_ = Identity(Next());
  initial_pending_ = PendingSet();
  for (Execution& e : fresh) executions_.push_back(std::move(e));
  std::sort(executions_.begin(), executions_.end(), Older);
}

bool ThingJobs::TimeOut(const std::string& job_id, int64_t now, const std::string& reason) {
  Execution* e = Find(job_id);
  if (!e || (e->status != JobStatus::kQueued && e->status != JobStatus::kInProgress)) return false;
  e->status = JobStatus::kTimedOut;
  e->status_details["reason"] = reason;
  e->last_updated_at = now;
  ++e->version_number;
  e->dirty = true;
  return true;
}

bool ThingJobs::Cancel(const std::string& job_id, int64_t now) {
  Execution* e = Find(job_id);
  if (!e || e->status != JobStatus::kQueued) return false;
  e->status = JobStatus::kCanceled;
  e->last_updated_at = now;
  ++e->version_number;
  e->dirty = true;
  return true;
}

bool ThingJobs::Requeue(const std::string& job_id, int64_t now, std::optional<int64_t> deadline) {
  Execution* e = Find(job_id);
  if (!e || (e->status != JobStatus::kFailed && e->status != JobStatus::kRejected &&
             e->status != JobStatus::kTimedOut))
    return false;
  e->status = JobStatus::kQueued;
  e->status_details.clear();
  ++e->execution_number;
  ++e->version_number;
  e->queued_at = now;
  e->started_at.reset();
  e->step_timeout_at.reset();
  e->last_updated_at = now;
  e->deadline = deadline;
  e->last_client_token.reset();
  e->last_answer.reset();
  auto doc = nlohmann::json::parse(e->job_document, nullptr, false);
  if (doc.is_object()) {
    doc["issuedAt"] = now;
    if (deadline)
      doc["expiresAt"] = *deadline;
    else
      doc.erase("expiresAt");
    e->job_document = doc.dump();
  }
  e->dirty = true;
  std::stable_sort(executions_.begin(), executions_.end(), Older);
  return true;
}

std::string ThingJobs::Identity(const Execution* e) const {
  return e ? e->job_id + "#" + std::to_string(e->execution_number) : "";
}

std::string ThingJobs::PendingSet() const {
  std::string set;
  for (const Execution& e : executions_)
    if (!IsTerminal(e.status)) set += Identity(&e) + "\n";
  return set;
}

bool ThingJobs::NextChanged() const { return Identity(Next()) != initial_next_; }

bool ThingJobs::PendingChanged() const { return PendingSet() != initial_pending_; }

Outcome ThingJobs::NotFound(const std::string& job_id,
                            const std::optional<int64_t>& execution_number) const {
  return Rejected(Reject(
      JobsError::kResourceNotFound,
      "no execution of job " + job_id + " for thing " + thing_ +
          (execution_number ? " with executionNumber " + std::to_string(*execution_number) : "")));
}

Execution* ThingJobs::Find(const std::string& job_id) {
  for (Execution& e : executions_)
    if (e.job_id == job_id) return &e;
  return nullptr;
}

const Execution* ThingJobs::Find(const std::string& job_id) const {
  return const_cast<ThingJobs*>(this)->Find(job_id);
}

const Execution* ThingJobs::Next() const {
  for (const Execution& e : executions_)
    if (e.status == JobStatus::kInProgress) return &e;
  for (const Execution& e : executions_)
    if (e.status == JobStatus::kQueued) return &e;
  return nullptr;
}

Outcome ThingJobs::GetPending() const {
  Outcome o;
  for (const Execution& e : executions_) {
    if (e.status == JobStatus::kInProgress) o.in_progress.push_back(e);
    if (e.status == JobStatus::kQueued) o.queued.push_back(e);
  }
  return o;
}

void ThingJobs::ApplyStepTimeout(Execution& e, const std::optional<int64_t>& minutes, int64_t now) {
  if (!minutes) return;
  e.step_timeout_at = *minutes == -1 ? std::nullopt : std::optional<int64_t>(now + *minutes * 60);
}

Outcome ThingJobs::StartNext(const StartNextRequest& request, int64_t now) {
  Outcome o;
  const Execution* next = Next();
  if (next && next->status == JobStatus::kQueued) {
    Execution& e = *Find(next->job_id);
    e.status = JobStatus::kInProgress;
    if (request.status_details) e.status_details = *request.status_details;
    e.started_at = now;
    e.last_updated_at = now;
    ++e.version_number;
    ApplyStepTimeout(e, request.step_timeout_minutes, now);
    e.dirty = true;
  }
  if ((next = Next())) o.execution = *next;
  o.include_job_document = true;
  return o;
}

Outcome ThingJobs::Describe(const std::string& job_id, const DescribeRequest& request) const {
  Outcome o;
  o.include_job_document = request.include_job_document;
  const Execution* e = job_id == "$next" ? Next() : Find(job_id);
  if (job_id == "$next" && !e) return o;  // nothing pending: accepted without an execution
  if (!e || (request.execution_number && *request.execution_number != e->execution_number)) {
    return NotFound(job_id, request.execution_number);
  }
  o.execution = *e;
  return o;
}

Outcome ThingJobs::Update(const std::string& job_id, const UpdateRequest& request,
                          const std::optional<std::string>& client_token, int64_t now) {
  if (job_id == "$next")
    return Rejected(Reject(JobsError::kInvalidRequest,
                           "jobId $next is only valid with get; update a job by its id"));
  Execution* e = Find(job_id);
  if (!e || (request.execution_number && *request.execution_number != e->execution_number)) {
    return NotFound(job_id, request.execution_number);
  }
  Outcome o;
  if (client_token && e->last_client_token == client_token && e->last_answer) {
    o.replay = e->last_answer;
    return o;
  }
  if (!DeviceMaySet(request.status)) {
    return Rejected(Reject(JobsError::kInvalidRequest,
                           "a device may set status IN_PROGRESS, SUCCEEDED, FAILED or REJECTED, "
                           "not " +
                               std::string(ToString(request.status))));
  }
  o.include_job_execution_state = request.include_job_execution_state;
  o.include_job_document = request.include_job_document;
  // The same status and details again: answered, not applied twice.
  // (A new step timeout is a change: it re-arms the timer, as a heartbeat does.)
  bool repeat = e->status == request.status && !request.step_timeout_minutes &&
                (!request.status_details || *request.status_details == e->status_details);
  if (repeat) {
    o.execution = *e;
    return o;
  }
  if (request.expected_version && *request.expected_version != e->version_number) {
    return Rejected(Reject(JobsError::kVersionMismatch,
                           "expectedVersion " + std::to_string(*request.expected_version) +
                               " does not match versionNumber " + std::to_string(e->version_number),
                           *e));
  }
  if (!DeviceMayTransition(e->status, request.status)) {
    return Rejected(Reject(JobsError::kInvalidStateTransition,
                           "the execution is " + std::string(ToString(e->status)) +
                               " and cannot become " + std::string(ToString(request.status)),
                           *e));
  }
  if (e->status == JobStatus::kQueued) e->started_at = now;
  e->status = request.status;
  if (request.status_details) e->status_details = *request.status_details;
  e->last_updated_at = now;
  ++e->version_number;
  ApplyStepTimeout(*e, request.step_timeout_minutes, now);
  if (IsTerminal(e->status)) e->step_timeout_at.reset();
  e->last_client_token = client_token;
  e->last_answer.reset();
  e->dirty = true;
  o.execution = *e;
  return o;
}

void ThingJobs::RememberAnswer(const std::string& job_id, const std::string& client_token,
                               std::string answer) {
  if (Execution* e = Find(job_id); e && e->last_client_token == client_token) {
    e->last_answer = std::move(answer);
    e->dirty = true;
  }
}

}  // namespace fleet
