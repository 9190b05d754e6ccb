// bench/import: how fast `fleetwave device import` registers a large fleet.
//
// Creates a scratch database beside the one FLEETWAVE_DB names, writes a simulated fleet as CSV,
// runs the real CLI on it and times it end to end (process start to exit), then checks every
// row arrived. Prints the figures and writes them as JSON. Target (issue 2): 1,000,000 devices in
// at most 60 s on a 2-core machine.
#include <sys/resource.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "bench/bench_db.h"
#include "db/connection.h"
#include "db/migrator.h"
#include "simulator/fleet_spec.h"

namespace {

constexpr double kTargetSeconds = 60;

int RunFleetwave(const std::string& binary, const std::string& conninfo, const std::string& csv) {
  pid_t pid = fork();
  if (pid == 0) {
    setenv("FLEETWAVE_DB", conninfo.c_str(), 1);
    execl(binary.c_str(), binary.c_str(), "device", "import", csv.c_str(), nullptr);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Benchmark: fleetwave device import of a large simulated fleet"};
  simulator::FleetSpec spec;
  spec.devices = 1000000;
  std::string binary = FLEETWAVE_BINARY;
  std::string json_path = "bench/results/import.json";
  app.add_option("--devices", spec.devices, "Devices to import")->capture_default_str();
  app.add_option("--fleetwave", binary, "fleetwave binary")->capture_default_str();
  app.add_option("--json", json_path, "Where to write the figures")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto scratch = bench::MakeScratchDatabase("fleetwave_bench_import", "bench/import");
  if (!scratch) return 2;
  const std::string conninfo = scratch->app;  // `fleetwave device import` runs as the application

  std::string csv = (std::filesystem::temp_directory_path() /
                     ("fleetwave-import-" + std::to_string(getpid()) + ".csv"))
                        .string();
  {
    std::ofstream out(csv);
    simulator::WriteFleetCsv(spec, out);
  }
  std::printf("bench/import: %lld devices, CSV %.1f MB\n", static_cast<long long>(spec.devices),
              std::filesystem::file_size(csv) / 1e6);

  rusage before{}, after{};
  getrusage(RUSAGE_CHILDREN, &before);
  auto start = std::chrono::steady_clock::now();
  int rc = RunFleetwave(binary, conninfo, csv);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  getrusage(RUSAGE_CHILDREN, &after);
  std::filesystem::remove(csv);
  if (rc != 0) {
    std::fprintf(stderr, "bench/import: fleetwave device import failed (exit %d)\n", rc);
    return 1;
  }
  int64_t rows;
  {
    auto conn = db::Connect(conninfo);
    pqxx::read_transaction txn(*conn);
    rows = txn.exec1("select count(*) from fleetwave.devices")[0].as<int64_t>();
  }
  auto cpu = [](const rusage& r) {
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec + (r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
  };
  double cli_cpu = cpu(after) - cpu(before);

  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  utsname host{};
  uname(&host);
  nlohmann::json figures = {
      {"benchmark", "import"},
      {"date", date},
      {"machine", {{"cpus", std::thread::hardware_concurrency()}, {"kernel", host.release}}},
      {"devices", spec.devices},
      {"rows_in_database", rows},
      {"wall_seconds", seconds},
      {"devices_per_second", spec.devices / seconds},
      {"cli_cpu_seconds", cli_cpu},
      {"cli_peak_rss_mb", after.ru_maxrss / 1024.0},
      {"target_seconds_per_million", kTargetSeconds},
      {"target_met", rows == spec.devices && seconds * 1e6 / spec.devices <= kTargetSeconds},
  };
  std::printf("imported %lld devices in %.1f s: %.0f devices/s, CLI CPU %.1f s, peak RSS %.0f MB\n",
              static_cast<long long>(rows), seconds, spec.devices / seconds, cli_cpu,
              after.ru_maxrss / 1024.0);
  std::printf("target: 1,000,000 devices in <= %.0f s -> %s\n", kTargetSeconds,
              figures["target_met"].get<bool>() ? "met" : "NOT met");
  std::filesystem::create_directories(std::filesystem::path(json_path).parent_path());
  std::ofstream(json_path) << figures.dump(2) << "\n";
  std::printf("wrote %s\n", json_path.c_str());
  db::DropDatabase(scratch->admin, "fleetwave_bench_import");
  return rows == spec.devices ? 0 : 1;
}
