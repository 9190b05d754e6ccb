// What `fleetwave rollout ...` and `fleetwave history` read and do: rollouts with their counts
// (fleetwave.rollout_status), one rollout's waves (fleetwave.wave_status) and pending approvals,
// the events history, and an operator's command applied in a transaction of its own.
//
// Times are ISO 8601 UTC strings ("2024-05-01T10:00:00Z") by the database clock. Each function
// runs its own transaction on `conn`. Errors: NotFound, Conflict, Unavailable, Error.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <pqxx/connection>

#include "db/connection.h"
#include "fleet/rollout_machine.h"

namespace db {

// Executions of a rollout or wave by job execution status.
struct ExecutionCounts {
  int64_t queued = 0;
  int64_t in_progress = 0;
  int64_t succeeded = 0;
  int64_t failed = 0;
  int64_t rejected = 0;
  int64_t timed_out = 0;
  int64_t canceled = 0;
};

struct RolloutSummary {
  std::string id;
  int64_t cycle_id = 0;
  std::string model;
  std::string version;
  std::string state;  // fleet::ToString(RolloutState)
  int current_wave = 0;
  int waves = 0;      // rows in fleetwave.waves
  int64_t total = 0;  // devices targeted
  ExecutionCounts counts;
  std::optional<std::string> reason;
  std::string created_at;
  std::optional<std::string> finished_at;
};

struct WaveSummary {
  int wave = 0;
  int64_t planned = 0;
  std::string state;  // fleet::ToString(WaveState)
  ExecutionCounts counts;
  std::optional<std::string> verdict;  // passed, passed_with_failures, failed
  std::optional<std::string> started_at;
  std::optional<std::string> finished_at;
};

struct ApprovalSummary {
  int wave = 0;
  std::string created_at;
  std::string expires_at;
  bool expired = false;  // past expires_at, not yet marked expired by the controller
  int64_t expires_epoch = 0;
  // What rebuilds its links (controller::ApprovalToken); unset for approvals made before 0003.
  std::optional<std::string> nonce;
  std::optional<std::string> base_url;
};

struct RolloutDetail {
  RolloutSummary rollout;
  std::string release_state;  // active, halted, retired
  nlohmann::json plan;        // as stored with the rollout
  std::vector<WaveSummary> waves;
  std::vector<ApprovalSummary> approvals;  // state 'pending', by wave
  // Read when there are pending approvals, to rebuild their links (controller::ApprovalToken).
  std::optional<std::string> approval_secret;
};

// Every rollout, or those of `cycle_id`: newest cycle first, then by id.
std::vector<RolloutSummary> ListRollouts(pqxx::connection& conn,
                                         std::optional<int64_t> cycle_id = std::nullopt);

// One rollout with its waves (by wave) and pending approvals. Throws NotFound.
RolloutDetail ShowRollout(pqxx::connection& conn, const std::string& rollout_id);

// ---- Status -----------------------------------------------------------------------------------

struct CycleSummary {
  int64_t id = 0;
  std::string state;  // running, completed
  std::string started_at;
  std::string not_before;                 // a running cycle plans its rollouts from then on
  std::optional<std::string> planned_at;  // unset until planned
  std::optional<std::string> finished_at;
  std::string heartbeat_at;  // the leader's last reconcile pass on it
  int64_t leader_epoch = 0;
  int rollouts = 0;
};

struct LeaderSummary {
  std::string holder;
  int64_t epoch = 0;
  std::string heartbeat_at;
  std::string expires_at;
  bool expired = false;  // nobody leads until a controller takes the lease again
};

struct Status {
  std::string now;                      // the database clock
  std::optional<CycleSummary> cycle;    // the running cycle, else the latest; unset: none yet
  std::optional<LeaderSummary> leader;  // unset: no controller ever held the lease
  std::vector<RolloutDetail> rollouts;  // the cycle's, by id
};

// The status of the fleet in one snapshot: what `fleetwave status` and GET /api/v1/status show.
Status ReadStatus(pqxx::connection& conn, const std::string& lease_name = "controller");

// The latest `limit` cycles, newest first. REQUIRES: limit > 0.
std::vector<CycleSummary> ListCycles(pqxx::connection& conn, int64_t limit);

// ---- History ----------------------------------------------------------------------------------

struct HistoryQuery {
  // Both unset: the latest cycle (the one with the highest id). Both set: events matching both.
  std::optional<int64_t> cycle_id;
  std::optional<std::string> rollout_id;
  std::optional<int64_t> limit;  // only the last `limit` matching events; REQUIRES: > 0
};

struct HistoryEvent {
  int64_t id = 0;
  std::string at;
  std::optional<int64_t> cycle_id;
  std::optional<std::string> rollout_id;
  std::optional<int> wave;
  std::string kind;
  std::optional<std::string> from_state;
  std::optional<std::string> to_state;
  nlohmann::json detail;  // an object: reason, actor, by, ...
};

struct History {
  std::optional<int64_t> cycle_id;   // the cycle read (the latest one by default); unset: none yet
  std::vector<HistoryEvent> events;  // in id order
};

// The events rows selected by `query`, in id order. Throws NotFound for a cycle or rollout that
// does not exist; with no query and no cycle yet, returns no events.
History ReadHistory(pqxx::connection& conn, const HistoryQuery& query);

// ---- Operator commands ------------------------------------------------------------------------

struct OperatorResult {
  std::string from;                  // the rollout's state before the command
  std::string to;                    // and after it
  std::vector<HistoryEvent> events;  // the events rows the command wrote, in order
};

// db::ApplyOperatorCommand (rollouts.h) for `command` in one transaction, committed.
// Throws NotFound, Conflict (refused: the message says the state and which states allow it), and
// Error when the connection broke during COMMIT (the outcome is unknown; it is never resent).
OperatorResult RunOperatorCommand(pqxx::connection& conn, const std::string& rollout_id,
                                  fleet::Event command, const std::string& actor);
// The same in the caller's transaction (not committed; libpqxx exceptions pass through).
OperatorResult RunOperatorCommand(pqxx::transaction_base& txn, const std::string& rollout_id,
                                  fleet::Event command, const std::string& actor);

// ---- Approval links ---------------------------------------------------------------------------

struct ApprovalRecord {
  int64_t id = 0;
  std::string rollout_id;
  int64_t cycle_id = 0;
  int wave = 0;
  std::string state;  // pending, approved, denied, expired
  int64_t expires_at = 0;
  std::string model;
  std::string version;
  std::string rollout_state;
};

// Whether a link's token is genuine for `approval`, given the approval secret (empty when none
// was ever created) and the database clock (epoch seconds).
using TokenCheck =
    std::function<bool(const ApprovalRecord& approval, const std::string& secret, int64_t now)>;

struct ApprovalLinkUse {
  std::optional<ApprovalRecord> approval;  // unset: no approval has this token hash
  bool genuine = false;                    // `check` passed
  bool expired = false;                    // past expires_at by the database clock
  std::optional<OperatorResult> decided;   // set when `command` was applied and committed
};

// One transaction: finds the approval by `token_hash` (locking it) and checks its token; when
// `command` (kApproved or kDenied) is given and the approval is pending, genuine and unexpired,
// applies it as `actor` (RunOperatorCommand) and commits. Anything else changes nothing.
// Throws Conflict when the rollout refuses the command, Error/Unavailable on database failures.
ApprovalLinkUse UseApprovalLink(pqxx::connection& conn, const std::string& token_hash,
                                const TokenCheck& check, std::optional<fleet::Event> command,
                                const std::string& actor);

}  // namespace db
