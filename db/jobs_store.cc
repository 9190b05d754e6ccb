#include "db/jobs_store.h"

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

namespace db {
namespace {

using Json = nlohmann::json;

// A concurrent writer changed an execution this batch decided on.
struct VersionConflict {};

constexpr int kMaxAttempts = 5;

// Statements of a batch, prepared once per connection: planning these CTEs costs more than
// running them on a batch of a few dozen rows.
constexpr const char* kQueueSql =
    "insert into fleetwave.job_executions (job_id, thing_name, wave, deadline) "
    "select x.job_id, x.thing, x.wave, to_timestamp(x.deadline) "
    "from jsonb_to_recordset($1::jsonb) as x(job_id text, thing text, wave int, deadline bigint) "
    "on conflict (job_id, thing_name) do nothing";
constexpr const char* kHeadSql =
    "select extract(epoch from now())::bigint, coalesce((select jsonb_agg(id) "
    "  from fleetwave.devices "
    "  where id = any(array(select jsonb_array_elements_text($1::jsonb)))), '[]')::text";
constexpr const char* kLoadSql =
    "with wanted as ("
    "  select e.* from fleetwave.job_executions e "
    "  where e.thing_name = any(array(select jsonb_array_elements_text($1::jsonb))) "
    "    and e.status in ('QUEUED', 'IN_PROGRESS') "
    "  union all "
    "  select e.* from fleetwave.job_executions e "
    "  join (select x->>0 as job_id, x->>1 as thing from jsonb_array_elements($2::jsonb) x) n "
    "    on e.job_id = n.job_id and e.thing_name = n.thing "
    "  where e.status not in ('QUEUED', 'IN_PROGRESS')) "
    "select e.job_id, e.thing_name, e.status, e.status_details::text, e.version_number, "
    "  e.execution_number, extract(epoch from e.queued_at)::bigint, "
    "  extract(epoch from e.started_at)::bigint, extract(epoch from e.last_updated_at)::bigint, "
    "  extract(epoch from e.step_timeout_at)::bigint, "
    "  e.wave, rel.version, e.last_client_token, e.last_answer::text, "
    "  extract(epoch from e.deadline)::bigint, extract(epoch from now())::bigint "
    "from wanted e "
    "join fleetwave.rollouts r on r.id = e.job_id "
    "join fleetwave.releases rel on rel.id = r.release_id";
// The rollouts' job documents, which never change once written (see JobsStore::documents_).
constexpr const char* kDocumentsSql =
    "select id, job_document::text from fleetwave.rollouts "
    "where id = any(array(select jsonb_array_elements_text($1::jsonb)))";
constexpr const char* kWriteSql =
    "with changed as ("
    "  update fleetwave.job_executions e set status = x.status, status_details = x.details, "
    "    version_number = x.version, started_at = to_timestamp(x.started_at), "
    "    execution_number = x.execution_number, queued_at = to_timestamp(x.queued_at), "
    "    attempts = e.attempts + (x.execution_number - e.execution_number), "
    "    deadline = to_timestamp(x.deadline), "
    "    settled = case when x.status <> e.status then false else e.settled end, "
    "    last_updated_at = to_timestamp(x.updated_at), "
    "    step_timeout_at = to_timestamp(x.step_timeout_at), last_client_token = x.token, "
    "    last_answer = x.answer "
    "  from jsonb_to_recordset($1::jsonb) as x(job_id text, thing text, status text, "
    "    details jsonb, version bigint, loaded_version bigint, started_at bigint, "
    "    updated_at bigint, step_timeout_at bigint, token text, answer jsonb, "
    "    execution_number bigint, queued_at bigint, deadline bigint) "
    "  where e.job_id = x.job_id and e.thing_name = x.thing "
    "    and e.version_number = x.loaded_version "
    "  returning 1), "
    "installed as ("
    "  select x.thing, x.reported, rel.version, rel.version_key, r.cycle_id, r.id as rollout_id "
    "  from jsonb_to_recordset($2::jsonb) as x(thing text, job_id text, reported text) "
    "  join fleetwave.rollouts r on r.id = x.job_id "
    "  join fleetwave.releases rel on rel.id = r.release_id), "
    "reports as ("
    "  select x.thing, x.firmware, x.payload "
    "  from jsonb_to_recordset($4::jsonb) as x(thing text, firmware text, payload text) "
    "  join fleetwave.devices d on d.id = x.thing), "
    "touched as ("
    "  select coalesce(i.thing, s.thing) as thing, i.version, i.version_key, i.reported, "
    "    s.thing is not null as seen "
    "  from installed i full join (select distinct thing from reports) s on s.thing = i.thing), "
    "devices as ("
    "  update fleetwave.devices d set "
    "    firmware = coalesce(t.version, d.firmware), "
    "    firmware_key = coalesce(t.version_key, d.firmware_key), "
    "    updated_at = case when t.version is null then d.updated_at else now() end, "
    "    last_seen = case when t.seen then now() else d.last_seen end, "
    "    flagged_at = case when t.reported <> t.version then now() else d.flagged_at end, "
    "    flag_reason = case when t.reported <> t.version then 'reported firmware ' || "
    "      t.reported || ' after installing ' || t.version else d.flag_reason end "
    "  from touched t where d.id = t.thing returning 1), "
    "mismatches as ("
    "  insert into fleetwave.events (cycle_id, rollout_id, kind, detail) "
    "  select cycle_id, rollout_id, 'firmware_mismatch', jsonb_build_object('thing', thing, "
    "    'reported', reported, 'expected', version) "
    "  from installed where reported <> version returning 1), "
    "notices as ("
    "  insert into fleetwave.outbox (topic, payload) "
    "  select x.topic, x.payload "
    "  from jsonb_to_recordset($3::jsonb) as x(topic text, payload text) returning id, topic), "
    "sent as ("
    "  delete from fleetwave.outbox "
    "  where id = any(array(select jsonb_array_elements_text($5::jsonb)::bigint)) "
    "  returning 1), "
    "stored as ("
    "  insert into fleetwave.telemetry (thing_name, firmware, payload) "
    "  select thing, firmware, payload::jsonb from reports returning 1) "
    "select (select count(*) from changed), (select count(*) from devices), "
    "  (select count(*) from mismatches), (select count(*) from notices), "
    "  (select count(*) from stored), (select count(*) from sent), "
    "  (select coalesce(jsonb_object_agg(topic, id), '{}')::text from notices)";
constexpr std::pair<const char*, const char*> kStatements[] = {
    {"fleetwave_jobs_queue", kQueueSql}, {"fleetwave_jobs_head", kHeadSql},
    {"fleetwave_jobs_load", kLoadSql},   {"fleetwave_jobs_documents", kDocumentsSql},
    {"fleetwave_jobs_write", kWriteSql},
};

std::optional<int64_t> OptionalInt(const pqxx::field& f) {
  if (f.is_null()) return std::nullopt;
  return f.as<int64_t>();
}

Json Nullable(const std::optional<int64_t>& v) { return v ? Json(*v) : Json(nullptr); }
Json Nullable(const std::optional<std::string>& v) { return v ? Json(*v) : Json(nullptr); }

// A batch parameter: a JSON array of objects, each a small nlohmann object plus one member
// whose value is JSON text this process wrote (an answer), spliced in as it is. As a string it
// would be escaped here, unescaped by the database and then parsed a second time into jsonb
// (measured: 13.0 against 10.9 ms of PostgreSQL for 1,000 answers).
class JsonRows {
 public:
  // `raw`: valid JSON, or null for a JSON null.
  void Add(const Json& fields, std::string_view key, const std::string* raw) {
    text_ += text_.empty() ? '[' : ',';
    text_ += fields.dump();
    text_.pop_back();  // the object's '}'
    if (!fields.empty()) text_ += ',';
    text_ += '"';
    text_ += key;
    text_ += "\":";
    text_ += raw ? *raw : std::string_view("null");
    text_ += '}';
  }
  std::string Text() const { return text_.empty() ? "[]" : text_ + "]"; }

 private:
  std::string text_;
};

void Queue(pqxx::work& txn, const std::vector<NewExecution>& queue) {
  if (queue.empty()) return;
  Json rows = Json::array();
  for (const auto& n : queue)
    rows.push_back({{"job_id", n.job_id},
                    {"thing", n.thing},
                    {"wave", n.wave},
                    {"deadline", Nullable(n.deadline)}});
  txn.exec_prepared("fleetwave_jobs_queue", rows.dump());
}

// The job document an execution carries: its rollout's document with the rollout's id and the
// execution's wave, issuedAt and (unless it never expires) expiresAt added. Spliced as text in
// jsonb's own style; a rollout document never has these keys (db/rollouts.cc writes it).
std::string ExecutionDocument(const std::string& rollout_document, const std::string& rollout_id,
                              int wave, int64_t issued_at, std::optional<int64_t> expires_at) {
  std::string doc = rollout_document;
  while (!doc.empty() && doc.back() != '}') doc.pop_back();
  if (doc.empty()) doc = "{}";
  doc.pop_back();
  if (doc.find_first_not_of(" \t\n{") != std::string::npos) doc += ", ";
  doc += "\"rollout\": {\"id\": " + Json(rollout_id).dump() +
         ", \"wave\": " + std::to_string(wave) + "}, \"issuedAt\": " + std::to_string(issued_at);
  if (expires_at) doc += ", \"expiresAt\": " + std::to_string(*expires_at);
  doc += '}';
  return doc;
}

JobsSnapshot Load(pqxx::work& txn, const JobsBatch& batch,
                  std::map<std::string, std::string>& documents) {
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

  // Two index-friendly halves: a device's pending executions (the partial pending index) and
  // the executions requests name (the primary key) that are no longer pending (every named
  // thing is among `things`, so its pending ones come with the first half). An OR of the two
  // would scan the table. Kept once should one still come twice.
  auto rows = txn.exec_prepared("fleetwave_jobs_load", things.dump(), named.dump());

  // The documents of rollouts not seen before, in one more round trip (rarely: once per
  // rollout and connection). Bounded: past 1,000 rollouts the cache starts again, with this
  // batch's.
  std::set<std::string> jobs, missing;
  for (const auto& row : rows) jobs.insert(row[0].as<std::string>());
  for (const auto& job : jobs)
    if (!documents.count(job)) missing.insert(job);
  if (!missing.empty()) {
    if (documents.size() > 1000) {
      documents.clear();
      missing = jobs;
    }
    for (const auto& row : txn.exec_prepared("fleetwave_jobs_documents", Json(missing).dump()))
      documents[row[0].as<std::string>()] = row[1].as<std::string>();
  }

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
    e.release_version = row[11].as<std::string>();
    if (!row[12].is_null()) e.last_client_token = row[12].as<std::string>();
    if (!row[13].is_null()) e.last_answer = row[13].as<std::string>();
    e.deadline = OptionalInt(row[14]);
    auto document = documents.find(e.job_id);
    e.job_document = ExecutionDocument(document == documents.end() ? "{}" : document->second,
                                       e.job_id, row[10].as<int>(), e.queued_at, e.deadline);
    e.queued_in_batch = queued.count({e.job_id, e.thing_name}) > 0;
    snapshot.executions[e.thing_name].push_back(std::move(e));
  }

  // The database clock and which things are registered. A thing with an execution is (the
  // foreign key), and the load's rows carry the clock: the head query asks only about things
  // with nothing loaded, and mostly there are none (a request comes from a device with work).
  Json unproven = Json::array();
  for (const auto& t : all_things) {
    if (snapshot.executions.count(t))
      snapshot.known_things.insert(t);
    else
      unproven.push_back(t);
  }
  if (!unproven.empty() || rows.empty()) {
    auto head = txn.exec_prepared1("fleetwave_jobs_head", unproven.dump());
    snapshot.now = head[0].as<int64_t>();
    for (const auto& id : Json::parse(head[1].as<std::string>()))
      snapshot.known_things.insert(id.get<std::string>());
  } else {
    snapshot.now = rows[0][15].as<int64_t>();  // now(): the transaction's start, as the head's
  }
  return snapshot;
}

// Every write of the batch in one statement (one round trip): data-modifying CTEs over the
// batch's rows passed as JSON. Devices are updated once per statement (PostgreSQL applies only
// one update per row and statement), so installed firmware and last_seen share one UPDATE.
int64_t Write(pqxx::work& txn, const JobsWrites& writes, const std::vector<int64_t>& mark_sent,
              BatchResult* result) {
  if (writes.changed.empty() && writes.installed.empty() && writes.notices.empty() &&
      writes.telemetry.empty() && mark_sent.empty())
    return 0;
  JsonRows changed;
  Json installed = Json::array(), notices = Json::array(), telemetry = Json::array();
  for (const auto& e : writes.changed) {
    changed.Add({{"job_id", e.job_id},
                 {"thing", e.thing_name},
                 {"status", fleet::ToString(e.status)},
                 {"details", e.status_details},
                 {"version", e.version_number},
                 {"loaded_version", e.loaded_version},
                 {"started_at", Nullable(e.started_at)},
                 {"updated_at", e.last_updated_at},
                 {"step_timeout_at", Nullable(e.step_timeout_at)},
                 {"token", Nullable(e.last_client_token)},
                 {"execution_number", e.execution_number},
                 {"queued_at", e.queued_at},
                 {"deadline", Nullable(e.deadline)}},
                "answer", e.last_answer ? &*e.last_answer : nullptr);
  }
  for (const auto& i : writes.installed)
    installed.push_back(
        {{"thing", i.thing}, {"job_id", i.job_id}, {"reported", Nullable(i.reported)}});
  // Stored as text, byte for byte: what the relay sends again is what was published. (As JSON
  // in a `json` parameter it would need no escaping, but the statement reads it twice: slower.)
  for (const auto& n : writes.notices)
    notices.push_back({{"topic", n.topic}, {"payload", n.payload}});
  for (const auto& t : writes.telemetry)
    telemetry.push_back(
        {{"thing", t.thing}, {"firmware", Nullable(t.firmware)}, {"payload", t.payload}});

  auto r = txn.exec_prepared1("fleetwave_jobs_write", changed.Text(), installed.dump(),
                              notices.dump(), telemetry.dump(), Json(mark_sent).dump());
  if (r[0].as<size_t>() != writes.changed.size()) throw VersionConflict{};
  int64_t stored = r[4].as<int64_t>();
  result->telemetry_dropped = static_cast<int64_t>(writes.telemetry.size()) - stored;
  // A batch has at most one notice per topic (one notify-next and one notify per thing).
  const Json ids = Json::parse(r[6].as<std::string>());
  for (const auto& n : writes.notices)
    result->notices.push_back({ids.at(n.topic).get<int64_t>(), n.topic, n.payload});
  return r[0].as<int64_t>() + r[1].as<int64_t>() + r[2].as<int64_t>() + r[3].as<int64_t>() +
         stored + r[5].as<int64_t>();
}

}  // namespace

JobsStore::JobsStore(std::string conninfo) : conninfo_(std::move(conninfo)) {}

pqxx::connection& JobsStore::Conn() {
  if (!conn_ || !conn_->is_open()) {
    conn_ = Connect(conninfo_);
    for (const auto& [name, sql] : kStatements) conn_->prepare(name, sql);
    documents_.clear();  // perhaps another database now (one restored from a backup)
  }
  return *conn_;
}

// PostgreSQL plans a prepared statement once for all parameters after its first five runs, by
// the table sizes of that moment. Planned while job_executions was nearly empty (a fleet at
// rest before its first rollout), the load and the write read the whole table on every batch
// (a sequential scan and a hash join) until autovacuum's next ANALYZE, up to a minute and a
// wave later; planned again after executions were queued, they look up each row by its key.
void JobsStore::PrepareAgain() {
  prepare_again_ = false;
  if (!conn_ || !conn_->is_open()) return;  // Conn() prepares them on a new connection
  try {
    for (const auto& [name, sql] : kStatements) {
      conn_->unprepare(name);
      conn_->prepare(name, sql);
    }
  } catch (...) {
    conn_.reset();  // never keep a connection with some statements missing; Conn() starts anew
    throw;
  }
}

BatchResult JobsStore::RunBatch(const JobsBatch& batch,
                                const std::function<JobsWrites(JobsSnapshot&)>& decide) {
  BatchResult result;
  for (result.attempts = 1;; ++result.attempts) {
    try {
      if (prepare_again_) PrepareAgain();
      pqxx::work txn(Conn());
      if (batch.in_transaction) batch.in_transaction(txn);
      Queue(txn, batch.queue);
      JobsSnapshot snapshot = Load(txn, batch, documents_);
      JobsWrites writes = decide(snapshot);
      result.telemetry_dropped = 0;
      result.notices.clear();
      result.rows_written = Write(txn, writes, batch.mark_sent, &result);
      txn.commit();
      if (!batch.queue.empty()) prepare_again_ = true;
      return result;
    } catch (const VersionConflict&) {
      if (result.attempts >= kMaxAttempts)
        throw Error("job executions kept changing under the batch; gave up after " +
                    std::to_string(kMaxAttempts) + " attempts");
    } catch (const pqxx::in_doubt_error&) {
      // The commit may or may not have landed: read the truth again and decide again. Requests
      // that were applied are then repeats, answered from the state without applying twice.
      conn_.reset();
      if (result.attempts >= kMaxAttempts)
        throw Unavailable("commit in doubt; database unreachable");
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
