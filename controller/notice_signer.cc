#include "controller/notice_signer.h"

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "fleet/signed_manifest.h"

namespace controller {

NoticeSigner::NoticeSigner(signing::SecretKey key) : key_(std::move(key)), key_id_(key_.KeyId()) {}

void NoticeSigner::Sign(nlohmann::json& doc) const {
  doc.erase("signature");
  std::string error;
  std::optional<fleet::NoticeDocument> notice = fleet::NoticeFromDocument(doc, &error);
  if (!notice) {
    // Once, not per document: a broken document would otherwise log at the request rate.
    if (unsigned_.fetch_add(1, std::memory_order_relaxed) == 0)
      spdlog::warn("a job document is sent unsigned: {} (devices that trust keys refuse it)",
                   error);
    return;
  }
  notice->key_id = key_id_;
  doc["signature"] = fleet::ToJson(fleet::Signature{key_id_, signing::SignNotice(key_, *notice)});
}

}  // namespace controller
