#include "mqtt/jobs_codec.h"

#include <nlohmann/json.hpp>

#include "fleet/registry.h"

namespace mqtt {
namespace {

using Json = nlohmann::json;
using fleet::JobsError;

struct Invalid {
  JobsError code;
  std::string message;
};

// Some SDKs send numbers as decimal strings ("expectedVersion": "3"); accept both.
std::optional<int64_t> ReadInteger(const Json& body, const char* field) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_unsigned() && it->get<uint64_t>() <= INT64_MAX)
    return static_cast<int64_t>(it->get<uint64_t>());
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    bool digits = !s.empty() && s.size() <= 18;
    for (size_t i = 0; i < s.size(); ++i)
      digits = digits && ((s[i] >= '0' && s[i] <= '9') || (i == 0 && s[i] == '-' && s.size() > 1));
    if (digits) return std::stoll(s);
  }
  throw Invalid{JobsError::kInvalidRequest, std::string(field) + " must be an integer"};
}

std::optional<bool> ReadBool(const Json& body, const char* field) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean())
    throw Invalid{JobsError::kInvalidRequest, std::string(field) + " must be true or false"};
  return it->get<bool>();
}

std::optional<fleet::StatusDetails> ReadDetails(const Json& body) {
  auto it = body.find("statusDetails");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_object())
    throw Invalid{JobsError::kInvalidRequest, "statusDetails must be an object of strings"};
  if (it->size() > fleet::kMaxStatusDetails)
    throw Invalid{JobsError::kInvalidRequest, "statusDetails has " + std::to_string(it->size()) +
                                                  " entries; at most 10 allowed"};
  fleet::StatusDetails details;
  for (auto kv = it->begin(); kv != it->end(); ++kv) {
    if (!kv->is_string())
      throw Invalid{JobsError::kInvalidRequest,
                    "statusDetails." + kv.key().substr(0, 64) + " must be a string"};
    details[kv.key()] = kv->get<std::string>();
  }
  if (auto e = fleet::CheckStatusDetails(details)) throw Invalid{JobsError::kInvalidRequest, *e};
  return details;
}

std::optional<int64_t> ReadStepTimeout(const Json& body, bool allow_cancel) {
  auto minutes = ReadInteger(body, "stepTimeoutInMinutes");
  if (minutes)
    if (auto e = fleet::CheckStepTimeout(*minutes, allow_cancel))
      throw Invalid{JobsError::kInvalidRequest, *e};
  return minutes;
}

std::optional<int64_t> ReadPositive(const Json& body, const char* field) {
  auto value = ReadInteger(body, field);
  if (value && *value < 1)
    throw Invalid{JobsError::kInvalidRequest, std::string(field) + " must be 1 or more"};
  return value;
}

RequestBody ReadBody(JobsRequest kind, const Json& body) {
  switch (kind) {
    case JobsRequest::kGetPending:
      return GetPendingBody{};
    case JobsRequest::kStartNext:
      return fleet::StartNextRequest{ReadDetails(body), ReadStepTimeout(body, false)};
    case JobsRequest::kDescribe:
      return fleet::DescribeRequest{ReadPositive(body, "executionNumber"),
                                    ReadBool(body, "includeJobDocument").value_or(true)};
    case JobsRequest::kUpdate: {
      auto it = body.find("status");
      if (it == body.end() || !it->is_string())
        throw Invalid{JobsError::kInvalidRequest,
                      "status is required: IN_PROGRESS, SUCCEEDED, FAILED or REJECTED"};
      auto status = fleet::ParseJobStatus(it->get<std::string>());
      if (!status)
        throw Invalid{JobsError::kInvalidRequest,
                      "status \"" + it->get<std::string>().substr(0, 32) +
                          "\" is unknown: use IN_PROGRESS, SUCCEEDED, FAILED or REJECTED"};
      fleet::UpdateRequest u;
      u.status = *status;
      u.status_details = ReadDetails(body);
      u.expected_version = ReadPositive(body, "expectedVersion");
      u.execution_number = ReadPositive(body, "executionNumber");
      u.step_timeout_minutes = ReadStepTimeout(body, true);
      u.include_job_execution_state = ReadBool(body, "includeJobExecutionState").value_or(false);
      u.include_job_document = ReadBool(body, "includeJobDocument").value_or(false);
      return u;
    }
  }
  return GetPendingBody{};
}

Json ParseDocument(const std::string& text, const DocumentSigner& sign) {
  Json doc = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Json::object();
  if (sign && doc.is_object()) sign(doc);
  return doc;
}

Json Summary(const fleet::Execution& e) {
  Json j = {{"jobId", e.job_id},
            {"queuedAt", e.queued_at},
            {"lastUpdatedAt", e.last_updated_at},
            {"versionNumber", e.version_number},
            {"executionNumber", e.execution_number}};
  if (e.started_at) j["startedAt"] = *e.started_at;
  return j;
}

Json ExecutionJson(const fleet::Execution& e, bool include_document, int64_t now,
                   const DocumentSigner& sign) {
  Json j = {{"jobId", e.job_id},
            {"thingName", e.thing_name},
            {"status", fleet::ToString(e.status)},
            {"statusDetails", e.status_details},
            {"queuedAt", e.queued_at},
            {"lastUpdatedAt", e.last_updated_at},
            {"versionNumber", e.version_number},
            {"executionNumber", e.execution_number}};
  if (e.started_at) j["startedAt"] = *e.started_at;
  if (e.step_timeout_at)
    j["approximateSecondsBeforeTimedOut"] = std::max<int64_t>(0, *e.step_timeout_at - now);
  if (include_document) j["jobDocument"] = ParseDocument(e.job_document, sign);
  return j;
}

Json ExecutionState(const fleet::Execution& e) {
  return {{"status", fleet::ToString(e.status)},
          {"statusDetails", e.status_details},
          {"versionNumber", e.version_number}};
}

void Stamp(Json& j, const JobsRequestMessage& request, int64_t now) {
  j["timestamp"] = now;
  if (request.client_token) j["clientToken"] = *request.client_token;
}

}  // namespace

JobsRequestMessage ParseJobsRequest(const RequestTopic& topic, std::string topic_name,
                                    std::string_view payload) {
  JobsRequestMessage m{topic, std::move(topic_name), std::nullopt, std::nullopt, GetPendingBody{}};
  // The topic names a thing that cannot be registered, or a job id no rollout can have.
  bool job_ok = topic.job_id.empty() || topic.job_id == "$next" ||
                (topic.job_id.size() <= 64 && !fleet::CheckDeviceId(topic.job_id));
  if (fleet::CheckDeviceId(topic.thing) || !job_ok) {
    m.rejection = fleet::Rejection{
        JobsError::kInvalidTopic,
        !job_ok ? "job id in the topic is invalid: use 1 to 64 of A-Z a-z 0-9 _ . : -"
                : "thing name in the topic is not a valid device id: use 1 to 128 of "
                  "A-Z a-z 0-9 _ . : -",
        std::nullopt};
    return m;
  }
  if (payload.size() > kMaxPayloadBytes) {
    m.rejection = fleet::Rejection{JobsError::kInvalidRequest,
                                   "payload is " + std::to_string(payload.size()) +
                                       " bytes; at most " + std::to_string(kMaxPayloadBytes),
                                   std::nullopt};
    return m;
  }
  // An empty payload is read as {} (some clients send nothing to jobs/get).
  Json body =
      payload.empty() ? Json::object() : Json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    m.rejection =
        fleet::Rejection{JobsError::kInvalidJson, "the payload is not valid JSON", std::nullopt};
    return m;
  }
  try {
    if (!body.is_object())
      throw Invalid{JobsError::kInvalidRequest, "the payload must be a JSON object"};
    if (auto it = body.find("clientToken"); it != body.end() && !it->is_null()) {
      if (!it->is_string())
        throw Invalid{JobsError::kInvalidRequest, "clientToken must be a string"};
      const std::string& token = it->get_ref<const std::string&>();
      if (auto e = fleet::CheckClientToken(token)) throw Invalid{JobsError::kInvalidRequest, *e};
      m.client_token = token;
    }
    // The topic is the identity (the broker's ACL lets a device publish only under its own
    // thing); a payload that names another thing was not sent by that thing's own code path.
    if (auto it = body.find("thingName");
        it != body.end() && it->is_string() && it->get_ref<const std::string&>() != topic.thing)
      throw Invalid{JobsError::kInvalidRequest,
                    "thingName in the payload is not the thing of the topic: a device may only "
                    "speak for itself"};
    m.body = ReadBody(topic.kind, body);
  } catch (const Invalid& invalid) {
    m.rejection = fleet::Rejection{invalid.code, invalid.message, std::nullopt};
  }
  return m;
}

Answer EncodeAnswer(const JobsRequestMessage& request, const fleet::Outcome& outcome, int64_t now,
                    const DocumentSigner& sign) {
  if (outcome.rejection) return EncodeRejection(request, *outcome.rejection, now);
  Answer answer{JobsTopics::Accepted(request.topic_name), {}};
  if (outcome.replay) {
    answer.payload = *outcome.replay;
    return answer;
  }
  Json j = Json::object();
  switch (request.topic.kind) {
    case JobsRequest::kGetPending: {
      Json in_progress = Json::array(), queued = Json::array();
      for (const auto& e : outcome.in_progress) in_progress.push_back(Summary(e));
      for (const auto& e : outcome.queued) queued.push_back(Summary(e));
      j["inProgressJobs"] = std::move(in_progress);
      j["queuedJobs"] = std::move(queued);
      break;
    }
    case JobsRequest::kStartNext:
    case JobsRequest::kDescribe:
      if (outcome.execution)
        j["execution"] = ExecutionJson(*outcome.execution, outcome.include_job_document, now, sign);
      break;
    case JobsRequest::kUpdate:
      if (outcome.execution && outcome.include_job_execution_state)
        j["executionState"] = ExecutionState(*outcome.execution);
      if (outcome.execution && outcome.include_job_document)
        j["jobDocument"] = ParseDocument(outcome.execution->job_document, sign);
      break;
  }
  Stamp(j, request, now);
  answer.payload = j.dump();
  return answer;
}

Answer EncodeRejection(const JobsRequestMessage& request, const fleet::Rejection& rejection,
                       int64_t now) {
  Json j = {{"code", fleet::ToString(rejection.code)}, {"message", rejection.message}};
  if (rejection.execution_state) j["executionState"] = ExecutionState(*rejection.execution_state);
  Stamp(j, request, now);
  return {JobsTopics::Rejected(request.topic_name), j.dump()};
}

std::string EncodeNotifyNext(const fleet::Execution* next, int64_t now,
                             const DocumentSigner& sign) {
  Json j = {{"timestamp", now}};
  if (next) j["execution"] = ExecutionJson(*next, /*include_document=*/true, now, sign);
  return j.dump();
}

std::string EncodeNotify(const fleet::ThingJobs& jobs, int64_t now) {
  fleet::Outcome pending = jobs.GetPending();
  Json lists = Json::object();
  for (const auto& e : pending.queued) lists["QUEUED"].push_back(Summary(e));
  for (const auto& e : pending.in_progress) lists["IN_PROGRESS"].push_back(Summary(e));
  return Json{{"timestamp", now}, {"jobs", std::move(lists)}}.dump();
}

std::optional<Telemetry> ParseTelemetry(std::string thing, std::string_view payload,
                                        std::string* error) {
  if (payload.size() > kMaxPayloadBytes) {
    *error = "telemetry of " + std::to_string(payload.size()) + " bytes is over the limit";
    return std::nullopt;
  }
  Json body = Json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded() || !body.is_object()) {
    *error = "telemetry must be a JSON object";
    return std::nullopt;
  }
  if (auto it = body.find("thingName");
      it != body.end() && it->is_string() && it->get_ref<const std::string&>() != thing) {
    *error = "telemetry names thing " + it->dump() + " on the topic of " + thing +
             ": a device may only report for itself";
    return std::nullopt;
  }
  Telemetry t{std::move(thing), body.dump(), std::nullopt};
  if (auto it = body.find("firmware"); it != body.end() && it->is_string())
    t.firmware = it->get<std::string>();
  return t;
}

}  // namespace mqtt
