// bench/rollout: a whole rollout, end to end, on the local stack.
//
// Registers a fleet of one model on 1.0.0, starts `fleetwave controller --plan` as its own
// process (waves 1/10/50/100 %, no soak, no health gate), plays the fleet with the simulator (in
// this process, over libmosquitto) until every device's boot request is answered, then publishes
// release 2.0.0 and waits until every device reports SUCCEEDED. Prints, and writes as JSON: wall
// time from the first notice (the first execution queued: its notice commits with it) to the last
// SUCCEEDED, devices/s, MQTT messages/s through the broker (counted at the devices: every request
// and answer, notice and telemetry report crosses the broker once), controller CPU seconds and peak
// RSS, simulator CPU seconds, database commits and rows per commit. Then the baseline on the same
// broker: a raw Paho publish loop of as many QoS 1 messages, and the ratio of the two rates.
// Targets (issue 5): 100,000 devices in at most 120 s; controller peak RSS at most 150 MB.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "bench/bench_db.h"
#include "bench/proc_stats.h"
#include "db/connection.h"
#include "db/migrator.h"
#include "db/registry.h"
#include "mqtt/client.h"
#include "simulator/fleet_spec.h"
#include "simulator/simulate.h"

namespace {

using bench::CpuSeconds;
using bench::MachineBusySeconds;
using bench::PeakRssKb;
using bench::PidFromFile;
using bench::TreeCpuSeconds;

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct DbStats {
  int64_t commits = 0;
  int64_t rows = 0;
};

DbStats ReadDbStats(pqxx::connection& conn) {
  pqxx::nontransaction txn(conn);
  txn.exec("select pg_stat_clear_snapshot()");
  auto r = txn.exec1(
      "select xact_commit, tup_inserted + tup_updated + tup_deleted from pg_stat_database "
      "where datname = current_database()");
  return {r[0].as<int64_t>(), r[1].as<int64_t>()};
}

double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

pid_t StartController(const std::string& binary, const std::string& conninfo,
                      const std::string& plan_path, const std::string& log_path) {
  std::fflush(stdout);  // or the child's freopen writes our buffered output again
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);  // a benchmark that dies takes its controller with it
    setenv("FLEETWAVE_DB", conninfo.c_str(), 1);
    std::FILE* log = std::freopen(log_path.c_str(), "w", stdout);
    if (log) dup2(fileno(stdout), STDERR_FILENO);
    std::vector<std::string> args = {
        binary,        "controller",
        "--http",      "off",
        "--plan",      plan_path,
        "--client-id", "fleetwave-bench-rollout-" + std::to_string(getpid())};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark: a rollout of a healthy release to a simulated fleet, end to end"};
  int64_t devices = 100000;
  int connections = 0;
  double telemetry_interval = 0;
  int deadline_seconds = 900;
  std::string binary = FLEETWAVE_BINARY;
  std::string json_path = "bench/results/rollout.json";
  std::string profile_path;
  app.add_option("--devices", devices, "Simulated devices")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{1}, int64_t{1000000}));
  app.add_option("--connections", connections,
                 "MQTT connections of the simulator (default: one per 12,500 devices, at least 8)");
  app.add_option("--telemetry-interval-seconds", telemetry_interval,
                 "Seconds between a device's health reports (0: none)")
      ->capture_default_str();
  app.add_option("--profile", profile_path,
                 "Simulator profile (JSON); default: healthy, steps reported, updates 4-12 s");
  app.add_option("--deadline-seconds", deadline_seconds, "Give up after this long")
      ->capture_default_str();
  app.add_option("--fleetwave", binary, "fleetwave binary")->capture_default_str();
  app.add_option("--json", json_path, "Where to write the figures")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (connections <= 0)
    connections = static_cast<int>(std::max<int64_t>(8, (devices + 12499) / 12500));

  const char* broker = std::getenv("FLEETWAVE_MQTT");
  if (!broker) {
    std::fprintf(stderr, "FLEETWAVE_DB and FLEETWAVE_MQTT must be set: run bench/rollout\n");
    return 2;
  }
  auto scratch = bench::MakeScratchDatabase("fleetwave_bench_rollout", "bench/rollout");
  if (!scratch) return 2;
  const std::string conninfo = scratch->app;  // the setup and the controller: the application
  const std::filesystem::path work = std::filesystem::temp_directory_path() /
                                     ("fleetwave-bench-rollout-" + std::to_string(getpid()));
  std::filesystem::create_directories(work);
  const std::string plan_path = (work / "plan.json").string();
  const std::string controller_log = (work / "controller.log").string();
  std::ofstream(plan_path) << R"({
  "waves": [{"percent": 1}, {"percent": 10}, {"percent": 50}, {"percent": 100}],
  "soakSeconds": 0,
  "cycleIntervalSeconds": 1
})";

  // The fleet on 1.0.0; the release comes once devices and controller are ready.
  simulator::FleetSpec spec;
  spec.devices = devices;
  spec.models = {"sensor-a"};
  spec.id_prefix = "b";
  auto conn = db::Connect(conninfo);
  {
    std::stringstream csv;
    simulator::WriteFleetCsv(spec, csv);
    db::Registry(*conn).ImportDevices(csv);
  }
  std::printf(
      "bench/rollout: %lld devices registered; simulator over %d connections, "
      "telemetry %s\n",
      static_cast<long long>(devices), connections,
      telemetry_interval > 0
          ? ("every " + std::to_string(static_cast<int>(telemetry_interval)) + " s").c_str()
          : "off");

  simulator::SimulateOptions so;
  so.fleet = spec;
  so.mqtt_uri = broker;
  so.connections = connections;
  so.telemetry_interval_seconds = telemetry_interval;
  std::string profile_json = "{}";
  if (!profile_path.empty()) {
    std::ifstream in(profile_path);
    if (!in) {
      std::fprintf(stderr, "bench/rollout: cannot read --profile %s\n", profile_path.c_str());
      return 2;
    }
    profile_json.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::string profile_error;
  auto profile = simulator::ParseProfile(profile_json, &profile_error);
  if (!profile) {
    std::fprintf(stderr, "bench/rollout: --profile: %s\n", profile_error.c_str());
    return 2;
  }
  so.profile = *profile;
  if (auto problem = simulator::CheckOptions(so)) {
    std::fprintf(stderr, "bench/rollout: %s\n", problem->c_str());
    return 2;
  }
  // The controller first, then the fleet: every device's start-next at boot is answered (no
  // job yet), so the rollout starts from a fleet at rest, as it would in the field. (Devices
  // that booted before the controller subscribed would ask again 30-45 s later, a storm of
  // 100,000 requests in the middle of the rollout.)
  const pid_t controller = StartController(binary, conninfo, plan_path, controller_log);
  auto scalar = [&](const std::string& sql) {
    pqxx::nontransaction txn(*conn);
    return txn.exec1(sql)[0].as<int64_t>();
  };
  // Before the release, a failure ends the run and its controller at once.
  auto give_up = [&](const char* why) {
    std::fprintf(stderr, "bench/rollout: %s (controller log: %s)\n", why, controller_log.c_str());
    kill(controller, SIGKILL);
    return 1;
  };
  auto t = Clock::now();
  while (scalar("select count(*) from fleetwave.cycles") == 0) {
    if (Since(t) > 60) return give_up("the controller started no cycle");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }

  simulator::Simulator sim(so);
  t = Clock::now();
  sim.Start();
  if (!sim.WaitReady(std::chrono::seconds(deadline_seconds)))
    return give_up("the simulator did not subscribe its devices in time");
  std::printf("simulator ready (every device subscribed) in %.1f s\n", Since(t));
  // At rest: every device has its answer to the start-next it sent at boot.
  auto at_rest = [&] {
    const simulator::Tally tally = sim.progress().tally;
    return tally[simulator::Count::kAnswers] >= devices - tally[simulator::Count::kOffline];
  };
  while (!at_rest()) {
    if (Since(t) > deadline_seconds) return give_up("the devices' boot requests were not answered");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::printf("fleet at rest (every boot request answered) after %.1f s\n", Since(t));

  // The broker and the database, found by their pid files in the bench stack (0: unknown).
  pid_t mosquitto = 0, postgres = 0;
  if (const char* dir = std::getenv("FLEETWAVE_BENCH_STACK_DIR")) {
    mosquitto = PidFromFile(std::string(dir) + "/mosquitto/mosquitto.pid");
    postgres = PidFromFile(std::string(dir) + "/postgres/data/postmaster.pid");
  }
  auto server_cpu = [](pid_t pid) { return pid > 0 ? TreeCpuSeconds(pid) : 0.0; };
  const double mosquitto_cpu_before = server_cpu(mosquitto);
  const double postgres_cpu_before = server_cpu(postgres);
  const double machine_cpu_before = MachineBusySeconds();
  const DbStats db_before = ReadDbStats(*conn);
  const double controller_cpu_before = CpuSeconds(controller);
  const double sim_cpu_before = ProcessCpuSeconds();
  const simulator::Progress sim_before = sim.progress();
  db::Registry(*conn).AddRelease({"sensor-a", "2.0.0", "https://firmware.example/sensor-a-2.0.0",
                                  std::string(64, 'a'), 1 << 20, fleet::ReleaseState::kActive});
  const auto released = Clock::now();
  int64_t succeeded = 0, finished = 0;
  auto next_print = released + std::chrono::seconds(5);
  auto next_check = released + std::chrono::seconds(30);
  double busy_at_print = machine_cpu_before;
  auto printed_at = released;
  // Progress is the devices' own count of accepted reports, which costs nothing to read. The
  // database (the truth: it also knows executions the controller timed out or canceled) is
  // counted every 30 s and once the devices say every one finished; counting every execution
  // four times a second had cost PostgreSQL a few % of its CPU.
  auto reported = [&](std::initializer_list<simulator::Count> counts) {
    const simulator::Tally now = sim.progress().tally;
    int64_t n = 0;
    for (auto c : counts) n += now[c] - sim_before.tally[c];
    return n;
  };
  while (Since(released) < deadline_seconds) {
    if (Clock::now() >= next_check ||
        reported({simulator::Count::kSucceeded, simulator::Count::kFailed,
                  simulator::Count::kRejected}) >= devices) {
      pqxx::nontransaction txn(*conn);
      auto r = txn.exec1(
          "select count(*) filter (where status = 'SUCCEEDED'), "
          "count(*) filter (where status in ('FAILED', 'REJECTED', 'TIMED_OUT', 'CANCELED')) "
          "from fleetwave.job_executions");
      succeeded = r[0].as<int64_t>();
      finished = succeeded + r[1].as<int64_t>();
      next_check = Clock::now() + std::chrono::seconds(30);
    }
    if (finished >= devices) break;
    if (Clock::now() >= next_print) {
      const double busy = MachineBusySeconds();
      const double cores = std::max(1u, std::thread::hardware_concurrency());
      std::printf("[%5.1f s] %lld of %lld SUCCEEDED; machine %.0f %% busy\n", Since(released),
                  static_cast<long long>(reported({simulator::Count::kSucceeded})),
                  static_cast<long long>(devices),
                  100.0 * (busy - busy_at_print) / std::max(1e-3, Since(printed_at) * cores));
      std::fflush(stdout);
      busy_at_print = busy;
      printed_at = Clock::now();
      next_print += std::chrono::seconds(5);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const double wall_from_release = Since(released);
  const double controller_cpu = CpuSeconds(controller) - controller_cpu_before;
  const int64_t controller_rss_kb = PeakRssKb(controller);
  const double sim_cpu = ProcessCpuSeconds() - sim_cpu_before;
  const double mosquitto_cpu = server_cpu(mosquitto) - mosquitto_cpu_before;
  const double postgres_cpu = server_cpu(postgres) - postgres_cpu_before;
  const double machine_cpu = MachineBusySeconds() - machine_cpu_before;
  const simulator::Progress sim_after = sim.progress();
  const DbStats db_after = ReadDbStats(*conn);
  double seconds = 0;
  {
    pqxx::nontransaction txn(*conn);
    auto r = txn.exec1(
        "select coalesce(extract(epoch from max(last_updated_at) filter (where status = "
        "'SUCCEEDED') - min(queued_at)), 0)::float8 from fleetwave.job_executions");
    seconds = r[0].as<double>();
  }
  kill(controller, SIGTERM);
  waitpid(controller, nullptr, 0);
  sim.Stop();
  if (finished < devices) {
    std::fprintf(stderr, "bench/rollout: %lld of %lld devices finished within %d s (log: %s)\n",
                 static_cast<long long>(finished), static_cast<long long>(devices),
                 deadline_seconds, controller_log.c_str());
  }

  const int64_t messages = (sim_after.messages_in - sim_before.messages_in) +
                           (sim_after.messages_out - sim_before.messages_out);
  const double messages_per_second = messages / std::max(seconds, 1e-9);
  const int64_t commits = db_after.commits - db_before.commits;
  const double rows_per_commit =
      (db_after.rows - db_before.rows) / std::max<double>(1, static_cast<double>(commits));

  // The baseline: the same number of QoS 1 messages through the same broker, one Paho client
  // publishing as fast as its in-flight window allows.
  double baseline_seconds = 0;
  if (finished < devices) {
    std::printf("baseline skipped: the rollout did not finish\n");
  } else {
    mqtt::ClientOptions o;
    o.server_uri = broker;
    o.client_id = "fleetwave-bench-baseline";
    mqtt::Client pub(o);
    if (!pub.WaitConnected(std::chrono::seconds(10))) {
      std::fprintf(stderr, "bench/rollout: baseline client could not connect\n");
      return 1;
    }
    const std::string payload(120, 'x');  // about a jobs request's size
    const auto start = Clock::now();
    for (int64_t i = 0; i < messages; ++i) pub.Publish("bench/baseline", payload, 1);
    pub.Flush(std::chrono::seconds(120));
    baseline_seconds = Since(start);
  }
  const double baseline_rate = baseline_seconds > 0 ? messages / baseline_seconds : 0;
  const double ratio = baseline_rate > 0 ? messages_per_second / baseline_rate : 0;

  const bool met = finished >= devices && succeeded == devices && seconds <= 120 &&
                   controller_rss_kb <= 150 * 1024;
  std::printf(
      "\n| devices | first notice to last SUCCEEDED | devices/s | MQTT messages/s | "
      "controller CPU | controller peak RSS | simulator CPU | commits | rows/commit |\n"
      "|---|---|---|---|---|---|---|---|---|\n"
      "| %lld | **%.1f s** | %.0f | %.0f (%lld) | %.1f s | %.0f MB | %.1f s | %lld | %.1f |\n",
      static_cast<long long>(devices), seconds, succeeded / std::max(seconds, 1e-9),
      messages_per_second, static_cast<long long>(messages), controller_cpu,
      controller_rss_kb / 1024.0, sim_cpu, static_cast<long long>(commits), rows_per_commit);
  std::printf("release published to last device finished: %.1f s; %lld SUCCEEDED\n",
              wall_from_release, static_cast<long long>(succeeded));
  std::printf(
      "CPU from release to last finished: machine %.1f core-s of %.1f (%u cores); controller "
      "%.1f, simulator %.1f, Mosquitto %.1f, PostgreSQL %.1f\n",
      machine_cpu, wall_from_release * std::thread::hardware_concurrency(),
      std::thread::hardware_concurrency(), controller_cpu, sim_cpu, mosquitto_cpu, postgres_cpu);
  {
    // What the devices saw, per device: where the messages come from.
    auto per_device = [&](simulator::Count c) {
      return static_cast<double>(sim_after.tally[c] - sim_before.tally[c]) /
             static_cast<double>(std::max<int64_t>(1, devices));
    };
    std::printf(
        "per device: %.2f messages; %.2f notices (%.2f duplicates), %.2f requests (%.2f resent), "
        "%.2f answers\n",
        static_cast<double>(messages) / static_cast<double>(std::max<int64_t>(1, devices)),
        per_device(simulator::Count::kNotices), per_device(simulator::Count::kDuplicates),
        per_device(simulator::Count::kRequests), per_device(simulator::Count::kResent),
        per_device(simulator::Count::kAnswers));
  }
  if (baseline_seconds > 0)
    std::printf(
        "baseline: %lld QoS 1 messages by a raw Paho publish loop in %.1f s = %.0f/s; "
        "the rollout moved messages at %.2f of that rate\n",
        static_cast<long long>(messages), baseline_seconds, baseline_rate, ratio);
  std::printf("targets (<= 120 s, controller peak RSS <= 150 MB, every device SUCCEEDED): %s\n",
              met ? "met" : "NOT met");

  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  Json figures = {
      {"benchmark", "rollout"},
      {"date", date},
      {"machine", {{"cpus", std::thread::hardware_concurrency()}}},
      {"devices", devices},
      {"connections", connections},
      {"telemetry_interval_seconds", telemetry_interval},
      {"profile", Json::parse(profile_json)},
      {"seconds_first_notice_to_last_succeeded", seconds},
      {"seconds_release_to_last_finished", wall_from_release},
      {"succeeded", succeeded},
      {"finished", finished},
      {"devices_per_second", succeeded / std::max(seconds, 1e-9)},
      {"mqtt_messages", messages},
      {"mqtt_messages_per_second", messages_per_second},
      {"controller_cpu_seconds", controller_cpu},
      {"controller_peak_rss_mb", controller_rss_kb / 1024.0},
      {"simulator_cpu_seconds", sim_cpu},
      {"mosquitto_cpu_seconds", mosquitto_cpu},
      {"postgresql_cpu_seconds", postgres_cpu},
      {"machine_busy_cpu_seconds", machine_cpu},
      {"database_commits", commits},
      {"database_rows_per_commit", rows_per_commit},
      {"baseline",
       {{"messages", messages},
        {"seconds", baseline_seconds},
        {"messages_per_second", baseline_rate},
        {"rollout_to_baseline_ratio", messages_per_second / baseline_rate}}},
      {"targets", {{"seconds_max", 120}, {"controller_peak_rss_mb_max", 150}, {"met", met}}}};
  std::filesystem::create_directories(std::filesystem::path(json_path).parent_path());
  std::ofstream(json_path) << figures.dump(2) << "\n";
  std::printf("wrote %s (controller log: %s)\n", json_path.c_str(), controller_log.c_str());
  return met ? 0 : 1;
}
