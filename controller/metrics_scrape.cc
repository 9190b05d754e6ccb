#include "controller/metrics_scrape.h"

#include <chrono>
#include <optional>

#include <spdlog/spdlog.h>

#include "controller/metrics.h"
#include "db/metrics_queries.h"

namespace controller {

std::string RenderDatabaseMetrics(pqxx::connection* conn) {
  std::optional<db::MetricsSnapshot> s;
  const auto start = std::chrono::steady_clock::now();
  if (conn) {
    try {
      s = db::ReadMetrics(*conn);
    } catch (const std::exception& e) {
      // A scrape every few seconds must not flood the log while the database is down.
      static std::atomic<int64_t> last_warned{0};
      const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::steady_clock::now().time_since_epoch())
                              .count();
      if (now - last_warned.exchange(now) >= 60)
        spdlog::warn("metrics: database gauges left out: {}", e.what());
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // Built fresh on each scrape: these are read, not counted.
  MetricsRegistry r;
  r.AddGauge("fleetwave_database_up", "1 when the scrape's database query succeeded, else 0.")
      .Get()
      .Set(s ? 1 : 0);
  if (s) {
    auto& executions =
        r.AddGauge("fleetwave_executions",
                   "Job executions of the current cycle's rollouts by status.", {"status"});
    for (const auto& [status, n] : s->executions)
      executions.With({status}).Set(static_cast<double>(n));
    auto& rollouts =
        r.AddGauge("fleetwave_rollouts", "Rollouts of the current cycle by state.", {"state"});
    for (const auto& [state, n] : s->rollouts) rollouts.With({state}).Set(static_cast<double>(n));
    auto& waves =
        r.AddGauge("fleetwave_waves", "Waves of the current cycle's rollouts by state.", {"state"});
    for (const auto& [state, n] : s->waves) waves.With({state}).Set(static_cast<double>(n));
    r.AddGauge("fleetwave_outbox_unsent",
               "Notices in the outbox not yet acknowledged by the broker.")
        .Get()
        .Set(static_cast<double>(s->outbox_unsent));
    r.AddGauge("fleetwave_current_cycle",
               "Id of the cycle whose rollouts the gauges count (the newest with rollouts).")
        .Get()
        .Set(static_cast<double>(s->current_cycle));
    r.AddGauge("fleetwave_running_cycle", "Id of the running cycle; 0 when none runs.")
        .Get()
        .Set(static_cast<double>(s->running_cycle));
    r.AddGauge("fleetwave_cycle_heartbeat_age_seconds",
               "Seconds since the running cycle's heartbeat (database clock); 0 when none runs.")
        .Get()
        .Set(s->heartbeat_age_seconds);
    r.AddGauge("fleetwave_metrics_query_seconds", "Time the scrape's database query took.")
        .Get()
        .Set(seconds);
  }
  return r.Render();
}

std::string RenderMetrics(const Engine& engine, pqxx::connection* conn) {
  std::string out;
  try {
    engine.metrics().RenderTo(&out);
    out += RenderDatabaseMetrics(conn);
  } catch (const std::exception& e) {
    // Only allocation can fail here; report what we have and that the database part is missing.
    out += "# fleetwave: rendering failed: ";
    out += e.what();
    out += "\nfleetwave_database_up 0\n";
  }
  return out;
}

}  // namespace controller
