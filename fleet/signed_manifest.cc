#include "fleet/signed_manifest.h"

#include <string_view>

#include "fleet/registry.h"

namespace fleet {
namespace {

// Appends "<name>:<length>:<value>\n". The length, not a delimiter, ends the value, which is what
// keeps adjacent fields from bleeding into each other whatever bytes they hold.
void Field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.push_back(':');
  out.append(std::to_string(value.size()));
  out.push_back(':');
  out.append(value);
  out.push_back('\n');
}

// std::to_string of an integer is already the shortest decimal form (no '+', no leading zeros).
void Field(std::string& out, std::string_view name, int64_t value) {
  Field(out, name, std::to_string(value));
}

}  // namespace

std::string CanonicalBytes(const ReleaseManifest& m) {
  std::string out = kReleaseDomain;
  Field(out, "model", m.model);
  Field(out, "version", m.version);
  Field(out, "counter", m.counter);
  Field(out, "url", m.url);
  Field(out, "sha256", m.sha256);
  Field(out, "size", m.size);
  return out;
}

std::string CanonicalBytes(const NoticeDocument& n) {
  std::string out = kNoticeDomain;
  Field(out, "manifest", CanonicalBytes(n.manifest));
  Field(out, "manifest_key_id", n.manifest_key_id);
  Field(out, "manifest_signature", n.manifest_signature);
  Field(out, "rollout_id", n.rollout_id);
  Field(out, "wave", n.wave);
  Field(out, "issued_at", n.issued_at);
  Field(out, "expires_at", n.expires_at);
  Field(out, "key_id", n.key_id);
  return out;
}

std::optional<std::string> CheckManifest(const ReleaseManifest& m) {
  Release release;
  release.model = m.model;
  release.version = m.version;
  release.url = m.url;
  release.sha256 = m.sha256;
  release.size = m.size;
  if (auto problem = CheckRelease(release)) return problem;
  if (m.counter < 0)
    return "counter must be zero or more (it orders releases), got " + std::to_string(m.counter);
  return std::nullopt;
}

}  // namespace fleet
