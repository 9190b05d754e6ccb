// Approval links: what `GET /approvals/<token>` shows and `POST /approvals/<token>/approve|deny`
// decides, and the links of a pending approval as status and console show them.
//
// A link is <base>/approvals/<token>; its token (approval_token.h) names one approval. A link
// decides at most once: only a pending, unexpired approval whose token verifies against the
// shared secret is decided, in one transaction with the rollout's change and its events.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <pqxx/connection>

#include "db/rollout_queries.h"

namespace controller {

struct ApprovalLinks {
  std::string page;     // GET: what is being approved, with approve/deny buttons
  std::string approve;  // POST
  std::string deny;     // POST
};

// The links of a pending approval of `rollout`, when they can be rebuilt (its nonce, base URL
// and the secret are known).
std::optional<ApprovalLinks> LinksOf(const db::RolloutDetail& rollout,
                                     const db::ApprovalSummary& approval);

enum class LinkStatus {
  kPending,  // valid: can be decided
  kUnknown,  // no approval has this token (mistyped, or never issued)
  kForged,   // an approval has this hash but the token does not verify (cannot happen by chance)
  kExpired,  // past its expiry, or expired because the rollout asked again
  kDecided,  // already approved or denied: a link works once
};

struct LinkCheck {
  LinkStatus status = LinkStatus::kUnknown;
  std::optional<db::ApprovalRecord> approval;  // set unless kUnknown
  std::string message;                         // for the person holding the link
};

// What the link is for, without changing anything.
LinkCheck InspectApprovalLink(pqxx::connection& conn, const std::string& token);

struct LinkDecision {
  LinkCheck check;                           // kPending when the decision was applied
  std::optional<db::OperatorResult> result;  // set when applied
};

// Approves (or denies) through the link as `actor`, once. Anything but a pending, valid link
// changes nothing. Throws db::Conflict when the rollout no longer awaits this approval and
// db::Error/Unavailable on database failures.
LinkDecision DecideApprovalLink(pqxx::connection& conn, const std::string& token, bool approve,
                                const std::string& actor);

}  // namespace controller
