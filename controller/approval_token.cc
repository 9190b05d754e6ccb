#include "controller/approval_token.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <stdexcept>
#include <vector>

namespace controller {
namespace {

std::string Hex(const unsigned char* data, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[data[i] >> 4];
    out[2 * i + 1] = kDigits[data[i] & 15];
  }
  return out;
}

std::string Mac(const std::string& secret, const std::string& message) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &length);
  return Hex(mac, length);
}

std::string Message(const std::string& rollout_id, int wave, int64_t expires_at,
                    const std::string& nonce) {
  return rollout_id + "/" + std::to_string(wave) + "/" + std::to_string(expires_at) + "/" + nonce;
}

}  // namespace

std::string RandomHex(size_t bytes) {
  std::vector<unsigned char> buffer(bytes);
  if (RAND_bytes(buffer.data(), static_cast<int>(bytes)) != 1)
    throw std::runtime_error("the system's random number generator failed");
  return Hex(buffer.data(), bytes);
}

std::string HashToken(const std::string& token) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(token.data(), token.size(), digest, &length, EVP_sha256(), nullptr);
  return Hex(digest, length);
}

IssuedToken IssueApprovalToken(const std::string& secret, const std::string& rollout_id, int wave,
                               int64_t expires_at) {
  if (secret.empty()) throw std::invalid_argument("approval tokens need a non-empty secret");
  IssuedToken t;
  t.nonce = RandomHex(16);
  t.token = ApprovalToken(secret, rollout_id, wave, expires_at, t.nonce);
  t.hash = HashToken(t.token);
  return t;
}

std::string ApprovalToken(const std::string& secret, const std::string& rollout_id, int wave,
                          int64_t expires_at, const std::string& nonce) {
  return nonce + "." + std::to_string(expires_at) + "." +
         Mac(secret, Message(rollout_id, wave, expires_at, nonce));
}

bool VerifyApprovalToken(const std::string& secret, const std::string& token,
                         const std::string& rollout_id, int wave, int64_t now) {
  const size_t a = token.find('.');
  const size_t b = a == std::string::npos ? a : token.find('.', a + 1);
  if (b == std::string::npos || secret.empty()) return false;
  const std::string nonce = token.substr(0, a);
  const std::string expires = token.substr(a + 1, b - a - 1);
  const std::string mac = token.substr(b + 1);
  if (expires.empty() || expires.size() > 18 ||
      expires.find_first_not_of("0123456789") != std::string::npos)
    return false;
  const int64_t expires_at = std::stoll(expires);
  if (std::to_string(expires_at) != expires) return false;  // one spelling per token
  const std::string expected = Mac(secret, Message(rollout_id, wave, expires_at, nonce));
  if (mac.size() != expected.size() || CRYPTO_memcmp(mac.data(), expected.data(), mac.size()) != 0)
    return false;
  return now < expires_at;
}

}  // namespace controller
