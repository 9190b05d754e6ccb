// The controller's online notice key at work: every job document a device receives (in a
// start-next or describe answer, an update answer, a notify-next) is signed just before it is
// sent, because its issuedAt and expiresAt are the execution's own (a re-queued execution gets new
// ones) — so nothing signed is stored, and a stored document never goes out with a stale signature.
//
// The signature covers fleet::CanonicalBytes(NoticeFromDocument(doc)) with `key_id` set to this
// key's id: the release manifest and the release key's signature of it, the rollout and wave,
// issuedAt and expiresAt. A document that does not state a whole notice (it never happens for a
// rollout's documents) goes out unsigned, and devices that trust keys refuse it.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "signing/signing.h"

namespace controller {

class NoticeSigner {
 public:
  explicit NoticeSigner(signing::SecretKey key);

  // Sets doc["signature"] = {"alg": "ed25519", "keyId", "value"}, replacing any signature there.
  // Thread-safe.
  void Sign(nlohmann::json& doc) const;

  const std::string& key_id() const { return key_id_; }
  // Documents left unsigned because they state no whole notice.
  uint64_t unsigned_documents() const { return unsigned_.load(std::memory_order_relaxed); }

 private:
  signing::SecretKey key_;
  std::string key_id_;
  mutable std::atomic<uint64_t> unsigned_{0};
};

}  // namespace controller
