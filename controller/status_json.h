// The JSON shapes of what operators read — the same for the CLI's --json output and the HTTP API,
// so a script can move from one to the other. The shapes are documented in README ("Status as
// JSON"); fields are only ever added. Times are ISO 8601 UTC strings; absent values are null.
#pragma once

#include <vector>

#include <nlohmann/json.hpp>

#include "db/rollout_queries.h"

namespace controller {

// Bumped only if a field changes meaning or goes away (never so far).
inline constexpr int kStatusSchema = 1;

nlohmann::json ToJson(const db::ExecutionCounts& counts);
nlohmann::json ToJson(const db::RolloutSummary& rollout);
// With its plan, waves and pending approvals (each with its links when they can be rebuilt).
nlohmann::json ToJson(const db::RolloutDetail& rollout);
nlohmann::json ToJson(const db::HistoryEvent& event);
nlohmann::json ToJson(const db::CycleSummary& cycle);
// {"schema", "now", "cycle", "leader", "rollouts", "pendingApprovals"}.
nlohmann::json ToJson(const db::Status& status);

}  // namespace controller
