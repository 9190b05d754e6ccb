#include "controller/engine.h"

#include <algorithm>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include "controller/approval_token.h"
#include "controller/logging.h"
#include "db/lease.h"
#include "db/rollouts.h"
#include "fleet/gates.h"
#include "fleet/rollout_machine.h"
#include "fleet/wave_planner.h"

namespace controller {
namespace {

using Clock = std::chrono::steady_clock;

bool Active(fleet::WaveState s) {
  return s == fleet::WaveState::kRunning || s == fleet::WaveState::kSoaking;
}

// A cycle's state change: one info line, with its fields for the JSON format.
// `from` is empty for a new cycle.
void LogCycleChange(int64_t cycle_id, std::string_view from, std::string_view to,
                    std::string_view event, const std::string& message) {
  LogFields fields{{"cycle", cycle_id}};
  if (!from.empty()) fields.emplace_back("from", from);
  fields.emplace_back("to", to);
  fields.emplace_back("event", event);
  LogWith(spdlog::level::info, fields, message);
}

}  // namespace

void Engine::LogChanges(int64_t cycle_id, const std::string& rollout_id,
                        const std::vector<fleet::Change>& changes) {
  for (const auto& c : changes) {
    LogFields fields{{"cycle", cycle_id}, {"rollout", rollout_id}};
    if (c.wave > 0) fields.emplace_back("wave", c.wave);
    fields.emplace_back("from", c.from);
    fields.emplace_back("to", c.to);
    fields.emplace_back("event", fleet::ToString(c.event));
    if (!c.reason.empty()) fields.emplace_back("reason", c.reason);
    const std::string what = fmt::format("{} -> {} ({}){}", c.from, c.to, fleet::ToString(c.event),
                                         c.reason.empty() ? "" : ": " + c.reason);
    LogWith(spdlog::level::info, fields,
            c.wave == 0 ? fmt::format("rollout {}: {}", rollout_id, what)
                        : fmt::format("rollout {} wave {}: {}", rollout_id, c.wave, what));
    state_changes_->With({c.wave == 0 ? "rollout" : "wave"}).Inc();
  }
}

Engine::Engine(EngineOptions options, JobsServiceOptions jobs)
    : options_(std::move(options)),
      jobs_options_(std::move(jobs)),
      jobs_metrics_(metrics_),
      leader_gauge_(&metrics_
                         .AddGauge("fleetwave_leader",
                                   "1 while this controller holds the leader lease, else 0.")
                         .Get()),
      epoch_gauge_(&metrics_
                        .AddGauge("fleetwave_leader_epoch",
                                  "Epoch of the lease this controller holds or last held "
                                  "(fences every write).")
                        .Get()),
      leaderships_(&metrics_
                        .AddCounter("fleetwave_leaderships_total",
                                    "How often this controller became the leader.")
                        .Get()),
      passes_(&metrics_
                   .AddCounter("fleetwave_reconcile_passes_total",
                               "Reconcile passes completed by this controller.")
                   .Get()),
      pass_errors_(&metrics_
                        .AddCounter("fleetwave_reconcile_errors_total",
                                    "Reconcile passes that failed (retried with backoff).")
                        .Get()),
      state_changes_(&metrics_.AddCounter(
          "fleetwave_state_changes_total",
          "State changes of cycles, rollouts and waves this controller made.", {"object"})),
      holder_(db::Lease::MakeHolderId()) {
  for (const char* object : {"cycle", "rollout", "wave"}) state_changes_->With({object});
}

Engine::~Engine() { Stop(); }

void Engine::Start() {
  lease_thread_ = std::thread([this] { LeaseLoop(); });
  pass_thread_ = std::thread([this] { PassLoop(); });
}

void Engine::Stop() {
  stop_ = true;
  cv_.notify_all();
  if (pass_thread_.joinable()) pass_thread_.join();
  if (lease_thread_.joinable()) lease_thread_.join();
}

EngineStats Engine::stats() const {
  EngineStats s;
  s.leading = leading_;
  s.epoch = epoch_;
  s.passes = passes_->Value();
  s.pass_errors = pass_errors_->Value();
  s.leaderships = leaderships_->Value();
  return s;
}

void Engine::SetLeading(bool leading) {
  leading_ = leading;
  leader_gauge_->Set(leading ? 1 : 0);
}

bool Engine::WaitServing(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    {
      std::lock_guard<std::mutex> lock(jobs_mu_);
      if (jobs_ && leading_) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
        return jobs_->WaitReady(std::max(left, std::chrono::milliseconds(1)));
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void Engine::Wait(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, d, [this] { return stop_.load(); });
}

// ---- Leadership -----------------------------------------------------------------------------

void Engine::LeaseLoop() {
  db::Lease lease(jobs_options_.db, options_.lease_name, holder_, options_.lease_ttl);
  const auto renew_every =
      std::chrono::duration_cast<std::chrono::milliseconds>(options_.lease_ttl / 3);
  auto last_renewed = Clock::now();
  bool announced_standby = false;
  while (!stop_) {
    try {
      if (!leading_) {
        if (auto epoch = lease.TryAcquire()) {
          epoch_ = *epoch;
          epoch_gauge_->Set(static_cast<double>(*epoch));
          last_renewed = Clock::now();
          SetLeading(true);
          announced_standby = false;
          leaderships_->Inc();
          LogWith(spdlog::level::info, {{"holder", holder_}, {"epoch", *epoch}},
                  fmt::format("controller {}: leader (epoch {})", holder_, *epoch));
          cv_.notify_all();
        } else if (!announced_standby) {
          spdlog::info("controller {}: standby; another controller holds the lease", holder_);
          announced_standby = true;
        }
      } else if (lease.Renew()) {
        last_renewed = Clock::now();
      } else {
        SetLeading(false);
        spdlog::warn("controller {}: lost the lease (epoch {}); stopping writes", holder_,
                     epoch_.load());
      }
    } catch (const db::Error& e) {
      spdlog::warn("controller {}: lease check failed: {}", holder_, e.what());
      if (leading_ && Clock::now() - last_renewed > options_.lease_ttl) {
        SetLeading(false);  // it has expired by now: a standby may lead
        spdlog::warn("controller {}: lease not renewed within its TTL; stepping down", holder_);
      }
    }
    // A standby looks often, so it takes over well within the TTL of a dead leader.
    Wait(leading_ ? renew_every : std::min(renew_every, std::chrono::milliseconds(1000)));
  }
  if (leading_) {
    try {
      lease.Release();
    } catch (const db::Error& e) {
      spdlog::warn("controller {}: could not release the lease: {}", holder_, e.what());
    }
    SetLeading(false);
  }
}

void Engine::FenceTxn(pqxx::work& txn) const {
  if (!leading_) throw db::NotLeader("not the leader");
  db::Lease::Fence(txn, options_.lease_name, holder_, epoch_);
}

pqxx::connection& Engine::Conn() {
  if (!conn_ || !conn_->is_open()) {
    conn_ = db::Connect(jobs_options_.db);
    // A frozen leader must not hold its fence (and so a takeover) forever.
    pqxx::nontransaction(*conn_).exec(
        "set idle_in_transaction_session_timeout = " +
        std::to_string(std::chrono::milliseconds(options_.lease_ttl).count()));
  }
  return *conn_;
}

// ---- Passes ---------------------------------------------------------------------------------

void Engine::PassLoop() {
  auto backoff = options_.reconcile_interval;
  while (!stop_) {
    if (leading_) {
      if (!jobs_) {
        std::lock_guard<std::mutex> lock(jobs_mu_);
        jobs_ = std::make_unique<JobsService>(jobs_options_, &metrics_);
        jobs_->Start();
        spdlog::info("controller: serving devices and reconciling every {} ms",
                     options_.reconcile_interval.count());
      }
      try {
        Pass();
        backoff = options_.reconcile_interval;
        passes_->Inc();
      } catch (const db::NotLeader& e) {
        SetLeading(false);
        spdlog::warn("controller: {}; back to standby", e.what());
      } catch (const std::exception& e) {
        // The database restarted, a conflict, a bug: the next pass reads the truth again.
        conn_.reset();
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
        spdlog::warn("controller: reconcile pass failed, retrying in {} ms: {}", backoff.count(),
                     e.what());
        pass_errors_->Inc();
      }
    }
    if (!leading_ && jobs_) {
      std::lock_guard<std::mutex> lock(jobs_mu_);
      jobs_->Stop();
      jobs_.reset();
      spdlog::info("controller: stopped serving devices (not the leader)");
    }
    // A standby looks again soon: the lease loop's notify does not end this wait.
    Wait(leading_ ? backoff : std::min(backoff, std::chrono::milliseconds(100)));
  }
  std::lock_guard<std::mutex> lock(jobs_mu_);
  if (jobs_) {
    jobs_->Stop();
    jobs_.reset();
  }
}

void Engine::Pass() {
  int64_t cycle_id = 0;
  {
    pqxx::work txn(Conn());
    FenceTxn(txn);
    auto cycle = db::LockRunningCycle(txn);
    if (!cycle) {
      auto id = db::StartCycle(txn, "controller");
      txn.commit();
      if (id) {
        LogCycleChange(*id, "", "running", "cycle_started",
                       fmt::format("cycle {}: started (none was running)", *id));
        state_changes_->With({"cycle"}).Inc();
      }
      return;
    }
    cycle_id = cycle->id;
    db::Heartbeat(txn, cycle->id, epoch_);
    if (!cycle->planned_at) {
      if (cycle->now < cycle->not_before) {
        txn.commit();
        return;  // idle until the cycle interval has passed
      }
      txn.commit();
      // Devices held by executions that ended rollouts left behind may be planned once those
      // time out: time them out first, in their own transaction, and plan in the next pass.
      if (TimeOutOrphans()) return;
      pqxx::work plan_txn(Conn());
      FenceTxn(plan_txn);
      auto again = db::LockRunningCycle(plan_txn);
      if (!again || again->id != cycle->id || again->planned_at) return;
      auto ids = db::PlanCycle(plan_txn, cycle->id, options_.plan);
      plan_txn.commit();
      std::string list;
      for (const auto& id : ids) list += (list.empty() ? "" : ", ") + id;
      LogWith(spdlog::level::info, {{"cycle", cycle->id}, {"rollouts", ids}},
              ids.empty() ? fmt::format("cycle {}: nothing pending", cycle->id)
                          : fmt::format("cycle {}: planned {} rollout(s): {}", cycle->id,
                                        ids.size(), list));
    } else {
      txn.commit();
    }
  }

  auto read_rollouts = [&] {
    pqxx::work txn(Conn());
    return db::CycleRollouts(txn, cycle_id);
  };
  for (const auto& ref : read_rollouts()) {
    if (stop_ || !leading_) return;
    const bool terminal = fleet::IsTerminal(ref.state);
    if (!terminal || ref.has_queued) ReconcileRollout(ref.id, terminal, ref.has_queued);
  }

  std::vector<fleet::RolloutState> states;
  for (const auto& ref : read_rollouts()) states.push_back(ref.state);
  if (fleet::DecideCycle(fleet::CycleState::kRunning, states)) {
    pqxx::work txn(Conn());
    FenceTxn(txn);
    auto cycle = db::LockRunningCycle(txn);
    if (!cycle || cycle->id != cycle_id) return;
    const int64_t next = db::CompleteCycle(txn, cycle_id, options_.plan.cycle_interval_seconds);
    txn.commit();
    LogCycleChange(
        cycle_id, "running", "completed", fleet::ToString(fleet::Event::kAllRolloutsTerminal),
        fmt::format("cycle {}: running -> completed ({} rollout(s))", cycle_id, states.size()));
    LogCycleChange(next, "", "running", "cycle_started",
                   fmt::format("cycle {}: started after cycle {}; plans in {} s", next, cycle_id,
                               options_.plan.cycle_interval_seconds));
    state_changes_->With({"cycle"}).Inc(2);
  }
}

bool Engine::TimeOutOrphans() {
  std::vector<db::OrphanedExecution> orphans;
  {
    pqxx::work txn(Conn());
    orphans = db::OrphanedTimeouts(txn, options_.chunk);
  }
  if (orphans.empty()) return false;
  ExecutionOps ops{.in_transaction = [this](pqxx::work& txn) { FenceTxn(txn); }};
  for (auto& o : orphans)
    ops.ops.push_back({ExecutionOps::Kind::kTimeOut, o.job_id, o.thing, std::nullopt, o.reason});
  const int64_t n = jobs_->Apply(ops);
  spdlog::info("timed out {} execution(s) left behind by ended rollouts", n);
  return n > 0;
}

void Engine::ReconcileRollout(const std::string& rollout_id, bool terminal, bool has_queued) {
  auto fenced = [this](pqxx::work& txn) { FenceTxn(txn); };

  // A terminal rollout only cancels what is still queued; its devices are told at once.
  if (terminal) {
    if (!has_queued) return;
    while (!stop_ && leading_) {
      std::vector<std::string> things;
      {
        pqxx::work txn(Conn());
        things = db::QueuedThings(txn, rollout_id, options_.chunk);
      }
      if (things.empty()) break;
      ExecutionOps ops{.in_transaction = fenced};
      for (auto& t : things) ops.ops.push_back({ExecutionOps::Kind::kCancel, rollout_id, t});
      const int64_t n = jobs_->Apply(ops);
      LogWith(spdlog::level::info, {{"rollout", rollout_id}, {"canceled", n}},
              fmt::format("rollout {}: canceled {} queued execution(s)", rollout_id, n));
      if (static_cast<int64_t>(things.size()) < options_.chunk) break;
    }
    return;
  }

  // 1. Silence is failure: time out what is overdue; re-queue failures that have retries left.
  {
    std::vector<db::DueExecution> due;
    std::vector<db::UnsettledFailure> failures;
    db::RolloutRow r;
    {
      pqxx::work txn(Conn());
      r = db::LockRollout(txn, rollout_id, nullptr);
      due = db::TimedOutExecutions(txn, rollout_id, r.plan.timeouts, options_.chunk);
      failures = db::UnsettledFailures(txn, r, options_.chunk);
    }
    ExecutionOps ops{.in_transaction = fenced};
    for (auto& d : due)
      ops.ops.push_back(
          {ExecutionOps::Kind::kTimeOut, rollout_id, d.thing, std::nullopt, d.reason});
    for (auto& f : failures) {
      if (fleet::DecideFailure(r.plan, f.status, f.attempts, f.release_failures) ==
          fleet::FailureOutcome::kRetry)
        ops.ops.push_back({ExecutionOps::Kind::kRequeue, rollout_id, f.thing,
                           r.now + r.plan.timeouts.queued_seconds, ""});
    }
    if (!ops.ops.empty()) {
      const int64_t n = jobs_->Apply(ops);
      if (n > 0)
        spdlog::info("rollout {}: {} timed out, {} re-queued", rollout_id, due.size(),
                     ops.ops.size() - due.size());
    }
  }

  // 2. The gate and the machine, in one fenced transaction with their events.
  std::vector<std::string> approval_urls;
  {
    pqxx::work txn(Conn());
    FenceTxn(txn);
    std::vector<db::WaveRow> waves;
    db::RolloutRow r = db::LockRollout(txn, rollout_id, &waves);
    if (fleet::IsTerminal(r.state)) return;
    const fleet::Plan& plan = r.plan;
    const int64_t now = r.now;

    // Failures whose outcome is final: settle them, quarantining repeat offenders.
    std::vector<std::string> final_failures, quarantine;
    for (auto& f : db::UnsettledFailures(txn, r, options_.chunk)) {
      switch (fleet::DecideFailure(plan, f.status, f.attempts, f.release_failures)) {
        case fleet::FailureOutcome::kRetry:
          break;  // re-queued by the next pass
        case fleet::FailureOutcome::kFinal:
          final_failures.push_back(f.thing);
          break;
        case fleet::FailureOutcome::kQuarantine:
          quarantine.push_back(f.thing);
          break;
      }
    }
    db::SettleFailures(txn, r, final_failures, quarantine);

    std::vector<fleet::Change> changes;
    // An approval that was not given in time pauses the rollout; resume asks again.
    if (r.state == fleet::RolloutState::kAwaitingApproval) {
      auto pending = db::FindPendingApproval(txn, rollout_id);
      if (pending && now >= pending->expires_at) {
        db::ExpireApproval(txn, r, *pending);
        if (auto c = fleet::ApplyRolloutEvent(db::SnapshotOf(r, waves),
                                              fleet::Event::kApprovalExpired)) {
          for (auto& x : *c)
            x.reason = "approval for wave " + std::to_string(pending->wave) + " expired";
          db::WriteChanges(txn, r, *c);
          txn.commit();
          LogChanges(r.cycle_id, rollout_id, *c);
          return;
        }
      }
    }

    // The active wave's gate.
    int active = 0;
    for (const auto& w : waves)
      if (Active(w.state)) active = w.wave;
    std::optional<fleet::GateDecision> gate;
    if (active > 0) {
      const auto counts = db::CountByWave(txn, rollout_id, static_cast<int>(waves.size()));
      const db::WaveRow& w = waves[active - 1];
      fleet::WaveGateInput in;
      in.planned = w.planned;
      in.wave = counts[active - 1];
      for (int k = r.gate_from_wave; k <= static_cast<int>(counts.size()); ++k) {
        const auto& c = counts[k - 1];
        for (auto [status, n] : {std::pair{fleet::JobStatus::kQueued, c.queued},
                                 {fleet::JobStatus::kInProgress, c.in_progress},
                                 {fleet::JobStatus::kSucceeded, c.succeeded},
                                 {fleet::JobStatus::kFailed, c.failed},
                                 {fleet::JobStatus::kRejected, c.rejected},
                                 {fleet::JobStatus::kTimedOut, c.timed_out},
                                 {fleet::JobStatus::kCanceled, c.canceled},
                                 {fleet::JobStatus::kRemoved, c.removed}})
          in.rollout.Add(status, n);
      }
      in.threshold_met_at = w.threshold_met_at;
      in.now = now;
      // While inconclusive, health is compared every kHealthRecheckSeconds (each look is a
      // test at the plan's confidence; a look every pass would inflate false failures) and
      // always at maxSoakSeconds. Between looks it keeps soaking: no sample is inconclusive.
      if (plan.health && fleet::HealthDue(plan, w.threshold_met_at, now)) {
        const int64_t met = w.threshold_met_at.value_or(now);
        const bool look = !w.health_checked_at ||
                          now >= *w.health_checked_at + fleet::kHealthRecheckSeconds ||
                          now >= met + plan.health->max_soak_seconds;
        if (look) {
          in.health = db::ReadHealthSample(txn, r, active, plan.health->metric, met);
          db::SetHealthChecked(txn, rollout_id, active, now);
        }
      }
      gate = fleet::EvaluateWave(plan, in);
    }

    fleet::PassDecision d = fleet::DecideWave(plan, db::SnapshotOf(r, waves), gate, now);
    if (d.threshold_met_at && active > 0)
      db::SetThresholdMet(txn, rollout_id, active, *d.threshold_met_at);
    nlohmann::json detail = nlohmann::json::object();
    if (gate && gate->health) {
      detail["health"] = {{"verdict", fleet::ToString(gate->health->verdict)},
                          {"ratio", gate->health->ratio},
                          {"lower", gate->health->lower},
                          {"upper", gate->health->upper}};
    }
    db::WriteChanges(txn, r, d.changes, detail);
    if (d.verdict && d.verdict_wave > 0)
      db::SetVerdict(txn, rollout_id, d.verdict_wave, std::string(fleet::ToString(*d.verdict)));
    for (const auto& c : d.changes) {
      if (c.event != fleet::Event::kApprovalRequired) continue;
      int next = 0;
      for (const auto& w : waves)
        if (w.state == fleet::WaveState::kPending && next == 0) next = w.wave;
      const int64_t expires_at = now + (plan.approval ? plan.approval->ttl_seconds : 86400);
      const std::string secret = db::LoadOrCreateSecret(txn, db::kApprovalSecret, RandomHex(32));
      IssuedToken token = IssueApprovalToken(secret, rollout_id, next, expires_at);
      db::CreateApproval(txn, r,
                         {.wave = next,
                          .token_hash = token.hash,
                          .nonce = token.nonce,
                          .base_url = options_.approval_base_url,
                          .expires_at = expires_at},
                         {{"wave", next}, {"ttlSeconds", expires_at - now}});
      // The link carries the token, and tokens stay out of logs (log collectors are read by
      // more people than may approve): it is shown by `fleetwave status`, the API and the console.
      approval_urls.push_back(
          "rollout " + rollout_id + " waits for approval of wave " + std::to_string(next) +
          " (expires in " + std::to_string(expires_at - now) + " s): its approve/deny link is " +
          "in `fleetwave status` and the console (" + options_.approval_base_url +
          "/), or run `fleetwave rollout approve|deny " + rollout_id + "`");
    }
    txn.commit();
    LogChanges(r.cycle_id, rollout_id, d.changes);
    for (const auto& line : approval_urls) spdlog::info("{}", line);
  }

  // 3. Queue the devices of started waves, within maxPerMinute, a chunk per transaction.
  std::vector<db::WaveRow> waves;
  db::RolloutRow r;
  {
    pqxx::work txn(Conn());
    r = db::LockRollout(txn, rollout_id, &waves);
  }
  if (r.state != fleet::RolloutState::kRunning) return;
  for (const auto& w : waves) {
    const bool started = Active(w.state) || w.state == fleet::WaveState::kPassed;
    if (!started || w.queued >= w.planned) continue;
    int64_t allowance = w.planned - w.queued;
    if (r.plan.max_per_minute > 0) {
      pqxx::work txn(Conn());
      allowance = fleet::QueueAllowance(r.plan.max_per_minute,
                                        db::QueuedLastMinute(txn, rollout_id), allowance);
    }
    db::WaveRow cursor = w;
    while (allowance > 0 && !stop_ && leading_) {
      // Devices first: while their messages wait beyond a few seconds of serving, more notices
      // would only make them wait longer; the next pass queues on.
      if (jobs_->Backlogged()) {
        if (!backlog_told_)
          spdlog::info("rollout {} wave {}: queuing waits while device requests are backlogged",
                       rollout_id, w.wave);
        backlog_told_ = true;
        return;
      }
      backlog_told_ = false;
      db::Targets next;
      {
        pqxx::work txn(Conn());
        next = db::NextTargets(txn, rollout_id, cursor, std::min(allowance, options_.chunk));
      }
      if (next.consumed == 0) break;
      const int64_t n = next.consumed;
      ExecutionOps ops;
      ops.queue.reserve(next.things.size());
      for (auto& t : next.things)
        ops.queue.push_back({rollout_id, t, w.wave, r.now + r.plan.timeouts.queued_seconds});
      ops.in_transaction = [&, n](pqxx::work& txn) {
        FenceTxn(txn);
        db::AddQueued(txn, rollout_id, w.wave, n);
        db::Heartbeat(txn, r.cycle_id, epoch_);  // a long wave must not look like a hang
      };
      jobs_->Apply(ops);
      cursor.queued += n;
      allowance -= n;
      LogWith(spdlog::level::info,
              {{"cycle", r.cycle_id},
               {"rollout", rollout_id},
               {"wave", w.wave},
               {"queued", cursor.queued},
               {"planned", w.planned}},
              fmt::format("rollout {} wave {}: queued {} of {} device(s)", rollout_id, w.wave,
                          cursor.queued, w.planned));
    }
  }
}

}  // namespace controller
