// The watchdog: its decision exhaustively, and the checks and supervision against a real
// PostgreSQL and real child processes; the `fleetwave watchdog` command as users run it.
#include "controller/watchdog.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <functional>
#include <latch>
#include <sstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "tests/support/process.h"
#include "tests/support/test_database.h"

namespace {

using controller::ChildState;
using controller::CycleVerdict;
using controller::DecideWatchdog;
using controller::Watchdog;
using controller::WatchdogDecision;
using controller::WatchdogOptions;
using controller::WatchdogReport;
using testing::HasSubstr;
using testing_support::FleetwaveBinary;
using testing_support::ProcessResult;
using testing_support::RunProcess;
using testing_support::TestDatabase;
using namespace std::chrono_literals;

// Polls `done` until it holds or `timeout` passes; returns whether it held.
bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout = 15s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return done();
}

// True once `pid` is gone: neither running nor a zombie left unreaped.
bool Gone(pid_t pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

// ---- DecideWatchdog -------------------------------------------------------------------------

db::CycleHealth Health(int64_t running, double age, int64_t id = 7) {
  db::CycleHealth h;
  h.running = running;
  if (running > 0) h.cycle_id = id;
  h.heartbeat_age_seconds = age;
  return h;
}

TEST(DecideWatchdogTest, EveryCombination) {
  const double stale_after = 30;
  for (int64_t running : {0, 1, 2}) {
    for (double age : {0.0, 29.9, 30.0, 30.1, 3600.0}) {
      for (bool supervising : {false, true}) {
        for (bool child_running : {false, true}) {
          for (bool in_grace : {false, true}) {
            for (std::optional<int64_t> recorded :
                 {std::optional<int64_t>(), std::optional<int64_t>(7), std::optional<int64_t>(6)}) {
              SCOPED_TRACE(testing::Message()
                           << "running=" << running << " age=" << age
                           << " supervising=" << supervising << " child_running=" << child_running
                           << " in_grace=" << in_grace << " recorded=" << recorded.value_or(-1));
              ChildState child{supervising, child_running, in_grace};
              WatchdogDecision d =
                  DecideWatchdog(Health(running, age), stale_after, child, recorded);
              const bool stale = age > stale_after;
              const bool not_judged = stale && supervising && child_running && in_grace;
              // Starts a cycle exactly when none runs.
              EXPECT_EQ(d.start_cycle, running == 0);
              if (running == 0) {
                EXPECT_EQ(d.verdict, CycleVerdict::kNone);
                EXPECT_FALSE(d.stale_recorded_for);
              } else if (running == 2) {
                EXPECT_EQ(d.verdict, CycleVerdict::kSeveral);
                EXPECT_EQ(d.stale_recorded_for, recorded);
              } else if (!stale) {
                EXPECT_EQ(d.verdict, CycleVerdict::kFresh);
                EXPECT_FALSE(d.stale_recorded_for);  // the episode ends
              } else if (not_judged) {
                EXPECT_EQ(d.verdict, CycleVerdict::kNotJudged);
                EXPECT_EQ(d.stale_recorded_for, recorded);
              } else {
                EXPECT_EQ(d.verdict, CycleVerdict::kStale);
                EXPECT_EQ(d.stale_recorded_for, std::optional<int64_t>(7));
              }
              const bool judged_stale = d.verdict == CycleVerdict::kStale;
              // Recorded once per episode: unless this cycle's episode already was.
              EXPECT_EQ(d.record_stale, judged_stale && recorded != 7);
              // Restarts only a command that runs, only when it is judged stale.
              EXPECT_EQ(d.restart_child, judged_stale && supervising && child_running);
            }
          }
        }
      }
    }
  }
}

TEST(DecideWatchdogTest, AnEpisodeEndsWithAFreshHeartbeatOrAnotherCycle) {
  ChildState none;
  auto d = DecideWatchdog(Health(1, 100), 30, none, std::nullopt);
  EXPECT_TRUE(d.record_stale);
  d = DecideWatchdog(Health(1, 130), 30, none, d.stale_recorded_for);
  EXPECT_FALSE(d.record_stale);
  d = DecideWatchdog(Health(1, 100, /*id=*/8), 30, none, d.stale_recorded_for);
  EXPECT_TRUE(d.record_stale) << "another cycle is another episode";
  d = DecideWatchdog(Health(1, 1, 8), 30, none, d.stale_recorded_for);
  EXPECT_EQ(d.verdict, CycleVerdict::kFresh);
  d = DecideWatchdog(Health(1, 100, 8), 30, none, d.stale_recorded_for);
  EXPECT_TRUE(d.record_stale) << "stale again after fresh is a new episode";
}

TEST(WatchdogReportTest, DescribesWhatItSawAndDid) {
  WatchdogReport r;
  r.stale_after_seconds = 30;
  r.error = "cannot connect to PostgreSQL at 127.0.0.1:1/x";
  EXPECT_THAT(r.Describe(), HasSubstr("database unreachable: cannot connect"));
  r.error.reset();
  r.verdict = CycleVerdict::kNone;
  r.started_cycle = 4;
  EXPECT_EQ(r.Describe(), "no running cycle: started cycle 4");
  r.verdict = CycleVerdict::kStale;
  r.health = Health(1, 3600.04, 4);
  r.stale_recorded = true;
  r.restarted = true;
  EXPECT_EQ(r.Describe(),
            "cycle 4 running, heartbeat 3600.0 s old: stale (older than 30 s); recorded "
            "heartbeat_stale; restarted the supervised controller");
}

// ---- Against PostgreSQL ---------------------------------------------------------------------

class WatchdogTest : public ::testing::Test {
 protected:
  pqxx::result Sql(const std::string& sql) {
    auto conn = database_.Connect();
    pqxx::work txn(*conn);
    pqxx::result r = txn.exec(sql);
    txn.commit();
    return r;
  }
  int64_t Count(const std::string& sql) { return Sql(sql)[0][0].as<int64_t>(); }
  int64_t Running() {
    return Count("select count(*) from fleetwave.cycles where state = 'running'");
  }
  int64_t StaleEvents() {
    return Count("select count(*) from fleetwave.events where kind = 'heartbeat_stale'");
  }
  int64_t StartCycle(const std::string& by = "controller") {
    auto conn = database_.Connect();
    pqxx::work txn(*conn);
    auto id = db::StartCycle(txn, by);
    txn.commit();
    return id.value();
  }
  void MakeHeartbeatStale() {
    Sql("update fleetwave.cycles set heartbeat_at = now() - interval '1 hour' "
        "where state = 'running'");
  }
  WatchdogOptions Options() {
    WatchdogOptions o;
    o.db = database_.conninfo();
    o.interval = 50ms;
    o.backoff_initial = 50ms;
    o.stop_grace = 2s;
    return o;
  }
  TestDatabase database_;
};

// A watchdog whose Run() runs on a thread until Stop() or its end.
class RunningWatchdog {
 public:
  explicit RunningWatchdog(WatchdogOptions options)
      : watchdog_(std::move(options)), thread_([this] {
          try {
            watchdog_.Run();
          } catch (const std::exception& e) {
            ADD_FAILURE() << "Run() threw: " << e.what();
          }
        }) {}
  ~RunningWatchdog() { Stop(); }
  void Stop() {
    if (!thread_.joinable()) return;
    watchdog_.Stop();
    thread_.join();
  }
  Watchdog* operator->() { return &watchdog_; }

 private:
  Watchdog watchdog_;
  std::thread thread_;
};

TEST_F(WatchdogTest, StartsACycleWhenNoneRuns) {
  Watchdog watchdog(Options());
  WatchdogReport r = watchdog.CheckOnce();
  ASSERT_FALSE(r.error) << *r.error;
  EXPECT_EQ(r.verdict, CycleVerdict::kNone);
  ASSERT_TRUE(r.started_cycle);
  EXPECT_EQ(Running(), 1);
  EXPECT_EQ(Count("select count(*) from fleetwave.events where kind = 'cycle_started' "
                  "and detail->>'by' = 'watchdog'"),
            1);
  r = watchdog.CheckOnce();  // now it is running and fresh
  EXPECT_EQ(r.verdict, CycleVerdict::kFresh);
  EXPECT_FALSE(r.started_cycle);
  EXPECT_EQ(Count("select count(*) from fleetwave.cycles"), 1);
}

TEST_F(WatchdogTest, LeavesARunningFreshCycleAlone) {
  const int64_t id = StartCycle();
  Watchdog watchdog(Options());
  WatchdogReport r = watchdog.CheckOnce();
  ASSERT_FALSE(r.error) << *r.error;
  EXPECT_EQ(r.verdict, CycleVerdict::kFresh);
  EXPECT_EQ(r.health.cycle_id, id);
  EXPECT_FALSE(r.started_cycle);
  EXPECT_FALSE(r.stale_recorded);
  EXPECT_EQ(Count("select count(*) from fleetwave.cycles"), 1);
  EXPECT_EQ(Count("select count(*) from fleetwave.events"), 1);  // only its cycle_started
}

TEST_F(WatchdogTest, ConcurrentWatchdogsStartExactlyOneCycle) {
  constexpr int kWatchdogs = 8;
  std::vector<std::unique_ptr<Watchdog>> watchdogs;
  for (int i = 0; i < kWatchdogs; ++i) watchdogs.push_back(std::make_unique<Watchdog>(Options()));
  for (int round = 0; round < 3; ++round) {
    // The previous cycle completes; every watchdog races to start the next one.
    Sql("update fleetwave.cycles set state = 'completed', finished_at = now() "
        "where state = 'running'");
    std::latch ready(kWatchdogs);
    std::vector<WatchdogReport> reports(kWatchdogs);
    std::vector<std::thread> threads;
    for (int i = 0; i < kWatchdogs; ++i) {
      threads.emplace_back([&, i] {
        ready.arrive_and_wait();
        reports[i] = watchdogs[i]->CheckOnce();
      });
    }
    for (auto& t : threads) t.join();
    int started = 0;
    for (const auto& r : reports) {
      ASSERT_FALSE(r.error) << *r.error;
      if (r.started_cycle) ++started;
    }
    EXPECT_EQ(started, 1) << "round " << round;
    EXPECT_EQ(Running(), 1);
    EXPECT_EQ(Count("select count(*) from fleetwave.cycles"), round + 1);
  }
}

TEST_F(WatchdogTest, RecordsAStaleHeartbeatOncePerEpisode) {
  const int64_t id = StartCycle();
  MakeHeartbeatStale();
  Watchdog watchdog(Options());
  WatchdogReport r = watchdog.CheckOnce();
  ASSERT_FALSE(r.error) << *r.error;
  EXPECT_EQ(r.verdict, CycleVerdict::kStale);
  EXPECT_TRUE(r.stale_recorded);
  EXPECT_FALSE(r.restarted);
  auto event =
      Sql("select cycle_id, detail::text from fleetwave.events "
          "where kind = 'heartbeat_stale'");
  ASSERT_EQ(event.size(), 1u);
  EXPECT_EQ(event[0][0].as<int64_t>(), id);
  auto detail = nlohmann::json::parse(event[0][1].as<std::string>());
  EXPECT_GE(detail["ageSeconds"].get<double>(), 3600);
  EXPECT_EQ(detail["staleAfterSeconds"].get<double>(), 30);

  // Still stale at the next check: the same episode, not recorded again.
  r = watchdog.CheckOnce();
  EXPECT_EQ(r.verdict, CycleVerdict::kStale);
  EXPECT_FALSE(r.stale_recorded);
  EXPECT_EQ(StaleEvents(), 1);
  EXPECT_FALSE(r.started_cycle);
  EXPECT_EQ(Running(), 1);

  // The controller beats again, then stalls again: a new episode.
  Sql("update fleetwave.cycles set heartbeat_at = now() where state = 'running'");
  EXPECT_EQ(watchdog.CheckOnce().verdict, CycleVerdict::kFresh);
  MakeHeartbeatStale();
  EXPECT_TRUE(watchdog.CheckOnce().stale_recorded);
  EXPECT_EQ(StaleEvents(), 2);
}

TEST_F(WatchdogTest, AnUnreachableDatabaseIsReportedNotThrown) {
  WatchdogOptions o = Options();
  o.db = "postgresql://fleetwave@127.0.0.1:1/fleetwave";
  Watchdog watchdog(o);
  WatchdogReport r = watchdog.CheckOnce();
  ASSERT_TRUE(r.error);
  EXPECT_THAT(*r.error, HasSubstr("127.0.0.1:1"));
  EXPECT_EQ(r.verdict, CycleVerdict::kUnknown);
  EXPECT_THAT(r.Describe(), HasSubstr("database unreachable"));
}

// ---- Supervising ----------------------------------------------------------------------------

TEST_F(WatchdogTest, RestartsACommandThatDies) {
  WatchdogOptions o = Options();
  o.supervise = {"sleep", "1000"};
  RunningWatchdog watchdog(o);
  ASSERT_TRUE(WaitUntil([&] { return watchdog->child_pid() != 0; }));
  const pid_t first = watchdog->child_pid();
  ASSERT_EQ(kill(first, SIGKILL), 0);
  ASSERT_TRUE(WaitUntil([&] {
    return watchdog->child_pid() != 0 && watchdog->child_pid() != first;
  })) << "not restarted";
  EXPECT_TRUE(WaitUntil([&] { return Gone(first); })) << "the dead command was not reaped";
  EXPECT_EQ(watchdog->child_starts(), 2);
  // It also did its database work meanwhile: one cycle, started by it.
  EXPECT_TRUE(WaitUntil([&] { return Running() == 1; }));

  const pid_t second = watchdog->child_pid();
  watchdog.Stop();
  EXPECT_EQ(watchdog->child_pid(), 0);
  EXPECT_TRUE(Gone(second)) << "Run() returned without stopping and reaping the command";
}

TEST_F(WatchdogTest, RestartsTheSupervisedControllerWhenItsHeartbeatIsStale) {
  StartCycle();
  MakeHeartbeatStale();
  WatchdogOptions o = Options();
  o.supervise = {"sleep", "1000"};
  o.stale_after = 300ms;  // also the grace a (re)started command gets before it is judged
  RunningWatchdog watchdog(o);
  ASSERT_TRUE(WaitUntil([&] { return watchdog->child_pid() != 0; }));
  const pid_t first = watchdog->child_pid();
  ASSERT_TRUE(WaitUntil([&] {
    return watchdog->child_pid() != 0 && watchdog->child_pid() != first;
  })) << "not restarted";
  EXPECT_TRUE(WaitUntil([&] { return Gone(first); }));
  EXPECT_EQ(StaleEvents(), 1);
  auto detail = nlohmann::json::parse(
      Sql("select detail::text from fleetwave.events where kind = 'heartbeat_stale'")[0][0]
          .as<std::string>());
  EXPECT_EQ(detail["restarting"], true);
  // Still stale: the restarted command gets its grace, is restarted again, and the episode is
  // still recorded once.
  const pid_t second = watchdog->child_pid();
  ASSERT_TRUE(
      WaitUntil([&] { return watchdog->child_pid() != 0 && watchdog->child_pid() != second; }));
  EXPECT_EQ(StaleEvents(), 1);
  EXPECT_EQ(Running(), 1);
}

TEST_F(WatchdogTest, NoRestartWhileTheHeartbeatIsFresh) {
  StartCycle();
  WatchdogOptions o = Options();
  o.supervise = {"sleep", "1000"};
  o.stale_after = 500ms;
  RunningWatchdog watchdog(o);
  // The controller beats while the watchdog checks 30 times (1.5 s: three grace periods).
  EXPECT_TRUE(WaitUntil([&] {
    Sql("update fleetwave.cycles set heartbeat_at = now() where state = 'running'");
    return watchdog->checks() >= 30;
  }));
  EXPECT_EQ(watchdog->child_starts(), 1);
  EXPECT_EQ(StaleEvents(), 0);
}

TEST_F(WatchdogTest, AStubbornCommandIsKilledAfterTheGrace) {
  WatchdogOptions o = Options();
  // Ignores SIGTERM (its sleeps do not, so the loop stays responsive).
  o.supervise = {"sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"};
  o.stop_grace = 300ms;
  RunningWatchdog watchdog(o);
  ASSERT_TRUE(WaitUntil([&] { return watchdog->child_pid() != 0; }));
  const pid_t pid = watchdog->child_pid();
  const auto start = std::chrono::steady_clock::now();
  watchdog.Stop();
  EXPECT_GE(std::chrono::steady_clock::now() - start, 300ms) << "SIGKILL before the grace";
  EXPECT_TRUE(Gone(pid));
}

TEST_F(WatchdogTest, SupervisesOnWhileTheDatabaseIsUnreachable) {
  WatchdogOptions o = Options();
  o.db = "postgresql://fleetwave@127.0.0.1:1/fleetwave";
  o.supervise = {"sleep", "1000"};
  RunningWatchdog watchdog(o);
  ASSERT_TRUE(WaitUntil([&] { return watchdog->child_pid() != 0; }));
  const pid_t first = watchdog->child_pid();
  kill(first, SIGKILL);
  EXPECT_TRUE(
      WaitUntil([&] { return watchdog->child_pid() != 0 && watchdog->child_pid() != first; }));
}

TEST_F(WatchdogTest, ACommandThatCannotRunIsAnError) {
  WatchdogOptions o = Options();
  o.supervise = {"/nonexistent/fleetwave-controller"};
  Watchdog watchdog(o);
  try {
    watchdog.Run();
    FAIL() << "Run() accepted a command that cannot run";
  } catch (const controller::CommandError& e) {
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/fleetwave-controller"));
    EXPECT_THAT(e.what(), HasSubstr("No such file"));
  }
  EXPECT_EQ(watchdog.child_pid(), 0);
}

// ---- The command line -----------------------------------------------------------------------

class WatchdogCliTest : public WatchdogTest {
 protected:
  ProcessResult Run(std::vector<std::string> args) {
    args.insert(args.begin(), {FleetwaveBinary(), "watchdog"});
    return RunProcess(args, {{"FLEETWAVE_DB", database_.conninfo()}});
  }
  void Usage(const std::vector<std::string>& args, std::initializer_list<const char*> parts) {
    ProcessResult r = Run(args);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    for (const char* p : parts) EXPECT_THAT(r.err, HasSubstr(p));
  }
};

TEST_F(WatchdogCliTest, HelpHasAnExample) {
  ProcessResult r = Run({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.out, HasSubstr("Example:\n  fleetwave watchdog"));
  EXPECT_THAT(r.out, HasSubstr("--stale-after"));
}

TEST_F(WatchdogCliTest, OnceChecksPrintsAndExits) {
  ProcessResult r = Run({"--once"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("no running cycle: started cycle"));
  r = Run({"--once"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("fresh (stale after 30 s)"));
  MakeHeartbeatStale();
  r = Run({"--once", "--stale-after", "60"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("stale (older than 60 s); recorded heartbeat_stale"));
  EXPECT_EQ(Running(), 1);
}

TEST_F(WatchdogCliTest, OnceWithAnUnreachableDatabaseExits1) {
  ProcessResult r =
      RunProcess({FleetwaveBinary(), "--db", "postgresql://fleetwave@127.0.0.1:1/fleetwave",
                  "watchdog", "--once"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("127.0.0.1:1/fleetwave"));
}

TEST_F(WatchdogCliTest, BadFlagsAreUsageErrorsNamingTheFlag) {
  Usage({"--interval", "0"}, {"--interval 0 is invalid"});
  Usage({"--interval", "-1", "--once"}, {"--interval"});
  Usage({"--stale-after", "0"}, {"--stale-after"});
  Usage({"--stop-grace", "-1"}, {"--stop-grace"});
  Usage({"--interval", "soon"}, {"--interval"});
  Usage({"--supervise"}, {"--supervise needs a command after `--`"});
  Usage({"--", "sleep", "1"}, {"--supervise -- sleep"});
  Usage({"--once", "--supervise", "--", "sleep", "1"}, {"--once", "--supervise"});
  Usage({"--supervise", "--", "/nonexistent/controller"},
        {"--supervise", "/nonexistent/controller", "No such file"});
  ProcessResult r = RunProcess({FleetwaveBinary(), "watchdog", "--once"}, {{"FLEETWAVE_DB", ""}});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("FLEETWAVE_DB"));
}

// The pids of `pid`'s children (Linux: /proc/PID/task/PID/children).
std::vector<pid_t> Children(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> pids;
  for (pid_t p; in >> p;) pids.push_back(p);
  return pids;
}

TEST_F(WatchdogCliTest, SigtermStopsTheWatchdogAndItsCommand) {
  const std::string binary = FleetwaveBinary();
  const std::string db = database_.conninfo();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    dup2(null, 2);
    setenv("FLEETWAVE_DB", db.c_str(), 1);
    execl(binary.c_str(), binary.c_str(), "watchdog", "--interval", "0.1", "--supervise", "--",
          "sleep", "1000", static_cast<char*>(nullptr));
    _exit(127);
  }
  std::vector<pid_t> children;
  EXPECT_TRUE(WaitUntil([&] { return !(children = Children(pid)).empty(); }));
  EXPECT_TRUE(WaitUntil([&] { return Running() == 1; })) << "it did not start a cycle";
  kill(pid, SIGTERM);
  int status = -1;
  EXPECT_TRUE(WaitUntil([&] { return waitpid(pid, &status, WNOHANG) == pid; }));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  for (pid_t child : children) EXPECT_TRUE(Gone(child)) << "command " << child << " survived";
}

}  // namespace
