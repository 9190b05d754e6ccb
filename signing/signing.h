// Ed25519 signatures (libsodium) for release manifests and notices, key files, and the set of
// keys a device trusts.
//
// Two kinds of key, two trust sets: the offline release key signs CanonicalBytes(manifest), the
// controller's online notice key signs CanonicalBytes(notice). A device keeps one TrustedKeys for
// each and never mixes them, so a controller that holds only the notice key cannot vouch for an
// image. The domain lines of the canonical encoding (fleet/signed_manifest.h) keep a signature of
// one kind from verifying as the other even when the same key were in both sets.
//
// Text forms: signatures, public keys and key-file payloads are standard base64 with padding
// (RFC 4648 §4; a signature is 88 characters); a key id is 16 lowercase hex characters, the first
// 8 bytes of SHA-256 of the 32-byte public key (`base64 -d | sha256sum | cut -c1-16`).
//
// Key files are one line each:
//     fleetwave-ed25519-secret-v1 <base64 of libsodium's 64-byte secret key (seed || public key)>
//     fleetwave-ed25519-public-v1 <base64 of the 32-byte public key>
// A secret key file is created with mode 0600 and never overwritten; it is refused when group or
// others have any access to it. Public key files may be world-readable.
//
// Secret material never appears in an exception message or a log line, and SecretKey wipes its
// bytes when it is destroyed or moved from.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fleet/signed_manifest.h"
#include "signing/key_file.h"  // KeyFileError

namespace signing {

inline constexpr size_t kPublicKeyBytes = 32;
inline constexpr size_t kSecretKeyBytes = 64;
inline constexpr size_t kSignatureBytes = 64;

class PublicKey {
 public:
  // REQUIRES: bytes.size() == kPublicKeyBytes (otherwise throws std::invalid_argument).
  explicit PublicKey(std::string_view bytes);

  // nullopt unless `text` is the base64 of exactly kPublicKeyBytes bytes.
  static std::optional<PublicKey> FromBase64(std::string_view text);
  std::string ToBase64() const;

  std::string KeyId() const;
  const std::array<unsigned char, kPublicKeyBytes>& bytes() const { return bytes_; }

  friend bool operator==(const PublicKey&, const PublicKey&) = default;

 private:
  std::array<unsigned char, kPublicKeyBytes> bytes_{};
};

struct KeyPair;

// An Ed25519 secret key. Move-only; its bytes are wiped (sodium_memzero) when it is destroyed and
// when it is moved from. It has no text form except through WriteSecretKeyFile.
class SecretKey {
 public:
  SecretKey(SecretKey&& other) noexcept;
  SecretKey& operator=(SecretKey&& other) noexcept;
  SecretKey(const SecretKey&) = delete;
  SecretKey& operator=(const SecretKey&) = delete;
  ~SecretKey();

  PublicKey public_key() const;
  std::string KeyId() const { return public_key().KeyId(); }

 private:
  friend KeyPair GenerateKeyPair();
  friend SecretKey LoadSecretKeyFile(const std::string& path);
  friend std::string Sign(const SecretKey& key, std::string_view message);
  friend void WriteSecretKeyFile(const std::string& path, const SecretKey& key);
  SecretKey() = default;
  std::array<unsigned char, kSecretKeyBytes> bytes_{};
};

struct KeyPair {
  PublicKey public_key;
  SecretKey secret_key;
};

// A fresh key pair from the operating system's CSPRNG.
KeyPair GenerateKeyPair();

// The detached Ed25519 signature of `message`, in base64.
std::string Sign(const SecretKey& key, std::string_view message);

// Whether `signature` (base64) is `key`'s signature of `message`. A malformed signature is false.
bool Verify(const PublicKey& key, std::string_view message, std::string_view signature);

// The release key's signature of a manifest, the notice key's of a notice (base64), and their
// checks against one key: Sign/Verify over fleet::CanonicalBytes.
std::string SignRelease(const SecretKey& release_key, const fleet::ReleaseManifest& manifest);
std::string SignNotice(const SecretKey& notice_key, const fleet::NoticeDocument& notice);
bool VerifyRelease(const PublicKey& release_key, const fleet::ReleaseManifest& manifest,
                   std::string_view signature);
bool VerifyNotice(const PublicKey& notice_key, const fleet::NoticeDocument& notice,
                  std::string_view signature);

std::string Base64Encode(std::string_view bytes);
std::optional<std::string> Base64Decode(std::string_view text);  // nullopt when malformed

// Creates `path` with mode 0600 (O_CREAT|O_EXCL) and writes the key to it. Throws KeyFileError when
// the file exists (it is never overwritten) or cannot be written (nothing is left behind then).
void WriteSecretKeyFile(const std::string& path, const SecretKey& key);

// Reads a secret key file. Throws KeyFileError when it is missing or unreadable, not a regular
// file, accessible by group or others (mode & 077), or malformed (wrong header, bad base64, wrong
// length, or a public half that does not belong to the secret half).
SecretKey LoadSecretKeyFile(const std::string& path);

// Public key files: created with mode 0644, never overwritten; any mode is accepted on load.
void WritePublicKeyFile(const std::string& path, const PublicKey& key);
PublicKey LoadPublicKeyFile(const std::string& path);

// The keys a device trusts for one purpose (release keys or notice keys), by key id. Several at
// once make rotation possible: trust the new key beside the old, move signers to the new one,
// then remove the old.
class TrustedKeys {
 public:
  enum class Result { kOk, kUnknownKey, kBadSignature };

  // Adds `key`; adding a key already present is a no-op. Throws std::invalid_argument when a
  // different key has the same key id (a 64-bit collision: never by chance).
  void Add(const PublicKey& key);
  // Whether a key with this id was trusted (and now is not).
  bool Remove(std::string_view key_id);
  bool Contains(std::string_view key_id) const;
  std::vector<std::string> KeyIds() const;  // sorted
  size_t size() const { return keys_.size(); }

  // kUnknownKey when no trusted key has `key_id`; kBadSignature when `signature` (base64) is
  // malformed or not that key's signature of `message`.
  Result Verify(std::string_view key_id, std::string_view message,
                std::string_view signature) const;
  // The same over the canonical bytes; a notice is checked with its own key_id.
  Result VerifyRelease(std::string_view key_id, const fleet::ReleaseManifest& manifest,
                       std::string_view signature) const;
  Result VerifyNotice(const fleet::NoticeDocument& notice, std::string_view signature) const;

 private:
  std::map<std::string, PublicKey, std::less<>> keys_;
};

std::string_view ToString(TrustedKeys::Result result);  // "ok", "unknown key id", "bad signature"

}  // namespace signing
