// `fleetwave rollout ...` and `fleetwave history`, run as an operator runs them, against a real
// PostgreSQL whose cycles, rollouts, waves, executions, approvals and events are written with SQL.
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "tests/controller/rollout_fixture.h"
#include "tests/support/process.h"
#include "tests/support/test_database.h"

namespace {

using Json = nlohmann::json;
using testing::HasSubstr;
using testing::Not;
using testing_support::FleetwaveBinary;
using testing_support::kBaseUrl;
using testing_support::kCurrent;
using testing_support::kOld;
using testing_support::kPlan;
using testing_support::ProcessResult;
using testing_support::RolloutFixture;
using testing_support::RunProcess;
using testing_support::TestDatabase;

class RolloutCliTest : public RolloutFixture {
 protected:
  ProcessResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), FleetwaveBinary());
    return RunProcess(args, {{"FLEETWAVE_DB", database_.conninfo()}, {"USER", "tester"}});
  }
  std::string Ok(const std::vector<std::string>& args) {
    ProcessResult r = Run(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out;
  }
  Json OkJson(const std::vector<std::string>& args) {
    std::string out = Ok(args);
    Json j = Json::parse(out, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(j.is_discarded()) << out;
    return j;
  }
  // Runs and expects exit `code` with every part in the error message.
  void Fails(int code, const std::vector<std::string>& args,
             std::initializer_list<const char*> parts) {
    ProcessResult r = Run(args);
    EXPECT_EQ(r.exit_code, code) << r.out << r.err;
    for (const char* p : parts) EXPECT_THAT(r.err, HasSubstr(p));
  }
};

TEST_F(RolloutCliTest, EveryCommandHasHelpWithAnExample) {
  for (std::vector<std::string> cmd : {std::vector<std::string>{"rollout"},
                                       {"rollout", "list"},
                                       {"rollout", "show"},
                                       {"rollout", "pause"},
                                       {"rollout", "resume"},
                                       {"rollout", "abort"},
                                       {"rollout", "approve"},
                                       {"rollout", "deny"},
                                       {"history"}}) {
    const std::string name = cmd[0];
    cmd.push_back("--help");
    ProcessResult r = Run(cmd);
    EXPECT_EQ(r.exit_code, 0) << cmd[1];
    EXPECT_THAT(r.out, HasSubstr("Example:\n  fleetwave " + name)) << cmd[1];
  }
  EXPECT_THAT(Ok({"rollout", "pause", "--help"}), HasSubstr("within one reconcile pass"));
}

TEST_F(RolloutCliTest, ListShowsEachRolloutNewestCycleFirst) {
  std::string out = Ok({"rollout", "list"});
  EXPECT_THAT(out, HasSubstr("ROLLOUT"));
  const size_t current = out.find(kCurrent), old = out.find(kOld);
  ASSERT_NE(current, std::string::npos) << out;
  ASSERT_NE(old, std::string::npos) << out;
  EXPECT_LT(current, old);
  const std::string line = out.substr(current, out.find('\n', current) - current);
  EXPECT_THAT(line,
              testing::MatchesRegex("fw-arm-1.2.0-c2 +2 +arm +1.2.0 +running +2/3 +6 +3 +1 +1"));

  Json json = OkJson({"rollout", "list", "--json"});
  ASSERT_EQ(json.size(), 2u);
  EXPECT_EQ(json[0]["id"], kCurrent);
  EXPECT_EQ(json[0]["cycle"], 2);
  EXPECT_EQ(json[0]["model"], "arm");
  EXPECT_EQ(json[0]["version"], "1.2.0");
  EXPECT_EQ(json[0]["state"], "running");
  EXPECT_EQ(json[0]["currentWave"], 2);
  EXPECT_EQ(json[0]["waveCount"], 3);
  EXPECT_EQ(json[0]["total"], 6);
  EXPECT_EQ(json[0]["executions"], (Json{{"queued", 1},
                                         {"inProgress", 1},
                                         {"succeeded", 3},
                                         {"failed", 1},
                                         {"rejected", 0},
                                         {"timedOut", 1},
                                         {"canceled", 0}}));
  EXPECT_TRUE(json[0]["finishedAt"].is_null());
  EXPECT_EQ(json[1]["id"], kOld);
  EXPECT_EQ(json[1]["reason"], "every wave has finished");
  EXPECT_THAT(json[1]["finishedAt"].get<std::string>(), testing::MatchesRegex(".*T.*Z"));

  json = OkJson({"rollout", "list", "--cycle", "1", "--json"});
  ASSERT_EQ(json.size(), 1u);
  EXPECT_EQ(json[0]["id"], kOld);
  EXPECT_EQ(OkJson({"rollout", "list", "--cycle", "9", "--json"}), Json::array());
  EXPECT_THAT(Ok({"rollout", "list", "--cycle", "1"}), Not(HasSubstr(kCurrent)));
}

TEST_F(RolloutCliTest, ShowPrintsThePlanWavesAndPendingApprovals) {
  std::string out = Ok({"rollout", "show", kCurrent});
  EXPECT_THAT(out, HasSubstr("release:    arm 1.2.0 (active)"));
  EXPECT_THAT(out, HasSubstr("state:      running"));
  EXPECT_THAT(out, HasSubstr("wave:       2 of 3"));
  EXPECT_THAT(out, HasSubstr("6 targeted: 1 queued, 1 in progress, 3 succeeded, 1 failed"));
  EXPECT_THAT(out, HasSubstr("\"beforeWaves\":[3]"));
  EXPECT_THAT(out, testing::ContainsRegex("\n1 +2 +passed +0 +0 +1 +0 +0 +0 +0 +passed "));
  EXPECT_THAT(out, testing::ContainsRegex("\n2 +2 +running +1 +1 +2 +1 +0 +1 +0 +- "));
  EXPECT_THAT(out, testing::ContainsRegex("\n3 +2 +pending .* - +- +-\n"));
  EXPECT_THAT(out, Not(HasSubstr("pending approvals")));

  Json json = OkJson({"rollout", "show", kCurrent, "--json"});
  EXPECT_EQ(json["id"], kCurrent);
  EXPECT_EQ(json["releaseState"], "active");
  EXPECT_EQ(json["plan"], Json::parse(kPlan));
  ASSERT_EQ(json["waves"].size(), 3u);
  EXPECT_EQ(json["waves"][0]["verdict"], "passed");
  EXPECT_EQ(json["waves"][1]["state"], "running");
  EXPECT_EQ(json["waves"][1]["executions"]["succeeded"], 2);
  EXPECT_EQ(json["waves"][1]["executions"]["timedOut"], 1);
  EXPECT_TRUE(json["waves"][1]["finishedAt"].is_null());
  EXPECT_TRUE(json["waves"][1]["startedAt"].is_string());
  EXPECT_TRUE(json["waves"][2]["startedAt"].is_null());
  EXPECT_EQ(json["pendingApprovals"], Json::array());

  const std::string token = AwaitApproval();
  const std::string page = std::string(kBaseUrl) + "/approvals/" + token;
  out = Ok({"rollout", "show", kCurrent});
  EXPECT_THAT(out, HasSubstr("state:      awaiting_approval"));
  EXPECT_THAT(out, HasSubstr("pending approvals:\n  wave 3: requested "));
  EXPECT_THAT(out, HasSubstr("    open " + page + " to decide\n"));
  EXPECT_THAT(out, HasSubstr("fleetwave rollout approve fw-arm-1.2.0-c2"));
  json = OkJson({"rollout", "show", kCurrent, "--json"});
  ASSERT_EQ(json["pendingApprovals"].size(), 1u);
  EXPECT_EQ(json["pendingApprovals"][0]["wave"], 3);
  EXPECT_EQ(json["pendingApprovals"][0]["links"],
            (Json{{"page", page}, {"approve", page + "/approve"}, {"deny", page + "/deny"}}));
  EXPECT_EQ(json["pendingApprovals"][0]["expired"], false);
  EXPECT_TRUE(json["pendingApprovals"][0]["expiresAt"].is_string());
}

TEST_F(RolloutCliTest, PauseOfARunningRolloutIsRecordedWithTheActor) {
  const int64_t before = Events();
  EXPECT_EQ(Ok({"rollout", "pause", kCurrent}), "rollout fw-arm-1.2.0-c2: paused (was running)\n");
  EXPECT_EQ(RolloutState(kCurrent), "paused");
  EXPECT_EQ(WaveStates(kCurrent), "passed,running,pending");  // the wave under way goes on
  EXPECT_EQ(Events(), before + 1);
  EXPECT_EQ(Scalar("select concat_ws(' ', cycle_id, rollout_id, coalesce(wave::text, '-'), kind, "
                   "from_state, to_state, detail->>'actor') from fleetwave.events "
                   "order by id desc limit 1"),
            "2 fw-arm-1.2.0-c2 - operator_pause running paused cli:tester");
}

TEST_F(RolloutCliTest, PauseOfAPausedRolloutIsRefusedAndChangesNothing) {
  Ok({"rollout", "pause", kCurrent});
  const int64_t before = Events();
  Fails(1, {"rollout", "pause", kCurrent},
        {"rollout fw-arm-1.2.0-c2 is paused", "running or awaiting_approval"});
  EXPECT_EQ(Events(), before);
  EXPECT_EQ(RolloutState(kCurrent), "paused");
}

TEST_F(RolloutCliTest, ResumeOfAPausedRollout) {
  Fails(1, {"rollout", "resume", kCurrent}, {"is running", "paused"});
  Ok({"rollout", "pause", kCurrent});
  EXPECT_EQ(Ok({"rollout", "resume", kCurrent}), "rollout fw-arm-1.2.0-c2: running (was paused)\n");
  EXPECT_EQ(RolloutState(kCurrent), "running");
  EXPECT_EQ(Scalar("select kind || ' ' || (detail->>'actor') from fleetwave.events "
                   "order by id desc limit 1"),
            "operator_resume cli:tester");
}

TEST_F(RolloutCliTest, ResumeAfterAGatePauseAcceptsTheFailedWave) {
  Exec(
      "update fleetwave.waves set state = 'failed', verdict = 'failed', finished_at = now() "
      "where rollout_id = 'fw-arm-1.2.0-c2' and wave = 2");
  Exec("update fleetwave.rollouts set state = 'paused' where id = 'fw-arm-1.2.0-c2'");
  Ok({"rollout", "resume", kCurrent});
  EXPECT_EQ(Scalar("select gate_from_wave from fleetwave.rollouts where id = 'fw-arm-1.2.0-c2'"),
            "3");
  EXPECT_EQ(WaveStates(kCurrent), "passed,failed,pending");
}

TEST_F(RolloutCliTest, AbortCancelsUnfinishedWavesAndHaltsTheRelease) {
  const int64_t before = Events();
  std::string out = Ok({"rollout", "abort", kCurrent});
  EXPECT_THAT(out, HasSubstr("rollout fw-arm-1.2.0-c2: aborted (was running)\n"));
  EXPECT_THAT(out, HasSubstr("  wave 2: canceled (was running)\n"));
  EXPECT_THAT(out, HasSubstr("  wave 3: canceled (was pending)\n"));
  EXPECT_THAT(out, HasSubstr("  release arm 1.2.0: halted (was active)"));
  EXPECT_THAT(out, HasSubstr("fleetwave release resume --model arm --version 1.2.0"));
  EXPECT_EQ(RolloutState(kCurrent), "aborted");
  EXPECT_EQ(WaveStates(kCurrent), "passed,canceled,canceled");
  EXPECT_EQ(ReleaseState("1.2.0"), "halted");
  EXPECT_EQ(Scalar("select finished_at is not null from fleetwave.rollouts "
                   "where id = 'fw-arm-1.2.0-c2'"),
            "t");
  EXPECT_EQ(Events(), before + 4);
  // (db::WriteChanges records release_halted before operator_abort; the order is not the point.)
  EXPECT_EQ(Scalar("select string_agg(concat_ws(':', kind, wave, from_state, to_state, "
                   "detail->>'actor'), ' ' order by kind, wave) from fleetwave.events where id > " +
                   std::to_string(before)),  // the fixture's ids are 1..before
            "operator_abort:running:aborted:cli:tester release_halted:active:halted:cli:tester "
            "wave_canceled:2:running:canceled:cli:tester "
            "wave_canceled:3:pending:canceled:cli:tester");
  Fails(1, {"rollout", "abort", kCurrent}, {"is aborted"});
  EXPECT_EQ(Events(), before + 4);
}

TEST_F(RolloutCliTest, ApproveGrantsThePendingApproval) {
  AwaitApproval();
  std::string out = Ok({"rollout", "approve", kCurrent});
  EXPECT_THAT(out, HasSubstr("rollout fw-arm-1.2.0-c2: running (was awaiting_approval)\n"));
  EXPECT_THAT(out, HasSubstr("  approval of wave 3: approved\n"));
  EXPECT_EQ(RolloutState(kCurrent), "running");
  EXPECT_EQ(Scalar("select state || ' ' || decided_by || ' ' || (decided_at is not null) "
                   "from fleetwave.approvals"),
            "approved cli:tester true");
  EXPECT_EQ(Scalar("select string_agg(kind, ' ' order by id) from fleetwave.events "
                   "where kind in ('approved', 'approval_granted')"),
            "approval_granted approved");
  EXPECT_THAT(Ok({"rollout", "show", kCurrent}), Not(HasSubstr("pending approvals")));
}

TEST_F(RolloutCliTest, ApproveOfARolloutNotAwaitingApprovalIsRefused) {
  const int64_t before = Events();
  Fails(1, {"rollout", "approve", kCurrent}, {"is running", "awaiting_approval"});
  Fails(1, {"rollout", "deny", kCurrent}, {"is running", "awaiting_approval"});
  EXPECT_EQ(Events(), before);
  EXPECT_EQ(RolloutState(kCurrent), "running");
}

TEST_F(RolloutCliTest, ApproveWithoutAPendingApprovalIsRefused) {
  AwaitApproval();
  Exec("update fleetwave.approvals set state = 'expired'");
  const int64_t before = Events();
  Fails(1, {"rollout", "approve", kCurrent}, {"no unexpired approval"});
  EXPECT_EQ(Events(), before);
  EXPECT_EQ(RolloutState(kCurrent), "awaiting_approval");
}

TEST_F(RolloutCliTest, DenyAbortsTheRollout) {
  AwaitApproval();
  std::string out = Ok({"rollout", "deny", kCurrent});
  EXPECT_THAT(out, HasSubstr("rollout fw-arm-1.2.0-c2: aborted (was awaiting_approval)\n"));
  EXPECT_THAT(out, HasSubstr("  approval of wave 3: denied\n"));
  EXPECT_THAT(out, HasSubstr("  wave 3: canceled (was pending)\n"));
  EXPECT_EQ(RolloutState(kCurrent), "aborted");
  EXPECT_EQ(WaveStates(kCurrent), "passed,passed,canceled");
  EXPECT_EQ(ReleaseState("1.2.0"), "halted");
  EXPECT_EQ(Scalar("select state || ' ' || decided_by from fleetwave.approvals"),
            "denied cli:tester");
}

TEST_F(RolloutCliTest, UnknownRolloutIsARuntimeError) {
  for (const char* cmd : {"show", "pause", "resume", "abort", "approve", "deny"})
    Fails(1, {"rollout", cmd, "fw-nope-c9"}, {"no rollout fw-nope-c9"});
  Fails(1, {"history", "--rollout", "fw-nope-c9"}, {"no rollout fw-nope-c9"});
  Fails(1, {"history", "--cycle", "9"}, {"no cycle 9"});
}

TEST_F(RolloutCliTest, HistoryDefaultsToTheLatestCycle) {
  std::string out = Ok({"history"});
  EXPECT_THAT(out, HasSubstr("cycle 2, the latest"));
  EXPECT_THAT(out, HasSubstr("by watchdog"));
  EXPECT_THAT(out, HasSubstr("wave 2 started"));
  EXPECT_THAT(out, testing::ContainsRegex(
                       "\n[0-9-]+T[0-9:]+Z +2 +fw-arm-1.2.0-c2 +2 +wave_started +pending → running "
                       "+wave 2 started\n"));
  EXPECT_THAT(out, Not(HasSubstr(kOld)));
  // In id order.
  EXPECT_LT(out.find("wave 1 started"), out.find("wave 2 started"));

  Ok({"rollout", "pause", kCurrent});
  EXPECT_THAT(Ok({"history"}), testing::ContainsRegex("operator_pause +running → paused +pause by "
                                                      "cli:tester\n$"));
}

TEST_F(RolloutCliTest, HistoryOfACycleOrARollout) {
  std::string out = Ok({"history", "--cycle", "1"});
  EXPECT_THAT(out, HasSubstr(kOld));
  EXPECT_THAT(out, HasSubstr("by controller"));
  EXPECT_THAT(out, Not(HasSubstr(kCurrent)));

  Json json = OkJson({"history", "--rollout", kCurrent, "--json"});
  ASSERT_EQ(json.size(), 3u);
  for (const auto& e : json) EXPECT_EQ(e["rollout"], kCurrent);
  EXPECT_EQ(json[0]["kind"], "wave_started");
  EXPECT_EQ(json[0]["cycle"], 2);
  EXPECT_EQ(json[0]["wave"], 1);
  EXPECT_EQ(json[0]["from"], "pending");
  EXPECT_EQ(json[0]["to"], "running");
  EXPECT_EQ(json[0]["detail"], (Json{{"reason", "wave 1 started"}}));
  EXPECT_THAT(json[0]["at"].get<std::string>(),
              testing::MatchesRegex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z"));
  EXPECT_LT(json[0]["id"].get<int64_t>(), json[1]["id"].get<int64_t>());
  EXPECT_EQ(json[2]["detail"]["reason"], "wave 2 started");

  json = OkJson({"history", "--json"});
  ASSERT_EQ(json.size(), 4u);
  EXPECT_EQ(json[0]["kind"], "cycle_started");
  EXPECT_TRUE(json[0]["rollout"].is_null());
  EXPECT_TRUE(json[0]["wave"].is_null());
  EXPECT_TRUE(json[0]["from"].is_null());
  EXPECT_EQ(json[0]["detail"]["by"], "watchdog");

  // --limit keeps the last N, still in id order; --cycle and --rollout together match both.
  json = OkJson({"history", "--cycle", "2", "--limit", "2", "--json"});
  ASSERT_EQ(json.size(), 2u);
  EXPECT_EQ(json[0]["kind"], "gate_passed");
  EXPECT_EQ(json[1]["kind"], "wave_started");
  EXPECT_EQ(OkJson({"history", "--cycle", "1", "--rollout", kCurrent, "--json"}), Json::array());
}

TEST_F(RolloutCliTest, HistoryWithoutAnyCycle) {
  TestDatabase empty;
  ProcessResult r =
      RunProcess({FleetwaveBinary(), "history"}, {{"FLEETWAVE_DB", empty.conninfo()}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("no cycle has started yet"));
  r = RunProcess({FleetwaveBinary(), "history", "--json"}, {{"FLEETWAVE_DB", empty.conninfo()}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(Json::parse(r.out), Json::array());
}

TEST_F(RolloutCliTest, BadFlagsAreUsageErrors) {
  const int64_t before = Events();
  Fails(2, {"history", "--cycle", "abc"}, {"--cycle \"abc\"", "positive integer"});
  Fails(2, {"history", "--cycle", "0"}, {"--cycle \"0\"", "positive integer"});
  Fails(2, {"history", "--cycle=-1"}, {"--cycle \"-1\"", "positive integer"});
  Fails(2, {"history", "--cycle", "1.5"}, {"--cycle \"1.5\""});
  Fails(2, {"history", "--cycle", "99999999999999999999"}, {"--cycle"});
  Fails(2, {"history", "--limit", "0"}, {"--limit \"0\""});
  Fails(2, {"history", "--cycle", ""}, {"--cycle \"\""});
  Fails(2, {"history", "--rollout", ""}, {"rollout id \"\""});
  Fails(2, {"history", "--cycle"}, {"--cycle"});
  Fails(2, {"history", "--rollout", "a/b"}, {"rollout id \"a/b\""});
  Fails(2, {"history", "--frobnicate"}, {"--frobnicate"});
  Fails(2, {"rollout", "list", "--cycle", "x"}, {"--cycle \"x\""});
  Fails(2, {"rollout"}, {"fleetwave rollout --help"});
  Fails(2, {"rollout", "frobnicate"}, {"fleetwave rollout --help"});
  Fails(2, {"rollout", "pause"}, {"rollout"});
  Fails(2, {"rollout", "show", "a/b"}, {"rollout id \"a/b\""});
  Fails(2, {"rollout", "abort", std::string(65, 'x')}, {"rollout id"});
  EXPECT_EQ(Events(), before);
  EXPECT_EQ(RolloutState(kCurrent), "running");
}

}  // namespace

// ---- fleetwave status, watch ------------------------------------------------------------------

TEST_F(RolloutCliTest, StatusShowsTheCycleLeaderRolloutsWavesAndApprovalLinks) {
  Exec(
      "insert into fleetwave.leases (name, holder, epoch, expires_at) "
      "values ('controller', 'host-a:123', 4, now() + interval '10 seconds')");
  const std::string token = AwaitApproval();
  const std::string out = Ok({"status"});
  EXPECT_THAT(out, HasSubstr("cycle 2: running since "));
  EXPECT_THAT(out, HasSubstr("leader: host-a:123 (epoch 4), heartbeat "));
  EXPECT_THAT(out, HasSubstr("rollout fw-arm-1.2.0-c2  arm 1.2.0  awaiting_approval  wave 2 of 3"));
  EXPECT_THAT(out, Not(HasSubstr(kOld)));  // only the cycle's rollouts
  // Wave 2: planned 2; 2 succeeded, 1 failed, 1 timed out, 1 in progress, 1 queued.
  EXPECT_THAT(out, testing::ContainsRegex("  2 +passed +2 +1 +1 +2 +1 +0 +1 +0  -"));
  EXPECT_THAT(out, HasSubstr("wave 3 awaits approval (expires "));
  EXPECT_THAT(out, HasSubstr(": open " + std::string(kBaseUrl) + "/approvals/" + token +
                             " to approve or deny it; or `fleetwave rollout approve|deny "
                             "fw-arm-1.2.0-c2`\n"));
}

TEST_F(RolloutCliTest, StatusJsonHasTheDocumentedSchema) {
  Exec(
      "insert into fleetwave.leases (name, holder, epoch, expires_at) "
      "values ('controller', 'host-a:123', 4, now() - interval '1 second')");
  const std::string token = AwaitApproval();
  Json j = OkJson({"status", "--json"});
  EXPECT_EQ(j["schema"], 1);
  EXPECT_TRUE(j["now"].is_string());
  EXPECT_EQ(j["cycle"]["id"], 2);
  EXPECT_EQ(j["cycle"]["state"], "running");
  EXPECT_EQ(j["cycle"]["rolloutCount"], 1);
  EXPECT_EQ(j["leader"]["holder"], "host-a:123");
  EXPECT_EQ(j["leader"]["epoch"], 4);
  EXPECT_EQ(j["leader"]["expired"], true);
  ASSERT_EQ(j["rollouts"].size(), 1u);
  const Json& r = j["rollouts"][0];
  EXPECT_EQ(r["id"], kCurrent);
  EXPECT_EQ(r["state"], "awaiting_approval");
  ASSERT_EQ(r["waves"].size(), 3u);
  EXPECT_EQ(r["waves"][0]["verdict"], "passed");
  EXPECT_EQ(r["waves"][1]["executions"]["succeeded"], 2);
  EXPECT_EQ(r["waves"][2]["state"], "pending");
  ASSERT_EQ(j["pendingApprovals"].size(), 1u);
  EXPECT_EQ(j["pendingApprovals"][0]["rollout"], kCurrent);
  EXPECT_EQ(j["pendingApprovals"][0]["links"]["approve"],
            std::string(kBaseUrl) + "/approvals/" + token + "/approve");
}

TEST(StatusCliTest, AnEmptyDatabaseSaysNoCycleYet) {
  TestDatabase database;
  ProcessResult r =
      RunProcess({FleetwaveBinary(), "status"}, {{"FLEETWAVE_DB", database.conninfo()}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("no cycle has started yet"));
  EXPECT_THAT(r.out, HasSubstr("leader: none"));
  r = RunProcess({FleetwaveBinary(), "status", "--json"}, {{"FLEETWAVE_DB", database.conninfo()}});
  Json j = Json::parse(r.out);
  EXPECT_TRUE(j["cycle"].is_null());
  EXPECT_TRUE(j["leader"].is_null());
  EXPECT_EQ(j["rollouts"], Json::array());
}

TEST_F(RolloutCliTest, WatchPrintsTheStatusAsPlainLinesWhenNotATerminal) {
  // Not a terminal (a pipe): no bars, no screen clearing; the same status is printed once.
  const std::string out = Ok({"watch", "--interval-ms", "100", "--count", "3"});
  EXPECT_EQ(out.find("\033["), std::string::npos);
  EXPECT_THAT(out, HasSubstr("rollout fw-arm-1.2.0-c2  arm 1.2.0  running  wave 2 of 3"));
  size_t blocks = 0;
  for (size_t at = out.find("---- "); at != std::string::npos; at = out.find("---- ", at + 1))
    ++blocks;
  EXPECT_EQ(blocks, 1u) << out;
}

TEST_F(RolloutCliTest, WatchUntilDoneExitsWhenEveryRolloutHasEnded) {
  Exec("update fleetwave.rollouts set state = 'completed', finished_at = now()");
  Exec("update fleetwave.cycles set planned_at = now() where state = 'running'");
  EXPECT_THAT(Ok({"watch", "--interval-ms", "100", "--until-done"}), HasSubstr("completed"));
}

TEST_F(RolloutCliTest, WatchRejectsABadInterval) {
  Fails(2, {"watch", "--interval-ms", "5"}, {"--interval-ms", "100"});
}
