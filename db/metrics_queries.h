// What `GET /metrics` reads from the database at scrape time: the current rollouts' executions,
// rollouts and waves by state, the outbox backlog, and the running cycle.
//
// Cheap at a million executions: executions are counted only for the rollouts of the *current*
// cycle (the newest cycle that has rollouts: the running one once it has planned, the one just
// completed while the next waits out its idle interval), by an index-only scan of
// job_executions_wave_idx per rollout; everything else reads small tables or partial indexes.
// Measured (EXPLAIN ANALYZE, PostgreSQL 15, this 2-core machine): a current rollout of a million
// executions beside a past one of another million: 180-270 ms, no heap fetches; the past
// cycle's rows are never read. A statement timeout of 5 s bounds a scrape of a sick database.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <pqxx/connection>

#include "db/connection.h"

namespace db {

struct MetricsSnapshot {
  int64_t running_cycle = 0;  // id of the running cycle; 0 when none runs
  // Seconds since the running cycle's heartbeat (database clock); 0 when none runs.
  double heartbeat_age_seconds = 0;
  int64_t current_cycle = 0;  // the cycle whose rollouts are counted below; 0 when none has any
  // By state name as in the database; every state is present (0 when none).
  std::map<std::string, int64_t> executions;  // by job execution status (QUEUED, ...)
  std::map<std::string, int64_t> rollouts;    // by rollout state (running, ...)
  std::map<std::string, int64_t> waves;       // by wave state (pending, ...)
  int64_t outbox_unsent = 0;                  // notices not yet acknowledged by the broker
};

// One read-only snapshot transaction on `conn`. Throws Unavailable when the connection is lost,
// Error otherwise; never reconnects by itself beyond what libpqxx does.
MetricsSnapshot ReadMetrics(pqxx::connection& conn);

}  // namespace db
