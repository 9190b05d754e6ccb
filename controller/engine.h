// The controller's never-ending rollout machine (DESIGN §4): leader election, then reconcile
// passes over the running cycle, while the jobs service answers the devices.
//
// Standby until it holds the leader lease (db::Lease, timed by the database clock); then it
// serves the devices (JobsService) and, every reconcile interval, runs one pass:
//   1. the cycle: start one if none runs, heartbeat it, plan it once its not_before has come
//      (first timing out what ended rollouts left behind: those devices may be offered again);
//   2. each rollout: time out silent executions and re-queue retries (with their notices),
//      settle final failures and quarantines, judge the active wave's gate, apply the decision
//      of fleet::DecideWave with its events, issue approval tokens, and queue the next devices
//      of the running wave (maxPerMinute, in bounded chunks);
//   3. complete the cycle when every rollout is terminal and create the next one.
// Each step reads the truth from PostgreSQL, decides purely (fleet/), and writes in a
// transaction fenced by the lease epoch, so nothing needed for correctness lives in memory: a
// standby that takes over, or a restarted controller, resumes exactly where the data says.
// Losing the lease stops the jobs service and every write at once.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "controller/jobs_service.h"
#include "controller/metrics.h"
#include "fleet/plan.h"
#include "fleet/rollout_machine.h"

namespace controller {

struct EngineOptions {
  fleet::Plan plan;  // used for cycles planned from now on; a rollout keeps its own copy
  std::chrono::seconds lease_ttl{10};
  std::chrono::milliseconds reconcile_interval{1000};
  // Approve and deny URLs are <base>/approvals/<token>/approve|deny.
  std::string approval_base_url = "http://127.0.0.1:8080";
  // Executions per transaction when queuing, timing out, cancelling: small enough that the
  // device requests waiting meanwhile are not held up long (bench/rollout).
  int64_t chunk = 1000;
  std::string lease_name = "controller";
};

// A summary of the engine's metrics (fleetwave_leader, fleetwave_leader_epoch,
// fleetwave_reconcile_passes_total, fleetwave_reconcile_errors_total, fleetwave_leaderships_total).
struct EngineStats {
  bool leading = false;
  int64_t epoch = 0;
  uint64_t passes = 0;
  uint64_t pass_errors = 0;
  uint64_t leaderships = 0;  // how often this process became leader
};

class Engine {
 public:
  Engine(EngineOptions options, JobsServiceOptions jobs);
  ~Engine();  // Stop()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void Start();
  // Stops passes and the jobs service and releases the lease, so a standby takes over at once.
  void Stop();
  EngineStats stats() const;
  bool leading() const { return leading_; }
  // The engine's and its jobs service's metrics (README "Metrics"); the database gauges are
  // read at scrape time (RenderMetrics in controller/metrics_scrape.h).
  const MetricsRegistry& metrics() const { return metrics_; }
  // True once this process leads and its jobs service is connected and subscribed.
  bool WaitServing(std::chrono::milliseconds timeout);

 private:
  void LeaseLoop();
  void PassLoop();
  void Pass();
  // Times out executions that ended rollouts left behind, before a cycle plans; true if any.
  bool TimeOutOrphans();
  void ReconcileRollout(const std::string& rollout_id, bool terminal, bool has_queued);
  void FenceTxn(pqxx::work& txn) const;
  pqxx::connection& Conn();
  void Wait(std::chrono::milliseconds d);
  void SetLeading(bool leading);
  // One info line per state change, with its cycle, rollout and wave ids as fields.
  void LogChanges(int64_t cycle_id, const std::string& rollout_id,
                  const std::vector<fleet::Change>& changes);

  EngineOptions options_;
  JobsServiceOptions jobs_options_;
  MetricsRegistry metrics_;   // before jobs_: a JobsService counts into it
  JobsMetrics jobs_metrics_;  // declared up front, so a standby exposes them at 0
  Gauge* leader_gauge_;
  Gauge* epoch_gauge_;
  Counter* leaderships_;
  Counter* passes_;
  Counter* pass_errors_;
  Family<Counter>* state_changes_;
  std::string holder_;
  std::unique_ptr<JobsService> jobs_;  // while leading; guarded by jobs_mu_ for WaitServing
  std::mutex jobs_mu_;
  std::unique_ptr<pqxx::connection> conn_;
  bool backlog_told_ = false;  // "queuing waits for the backlog" logged, and not yet resumed

  std::atomic<bool> stop_{false};
  std::atomic<bool> leading_{false};
  std::atomic<int64_t> epoch_{0};
  std::thread lease_thread_;
  std::thread pass_thread_;
  std::mutex mu_;
  std::condition_variable cv_;
};

}  // namespace controller
