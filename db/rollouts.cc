#include "db/rollouts.h"

#include <pqxx/pqxx>

namespace db {
namespace {

using Json = nlohmann::json;

std::optional<int64_t> OptionalInt(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<int64_t>();
}

}  // namespace

void RecordEvent(pqxx::transaction_base& txn, const EventRecord& e) {
  txn.exec_params(
      "insert into fleetwave.events (cycle_id, rollout_id, wave, kind, from_state, to_state, "
      "detail) values ($1, $2, $3, $4, $5, $6, $7::jsonb)",
      e.cycle_id, e.rollout_id, e.wave, e.kind, e.from_state, e.to_state, e.detail.dump());
}

// ---- Cycles ---------------------------------------------------------------------------------

std::optional<CycleRow> LockRunningCycle(pqxx::transaction_base& txn) {
  auto rows = txn.exec(
      "select id, leader_epoch, extract(epoch from started_at)::bigint, "
      "  extract(epoch from not_before)::bigint, extract(epoch from heartbeat_at)::bigint, "
      "  extract(epoch from planned_at)::bigint, extract(epoch from clock_timestamp())::bigint "
      "from fleetwave.cycles where state = 'running' for update");
  if (rows.empty()) return std::nullopt;
  const auto& r = rows[0];
  CycleRow c;
  c.id = r[0].as<int64_t>();
  c.leader_epoch = r[1].as<int64_t>();
  c.started_at = r[2].as<int64_t>();
  c.not_before = r[3].as<int64_t>();
  c.heartbeat_at = r[4].as<int64_t>();
  c.planned_at = OptionalInt(r[5]);
  c.now = r[6].as<int64_t>();
  return c;
}

std::optional<int64_t> StartCycle(pqxx::transaction_base& txn, const std::string& by,
                                  int64_t delay_seconds) {
  // `on conflict do nothing` against the unique partial index: a concurrent starter waits for
  // the other's commit and then inserts nothing.
  auto rows = txn.exec_params(
      "insert into fleetwave.cycles (state, not_before) "
      "values ('running', now() + make_interval(secs => $1)) "
      "on conflict ((true)) where state = 'running' do nothing returning id",
      delay_seconds);
  if (rows.empty()) return std::nullopt;
  const int64_t id = rows[0][0].as<int64_t>();
  RecordEvent(txn, {.cycle_id = id,
                    .kind = "cycle_started",
                    .to_state = "running",
                    .detail = {{"by", by}, {"delaySeconds", delay_seconds}}});
  return id;
}

CycleHealth ReadCycleHealth(pqxx::transaction_base& txn) {
  auto rows = txn.exec(
      "select id, extract(epoch from clock_timestamp() - heartbeat_at)::float8 "
      "from fleetwave.cycles where state = 'running'");
  CycleHealth h;
  h.running = static_cast<int64_t>(rows.size());
  if (!rows.empty()) {
    h.cycle_id = rows[0][0].as<int64_t>();
    h.heartbeat_age_seconds = rows[0][1].as<double>();
  }
  return h;
}

// ---- Rollouts -------------------------------------------------------------------------------

RolloutRow LockRollout(pqxx::transaction_base& txn, const std::string& rollout_id,
                       std::vector<WaveRow>* waves) {
  auto rows = txn.exec_params(
      "select r.id, r.cycle_id, r.release_id, rel.model, rel.version, rel.version_key, r.state, "
      "  r.current_wave, r.total, r.plan::text, r.gate_from_wave, "
      "  exists (select 1 from fleetwave.releases n where n.model = rel.model "
      "          and n.state = 'active' and n.version_key > rel.version_key), "
      "  coalesce((select max(a.wave) from fleetwave.approvals a "
      "            where a.rollout_id = r.id and a.state = 'approved'), 0), "
      "  rel.state, extract(epoch from clock_timestamp())::bigint "
      "from fleetwave.rollouts r join fleetwave.releases rel on rel.id = r.release_id "
      "where r.id = $1 for update of r",
      rollout_id);
  if (rows.empty()) throw NotFound("no rollout " + rollout_id + " (`fleetwave rollout list`)");
  const auto& r = rows[0];
  RolloutRow row;
  row.id = r[0].as<std::string>();
  row.cycle_id = r[1].as<int64_t>();
  row.release_id = r[2].as<int64_t>();
  row.model = r[3].as<std::string>();
  row.version = r[4].as<std::string>();
  row.version_key = r[5].as<std::string>();
  row.state = *fleet::ParseRolloutState(r[6].as<std::string>());
  row.current_wave = r[7].as<int>();
  row.total = r[8].as<int64_t>();
  std::string error;
  auto plan = fleet::ParsePlan(r[9].as<std::string>(), &error);
  if (!plan) throw Error("rollout " + row.id + " has an invalid stored plan: " + error);
  row.plan = std::move(*plan);
  row.gate_from_wave = r[10].as<int>();
  row.newer_release = r[11].as<bool>();
  row.approved_wave = r[12].as<int>();
  row.release_state = r[13].as<std::string>();
  row.now = r[14].as<int64_t>();
  if (waves) {
    waves->clear();
    auto w = txn.exec_params(
        "select wave, planned, state, verdict, queued, first_position, "
        "  extract(epoch from started_at)::bigint, extract(epoch from threshold_met_at)::bigint, "
        "  extract(epoch from finished_at)::bigint "
        "from fleetwave.waves where rollout_id = $1 order by wave",
        rollout_id);
    for (const auto& x : w) {
      WaveRow wave;
      wave.wave = x[0].as<int>();
      wave.planned = x[1].as<int64_t>();
      wave.state = *fleet::ParseWaveState(x[2].as<std::string>());
      if (!x[3].is_null()) wave.verdict = x[3].as<std::string>();
      wave.queued = x[4].as<int64_t>();
      wave.first_position = x[5].as<int64_t>();
      wave.started_at = OptionalInt(x[6]);
      wave.threshold_met_at = OptionalInt(x[7]);
      wave.finished_at = OptionalInt(x[8]);
      waves->push_back(std::move(wave));
    }
  }
  return row;
}

fleet::RolloutSnapshot SnapshotOf(const RolloutRow& rollout, const std::vector<WaveRow>& waves) {
  fleet::RolloutSnapshot s;
  s.state = rollout.state;
  for (const auto& w : waves) s.waves.push_back(w.state);
  s.newer_release = rollout.newer_release;
  s.approved_wave = rollout.approved_wave;
  return s;
}

void WriteChanges(pqxx::transaction_base& txn, const RolloutRow& rollout,
                  const std::vector<fleet::Change>& changes, const Json& detail) {
  for (const fleet::Change& c : changes) {
    const std::string to(c.to);
    if (c.wave == 0) {
      const auto state = *fleet::ParseRolloutState(to);
      txn.exec_params(
          "update fleetwave.rollouts set state = $2, updated_at = now(), "
          "  reason = coalesce(nullif($3, ''), reason), "
          "  finished_at = case when $4 then now() else finished_at end "
          "where id = $1",
          rollout.id, to, c.reason, fleet::IsTerminal(state));
      if (fleet::OnEnter(state).halt_release) {
        auto halted = txn.exec_params(
            "update fleetwave.releases set state = 'halted', updated_at = now() "
            "where id = $1 and state = 'active' returning 1",
            rollout.release_id);
        if (!halted.empty()) {
          Json d = detail;
          d["release"] = {{"model", rollout.model}, {"version", rollout.version}};
          d["reason"] = "rollout " + rollout.id + " aborted";
          RecordEvent(txn, {.cycle_id = rollout.cycle_id,
                            .rollout_id = rollout.id,
                            .kind = "release_halted",
                            .from_state = "active",
                            .to_state = "halted",
                            .detail = d});
        }
      }
    } else {
      txn.exec_params(
          "update fleetwave.waves set state = $3, "
          "  started_at = case when $3 = 'running' then coalesce(started_at, now()) "
          "                    else started_at end, "
          "  finished_at = case when $4 then now() else finished_at end "
          "where rollout_id = $1 and wave = $2",
          rollout.id, c.wave, to, fleet::IsTerminal(*fleet::ParseWaveState(to)));
      if (c.event == fleet::Event::kWaveStarted) {
        txn.exec_params(
            "update fleetwave.rollouts set current_wave = $2, updated_at = now() where id = $1",
            rollout.id, c.wave);
      }
    }
    Json d = detail;
    if (!c.reason.empty()) d["reason"] = c.reason;
    RecordEvent(txn, {.cycle_id = rollout.cycle_id,
                      .rollout_id = rollout.id,
                      .wave = c.wave == 0 ? std::nullopt : std::optional<int>(c.wave),
                      .kind = std::string(fleet::ToString(c.event)),
                      .from_state = std::string(c.from),
                      .to_state = to,
                      .detail = d});
  }
}

// ---- Operator commands ----------------------------------------------------------------------

fleet::RolloutState ApplyOperatorCommand(pqxx::transaction_base& txn, const std::string& rollout_id,
                                         fleet::Event command, const std::string& actor) {
  std::vector<WaveRow> waves;
  RolloutRow rollout = LockRollout(txn, rollout_id, &waves);
  auto changes = fleet::ApplyRolloutEvent(SnapshotOf(rollout, waves), command);
  if (!changes) {
    std::string allowed;
    for (const auto& t : fleet::RolloutTransitions()) {
      if (t.event != command) continue;
      allowed += (allowed.empty() ? "" : " or ") + std::string(fleet::ToString(t.from));
    }
    throw Conflict("rollout " + rollout_id + " is " + std::string(fleet::ToString(rollout.state)) +
                   "; " + std::string(fleet::ToString(command)) +
                   " applies only to a rollout that is " + allowed);
  }
  Json detail = {{"actor", actor}};
  if (command == fleet::Event::kApproved || command == fleet::Event::kDenied) {
    auto decided = txn.exec_params(
        "update fleetwave.approvals set state = $2, decided_at = now(), decided_by = $3 "
        "where rollout_id = $1 and state = 'pending' returning wave",
        rollout_id, command == fleet::Event::kApproved ? "approved" : "denied", actor);
    if (decided.empty())
      throw Conflict("rollout " + rollout_id + " has no pending approval to decide");
    const int wave = decided[0][0].as<int>();
    detail["approvalWave"] = wave;
    RecordEvent(
        txn, {.cycle_id = rollout.cycle_id,
              .rollout_id = rollout_id,
              .wave = wave,
              .kind = command == fleet::Event::kApproved ? "approval_granted" : "approval_denied",
              .from_state = "pending",
              .to_state = command == fleet::Event::kApproved ? "approved" : "denied",
              .detail = {{"actor", actor}}});
  }
  if (command == fleet::Event::kOperatorResume) {
    // A gate paused it: the failed wave stays failed and its failures are accepted.
    const bool gate_paused = rollout.current_wave >= 1 &&
                             rollout.current_wave <= static_cast<int>(waves.size()) &&
                             waves[rollout.current_wave - 1].state == fleet::WaveState::kFailed;
    if (gate_paused) {
      txn.exec_params("update fleetwave.rollouts set gate_from_wave = $2 where id = $1", rollout_id,
                      rollout.current_wave + 1);
    }
  }
  for (auto& c : *changes)
    if (c.reason.empty()) c.reason = std::string(fleet::ToString(command)) + " by " + actor;
  WriteChanges(txn, rollout, *changes, detail);
  return *fleet::ParseRolloutState(changes->front().to);
}

}  // namespace db
