// The rollout machine end to end: a real PostgreSQL and Mosquitto, the engine (leader lease,
// reconcile passes, jobs service) and a fleet of test devices speaking the AWS IoT Jobs MQTT
// API, each with a behaviour: succeed, fail, stay silent, or succeed and then crash a lot.
#include "controller/engine.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "db/registry.h"
#include "db/rollouts.h"
#include "tests/support/eventually.h"
#include "tests/support/process.h"
#include "tests/support/test_database.h"
#include "tests/support/test_device.h"

namespace controller {
namespace {

using Json = nlohmann::json;
using testing::HasSubstr;
using testing_support::TestDatabase;
using testing_support::TestDevice;
using namespace std::chrono_literals;

enum class Behaviour { kSucceed, kFail, kSilent, kCrashy, kFailFirst };

// One device: a thread that boots (asks start-next), then acts on every notify-next, and
// publishes health telemetry every 100 ms when asked to.
class SimDevice {
 public:
  SimDevice(std::string thing, std::string root, Behaviour b, bool telemetry)
      : behaviour_(b), telemetry_(telemetry), device_(std::move(thing), std::move(root)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~SimDevice() {
    stop_ = true;
    thread_.join();
  }
  const std::string& thing() const { return device_.thing(); }
  bool notified() const { return notified_; }
  std::string firmware() const {
    std::lock_guard<std::mutex> lock(mu_);
    return firmware_;
  }
  int attempts() const { return attempts_; }

 private:
  void Act() {
    Json answer = device_.Accepted("jobs/start-next", Json::object());
    if (!answer.contains("execution")) return;
    notified_ = true;
    const Json& e = answer["execution"];
    const std::string job = e["jobId"];
    const std::string version = e["jobDocument"]["release"]["version"];
    ++attempts_;
    const bool fail =
        behaviour_ == Behaviour::kFail || (behaviour_ == Behaviour::kFailFirst && attempts_ == 1);
    if (behaviour_ == Behaviour::kSilent) return;
    if (fail) {
      Report(job, {{"status", "FAILED"}, {"statusDetails", {{"reason", "flash-error"}}}});
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      firmware_ = version;
    }
    Report(job, {{"status", "SUCCEEDED"}, {"statusDetails", {{"firmware", version}}}});
  }

  // Reports the outcome of what it did, again and again until answered (as a real device does
  // when the controller restarts meanwhile): it never installs the update a second time.
  void Report(const std::string& job, const Json& update) {
    while (!stop_) {
      try {
        device_.Accepted("jobs/" + job + "/update", update);
        return;
      } catch (const std::runtime_error&) {
      }
    }
  }

  // A device whose request went unanswered (the controller not up yet) asks again later.
  bool TryAct() {
    try {
      Act();
      return true;
    } catch (const std::runtime_error&) {
      return false;
    }
  }

  void Run() {
    bool booted = false;  // asked for work once at start
    auto next_report = std::chrono::steady_clock::now();
    while (!stop_) {
      if (!booted) booted = TryAct();
      if (auto n = device_.Notice("notify-next", 50ms)) {
        if (n->contains("execution") && !TryAct()) booted = false;
      }
      if (telemetry_ && std::chrono::steady_clock::now() >= next_report) {
        next_report += 100ms;
        std::string fw = firmware();
        // Crash-prone firmware crashes 5 times per report; everything else almost never.
        crashes_ += (behaviour_ == Behaviour::kCrashy && fw != "1.0.0") ? 5 : 0;
        device_.Send("telemetry", Json{{"firmware", fw}, {"crashCount", crashes_}}.dump());
      }
    }
  }

  Behaviour behaviour_;
  bool telemetry_;
  TestDevice device_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> notified_{false};
  std::atomic<int> attempts_{0};
  int64_t crashes_ = 0;
  mutable std::mutex mu_;
  std::string firmware_ = "1.0.0";
  std::thread thread_;
};

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    unique_ = std::to_string(getpid()) + "-" + std::to_string(counter++);
    root_ = "fwtest/" + unique_ + "/things";
  }
  void TearDown() override {
    engines_.clear();
    devices_.clear();
  }

  void Sql(const std::string& sql) {
    auto c = database_.Connect();
    pqxx::work txn(*c);
    txn.exec(sql);
    txn.commit();
  }
  template <typename T>
  T Query(const std::string& sql) {
    auto c = database_.Connect();
    pqxx::work txn(*c);
    return txn.exec1(sql)[0].as<T>();
  }

  // Devices d00..dNN of model m1 on 1.0.0, the first `canaries` in the canary ring, and (unless
  // `release` is false) release 2.0.0 of m1.
  void Fleet(int n, int canaries = 0, bool release = true) {
    auto c = database_.Connect();
    db::Registry registry(*c);
    for (int i = 0; i < n; ++i) {
      char id[16];
      std::snprintf(id, sizeof id, "d%02d", i);
      registry.AddDevice({id, "m1", "1.0.0", i < canaries ? "canary" : "default", {}});
    }
    if (release) Release();
    devices_count_ = n;
  }
  void Release() {
    auto c = database_.Connect();
    db::Registry(*c).AddRelease({"m1", "2.0.0", "https://fw.example/m1-2.0.0.bin",
                                 std::string(64, 'a'), 1000, fleet::ReleaseState::kActive});
  }

  void StartDevices(const std::function<Behaviour(int)>& behaviour, bool telemetry = false) {
    for (int i = 0; i < devices_count_; ++i) {
      char id[16];
      std::snprintf(id, sizeof id, "d%02d", i);
      devices_.push_back(std::make_unique<SimDevice>(id, root_, behaviour(i), telemetry));
    }
  }

  Engine& StartEngine(const std::string& plan_json) {
    EngineOptions e;
    std::string error;
    auto plan = fleet::ParsePlan(plan_json, &error);
    EXPECT_TRUE(plan) << error;
    e.plan = *plan;
    e.lease_ttl = 2s;
    e.reconcile_interval = 100ms;
    e.lease_name = "controller";
    JobsServiceOptions o;
    o.db = database_.conninfo();
    o.mqtt_uri = testing_support::BrokerUri();
    o.client_id = "fw-engine-" + unique_;
    o.topic_root = root_;
    o.telemetry_root = root_;
    o.backlog_limit = backlog_limit_;
    engines_.push_back(std::make_unique<Engine>(e, o));
    engines_.back()->Start();
    if (engines_.size() == 1) {
      EXPECT_TRUE(engines_.back()->WaitServing(20s));
    }
    return *engines_.back();
  }

  // Waits until `sql` (a boolean query) is true; fails the test with `what` after `timeout`.
  // No row yet (e.g. the rollout is not planned yet) counts as false.
  bool WaitFor(const std::string& sql, const std::string& what,
               std::chrono::milliseconds timeout = 60s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto holds = [&] {
      auto c = database_.Connect();
      pqxx::work txn(*c);
      auto rows = txn.exec(sql);
      return !rows.empty() && !rows[0][0].is_null() && rows[0][0].as<bool>();
    };
    while (std::chrono::steady_clock::now() < deadline) {
      if (holds()) return true;
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << "timed out waiting for " << what << "\nevents:\n" << History();
    return false;
  }

  std::string History() {
    auto c = database_.Connect();
    pqxx::work txn(*c);
    std::string out;
    for (const auto& r :
         txn.exec("select coalesce(rollout_id, '-'), coalesce(wave::text, '-'), kind, "
                  "coalesce(from_state, ''), coalesce(to_state, ''), detail::text "
                  "from fleetwave.events order by id"))
      out += std::string(r[0].c_str()) + " w" + r[1].c_str() + " " + r[2].c_str() + " " +
             r[3].c_str() + "->" + r[4].c_str() + " " + r[5].c_str() + "\n";
    return out;
  }

  std::string WaveStates(const std::string& rollout) {
    auto c = database_.Connect();
    pqxx::work txn(*c);
    std::string out;
    for (const auto& r :
         txn.exec_params("select state || ':' || coalesce(verdict, '-') from fleetwave.waves "
                         "where rollout_id = $1 order by wave",
                         rollout))
      out += (out.empty() ? "" : " ") + r[0].as<std::string>();
    return out;
  }

  // Runs `fleetwave controller` as its own process with `plan_json`; its log goes to a file.
  std::unique_ptr<testing_support::BackgroundProcess> StartControllerProcess(
      const std::string& plan_json) {
    return std::make_unique<testing_support::BackgroundProcess>(ControllerArgv(plan_json), Env(),
                                                                Log("controller"));
  }
  std::vector<std::string> ControllerArgv(const std::string& plan_json) {
    const std::string plan = ::testing::TempDir() + "plan-" + unique_ + ".json";
    std::ofstream(plan) << plan_json;
    return {testing_support::FleetwaveBinary(),
            "controller",
            "--http",
            "127.0.0.1:0",
            "--plan",
            plan,
            "--lease-ttl",
            "2",
            "--reconcile-interval-ms",
            "100",
            "--topic-root",
            root_,
            "--telemetry-root",
            root_,
            "--client-id",
            "fw-engine-" + unique_};
  }
  std::map<std::string, std::string> Env() {
    return {{"FLEETWAVE_DB", database_.conninfo()},
            {"FLEETWAVE_MQTT", testing_support::BrokerUri()}};
  }
  std::string Log(const std::string& name) {
    return ::testing::TempDir() + name + "-" + unique_ + ".log";
  }
  // The pid in the lease holder ("host:pid:random") of the current leader, or 0.
  int LeaderPid() {
    auto holder = Query<std::string>(
        "select coalesce((select holder from fleetwave.leases where expires_at > "
        "clock_timestamp()), '')");
    auto a = holder.find(':'), b = holder.rfind(':');
    if (a == std::string::npos || a == b) return 0;
    return std::stoi(holder.substr(a + 1, b - a - 1));
  }
  void Command(fleet::Event e, const std::string& rollout = kRollout) {
    auto c = database_.Connect();
    pqxx::work txn(*c);
    db::ApplyOperatorCommand(txn, rollout, e, "test");
    txn.commit();
  }

  static const inline std::string kRollout = "fw-m1-2.0.0-c1";

  TestDatabase database_;
  std::string unique_;
  std::string root_;
  int devices_count_ = 0;
  size_t backlog_limit_ = 0;  // JobsServiceOptions::backlog_limit of the engines started
  std::vector<std::unique_ptr<SimDevice>> devices_;
  std::vector<std::unique_ptr<Engine>> engines_;
};

TEST_F(EngineTest, HealthyReleaseReachesEveryDeviceWaveByWaveAndTheNextCycleStarts) {
  Fleet(20, 2);
  StartEngine(R"({"waves": [{"percent": 10}, {"percent": 50}, {"percent": 100}],
                  "soakSeconds": 0, "cycleIntervalSeconds": 1})");
  StartDevices([](int) { return Behaviour::kSucceed; });
  ASSERT_TRUE(WaitFor("select count(*) = 20 from fleetwave.devices where firmware = '2.0.0'",
                      "every device on 2.0.0"));
  ASSERT_TRUE(
      WaitFor("select state = 'completed' from fleetwave.rollouts where id = '" + kRollout + "'",
              "the rollout to complete"));
  EXPECT_EQ(WaveStates(kRollout), "passed:passed passed:passed passed:passed");
  EXPECT_EQ(Query<std::string>("select string_agg(planned::text, ',' order by wave) "
                               "from fleetwave.waves where rollout_id = '" +
                               kRollout + "'"),
            "2,8,10");
  // The canaries are the first wave.
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.job_executions e "
                           "join fleetwave.devices d on d.id = e.thing_name "
                           "where e.wave = 1 and d.ring = 'canary'"),
            2);
  // Each wave started only after the previous one passed.
  EXPECT_TRUE(Query<bool>(
      "select bool_and(s.id > p.id) from fleetwave.events s join fleetwave.events p "
      "on p.rollout_id = s.rollout_id and p.wave = s.wave - 1 and p.kind = 'gate_passed' "
      "where s.kind = 'wave_started' and s.wave > 1"))
      << History();
  // The cycle completed and the next one runs (and, with nothing pending, completes too).
  ASSERT_TRUE(WaitFor("select count(*) >= 2 from fleetwave.cycles where state = 'completed'",
                      "the next cycle to run and complete"));
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.cycles where state = 'running'"), 1);
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.rollouts"), 1);
  // Every device installed once: one execution each, executionNumber 1.
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.job_executions "
                           "where status = 'SUCCEEDED' and execution_number = 1"),
            20);
}

// While more device messages wait than the backlog limit, a pass queues no devices and does not
// wait for the busy serve loop (the next pass looks again); once they are served, it queues on.
TEST_F(EngineTest, NoDevicesAreQueuedWhileDeviceMessagesAreBacklogged) {
  Fleet(4, 0, /*release=*/false);
  backlog_limit_ = 20;
  Engine& engine = StartEngine(R"({"waves": [{"percent": 100}], "soakSeconds": 0,
                                   "cycleIntervalSeconds": 1})");
  // The serve loop's write of telemetry waits for this lock, holding its batch; what arrives
  // meanwhile waits in the inbound queue.
  auto blocker = database_.Connect();
  pqxx::work lock(*blocker);
  lock.exec("lock table fleetwave.telemetry in access exclusive mode");
  TestDevice device("d00", root_);
  const std::string report = Json{{"firmware", "1.0.0"}}.dump();
  device.Send("telemetry", report);
  ASSERT_TRUE(
      WaitFor("select count(*) > 0 from pg_stat_activity where wait_event_type = 'Lock' "
              "and query like 'with changed as%'",  // the batch write, not the pruner
              "the serve loop's write to wait for the telemetry table"));
  for (int i = 0; i < 100; ++i) device.Send("telemetry", report);

  Release();
  ASSERT_TRUE(WaitFor("select count(*) = 1 from fleetwave.rollouts", "the release's rollout"));
  const uint64_t passes = engine.stats().passes;
  ASSERT_TRUE(testing_support::Eventually([&] { return engine.stats().passes >= passes + 10; }))
      << "passes stopped: the engine waits for the serve loop";
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.job_executions"), 0);
  EXPECT_EQ(Query<int64_t>("select coalesce(sum(queued), 0) from fleetwave.waves"), 0);

  lock.abort();  // the serve loop drains the backlog, and the next passes queue every device
  ASSERT_TRUE(WaitFor("select count(*) = 4 from fleetwave.job_executions", "devices queued"));
  EXPECT_TRUE(WaitFor("select count(*) = 101 from fleetwave.telemetry", "every report stored"));
}

TEST_F(EngineTest, BadReleaseIsAbortedAfterTheFirstWaveAndLaterWavesNeverHearOfIt) {
  Fleet(20);
  StartEngine(R"({"waves": [{"percent": 10, "minDevices": 4}, {"percent": 50}, {"percent": 100}],
                  "abort": [{"failureType": "ALL", "thresholdPercent": 10, "minExecuted": 1,
                             "action": "abort"}],
                  "soakSeconds": 0, "cycleIntervalSeconds": 1})");
  // minExecuted 1: with 95% to meet in a wave of 4, the first failure already makes the wave's
  // threshold unreachable, and a criterion that needed 2 finished executions would race the
  // pause that follows.
  StartDevices([](int) { return Behaviour::kFail; });
  ASSERT_TRUE(
      WaitFor("select state = 'aborted' from fleetwave.rollouts where id = '" + kRollout + "'",
              "the rollout to abort"));
  EXPECT_EQ(WaveStates(kRollout), "failed:failed canceled:- canceled:-");
  EXPECT_EQ(Query<std::string>("select state from fleetwave.releases"), "halted");
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.job_executions"), 4);
  // Once every execution is final (a wave-1 device that connected late may have found its
  // execution canceled by the abort before it asked): only devices with an execution, and so
  // only wave-1 devices, were ever told of the release.
  ASSERT_TRUE(
      WaitFor("select count(*) = 0 from fleetwave.job_executions "
              "where status in ('QUEUED', 'IN_PROGRESS')",
              "every execution to be final"));
  const std::string told = Query<std::string>(
      "select coalesce(string_agg(thing_name, ',' order by thing_name), '') "
      "from fleetwave.job_executions where status <> 'CANCELED'");
  std::string notified;  // devices_ are in name order
  for (const auto& d : devices_)
    if (d->notified()) notified += (notified.empty() ? "" : ",") + d->thing();
  EXPECT_EQ(notified, told);
  EXPECT_FALSE(notified.empty());
  // The halted release is skipped by later cycles.
  ASSERT_TRUE(WaitFor("select count(*) >= 2 from fleetwave.cycles where state = 'completed'",
                      "a later cycle"));
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.rollouts"), 1);
  EXPECT_THAT(History(), HasSubstr("release_halted"));
}

TEST_F(EngineTest, SilentDevicesTimeOutAndTripTheGate) {
  Fleet(10);
  StartEngine(R"({"waves": [{"percent": 30}, {"percent": 100}],
                  "timeouts": {"queuedSeconds": 2, "inProgressSeconds": 2},
                  "abort": [{"failureType": "TIMED_OUT", "thresholdPercent": 50,
                             "minExecuted": 3, "action": "pause"}],
                  "soakSeconds": 0})");
  StartDevices([](int) { return Behaviour::kSilent; });
  ASSERT_TRUE(
      WaitFor("select state = 'paused' from fleetwave.rollouts where id = '" + kRollout + "'",
              "the gate to pause the rollout"));
  // The gate may trip as soon as success is out of reach; the last silent device of the wave
  // still times out while the rollout is paused.
  EXPECT_TRUE(
      WaitFor("select count(*) = 3 from fleetwave.job_executions "
              "where status = 'TIMED_OUT'",
              "every silent device of wave 1 to time out"));
  EXPECT_THAT(Query<std::string>("select status_details::text from fleetwave.job_executions "
                                 "limit 1"),
              HasSubstr("longer than 2 s"));
  EXPECT_EQ(WaveStates(kRollout), "failed:failed pending:-");
}

TEST_F(EngineTest, RetriesRequeueWithANewExecutionNumber) {
  Fleet(4);
  StartEngine(R"({"waves": [{"percent": 100}], "abort": [],
                  "retries": [{"failureType": "FAILED", "count": 1}], "soakSeconds": 0})");
  StartDevices([](int) { return Behaviour::kFailFirst; });
  ASSERT_TRUE(
      WaitFor("select state = 'completed' from fleetwave.rollouts where id = '" + kRollout + "'",
              "the rollout to complete after retries"));
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.job_executions where status = "
                           "'SUCCEEDED' and execution_number = 2 and attempts = 2"),
            4);
}

TEST_F(EngineTest, CrashProneReleaseFailsOnHealth) {
  Fleet(20);
  StartEngine(R"({"waves": [{"percent": 20}, {"percent": 100}], "soakSeconds": 2,
                  "health": {"metric": "crashCount", "maxRatio": 1.5, "confidence": 0.95,
                             "maxSoakSeconds": 30}})");
  StartDevices([](int) { return Behaviour::kCrashy; }, /*telemetry=*/true);
  ASSERT_TRUE(
      WaitFor("select state = 'aborted' from fleetwave.rollouts where id = '" + kRollout + "'",
              "the health gate to abort the rollout"));
  EXPECT_EQ(WaveStates(kRollout), "failed:failed canceled:-");
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.devices where firmware = '2.0.0'"), 4);
  EXPECT_THAT(History(), HasSubstr("\"verdict\": \"fail\""));
}

TEST_F(EngineTest, AHealthyReleasePassesTheHealthGate) {
  Fleet(10);
  StartEngine(R"({"waves": [{"percent": 30}, {"percent": 100}], "soakSeconds": 1,
                  "health": {"metric": "crashCount", "maxRatio": 1.5, "confidence": 0.95,
                             "maxSoakSeconds": 30}})");
  StartDevices([](int) { return Behaviour::kSucceed; }, /*telemetry=*/true);
  ASSERT_TRUE(WaitFor("select state = 'completed' from fleetwave.rollouts",
                      "the rollout to pass its health gates"));
  EXPECT_EQ(WaveStates(kRollout), "passed:passed passed:passed");
  EXPECT_THAT(History(), HasSubstr("\"verdict\": \"pass\""));
}

TEST_F(EngineTest, ApprovalBlocksTheWaveUntilApproved) {
  Fleet(10);
  StartEngine(R"({"waves": [{"percent": 20}, {"percent": 100}], "soakSeconds": 0,
                  "approval": {"beforeWaves": [2], "ttlSeconds": 3600}})");
  StartDevices([](int) { return Behaviour::kSucceed; });
  ASSERT_TRUE(WaitFor("select state = 'awaiting_approval' from fleetwave.rollouts",
                      "the rollout to wait for approval"));
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.job_executions"), 2);
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.approvals where state = 'pending' "
                           "and wave = 2 and length(token_hash) = 64"),
            1);
  {
    auto c = database_.Connect();
    pqxx::work txn(*c);
    EXPECT_EQ(db::ApplyOperatorCommand(txn, kRollout, fleet::Event::kApproved, "test"),
              fleet::RolloutState::kRunning);
    txn.commit();
  }
  ASSERT_TRUE(WaitFor("select state = 'completed' from fleetwave.rollouts",
                      "the rollout to complete after approval"));
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.devices where firmware = '2.0.0'"), 10);
}

TEST_F(EngineTest, OperatorPauseResumeAndAbortTakeEffectWithinAPass) {
  Fleet(10);
  StartEngine(R"({"waves": [{"percent": 20}, {"percent": 100}], "soakSeconds": 0,
                  "successThresholdPercent": 100})");
  StartDevices([](int) { return Behaviour::kSilent; });
  ASSERT_TRUE(WaitFor("select count(*) = 2 from fleetwave.job_executions", "wave 1 queued"));
  Command(fleet::Event::kOperatorPause);
  Command(fleet::Event::kOperatorResume);
  EXPECT_EQ(Query<std::string>("select state from fleetwave.rollouts"), "running");
  Command(fleet::Event::kOperatorAbort);
  // The controller cancels the queued executions of the aborted rollout.
  ASSERT_TRUE(
      WaitFor("select count(*) = 2 from fleetwave.job_executions "
              "where status in ('CANCELED', 'IN_PROGRESS')",
              "queued executions canceled"));
  EXPECT_EQ(WaveStates(kRollout), "canceled:- canceled:-");
  EXPECT_EQ(Query<std::string>("select state from fleetwave.releases"), "halted");
}

TEST_F(EngineTest, TwoControllersOneLeadsOneCycle) {
  Fleet(6);
  const std::string plan = R"({"waves": [{"percent": 50}, {"percent": 100}], "soakSeconds": 0})";
  Engine& a = StartEngine(plan);
  Engine& b = StartEngine(plan);
  StartDevices([](int) { return Behaviour::kSucceed; });
  ASSERT_TRUE(WaitFor("select state = 'completed' from fleetwave.rollouts", "the rollout"));
  EXPECT_NE(a.stats().leading, b.stats().leading);
  EXPECT_EQ(a.stats().leaderships + b.stats().leaderships, 1u);
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.cycles where state = 'running'"), 1);
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.job_executions"), 6);
  // The leader stops: the standby takes over within the lease TTL and keeps the machine going.
  Engine& leader = a.stats().leading ? a : b;
  Engine& standby = a.stats().leading ? b : a;
  leader.Stop();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!standby.stats().leading && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  EXPECT_TRUE(standby.stats().leading);
}

TEST_F(EngineTest, KillDashNineMidWaveThenRestartCompletesWithoutApplyingTwice) {
  Fleet(30);
  const std::string plan =
      R"({"waves": [{"percent": 10}, {"percent": 50}, {"percent": 100}], "soakSeconds": 3})";
  auto controller = StartControllerProcess(plan);
  ASSERT_TRUE(WaitFor("select count(*) = 1 from fleetwave.rollouts", "the cycle to be planned"));
  StartDevices([](int) { return Behaviour::kSucceed; });
  // Soaks count whole seconds, so a soak of 3 lasts 2 to 3 s: from wave 2's start the rollout
  // needs two of them to complete, a window a poll cannot miss on a loaded machine (a short
  // "running or soaking" window was missed once).
  ASSERT_TRUE(WaitFor("select state <> 'pending' from fleetwave.waves where wave = 2",
                      "wave 2 to start", 30s));
  ASSERT_EQ(Query<std::string>("select state from fleetwave.rollouts"), "running");
  controller->Signal(SIGKILL);
  ASSERT_EQ(controller->Wait(10000), 128 + SIGKILL);
  controller = StartControllerProcess(plan);
  ASSERT_TRUE(WaitFor("select state = 'completed' from fleetwave.rollouts",
                      "the restarted controller to complete the rollout"));
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.devices where firmware = '2.0.0'"), 30);
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.job_executions "
                           "where status = 'SUCCEEDED' and execution_number = 1"),
            30);
  for (const auto& d : devices_) EXPECT_EQ(d->attempts(), 1);  // no device acted twice
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.events where kind = 'wave_started' "
                           "and wave is not null"),
            3);
  EXPECT_EQ(Query<int64_t>("select epoch from fleetwave.leases"), 2);
}

TEST_F(EngineTest, TheWatchdogRestartsAKilledSupervisedController) {
  Fleet(6);
  std::vector<std::string> argv = {testing_support::FleetwaveBinary(),
                                   "watchdog",
                                   "--interval",
                                   "1",
                                   "--stale-after",
                                   "5",
                                   "--supervise",
                                   "--"};
  for (auto& a : ControllerArgv(R"({"waves": [{"percent": 100}], "soakSeconds": 0})"))
    argv.push_back(a);
  testing_support::BackgroundProcess watchdog(argv, Env(), Log("watchdog"));
  ASSERT_TRUE(WaitFor("select count(*) = 1 from fleetwave.leases where expires_at > now()",
                      "the supervised controller to lead"));
  const int first = LeaderPid();
  ASSERT_GT(first, 0);
  kill(first, SIGKILL);
  ASSERT_TRUE(WaitFor("select epoch = 2 from fleetwave.leases", "a restarted controller to lead"));
  EXPECT_NE(LeaderPid(), first);
  StartDevices([](int) { return Behaviour::kSucceed; });
  ASSERT_TRUE(WaitFor("select state = 'completed' from fleetwave.rollouts",
                      "the restarted controller to complete the rollout"));
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.cycles where state = 'running'"), 1);
  watchdog.Signal(SIGTERM);
  EXPECT_EQ(watchdog.Wait(20000), 0);
}

TEST_F(EngineTest, APostgresRestartMidWaveIsSurvived) {
  const char* stack = std::getenv("FLEETWAVE_TEST_STACK_DIR");
  if (!stack) GTEST_SKIP() << "FLEETWAVE_TEST_STACK_DIR is not set (scripts/test sets it)";
  Fleet(10);
  Engine& engine =
      StartEngine(R"({"waves": [{"percent": 20}, {"percent": 100}], "soakSeconds": 5})");
  StartDevices([](int) { return Behaviour::kSucceed; });
  // Once wave 1 met its threshold (a state that lasts; a poll can miss a short soak), the
  // rollout is mid-way: wave 1 soaking, or wave 2 under way.
  ASSERT_TRUE(WaitFor("select threshold_met_at is not null from fleetwave.waves where wave = 1",
                      "wave 1 to meet its threshold"));
  auto r = testing_support::RunProcess(
      {std::string(FLEETWAVE_SOURCE_DIR) + "/scripts/stack", "restart-postgres", "--dir", stack});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  ASSERT_TRUE(WaitFor("select state = 'completed' from fleetwave.rollouts",
                      "the rollout to complete after the restart"));
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.devices where firmware = '2.0.0'"), 10);
  EXPECT_TRUE(engine.stats().leading);
}

TEST_F(EngineTest, ADeviceThatKeepsFailingIsQuarantinedForTheRelease) {
  Fleet(4);
  StartEngine(R"({"waves": [{"percent": 100}], "abort": [], "successThresholdPercent": 50,
                  "maxAttemptsPerRelease": 2, "soakSeconds": 0, "cycleIntervalSeconds": 0})");
  StartDevices([](int i) { return i == 0 ? Behaviour::kFail : Behaviour::kSucceed; });
  ASSERT_TRUE(WaitFor("select count(*) = 1 from fleetwave.quarantines where thing_name = 'd00'",
                      "d00 to be quarantined"));
  // Cycle 2 offered it to d00 alone, which failed again: its gate paused the rollout. The
  // operator accepts that; no later cycle offers the release to the quarantined device.
  ASSERT_TRUE(WaitFor("select state = 'paused' from fleetwave.rollouts where cycle_id = 2",
                      "the second rollout to pause"));
  Command(fleet::Event::kOperatorResume, "fw-m1-2.0.0-c2");
  ASSERT_TRUE(WaitFor("select count(*) >= 3 from fleetwave.cycles where state = 'completed'",
                      "later cycles"));
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.rollouts"), 2);
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.events "
                           "where kind = 'device_quarantined' and detail->>'thing' = 'd00'"),
            1);
}

TEST_F(EngineTest, ANewerReleaseSupersedesTheRunningRolloutAfterItsCurrentWave) {
  Fleet(10);
  // Soaks count whole seconds: a soak of 5 lasts 4 to 5 s, long enough for a poll to see it on a
  // loaded machine (2 was missed once).
  StartEngine(R"({"waves": [{"percent": 20}, {"percent": 100}], "soakSeconds": 5,
                  "cycleIntervalSeconds": 0})");
  StartDevices([](int) { return Behaviour::kSucceed; });
  ASSERT_TRUE(
      WaitFor("select state = 'soaking' from fleetwave.waves where wave = 1", "wave 1 to soak"));
  {
    auto c = database_.Connect();
    db::Registry(*c).AddRelease({"m1", "3.0.0", "https://fw.example/m1-3.0.0.bin",
                                 std::string(64, 'b'), 1000, fleet::ReleaseState::kActive});
  }
  ASSERT_TRUE(
      WaitFor("select state = 'superseded' from fleetwave.rollouts where id = '" + kRollout + "'",
              "the 2.0.0 rollout to be superseded"));
  EXPECT_EQ(WaveStates(kRollout), "passed:passed canceled:-");
  ASSERT_TRUE(WaitFor("select count(*) = 10 from fleetwave.devices where firmware = '3.0.0'",
                      "every device on 3.0.0"));
}

TEST_F(EngineTest, AnExpiredApprovalPausesAndResumeAsksAgain) {
  Fleet(5);
  StartEngine(R"({"waves": [{"percent": 20}, {"percent": 100}], "soakSeconds": 0,
                  "approval": {"beforeWaves": [2], "ttlSeconds": 1}})");
  StartDevices([](int) { return Behaviour::kSucceed; });
  ASSERT_TRUE(WaitFor("select state = 'paused' from fleetwave.rollouts",
                      "the unapproved rollout to pause"));
  EXPECT_EQ(Query<std::string>("select string_agg(state, ',') from fleetwave.approvals"),
            "expired");
  Command(fleet::Event::kOperatorResume);
  ASSERT_TRUE(WaitFor("select count(*) = 2 from fleetwave.approvals", "a new approval"));
}

TEST_F(EngineTest, AnIdleMachineWaitsTheCycleIntervalBetweenCycles) {
  StartEngine(R"({"cycleIntervalSeconds": 3600})");
  ASSERT_TRUE(WaitFor("select count(*) = 1 from fleetwave.cycles where state = 'completed'",
                      "the empty first cycle to complete"));
  EXPECT_EQ(Query<int64_t>("select extract(epoch from r.not_before - c.finished_at)::bigint "
                           "from fleetwave.cycles r, fleetwave.cycles c "
                           "where r.state = 'running' and c.state = 'completed'"),
            3600);
  EXPECT_EQ(Query<int64_t>("select count(*) from fleetwave.cycles"), 2);
}

}  // namespace
}  // namespace controller
