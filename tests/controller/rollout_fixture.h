// The operator's view of a fleet, written with SQL into a real PostgreSQL: two cycles, an old
// completed rollout and a current one mid-way, its executions and events. Shared by the tests
// of what operators read and do (the CLI, the HTTP API and the console).
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "controller/approval_token.h"
#include "db/rollouts.h"
#include "tests/support/test_database.h"

namespace testing_support {

constexpr char kPlan[] = R"({"waves": [{"percent": 10}, {"percent": 50}, {"percent": 100}],)"
                         R"( "approval": {"beforeWaves": [3]}})";

// The fixture: cycle 1 (completed) with one completed rollout of arm 1.1.0, and cycle 2
// (running) with kCurrent, a rollout of arm 1.2.0 whose wave 1 passed, wave 2 runs and wave 3
// waits; its executions: 3 succeeded, 1 failed, 1 timed out, 1 in progress, 1 queued.
constexpr char kOld[] = "fw-arm-1.1.0-c1";
constexpr char kCurrent[] = "fw-arm-1.2.0-c2";
// The base of approval links the fixture's approvals were issued for.
constexpr char kBaseUrl[] = "http://fleetwave.example:8080";

class RolloutFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    Exec(
        "insert into fleetwave.devices (id, model, firmware, firmware_key) "
        "select 'd' || i, 'arm', '1.0.0', 'k100' from generate_series(1, 7) i");
    Exec(
        "insert into fleetwave.releases (model, version, version_key, url, sha256, size) values "
        "('arm', '1.1.0', 'k110', 'https://fw.example.com/1.1.0', repeat('c', 64), 10), "
        "('arm', '1.2.0', 'k120', 'https://fw.example.com/1.2.0', repeat('c', 64), 10)");
    Exec(
        "insert into fleetwave.cycles (state, started_at, finished_at) values "
        "('completed', now() - interval '2 hours', now() - interval '1 hour')");
    Exec("insert into fleetwave.cycles (state, started_at) values ('running', now())");
    AddRollout(kOld, 1, "1.1.0", "completed", {"passed", "passed", "passed"});
    Exec(
        "update fleetwave.rollouts set finished_at = now(), reason = 'every wave has finished' "
        "where id = '" +
        std::string(kOld) + "'");
    AddRollout(kCurrent, 2, "1.2.0", "running", {"passed", "running", "pending"});
    Exec("update fleetwave.waves set verdict = 'passed' where rollout_id = '" +
         std::string(kCurrent) + "' and wave = 1");
    Exec(
        "insert into fleetwave.job_executions (job_id, thing_name, status, wave) values "
        "('fw-arm-1.2.0-c2', 'd1', 'SUCCEEDED', 1), ('fw-arm-1.2.0-c2', 'd2', 'SUCCEEDED', 2), "
        "('fw-arm-1.2.0-c2', 'd3', 'SUCCEEDED', 2), ('fw-arm-1.2.0-c2', 'd4', 'FAILED', 2), "
        "('fw-arm-1.2.0-c2', 'd5', 'TIMED_OUT', 2), ('fw-arm-1.2.0-c2', 'd6', 'IN_PROGRESS', 2), "
        "('fw-arm-1.2.0-c2', 'd7', 'QUEUED', 2)");
    Exec(
        "insert into fleetwave.events (cycle_id, rollout_id, wave, kind, from_state, to_state, "
        "detail) values "
        "(1, null, null, 'cycle_started', null, 'running', '{\"by\": \"controller\"}'), "
        "(1, 'fw-arm-1.1.0-c1', null, 'all_waves_passed', 'running', 'completed', "
        " '{\"reason\": \"every wave has finished\"}'), "
        "(2, null, null, 'cycle_started', null, 'running', '{\"by\": \"watchdog\"}'), "
        "(2, 'fw-arm-1.2.0-c2', 1, 'wave_started', 'pending', 'running', "
        " '{\"reason\": \"wave 1 started\"}'), "
        "(2, 'fw-arm-1.2.0-c2', 1, 'gate_passed', 'soaking', 'passed', '{}'), "
        "(2, 'fw-arm-1.2.0-c2', 2, 'wave_started', 'pending', 'running', "
        " '{\"reason\": \"wave 2 started\"}')");
  }

  void Exec(const std::string& sql) {
    auto conn = database_.Connect();
    pqxx::work txn(*conn);
    txn.exec(sql);
    txn.commit();
  }
  std::string Scalar(const std::string& sql) {
    auto conn = database_.Connect();
    pqxx::read_transaction txn(*conn);
    auto f = txn.exec1(sql)[0];
    return f.is_null() ? "null" : f.as<std::string>();
  }
  int64_t Events() { return std::stoll(Scalar("select count(*) from fleetwave.events")); }
  std::string RolloutState(const std::string& id) {
    return Scalar("select state from fleetwave.rollouts where id = '" + id + "'");
  }
  std::string WaveStates(const std::string& id) {
    return Scalar(
        "select string_agg(state, ',' order by wave) from fleetwave.waves "
        "where rollout_id = '" +
        id + "'");
  }
  std::string ReleaseState(const std::string& version) {
    return Scalar("select state from fleetwave.releases where version = '" + version + "'");
  }

  // A rollout of release arm `version` in `cycle` with one wave per entry of `waves`, 2 devices
  // planned each; the current wave is the last one that is not pending.
  void AddRollout(const std::string& id, int cycle, const std::string& version,
                  const std::string& state, const std::vector<std::string>& waves) {
    int current = 0;
    for (size_t i = 0; i < waves.size(); ++i)
      if (waves[i] != "pending") current = static_cast<int>(i) + 1;
    auto conn = database_.Connect();
    pqxx::work txn(*conn);
    txn.exec_params(
        "insert into fleetwave.rollouts (id, cycle_id, release_id, state, current_wave, total, "
        "  plan) "
        "select $1, $2, id, $3, $4, $5, $6::jsonb from fleetwave.releases "
        "where model = 'arm' and version = $7",
        id, cycle, state, current, static_cast<int>(waves.size()) * 2, std::string(kPlan), version);
    for (size_t i = 0; i < waves.size(); ++i) {
      txn.exec_params(
          "insert into fleetwave.waves (rollout_id, wave, planned, state, started_at, "
          "  finished_at) "
          "values ($1, $2, 2, $3, case when $3 <> 'pending' then now() end, "
          "  case when $3 in ('passed', 'failed', 'canceled') then now() end)",
          id, static_cast<int>(i) + 1, waves[i]);
    }
    txn.commit();
  }
  // kCurrent awaiting the approval of wave 3 (wave 2 passed), as the controller asks for it: a
  // token signed with the shared secret, whose links start with kBaseUrl. Returns the token.
  std::string AwaitApproval() {
    Exec(
        "update fleetwave.waves set state = 'passed', finished_at = now() "
        "where rollout_id = 'fw-arm-1.2.0-c2' and wave = 2");
    Exec("update fleetwave.rollouts set state = 'awaiting_approval' where id = 'fw-arm-1.2.0-c2'");
    auto conn = database_.Connect();
    pqxx::work txn(*conn);
    const std::string secret =
        db::LoadOrCreateSecret(txn, db::kApprovalSecret, controller::RandomHex(32));
    const int64_t expires_at =
        txn.exec1("select extract(epoch from now())::bigint + 86400")[0].as<int64_t>();
    controller::IssuedToken t = controller::IssueApprovalToken(secret, kCurrent, 3, expires_at);
    txn.exec_params(
        "insert into fleetwave.approvals (rollout_id, wave, token_hash, nonce, base_url, "
        "  expires_at) values ($1, 3, $2, $3, $4, to_timestamp($5))",
        std::string(kCurrent), t.hash, t.nonce, std::string(kBaseUrl), expires_at);
    txn.commit();
    return t.token;
  }

  TestDatabase database_;
};

}  // namespace testing_support
