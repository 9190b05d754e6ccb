#include "signing/signing.h"

#include <sodium.h>

#include <cstring>
#include <utility>

namespace signing {
namespace {

static_assert(kPublicKeyBytes == crypto_sign_PUBLICKEYBYTES);
static_assert(kSecretKeyBytes == crypto_sign_SECRETKEYBYTES);
static_assert(kSignatureBytes == crypto_sign_BYTES);

constexpr std::string_view kSecretHeader = "fleetwave-ed25519-secret-v1 ";
constexpr std::string_view kPublicHeader = "fleetwave-ed25519-public-v1 ";
// A key file is one short line; anything much longer is not one, and is not read whole.
constexpr size_t kMaxKeyFileBytes = 4096;

// sodium_init() before the first libsodium call. It is idempotent and thread-safe, but the
// static makes it once and turns its failure (no usable random source) into an exception.
void EnsureSodium() {
  static const bool ok = sodium_init() >= 0;
  if (!ok) throw std::runtime_error("libsodium could not be initialised (sodium_init failed)");
}

const unsigned char* Bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

// Wipes a std::string that held secret material before it is freed.
struct WipeOnExit {
  std::string& text;
  ~WipeOnExit() { sodium_memzero(text.data(), text.size()); }
};

// The base64 payload of a one-line key file with `header`, or nullopt when the file is not one.
std::optional<std::string> Payload(std::string_view content, std::string_view header) {
  if (!content.starts_with(header)) return std::nullopt;
  content.remove_prefix(header.size());
  if (content.ends_with('\n')) content.remove_suffix(1);
  if (content.find_first_of("\r\n \t") != std::string_view::npos) return std::nullopt;
  return Base64Decode(content);
}

std::string Malformed(const std::string& path, bool secret) {
  return "key file " + path + " is not a fleetwave Ed25519 " + (secret ? "secret" : "public") +
         " key file (expected one line '" + std::string(secret ? kSecretHeader : kPublicHeader) +
         "<base64>')";
}

}  // namespace

// ---- PublicKey -------------------------------------------------------------------------------

PublicKey::PublicKey(std::string_view bytes) {
  if (bytes.size() != kPublicKeyBytes)
    throw std::invalid_argument("an Ed25519 public key is 32 bytes, got " +
                                std::to_string(bytes.size()));
  std::memcpy(bytes_.data(), bytes.data(), kPublicKeyBytes);
}

std::optional<PublicKey> PublicKey::FromBase64(std::string_view text) {
  auto bytes = Base64Decode(text);
  if (!bytes || bytes->size() != kPublicKeyBytes) return std::nullopt;
  return PublicKey(*bytes);
}

std::string PublicKey::ToBase64() const {
  return Base64Encode(
      std::string_view(reinterpret_cast<const char*>(bytes_.data()), kPublicKeyBytes));
}

std::string PublicKey::KeyId() const {
  EnsureSodium();
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, bytes_.data(), bytes_.size());
  char hex[2 * 8 + 1];
  sodium_bin2hex(hex, sizeof hex, digest, 8);
  return hex;
}

// ---- SecretKey -------------------------------------------------------------------------------

SecretKey::SecretKey(SecretKey&& other) noexcept : bytes_(other.bytes_) {
  sodium_memzero(other.bytes_.data(), other.bytes_.size());
}

SecretKey& SecretKey::operator=(SecretKey&& other) noexcept {
  if (this != &other) {
    bytes_ = other.bytes_;
    sodium_memzero(other.bytes_.data(), other.bytes_.size());
  }
  return *this;
}

SecretKey::~SecretKey() { sodium_memzero(bytes_.data(), bytes_.size()); }

PublicKey SecretKey::public_key() const {
  EnsureSodium();
  unsigned char pk[kPublicKeyBytes];
  crypto_sign_ed25519_sk_to_pk(pk, bytes_.data());
  return PublicKey(std::string_view(reinterpret_cast<const char*>(pk), sizeof pk));
}

KeyPair GenerateKeyPair() {
  EnsureSodium();
  unsigned char pk[kPublicKeyBytes];
  SecretKey sk;
  crypto_sign_keypair(pk, sk.bytes_.data());
  return KeyPair{PublicKey(std::string_view(reinterpret_cast<const char*>(pk), sizeof pk)),
                 std::move(sk)};
}

// ---- Signatures ------------------------------------------------------------------------------

std::string Sign(const SecretKey& key, std::string_view message) {
  EnsureSodium();
  unsigned char signature[kSignatureBytes];
  crypto_sign_detached(signature, nullptr, Bytes(message), message.size(), key.bytes_.data());
  return Base64Encode(std::string_view(reinterpret_cast<const char*>(signature), sizeof signature));
}

bool Verify(const PublicKey& key, std::string_view message, std::string_view signature) {
  EnsureSodium();
  auto raw = Base64Decode(signature);
  if (!raw || raw->size() != kSignatureBytes) return false;
  return crypto_sign_verify_detached(Bytes(*raw), Bytes(message), message.size(),
                                     key.bytes().data()) == 0;
}

std::string SignRelease(const SecretKey& release_key, const fleet::ReleaseManifest& manifest) {
  return Sign(release_key, fleet::CanonicalBytes(manifest));
}

std::string SignNotice(const SecretKey& notice_key, const fleet::NoticeDocument& notice) {
  return Sign(notice_key, fleet::CanonicalBytes(notice));
}

bool VerifyRelease(const PublicKey& release_key, const fleet::ReleaseManifest& manifest,
                   std::string_view signature) {
  return Verify(release_key, fleet::CanonicalBytes(manifest), signature);
}

bool VerifyNotice(const PublicKey& notice_key, const fleet::NoticeDocument& notice,
                  std::string_view signature) {
  return Verify(notice_key, fleet::CanonicalBytes(notice), signature);
}

// ---- Base64 ----------------------------------------------------------------------------------

std::string Base64Encode(std::string_view bytes) {
  EnsureSodium();
  const size_t length = sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_ORIGINAL);
  std::string text(length, '\0');  // includes the terminating NUL
  sodium_bin2base64(text.data(), length, Bytes(bytes), bytes.size(),
                    sodium_base64_VARIANT_ORIGINAL);
  text.resize(length - 1);
  return text;
}

std::optional<std::string> Base64Decode(std::string_view text) {
  EnsureSodium();
  std::string bytes(text.size() / 4 * 3 + 3, '\0');
  size_t length = 0;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(bytes.data()), bytes.size(), text.data(),
                        text.size(), nullptr, &length, nullptr,
                        sodium_base64_VARIANT_ORIGINAL) != 0) {
    sodium_memzero(bytes.data(), bytes.size());
    return std::nullopt;
  }
  bytes.resize(length);
  // One text per value: refuse encodings with stray padding bits, so a signed text and its bytes
  // correspond one to one. (The bytes may be a secret key: both copies are wiped on refusal.)
  std::string again = Base64Encode(bytes);
  const bool canonical = again == text;
  sodium_memzero(again.data(), again.size());
  if (!canonical) {
    sodium_memzero(bytes.data(), bytes.size());
    return std::nullopt;
  }
  return bytes;
}

// ---- Key files -------------------------------------------------------------------------------

void WriteSecretKeyFile(const std::string& path, const SecretKey& key) {
  std::string payload = Base64Encode(
      std::string_view(reinterpret_cast<const char*>(key.bytes_.data()), key.bytes_.size()));
  WipeOnExit wipe_payload{payload};
  std::string line;
  WipeOnExit wipe_line{line};
  line.reserve(kSecretHeader.size() + payload.size() + 1);  // no reallocation leaves copies behind
  line.append(kSecretHeader).append(payload).push_back('\n');
  CreateKeyFile(path, line, 0600);
}

SecretKey LoadSecretKeyFile(const std::string& path) {
  EnsureSodium();
  std::string content = ReadKeyFile(path, /*secret=*/true, kMaxKeyFileBytes);
  WipeOnExit wipe_content{content};
  std::optional<std::string> raw = Payload(content, kSecretHeader);
  if (!raw) throw KeyFileError(Malformed(path, true));
  WipeOnExit wipe_raw{*raw};
  if (raw->size() != kSecretKeyBytes) throw KeyFileError(Malformed(path, true));
  SecretKey key;
  std::memcpy(key.bytes_.data(), raw->data(), kSecretKeyBytes);
  // libsodium's secret key is seed || public key: the halves must belong together, or the file
  // is corrupt (and signatures made with it would not verify under its key id).
  unsigned char pk[kPublicKeyBytes];
  SecretKey derived;
  crypto_sign_seed_keypair(pk, derived.bytes_.data(), key.bytes_.data());
  if (sodium_memcmp(derived.bytes_.data(), key.bytes_.data(), kSecretKeyBytes) != 0)
    throw KeyFileError("key file " + path +
                       " is corrupt: its public half does not belong to its secret half");
  return key;
}

void WritePublicKeyFile(const std::string& path, const PublicKey& key) {
  CreateKeyFile(path, std::string(kPublicHeader) + key.ToBase64() + "\n", 0644);
}

PublicKey LoadPublicKeyFile(const std::string& path) {
  std::string content = ReadKeyFile(path, /*secret=*/false, kMaxKeyFileBytes);
  std::optional<std::string> raw = Payload(content, kPublicHeader);
  if (!raw || raw->size() != kPublicKeyBytes) throw KeyFileError(Malformed(path, false));
  return PublicKey(*raw);
}

// ---- TrustedKeys -----------------------------------------------------------------------------

void TrustedKeys::Add(const PublicKey& key) {
  const std::string id = key.KeyId();
  auto [it, inserted] = keys_.emplace(id, key);
  if (!inserted && !(it->second == key))
    throw std::invalid_argument("two different public keys share key id " + id);
}

bool TrustedKeys::Remove(std::string_view key_id) {
  auto it = keys_.find(key_id);
  if (it == keys_.end()) return false;
  keys_.erase(it);
  return true;
}

bool TrustedKeys::Contains(std::string_view key_id) const {
  return keys_.find(key_id) != keys_.end();
}

std::vector<std::string> TrustedKeys::KeyIds() const {
  std::vector<std::string> ids;
  for (const auto& [id, key] : keys_) ids.push_back(id);
  return ids;
}

TrustedKeys::Result TrustedKeys::Verify(std::string_view key_id, std::string_view message,
                                        std::string_view signature) const {
  auto it = keys_.find(key_id);
  if (it == keys_.end()) return Result::kUnknownKey;
  return signing::Verify(it->second, message, signature) ? Result::kOk : Result::kBadSignature;
}

TrustedKeys::Result TrustedKeys::VerifyRelease(std::string_view key_id,
                                               const fleet::ReleaseManifest& manifest,
                                               std::string_view signature) const {
  return Verify(key_id, fleet::CanonicalBytes(manifest), signature);
}

TrustedKeys::Result TrustedKeys::VerifyNotice(const fleet::NoticeDocument& notice,
                                              std::string_view signature) const {
  return Verify(notice.key_id, fleet::CanonicalBytes(notice), signature);
}

std::string_view ToString(TrustedKeys::Result result) {
  switch (result) {
    case TrustedKeys::Result::kOk:
      return "ok";
    case TrustedKeys::Result::kUnknownKey:
      return "unknown key id";
    case TrustedKeys::Result::kBadSignature:
      return "bad signature";
  }
  return "unknown";
}

}  // namespace signing
