#include "mqtt/jobs_codec.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace mqtt {
namespace {

using Json = nlohmann::json;

const JobsTopics kTopics;

JobsRequestMessage Parse(const std::string& topic, const std::string& payload) {
  auto t = kTopics.ParseRequest(topic);
  EXPECT_TRUE(t) << topic;
  return ParseJobsRequest(*t, topic, payload);
}

fleet::JobsError Code(const JobsRequestMessage& m) {
  EXPECT_TRUE(m.rejection);
  return m.rejection ? m.rejection->code : fleet::JobsError::kInternalError;
}

const std::string kUpdate = "$aws/things/t1/jobs/job-1/update";

TEST(ParseJobsRequest, ReadsAnUpdate) {
  auto m = Parse(kUpdate,
                 R"({"status":"IN_PROGRESS","statusDetails":{"step":"downloading"},
                     "expectedVersion":3,"executionNumber":"1","includeJobExecutionState":true,
                     "includeJobDocument":false,"stepTimeoutInMinutes":5,"clientToken":"c-1"})");
  ASSERT_FALSE(m.rejection) << m.rejection->message;
  const auto& u = std::get<fleet::UpdateRequest>(m.body);
  EXPECT_EQ(u.status, fleet::JobStatus::kInProgress);
  EXPECT_EQ(u.status_details->at("step"), "downloading");
  EXPECT_EQ(u.expected_version, 3);
  EXPECT_EQ(u.execution_number, 1);  // SDKs that send numbers as strings work too
  EXPECT_TRUE(u.include_job_execution_state);
  EXPECT_EQ(u.step_timeout_minutes, 5);
  EXPECT_EQ(m.client_token, "c-1");
}

TEST(ParseJobsRequest, DefaultsAndEmptyPayloads) {
  auto m = Parse("$aws/things/t1/jobs/$next/get", "{}");
  ASSERT_FALSE(m.rejection);
  EXPECT_TRUE(std::get<fleet::DescribeRequest>(m.body).include_job_document);
  m = Parse("$aws/things/t1/jobs/get", "");
  EXPECT_FALSE(m.rejection);
  m = Parse("$aws/things/t1/jobs/start-next", R"({"clientToken":"x","unknownField":1})");
  EXPECT_FALSE(m.rejection);  // unknown fields are ignored, as AWS does
}

TEST(ParseJobsRequest, EveryRejectionCode) {
  EXPECT_EQ(Code(Parse(kUpdate, "{not json")), fleet::JobsError::kInvalidJson);
  EXPECT_EQ(Code(Parse(kUpdate, "[1,2]")), fleet::JobsError::kInvalidRequest);
  EXPECT_EQ(Code(Parse(kUpdate, "{}")), fleet::JobsError::kInvalidRequest);  // status required
  EXPECT_EQ(Code(Parse(kUpdate, R"({"status":"DONE"})")), fleet::JobsError::kInvalidRequest);
  EXPECT_EQ(Code(Parse(kUpdate, R"({"status":7})")), fleet::JobsError::kInvalidRequest);
  EXPECT_EQ(Code(Parse(kUpdate, R"({"status":"FAILED","expectedVersion":"x"})")),
            fleet::JobsError::kInvalidRequest);
  EXPECT_EQ(Code(Parse(kUpdate, R"({"status":"FAILED","expectedVersion":0})")),
            fleet::JobsError::kInvalidRequest);
  EXPECT_EQ(Code(Parse(kUpdate, R"({"status":"FAILED","statusDetails":{"a":1}})")),
            fleet::JobsError::kInvalidRequest);
  EXPECT_EQ(Code(Parse(kUpdate, R"({"status":"FAILED","statusDetails":"x"})")),
            fleet::JobsError::kInvalidRequest);
  EXPECT_EQ(Code(Parse(kUpdate, R"({"status":"FAILED","includeJobDocument":"yes"})")),
            fleet::JobsError::kInvalidRequest);
  EXPECT_EQ(Code(Parse(kUpdate, R"({"status":"FAILED","stepTimeoutInMinutes":0})")),
            fleet::JobsError::kInvalidRequest);
  EXPECT_EQ(Code(Parse("$aws/things/t1/jobs/start-next", R"({"stepTimeoutInMinutes":-1})")),
            fleet::JobsError::kInvalidRequest);
  Json many = {{"status", "FAILED"}, {"statusDetails", Json::object()}};
  for (int i = 0; i < 11; ++i) many["statusDetails"]["k" + std::to_string(i)] = "v";
  EXPECT_EQ(Code(Parse(kUpdate, many.dump())), fleet::JobsError::kInvalidRequest);
  Json long_key = {{"status", "FAILED"}, {"statusDetails", {{std::string(129, 'k'), "v"}}}};
  EXPECT_EQ(Code(Parse(kUpdate, long_key.dump())), fleet::JobsError::kInvalidRequest);
  Json long_value = {{"status", "FAILED"}, {"statusDetails", {{"k", std::string(1025, 'v')}}}};
  EXPECT_EQ(Code(Parse(kUpdate, long_value.dump())), fleet::JobsError::kInvalidRequest);
  std::string huge = R"({"status":"FAILED","pad":")" + std::string(kMaxPayloadBytes, 'x') + "\"}";
  auto big = Parse(kUpdate, huge);
  EXPECT_EQ(Code(big), fleet::JobsError::kInvalidRequest);
  EXPECT_NE(big.rejection->message.find("at most 131072"), std::string::npos);
  EXPECT_EQ(Code(Parse(kUpdate, R"({"status":"FAILED","clientToken":5})")),
            fleet::JobsError::kInvalidRequest);
}

TEST(ParseJobsRequest, InvalidTopicForImpossibleThingsAndJobs) {
  EXPECT_EQ(Code(Parse("$aws/things/bad$thing/jobs/get", "{}")), fleet::JobsError::kInvalidTopic);
  EXPECT_EQ(Code(Parse("$aws/things/" + std::string(129, 'x') + "/jobs/get", "{}")),
            fleet::JobsError::kInvalidTopic);
  EXPECT_EQ(Code(Parse("$aws/things/t1/jobs/" + std::string(65, 'j') + "/get", "{}")),
            fleet::JobsError::kInvalidTopic);
  EXPECT_EQ(Code(Parse("$aws/things/t1/jobs/j%20k/update", R"({"status":"FAILED"})")),
            fleet::JobsError::kInvalidTopic);
  EXPECT_FALSE(Parse("$aws/things/t1/jobs/$next/get", "{}").rejection);
}

TEST(ParseJobsRequest, KeepsTheClientTokenOfARejectedRequest) {
  auto m = Parse(kUpdate, R"({"status":"BOGUS","clientToken":"tok-9"})");
  ASSERT_TRUE(m.rejection);
  EXPECT_EQ(m.client_token, "tok-9");
  Answer a = EncodeRejection(m, *m.rejection, 1000);
  EXPECT_EQ(a.topic, kUpdate + "/rejected");
  Json j = Json::parse(a.payload);
  EXPECT_EQ(j["code"], "InvalidRequest");
  EXPECT_EQ(j["clientToken"], "tok-9");
  EXPECT_EQ(j["timestamp"], 1000);
  EXPECT_TRUE(j["message"].get<std::string>().find("BOGUS") != std::string::npos);
}

fleet::Execution Sample() {
  fleet::Execution e;
  e.job_id = "job-1";
  e.thing_name = "t1";
  e.status = fleet::JobStatus::kInProgress;
  e.status_details = {{"step", "installing"}};
  e.version_number = 3;
  e.execution_number = 2;
  e.queued_at = 100;
  e.started_at = 110;
  e.last_updated_at = 120;
  e.step_timeout_at = 400;
  e.job_document = R"({"operation":"firmware.update","release":{"version":"2.0.0"}})";
  return e;
}

TEST(EncodeAnswer, ExecutionHasTheAwsFields) {
  auto m = Parse("$aws/things/t1/jobs/start-next", R"({"clientToken":"c"})");
  fleet::Outcome o;
  o.execution = Sample();
  o.include_job_document = true;
  Answer a = EncodeAnswer(m, o, 200);
  EXPECT_EQ(a.topic, "$aws/things/t1/jobs/start-next/accepted");
  Json e = Json::parse(a.payload)["execution"];
  EXPECT_EQ(e["jobId"], "job-1");
  EXPECT_EQ(e["thingName"], "t1");
  EXPECT_EQ(e["status"], "IN_PROGRESS");
  EXPECT_EQ(e["statusDetails"]["step"], "installing");
  EXPECT_EQ(e["queuedAt"], 100);
  EXPECT_EQ(e["startedAt"], 110);
  EXPECT_EQ(e["lastUpdatedAt"], 120);
  EXPECT_EQ(e["versionNumber"], 3);
  EXPECT_EQ(e["executionNumber"], 2);
  EXPECT_EQ(e["approximateSecondsBeforeTimedOut"], 200);
  EXPECT_EQ(e["jobDocument"]["release"]["version"], "2.0.0");
  EXPECT_EQ(Json::parse(a.payload)["clientToken"], "c");
}

TEST(EncodeAnswer, PendingListsAreSummaries) {
  auto m = Parse("$aws/things/t1/jobs/get", "{}");
  fleet::Outcome o;
  o.in_progress.push_back(Sample());
  Json j = Json::parse(EncodeAnswer(m, o, 5).payload);
  EXPECT_EQ(j["queuedJobs"], Json::array());
  ASSERT_EQ(j["inProgressJobs"].size(), 1u);
  Json s = j["inProgressJobs"][0];
  EXPECT_EQ(s["jobId"], "job-1");
  EXPECT_EQ(s["executionNumber"], 2);
  EXPECT_EQ(s["versionNumber"], 3);
  EXPECT_FALSE(s.contains("jobDocument"));
  EXPECT_FALSE(s.contains("status"));
  EXPECT_FALSE(j.contains("clientToken"));
}

TEST(EncodeAnswer, UpdateIncludesStateAndDocumentOnlyWhenAsked) {
  auto m = Parse(kUpdate, R"({"status":"IN_PROGRESS"})");
  fleet::Outcome o;
  o.execution = Sample();
  Json j = Json::parse(EncodeAnswer(m, o, 5).payload);
  EXPECT_FALSE(j.contains("executionState"));
  EXPECT_FALSE(j.contains("jobDocument"));
  o.include_job_execution_state = o.include_job_document = true;
  j = Json::parse(EncodeAnswer(m, o, 5).payload);
  EXPECT_EQ(j["executionState"], (Json{{"status", "IN_PROGRESS"},
                                       {"statusDetails", {{"step", "installing"}}},
                                       {"versionNumber", 3}}));
  EXPECT_EQ(j["jobDocument"]["operation"], "firmware.update");
  o.replay = "{\"same\":1}";
  EXPECT_EQ(EncodeAnswer(m, o, 9).payload, "{\"same\":1}");
}

TEST(EncodeAnswer, VersionMismatchCarriesExecutionState) {
  auto m = Parse(kUpdate, R"({"status":"SUCCEEDED","expectedVersion":1})");
  fleet::Outcome o;
  o.rejection = fleet::Rejection{fleet::JobsError::kVersionMismatch, "stale", Sample()};
  Answer a = EncodeAnswer(m, o, 5);
  EXPECT_EQ(a.topic, kUpdate + "/rejected");
  Json j = Json::parse(a.payload);
  EXPECT_EQ(j["code"], "VersionMismatch");
  EXPECT_EQ(j["executionState"]["versionNumber"], 3);
}

TEST(Notices, NotifyNextAndNotify) {
  Json empty = Json::parse(EncodeNotifyNext(nullptr, 7));
  EXPECT_EQ(empty, (Json{{"timestamp", 7}}));
  fleet::Execution e = Sample();
  Json next = Json::parse(EncodeNotifyNext(&e, 7));
  EXPECT_EQ(next["execution"]["jobId"], "job-1");
  EXPECT_TRUE(next["execution"].contains("jobDocument"));
  fleet::Execution q = Sample();
  q.job_id = "job-2";
  q.status = fleet::JobStatus::kQueued;
  fleet::ThingJobs jobs("t1", {e, q});
  Json notify = Json::parse(EncodeNotify(jobs, 8));
  EXPECT_EQ(notify["jobs"]["IN_PROGRESS"][0]["jobId"], "job-1");
  EXPECT_EQ(notify["jobs"]["QUEUED"][0]["jobId"], "job-2");
  EXPECT_EQ(Json::parse(EncodeNotify(fleet::ThingJobs("t1", {}), 8))["jobs"], Json::object());
}

TEST(ParseTelemetry, ObjectsOnlyAndFieldsKept) {
  std::string error;
  auto t = ParseTelemetry("t1", R"({"firmware":"2.0.0","crashCount":1,"custom":{"a":1}})", &error);
  ASSERT_TRUE(t) << error;
  EXPECT_EQ(t->firmware, "2.0.0");
  EXPECT_EQ(Json::parse(t->payload)["custom"]["a"], 1);
  EXPECT_FALSE(ParseTelemetry("t1", "[1]", &error));
  EXPECT_FALSE(ParseTelemetry("t1", "{bad", &error));
  EXPECT_FALSE(ParseTelemetry("t1", std::string(kMaxPayloadBytes + 1, ' '), &error));
}

// The topic is the identity: a payload that claims another thing is refused, one that names its
// own thing (or none) is served.
TEST(ThingIdentity, APayloadNamingAnotherThingIsRefused) {
  std::string error;
  EXPECT_FALSE(ParseTelemetry("t1", R"({"thingName":"t2","crashCount":0})", &error));
  EXPECT_EQ(error,
            "telemetry names thing \"t2\" on the topic of t1: a device may only report for itself");
  EXPECT_TRUE(ParseTelemetry("t1", R"({"thingName":"t1","crashCount":0})", &error));

  JobsRequestMessage m = Parse(kUpdate, R"({"status":"SUCCEEDED","thingName":"t2"})");
  EXPECT_EQ(Code(m), fleet::JobsError::kInvalidRequest);
  EXPECT_NE(m.rejection->message.find("a device may only speak for itself"), std::string::npos);
  EXPECT_FALSE(Parse(kUpdate, R"({"status":"SUCCEEDED","thingName":"t1"})").rejection);
  EXPECT_EQ(Code(Parse("$aws/things/t1/jobs/start-next", R"({"thingName":"t9"})")),
            fleet::JobsError::kInvalidRequest);
}

}  // namespace
}  // namespace mqtt
