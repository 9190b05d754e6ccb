// Cycles, rollouts, waves, approvals and their events in PostgreSQL: the statements of the
// controller's reconcile passes and of the operator's commands. Every function works inside the
// caller's transaction, so a state change and its `events` row always commit together; the
// leader fences its transactions (db::Lease::Fence) before calling these.
//
// Times are epoch seconds by the database clock. Errors: NotFound, Conflict (a refused state
// change, with a message saying what is allowed), Unavailable, Error.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <pqxx/transaction_base>

#include "db/connection.h"
#include "fleet/gates.h"
#include "fleet/jobs.h"
#include "fleet/plan.h"
#include "fleet/rollout_machine.h"
#include "fleet/wave_planner.h"

namespace db {

// ---- Events (the execution history) -------------------------------------------------------

struct EventRecord {
  std::optional<int64_t> cycle_id;
  std::optional<std::string> rollout_id;
  std::optional<int> wave;
  std::string kind;  // fleet::ToString(Event), or e.g. "cycle_started", "heartbeat_stale"
  std::optional<std::string> from_state;
  std::optional<std::string> to_state;
  nlohmann::json detail = nlohmann::json::object();
};
void RecordEvent(pqxx::transaction_base& txn, const EventRecord& event);

// ---- Cycles -------------------------------------------------------------------------------

struct CycleRow {
  int64_t id = 0;
  int64_t leader_epoch = 0;
  int64_t started_at = 0;
  int64_t not_before = 0;
  int64_t heartbeat_at = 0;
  std::optional<int64_t> planned_at;
  int64_t now = 0;  // the database clock when read
};

// The running cycle locked FOR UPDATE, or nullopt when none runs.
std::optional<CycleRow> LockRunningCycle(pqxx::transaction_base& txn);

// Starts a cycle (running, planning at now + delay_seconds) unless one is running; the unique
// index on running cycles decides, so two callers never both start one. Returns the new cycle's
// id, or nullopt when a cycle was already running. Writes a "cycle_started" event whose detail
// names `by` (e.g. "controller", "watchdog").
std::optional<int64_t> StartCycle(pqxx::transaction_base& txn, const std::string& by,
                                  int64_t delay_seconds = 0);

// What the watchdog checks: how many cycles run (the index allows 0 or 1) and how old the
// running one's heartbeat is by the database clock.
struct CycleHealth {
  int64_t running = 0;
  std::optional<int64_t> cycle_id;
  double heartbeat_age_seconds = 0;
};
CycleHealth ReadCycleHealth(pqxx::transaction_base& txn);

// ---- Rollouts and waves ---------------------------------------------------------------------

struct WaveRow {
  int wave = 0;
  int64_t planned = 0;
  fleet::WaveState state = fleet::WaveState::kPending;
  std::optional<std::string> verdict;
  int64_t queued = 0;          // devices queued so far
  int64_t first_position = 0;  // its devices are rollout_order positions [first, first+planned)
  std::optional<int64_t> started_at;
  std::optional<int64_t> threshold_met_at;
  std::optional<int64_t> finished_at;
  std::optional<int64_t> health_checked_at;
};

struct RolloutRow {
  std::string id;
  int64_t cycle_id = 0;
  int64_t release_id = 0;
  std::string model;
  std::string version;
  std::string version_key;
  std::string release_state;
  fleet::RolloutState state = fleet::RolloutState::kRunning;
  int current_wave = 0;
  int64_t total = 0;
  fleet::Plan plan;
  int gate_from_wave = 1;      // abort criteria count waves from this one on
  bool newer_release = false;  // a newer active release of the model exists
  int approved_wave = 0;       // the highest wave whose approval was granted
  int64_t now = 0;             // the database clock when read
};

// Locks the rollout row FOR UPDATE and reads it, and its waves when `waves` is given.
// Throws NotFound.
RolloutRow LockRollout(pqxx::transaction_base& txn, const std::string& rollout_id,
                       std::vector<WaveRow>* waves);
fleet::RolloutSnapshot SnapshotOf(const RolloutRow& rollout, const std::vector<WaveRow>& waves);

// Writes fleet::Change rows in order: the rollout's or wave's state (with started_at,
// finished_at and current_wave), the release halted on entering aborted, and one events row
// each, `detail` merged into its detail.
void WriteChanges(pqxx::transaction_base& txn, const RolloutRow& rollout,
                  const std::vector<fleet::Change>& changes,
                  const nlohmann::json& detail = nlohmann::json::object());

// ---- The controller's passes ----------------------------------------------------------------

// Marks the cycle planned with `plan` and creates its rollouts: per model, the newest active
// release that some devices lack (firmware older than it, not quarantined, not quarantined for
// that release, no pending execution of another rollout). Each gets its devices in rollout order
// (canary ring first, then md5 of rollout and device id, see fleet/wave_planner.h) in
// rollout_order, its waves sized by the plan, and a "rollout_created" event. Returns the ids.
std::vector<std::string> PlanCycle(pqxx::transaction_base& txn, int64_t cycle_id,
                                   const fleet::Plan& plan);

// Completes the running cycle and starts the next one (planning after `delay_seconds`) in the
// same transaction, so exactly one cycle is always running. Returns the next cycle's id.
int64_t CompleteCycle(pqxx::transaction_base& txn, int64_t cycle_id, int64_t delay_seconds);

// The leader's heartbeat on the running cycle (the watchdog reads it).
void Heartbeat(pqxx::transaction_base& txn, int64_t cycle_id, int64_t epoch);

struct RolloutRef {
  std::string id;
  fleet::RolloutState state = fleet::RolloutState::kRunning;
  // QUEUED executions left that its state cancels (fleet::OnEnter(state).cancel_queued).
  bool has_queued = false;
};
std::vector<RolloutRef> CycleRollouts(pqxx::transaction_base& txn, int64_t cycle_id);

// Counts of the rollout's executions per wave: result[k - 1] is wave k.
std::vector<fleet::StatusCounts> CountByWave(pqxx::transaction_base& txn,
                                             const std::string& rollout_id, int waves);

// Up to `limit` QUEUED or IN_PROGRESS executions of the rollout past their timeout at the
// database clock, with the reason for statusDetails.
struct DueExecution {
  std::string thing;
  std::string reason;
};
std::vector<DueExecution> TimedOutExecutions(pqxx::transaction_base& txn,
                                             const std::string& rollout_id,
                                             const fleet::Timeouts& timeouts, int64_t limit);

// Up to `limit` QUEUED or IN_PROGRESS executions of terminal rollouts (left behind when a
// rollout completed, aborted or was superseded with devices still working) past the timeouts of
// their rollout's plan. Until they end, their devices are not offered another release.
struct OrphanedExecution {
  std::string job_id;
  std::string thing;
  std::string reason;
};
std::vector<OrphanedExecution> OrphanedTimeouts(pqxx::transaction_base& txn, int64_t limit);

// Up to `limit` failed executions of the rollout not yet settled, with the device's failures of
// the release over all cycles (this one included).
struct UnsettledFailure {
  std::string thing;
  fleet::JobStatus status = fleet::JobStatus::kFailed;
  int64_t attempts = 1;
  int64_t release_failures = 1;
};
std::vector<UnsettledFailure> UnsettledFailures(pqxx::transaction_base& txn,
                                                const RolloutRow& rollout, int64_t limit);
// Marks failures settled; quarantines `quarantine` devices for the release with an event each.
void SettleFailures(pqxx::transaction_base& txn, const RolloutRow& rollout,
                    const std::vector<std::string>& final_failures,
                    const std::vector<std::string>& quarantine);

// Up to `limit` devices with a QUEUED execution of the rollout.
std::vector<std::string> QueuedThings(pqxx::transaction_base& txn, const std::string& rollout_id,
                                      int64_t limit);

// The next up to `limit` positions of the wave not queued yet, in rollout order: `consumed`
// positions, of which `things` are the devices still registered (deleted ones are skipped).
struct Targets {
  std::vector<std::string> things;
  int64_t consumed = 0;
};
Targets NextTargets(pqxx::transaction_base& txn, const std::string& rollout_id, const WaveRow& wave,
                    int64_t limit);
// Records that `n` more of the wave's positions were queued (commits with their executions).
void AddQueued(pqxx::transaction_base& txn, const std::string& rollout_id, int wave, int64_t n);
// Executions of the rollout queued in the last 60 seconds (maxPerMinute).
int64_t QueuedLastMinute(pqxx::transaction_base& txn, const std::string& rollout_id);

// The health sample for the rollout's active wave over [since, now]: updated = devices of
// waves <= `wave` whose execution SUCCEEDED (reports since it did), control = devices of the
// rollout's model still behind its release and without an execution of it. Per device: events =
// increase of `metric` between its first and last report in the window (a decrease, a counter
// reset, counts 0), exposure = seconds between.
fleet::HealthSample ReadHealthSample(pqxx::transaction_base& txn, const RolloutRow& rollout,
                                     int wave, const std::string& metric, int64_t since);

// Wave bookkeeping beside the state changes of WriteChanges.
void SetThresholdMet(pqxx::transaction_base& txn, const std::string& rollout_id, int wave,
                     int64_t at);
void SetHealthChecked(pqxx::transaction_base& txn, const std::string& rollout_id, int wave,
                      int64_t at);
void SetVerdict(pqxx::transaction_base& txn, const std::string& rollout_id, int wave,
                const std::string& verdict);

// Approvals. A pending approval for the rollout, if any.
struct PendingApproval {
  int64_t id = 0;
  int wave = 0;
  int64_t expires_at = 0;
};
std::optional<PendingApproval> FindPendingApproval(pqxx::transaction_base& txn,
                                                   const std::string& rollout_id);
// A new pending approval: the token's hash (to find it by its link), its nonce and the base URL
// of its links (to show them again, see migrations/0003_operating.sql).
struct NewApproval {
  int wave = 0;
  std::string token_hash;
  std::string nonce;
  std::string base_url;
  int64_t expires_at = 0;
};
// Stores it with an "approval_requested" event; an older pending one of the rollout expires.
int64_t CreateApproval(pqxx::transaction_base& txn, const RolloutRow& rollout,
                       const NewApproval& approval, const nlohmann::json& detail);
void ExpireApproval(pqxx::transaction_base& txn, const RolloutRow& rollout,
                    const PendingApproval& approval);

// A shared secret by name, created with `fresh` on first use (the first committer wins).
std::string LoadOrCreateSecret(pqxx::transaction_base& txn, const std::string& name,
                               const std::string& fresh);
// The secret, or nullopt when it was never created.
std::optional<std::string> ReadSecret(pqxx::transaction_base& txn, const std::string& name);
// The name of the secret that signs approval tokens.
inline constexpr char kApprovalSecret[] = "approval-hmac";

// ---- Operator commands ----------------------------------------------------------------------

// Applies an operator's command to a rollout in the caller's transaction, locking the rollout
// row first (the controller's passes lock it too, so the two never interleave):
//   kOperatorPause, kOperatorResume, kOperatorAbort, kApproved, kDenied.
// The rollout table decides (fleet::ApplyRolloutEvent); every change gets an events row with
// `actor` in its detail. Approve and deny also decide the rollout's pending approval. Resuming a
// rollout that a gate paused accepts the failures so far (abort criteria count later waves only).
// Abort halts the release; the controller's next pass cancels the QUEUED executions and notifies
// their devices. Returns the rollout's new state.
// Throws NotFound for an unknown rollout and Conflict when the table refuses the command (the
// message says the rollout's state and which states allow it).
fleet::RolloutState ApplyOperatorCommand(pqxx::transaction_base& txn, const std::string& rollout_id,
                                         fleet::Event command, const std::string& actor);

}  // namespace db
