// The jobs API end to end: a real Mosquitto, a real PostgreSQL, the service, and Paho test
// devices speaking the AWS IoT Jobs MQTT API.
#include "controller/jobs_service.h"

#include <unistd.h>

#include <atomic>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "tests/support/eventually.h"
#include "tests/support/test_database.h"
#include "tests/support/test_device.h"

namespace controller {
namespace {

using Json = nlohmann::json;
using testing::HasSubstr;
using testing_support::TestDatabase;
using testing_support::TestDevice;

const std::string kJob = "fw-arm-2.0.0-c1";

class JobsServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    std::string unique = std::to_string(getpid()) + "-" + std::to_string(counter++);
    root_ = "fwtest/" + unique + "/things";
    client_id_ = "fw-controller-" + unique;
    Sql("insert into fleetwave.devices (id, model, firmware, firmware_key) values "
        "('t1','arm','1.0.0','k'), ('t2','arm','1.0.0','k'), ('t3','arm','1.0.0','k');"
        "insert into fleetwave.releases (model, version, version_key, url, sha256, size) values "
        "('arm','2.0.0','00200200~','https://fw/arm-2.0.0.bin', repeat('a',64), 1000);"
        "insert into fleetwave.cycles default values;"
        "insert into fleetwave.rollouts (id, cycle_id, release_id, job_document) "
        "select '" +
        kJob +
        "', c.id, r.id, jsonb_build_object('operation', 'firmware.update', "
        "  'release', jsonb_build_object('model', 'arm', 'version', '2.0.0')) "
        "from fleetwave.cycles c, fleetwave.releases r");
    StartService();
  }

  void StartService(std::chrono::milliseconds database_wait = std::chrono::seconds(30),
                    std::string db = "") {
    JobsServiceOptions o;
    o.db = db.empty() ? database_.conninfo() : db;
    o.mqtt_uri = testing_support::BrokerUri();
    o.client_id = client_id_;
    o.topic_root = root_;
    o.telemetry_root = root_ + "-telemetry";
    o.database_wait = database_wait;
    service_ = std::make_unique<JobsService>(o);
    service_->Start();
    ASSERT_TRUE(service_->WaitReady(std::chrono::seconds(10)));
  }

  pqxx::result Sql(const std::string& sql) {
    auto conn = database_.Connect();
    pqxx::work txn(*conn);
    pqxx::result r = txn.exec(sql);
    txn.commit();
    return r;
  }
  int64_t DbVersion(const std::string& thing) {
    return Sql("select version_number from fleetwave.job_executions where thing_name = '" + thing +
               "'")[0][0]
        .as<int64_t>();
  }
  void Queue(const std::string& thing) { service_->Queue({{kJob, thing, 1, std::nullopt}}); }
  // Polls `sql` (a count) until it is `expected` or the deadline passes; returns the last value.
  int64_t WaitForCount(const std::string& sql, int64_t expected) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    int64_t value = -1;
    while (std::chrono::steady_clock::now() < deadline) {
      if ((value = Sql(sql)[0][0].as<int64_t>()) == expected) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return value;
  }

  TestDatabase database_;
  std::string root_;
  std::string client_id_;
  std::unique_ptr<JobsService> service_;
};

TEST_F(JobsServiceTest, TheSdkSampleFlowEndToEnd) {
  TestDevice device("t1", root_);
  Queue("t1");
  auto notice = device.Notice("notify-next");
  ASSERT_TRUE(notice);
  EXPECT_EQ((*notice)["execution"]["jobId"], kJob);
  EXPECT_EQ((*notice)["execution"]["status"], "QUEUED");
  EXPECT_EQ((*notice)["execution"]["jobDocument"]["release"]["version"], "2.0.0");
  EXPECT_EQ((*notice)["execution"]["jobDocument"]["rollout"]["wave"], 1);
  auto notify = device.Notice("notify");
  ASSERT_TRUE(notify);
  EXPECT_EQ((*notify)["jobs"]["QUEUED"][0]["jobId"], kJob);

  Json started = device.Accepted(
      "jobs/start-next", {{"clientToken", "s1"}, {"statusDetails", {{"step", "accepted"}}}});
  EXPECT_EQ(started["clientToken"], "s1");
  EXPECT_EQ(started["execution"]["status"], "IN_PROGRESS");
  EXPECT_EQ(started["execution"]["versionNumber"], 2);
  EXPECT_EQ(started["execution"]["executionNumber"], 1);
  EXPECT_EQ(started["execution"]["thingName"], "t1");
  EXPECT_EQ(started["execution"]["jobDocument"]["operation"], "firmware.update");

  for (const char* step : {"downloading", "installing", "rebooting"}) {
    device.Accepted("jobs/" + kJob + "/update",
                    {{"status", "IN_PROGRESS"}, {"statusDetails", {{"step", step}}}});
  }
  Json done =
      device.Accepted("jobs/" + kJob + "/update", {{"status", "SUCCEEDED"},
                                                   {"statusDetails", {{"firmware", "2.0.0"}}},
                                                   {"includeJobExecutionState", true}});
  EXPECT_EQ(done["executionState"]["status"], "SUCCEEDED");
  EXPECT_EQ(done["executionState"]["versionNumber"], 6);
  auto empty = device.Notice("notify-next");
  ASSERT_TRUE(empty);
  EXPECT_FALSE(empty->contains("execution"));
  EXPECT_EQ(Sql("select firmware from fleetwave.devices where id = 't1'")[0][0].as<std::string>(),
            "2.0.0");
  EXPECT_EQ(
      Sql("select flagged_at is null from fleetwave.devices where id = 't1'")[0][0].as<bool>(),
      true);
  // Every notice (notify-next and notify, when queued and when done) was acknowledged by the
  // broker and left the outbox.
  EXPECT_EQ(WaitForCount("select count(*) from fleetwave.outbox", 0), 0);
}

TEST_F(JobsServiceTest, NoticesLeftUnsentBeforeACrashGoOutAgain) {
  TestDevice device("t3", root_);
  // As a crash leaves it: written with its change, never acknowledged.
  Sql("insert into fleetwave.outbox (topic, payload, created_at) values ('" + root_ +
      "/t3/jobs/notify-next', '{\"timestamp\":1}', now() - interval '1 minute')");
  auto notice = device.Notice("notify-next", std::chrono::seconds(20));
  ASSERT_TRUE(notice);
  EXPECT_EQ((*notice)["timestamp"], 1);
  EXPECT_EQ(WaitForCount("select count(*) from fleetwave.outbox", 0), 0);
}

TEST_F(JobsServiceTest, ALateDeviceFindsItsExecution) {
  Queue("t2");
  TestDevice device("t2", root_);  // connects after the notice went out
  Json pending = device.Accepted("jobs/get", {{"clientToken", "g"}});
  ASSERT_EQ(pending["queuedJobs"].size(), 1u);
  EXPECT_EQ(pending["queuedJobs"][0]["jobId"], kJob);
  EXPECT_EQ(pending["inProgressJobs"], Json::array());
  Json started = device.Accepted("jobs/start-next", Json::object());
  EXPECT_EQ(started["execution"]["jobId"], kJob);
}

TEST_F(JobsServiceTest, TheOlderSdkFlowWithNextAndUpdate) {
  Queue("t1");
  TestDevice device("t1", root_);
  Json next = device.Accepted("jobs/$next/get", Json::object());
  EXPECT_EQ(next["execution"]["status"], "QUEUED");
  EXPECT_EQ(next["execution"]["jobDocument"]["release"]["model"], "arm");
  // QUEUED -> IN_PROGRESS by update, no clientToken.
  device.Accepted("jobs/" + kJob + "/update", {{"status", "IN_PROGRESS"}});
  EXPECT_EQ(device.Accepted("jobs/$next/get", Json::object())["execution"]["status"],
            "IN_PROGRESS");
  device.Accepted("jobs/" + kJob + "/update",
                  {{"status", "FAILED"}, {"statusDetails", {{"reason", "checksum"}}}});
  Json none = device.Accepted("jobs/$next/get", Json::object());
  EXPECT_FALSE(none.contains("execution"));
  // The finished execution can still be described by id.
  Json described = device.Accepted("jobs/" + kJob + "/get", {{"includeJobDocument", false}});
  EXPECT_EQ(described["execution"]["status"], "FAILED");
  EXPECT_FALSE(described["execution"].contains("jobDocument"));
}

TEST_F(JobsServiceTest, VersionNumberArithmetic) {
  Queue("t1");
  TestDevice device("t1", root_);
  EXPECT_EQ(DbVersion("t1"), 1);
  EXPECT_EQ(device.Accepted("jobs/start-next", Json::object())["execution"]["versionNumber"], 2);
  device.Accepted("jobs/" + kJob + "/get", Json::object());  // reading changes nothing
  EXPECT_EQ(DbVersion("t1"), 2);
  Json state = device.Accepted("jobs/" + kJob + "/update", {{"status", "IN_PROGRESS"},
                                                            {"expectedVersion", 2},
                                                            {"statusDetails", {{"step", "a"}}},
                                                            {"includeJobExecutionState", true}});
  EXPECT_EQ(state["executionState"]["versionNumber"], 3);
  // The same status and details again: answered, not applied.
  device.Accepted("jobs/" + kJob + "/update",
                  {{"status", "IN_PROGRESS"}, {"statusDetails", {{"step", "a"}}}});
  EXPECT_EQ(DbVersion("t1"), 3);
  Json mismatch =
      device.Rejected("jobs/" + kJob + "/update",
                      R"({"status":"SUCCEEDED","expectedVersion":2,"clientToken":"v"})");
  EXPECT_EQ(mismatch["code"], "VersionMismatch");
  EXPECT_EQ(mismatch["clientToken"], "v");
  EXPECT_EQ(mismatch["executionState"]["versionNumber"], 3);
  EXPECT_EQ(mismatch["executionState"]["status"], "IN_PROGRESS");
  EXPECT_EQ(DbVersion("t1"), 3);
}

TEST_F(JobsServiceTest, ARetriedUpdateGetsTheSameAnswerAndChangesNothing) {
  Queue("t1");
  TestDevice device("t1", root_);
  device.Accepted("jobs/start-next", Json::object());
  Json request = {{"status", "IN_PROGRESS"},
                  {"expectedVersion", 2},
                  {"statusDetails", {{"step", "installing"}}},
                  {"includeJobExecutionState", true},
                  {"clientToken", "retry-1"}};
  Json first = device.Accepted("jobs/" + kJob + "/update", request);
  Json again = device.Accepted("jobs/" + kJob + "/update", request);
  EXPECT_EQ(first, again);  // byte for byte the same answer, timestamp included
  EXPECT_EQ(DbVersion("t1"), 3);
}

TEST_F(JobsServiceTest, EveryRejectionCodeAndNothingWritten) {
  Queue("t1");
  TestDevice device("t1", root_);
  const std::string update = "jobs/" + kJob + "/update";
  auto code = [&](const std::string& suffix, const std::string& payload) {
    return device.Rejected(suffix, payload)["code"].get<std::string>();
  };
  EXPECT_EQ(code(update, "{\"status\":"), "InvalidJson");
  EXPECT_EQ(code(update, R"({"status":"DONE","clientToken":"c1"})"), "InvalidRequest");
  EXPECT_EQ(device.Rejected(update, R"({"status":"DONE","clientToken":"c1"})")["clientToken"],
            "c1");
  EXPECT_EQ(code(update, R"({"status":"CANCELED"})"), "InvalidRequest");  // controller-only status
  EXPECT_EQ(code(update, R"({"status":123})"), "InvalidRequest");
  Json many = {{"status", "IN_PROGRESS"}, {"statusDetails", Json::object()}};
  for (int i = 0; i < 11; ++i) many["statusDetails"]["k" + std::to_string(i)] = "v";
  EXPECT_EQ(code(update, many.dump()), "InvalidRequest");
  EXPECT_EQ(code(update, R"({"status":"FAILED","pad":")" + std::string(140000, 'x') + "\"}"),
            "InvalidRequest");
  EXPECT_EQ(code("jobs/no-such-job/update", R"({"status":"FAILED"})"), "ResourceNotFound");
  EXPECT_EQ(code("jobs/no-such-job/get", "{}"), "ResourceNotFound");
  TestDevice stranger("unregistered-9", root_);
  EXPECT_EQ(stranger.Rejected("jobs/start-next", "{}")["code"], "ResourceNotFound");
  EXPECT_EQ(DbVersion("t1"), 1);  // none of the above touched the execution

  device.Accepted(update, {{"status", "SUCCEEDED"}});
  Json terminal = device.Rejected(update, R"({"status":"IN_PROGRESS"})");
  EXPECT_EQ(terminal["code"], "InvalidStateTransition");
  EXPECT_EQ(terminal["executionState"]["status"], "SUCCEEDED");
  EXPECT_EQ(DbVersion("t1"), 2);
  EXPECT_GE(service_->stats().rejected, 10u);
}

TEST_F(JobsServiceTest, RequestsOfOneDeviceKeepTheirOrderWithinABatch) {
  Queue("t1");
  TestDevice device("t1", root_);
  const std::string update = "jobs/" + kJob + "/update";
  // Sent back to back: they land in one or a few batches and must apply in order.
  device.Send("jobs/start-next", R"({"clientToken":"a"})");
  device.Send(update, R"({"status":"IN_PROGRESS","statusDetails":{"step":"1"},"clientToken":"b"})");
  device.Send(update, R"({"status":"IN_PROGRESS","statusDetails":{"step":"2"},"clientToken":"c"})");
  bool rejected = true;
  Json last = device.Request(update, R"({"status":"SUCCEEDED","clientToken":"d",
                                          "includeJobExecutionState":true})",
                             &rejected);
  EXPECT_FALSE(rejected) << last.dump();
  EXPECT_EQ(last["executionState"]["versionNumber"], 5);
  EXPECT_EQ(last["executionState"]["statusDetails"]["step"], "2");
}

TEST_F(JobsServiceTest, RequestsSentWhileTheControllerIsDownAreServedAfterItsRestart) {
  Queue("t1");
  TestDevice device("t1", root_);
  service_->Stop();
  service_.reset();
  device.Send("jobs/start-next", R"({"clientToken":"while-down"})");
  StartService();  // same client id: the broker kept the session and the request
  bool rejected = true;
  // The answer to the request sent while down arrives without asking again.
  Json answer = device.Request("jobs/get", R"({"clientToken":"after"})", &rejected);
  // Answers come in order: the start-next answer was published first, then this one.
  EXPECT_FALSE(rejected);
  EXPECT_EQ(answer["inProgressJobs"].size(), 1u) << answer.dump();
  EXPECT_EQ(DbVersion("t1"), 2);
}

TEST_F(JobsServiceTest, AFirmwareThatDisagreesIsRecordedAndFlagged) {
  Queue("t1");
  TestDevice device("t1", root_);
  device.Accepted("jobs/start-next", Json::object());
  device.Accepted("jobs/" + kJob + "/update",
                  {{"status", "SUCCEEDED"}, {"statusDetails", {{"firmware", "1.9.9"}}}});
  auto row =
      Sql("select firmware, flagged_at is not null, flag_reason from fleetwave.devices "
          "where id = 't1'")[0];
  EXPECT_EQ(row[0].as<std::string>(), "2.0.0");
  EXPECT_TRUE(row[1].as<bool>());
  EXPECT_THAT(row[2].as<std::string>(), HasSubstr("1.9.9"));
  EXPECT_EQ(
      Sql("select count(*) from fleetwave.events where kind = 'firmware_mismatch'")[0][0].as<int>(),
      1);
}

TEST_F(JobsServiceTest, TelemetryIsStoredInBatchesAndUpdatesLastSeen) {
  mqtt::ClientOptions o;
  o.server_uri = testing_support::BrokerUri();
  mqtt::Client sender(o);
  ASSERT_TRUE(sender.WaitConnected(std::chrono::seconds(10)));
  const std::string root = root_ + "-telemetry";
  for (int i = 0; i < 50; ++i)
    sender.Publish(root + "/t3/telemetry",
                   Json{{"firmware", "1.0.0"}, {"crashCount", i}, {"custom", "kept"}}.dump(), 1);
  sender.Publish(root + "/ghost/telemetry", R"({"crashCount":1})", 1);
  sender.Publish(root + "/t3/telemetry", "not json", 1);
  ASSERT_TRUE(sender.Flush(std::chrono::seconds(10)));
  // Poll the counters (a condition with a deadline): the service exposes no event for this.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (service_->stats().telemetry + service_->stats().telemetry_rejected < 52 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(service_->stats().telemetry, 50u);
  EXPECT_EQ(service_->stats().telemetry_rejected, 2u);  // the unknown thing and the bad JSON
  auto row =
      Sql("select count(*), max((payload->>'crashCount')::int), "
          "bool_and(payload->>'custom' = 'kept'), bool_and(firmware = '1.0.0') "
          "from fleetwave.telemetry where thing_name = 't3'")[0];
  EXPECT_EQ(row[0].as<int>(), 50);
  EXPECT_EQ(row[1].as<int>(), 49);
  EXPECT_TRUE(row[2].as<bool>());
  EXPECT_TRUE(row[3].as<bool>());
  EXPECT_FALSE(
      Sql("select last_seen is null from fleetwave.devices where id = 't3'")[0][0].as<bool>());
  EXPECT_LT(service_->stats().commits, 50u);  // batched, not one commit per report
}

TEST_F(JobsServiceTest, ALostDatabaseConnectionIsReopened) {
  Queue("t1");
  TestDevice device("t1", root_);
  device.Accepted("jobs/get", Json::object());
  Sql("select pg_terminate_backend(pid) from pg_stat_activity "
      "where datname = current_database() and pid <> pg_backend_pid()");
  Json started = device.Accepted("jobs/start-next", Json::object());
  EXPECT_EQ(started["execution"]["versionNumber"], 2);
}

TEST_F(JobsServiceTest, WithoutADatabaseRequestsAreAnsweredInternalError) {
  service_->Stop();
  service_.reset();
  StartService(std::chrono::milliseconds(300), "postgresql://fleetwave@127.0.0.1:1/none");
  TestDevice device("t1", root_);
  Json answer = device.Rejected("jobs/start-next", R"({"clientToken":"down"})");
  EXPECT_EQ(answer["code"], "InternalError");
  EXPECT_EQ(answer["clientToken"], "down");
  // A malformed request still gets its own code.
  EXPECT_EQ(device.Rejected("jobs/start-next", "{")["code"], "InvalidJson");
  EXPECT_GE(service_->stats().database_errors, 1u);
}

// The engine's signal to hold back new executions: device messages waiting beyond the limit.
TEST_F(JobsServiceTest, BackloggedWhileMoreRequestsWaitThanTheLimitAndNotOnceServed) {
  JobsServiceOptions o;
  o.db = database_.conninfo();
  o.mqtt_uri = testing_support::BrokerUri();
  o.client_id = client_id_ + "-backlog";
  o.topic_root = root_;
  o.telemetry_root = root_ + "-telemetry";
  o.backlog_limit = 3;
  JobsService waiting(o);  // not started: nothing serves what it receives
  ASSERT_TRUE(waiting.WaitReady(std::chrono::seconds(10)));
  EXPECT_FALSE(waiting.Backlogged());

  mqtt::ClientOptions co;
  co.server_uri = testing_support::BrokerUri();
  mqtt::Client device(co);
  ASSERT_TRUE(device.WaitConnected(std::chrono::seconds(10)));
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(device.Publish(root_ + "/t1/jobs/start-next",
                               R"({"clientToken": "c)" + std::to_string(i) + "\"}", 1));
  ASSERT_TRUE(device.Flush(std::chrono::seconds(10)));
  EXPECT_TRUE(testing_support::Eventually([&] { return waiting.Backlogged(); }))
      << "4 waiting, limit 3";
  waiting.Start();
  EXPECT_TRUE(testing_support::Eventually([&] { return !waiting.Backlogged(); }))
      << "served, nothing waits";
}

}  // namespace
}  // namespace controller
