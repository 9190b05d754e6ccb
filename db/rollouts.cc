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
        "  extract(epoch from finished_at)::bigint, "
        "  extract(epoch from health_checked_at)::bigint "
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
      wave.health_checked_at = OptionalInt(x[9]);
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

namespace {

void HaltRelease(pqxx::transaction_base& txn, const RolloutRow& rollout, const Json& detail) {
  auto halted = txn.exec_params(
      "update fleetwave.releases set state = 'halted', updated_at = now() "
      "where id = $1 and state = 'active' returning 1",
      rollout.release_id);
  if (halted.empty()) return;
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

// The operator's word for a command, as typed on the command line.
std::string CommandWord(fleet::Event e) {
  switch (e) {
    case fleet::Event::kOperatorPause:
      return "pause";
    case fleet::Event::kOperatorResume:
      return "resume";
    case fleet::Event::kOperatorAbort:
      return "abort";
    case fleet::Event::kApproved:
      return "approve";
    case fleet::Event::kDenied:
      return "deny";
    default:
      return "";
  }
}

}  // namespace

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
    // The effect after its cause in the history: the release is halted after the rollout's
    // own change is recorded.
    if (c.wave == 0 && fleet::OnEnter(*fleet::ParseRolloutState(to)).halt_release)
      HaltRelease(txn, rollout, detail);
  }
}

// ---- Operator commands ----------------------------------------------------------------------

fleet::RolloutState ApplyOperatorCommand(pqxx::transaction_base& txn, const std::string& rollout_id,
                                         fleet::Event command, const std::string& actor) {
  const std::string word = CommandWord(command);
  if (word.empty())
    throw Error("not an operator command: " + std::string(fleet::ToString(command)));
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
        "where rollout_id = $1 and state = 'pending' and expires_at > clock_timestamp() "
        "returning wave",
        rollout_id, command == fleet::Event::kApproved ? "approved" : "denied", actor);
    if (decided.empty())
      throw Conflict("rollout " + rollout_id +
                     " has no unexpired approval to decide; an expired one pauses the rollout, "
                     "and `fleetwave rollout resume` asks again");
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
    if (c.reason.empty()) c.reason = word + " by " + actor;
  WriteChanges(txn, rollout, *changes, detail);
  return *fleet::ParseRolloutState(changes->front().to);
}

}  // namespace db

// ---- The controller's passes ----------------------------------------------------------------

namespace db {
namespace {

// The devices a rollout of release $4 (model $2, version key $3) targets.
constexpr const char* kEligibleDevices =
    " from fleetwave.devices d "
    " where d.model = $2 and d.firmware_key < $3 and not d.quarantined "
    "   and not exists (select 1 from fleetwave.quarantines q "
    "                   where q.release_id = $4 and q.thing_name = d.id) "
    "   and not exists (select 1 from fleetwave.job_executions e "
    "                   where e.thing_name = d.id and e.status in ('QUEUED', 'IN_PROGRESS')) ";

}  // namespace

std::vector<std::string> PlanCycle(pqxx::transaction_base& txn, int64_t cycle_id,
                                   const fleet::Plan& plan) {
  const std::string plan_json = fleet::PlanToJson(plan);
  // Over a million devices, a nested loop per device over quarantines and executions costs
  // seconds where hash anti joins cost a tenth; JIT compiling the statements is not worth it.
  txn.exec("set local enable_nestloop = off; set local jit = off");
  txn.exec_params("update fleetwave.cycles set planned_at = now(), plan = $2::jsonb where id = $1",
                  cycle_id, plan_json);
  auto releases = txn.exec(
      "select distinct on (model) id, model, version, version_key from fleetwave.releases "
      "where state = 'active' order by model, version_key desc");
  std::vector<std::string> created;
  for (const auto& rel : releases) {
    const int64_t release_id = rel[0].as<int64_t>();
    const std::string model = rel[1].as<std::string>();
    const std::string version = rel[2].as<std::string>();
    const std::string version_key = rel[3].as<std::string>();
    const std::string id = fleet::RolloutId(model, version, cycle_id);
    const int64_t n = txn.exec_params1(std::string("select count(*), $1::text") + kEligibleDevices,
                                       id, model, version_key, release_id)[0]
                          .as<int64_t>();
    if (n == 0) continue;
    const std::vector<int64_t> targets = fleet::CumulativeTargets(n, plan.waves);
    const std::vector<int64_t> sizes = fleet::WaveSizes(targets);
    txn.exec_params(
        "insert into fleetwave.rollouts (id, cycle_id, release_id, total, plan, job_document) "
        "select $1, $2, r.id, $4, $5::jsonb, jsonb_build_object('operation', 'firmware.update', "
        "  'release', jsonb_build_object('model', r.model, 'version', r.version, "
        "    'counter', r.counter, 'url', r.url, 'sha256', r.sha256, 'size', r.size)) "
        "  || case when r.signature is null then '{}'::jsonb "
        "          else jsonb_build_object('releaseSignature', r.signature) end "
        "from fleetwave.releases r where r.id = $3",
        id, cycle_id, release_id, n, plan_json);
    // Position p is element p % 1000 + 1 of chunk p / 1000.
    auto chunks = txn.exec_params(
        std::string("insert into fleetwave.rollout_order (rollout_id, chunk, things) "
                    "select $1, pos / 1000, array_agg(id order by pos) from ("
                    "  select d.id, row_number() over (order by (d.ring = 'canary') desc, "
                    "    left(md5($1 || '/' || d.id), 16) collate \"C\", d.id collate \"C\") - 1 "
                    "    as pos") +
            kEligibleDevices + ") ranked group by pos / 1000 returning cardinality(things)",
        id, model, version_key, release_id);
    int64_t ordered = 0;
    for (const auto& c : chunks) ordered += c[0].as<int64_t>();
    if (ordered != n)
      throw Conflict("devices of model " + model + " changed while the cycle was planned");
    int64_t first = 0;
    for (size_t k = 0; k < sizes.size(); ++k) {
      txn.exec_params(
          "insert into fleetwave.waves (rollout_id, wave, planned, first_position) "
          "values ($1, $2, $3, $4)",
          id, static_cast<int>(k + 1), sizes[k], first);
      first += sizes[k];
    }
    RecordEvent(
        txn,
        {.cycle_id = cycle_id,
         .rollout_id = id,
         .kind = "rollout_created",
         .to_state = "running",
         .detail = {{"model", model}, {"version", version}, {"devices", n}, {"waves", sizes}}});
    created.push_back(id);
  }
  txn.exec("set local enable_nestloop to default; set local jit to default");
  return created;
}

int64_t CompleteCycle(pqxx::transaction_base& txn, int64_t cycle_id, int64_t delay_seconds) {
  txn.exec_params(
      "update fleetwave.cycles set state = 'completed', finished_at = now() where id = $1 "
      "and state = 'running'",
      cycle_id);
  // Every rollout of the cycle is terminal: nothing reads their order again.
  txn.exec_params(
      "delete from fleetwave.rollout_order where rollout_id in "
      "(select id from fleetwave.rollouts where cycle_id = $1)",
      cycle_id);
  RecordEvent(txn, {.cycle_id = cycle_id,
                    .kind = std::string(fleet::ToString(fleet::Event::kAllRolloutsTerminal)),
                    .from_state = "running",
                    .to_state = "completed"});
  auto next = StartCycle(txn, "controller", delay_seconds);
  if (!next)
    throw Conflict("another cycle started while cycle " + std::to_string(cycle_id) +
                   " was completing");
  return *next;
}

void Heartbeat(pqxx::transaction_base& txn, int64_t cycle_id, int64_t epoch) {
  txn.exec_params(
      "update fleetwave.cycles set heartbeat_at = clock_timestamp(), leader_epoch = $2 "
      "where id = $1",
      cycle_id, epoch);
}

std::vector<RolloutRef> CycleRollouts(pqxx::transaction_base& txn, int64_t cycle_id) {
  auto rows = txn.exec_params(
      "select id, state from fleetwave.rollouts where cycle_id = $1 order by id", cycle_id);
  std::vector<RolloutRef> out;
  for (const auto& r : rows) {
    RolloutRef ref{r[0].as<std::string>(), *fleet::ParseRolloutState(r[1].as<std::string>())};
    // Asked only where it matters: the search reads the index entries of all the rollout's
    // executions, and the engine reads its rollouts on every pass (10 ms at 100,000).
    if (fleet::OnEnter(ref.state).cancel_queued)
      ref.has_queued = txn.exec_params(
                              "select exists (select 1 from fleetwave.job_executions "
                              "where job_id = $1 and status = 'QUEUED')",
                              ref.id)[0][0]
                           .as<bool>();
    out.push_back(std::move(ref));
  }
  return out;
}

std::vector<fleet::StatusCounts> CountByWave(pqxx::transaction_base& txn,
                                             const std::string& rollout_id, int waves) {
  std::vector<fleet::StatusCounts> counts(static_cast<size_t>(waves));
  auto rows = txn.exec_params(
      "select wave, status, count(*) from fleetwave.job_executions where job_id = $1 "
      "group by wave, status",
      rollout_id);
  for (const auto& r : rows) {
    const int wave = r[0].as<int>();
    if (wave < 1 || wave > waves) continue;
    counts[static_cast<size_t>(wave - 1)].Add(*fleet::ParseJobStatus(r[1].as<std::string>()),
                                              r[2].as<int64_t>());
  }
  return counts;
}

std::vector<DueExecution> TimedOutExecutions(pqxx::transaction_base& txn,
                                             const std::string& rollout_id,
                                             const fleet::Timeouts& timeouts, int64_t limit) {
  // fleet::TimeoutDeadline in SQL, by the database clock.
  auto rows = txn.exec_params(
      "select thing_name, case "
      "  when status = 'QUEUED' then 'QUEUED longer than ' || $2::bigint || "
      "    ' s (timeouts.queuedSeconds)' "
      "  when step_timeout_at <= clock_timestamp() then 'step timeout set by the device passed' "
      "  else 'IN_PROGRESS longer than ' || $3::bigint || ' s (timeouts.inProgressSeconds)' end "
      "from fleetwave.job_executions "
      "where job_id = $1 and status in ('QUEUED', 'IN_PROGRESS') and ("
      "  (status = 'QUEUED' and queued_at + make_interval(secs => $2::bigint) "
      "     <= clock_timestamp()) or "
      "  (status = 'IN_PROGRESS' and (coalesce(started_at, queued_at) "
      "     + make_interval(secs => $3::bigint) <= clock_timestamp() "
      "     or step_timeout_at <= clock_timestamp()))) "
      "limit $4",
      rollout_id, timeouts.queued_seconds, timeouts.in_progress_seconds, limit);
  std::vector<DueExecution> out;
  for (const auto& r : rows) out.push_back({r[0].as<std::string>(), r[1].as<std::string>()});
  return out;
}

std::vector<OrphanedExecution> OrphanedTimeouts(pqxx::transaction_base& txn, int64_t limit) {
  auto rows = txn.exec_params(
      "with t as ("
      "  select e.job_id, e.thing_name, e.status, e.queued_at, e.started_at, e.step_timeout_at, "
      "    make_interval(secs => (r.plan -> 'timeouts' ->> 'queuedSeconds')::bigint) as queued, "
      "    make_interval(secs => (r.plan -> 'timeouts' ->> 'inProgressSeconds')::bigint) "
      "      as in_progress "
      "  from fleetwave.job_executions e join fleetwave.rollouts r on r.id = e.job_id "
      "  where e.status in ('QUEUED', 'IN_PROGRESS') "
      "    and r.state in ('completed', 'aborted', 'superseded')) "
      "select job_id, thing_name, case when status = 'QUEUED' then 'QUEUED longer than ' || "
      "  queued || ' (timeouts.queuedSeconds) after its rollout ended' "
      "  else 'IN_PROGRESS longer than ' || in_progress || "
      "  ' (timeouts.inProgressSeconds) after its rollout ended' end "
      "from t where (status = 'QUEUED' and queued_at + queued <= clock_timestamp()) "
      "  or (status = 'IN_PROGRESS' and (coalesce(started_at, queued_at) + in_progress "
      "      <= clock_timestamp() or step_timeout_at <= clock_timestamp())) "
      "limit $1",
      limit);
  std::vector<OrphanedExecution> out;
  for (const auto& r : rows)
    out.push_back({r[0].as<std::string>(), r[1].as<std::string>(), r[2].as<std::string>()});
  return out;
}

std::vector<UnsettledFailure> UnsettledFailures(pqxx::transaction_base& txn,
                                                const RolloutRow& rollout, int64_t limit) {
  // A device's failures of the release: every retried attempt failed once (attempts - 1), plus
  // the current status when it is a failure, over every rollout of the release.
  auto rows = txn.exec_params(
      "select e.thing_name, e.status, e.attempts, ("
      "  select sum(o.attempts - 1 + (o.status in ('FAILED', 'REJECTED', 'TIMED_OUT'))::int) "
      "  from fleetwave.job_executions o join fleetwave.rollouts r on r.id = o.job_id "
      "  where o.thing_name = e.thing_name and r.release_id = $2) "
      "from fleetwave.job_executions e "
      "where e.job_id = $1 and e.status in ('FAILED', 'REJECTED', 'TIMED_OUT') and not e.settled "
      "limit $3",
      rollout.id, rollout.release_id, limit);
  std::vector<UnsettledFailure> out;
  for (const auto& r : rows)
    out.push_back({r[0].as<std::string>(), *fleet::ParseJobStatus(r[1].as<std::string>()),
                   r[2].as<int64_t>(), std::max<int64_t>(1, r[3].as<int64_t>())});
  return out;
}

namespace {

std::string JsonArray(const std::vector<std::string>& values) {
  return nlohmann::json(values).dump();
}

}  // namespace

void SettleFailures(pqxx::transaction_base& txn, const RolloutRow& rollout,
                    const std::vector<std::string>& final_failures,
                    const std::vector<std::string>& quarantine) {
  std::vector<std::string> all = final_failures;
  all.insert(all.end(), quarantine.begin(), quarantine.end());
  if (all.empty()) return;
  txn.exec_params(
      "update fleetwave.job_executions set settled = true where job_id = $1 "
      "and thing_name in (select jsonb_array_elements_text($2::jsonb))",
      rollout.id, JsonArray(all));
  if (quarantine.empty()) return;
  const std::string reason = "failed release " + rollout.version + " " +
                             std::to_string(rollout.plan.max_attempts_per_release) +
                             " times (maxAttemptsPerRelease)";
  auto added = txn.exec_params(
      "insert into fleetwave.quarantines (thing_name, release_id, reason) "
      "select x, $2, $3 from jsonb_array_elements_text($1::jsonb) x "
      "on conflict do nothing returning thing_name",
      JsonArray(quarantine), rollout.release_id, reason);
  for (const auto& r : added) {
    RecordEvent(txn, {.cycle_id = rollout.cycle_id,
                      .rollout_id = rollout.id,
                      .kind = "device_quarantined",
                      .detail = {{"thing", r[0].as<std::string>()},
                                 {"release", rollout.version},
                                 {"reason", reason}}});
  }
}

std::vector<std::string> QueuedThings(pqxx::transaction_base& txn, const std::string& rollout_id,
                                      int64_t limit) {
  auto rows = txn.exec_params(
      "select thing_name from fleetwave.job_executions where job_id = $1 and status = 'QUEUED' "
      "limit $2",
      rollout_id, limit);
  std::vector<std::string> out;
  for (const auto& r : rows) out.push_back(r[0].as<std::string>());
  return out;
}

Targets NextTargets(pqxx::transaction_base& txn, const std::string& rollout_id, const WaveRow& wave,
                    int64_t limit) {
  const int64_t from = wave.first_position + wave.queued;
  const int64_t to = std::min(wave.first_position + wave.planned, from + limit);
  Targets out;
  if (to <= from) return out;
  auto rows = txn.exec_params(
      "select u.thing, d.id is not null from fleetwave.rollout_order o "
      "cross join lateral unnest(o.things) with ordinality as u(thing, i) "
      "left join fleetwave.devices d on d.id = u.thing "
      "where o.rollout_id = $1 and o.chunk between $2 / 1000 and ($3 - 1) / 1000 "
      "  and o.chunk * 1000 + u.i - 1 >= $2 and o.chunk * 1000 + u.i - 1 < $3 "
      "order by o.chunk, u.i",
      rollout_id, from, to);
  for (const auto& r : rows) {
    if (r[1].as<bool>()) out.things.push_back(r[0].as<std::string>());
  }
  out.consumed = static_cast<int64_t>(rows.size());
  return out;
}

void AddQueued(pqxx::transaction_base& txn, const std::string& rollout_id, int wave, int64_t n) {
  txn.exec_params(
      "update fleetwave.waves set queued = queued + $3 where rollout_id = $1 and wave = $2",
      rollout_id, wave, n);
}

int64_t QueuedLastMinute(pqxx::transaction_base& txn, const std::string& rollout_id) {
  return txn
      .exec_params1(
          "select count(*) from fleetwave.job_executions where job_id = $1 "
          "and queued_at > clock_timestamp() - interval '60 seconds'",
          rollout_id)[0]
      .as<int64_t>();
}

fleet::HealthSample ReadHealthSample(pqxx::transaction_base& txn, const RolloutRow& rollout,
                                     int wave, const std::string& metric, int64_t since) {
  auto rows = txn.exec_params(
      "with reports as ("
      "  select t.thing_name, t.received_at, (t.payload ->> $3)::float8 as v, "
      "    e.thing_name is not null as updated "
      "  from fleetwave.telemetry t "
      "  join fleetwave.devices d on d.id = t.thing_name and d.model = $5 "
      "  left join fleetwave.job_executions e on e.job_id = $1 and e.thing_name = t.thing_name "
      "  where t.received_at >= to_timestamp($4) and jsonb_typeof(t.payload -> $3) = 'number' "
      "    and ((e.wave <= $2 and e.status = 'SUCCEEDED' and t.received_at >= e.last_updated_at) "
      "      or (e.thing_name is null and d.firmware_key < $6))), "
      "per_device as ("
      "  select updated, thing_name, greatest((array_agg(v order by received_at desc))[1] "
      "      - (array_agg(v order by received_at))[1], 0) as events, "
      "    extract(epoch from max(received_at) - min(received_at))::float8 as exposure "
      "  from reports group by updated, thing_name) "
      "select updated, count(*), coalesce(round(sum(events)), 0)::bigint, "
      "  coalesce(sum(exposure), 0)::float8 "
      "from per_device where exposure > 0 group by updated",
      rollout.id, wave, metric, since, rollout.model, rollout.version_key);
  fleet::HealthSample sample;
  for (const auto& r : rows) {
    fleet::HealthGroup& g = r[0].as<bool>() ? sample.updated : sample.control;
    g.devices = r[1].as<int64_t>();
    g.events = r[2].as<int64_t>();
    g.exposure_seconds = r[3].as<double>();
  }
  return sample;
}

void SetThresholdMet(pqxx::transaction_base& txn, const std::string& rollout_id, int wave,
                     int64_t at) {
  txn.exec_params(
      "update fleetwave.waves set threshold_met_at = to_timestamp($3) "
      "where rollout_id = $1 and wave = $2 and threshold_met_at is null",
      rollout_id, wave, at);
}

void SetHealthChecked(pqxx::transaction_base& txn, const std::string& rollout_id, int wave,
                      int64_t at) {
  txn.exec_params(
      "update fleetwave.waves set health_checked_at = to_timestamp($3) "
      "where rollout_id = $1 and wave = $2",
      rollout_id, wave, at);
}

void SetVerdict(pqxx::transaction_base& txn, const std::string& rollout_id, int wave,
                const std::string& verdict) {
  txn.exec_params("update fleetwave.waves set verdict = $3 where rollout_id = $1 and wave = $2",
                  rollout_id, wave, verdict);
}

std::optional<PendingApproval> FindPendingApproval(pqxx::transaction_base& txn,
                                                   const std::string& rollout_id) {
  auto rows = txn.exec_params(
      "select id, wave, extract(epoch from expires_at)::bigint from fleetwave.approvals "
      "where rollout_id = $1 and state = 'pending'",
      rollout_id);
  if (rows.empty()) return std::nullopt;
  return PendingApproval{rows[0][0].as<int64_t>(), rows[0][1].as<int>(), rows[0][2].as<int64_t>()};
}

int64_t CreateApproval(pqxx::transaction_base& txn, const RolloutRow& rollout,
                       const NewApproval& approval, const nlohmann::json& detail) {
  // A rollout paused while it awaited approval asks again when resumed: the old token dies.
  txn.exec_params(
      "update fleetwave.approvals set state = 'expired', decided_at = now() "
      "where rollout_id = $1 and state = 'pending'",
      rollout.id);
  const int64_t id = txn.exec_params1(
                            "insert into fleetwave.approvals (rollout_id, wave, token_hash, nonce, "
                            "base_url, expires_at) values ($1, $2, $3, $4, $5, to_timestamp($6)) "
                            "returning id",
                            rollout.id, approval.wave, approval.token_hash, approval.nonce,
                            approval.base_url, approval.expires_at)[0]
                         .as<int64_t>();
  nlohmann::json d = detail;
  d["approval"] = id;
  d["expiresAt"] = approval.expires_at;
  RecordEvent(txn, {.cycle_id = rollout.cycle_id,
                    .rollout_id = rollout.id,
                    .wave = approval.wave,
                    .kind = "approval_requested",
                    .to_state = "pending",
                    .detail = d});
  return id;
}

void ExpireApproval(pqxx::transaction_base& txn, const RolloutRow& rollout,
                    const PendingApproval& approval) {
  txn.exec_params(
      "update fleetwave.approvals set state = 'expired', decided_at = now() "
      "where id = $1 and state = 'pending'",
      approval.id);
  RecordEvent(txn, {.cycle_id = rollout.cycle_id,
                    .rollout_id = rollout.id,
                    .wave = approval.wave,
                    .kind = "approval_token_expired",
                    .from_state = "pending",
                    .to_state = "expired",
                    .detail = {{"approval", approval.id}}});
}

std::string LoadOrCreateSecret(pqxx::transaction_base& txn, const std::string& name,
                               const std::string& fresh) {
  txn.exec_params(
      "insert into fleetwave.secrets (name, value) values ($1, convert_to($2, 'UTF8')) "
      "on conflict (name) do nothing",
      name, fresh);
  return txn
      .exec_params1("select convert_from(value, 'UTF8') from fleetwave.secrets where name = $1",
                    name)[0]
      .as<std::string>();
}

std::optional<std::string> ReadSecret(pqxx::transaction_base& txn, const std::string& name) {
  auto rows = txn.exec_params(
      "select convert_from(value, 'UTF8') from fleetwave.secrets where name = $1", name);
  if (rows.empty()) return std::nullopt;
  return rows[0][0].as<std::string>();
}

}  // namespace db
