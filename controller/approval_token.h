// One-use approval tokens: what an approve or deny URL carries.
//
// A token is "<nonce>.<expiresAt>.<mac>": 16 random bytes (hex), the expiry (epoch seconds) and
// HMAC-SHA256(secret, "<rollout>/<wave>/<expiresAt>/<nonce>") in hex. The database stores only
// HashToken(token), so a database reader cannot use a token; a token is found by its hash, then
// its MAC is checked against the approval row it names (constant-time) and its expiry against
// the clock. One use: deciding the approval moves its row out of `pending`.
#pragma once

#include <cstdint>
#include <string>

namespace controller {

struct IssuedToken {
  std::string token;
  std::string hash;   // HashToken(token)
  std::string nonce;  // kept with the approval, so ApprovalToken can show the link again
};

// REQUIRES: a non-empty secret (RandomHex(32) makes one).
IssuedToken IssueApprovalToken(const std::string& secret, const std::string& rollout_id, int wave,
                               int64_t expires_at);

// The token IssueApprovalToken gave for these values (to show a pending approval's link again).
std::string ApprovalToken(const std::string& secret, const std::string& rollout_id, int wave,
                          int64_t expires_at, const std::string& nonce);

// Whether `token` was issued with `secret` for this rollout and wave and is unexpired at `now`.
bool VerifyApprovalToken(const std::string& secret, const std::string& token,
                         const std::string& rollout_id, int wave, int64_t now);

std::string HashToken(const std::string& token);  // lowercase hex SHA-256
std::string RandomHex(size_t bytes);              // from the OS's CSPRNG

}  // namespace controller
