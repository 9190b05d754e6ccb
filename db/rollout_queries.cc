#include "db/rollout_queries.h"

#include <pqxx/pqxx>

#include "db/rollouts.h"

namespace db {
namespace {

using Json = nlohmann::json;

// Reads see one snapshot, so a rollout's counts, waves and approvals agree with each other.
using ReadTxn = pqxx::transaction<pqxx::repeatable_read, pqxx::readwrite_policy::read_only>;

std::string Iso(const std::string& column) {
  return "to_char(" + column + " at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";
}

std::optional<std::string> OptionalText(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<std::string>();
}

std::string NoRollout(const std::string& id) {
  return "no rollout " + id + " (`fleetwave rollout list` shows them)";
}

// libpqxx's exceptions stop here: the caller sees db::Error and its subtypes only.
template <typename F>
auto Guarded(const std::string& what, F&& f) {
  try {
    return f();
  } catch (const Error&) {
    throw;
  } catch (const pqxx::in_doubt_error& e) {
    throw Error("the connection was lost while committing " + what +
                ": it may or may not have been applied, and is not resent; read the state "
                "back before trying again (" +
                e.what() + ")");
  } catch (const pqxx::broken_connection& e) {
    throw Unavailable("lost the database connection during " + what + ": " + e.what());
  } catch (const pqxx::sql_error& e) {
    throw Error(what + " failed: " + e.what());
  } catch (const pqxx::failure& e) {
    throw Error(what + " failed: " + e.what());
  }
}

// The columns of fleetwave.rollout_status joined with fleetwave.rollouts as s and r.
const std::string kRolloutColumns =
    "s.rollout_id, s.cycle_id, s.model, s.version, s.state, s.current_wave, "
    "(select count(*) from fleetwave.waves w where w.rollout_id = s.rollout_id)::int, s.total, "
    "s.queued, s.in_progress, s.succeeded, s.failed, s.rejected, s.timed_out, s.canceled, "
    "r.reason, " +
    Iso("r.created_at") + ", " + Iso("r.finished_at");

ExecutionCounts CountsAt(const pqxx::row& row, int first) {
  ExecutionCounts c;
  c.queued = row[first].as<int64_t>();
  c.in_progress = row[first + 1].as<int64_t>();
  c.succeeded = row[first + 2].as<int64_t>();
  c.failed = row[first + 3].as<int64_t>();
  c.rejected = row[first + 4].as<int64_t>();
  c.timed_out = row[first + 5].as<int64_t>();
  c.canceled = row[first + 6].as<int64_t>();
  return c;
}

RolloutSummary ToSummary(const pqxx::row& row) {
  RolloutSummary s;
  s.id = row[0].as<std::string>();
  s.cycle_id = row[1].as<int64_t>();
  s.model = row[2].as<std::string>();
  s.version = row[3].as<std::string>();
  s.state = row[4].as<std::string>();
  s.current_wave = row[5].as<int>();
  s.waves = row[6].as<int>();
  s.total = row[7].as<int64_t>();
  s.counts = CountsAt(row, 8);
  s.reason = OptionalText(row[15]);
  s.created_at = row[16].as<std::string>();
  s.finished_at = OptionalText(row[17]);
  return s;
}

const std::string kEventColumns = "id, " + Iso("at") +
                                  ", cycle_id, rollout_id, wave, kind, from_state, to_state, "
                                  "detail::text";

HistoryEvent ToEvent(const pqxx::row& row) {
  HistoryEvent e;
  e.id = row[0].as<int64_t>();
  e.at = row[1].as<std::string>();
  if (!row[2].is_null()) e.cycle_id = row[2].as<int64_t>();
  e.rollout_id = OptionalText(row[3]);
  if (!row[4].is_null()) e.wave = row[4].as<int>();
  e.kind = row[5].as<std::string>();
  e.from_state = OptionalText(row[6]);
  e.to_state = OptionalText(row[7]);
  e.detail = Json::parse(row[8].as<std::string>());
  return e;
}

}  // namespace

std::vector<RolloutSummary> ListRollouts(pqxx::connection& conn, std::optional<int64_t> cycle_id) {
  return Guarded("listing rollouts", [&] {
    ReadTxn txn(conn);
    std::vector<RolloutSummary> out;
    for (const auto& row :
         txn.exec_params("select " + kRolloutColumns +
                             " from fleetwave.rollout_status s join fleetwave.rollouts r on r.id = "
                             "s.rollout_id where ($1::bigint is null or s.cycle_id = $1) "
                             "order by s.cycle_id desc, s.rollout_id",
                         cycle_id))
      out.push_back(ToSummary(row));
    return out;
  });
}

namespace {

// One rollout's detail within the caller's snapshot; nullopt when there is no such rollout.
std::optional<RolloutDetail> ReadRollout(pqxx::transaction_base& txn,
                                         const std::string& rollout_id) {
  auto rows = txn.exec_params("select " + kRolloutColumns +
                                  ", rel.state, r.plan::text "
                                  "from fleetwave.rollout_status s "
                                  "join fleetwave.rollouts r on r.id = s.rollout_id "
                                  "join fleetwave.releases rel on rel.id = r.release_id "
                                  "where s.rollout_id = $1",
                              rollout_id);
  if (rows.empty()) return std::nullopt;
  RolloutDetail d;
  d.rollout = ToSummary(rows[0]);
  d.release_state = rows[0][18].as<std::string>();
  d.plan = Json::parse(rows[0][19].as<std::string>());
  for (const auto& row : txn.exec_params(
           "select wave, planned, state, queued, in_progress, succeeded, failed, rejected, "
           "  timed_out, canceled, verdict, " +
               Iso("started_at") + ", " + Iso("finished_at") +
               " from fleetwave.wave_status where rollout_id = $1 order by wave",
           rollout_id)) {
    WaveSummary w;
    w.wave = row[0].as<int>();
    w.planned = row[1].as<int64_t>();
    w.state = row[2].as<std::string>();
    w.counts = CountsAt(row, 3);
    w.verdict = OptionalText(row[10]);
    w.started_at = OptionalText(row[11]);
    w.finished_at = OptionalText(row[12]);
    d.waves.push_back(std::move(w));
  }
  for (const auto& row : txn.exec_params(
           "select wave, " + Iso("created_at") + ", " + Iso("expires_at") +
               ", expires_at <= now(), extract(epoch from expires_at)::bigint, nonce, base_url "
               "from fleetwave.approvals where rollout_id = $1 and state = 'pending' "
               "order by wave",
           rollout_id)) {
    ApprovalSummary a;
    a.wave = row[0].as<int>();
    a.created_at = row[1].as<std::string>();
    a.expires_at = row[2].as<std::string>();
    a.expired = row[3].as<bool>();
    a.expires_epoch = row[4].as<int64_t>();
    a.nonce = OptionalText(row[5]);
    a.base_url = OptionalText(row[6]);
    d.approvals.push_back(std::move(a));
  }
  if (!d.approvals.empty()) d.approval_secret = ReadSecret(txn, kApprovalSecret);
  return d;
}

const std::string kCycleColumns =
    "c.id, c.state, " + Iso("c.started_at") + ", " + Iso("c.not_before") + ", " +
    Iso("c.planned_at") + ", " + Iso("c.finished_at") + ", " + Iso("c.heartbeat_at") +
    ", c.leader_epoch, (select count(*) from fleetwave.rollouts r where r.cycle_id = c.id)::int";

CycleSummary ToCycle(const pqxx::row& row) {
  CycleSummary c;
  c.id = row[0].as<int64_t>();
  c.state = row[1].as<std::string>();
  c.started_at = row[2].as<std::string>();
  c.not_before = row[3].as<std::string>();
  c.planned_at = OptionalText(row[4]);
  c.finished_at = OptionalText(row[5]);
  c.heartbeat_at = row[6].as<std::string>();
  c.leader_epoch = row[7].as<int64_t>();
  c.rollouts = row[8].as<int>();
  return c;
}

}  // namespace

RolloutDetail ShowRollout(pqxx::connection& conn, const std::string& rollout_id) {
  return Guarded("reading rollout " + rollout_id, [&] {
    ReadTxn txn(conn);
    auto d = ReadRollout(txn, rollout_id);
    if (!d) throw NotFound(NoRollout(rollout_id));
    return std::move(*d);
  });
}

std::vector<CycleSummary> ListCycles(pqxx::connection& conn, int64_t limit) {
  return Guarded("listing cycles", [&] {
    ReadTxn txn(conn);
    std::vector<CycleSummary> out;
    for (const auto& row : txn.exec_params(
             "select " + kCycleColumns + " from fleetwave.cycles c order by c.id desc limit $1",
             limit))
      out.push_back(ToCycle(row));
    return out;
  });
}

Status ReadStatus(pqxx::connection& conn, const std::string& lease_name) {
  return Guarded("reading the status", [&] {
    ReadTxn txn(conn);
    Status s;
    s.now = txn.exec1("select " + Iso("now()"))[0].as<std::string>();
    // The running cycle; between two cycles (or after a crash) the latest one.
    auto cycle = txn.exec("select " + kCycleColumns +
                          " from fleetwave.cycles c order by (c.state = 'running') desc, c.id desc "
                          "limit 1");
    if (!cycle.empty()) s.cycle = ToCycle(cycle[0]);
    auto lease =
        txn.exec_params("select holder, epoch, " + Iso("heartbeat_at") + ", " + Iso("expires_at") +
                            ", expires_at <= now() from fleetwave.leases where name = $1",
                        lease_name);
    if (!lease.empty()) {
      s.leader = LeaderSummary{lease[0][0].as<std::string>(), lease[0][1].as<int64_t>(),
                               lease[0][2].as<std::string>(), lease[0][3].as<std::string>(),
                               lease[0][4].as<bool>()};
    }
    if (s.cycle) {
      for (const auto& row : txn.exec_params(
               "select id from fleetwave.rollouts where cycle_id = $1 order by id", s.cycle->id)) {
        if (auto d = ReadRollout(txn, row[0].as<std::string>()))
          s.rollouts.push_back(std::move(*d));
      }
    }
    return s;
  });
}

ApprovalLinkUse UseApprovalLink(pqxx::connection& conn, const std::string& token_hash,
                                const TokenCheck& check, std::optional<fleet::Event> command,
                                const std::string& actor) {
  return Guarded("using an approval link", [&] {
    pqxx::work txn(conn);
    ApprovalLinkUse use;
    auto rows = txn.exec_params(
        "select a.id, a.rollout_id, a.wave, a.state, extract(epoch from a.expires_at)::bigint, "
        "  rel.model, rel.version, r.state, r.cycle_id, a.expires_at <= now(), "
        "  extract(epoch from now())::bigint "
        "from fleetwave.approvals a join fleetwave.rollouts r on r.id = a.rollout_id "
        "join fleetwave.releases rel on rel.id = r.release_id "
        "where a.token_hash = $1 for update of a",
        token_hash);
    if (rows.empty()) return use;
    const auto& row = rows[0];
    ApprovalRecord a;
    a.id = row[0].as<int64_t>();
    a.rollout_id = row[1].as<std::string>();
    a.wave = row[2].as<int>();
    a.state = row[3].as<std::string>();
    a.expires_at = row[4].as<int64_t>();
    a.model = row[5].as<std::string>();
    a.version = row[6].as<std::string>();
    a.rollout_state = row[7].as<std::string>();
    a.cycle_id = row[8].as<int64_t>();
    use.expired = row[9].as<bool>();
    use.genuine = check(a, ReadSecret(txn, kApprovalSecret).value_or(""), row[10].as<int64_t>());
    use.approval = std::move(a);
    if (command && use.genuine && !use.expired && use.approval->state == "pending") {
      use.decided = RunOperatorCommand(txn, use.approval->rollout_id, *command, actor);
      txn.commit();
    }
    return use;
  });
}

History ReadHistory(pqxx::connection& conn, const HistoryQuery& query) {
  return Guarded("reading the history", [&] {
    ReadTxn txn(conn);
    History h;
    h.cycle_id = query.cycle_id;
    if (query.cycle_id) {
      if (txn.exec_params("select 1 from fleetwave.cycles where id = $1", *query.cycle_id).empty())
        throw NotFound("no cycle " + std::to_string(*query.cycle_id) +
                       " (`fleetwave history` shows the latest)");
    }
    if (query.rollout_id) {
      auto r = txn.exec_params("select cycle_id from fleetwave.rollouts where id = $1",
                               *query.rollout_id);
      if (r.empty()) throw NotFound(NoRollout(*query.rollout_id));
      if (!h.cycle_id) h.cycle_id = r[0][0].as<int64_t>();
    }
    if (!query.cycle_id && !query.rollout_id) {
      auto latest = txn.exec1("select max(id) from fleetwave.cycles");
      if (latest[0].is_null()) return h;  // no cycle has run yet
      h.cycle_id = latest[0].as<int64_t>();
    }
    // The last `limit` rows (all when null), then back into id order.
    const std::optional<int64_t> cycle = query.rollout_id ? query.cycle_id : h.cycle_id;
    for (const auto& row : txn.exec_params("select * from (select " + kEventColumns +
                                               " from fleetwave.events "
                                               "where ($1::bigint is null or cycle_id = $1) "
                                               "  and ($2::text is null or rollout_id = $2) "
                                               "order by id desc limit $3::bigint) e order by id",
                                           cycle, query.rollout_id, query.limit))
      h.events.push_back(ToEvent(row));
    return h;
  });
}

OperatorResult RunOperatorCommand(pqxx::transaction_base& txn, const std::string& rollout_id,
                                  fleet::Event command, const std::string& actor) {
  // Lock first (ApplyOperatorCommand locks the same row again, a no-op), so the state read here
  // is the one the command changes, and no other writer adds events for the rollout meanwhile.
  auto rows = txn.exec_params(
      "select r.state, coalesce((select max(e.id) from fleetwave.events e "
      "                          where e.rollout_id = r.id), 0) "
      "from fleetwave.rollouts r where r.id = $1 for update",
      rollout_id);
  if (rows.empty()) throw NotFound(NoRollout(rollout_id));
  OperatorResult result;
  result.from = rows[0][0].as<std::string>();
  const int64_t last_event = rows[0][1].as<int64_t>();
  result.to = std::string(fleet::ToString(ApplyOperatorCommand(txn, rollout_id, command, actor)));
  for (const auto& row : txn.exec_params("select " + kEventColumns +
                                             " from fleetwave.events "
                                             "where rollout_id = $1 and id > $2 order by id",
                                         rollout_id, last_event))
    result.events.push_back(ToEvent(row));
  return result;
}

OperatorResult RunOperatorCommand(pqxx::connection& conn, const std::string& rollout_id,
                                  fleet::Event command, const std::string& actor) {
  const std::string what =
      std::string(fleet::ToString(command)) + " of rollout " + rollout_id + " by " + actor;
  return Guarded(what, [&] {
    pqxx::work txn(conn);
    OperatorResult result = RunOperatorCommand(txn, rollout_id, command, actor);
    txn.commit();
    return result;
  });
}

}  // namespace db
