// bench/jobs_api: the device protocol under load, against the real stack.
//
// Registers a fleet, queues one execution per device, starts `fleetwave controller` as its own
// process, and plays the devices over MQTT: start-next, update IN_PROGRESS, update SUCCEEDED,
// as the SDK samples do. Two phases:
//   throughput: every device at once, a bounded number of requests outstanding;
//   latency:    requests paced at a fixed rate (default 1,000/s), request-to-answer latency.
// Prints requests/s, p50/p99 latency, commits/s and rows per commit, controller CPU, and writes
// them as JSON. Targets (issue 3): >= 5,000 requests/s sustained; p99 < 50 ms at 1,000/s.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <mosquitto.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "bench/bench_db.h"
#include "bench/proc_stats.h"
#include "db/connection.h"
#include "db/jobs_store.h"
#include "db/migrator.h"
#include "db/registry.h"
#include "fleet/plan.h"
#include "simulator/fleet_spec.h"

namespace {

using bench::CpuSeconds;
using bench::PeakRssKb;

using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

const std::string kRoot = "$aws/things";
const std::string kJob = "fw-bench-2.0.0-c1";

struct DbStats {
  int64_t commits = 0;
  int64_t rows = 0;
};

DbStats ReadDbStats(const std::string& conninfo) {
  auto conn = db::Connect(conninfo);
  pqxx::nontransaction txn(*conn);
  auto r = txn.exec1(
      "select xact_commit, tup_inserted + tup_updated + tup_deleted from pg_stat_database "
      "where datname = current_database()");
  return {r[0].as<int64_t>(), r[1].as<int64_t>()};
}

// The devices of one phase: each walks start-next -> IN_PROGRESS -> SUCCEEDED over one
// libmosquitto connection (QoS 1 requests, QoS 1 subscriptions to the answers). The devices are
// played with libmosquitto rather than Paho because they are the load, not what is measured:
// Paho costs several times more CPU per message (DESIGN §2), and on this 2-core machine the load
// generator's CPU is taken from the controller under test. Answers arrive on libmosquitto's
// thread, which queues the follow-up request; the sender thread alone publishes.
class Phase {
 public:
  Phase(std::vector<std::string> things, const std::string& uri, size_t window, double rate)
      : things_(std::move(things)), window_(window), rate_(rate) {
    sent_at_.resize(things_.size() * 3);
    latency_ms_.reserve(things_.size() * 3);
    std::string hostport = uri.substr(uri.find("://") + 3);
    host_ = hostport.substr(0, hostport.rfind(':'));
    port_ = std::stoi(hostport.substr(hostport.rfind(':') + 1));
    static std::atomic<int> counter{0};
    std::string id = "bench-devices-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
    mosq_ = mosquitto_new(id.c_str(), true, this);
    mosquitto_int_option(mosq_, MOSQ_OPT_SEND_MAXIMUM, 1000);
    mosquitto_int_option(mosq_, MOSQ_OPT_TCP_NODELAY, 1);  // as device SDKs do: no Nagle delay
    mosquitto_message_callback_set(mosq_, [](mosquitto*, void* self, const mosquitto_message* m) {
      static_cast<Phase*>(self)->OnAnswer(m);
    });
    mosquitto_subscribe_callback_set(mosq_, [](mosquitto*, void* self, int, int, const int*) {
      auto* phase = static_cast<Phase*>(self);
      std::lock_guard<std::mutex> lock(phase->mu_);
      ++phase->subscribed_;
      phase->cv_.notify_all();
    });
  }
  ~Phase() {
    mosquitto_disconnect(mosq_);
    mosquitto_loop_stop(mosq_, false);
    mosquitto_destroy(mosq_);
  }

  bool Ready() {
    if (mosquitto_connect(mosq_, host_.c_str(), port_, 60) != MOSQ_ERR_SUCCESS) return false;
    mosquitto_loop_start(mosq_);
    for (const std::string& filter : {kRoot + "/+/jobs/start-next/+", kRoot + "/+/jobs/+/update/+"})
      mosquitto_subscribe(mosq_, nullptr, filter.c_str(), 1);
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(10), [this] { return subscribed_ == 2; });
  }

  // Runs until every device finished or `timeout`; returns wall seconds.
  double Run(std::chrono::seconds timeout) {
    auto start = Clock::now();
    Send(start + timeout);
    return std::chrono::duration<double>(Clock::now() - start).count();
  }

  size_t requests() const { return answered_; }
  size_t rejected() const { return rejected_; }
  size_t completed() const { return completed_; }
  double Percentile(double p) {
    if (latency_ms_.empty()) return 0;
    std::sort(latency_ms_.begin(), latency_ms_.end());
    return latency_ms_[std::min(latency_ms_.size() - 1,
                                static_cast<size_t>(p * latency_ms_.size()))];
  }

 private:
  // Request `seq` = device * 3 + step; its clientToken is the sequence number.
  void Publish(size_t seq) {
    size_t device = seq / 3, step = seq % 3;
    const std::string& thing = things_[device];
    std::string topic, payload;
    std::string token = std::to_string(seq);
    if (step == 0) {
      topic = kRoot + "/" + thing + "/jobs/start-next";
      payload = "{\"clientToken\":\"" + token + "\"}";
    } else {
      topic = kRoot + "/" + thing + "/jobs/" + kJob + "/update";
      payload = std::string("{\"status\":\"") + (step == 1 ? "IN_PROGRESS" : "SUCCEEDED") +
                "\",\"statusDetails\":{\"step\":\"" + (step == 1 ? "installing" : "done") +
                "\"},\"clientToken\":\"" + token + "\"}";
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      sent_at_[seq] = Clock::now();
    }
    mosquitto_publish(mosq_, nullptr, topic.c_str(), static_cast<int>(payload.size()),
                      payload.data(), 1, false);
  }

  void Send(Clock::time_point deadline) {
    size_t next_device = 0;
    auto start = Clock::now();
    size_t sent = 0;
    while (Clock::now() < deadline) {
      std::vector<size_t> batch;
      {
        std::unique_lock<std::mutex> lock(mu_);
        // Outstanding requests are bounded by the window; follow-ups come first.
        cv_.wait_until(lock, std::min(deadline, Clock::now() + std::chrono::milliseconds(50)), [&] {
          return !follow_ups_.empty() || (outstanding_ < window_ && next_device < things_.size()) ||
                 completed_ == things_.size();
        });
        if (completed_ == things_.size()) return;
        batch.swap(follow_ups_);
        while (outstanding_ + batch.size() < window_ && next_device < things_.size() &&
               batch.size() < 256)
          batch.push_back(3 * next_device++);
        outstanding_ += batch.size();
      }
      for (size_t seq : batch) {
        if (rate_ > 0) {  // paced: request n goes out at start + n / rate
          auto due = start + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(sent / rate_));
          std::this_thread::sleep_until(due);
        }
        Publish(seq);
        ++sent;
      }
    }
  }

  void OnAnswer(const mosquitto_message* m) {
    auto now = Clock::now();
    auto answer = Json::parse(static_cast<const char*>(m->payload),
                              static_cast<const char*>(m->payload) + m->payloadlen, nullptr, false);
    if (!answer.is_object() || !answer.contains("clientToken")) return;
    size_t seq = std::stoull(answer["clientToken"].get<std::string>());
    std::string_view topic(m->topic);
    std::lock_guard<std::mutex> lock(mu_);
    if (seq >= sent_at_.size()) return;
    latency_ms_.push_back(std::chrono::duration<double, std::milli>(now - sent_at_[seq]).count());
    ++answered_;
    --outstanding_;
    if (topic.ends_with("/rejected")) {
      ++rejected_;
      ++completed_;
    } else if (seq % 3 == 2) {
      ++completed_;
    } else {
      follow_ups_.push_back(seq + 1);
    }
    cv_.notify_one();
  }

  std::vector<std::string> things_;
  size_t window_;
  double rate_;
  std::string host_;
  int port_ = 1883;
  mosquitto* mosq_ = nullptr;
  int subscribed_ = 0;
  std::vector<Clock::time_point> sent_at_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<size_t> follow_ups_;
  size_t outstanding_ = 0;
  size_t answered_ = 0, rejected_ = 0, completed_ = 0;
  std::vector<double> latency_ms_;
};

}  // namespace

int main(int argc, char** argv) {
  mosquitto_lib_init();
  CLI::App app{"Benchmark: the jobs API (start-next, update, update) under load"};
  int64_t devices = 20000;
  int64_t latency_devices = 5000;
  double latency_rate = 1000;
  size_t window = 2000;
  std::string binary = FLEETWAVE_BINARY;
  std::string json_path = "bench/results/jobs_api.json";
  app.add_option("--devices", devices, "Devices in the throughput phase")->capture_default_str();
  app.add_option("--latency-devices", latency_devices, "Devices in the paced phase")
      ->capture_default_str();
  app.add_option("--latency-rate", latency_rate, "Requests/s in the paced phase")
      ->capture_default_str();
  app.add_option("--window", window, "Outstanding requests in the throughput phase")
      ->capture_default_str();
  app.add_option("--fleetwave", binary, "fleetwave binary")->capture_default_str();
  std::vector<std::string> controller_args;
  app.add_option(
      "--controller-arg", controller_args,
      "Extra flag for `fleetwave controller` (repeatable), e.g. --controller-arg=--max-batch=500");
  app.add_option("--json", json_path, "Where to write the figures")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const char* broker = std::getenv("FLEETWAVE_MQTT");
  if (!broker) {
    std::fprintf(stderr, "FLEETWAVE_DB and FLEETWAVE_MQTT must be set: run bench/jobs_api\n");
    return 2;
  }
  const std::string name = "fleetwave_bench_jobs";
  auto scratch = bench::MakeScratchDatabase(name, "bench/jobs_api");
  if (!scratch) return 2;
  const std::string conninfo = scratch->app;  // the setup and the controller: the application

  // The fleet, a release, a rollout, and one QUEUED execution per device.
  simulator::FleetSpec spec;
  spec.devices = devices + latency_devices + 1;  // the last one only checks the controller is up
  spec.models = {"bench"};
  spec.id_prefix = "b";
  std::vector<std::string> things;
  {
    auto conn = db::Connect(conninfo);
    std::stringstream csv;
    simulator::WriteFleetCsv(spec, csv);
    db::Registry(*conn).ImportDevices(csv);
    // A planned cycle whose one rollout runs its one wave over every device, and passes only
    // when all of them succeeded: the engine in the controller leaves it alone (nothing to plan
    // or queue, nothing to time out) while the devices are served.
    fleet::Plan plan;
    plan.waves = {{100, 0}};
    plan.success_threshold_percent = 100;
    plan.soak_seconds = 0;
    const std::string plan_json = fleet::PlanToJson(plan);
    pqxx::work txn(*conn);
    txn.exec(
        "insert into fleetwave.releases (model, version, version_key, url, sha256, size) values "
        "('bench','2.0.0','00200200~','https://fw/bench-2.0.0.bin', repeat('a',64), 1000)");
    txn.exec_params("insert into fleetwave.cycles (planned_at, plan) values (now(), $1::jsonb)",
                    plan_json);
    txn.exec_params(
        "insert into fleetwave.rollouts (id, cycle_id, release_id, job_document, plan, total, "
        "  current_wave) "
        "select $1, c.id, r.id, '{\"operation\":\"firmware.update\"}', $2::jsonb, $3, 1 "
        "from fleetwave.cycles c, fleetwave.releases r",
        kJob, plan_json, spec.devices);
    txn.exec_params(
        "insert into fleetwave.waves (rollout_id, wave, planned, state, started_at, queued) "
        "values ($1, 1, $2, 'running', now(), $2)",
        kJob, spec.devices);
    txn.commit();
  }
  for (int64_t i = 0; i < spec.devices; ++i)
    things.push_back(simulator::SimulatedDevice(spec, i).id);
  {
    db::JobsStore store(conninfo);
    for (size_t i = 0; i < things.size(); i += 5000) {
      db::JobsBatch batch;
      for (size_t j = i; j < std::min(things.size(), i + 5000); ++j)
        batch.queue.push_back({kJob, things[j], 1, std::nullopt});
      store.RunBatch(batch, [](db::JobsSnapshot&) { return db::JobsWrites{}; });
    }
  }
  std::printf("bench/jobs_api: %zu devices registered, one execution each\n", things.size());

  pid_t controller = fork();
  if (controller == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);  // a benchmark that dies takes its controller with it
    setenv("FLEETWAVE_DB", conninfo.c_str(), 1);
    // A client id of its own: a persistent session left in the broker by an earlier run would
    // hand this controller that run's unanswered requests.
    std::vector<std::string> args = {binary,        "controller",
                                     "--http",      "off",
                                     "--client-id", "fleetwave-bench-" + std::to_string(getpid())};
    args.insert(args.end(), controller_args.begin(), controller_args.end());
    std::vector<char*> argv_c;
    for (auto& a : args) argv_c.push_back(a.data());
    argv_c.push_back(nullptr);
    execv(binary.c_str(), argv_c.data());
    _exit(127);
  }

  std::vector<std::string> throughput_things(things.begin(), things.begin() + devices);
  std::vector<std::string> latency_things(things.begin() + devices, things.end() - 1);
  Json figures = {{"benchmark", "jobs_api"}};

  // Warm-up: ask with a device of its own until the controller answers, so that its
  // subscriptions are in place (a request published before they are is lost, and a phase does
  // not send a request twice).
  for (int attempt = 0;; ++attempt) {
    Phase warm({things.back()}, broker, 1, 0);
    if (!warm.Ready()) return 1;
    warm.Run(std::chrono::seconds(1));
    if (warm.requests() > 0) break;
    if (attempt == 60) {
      std::fprintf(stderr, "bench/jobs_api: the controller did not answer within a minute\n");
      return 1;
    }
  }

  DbStats before = ReadDbStats(conninfo);
  Phase throughput(throughput_things, broker, window, 0);
  if (!throughput.Ready()) return 1;
  double seconds = throughput.Run(std::chrono::seconds(300));
  DbStats after = ReadDbStats(conninfo);
  double rps = throughput.requests() / seconds;
  figures["throughput"] = {
      {"devices", devices},
      {"requests", throughput.requests()},
      {"rejected", throughput.rejected()},
      {"seconds", seconds},
      {"requests_per_second", rps},
      {"p50_ms", throughput.Percentile(0.5)},
      {"p99_ms", throughput.Percentile(0.99)},
      {"commits_per_second", (after.commits - before.commits) / seconds},
      {"rows_per_commit",
       (after.rows - before.rows) / std::max<double>(1, after.commits - before.commits)}};
  std::printf(
      "throughput: %zu requests in %.2f s = %.0f requests/s (p50 %.1f ms, p99 %.1f ms), "
      "%zu rejected\n",
      throughput.requests(), seconds, rps, throughput.Percentile(0.5), throughput.Percentile(0.99),
      throughput.rejected());

  before = ReadDbStats(conninfo);
  Phase paced(latency_things, broker, window, latency_rate);
  if (!paced.Ready()) return 1;
  double paced_seconds = paced.Run(std::chrono::seconds(300));
  after = ReadDbStats(conninfo);
  figures["latency"] = {
      {"devices", latency_devices},
      {"rate", latency_rate},
      {"requests", paced.requests()},
      {"rejected", paced.rejected()},
      {"seconds", paced_seconds},
      {"requests_per_second", paced.requests() / paced_seconds},
      {"p50_ms", paced.Percentile(0.5)},
      {"p99_ms", paced.Percentile(0.99)},
      {"commits_per_second", (after.commits - before.commits) / paced_seconds},
      {"rows_per_commit",
       (after.rows - before.rows) / std::max<double>(1, after.commits - before.commits)}};
  std::printf("latency at %.0f requests/s: p50 %.1f ms, p99 %.1f ms (%zu requests, %zu rejected)\n",
              latency_rate, paced.Percentile(0.5), paced.Percentile(0.99), paced.requests(),
              paced.rejected());

  double cpu = CpuSeconds(controller);
  int64_t rss = PeakRssKb(controller);
  kill(controller, SIGTERM);
  waitpid(controller, nullptr, 0);
  int64_t succeeded;
  {
    auto conn = db::Connect(conninfo);
    pqxx::read_transaction txn(*conn);
    succeeded =
        txn.exec1("select count(*) from fleetwave.job_executions where status = 'SUCCEEDED'")[0]
            .as<int64_t>();
  }
  char date[32];
  std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  figures["date"] = date;
  figures["machine"] = {{"cpus", std::thread::hardware_concurrency()}};
  figures["controller_cpu_seconds"] = cpu;
  figures["controller_peak_rss_mb"] = rss / 1024.0;
  figures["executions_succeeded"] = succeeded;
  bool met = rps >= 5000 && paced.Percentile(0.99) < 50 && succeeded == spec.devices;
  figures["targets"] = {
      {"requests_per_second_min", 5000}, {"p99_ms_max_at_1000", 50}, {"met", met}};
  std::printf("controller: %.1f s CPU, peak RSS %.0f MB; %lld of %lld executions SUCCEEDED\n", cpu,
              rss / 1024.0, static_cast<long long>(succeeded),
              static_cast<long long>(spec.devices));
  std::printf("targets (>= 5,000 requests/s; p99 < 50 ms at 1,000/s): %s\n",
              met ? "met" : "NOT met");
  std::filesystem::create_directories(std::filesystem::path(json_path).parent_path());
  std::ofstream(json_path) << figures.dump(2) << "\n";
  std::printf("wrote %s\n", json_path.c_str());
  return met ? 0 : 1;
}
