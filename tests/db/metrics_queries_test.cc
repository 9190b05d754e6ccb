#include "db/metrics_queries.h"

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "tests/support/test_database.h"

namespace db {
namespace {

using testing_support::TestDatabase;

class MetricsQueriesTest : public ::testing::Test {
 protected:
  void Sql(const std::string& sql) {
    auto conn = database_.Connect();
    pqxx::work txn(*conn);
    txn.exec(sql);
    txn.commit();
  }
  TestDatabase database_;
};

TEST_F(MetricsQueriesTest, AnEmptyDatabaseHasEveryStateAtZero) {
  auto conn = database_.Connect();
  MetricsSnapshot s = ReadMetrics(*conn);
  EXPECT_EQ(s.running_cycle, 0);
  EXPECT_EQ(s.current_cycle, 0);
  EXPECT_EQ(s.outbox_unsent, 0);
  EXPECT_EQ(s.executions.size(), 8u);
  EXPECT_EQ(s.executions.at("TIMED_OUT"), 0);
  EXPECT_EQ(s.rollouts.size(), 6u);
  EXPECT_EQ(s.rollouts.at("awaiting_approval"), 0);
  EXPECT_EQ(s.waves.size(), 6u);
  EXPECT_EQ(s.waves.at("soaking"), 0);
}

// Only the newest cycle with rollouts is counted: a million executions of past cycles cost
// nothing at scrape time.
TEST_F(MetricsQueriesTest, CountsTheCurrentCyclesRolloutsWavesAndExecutions) {
  Sql("insert into fleetwave.devices (id, model, firmware, firmware_key) "
      "select 't' || i, 'arm', '1.0.0', 'k' from generate_series(1, 6) i;"
      "insert into fleetwave.releases (model, version, version_key, url, sha256, size) values "
      "('arm','2.0.0','k2','https://fw/a', repeat('a',64), 1),"
      "('arm','3.0.0','k3','https://fw/b', repeat('b',64), 1);"
      // Cycle 1 completed with its rollout; cycle 2 runs with two.
      "insert into fleetwave.cycles (state, finished_at) values ('completed', now());"
      "insert into fleetwave.cycles default values;"
      "insert into fleetwave.rollouts (id, cycle_id, release_id, state) values "
      "('old', 1, 1, 'completed'), ('a', 2, 1, 'running'), ('b', 2, 2, 'paused');"
      "insert into fleetwave.waves (rollout_id, wave, planned, state) values "
      "('old', 1, 6, 'passed'), ('a', 1, 2, 'passed'), ('a', 2, 2, 'running'),"
      "('b', 1, 1, 'failed'), ('b', 2, 1, 'pending');"
      "insert into fleetwave.job_executions (job_id, thing_name, wave, status) "
      "select 'old', 't' || i, 1, 'SUCCEEDED' from generate_series(1, 6) i;"
      "insert into fleetwave.job_executions (job_id, thing_name, wave, status) values "
      "('a', 't1', 1, 'SUCCEEDED'), ('a', 't2', 1, 'SUCCEEDED'), ('a', 't3', 2, 'IN_PROGRESS'),"
      "('a', 't4', 2, 'QUEUED'), ('b', 't5', 1, 'FAILED');"
      "insert into fleetwave.outbox (topic, payload, sent_at) values "
      "('x', '{}', null), ('y', '{}', null), ('z', '{}', now());"
      "update fleetwave.cycles set heartbeat_at = now() - interval '90 seconds' where id = 2");
  auto conn = database_.Connect();
  MetricsSnapshot s = ReadMetrics(*conn);
  EXPECT_EQ(s.running_cycle, 2);
  EXPECT_EQ(s.current_cycle, 2);
  EXPECT_NEAR(s.heartbeat_age_seconds, 90, 5);
  EXPECT_EQ(s.executions.at("SUCCEEDED"), 2);  // not the old cycle's six
  EXPECT_EQ(s.executions.at("IN_PROGRESS"), 1);
  EXPECT_EQ(s.executions.at("QUEUED"), 1);
  EXPECT_EQ(s.executions.at("FAILED"), 1);
  EXPECT_EQ(s.executions.at("CANCELED"), 0);
  EXPECT_EQ(s.rollouts.at("running"), 1);
  EXPECT_EQ(s.rollouts.at("paused"), 1);
  EXPECT_EQ(s.rollouts.at("completed"), 0);
  EXPECT_EQ(s.waves.at("passed"), 1);
  EXPECT_EQ(s.waves.at("running"), 1);
  EXPECT_EQ(s.waves.at("failed"), 1);
  EXPECT_EQ(s.waves.at("pending"), 1);
  EXPECT_EQ(s.outbox_unsent, 2);

  // Once cycle 2 completes and cycle 3 waits to plan, cycle 2 stays the one counted.
  Sql("update fleetwave.cycles set state = 'completed', finished_at = now() where id = 2;"
      "insert into fleetwave.cycles default values");
  s = ReadMetrics(*conn);
  EXPECT_EQ(s.running_cycle, 3);
  EXPECT_EQ(s.current_cycle, 2);
  EXPECT_EQ(s.executions.at("SUCCEEDED"), 2);
}

TEST_F(MetricsQueriesTest, AFailingQueryThrowsDbError) {
  TestDatabase bare(/*migrate=*/false);
  auto conn = bare.Connect();
  EXPECT_THROW(ReadMetrics(*conn), Error);
}

}  // namespace
}  // namespace db
