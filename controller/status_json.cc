#include "controller/status_json.h"

#include "controller/approval_links.h"

namespace controller {
namespace {

using Json = nlohmann::json;

template <typename T>
Json OrNull(const std::optional<T>& v) {
  return v ? Json(*v) : Json(nullptr);
}

Json ApprovalJson(const db::RolloutDetail& d, const db::ApprovalSummary& a) {
  Json out = {{"rollout", d.rollout.id},   {"wave", a.wave},       {"createdAt", a.created_at},
              {"expiresAt", a.expires_at}, {"expired", a.expired}, {"links", nullptr}};
  if (auto links = LinksOf(d, a))
    out["links"] = {{"page", links->page}, {"approve", links->approve}, {"deny", links->deny}};
  return out;
}

}  // namespace

Json ToJson(const db::ExecutionCounts& c) {
  return Json{{"queued", c.queued},    {"inProgress", c.in_progress}, {"succeeded", c.succeeded},
              {"failed", c.failed},    {"rejected", c.rejected},      {"timedOut", c.timed_out},
              {"canceled", c.canceled}};
}

Json ToJson(const db::RolloutSummary& r) {
  return Json{{"id", r.id},
              {"cycle", r.cycle_id},
              {"model", r.model},
              {"version", r.version},
              {"state", r.state},
              {"currentWave", r.current_wave},
              {"waveCount", r.waves},
              {"total", r.total},
              {"executions", ToJson(r.counts)},
              {"reason", OrNull(r.reason)},
              {"createdAt", r.created_at},
              {"finishedAt", OrNull(r.finished_at)}};
}

Json ToJson(const db::RolloutDetail& d) {
  Json out = ToJson(d.rollout);
  out["releaseState"] = d.release_state;
  out["plan"] = d.plan;
  out["waves"] = Json::array();
  for (const auto& w : d.waves) {
    out["waves"].push_back(Json{{"wave", w.wave},
                                {"planned", w.planned},
                                {"state", w.state},
                                {"executions", ToJson(w.counts)},
                                {"verdict", OrNull(w.verdict)},
                                {"startedAt", OrNull(w.started_at)},
                                {"finishedAt", OrNull(w.finished_at)}});
  }
  out["pendingApprovals"] = Json::array();
  for (const auto& a : d.approvals) out["pendingApprovals"].push_back(ApprovalJson(d, a));
  return out;
}

Json ToJson(const db::HistoryEvent& e) {
  return Json{{"id", e.id},
              {"at", e.at},
              {"cycle", OrNull(e.cycle_id)},
              {"rollout", OrNull(e.rollout_id)},
              {"wave", OrNull(e.wave)},
              {"kind", e.kind},
              {"from", OrNull(e.from_state)},
              {"to", OrNull(e.to_state)},
              {"detail", e.detail}};
}

Json ToJson(const db::CycleSummary& c) {
  return Json{{"id", c.id},
              {"state", c.state},
              {"startedAt", c.started_at},
              {"notBefore", c.not_before},
              {"plannedAt", OrNull(c.planned_at)},
              {"finishedAt", OrNull(c.finished_at)},
              {"heartbeatAt", c.heartbeat_at},
              {"leaderEpoch", c.leader_epoch},
              {"rolloutCount", c.rollouts}};
}

Json ToJson(const db::Status& s) {
  Json out = {{"schema", kStatusSchema},
              {"now", s.now},
              {"cycle", s.cycle ? ToJson(*s.cycle) : Json(nullptr)},
              {"leader", nullptr},
              {"rollouts", Json::array()},
              {"pendingApprovals", Json::array()}};
  if (s.leader) {
    out["leader"] = {{"holder", s.leader->holder},
                     {"epoch", s.leader->epoch},
                     {"heartbeatAt", s.leader->heartbeat_at},
                     {"expiresAt", s.leader->expires_at},
                     {"expired", s.leader->expired}};
  }
  for (const auto& d : s.rollouts) {
    out["rollouts"].push_back(ToJson(d));
    for (const auto& a : d.approvals) out["pendingApprovals"].push_back(ApprovalJson(d, a));
  }
  return out;
}

}  // namespace controller
