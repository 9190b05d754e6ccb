#include "db/metrics_queries.h"

#include <pqxx/pqxx>

#include "fleet/jobs.h"
#include "fleet/rollout_machine.h"

namespace db {
namespace {

using ReadTxn = pqxx::transaction<pqxx::repeatable_read, pqxx::readwrite_policy::read_only>;

// One statement, one round trip. The current cycle's rollouts are few; max(cycle_id) reads the
// end of the (cycle_id, release_id) unique index.
const char* const kQuery = R"sql(
with cur as (select max(cycle_id) as id from fleetwave.rollouts),
     ro as (select r.id, r.state from fleetwave.rollouts r, cur where r.cycle_id = cur.id)
select 'execution' as kind, e.status as name, count(*) as n
  from ro cross join lateral (
    select status from fleetwave.job_executions x where x.job_id = ro.id) e
  group by e.status
union all
select 'rollout', state, count(*) from ro group by state
union all
select 'wave', w.state, count(*) from fleetwave.waves w join ro on w.rollout_id = ro.id
  group by w.state
union all
select 'outbox', '', count(*) from fleetwave.outbox where sent_at is null
union all
select 'current_cycle', '', coalesce((select id from cur), 0)
union all
select 'running_cycle', '', coalesce(
  (select id from fleetwave.cycles where state = 'running'), 0)
union all
select 'heartbeat_ms', '', coalesce((
  select (extract(epoch from now() - heartbeat_at) * 1000)::bigint
  from fleetwave.cycles where state = 'running'), 0)
)sql";

}  // namespace

MetricsSnapshot ReadMetrics(pqxx::connection& conn) {
  MetricsSnapshot s;
  for (int i = 0; i <= static_cast<int>(fleet::JobStatus::kRemoved); ++i)
    s.executions[std::string(fleet::ToString(static_cast<fleet::JobStatus>(i)))] = 0;
  for (int i = 0; i <= static_cast<int>(fleet::RolloutState::kSuperseded); ++i)
    s.rollouts[std::string(fleet::ToString(static_cast<fleet::RolloutState>(i)))] = 0;
  for (int i = 0; i <= static_cast<int>(fleet::WaveState::kCanceled); ++i)
    s.waves[std::string(fleet::ToString(static_cast<fleet::WaveState>(i)))] = 0;
  try {
    ReadTxn txn(conn, "metrics");
    txn.exec("set local statement_timeout = 5000");
    for (const auto& row : txn.exec(kQuery)) {
      const std::string kind = row[0].as<std::string>();
      const std::string name = row[1].as<std::string>();
      const int64_t n = row[2].as<int64_t>();
      if (kind == "execution") {
        s.executions[name] = n;
      } else if (kind == "rollout") {
        s.rollouts[name] = n;
      } else if (kind == "wave") {
        s.waves[name] = n;
      } else if (kind == "outbox") {
        s.outbox_unsent = n;
      } else if (kind == "current_cycle") {
        s.current_cycle = n;
      } else if (kind == "running_cycle") {
        s.running_cycle = n;
      } else if (kind == "heartbeat_ms") {
        s.heartbeat_age_seconds = static_cast<double>(n) / 1000.0;
      }
    }
  } catch (const pqxx::broken_connection& e) {
    throw Unavailable(std::string("lost the database connection reading metrics: ") + e.what());
  } catch (const pqxx::failure& e) {
    throw Error(std::string("reading metrics failed: ") + e.what());
  }
  return s;
}

}  // namespace db
