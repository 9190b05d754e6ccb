// What the release key and the notice key sign: a release manifest and a notice, and the
// canonical bytes of each.
//
// The encoding. A domain line naming the kind and version ("fleetwave-release-v1\n",
// "fleetwave-notice-v1\n"), then every field in a fixed order, one per line, as
//
//     <name>:<length>:<value>\n
//
// where <length> is the byte length of <value> in decimal (no sign, no leading zeros) and
// <value> is the field's bytes as given (strings are not normalised or escaped; they may contain
// ':' or '\n'). Integers are written as their shortest decimal text ("-1", "0", "42"; never "+1" or
// "007"), which is then length-prefixed like any string.
//
// Why length-prefixed fields and not canonical JSON: a reader takes exactly <length> bytes, so no
// value can run into the next field ("ab"+"c" and "a"+"bc" differ), no escaping rules have to be
// agreed on (JSON canonicalisation leaves \u escapes, number forms and Unicode normalisation to
// each implementation, and a device must reproduce the signer's bytes exactly), and a device in C
// reimplements it in a few lines. The field names make the bytes readable when debugging and
// bind each value to its meaning; the domain line makes the bytes of one kind never the bytes of
// another, so a release signature can never pass as a notice signature (or the reverse), whatever
// key signed it. The encoding is injective: the fields can be read back from the bytes.
//
// Signatures and keys are not made here (fleet/ is pure): see signing/signing.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace fleet {

struct Release;  // fleet/registry.h

inline constexpr char kReleaseDomain[] = "fleetwave-release-v1\n";
inline constexpr char kNoticeDomain[] = "fleetwave-notice-v1\n";

// A release as the offline release key signs it.
struct ReleaseManifest {
  std::string model;
  std::string version;  // a semantic version
  int64_t counter = 0;  // ordering counter: a device refuses a manifest not above its installed one
  std::string url;
  std::string sha256;  // 64 lowercase hex characters of the image
  int64_t size = 0;    // bytes of the image
};

// A notice (the job document of a firmware rollout) as the controller's online notice key signs
// it. It carries the release manifest and the release key's signature of it, so a device checks
// both: the notice key vouches for "this device, this rollout, now", the release key for the image.
struct NoticeDocument {
  ReleaseManifest manifest;
  std::string manifest_key_id;     // the release key that signed the manifest (its KeyId)
  std::string manifest_signature;  // Ed25519 signature of CanonicalBytes(manifest): standard
                                   // base64 with padding (RFC 4648 §4), 88 characters
  std::string rollout_id;
  int64_t wave = 0;
  int64_t issued_at = 0;   // epoch seconds
  int64_t expires_at = 0;  // epoch seconds; a device refuses the notice at or after this time
  std::string key_id;      // the notice key that signs these bytes (its KeyId)
};

// The bytes the release key signs. Total: every manifest has bytes, valid or not; see
// CheckManifest for whether it is worth signing.
std::string CanonicalBytes(const ReleaseManifest& manifest);

// The bytes the notice key signs; they embed CanonicalBytes(notice.manifest) as one field.
std::string CanonicalBytes(const NoticeDocument& notice);

// ---- In the job document -----------------------------------------------------------------------
//
// A firmware rollout's job document (DESIGN §2) carries the manifest and both signatures:
//   {"operation": "firmware.update",
//    "release": {"model", "version", "counter", "url", "sha256", "size"},
//    "releaseSignature": {"alg": "ed25519", "keyId", "value"},   // the release key's, of the
//    manifest "rollout": {"id", "wave"}, "issuedAt", "expiresAt", "signature": {"alg": "ed25519",
//    "keyId", "value"}}          // the notice key's, of the notice
// Both signatures are optional in the document; a device that trusts keys refuses one without.

struct Signature {
  std::string key_id;  // 16 lowercase hex characters
  std::string value;   // base64, 88 characters
  friend bool operator==(const Signature&, const Signature&) = default;
};

// {"alg": "ed25519", "keyId", "value"}.
nlohmann::json ToJson(const Signature& signature);

// The one-line text form an operator copies from `fleetwave release sign` to `release add
// --signature`: "<keyId>:<value>" (base64 has no ':'). ParseSignature returns nullopt with
// `error` saying what is wrong.
std::string ToText(const Signature& signature);
std::optional<Signature> ParseSignature(std::string_view text, std::string* error);

// Reads `doc[field]`: nullopt and no error when absent or null; nullopt and `error` set (naming
// the field and what is wrong) when present but not an ed25519 signature object of the right form.
std::optional<Signature> ReadSignature(const nlohmann::json& doc, const char* field,
                                       std::string* error);

// The notice a job document states: its manifest, the release signature (empty key id and value
// when the document has none), rollout, issuedAt, expiresAt, and the notice signature's key id
// (empty when unsigned). nullopt with `error` naming the first missing or mistyped field. Fields
// beyond these are not part of the notice and not signed.
std::optional<NoticeDocument> NoticeFromDocument(const nlohmann::json& doc, std::string* error);

// The manifest of a registered release (its counter included).
ReleaseManifest ManifestOf(const Release& release);

// The first problem that makes `manifest` unfit to sign (the same rules as a registered release,
// and a non-negative counter), or nullopt.
std::optional<std::string> CheckManifest(const ReleaseManifest& manifest);

}  // namespace fleet
