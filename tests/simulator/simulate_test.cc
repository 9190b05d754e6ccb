// The simulator end to end: a real PostgreSQL and Mosquitto, the controller's engine in process,
// and a few hundred simulated devices (in process, or `fleetwave simulate` as users run it)
// through full rollout cycles: a healthy release reaches every device wave by wave; a failing or
// crashing one is stopped after its first wave.
#include "simulator/simulate.h"

#include <unistd.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "controller/engine.h"
#include "controller/notice_signer.h"
#include "db/registry.h"
#include "fleet/signed_manifest.h"
#include "signing/signing.h"
#include "simulator/fleet_spec.h"
#include "tests/support/process.h"
#include "tests/support/test_database.h"
#include "tests/support/test_device.h"

namespace simulator {
namespace {

using Json = nlohmann::json;
using testing::HasSubstr;
using testing_support::TestDatabase;
using namespace std::chrono_literals;

// Steps of a few tens of milliseconds: a whole rollout takes seconds.
constexpr const char* kFastProfile = R"({
  "requestTimeoutSeconds": 5,
  "update": {"download": {"seconds": {"min": 0.01, "max": 0.05}},
             "install": {"seconds": {"min": 0.01, "max": 0.05}},
             "reboot": {"seconds": 0.02}}
})";

class SimulateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    unique_ = std::to_string(getpid()) + "-" + std::to_string(counter++);
    root_ = "fwtest/" + unique_ + "/things";
    spec_.devices = 300;
    spec_.models = {"m1", "m2"};
    spec_.firmware = "1.0.0";
    spec_.canary_per_mille = 20;
  }
  void TearDown() override {
    simulator_.reset();
    engine_.reset();
  }

  template <typename T>
  T Query(const std::string& sql) {
    auto c = database_.Connect();
    pqxx::work txn(*c);
    return txn.exec1(sql)[0].as<T>();
  }

  // Registers the simulated fleet (COPY-based import) and release 2.0.0 of each model.
  void Fleet() {
    auto c = database_.Connect();
    db::Registry registry(*c);
    std::stringstream csv;
    WriteFleetCsv(spec_, csv);
    ASSERT_TRUE(registry.ImportDevices(csv).ok());
    for (const std::string& model : spec_.models)
      registry.AddRelease({model, "2.0.0", "https://fw.example/" + model + "-2.0.0.bin",
                           std::string(64, 'a'), 1000, fleet::ReleaseState::kActive});
  }

  void StartEngine(const std::string& plan_json,
                   std::shared_ptr<const controller::NoticeSigner> signer = nullptr) {
    controller::EngineOptions e;
    std::string error;
    auto plan = fleet::ParsePlan(plan_json, &error);
    ASSERT_TRUE(plan) << error;
    e.plan = *plan;
    e.lease_ttl = 2s;
    e.reconcile_interval = 100ms;
    controller::JobsServiceOptions o;
    o.db = database_.conninfo();
    o.mqtt_uri = testing_support::BrokerUri();
    o.client_id = "fw-engine-" + unique_;
    o.topic_root = root_;
    o.telemetry_root = root_;
    o.notice_signer = std::move(signer);
    engine_ = std::make_unique<controller::Engine>(e, o);
    engine_->Start();
    ASSERT_TRUE(engine_->WaitServing(20s));
  }

  SimulateOptions Options(const std::string& profile_json) {
    SimulateOptions o;
    o.fleet = spec_;
    std::string error;
    auto profile = ParseProfile(profile_json, &error);
    EXPECT_TRUE(profile) << error;
    if (profile) o.profile = *profile;
    o.mqtt_uri = testing_support::BrokerUri();
    o.connections = 3;
    o.topic_root = root_;
    o.telemetry_root = root_;
    o.telemetry_interval_seconds = 0.2;
    o.client_id_prefix = "fw-sim-" + unique_;
    EXPECT_EQ(CheckOptions(o), std::nullopt);
    return o;
  }

  void StartSimulator(const std::string& profile_json, const Trust& trust = {}) {
    SimulateOptions o = Options(profile_json);
    o.trust = trust;
    simulator_ = std::make_unique<Simulator>(o);
    simulator_->Start();
    ASSERT_TRUE(simulator_->WaitReady(20s));
  }

  // Waits until `sql` (a boolean query) is true; fails the test with `what` after `timeout`.
  bool WaitFor(const std::string& sql, const std::string& what,
               std::chrono::milliseconds timeout = 60s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (Query<bool>(sql)) return true;
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << "timed out waiting for " << what << "\n" << Status();
    return false;
  }

  std::string Status() {
    auto c = database_.Connect();
    pqxx::work txn(*c);
    std::string out;
    for (const auto& r : txn.exec("select rollout_id, state, current_wave, queued, in_progress, "
                                  "succeeded, failed, rejected, timed_out from "
                                  "fleetwave.rollout_status order by rollout_id"))
      for (const auto& f : r) out += std::string(f.c_str()) + (f.num() == 8 ? "\n" : " ");
    if (simulator_) {
      const Tally t = simulator_->progress().tally;
      out += "simulator: started " + std::to_string(t[Count::kStarted]) + " succeeded " +
             std::to_string(t[Count::kSucceeded]) + " failed " + std::to_string(t[Count::kFailed]) +
             " requests " + std::to_string(t[Count::kRequests]) + "\n";
    }
    return out;
  }

  std::string WaveStates(const std::string& model) {
    return Query<std::string>(
        "select string_agg(w.state, ' ' order by w.wave) from fleetwave.waves w "
        "join fleetwave.rollouts r on r.id = w.rollout_id "
        "join fleetwave.releases rel on rel.id = r.release_id where rel.model = '" +
        model + "'");
  }

  TestDatabase database_;
  std::string unique_;
  std::string root_;
  FleetSpec spec_;
  std::unique_ptr<controller::Engine> engine_;
  std::unique_ptr<Simulator> simulator_;
};

TEST_F(SimulateTest, AHealthyReleaseReachesEverySimulatedDevice) {
  Fleet();
  StartEngine(R"({"waves": [{"percent": 10}, {"percent": 50}, {"percent": 100}],
                  "soakSeconds": 0, "cycleIntervalSeconds": 1})");
  StartSimulator(kFastProfile);
  ASSERT_TRUE(WaitFor("select count(*) = 300 from fleetwave.devices where firmware = '2.0.0'",
                      "every device on 2.0.0"));
  ASSERT_TRUE(WaitFor("select count(*) = 2 from fleetwave.rollouts where state = 'completed'",
                      "both rollouts to complete"));
  EXPECT_EQ(WaveStates("m1"), "passed passed passed");
  EXPECT_EQ(WaveStates("m2"), "passed passed passed");
  // Each device installed once and said so: SUCCEEDED with its new firmware, after the steps.
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.job_executions where status = "
                           "'SUCCEEDED' and execution_number = 1 and "
                           "status_details ->> 'firmware' = '2.0.0'"),
            300);
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.events where kind = "
                           "'firmware_mismatch'"),
            0);
  // Health telemetry arrives from the devices on their new firmware too: within a telemetry
  // period (0.2 s) of each one's SUCCEEDED, so the last devices' may still be on its way.
  EXPECT_TRUE(
      WaitFor("select count(distinct thing_name) = 300 from fleetwave.telemetry "
              "where payload ->> 'firmware' = '2.0.0' and payload ? 'crashCount' "
              "and payload ? 'uptimeSeconds' and payload ? 'bootCount'",
              "telemetry from every device on 2.0.0", 10s));
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  Progress p = simulator_->progress();
  while (p.tally[Count::kSucceeded] < 300 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    p = simulator_->progress();
  }
  EXPECT_EQ(p.tally[Count::kStarted], 300);
  EXPECT_EQ(p.tally[Count::kSucceeded], 300);
  EXPECT_EQ(p.tally[Count::kFailed] + p.tally[Count::kRejected] + p.tally[Count::kAbandoned], 0);
  EXPECT_EQ(p.subscribed, 300);
  EXPECT_EQ(p.connections_up, 3);
  // start-next at boot and on the notice, then 3 steps and SUCCEEDED: no request twice.
  EXPECT_EQ(p.tally[Count::kResent], 0);
}

TEST_F(SimulateTest, AFailingReleaseIsAbortedAfterItsFirstWave) {
  spec_.canary_per_mille = 0;
  Fleet();
  // minExecuted 1: see SignedNoticesRollOut... (the first failure already makes 95 % unreachable).
  StartEngine(R"({"waves": [{"percent": 10}, {"percent": 50}, {"percent": 100}],
                  "abort": [{"failureType": "ALL", "thresholdPercent": 10, "minExecuted": 1,
                             "action": "abort"}],
                  "soakSeconds": 0, "cycleIntervalSeconds": 1})");
  StartSimulator(R"({
    "update": {"download": {"seconds": 0.01}, "install": {"seconds": 0.01},
               "reboot": {"seconds": 0.01}},
    "models": {"m1": {"releases": {"2.0.0": {"install": {"failureProbability": 1}}}}}
  })");
  ASSERT_TRUE(
      WaitFor("select count(*) = 1 from fleetwave.rollouts r join fleetwave.releases "
              "rel on rel.id = r.release_id where rel.model = 'm1' and r.state = "
              "'aborted'",
              "the m1 rollout to abort"));
  ASSERT_TRUE(
      WaitFor("select count(*) = 150 from fleetwave.devices where model = 'm2' and "
              "firmware = '2.0.0'",
              "every m2 device on 2.0.0"));
  EXPECT_EQ(WaveStates("m1"), "failed canceled canceled");
  EXPECT_EQ(Query<std::string>("select state from fleetwave.releases where model = 'm1'"),
            "halted");
  // Only wave 1 (10% of 150) ever heard of it; those that ran it reported why it failed (the
  // abort cancels what had not started yet).
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.job_executions e join "
                           "fleetwave.devices d on d.id = e.thing_name where d.model = 'm1'"),
            15);
  EXPECT_GE(Query<int64_t>("select count(*) from fleetwave.job_executions where status = "
                           "'FAILED' and status_details ->> 'reason' = 'install-failed'"),
            5);
  // (A device already installing when the rollout aborted reports its failure a moment later.)
  EXPECT_TRUE(
      WaitFor("select count(*) = 0 from fleetwave.job_executions e join "
              "fleetwave.devices d on d.id = e.thing_name where d.model = 'm1' and "
              "e.status not in ('FAILED', 'CANCELED')",
              "every m1 execution FAILED or CANCELED", 10s));
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.devices where model = 'm1' and "
                           "firmware = '1.0.0'"),
            150);
}

TEST_F(SimulateTest, ACrashingReleaseIsAbortedByTheHealthGate) {
  spec_.models = {"m1"};
  spec_.devices = 200;
  spec_.canary_per_mille = 0;
  Fleet();
  // Devices crash about once a second; the new release multiplies that by 20.
  StartEngine(R"({"waves": [{"percent": 10}, {"percent": 100}], "soakSeconds": 2,
                  "health": {"metric": "crashCount", "maxRatio": 1.5, "confidence": 0.95,
                             "maxSoakSeconds": 30}})");
  StartSimulator(R"({
    "devices": {"crashesPerHour": 3600},
    "update": {"download": {"seconds": 0.01}, "install": {"seconds": 0.01},
               "reboot": {"seconds": 0.01}},
    "models": {"m1": {"releases": {"2.0.0": {"crashRateMultiplier": 20}}}}
  })");
  ASSERT_TRUE(WaitFor("select count(*) = 1 from fleetwave.rollouts where state = 'aborted'",
                      "the health gate to abort the rollout"));
  EXPECT_EQ(WaveStates("m1"), "failed canceled");
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.devices where firmware = '2.0.0'"), 20);
}

// Issue 7's promise end to end: the controller signs every notice with its notice key; devices
// trust the release key and the notice keys (an old one still, mid-rotation). A release signed by
// the release key reaches every device; one whose manifest only the controller's key signed (a
// compromised controller) is refused by every device that hears of it, installs nowhere, and the
// gate stops it after its first wave.
TEST_F(SimulateTest, SignedNoticesRollOutAndAReleaseTheReleaseKeyDidNotSignIsRefused) {
  spec_.canary_per_mille = 0;
  signing::KeyPair release_key = signing::GenerateKeyPair();
  signing::KeyPair notice_key = signing::GenerateKeyPair();
  signing::KeyPair old_notice_key = signing::GenerateKeyPair();
  {
    auto c = database_.Connect();
    db::Registry registry(*c);
    std::stringstream csv;
    WriteFleetCsv(spec_, csv);
    ASSERT_TRUE(registry.ImportDevices(csv).ok());
    for (const std::string& model : spec_.models) {
      fleet::Release r{model,
                       "2.0.0",
                       "https://fw.example/" + model + "-2.0.0.bin",
                       std::string(64, 'a'),
                       1000,
                       fleet::ReleaseState::kActive};
      r.counter = 7;
      // m1: the release key signed it. m2: only the controller's notice key did.
      const signing::SecretKey& signer =
          model == "m1" ? release_key.secret_key : notice_key.secret_key;
      r.signature =
          fleet::Signature{signer.KeyId(), signing::SignRelease(signer, fleet::ManifestOf(r))};
      registry.AddRelease(r);
    }
  }
  // minExecuted 1: the first refusal already makes wave 1's 95 % unreachable (a pause); the
  // abort must be able to trip on it too, not only once 5 refusals landed before a gate pass.
  StartEngine(R"({"waves": [{"percent": 10}, {"percent": 50}, {"percent": 100}],
                  "abort": [{"failureType": "ALL", "thresholdPercent": 10, "minExecuted": 1,
                             "action": "abort"}],
                  "soakSeconds": 0, "cycleIntervalSeconds": 1})",
              std::make_shared<controller::NoticeSigner>(std::move(notice_key.secret_key)));
  Trust trust;
  trust.release_keys.Add(release_key.public_key);
  trust.notice_keys.Add(old_notice_key.public_key);
  trust.notice_keys.Add(notice_key.public_key);
  StartSimulator(kFastProfile, trust);

  ASSERT_TRUE(
      WaitFor("select count(*) = 150 from fleetwave.devices where model = 'm1' and "
              "firmware = '2.0.0'",
              "every m1 device on the release the release key signed"));
  ASSERT_TRUE(
      WaitFor("select count(*) = 1 from fleetwave.rollouts r join fleetwave.releases "
              "rel on rel.id = r.release_id where rel.model = 'm2' and r.state = 'aborted'",
              "the m2 rollout to abort"));
  // Its last wave passes at the engine's next look after the devices report.
  ASSERT_TRUE(
      WaitFor("select count(*) = 1 from fleetwave.rollouts r join fleetwave.releases "
              "rel on rel.id = r.release_id where rel.model = 'm1' and r.state = 'completed'",
              "the m1 rollout to complete"));
  EXPECT_EQ(WaveStates("m1"), "passed passed passed");
  EXPECT_EQ(WaveStates("m2"), "failed canceled canceled");
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.devices where model = 'm2' and "
                           "firmware = '1.0.0'"),
            150);
  // Every m2 device that heard of it refused it, saying why; none started installing.
  EXPECT_GE(Query<int64_t>("select count(*) from fleetwave.job_executions e join "
                           "fleetwave.devices d on d.id = e.thing_name where d.model = 'm2' and "
                           "e.status = 'REJECTED' and "
                           "e.status_details ->> 'reason' = 'unknown-release-key'"),
            5);
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.job_executions e join "
                           "fleetwave.devices d on d.id = e.thing_name where d.model = 'm2' and "
                           "e.status not in ('REJECTED', 'CANCELED')"),
            0);
}

TEST_F(SimulateTest, TheCommandRegistersAndPlaysTheFleet) {
  spec_.devices = 200;
  StartEngine(R"({"waves": [{"percent": 50}, {"percent": 100}], "soakSeconds": 0,
                  "cycleIntervalSeconds": 1})");
  {
    auto c = database_.Connect();
    db::Registry registry(*c);
    for (const std::string& model : spec_.models)
      registry.AddRelease({model, "2.0.0", "https://fw.example/" + model + ".bin",
                           std::string(64, 'b'), 1000, fleet::ReleaseState::kActive});
  }
  const std::string profile = ::testing::TempDir() + "profile-" + unique_ + ".json";
  std::ofstream(profile) << kFastProfile;
  testing_support::ProcessResult r = testing_support::RunProcess(
      {testing_support::FleetwaveBinary(),
       "simulate",
       "--devices",
       "200",
       "--models",
       "m1,m2",
       "--register",
       "--profile",
       profile,
       "--connections",
       "2",
       "--topic-root",
       root_,
       "--telemetry-root",
       root_,
       "--telemetry-interval-seconds",
       "1",
       "--until-idle-seconds",
       "4",
       "--duration-seconds",
       "90",
       "--json"},
      {{"FLEETWAVE_DB", database_.conninfo()}, {"FLEETWAVE_MQTT", testing_support::BrokerUri()}});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("registered 200 devices"));
  EXPECT_THAT(r.err, HasSubstr("stopped by --until-idle-seconds"));
  Json summary = Json::parse(r.out);
  EXPECT_EQ(summary["devices"], 200);
  EXPECT_EQ(summary["succeeded"], 200) << r.out;
  EXPECT_EQ(summary["failed"], 0);
  EXPECT_GT(summary["messagesPerSecond"].get<double>(), 0);
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.devices where firmware = '2.0.0'"), 200);
}

TEST_F(SimulateTest, BadFlagsAndProfilesExitTwoNamingTheProblem) {
  auto run = [](std::vector<std::string> args) {
    args.insert(args.begin(), {testing_support::FleetwaveBinary(), "simulate"});
    return testing_support::RunProcess(args, {{"FLEETWAVE_MQTT", "tcp://127.0.0.1:1"}});
  };
  auto r = run({"--devices", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--devices must be in [1, 1000000], got 0"));
  r = run({"--models", "m1,bad model"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--models"));
  r = run({"--firmware", "v1"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--firmware"));
  r = run({"--topic-root", "a/#"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("topic root"));
  const std::string profile = ::testing::TempDir() + "bad-profile-" + unique_ + ".json";
  std::ofstream(profile) << R"({"models": {"m1": {"update": {"reboot": {"seconds": -1}}}}})";
  r = run({"--profile", profile});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("models.m1.update.reboot.seconds must be in [0, 315360000]"));
  r = run({"--profile", profile + ".missing"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("cannot read the file"));
}

}  // namespace
}  // namespace simulator
