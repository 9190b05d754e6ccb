// bench/plan: planning a cycle and queuing its first wave over a large registered fleet.
//
// Setup (not timed, printed apart): registers a simulated fleet (default 1,000,000 devices of two
// models on 1.0.0, a few in the canary ring) with the registry's bulk import, publishes release
// 2.0.0 of each model, and runs VACUUM ANALYZE (as autovacuum would have on a registered fleet)
// and a CHECKPOINT, so each timed part starts in the same state.
// Then, against the real stack:
//   A. plan alone: StartCycle, db::PlanCycle and commit in one transaction (every device's
//      rollout position, the waves), timed on the freshly imported fleet;
//   B. the controller: the cycle tables are emptied, a running cycle that is due to plan is
//      created (as the previous cycle's completion or the watchdog leaves it), and the real
//      controller::Engine (leader lease, jobs service on the bench broker, the default plan) is
//      started. Timed from Engine::Start() until every rollout's wave 1 has waves.queued =
//      waves.planned and all its job_executions exist (polled on another connection), with the
//      moment the planned rollouts became visible in between.
// The headline is B's total, Engine::Start() to the first wave queued, planning included.
// Target (issue 4): at most 10 s over 1,000,000 devices on a 2-core machine.
//
// --explain prints EXPLAIN ANALYZE of every statement of A (auto_explain at NOTICE level) and
// logs the plans of B's statements slower than 50 ms to the PostgreSQL server log; its times
// include the instrumentation, so it is for profiling, not for the figures.
#include <sys/utsname.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "bench/bench_db.h"
#include "controller/engine.h"
#include "db/connection.h"
#include "db/migrator.h"
#include "db/registry.h"
#include "db/rollouts.h"
#include "simulator/fleet_spec.h"

namespace {

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

constexpr double kTargetSeconds = 10;

double Since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Prints the server's notices (auto_explain's plans in --explain mode).
class PrintNotices : public pqxx::errorhandler {
 public:
  explicit PrintNotices(pqxx::connection_base& conn) : pqxx::errorhandler(conn) {}
  bool operator()(const char msg[]) noexcept override {
    std::fputs(msg, stdout);
    return false;
  }
};

void Exec(pqxx::connection& conn, const std::string& sql) { pqxx::nontransaction(conn).exec(sql); }

// What the poller sees of the cycle's rollouts: how many exist, and how many have wave 1 fully
// queued. waves.queued commits with the wave's executions (one transaction per chunk), so the
// poll stays cheap and the executions are counted once at the end.
struct Progress {
  int64_t rollouts = 0;
  int64_t wave1_queued = 0;
};

Progress ReadProgress(pqxx::connection& conn, int64_t cycle_id) {
  pqxx::read_transaction txn(conn);
  auto row = txn.exec_params1(
      "select count(*), count(*) filter (where w.queued = w.planned) "
      "from fleetwave.rollouts r join fleetwave.waves w on w.rollout_id = r.id and w.wave = 1 "
      "where r.cycle_id = $1",
      cycle_id);
  return {row[0].as<int64_t>(), row[1].as<int64_t>()};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark: planning a cycle and queuing its first wave over a large fleet"};
  simulator::FleetSpec spec;
  spec.devices = 1000000;
  spec.canary_per_mille = 1;
  spec.id_prefix = "p";
  int poll_ms = 20;
  int deadline_seconds = 300;
  bool explain = false;
  bool keep = false;
  std::string json_path = "bench/results/plan.json";
  app.add_option("--devices", spec.devices, "Registered devices (two models)")
      ->capture_default_str();
  app.add_option("--canary-per-mille", spec.canary_per_mille,
                 "Devices in the canary ring, per 1000")
      ->capture_default_str();
  app.add_option("--poll-ms", poll_ms, "How often the database is polled for the queued wave")
      ->capture_default_str();
  app.add_option("--deadline", deadline_seconds, "Give up waiting for wave 1 after this (s)")
      ->capture_default_str();
  app.add_flag("--explain", explain,
               "Profile: EXPLAIN ANALYZE of the planning statements (figures are instrumented)");
  app.add_flag("--keep", keep,
               "Keep the scratch database fleetwave_bench_plan (for psql, after "
               "scripts/stack up --dir .fleetwave/bench-stack)");
  app.add_option("--json", json_path, "Where to write the figures")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const char* broker = std::getenv("FLEETWAVE_MQTT");
  if (!broker || !*broker) {
    std::fprintf(stderr, "FLEETWAVE_DB and FLEETWAVE_MQTT must be set: run bench/plan\n");
    return 2;
  }
  const std::string name = "fleetwave_bench_plan";
  auto scratch = bench::MakeScratchDatabase(name, "bench/plan");
  if (!scratch) return 2;
  // The engine measured runs as the application; `conn` is the owner's, for the setup, the
  // TRUNCATE between phases. VACUUM of the whole database, CHECKPOINT and auto_explain need a
  // superuser: bench/with_stack passes the stack's own in FLEETWAVE_BENCH_SUPERUSER.
  const std::string conninfo = scratch->app;
  auto conn = db::Connect(scratch->owner);
  const char* superuser_env = std::getenv("FLEETWAVE_BENCH_SUPERUSER");
  auto superuser = db::Connect(
      superuser_env && *superuser_env ? db::WithDatabase(superuser_env, name) : scratch->owner);

  // ---- Setup: the fleet and one newer release per model (not timed) ----
  std::printf("bench/plan: %lld devices of %zu models, %d per mille in the canary ring\n",
              static_cast<long long>(spec.devices), spec.models.size(), spec.canary_per_mille);
  auto start = Clock::now();
  {
    std::stringstream csv;
    simulator::WriteFleetCsv(spec, csv);
    db::ImportReport report = db::Registry(*conn).ImportDevices(csv);
    if (!report.ok() || report.imported != spec.devices) {
      std::fprintf(stderr, "bench/plan: import failed: %s\n",
                   report.problems.empty() ? "?" : report.problems[0].reason.c_str());
      return 1;
    }
  }
  db::Registry registry(*conn);
  for (const auto& model : spec.models)
    registry.AddRelease({model, "2.0.0", "https://fw.example/" + model + "-2.0.0.bin",
                         std::string(64, 'a'), 1000000, fleet::ReleaseState::kActive});
  const double import_seconds = Since(start);
  start = Clock::now();
  // A checkpoint before each timed part: otherwise one that the import's WAL triggers may run
  // during it, and its full-page writes double the WAL and the time (measured: 31 s vs 17 s).
  Exec(*superuser, "vacuum (analyze)");  // the owner could not vacuum the catalogs
  Exec(*superuser, "checkpoint");
  const double vacuum_seconds = Since(start);
  int64_t canaries = 0;
  {
    pqxx::read_transaction txn(*conn);
    canaries =
        txn.exec1("select count(*) from fleetwave.devices where ring = 'canary'")[0].as<int64_t>();
  }
  std::printf(
      "setup (not timed): import %.1f s, vacuum analyze and checkpoint %.1f s; %lld canaries\n",
      import_seconds, vacuum_seconds, static_cast<long long>(canaries));

  // ---- A. PlanCycle alone, on the fresh fleet ----
  const fleet::Plan plan;  // the default plan: waves 1% (at least 1), 10%, 50%, 100%
  std::optional<PrintNotices> notices;
  // LOAD 'auto_explain' is a superuser's: with --explain, A runs on that connection.
  pqxx::connection& a_conn = explain ? *superuser : *conn;
  if (explain) {
    notices.emplace(a_conn);
    Exec(a_conn,
         "load 'auto_explain'; set auto_explain.log_min_duration = 0; "
         "set auto_explain.log_analyze = on; set auto_explain.log_buffers = on; "
         "set auto_explain.log_level = notice");
  }
  std::vector<std::string> rollout_ids;
  start = Clock::now();
  {
    pqxx::work txn(a_conn);
    auto cycle = db::StartCycle(txn, "bench");
    rollout_ids = db::PlanCycle(txn, *cycle, plan);
    txn.commit();
  }
  const double plan_seconds = Since(start);
  if (explain) {
    Exec(a_conn, "set auto_explain.log_min_duration = -1");
    notices.reset();
  }
  int64_t plan_targets = 0;
  {
    pqxx::read_transaction txn(*conn);
    plan_targets = txn.exec1("select count(*) from fleetwave.rollout_targets")[0].as<int64_t>();
  }
  std::printf(
      "A. PlanCycle (StartCycle, PlanCycle, commit; one transaction): %.2f s, "
      "%zu rollouts, %lld targets\n",
      plan_seconds, rollout_ids.size(), static_cast<long long>(plan_targets));

  // ---- B. The controller: Engine::Start() until every rollout's wave 1 is queued ----
  Exec(*conn,
       "truncate fleetwave.events, fleetwave.outbox, fleetwave.job_executions, fleetwave.waves, "
       "fleetwave.rollout_order, fleetwave.approvals, fleetwave.rollouts, fleetwave.cycles, "
       "fleetwave.leases restart identity");
  Exec(*superuser, "vacuum (analyze)");  // the owner could not vacuum the catalogs
  Exec(*superuser, "checkpoint");
  int64_t cycle_id = 0;
  {
    pqxx::work txn(*conn);
    cycle_id = *db::StartCycle(txn, "bench");
    txn.commit();
  }
  if (explain) {
    Exec(*superuser, "alter database " + name +
                         " set session_preload_libraries = 'auto_explain'; alter database " + name +
                         " set auto_explain.log_min_duration = '50ms'; alter database " + name +
                         " set auto_explain.log_analyze = on");
  }
  controller::EngineOptions engine_options;  // as `fleetwave controller` by default
  engine_options.plan = plan;
  controller::JobsServiceOptions jobs_options;
  jobs_options.db = conninfo;
  jobs_options.mqtt_uri = broker;
  jobs_options.client_id = "fleetwave-bench-plan";
  auto poll = db::Connect(conninfo);
  controller::Engine engine(engine_options, jobs_options);
  const auto deadline = std::chrono::seconds(deadline_seconds);
  double leader_seconds = -1, planned_seconds = -1, total_seconds = -1;
  Progress progress;
  double db_start = 0;  // Engine::Start() by the database clock
  {
    pqxx::nontransaction txn(*poll);
    db_start = txn.exec1("select extract(epoch from clock_timestamp())::float8")[0].as<double>();
  }
  start = Clock::now();
  engine.Start();
  while (Clock::now() - start < deadline) {
    if (leader_seconds < 0 && engine.stats().leading) leader_seconds = Since(start);
    progress = ReadProgress(*poll, cycle_id);
    const double t = Since(start);
    if (planned_seconds < 0 && progress.rollouts > 0) planned_seconds = t;
    if (progress.rollouts > 0 && progress.wave1_queued == progress.rollouts) {
      total_seconds = t;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
  engine.Stop();
  if (explain) Exec(*superuser, "alter database " + name + " reset all");
  if (total_seconds < 0) {
    std::fprintf(stderr, "bench/plan: wave 1 not queued within %d s (%lld of %lld rollouts)\n",
                 deadline_seconds, static_cast<long long>(progress.wave1_queued),
                 static_cast<long long>(progress.rollouts));
    return 1;
  }
  const double queue_seconds = total_seconds - planned_seconds;

  // What wave 1 holds: its size, its executions (each one of a wave-1 target of its rollout),
  // and the canaries first. When the engine's planning transaction began (cycles.planned_at is
  // its now()), by the database clock.
  int64_t first_wave = 0, executions = 0, first_wave_canaries = 0, engine_targets = 0;
  double plan_began_seconds = 0;
  {
    pqxx::read_transaction txn(*conn);
    auto r = txn.exec_params1(
        "select (select coalesce(sum(planned), 0) from fleetwave.waves where wave = 1), "
        "(select count(*) from (select job_id, thing_name from fleetwave.job_executions "
        "   where wave = 1 and status = 'QUEUED' intersect "
        "   select rollout_id, thing_name from fleetwave.rollout_targets where wave = 1) x), "
        "(select count(*) from fleetwave.rollout_targets t join fleetwave.devices d "
        "   on d.id = t.thing_name where t.wave = 1 and d.ring = 'canary'), "
        "(select count(*) from fleetwave.rollout_targets), "
        "(select extract(epoch from planned_at)::float8 - $1 from fleetwave.cycles where id = $2)",
        db_start, cycle_id);
    plan_began_seconds = r[4].as<double>();
    first_wave = r[0].as<int64_t>();
    executions = r[1].as<int64_t>();
    first_wave_canaries = r[2].as<int64_t>();
    engine_targets = r[3].as<int64_t>();
  }
  const bool consistent = executions == first_wave && engine_targets == spec.devices &&
                          plan_targets == spec.devices &&
                          first_wave_canaries == std::min(canaries, first_wave);
  const bool pass = consistent && !explain && total_seconds <= kTargetSeconds;

  std::printf("B. controller (Engine::Start() to wave 1 queued, default plan):\n");
  std::printf("   %-44s %8.2f s\n", "leader (lease acquired)", leader_seconds);
  std::printf("   %-44s %8.2f s\n", "first pass began planning", plan_began_seconds);
  std::printf("   %-44s %8.2f s\n", "cycle planned (rollouts committed)", planned_seconds);
  std::printf("   %-44s %8.2f s  (%lld executions, chunks of %lld)\n",
              "then wave 1 queued (waves.queued = planned)", queue_seconds,
              static_cast<long long>(first_wave), static_cast<long long>(engine_options.chunk));
  std::printf("   %-44s %8.2f s\n", "total", total_seconds);
  std::printf(
      "\n| devices | PlanCycle alone | engine: planned | + wave 1 queued | total | target |\n");
  std::printf("|---|---|---|---|---|---|\n");
  std::printf("| %lld | %.2f s | %.2f s | %.2f s (%lld devices) | **%.2f s** | <= %.0f s |\n",
              static_cast<long long>(spec.devices), plan_seconds, planned_seconds, queue_seconds,
              static_cast<long long>(first_wave), total_seconds, kTargetSeconds);
  if (!consistent)
    std::printf(
        "INCONSISTENT: %lld executions for %lld wave-1 devices, %lld/%lld targets, "
        "%lld canaries in wave 1 of %lld\n",
        static_cast<long long>(executions), static_cast<long long>(first_wave),
        static_cast<long long>(plan_targets), static_cast<long long>(engine_targets),
        static_cast<long long>(first_wave_canaries), static_cast<long long>(canaries));
  if (explain) std::printf("--explain: times include EXPLAIN ANALYZE instrumentation\n");
  std::printf(
      "target: queue the first wave and plan a cycle over %lld devices in <= %.0f s -> %s\n",
      static_cast<long long>(spec.devices), kTargetSeconds, pass ? "met" : "NOT met");

  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  utsname host{};
  uname(&host);
  Json figures = {
      {"benchmark", "plan"},
      {"date", date},
      {"machine", {{"cpus", std::thread::hardware_concurrency()}, {"kernel", host.release}}},
      {"devices", spec.devices},
      {"models", spec.models.size()},
      {"canaries", canaries},
      {"rollouts", rollout_ids.size()},
      {"setup", {{"import_seconds", import_seconds}, {"vacuum_analyze_seconds", vacuum_seconds}}},
      {"plan_seconds", plan_seconds},
      {"engine",
       {{"leader_seconds", leader_seconds},
        {"plan_began_seconds", plan_began_seconds},
        {"planned_seconds", planned_seconds},
        {"queue_seconds", queue_seconds},
        {"total_seconds", total_seconds},
        {"chunk", engine_options.chunk},
        {"poll_ms", poll_ms}}},
      {"first_wave_devices", first_wave},
      {"first_wave_canaries", first_wave_canaries},
      {"queue_seconds", queue_seconds},
      {"total_seconds", total_seconds},
      {"target_seconds", kTargetSeconds},
      {"consistent", consistent},
      {"instrumented", explain},
      {"pass", pass},
  };
  std::filesystem::create_directories(std::filesystem::path(json_path).parent_path());
  std::ofstream(json_path) << figures.dump(2) << "\n";
  std::printf("wrote %s\n", json_path.c_str());
  conn.reset();
  poll.reset();
  if (keep)
    std::printf("kept database %s\n", name.c_str());
  else
    db::DropDatabase(scratch->admin, name);
  return pass || (explain && consistent) ? 0 : 1;
}
