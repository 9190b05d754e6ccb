#include "fleet/signed_manifest.h"

#include <string_view>

#include <nlohmann/json.hpp>

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

using Json = nlohmann::json;

bool IsKeyId(std::string_view s) {
  if (s.size() != 16) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// Standard base64 with padding of a 64-byte signature: 86 characters of the alphabet and "==".
bool IsSignatureText(std::string_view s) {
  if (s.size() != 88 || s.substr(86) != "==") return false;
  for (char c : s.substr(0, 86))
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
          c == '/'))
      return false;
  return true;
}

const std::string* String(const Json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get_ptr<const std::string*>() : nullptr;
}

std::optional<int64_t> Integer(const Json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

}  // namespace

Json ToJson(const Signature& s) {
  return Json{{"alg", "ed25519"}, {"keyId", s.key_id}, {"value", s.value}};
}

std::string ToText(const Signature& s) { return s.key_id + ":" + s.value; }

std::optional<Signature> ParseSignature(std::string_view text, std::string* error) {
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos) {
    *error = "a signature is KEYID:VALUE as `fleetwave release sign` prints it";
  } else if (!IsKeyId(text.substr(0, colon))) {
    *error = "the signature's key id (before ':') must be 16 lowercase hex characters";
  } else if (!IsSignatureText(text.substr(colon + 1))) {
    *error = "the signature's value (after ':') must be a base64 Ed25519 signature (88 characters)";
  } else {
    return Signature{std::string(text.substr(0, colon)), std::string(text.substr(colon + 1))};
  }
  return std::nullopt;
}

std::optional<Signature> ReadSignature(const Json& doc, const char* field, std::string* error) {
  auto it = doc.find(field);
  if (it == doc.end() || it->is_null()) return std::nullopt;
  const std::string where = std::string(field);
  if (!it->is_object()) {
    *error = where + " must be an object {\"alg\": \"ed25519\", \"keyId\", \"value\"}";
    return std::nullopt;
  }
  const std::string* alg = String(*it, "alg");
  const std::string* key_id = String(*it, "keyId");
  const std::string* value = String(*it, "value");
  if (!alg || *alg != "ed25519") {
    *error = where + ".alg must be \"ed25519\"";
  } else if (!key_id || !IsKeyId(*key_id)) {
    *error = where + ".keyId must be 16 lowercase hex characters";
  } else if (!value || !IsSignatureText(*value)) {
    *error = where + ".value must be a base64 Ed25519 signature (88 characters)";
  } else {
    return Signature{*key_id, *value};
  }
  return std::nullopt;
}

std::optional<NoticeDocument> NoticeFromDocument(const Json& doc, std::string* error) {
  if (!doc.is_object()) {
    *error = "the job document must be a JSON object";
    return std::nullopt;
  }
  auto release = doc.find("release");
  if (release == doc.end() || !release->is_object()) {
    *error = "release must be an object";
    return std::nullopt;
  }
  NoticeDocument n;
  for (auto [key, out] :
       {std::pair{"model", &n.manifest.model}, std::pair{"version", &n.manifest.version},
        std::pair{"url", &n.manifest.url}, std::pair{"sha256", &n.manifest.sha256}}) {
    const std::string* v = String(*release, key);
    if (!v) {
      *error = std::string("release.") + key + " must be a string";
      return std::nullopt;
    }
    *out = *v;
  }
  for (auto [key, out] :
       {std::pair{"counter", &n.manifest.counter}, std::pair{"size", &n.manifest.size}}) {
    auto v = Integer(*release, key);
    if (!v) {
      *error = std::string("release.") + key + " must be an integer";
      return std::nullopt;
    }
    *out = *v;
  }
  auto rollout = doc.find("rollout");
  const std::string* rollout_id =
      rollout != doc.end() && rollout->is_object() ? String(*rollout, "id") : nullptr;
  auto wave = rollout_id ? Integer(*rollout, "wave") : std::nullopt;
  if (!rollout_id || !wave) {
    *error = "rollout must be an object with a string id and an integer wave";
    return std::nullopt;
  }
  n.rollout_id = *rollout_id;
  n.wave = *wave;
  for (auto [key, out] :
       {std::pair{"issuedAt", &n.issued_at}, std::pair{"expiresAt", &n.expires_at}}) {
    auto v = Integer(doc, key);
    if (!v) {
      *error = std::string(key) + " must be an integer (epoch seconds)";
      return std::nullopt;
    }
    *out = *v;
  }
  std::string problem;
  if (auto s = ReadSignature(doc, "releaseSignature", &problem)) {
    n.manifest_key_id = s->key_id;
    n.manifest_signature = s->value;
  } else if (!problem.empty()) {
    *error = problem;
    return std::nullopt;
  }
  if (auto s = ReadSignature(doc, "signature", &problem)) {
    n.key_id = s->key_id;
  } else if (!problem.empty()) {
    *error = problem;
    return std::nullopt;
  }
  return n;
}

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

ReleaseManifest ManifestOf(const Release& r) {
  return {r.model, r.version, r.counter, r.url, r.sha256, r.size};
}

std::optional<std::string> CheckManifest(const ReleaseManifest& m) {
  Release release;
  release.model = m.model;
  release.version = m.version;
  release.url = m.url;
  release.sha256 = m.sha256;
  release.size = m.size;
  release.counter = m.counter;
  return CheckRelease(release);
}

}  // namespace fleet
