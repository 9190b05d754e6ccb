// The body of `GET /metrics`: what the HTTP server calls on each scrape.
#pragma once

#include <string>

#include <pqxx/connection>

#include "controller/engine.h"

namespace controller {

// The whole /metrics body in the Prometheus text format 0.0.4: the engine's metrics (leader,
// reconcile passes, the jobs API's counters and histograms), then gauges read from the
// database at scrape time by db::ReadMetrics (executions, rollouts and waves of the current
// cycle by state, outbox depth, the running cycle) and fleetwave_database_up 1.
// When `conn` is null or the query fails, the database gauges are left out and
// fleetwave_database_up is 0. Never throws.
// REQUIRES: no other thread uses `conn` during the call (one scrape at a time per connection).
// Cost: one read-only transaction, one statement (db/metrics_queries.h: 180-270 ms with a
// million executions in the current cycle).
std::string RenderMetrics(const Engine& engine, pqxx::connection* conn);

// The part read from the database alone (what RenderMetrics appends); for tests and callers
// without an Engine. Never throws.
std::string RenderDatabaseMetrics(pqxx::connection* conn);

}  // namespace controller
