// /metrics end to end: an engine with a real PostgreSQL and Mosquitto, test devices making
// accepted and rejected requests, and RenderMetrics showing what happened.
#include "controller/metrics_scrape.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "db/registry.h"
#include "tests/support/test_database.h"
#include "tests/support/test_device.h"

namespace controller {
namespace {

using Json = nlohmann::json;
using testing::HasSubstr;
using testing::Not;
using testing_support::TestDatabase;
using testing_support::TestDevice;
using namespace std::chrono_literals;

// The value of the sample `series` (name with its labels, as rendered) in `text`.
std::optional<double> Sample(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ')
      return std::stod(line.substr(series.size() + 1));
  }
  return std::nullopt;
}

std::string Requests(const std::string& api, const std::string& result) {
  return "fleetwave_jobs_requests_total{api=\"" + api + "\",result=\"" + result + "\"}";
}

class MetricsScrapeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    unique_ = std::to_string(getpid()) + "-" + std::to_string(counter++);
    root_ = "fwtest/" + unique_ + "/things";
    auto c = database_.Connect();
    db::Registry registry(*c);
    for (const char* id : {"d0", "d1", "d2", "d3", "d4"})
      registry.AddDevice({id, "m1", "1.0.0", "default", {}});
    registry.AddRelease({"m1", "2.0.0", "https://fw.example/m1-2.0.0.bin", std::string(64, 'a'),
                         1000, fleet::ReleaseState::kActive});
  }

  void StartEngine() {
    EngineOptions e;
    std::string error;
    auto plan = fleet::ParsePlan(
        R"({"waves": [{"percent": 100}], "soakSeconds": 0, "cycleIntervalSeconds": 3600})", &error);
    ASSERT_TRUE(plan) << error;
    e.plan = *plan;
    e.lease_ttl = 2s;
    e.reconcile_interval = 100ms;
    JobsServiceOptions o;
    o.db = database_.conninfo();
    o.mqtt_uri = testing_support::BrokerUri();
    o.client_id = "fw-metrics-" + unique_;
    o.topic_root = root_;
    o.telemetry_root = root_ + "-telemetry";
    engine_ = std::make_unique<Engine>(e, o);
    engine_->Start();
    ASSERT_TRUE(engine_->WaitServing(20s));
  }

  // Scrapes until `holds` is true of the body or 30 s pass; returns the last body.
  std::string ScrapeUntil(const std::function<bool(const std::string&)>& holds) {
    auto conn = database_.Connect();
    const auto deadline = std::chrono::steady_clock::now() + 30s;
    std::string body;
    while (std::chrono::steady_clock::now() < deadline) {
      body = RenderMetrics(*engine_, conn.get());
      if (holds(body)) break;
      std::this_thread::sleep_for(50ms);
    }
    return body;
  }

  TestDatabase database_;
  std::string unique_;
  std::string root_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(MetricsScrapeTest, RequestsHistogramsAndDatabaseGaugesShowWhatDevicesDid) {
  StartEngine();
  // Every device is queued in the one wave.
  std::string body = ScrapeUntil([](const std::string& b) {
    return Sample(b, "fleetwave_executions{status=\"QUEUED\"}") == 5;
  });
  ASSERT_EQ(Sample(body, "fleetwave_executions{status=\"QUEUED\"}"), 5) << body;
  const std::string job = "fw-m1-2.0.0-c1";

  // d0..d2 succeed, d3 starts, d4 stays queued.
  std::vector<std::unique_ptr<TestDevice>> devices;
  for (const char* id : {"d0", "d1", "d2", "d3"}) {
    devices.push_back(std::make_unique<TestDevice>(id, root_));
    Json started = devices.back()->Accepted("jobs/start-next", Json::object());
    ASSERT_EQ(started["execution"]["jobId"], job);
  }
  for (int i = 0; i < 3; ++i) {
    devices[i]->Accepted("jobs/" + job + "/update",
                         {{"status", "SUCCEEDED"}, {"statusDetails", {{"firmware", "2.0.0"}}}});
  }
  // Three rejections, each with its code.
  Json bad_json = devices[3]->Rejected("jobs/start-next", "{not json");
  EXPECT_EQ(bad_json["code"], "InvalidJson");
  Json mismatch = devices[3]->Rejected(
      "jobs/" + job + "/update",
      R"({"status": "IN_PROGRESS", "statusDetails": {"step": "x"}, "expectedVersion": 99})");
  EXPECT_EQ(mismatch["code"], "VersionMismatch");
  Json unknown = devices[3]->Rejected("jobs/no-such-job/get", "{}");
  EXPECT_EQ(unknown["code"], "ResourceNotFound");

  // A request is counted before its answer is published: the counts are final already.
  auto conn = database_.Connect();
  body = RenderMetrics(*engine_, conn.get());
  EXPECT_EQ(Sample(body, Requests("start-next", "accepted")), 4) << body;
  EXPECT_EQ(Sample(body, Requests("update", "accepted")), 3) << body;
  EXPECT_EQ(Sample(body, Requests("start-next", "rejected:InvalidJson")), 1) << body;
  EXPECT_EQ(Sample(body, Requests("update", "rejected:VersionMismatch")), 1) << body;
  EXPECT_EQ(Sample(body, Requests("describe", "rejected:ResourceNotFound")), 1) << body;
  EXPECT_EQ(Sample(body, Requests("get", "accepted")), 0) << body;  // pre-resolved: shown at 0
  EXPECT_EQ(Sample(body, Requests("update", "rejected:TerminalStateReached")), 0) << body;
  // Ten requests in some number of batches, each batch one commit.
  EXPECT_EQ(Sample(body, "fleetwave_jobs_batch_requests_sum"), 10) << body;
  EXPECT_GE(Sample(body, "fleetwave_jobs_batch_requests_count").value_or(0), 1) << body;
  EXPECT_LE(Sample(body, "fleetwave_jobs_batch_requests_count").value_or(99), 10) << body;
  EXPECT_GE(Sample(body, "fleetwave_jobs_commit_seconds_count").value_or(0), 1) << body;
  EXPECT_EQ(Sample(body, "fleetwave_jobs_commit_seconds_bucket{le=\"+Inf\"}"),
            Sample(body, "fleetwave_jobs_commit_seconds_count"))
      << body;
  EXPECT_EQ(Sample(body, "fleetwave_database_errors_total"), 0) << body;
  EXPECT_EQ(Sample(body, "fleetwave_answers_dropped_total"), 0) << body;
  EXPECT_EQ(Sample(body, "fleetwave_inbound_dropped_total"), 0) << body;
  // The engine's stats are the same numbers.
  EXPECT_EQ(Sample(body, "fleetwave_leader"), 1) << body;
  EXPECT_GE(Sample(body, "fleetwave_leader_epoch").value_or(0), 1) << body;
  EXPECT_EQ(Sample(body, "fleetwave_leaderships_total"), 1) << body;
  EXPECT_GE(Sample(body, "fleetwave_state_changes_total{object=\"wave\"}").value_or(0), 1) << body;

  // The database gauges: the executions by status, the rollout, its wave, the outbox.
  body = ScrapeUntil([](const std::string& b) {
    return Sample(b, "fleetwave_executions{status=\"SUCCEEDED\"}") == 3 &&
           Sample(b, "fleetwave_notices_sent_total").value_or(0) >= 10 &&
           Sample(b, "fleetwave_outbox_unsent") == 0;
  });
  EXPECT_EQ(Sample(body, "fleetwave_database_up"), 1) << body;
  EXPECT_EQ(Sample(body, "fleetwave_executions{status=\"SUCCEEDED\"}"), 3) << body;
  EXPECT_EQ(Sample(body, "fleetwave_executions{status=\"IN_PROGRESS\"}"), 1) << body;
  EXPECT_EQ(Sample(body, "fleetwave_executions{status=\"QUEUED\"}"), 1) << body;
  EXPECT_EQ(Sample(body, "fleetwave_executions{status=\"FAILED\"}"), 0) << body;
  EXPECT_EQ(Sample(body, "fleetwave_rollouts{state=\"running\"}"), 1) << body;
  EXPECT_EQ(Sample(body, "fleetwave_rollouts{state=\"completed\"}"), 0) << body;
  EXPECT_EQ(Sample(body, "fleetwave_waves{state=\"pending\"}"), 0) << body;
  EXPECT_EQ(Sample(body, "fleetwave_current_cycle"), 1) << body;
  EXPECT_EQ(Sample(body, "fleetwave_running_cycle"), 1) << body;
  EXPECT_EQ(Sample(body, "fleetwave_outbox_unsent"), 0) << body;
  // Every queued device got notify-next and notify (the relay confirmed them).
  EXPECT_GE(Sample(body, "fleetwave_notices_sent_total").value_or(0), 10) << body;
  EXPECT_GE(Sample(body, "fleetwave_reconcile_passes_total").value_or(0), 1) << body;
  EXPECT_THAT(body, HasSubstr("# TYPE fleetwave_jobs_commit_seconds histogram\n"));
  EXPECT_THAT(body, HasSubstr("# TYPE fleetwave_executions gauge\n"));

  // The engine's own stats read the same counters.
  EXPECT_EQ(engine_->stats().leaderships, 1u);
  EXPECT_TRUE(engine_->leading());
}

TEST_F(MetricsScrapeTest, WithoutADatabaseTheGaugesAreLeftOutAndDatabaseUpIsZero) {
  StartEngine();
  std::string body = RenderMetrics(*engine_, nullptr);
  EXPECT_EQ(Sample(body, "fleetwave_database_up"), 0) << body;
  EXPECT_THAT(body, Not(HasSubstr("fleetwave_executions")));
  EXPECT_THAT(body, HasSubstr("fleetwave_jobs_requests_total"));  // the counters are still there

  // A database without the schema: the query fails, nothing throws.
  TestDatabase bare(/*migrate=*/false);
  auto conn = bare.Connect();
  body = RenderMetrics(*engine_, conn.get());
  EXPECT_EQ(Sample(body, "fleetwave_database_up"), 0) << body;
  EXPECT_THAT(body, Not(HasSubstr("fleetwave_rollouts")));

  // And the same connection serves a good scrape once the schema exists... on the real one.
  auto good = database_.Connect();
  EXPECT_EQ(Sample(RenderMetrics(*engine_, good.get()), "fleetwave_database_up"), 1);
}

}  // namespace
}  // namespace controller
