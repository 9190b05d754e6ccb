// Approval tokens: what an approve or deny URL carries (controller/approval_token.h).
#include "controller/approval_token.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <limits>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace controller {
namespace {

const std::string kSecret = "0123456789abcdef0123456789abcdef";
const std::string kRollout = "fw-arm-2.0.0-c7";
constexpr int kWave = 3;
constexpr int64_t kExpires = 1'700'000'600;

bool IsLowerHex(const std::string& s) {
  return s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

std::vector<std::string> Split(const std::string& token) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t dot; (dot = token.find('.', start)) != std::string::npos; start = dot + 1)
    parts.push_back(token.substr(start, dot - start));
  parts.push_back(token.substr(start));
  return parts;
}

// Verifies at a time well before the expiry, for the issued rollout and wave.
bool Verify(const std::string& token) {
  return VerifyApprovalToken(kSecret, token, kRollout, kWave, kExpires - 100);
}

// A character that differs from `c` and is still a lowercase hex digit.
char OtherHex(char c) { return c == '0' ? '1' : '0'; }

TEST(ApprovalToken, HasTheDocumentedForm) {
  IssuedToken t = IssueApprovalToken(kSecret, kRollout, kWave, kExpires);
  std::vector<std::string> parts = Split(t.token);
  ASSERT_EQ(parts.size(), 3u) << t.token;
  EXPECT_EQ(parts[0].size(), 32u);  // 16 random bytes
  EXPECT_TRUE(IsLowerHex(parts[0])) << parts[0];
  EXPECT_EQ(parts[1], std::to_string(kExpires));
  EXPECT_EQ(parts[2].size(), 64u);  // HMAC-SHA256
  EXPECT_TRUE(IsLowerHex(parts[2])) << parts[2];
  // The MAC covers "<rollout>/<wave>/<expiresAt>/<nonce>".
  const std::string message =
      kRollout + "/" + std::to_string(kWave) + "/" + std::to_string(kExpires) + "/" + parts[0];
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), kSecret.data(), static_cast<int>(kSecret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), mac, &length);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += "0123456789abcdef"[mac[i] >> 4];
    hex += "0123456789abcdef"[mac[i] & 15];
  }
  EXPECT_EQ(parts[2], hex);
  EXPECT_EQ(t.hash, HashToken(t.token));
}

TEST(ApprovalToken, VerifiesForItsRolloutAndWaveUntilItExpires) {
  IssuedToken t = IssueApprovalToken(kSecret, kRollout, kWave, kExpires);
  EXPECT_TRUE(VerifyApprovalToken(kSecret, t.token, kRollout, kWave, 0));
  EXPECT_TRUE(VerifyApprovalToken(kSecret, t.token, kRollout, kWave, kExpires - 3600));
  EXPECT_TRUE(VerifyApprovalToken(kSecret, t.token, kRollout, kWave, kExpires - 1));
  // Expired from expiresAt on.
  EXPECT_FALSE(VerifyApprovalToken(kSecret, t.token, kRollout, kWave, kExpires));
  EXPECT_FALSE(VerifyApprovalToken(kSecret, t.token, kRollout, kWave, kExpires + 1));
  EXPECT_FALSE(
      VerifyApprovalToken(kSecret, t.token, kRollout, kWave, std::numeric_limits<int64_t>::max()));
}

TEST(ApprovalToken, FailsForAnotherRolloutWaveOrSecret) {
  IssuedToken t = IssueApprovalToken(kSecret, kRollout, kWave, kExpires);
  ASSERT_TRUE(Verify(t.token));
  const int64_t now = kExpires - 100;
  EXPECT_FALSE(VerifyApprovalToken(kSecret, t.token, "fw-arm-2.0.0-c8", kWave, now));
  EXPECT_FALSE(VerifyApprovalToken(kSecret, t.token, "fw-leg-2.0.0-c7", kWave, now));
  EXPECT_FALSE(VerifyApprovalToken(kSecret, t.token, "", kWave, now));
  EXPECT_FALSE(VerifyApprovalToken(kSecret, t.token, kRollout, kWave + 1, now));
  EXPECT_FALSE(VerifyApprovalToken(kSecret, t.token, kRollout, kWave - 1, now));
  EXPECT_FALSE(VerifyApprovalToken(kSecret, t.token, kRollout, -kWave, now));
  EXPECT_FALSE(VerifyApprovalToken(kSecret + "x", t.token, kRollout, kWave, now));
  EXPECT_FALSE(VerifyApprovalToken(RandomHex(32), t.token, kRollout, kWave, now));
  EXPECT_FALSE(VerifyApprovalToken("", t.token, kRollout, kWave, now));
  // A token of one wave does not approve the next one of the same rollout.
  IssuedToken next = IssueApprovalToken(kSecret, kRollout, kWave + 1, kExpires);
  EXPECT_FALSE(Verify(next.token));
}

TEST(ApprovalToken, TamperedTokensFailWithoutThrowing) {
  IssuedToken t = IssueApprovalToken(kSecret, kRollout, kWave, kExpires);
  ASSERT_TRUE(Verify(t.token));
  const std::string nonce = Split(t.token)[0];
  const std::string mac = Split(t.token)[2];
  const std::string expires = std::to_string(kExpires);

  std::string changed_nonce = t.token;
  changed_nonce[0] = OtherHex(changed_nonce[0]);
  std::string changed_mac = t.token;
  changed_mac.back() = OtherHex(changed_mac.back());
  std::string upper_mac = nonce + "." + expires + ".";
  for (char c : mac) upper_mac += static_cast<char>(c >= 'a' && c <= 'f' ? c - 'a' + 'A' : c);

  const std::vector<std::string> tampered = {
      changed_nonce,
      nonce + "x." + expires + "." + mac,                      // a longer nonce
      "." + expires + "." + mac,                               // no nonce
      nonce + "." + std::to_string(kExpires + 1) + "." + mac,  // a later expiry
      nonce + "." + std::to_string(kExpires - 1) + "." + mac,  // an earlier one
      nonce + ".9" + expires + "." + mac,                      // a prefixed digit
      nonce + "." + expires + "0." + mac,                      // an appended digit
      changed_mac,
      upper_mac,
      t.token.substr(0, t.token.size() - 1),  // truncated mac
      t.token + "0",                          // extended mac
      t.token + "." + mac,                    // a fourth part
      nonce + "." + expires + ".",            // no mac
      nonce + "." + expires,                  // one dot
      nonce + expires + mac,                  // no dots
      nonce + "." + expires + mac,            // the second dot missing
      nonce + expires + "." + mac,            // the first dot missing
      "",
      ".",
      "..",
      "...",
      nonce + ".." + mac,                  // empty expiry
      nonce + ".abc." + mac,               // non-digit expiry
      nonce + ".-" + expires + "." + mac,  // a sign
      nonce + ".+" + expires + "." + mac,
      nonce + ". " + expires + "." + mac,  // a space
      nonce + "." + expires + " ." + mac,
      nonce + ".1e9." + mac,
      nonce + ".0x10." + mac,
      nonce + ".99999999999999999999999999999999999999." + mac,  // beyond int64
      nonce + ".9223372036854775807." + mac,                     // int64 max
      nonce + ".9223372036854775808." + mac,                     // int64 max + 1
      nonce + ".999999999999999999." + mac,                      // 18 digits
      nonce + "." + std::string(10000, '9') + "." + mac,
      std::string(1 << 16, '.'),
      std::string("\0.1.2", 5),
  };
  for (const std::string& token : tampered) {
    bool verified = true;
    EXPECT_NO_THROW(verified = Verify(token)) << token;
    EXPECT_FALSE(verified) << token.substr(0, 200);
    // At time 0 nothing can be expired: only the MAC and the form decide.
    EXPECT_NO_THROW(verified = VerifyApprovalToken(kSecret, token, kRollout, kWave, 0));
    EXPECT_FALSE(verified) << token.substr(0, 200);
  }
  EXPECT_TRUE(Verify(t.token));  // the original still verifies
}

// Known bug (reported, not fixed here): the expiry is parsed as a number and the MAC recomputed
// over its canonical form, so leading zeros are accepted and the same approval has many token
// spellings (each with another HashToken). Enable once the expiry's digits are checked as issued.
TEST(ApprovalToken, LeadingZerosInTheExpiryAreRefused) {
  IssuedToken t = IssueApprovalToken(kSecret, kRollout, kWave, kExpires);
  std::vector<std::string> parts = Split(t.token);
  EXPECT_FALSE(Verify(parts[0] + ".0" + parts[1] + "." + parts[2]));
  EXPECT_FALSE(Verify(parts[0] + ".000" + parts[1] + "." + parts[2]));
}

TEST(ApprovalToken, EachIssueIsADifferentToken) {
  IssuedToken a = IssueApprovalToken(kSecret, kRollout, kWave, kExpires);
  IssuedToken b = IssueApprovalToken(kSecret, kRollout, kWave, kExpires);
  EXPECT_NE(a.token, b.token);
  EXPECT_NE(a.hash, b.hash);
  EXPECT_TRUE(Verify(a.token));
  EXPECT_TRUE(Verify(b.token));
}

TEST(ApprovalToken, IssuingWithAnEmptySecretThrows) {
  EXPECT_THROW(IssueApprovalToken("", kRollout, kWave, kExpires), std::invalid_argument);
}

TEST(HashToken, IsLowercaseHexSha256) {
  // FIPS 180-2 test vectors.
  EXPECT_EQ(HashToken(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(HashToken("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::set<std::string> hashes;
  for (int i = 0; i < 20; ++i) {
    IssuedToken t = IssueApprovalToken(kSecret, kRollout, kWave, kExpires);
    const std::string h = HashToken(t.token);
    EXPECT_EQ(h.size(), 64u);
    EXPECT_TRUE(IsLowerHex(h)) << h;
    EXPECT_EQ(h, t.hash);
    EXPECT_NE(h, t.token);
    hashes.insert(h);
  }
  EXPECT_EQ(hashes.size(), 20u);
  EXPECT_NE(HashToken("a"), HashToken("b"));
}

TEST(RandomHex, LengthAndUniqueness) {
  EXPECT_EQ(RandomHex(0), "");
  for (size_t bytes : {1u, 16u, 32u, 1000u}) {
    const std::string hex = RandomHex(bytes);
    EXPECT_EQ(hex.size(), 2 * bytes);
    EXPECT_TRUE(IsLowerHex(hex)) << hex;
  }
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(RandomHex(16));
  EXPECT_EQ(seen.size(), 1000u);
}

}  // namespace
}  // namespace controller
