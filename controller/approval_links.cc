#include "controller/approval_links.h"

#include <limits>

#include "controller/approval_token.h"

namespace controller {
namespace {

std::string What(const db::ApprovalRecord& a) {
  return "wave " + std::to_string(a.wave) + " of rollout " + a.rollout_id + " (" + a.model + " " +
         a.version + ")";
}

LinkCheck Classify(const db::ApprovalLinkUse& use) {
  LinkCheck c;
  c.approval = use.approval;
  if (!use.approval) {
    c.status = LinkStatus::kUnknown;
    c.message =
        "this approval link is not valid: no approval has this token (check that the "
        "link was copied whole)";
  } else if (!use.genuine) {
    c.status = LinkStatus::kForged;
    c.message = "this approval link is not valid: its signature does not match";
  } else if (use.approval->state == "approved" || use.approval->state == "denied") {
    c.status = LinkStatus::kDecided;
    c.message = What(*use.approval) + " was already " + use.approval->state +
                "; an approval link works once";
  } else if (use.expired || use.approval->state == "expired") {
    c.status = LinkStatus::kExpired;
    c.message = "the approval of " + What(*use.approval) +
                " has expired; `fleetwave rollout resume " + use.approval->rollout_id +
                "` asks again with a new link";
  } else {
    c.status = LinkStatus::kPending;
    c.message = What(*use.approval) + " waits for approval";
  }
  return c;
}

db::ApprovalLinkUse Use(pqxx::connection& conn, const std::string& token,
                        std::optional<fleet::Event> command, const std::string& actor) {
  // The MAC alone says whether the token is genuine; expiry is judged by the database clock, so
  // an expired link says "expired", not "not valid".
  auto check = [&token](const db::ApprovalRecord& a, const std::string& secret, int64_t) {
    return VerifyApprovalToken(secret, token, a.rollout_id, a.wave,
                               std::numeric_limits<int64_t>::min());
  };
  return db::UseApprovalLink(conn, HashToken(token), check, command, actor);
}

}  // namespace

std::optional<ApprovalLinks> LinksOf(const db::RolloutDetail& rollout,
                                     const db::ApprovalSummary& approval) {
  if (!approval.nonce || !approval.base_url || !rollout.approval_secret) return std::nullopt;
  const std::string page = *approval.base_url + "/approvals/" +
                           ApprovalToken(*rollout.approval_secret, rollout.rollout.id,
                                         approval.wave, approval.expires_epoch, *approval.nonce);
  return ApprovalLinks{page, page + "/approve", page + "/deny"};
}

LinkCheck InspectApprovalLink(pqxx::connection& conn, const std::string& token) {
  return Classify(Use(conn, token, std::nullopt, ""));
}

LinkDecision DecideApprovalLink(pqxx::connection& conn, const std::string& token, bool approve,
                                const std::string& actor) {
  auto use = Use(conn, token, approve ? fleet::Event::kApproved : fleet::Event::kDenied, actor);
  LinkDecision d;
  d.check = Classify(use);
  d.result = std::move(use.decided);
  return d;
}

}  // namespace controller
