#include "mqtt/topics.h"

#include <gtest/gtest.h>

namespace mqtt {
namespace {

TEST(JobsTopics, ParsesEveryRequestKind) {
  JobsTopics t;
  auto r = t.ParseRequest("$aws/things/robot-1/jobs/get");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kind, JobsRequest::kGetPending);
  EXPECT_EQ(r->thing, "robot-1");
  r = t.ParseRequest("$aws/things/robot-1/jobs/start-next");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kind, JobsRequest::kStartNext);
  r = t.ParseRequest("$aws/things/robot-1/jobs/fw-arm-1.0.0-c1/get");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kind, JobsRequest::kDescribe);
  EXPECT_EQ(r->job_id, "fw-arm-1.0.0-c1");
  r = t.ParseRequest("$aws/things/robot-1/jobs/$next/get");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->job_id, "$next");
  r = t.ParseRequest("$aws/things/robot-1/jobs/job-7/update");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kind, JobsRequest::kUpdate);
  EXPECT_EQ(r->job_id, "job-7");
}

TEST(JobsTopics, IgnoresAnswersNoticesAndForeignTopics) {
  JobsTopics t;
  for (const char* topic :
       {"$aws/things/robot-1/jobs/get/accepted", "$aws/things/robot-1/jobs/notify-next",
        "$aws/things/robot-1/jobs/notify", "$aws/things/robot-1/jobs/j/update/rejected",
        "$aws/things//jobs/get", "$aws/things/robot-1/shadow/get", "other/robot-1/jobs/get",
        "$aws/thingsX/robot-1/jobs/get", "$aws/things/robot-1/jobs/j/delete", "$aws/things"})
    EXPECT_FALSE(t.ParseRequest(topic)) << topic;
}

TEST(JobsTopics, BuildsWhatItParses) {
  JobsTopics t("fleet/devices", "tele");
  for (RequestTopic r : {RequestTopic{JobsRequest::kGetPending, "d1", ""},
                         RequestTopic{JobsRequest::kStartNext, "d1", ""},
                         RequestTopic{JobsRequest::kDescribe, "d1", "j1"},
                         RequestTopic{JobsRequest::kUpdate, "d1", "j1"}}) {
    auto parsed = t.ParseRequest(t.Request(r));
    ASSERT_TRUE(parsed) << t.Request(r);
    EXPECT_EQ(parsed->kind, r.kind);
    EXPECT_EQ(parsed->thing, r.thing);
    EXPECT_EQ(parsed->job_id, r.job_id);
  }
  EXPECT_EQ(t.NotifyNext("d1"), "fleet/devices/d1/jobs/notify-next");
  EXPECT_EQ(t.Notify("d1"), "fleet/devices/d1/jobs/notify");
  EXPECT_EQ(JobsTopics::Accepted("x/y"), "x/y/accepted");
  EXPECT_EQ(JobsTopics::Rejected("x/y"), "x/y/rejected");
  EXPECT_EQ(t.ParseTelemetry(t.Telemetry("d1")), "d1");
  EXPECT_FALSE(t.ParseTelemetry("tele/d1/other"));
  EXPECT_FALSE(t.ParseTelemetry("tele//telemetry"));
}

TEST(JobsTopics, SubscribesToRequestsOnly) {
  JobsTopics t;
  EXPECT_EQ(t.RequestFilters(),
            (std::vector<std::string>{"$aws/things/+/jobs/get", "$aws/things/+/jobs/start-next",
                                      "$aws/things/+/jobs/+/get", "$aws/things/+/jobs/+/update"}));
  EXPECT_EQ(t.TelemetryFilter(), "fleetwave/things/+/telemetry");
}

}  // namespace
}  // namespace mqtt
