#include "db/jobs_store.h"

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

namespace db {
namespace {

using Json = nlohmann::json;

// A concurrent writer changed an execution this batch decided on.
struct VersionConflict {};

constexpr int kMaxAttempts = 5;

std::optional<int64_t> OptionalInt(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<int64_t>();
}

Json Nullable(const std::optional<int64_t>& v) { return v ? Json(*v) : Json(nullptr); }
Json Nullable(const std::optional<std::string>& v) { return v ? Json(*v) : Json(nullptr); }

void Queue(pqxx::work& txn, const std::vector<NewExecution>& queue) {
  if (queue.empty()) return;
  Json rows = Json::array();
  for (const auto& n : queue)
    rows.push_back({{"job_id", n.job_id}, {"thing", n.thing}, {"wave", n.wave},
                    {"deadline", Nullable(n.deadline)}});
  txn.exec_params(
      "insert into fleetwave.job_executions (job_id, thing_name, wave, deadline) "
      "select x.job_id, x.thing, x.wave, to_timestamp(x.deadline) "
      "from jsonb_to_recordset($1::jsonb) as x(job_id text, thing text, wave int, deadline bigint) "
      "on conflict (job_id, thing_name) do nothing",
      rows.dump());
}

JobsSnapshot Load(pqxx::work& txn, const JobsBatch& batch) {
  JobsSnapshot snapshot;
  Json things = Json::array(), named = Json::array();
  std::set<std::string> all_things = batch.things;
  for (const auto& [job, thing] : batch.named) {
    named.push_back({job, thing});
    all_things.insert(thing);
  }
  std::set<std::pair<std::string, std::string>> queued;
  for (const auto& n : batch.queue) {
    all_things.insert(n.thing);
    queued.insert({n.job_id, n.thing});
  }
  for (const auto& t : all_things) things.push_back(t);

  snapshot.now = txn.exec1("select extract(epoch from now())::bigint")[0].as<int64_t>();
  for (const auto& row : txn.exec_params(
           "select id from fleetwave.devices "
           "where id = any(array(select jsonb_array_elements_text($1::jsonb)))",
           things.dump()))
    snapshot.known_things.insert(row[0].as<std::string>());

  // Two index-friendly halves: a device's pending executions (the partial pending index) and
  // the executions requests name (the primary key). An OR of the two would scan the table.
  // An execution in both halves comes twice and is kept once.
  auto rows = txn.exec_params(
      "with wanted as ("
      "  select e.* from fleetwave.job_executions e "
      "  where e.thing_name = any(array(select jsonb_array_elements_text($1::jsonb))) "
      "    and e.status in ('QUEUED', 'IN_PROGRESS') "
      "  union all "
      "  select e.* from fleetwave.job_executions e "
      "  join (select x->>0 as job_id, x->>1 as thing from jsonb_array_elements($2::jsonb) x) n "
      "    on e.job_id = n.job_id and e.thing_name = n.thing) "
      "select e.job_id, e.thing_name, e.status, e.status_details::text, e.version_number, "
      "  e.execution_number, extract(epoch from e.queued_at)::bigint, "
      "  extract(epoch from e.started_at)::bigint, extract(epoch from e.last_updated_at)::bigint, "
      "  extract(epoch from e.step_timeout_at)::bigint, "
      "  (r.job_document || jsonb_strip_nulls(jsonb_build_object("
      "     'rollout', jsonb_build_object('id', r.id, 'wave', e.wave), "
      "     'issuedAt', extract(epoch from e.queued_at)::bigint, "
      "     'expiresAt', extract(epoch from e.deadline)::bigint)))::text, "
      "  rel.version, e.last_client_token, e.last_answer::text "
      "from wanted e "
      "join fleetwave.rollouts r on r.id = e.job_id "
      "join fleetwave.releases rel on rel.id = r.release_id",
      things.dump(), named.dump());
  std::set<std::pair<std::string, std::string>> seen;
  for (const auto& row : rows) {
    if (!seen.insert({row[0].as<std::string>(), row[1].as<std::string>()}).second) continue;
    fleet::Execution e;
    e.job_id = row[0].as<std::string>();
    e.thing_name = row[1].as<std::string>();
    e.status = *fleet::ParseJobStatus(row[2].as<std::string>());
    const Json details = Json::parse(row[3].as<std::string>());
    for (auto it = details.begin(); it != details.end(); ++it)
      e.status_details[it.key()] = it->is_string() ? it->get<std::string>() : it->dump();
    e.version_number = row[4].as<int64_t>();
    e.execution_number = row[5].as<int64_t>();
    e.queued_at = row[6].as<int64_t>();
    e.started_at = OptionalInt(row[7]);
    e.last_updated_at = row[8].as<int64_t>();
    e.step_timeout_at = OptionalInt(row[9]);
    e.job_document = row[10].as<std::string>();
    e.release_version = row[11].as<std::string>();
    if (!row[12].is_null()) e.last_client_token = row[12].as<std::string>();
    if (!row[13].is_null()) e.last_answer = row[13].as<std::string>();
    e.queued_in_batch = queued.count({e.job_id, e.thing_name}) > 0;
    snapshot.executions[e.thing_name].push_back(std::move(e));
  }
  return snapshot;
}

int64_t Write(pqxx::work& txn, const JobsWrites& writes, BatchResult* result) {
  int64_t rows_written = 0;
  if (!writes.changed.empty()) {
    Json rows = Json::array();
    for (const auto& e : writes.changed) {
      rows.push_back({{"job_id", e.job_id},
                      {"thing", e.thing_name},
                      {"status", fleet::ToString(e.status)},
                      {"details", e.status_details},
                      {"version", e.version_number},
                      {"loaded_version", e.loaded_version},
                      {"started_at", Nullable(e.started_at)},
                      {"updated_at", e.last_updated_at},
                      {"step_timeout_at", Nullable(e.step_timeout_at)},
                      {"token", Nullable(e.last_client_token)},
                      {"answer", Nullable(e.last_answer)}});
    }
    auto updated = txn.exec_params(
        "update fleetwave.job_executions e set status = x.status, status_details = x.details, "
        "  version_number = x.version, started_at = to_timestamp(x.started_at), "
        "  last_updated_at = to_timestamp(x.updated_at), "
        "  step_timeout_at = to_timestamp(x.step_timeout_at), last_client_token = x.token, "
        "  last_answer = x.answer::jsonb "
        "from jsonb_to_recordset($1::jsonb) as x(job_id text, thing text, status text, "
        "  details jsonb, version bigint, loaded_version bigint, started_at bigint, "
        "  updated_at bigint, step_timeout_at bigint, token text, answer text) "
        "where e.job_id = x.job_id and e.thing_name = x.thing "
        "  and e.version_number = x.loaded_version",
        rows.dump());
    if (updated.affected_rows() != writes.changed.size()) throw VersionConflict{};
    rows_written += updated.affected_rows();
  }
  if (!writes.installed.empty()) {
    Json rows = Json::array();
    for (const auto& i : writes.installed)
      rows.push_back({{"thing", i.thing}, {"job_id", i.job_id}, {"reported", Nullable(i.reported)}});
    const std::string json = rows.dump();
    rows_written += txn.exec_params(
        "update fleetwave.devices d set firmware = rel.version, firmware_key = rel.version_key, "
        "  updated_at = now(), "
        "  flagged_at = case when x.reported is distinct from rel.version and x.reported is not null "
        "                    then now() else d.flagged_at end, "
        "  flag_reason = case when x.reported is distinct from rel.version and x.reported is not null "
        "                     then 'reported firmware ' || x.reported || ' after installing ' || "
        "                          rel.version else d.flag_reason end "
        "from jsonb_to_recordset($1::jsonb) as x(thing text, job_id text, reported text), "
        "     fleetwave.rollouts r, fleetwave.releases rel "
        "where d.id = x.thing and r.id = x.job_id and rel.id = r.release_id",
        json).affected_rows();
    rows_written += txn.exec_params(
        "insert into fleetwave.events (cycle_id, rollout_id, kind, detail) "
        "select r.cycle_id, r.id, 'firmware_mismatch', jsonb_build_object('thing', x.thing, "
        "  'reported', x.reported, 'expected', rel.version) "
        "from jsonb_to_recordset($1::jsonb) as x(thing text, job_id text, reported text) "
        "join fleetwave.rollouts r on r.id = x.job_id "
        "join fleetwave.releases rel on rel.id = r.release_id "
        "where x.reported is not null and x.reported <> rel.version",
        json).affected_rows();
  }
  if (!writes.notices.empty()) {
    Json rows = Json::array();
    for (const auto& n : writes.notices) rows.push_back({{"topic", n.topic}, {"payload", n.payload}});
    rows_written += txn.exec_params(
        "insert into fleetwave.outbox (topic, payload) "
        "select x.topic, x.payload from jsonb_to_recordset($1::jsonb) as x(topic text, payload text)",
        rows.dump()).affected_rows();
  }
  if (!writes.telemetry.empty()) {
    Json rows = Json::array();
    for (const auto& t : writes.telemetry)
      rows.push_back({{"thing", t.thing}, {"firmware", Nullable(t.firmware)}, {"payload", t.payload}});
    const std::string json = rows.dump();
    auto inserted = txn.exec_params(
        "insert into fleetwave.telemetry (thing_name, firmware, payload) "
        "select x.thing, x.firmware, x.payload::jsonb "
        "from jsonb_to_recordset($1::jsonb) as x(thing text, firmware text, payload text) "
        "join fleetwave.devices d on d.id = x.thing",
        json);
    result->telemetry_dropped = static_cast<int64_t>(writes.telemetry.size()) -
                                static_cast<int64_t>(inserted.affected_rows());
    rows_written += inserted.affected_rows();
    rows_written += txn.exec_params(
        "update fleetwave.devices set last_seen = now() where id in "
        "(select distinct x.thing from jsonb_to_recordset($1::jsonb) as x(thing text))",
        json).affected_rows();
  }
  return rows_written;
}

}  // namespace

JobsStore::JobsStore(std::string conninfo) : conninfo_(std::move(conninfo)) {}

pqxx::connection& JobsStore::Conn() {
  if (!conn_ || !conn_->is_open()) conn_ = Connect(conninfo_);
  return *conn_;
}

BatchResult JobsStore::RunBatch(const JobsBatch& batch,
                                const std::function<JobsWrites(JobsSnapshot&)>& decide) {
  BatchResult result;
  for (result.attempts = 1;; ++result.attempts) {
    try {
      pqxx::work txn(Conn());
      Queue(txn, batch.queue);
      JobsSnapshot snapshot = Load(txn, batch);
      JobsWrites writes = decide(snapshot);
      result.telemetry_dropped = 0;
      result.rows_written = Write(txn, writes, &result);
      txn.commit();
      return result;
    } catch (const VersionConflict&) {
      if (result.attempts >= kMaxAttempts)
        throw Error("job executions kept changing under the batch; gave up after " +
                    std::to_string(kMaxAttempts) + " attempts");
    } catch (const pqxx::in_doubt_error&) {
      // The commit may or may not have landed: read the truth again and decide again. Requests
      // that were applied are then repeats, answered from the state without applying twice.
      conn_.reset();
      if (result.attempts >= kMaxAttempts) throw Unavailable("commit in doubt; database unreachable");
    } catch (const pqxx::broken_connection& e) {
      conn_.reset();
      throw Unavailable(std::string("lost the database connection: ") + e.what());
    } catch (const Unavailable&) {
      conn_.reset();
      throw;
    } catch (const pqxx::sql_error& e) {
      throw Error(std::string("job batch failed: ") + e.what());
    }
  }
}

int64_t JobsStore::PruneTelemetry(int64_t max_age_seconds, int64_t limit) {
  try {
    pqxx::work txn(Conn());
    auto r = txn.exec_params(
        "delete from fleetwave.telemetry where id in (select id from fleetwave.telemetry "
        "where received_at < now() - make_interval(secs => $1) order by received_at limit $2)",
        max_age_seconds, limit);
    txn.commit();
    return r.affected_rows();
  } catch (const pqxx::broken_connection& e) {
    conn_.reset();
    throw Unavailable(std::string("lost the database connection: ") + e.what());
  }
}

}  // namespace db
