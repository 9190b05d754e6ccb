#include "signing/signing.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace signing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

fleet::ReleaseManifest Manifest() {
  return {"sensor-a", "2.0.0", 42, "https://fw.example/a.bin", std::string(64, 'a'), 1048576};
}

fleet::NoticeDocument Notice(const KeyPair& release, const KeyPair& notice) {
  fleet::NoticeDocument n;
  n.manifest = Manifest();
  n.manifest_key_id = release.public_key.KeyId();
  n.manifest_signature = SignRelease(release.secret_key, n.manifest);
  n.rollout_id = "fw-sensor-a-2.0.0-c1";
  n.wave = 0;
  n.issued_at = 1700000000;
  n.expires_at = 1700003600;
  n.key_id = notice.public_key.KeyId();
  return n;
}

std::string FlipBit(std::string base64, size_t byte, int bit) {
  std::string raw = Base64Decode(base64).value();
  raw[byte] = static_cast<char>(raw[byte] ^ (1 << bit));
  return Base64Encode(raw);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A fresh directory per test, removed after it.
class KeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "fleetwave-signing-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Path(const char* name) const { return (dir_ / name).string(); }

  std::filesystem::path dir_;
};

mode_t ModeOf(const std::string& path) {
  struct stat st;
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  return st.st_mode & 07777;
}

// Expects LoadSecretKeyFile(path) to throw KeyFileError whose message has every fragment.
void ExpectRefused(const std::string& path, std::vector<std::string> fragments) {
  try {
    LoadSecretKeyFile(path);
    ADD_FAILURE() << path << " was accepted";
  } catch (const KeyFileError& e) {
    for (const auto& fragment : fragments) EXPECT_THAT(e.what(), HasSubstr(fragment));
  }
}

TEST(Signing, SignAndVerifyRoundTrip) {
  KeyPair key = GenerateKeyPair();
  const std::string signature = Sign(key.secret_key, "hello");
  EXPECT_EQ(signature.size(), 88u);  // base64 of 64 bytes
  EXPECT_TRUE(Verify(key.public_key, "hello", signature));
  EXPECT_EQ(key.secret_key.public_key(), key.public_key);
  // Ed25519 is deterministic: the same key and message give the same signature.
  EXPECT_EQ(Sign(key.secret_key, "hello"), signature);
  EXPECT_TRUE(Verify(key.public_key, "", Sign(key.secret_key, "")));
}

TEST(Signing, AFlippedBitInTheMessageFails) {
  KeyPair key = GenerateKeyPair();
  const std::string message = fleet::CanonicalBytes(Manifest());
  const std::string signature = Sign(key.secret_key, message);
  for (size_t i = 0; i < message.size(); i += 7) {
    std::string changed = message;
    changed[i] = static_cast<char>(changed[i] ^ 1);
    EXPECT_FALSE(Verify(key.public_key, changed, signature)) << "byte " << i;
  }
  EXPECT_FALSE(Verify(key.public_key, message + "x", signature));
  EXPECT_FALSE(Verify(key.public_key, message.substr(1), signature));
}

TEST(Signing, AFlippedBitInTheSignatureFails) {
  KeyPair key = GenerateKeyPair();
  const std::string signature = Sign(key.secret_key, "hello");
  for (size_t byte = 0; byte < kSignatureBytes; ++byte)
    for (int bit = 0; bit < 8; bit += 3)
      EXPECT_FALSE(Verify(key.public_key, "hello", FlipBit(signature, byte, bit)))
          << byte << "/" << bit;
}

TEST(Signing, MalformedSignaturesFail) {
  KeyPair key = GenerateKeyPair();
  const std::string signature = Sign(key.secret_key, "hello");
  EXPECT_FALSE(Verify(key.public_key, "hello", ""));
  EXPECT_FALSE(Verify(key.public_key, "hello", "not base64!"));
  EXPECT_FALSE(Verify(key.public_key, "hello", signature.substr(0, 84)));
  EXPECT_FALSE(Verify(key.public_key, "hello", signature + "AAAA"));
  EXPECT_FALSE(Verify(key.public_key, "hello", signature + "\n"));
  std::string lower = signature;  // the same length, other bytes
  for (char& c : lower) c = static_cast<char>(std::tolower(c));
  if (lower != signature) {
    EXPECT_FALSE(Verify(key.public_key, "hello", lower));
  }
}

TEST(Signing, ASignatureByAnotherKeyFails) {
  KeyPair a = GenerateKeyPair();
  KeyPair b = GenerateKeyPair();
  EXPECT_NE(a.public_key, b.public_key);
  EXPECT_NE(a.public_key.KeyId(), b.public_key.KeyId());
  EXPECT_FALSE(Verify(a.public_key, "hello", Sign(b.secret_key, "hello")));
}

TEST(Signing, KeyIdIsTheFirstEightBytesOfSha256InHex) {
  // The public key of RFC 8032's first test vector, and its SHA-256 (computed with sha256sum).
  const std::string pk_hex = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
  std::string pk;
  for (size_t i = 0; i < pk_hex.size(); i += 2)
    pk.push_back(static_cast<char>(std::stoi(pk_hex.substr(i, 2), nullptr, 16)));
  PublicKey key(pk);
  EXPECT_EQ(key.KeyId(), "21fe31dfa154a261");
  EXPECT_EQ(key.ToBase64(), "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
  EXPECT_EQ(PublicKey::FromBase64(key.ToBase64()), key);
  EXPECT_FALSE(PublicKey::FromBase64("AAAA"));
  EXPECT_THROW(PublicKey("short"), std::invalid_argument);
}

TEST(Signing, Rfc8032TestVector1Verifies) {
  // RFC 8032 §7.1 TEST 1: the empty message.
  const std::string sig_hex =
      "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9"
      "b4"
      "6bd25bf5f0595bbe24655141438e7a100b";
  std::string sig;
  for (size_t i = 0; i < sig_hex.size(); i += 2)
    sig.push_back(static_cast<char>(std::stoi(sig_hex.substr(i, 2), nullptr, 16)));
  auto key = PublicKey::FromBase64("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
  ASSERT_TRUE(key);
  EXPECT_TRUE(Verify(*key, "", Base64Encode(sig)));
  EXPECT_FALSE(Verify(*key, "x", Base64Encode(sig)));
}

TEST(Signing, Base64IsStrict) {
  EXPECT_EQ(Base64Encode("ab"), "YWI=");
  EXPECT_EQ(Base64Decode("YWI="), "ab");
  EXPECT_EQ(Base64Decode(""), "");
  EXPECT_FALSE(Base64Decode("YWI"));     // padding is required
  EXPECT_FALSE(Base64Decode("YWJ="));    // stray bits: not the one text of "ab"
  EXPECT_FALSE(Base64Decode("YW I="));   // no whitespace
  EXPECT_FALSE(Base64Decode("YWI=\n"));  // no newline
  EXPECT_FALSE(Base64Decode("YW-="));    // not the URL-safe alphabet
}

TEST(Signing, SecretKeysWipeWhenMovedFrom) {
  KeyPair key = GenerateKeyPair();
  const PublicKey pk = key.public_key;
  SecretKey moved = std::move(key.secret_key);
  EXPECT_EQ(moved.public_key(), pk);
  // The moved-from key holds zeros now: its public half is all zero.
  EXPECT_EQ(key.secret_key.public_key(), PublicKey(std::string(kPublicKeyBytes, '\0')));  // NOLINT
}

TEST(Signing, ReleaseSignatureDoesNotVerifyAsNoticeSignature) {
  KeyPair key = GenerateKeyPair();  // even one key for both kinds
  fleet::NoticeDocument notice = Notice(key, key);
  EXPECT_TRUE(VerifyRelease(key.public_key, notice.manifest, notice.manifest_signature));
  EXPECT_FALSE(VerifyNotice(key.public_key, notice, notice.manifest_signature));
  const std::string notice_signature = SignNotice(key.secret_key, notice);
  EXPECT_TRUE(VerifyNotice(key.public_key, notice, notice_signature));
  EXPECT_FALSE(VerifyRelease(key.public_key, notice.manifest, notice_signature));
  // A signature over the bare fields (no domain line) verifies as neither.
  const std::string bare =
      fleet::CanonicalBytes(notice.manifest).substr(std::string_view(fleet::kReleaseDomain).size());
  const std::string bare_signature = Sign(key.secret_key, bare);
  EXPECT_FALSE(VerifyRelease(key.public_key, notice.manifest, bare_signature));
  EXPECT_FALSE(VerifyNotice(key.public_key, notice, bare_signature));
}

TEST(Signing, ANoticeSignatureCoversEveryField) {
  KeyPair release = GenerateKeyPair();
  KeyPair notice_key = GenerateKeyPair();
  const fleet::NoticeDocument notice = Notice(release, notice_key);
  const std::string signature = SignNotice(notice_key.secret_key, notice);
  ASSERT_TRUE(VerifyNotice(notice_key.public_key, notice, signature));
  fleet::NoticeDocument changed = notice;
  changed.manifest.version = "1.0.0";
  EXPECT_FALSE(VerifyNotice(notice_key.public_key, changed, signature));
  changed = notice;
  changed.expires_at += 3600;
  EXPECT_FALSE(VerifyNotice(notice_key.public_key, changed, signature));
  changed = notice;
  changed.manifest_signature = SignRelease(notice_key.secret_key, notice.manifest);
  EXPECT_FALSE(VerifyNotice(notice_key.public_key, changed, signature));
}

TEST(TrustedKeys, VerifiesByKeyId) {
  KeyPair release = GenerateKeyPair();
  KeyPair notice_key = GenerateKeyPair();
  TrustedKeys notice_keys;
  notice_keys.Add(notice_key.public_key);
  const fleet::NoticeDocument notice = Notice(release, notice_key);
  const std::string signature = SignNotice(notice_key.secret_key, notice);
  EXPECT_EQ(notice_keys.VerifyNotice(notice, signature), TrustedKeys::Result::kOk);
  EXPECT_EQ(notice_keys.VerifyNotice(notice, FlipBit(signature, 0, 0)),
            TrustedKeys::Result::kBadSignature);
  EXPECT_EQ(notice_keys.VerifyNotice(notice, ""), TrustedKeys::Result::kBadSignature);
  EXPECT_EQ(notice_keys.Verify(notice_key.public_key.KeyId(), "other", signature),
            TrustedKeys::Result::kBadSignature);
  EXPECT_EQ(ToString(TrustedKeys::Result::kOk), "ok");
  EXPECT_EQ(ToString(TrustedKeys::Result::kBadSignature), "bad signature");
  EXPECT_EQ(ToString(TrustedKeys::Result::kUnknownKey), "unknown key id");
}

TEST(TrustedKeys, UnknownKeyId) {
  KeyPair trusted = GenerateKeyPair();
  KeyPair stranger = GenerateKeyPair();
  TrustedKeys keys;
  keys.Add(trusted.public_key);
  const std::string signature = Sign(stranger.secret_key, "m");
  EXPECT_EQ(keys.Verify(stranger.public_key.KeyId(), "m", signature),
            TrustedKeys::Result::kUnknownKey);
  // Claiming a trusted key's id does not help a stranger's signature.
  EXPECT_EQ(keys.Verify(trusted.public_key.KeyId(), "m", signature),
            TrustedKeys::Result::kBadSignature);
  EXPECT_EQ(keys.Verify("", "m", signature), TrustedKeys::Result::kUnknownKey);
  EXPECT_EQ(TrustedKeys().Verify(trusted.public_key.KeyId(), "m", Sign(trusted.secret_key, "m")),
            TrustedKeys::Result::kUnknownKey);
}

TEST(TrustedKeys, Rotation) {
  KeyPair old_key = GenerateKeyPair();
  KeyPair new_key = GenerateKeyPair();
  const fleet::ReleaseManifest manifest = Manifest();
  const std::string old_signature = SignRelease(old_key.secret_key, manifest);
  const std::string new_signature = SignRelease(new_key.secret_key, manifest);

  TrustedKeys keys;
  keys.Add(old_key.public_key);
  keys.Add(new_key.public_key);
  keys.Add(new_key.public_key);  // again: a no-op
  EXPECT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys.VerifyRelease(old_key.public_key.KeyId(), manifest, old_signature),
            TrustedKeys::Result::kOk);
  EXPECT_EQ(keys.VerifyRelease(new_key.public_key.KeyId(), manifest, new_signature),
            TrustedKeys::Result::kOk);
  // Each signature verifies only under its own key id.
  EXPECT_EQ(keys.VerifyRelease(new_key.public_key.KeyId(), manifest, old_signature),
            TrustedKeys::Result::kBadSignature);

  EXPECT_TRUE(keys.Remove(old_key.public_key.KeyId()));
  EXPECT_FALSE(keys.Remove(old_key.public_key.KeyId()));
  EXPECT_FALSE(keys.Contains(old_key.public_key.KeyId()));
  EXPECT_EQ(keys.KeyIds(), std::vector<std::string>{new_key.public_key.KeyId()});
  EXPECT_EQ(keys.VerifyRelease(old_key.public_key.KeyId(), manifest, old_signature),
            TrustedKeys::Result::kUnknownKey);
  EXPECT_EQ(keys.VerifyRelease(new_key.public_key.KeyId(), manifest, new_signature),
            TrustedKeys::Result::kOk);
}

TEST(TrustedKeys, ANoticeKeyCannotVouchForAnImage) {
  // The device's two sets: a manifest signed only by the notice key is not a release signature.
  KeyPair release = GenerateKeyPair();
  KeyPair notice_key = GenerateKeyPair();
  TrustedKeys release_keys, notice_keys;
  release_keys.Add(release.public_key);
  notice_keys.Add(notice_key.public_key);
  fleet::NoticeDocument forged = Notice(release, notice_key);
  forged.manifest.url = "https://evil.example/a.bin";
  forged.manifest_key_id = notice_key.public_key.KeyId();
  forged.manifest_signature = SignRelease(notice_key.secret_key, forged.manifest);
  const std::string signature = SignNotice(notice_key.secret_key, forged);
  EXPECT_EQ(notice_keys.VerifyNotice(forged, signature), TrustedKeys::Result::kOk);
  EXPECT_EQ(release_keys.VerifyRelease(forged.manifest_key_id, forged.manifest,
                                       forged.manifest_signature),
            TrustedKeys::Result::kUnknownKey);
  EXPECT_EQ(release_keys.VerifyRelease(release.public_key.KeyId(), forged.manifest,
                                       forged.manifest_signature),
            TrustedKeys::Result::kBadSignature);
}

TEST_F(KeyFileTest, SecretKeyFileRoundTripWithMode0600) {
  KeyPair key = GenerateKeyPair();
  const std::string path = Path("release.key");
  WriteSecretKeyFile(path, key.secret_key);
  EXPECT_EQ(ModeOf(path), 0600u);
  const std::string content = ReadAll(path);
  EXPECT_TRUE(content.starts_with("fleetwave-ed25519-secret-v1 "));
  EXPECT_TRUE(content.ends_with("\n"));
  EXPECT_EQ(content.size(), 28u + 88u + 1u);
  SecretKey loaded = LoadSecretKeyFile(path);
  EXPECT_EQ(loaded.public_key(), key.public_key);
  EXPECT_TRUE(Verify(key.public_key, "m", Sign(loaded, "m")));
}

TEST_F(KeyFileTest, GroupOrWorldReadableSecretKeyFileIsRefused) {
  KeyPair key = GenerateKeyPair();
  const std::string path = Path("release.key");
  WriteSecretKeyFile(path, key.secret_key);
  const std::string secret_line = ReadAll(path);
  const std::string payload = secret_line.substr(28, 88);
  for (mode_t mode : {0644, 0640, 0604, 0620, 0602, 0660}) {
    ASSERT_EQ(::chmod(path.c_str(), mode), 0);
    try {
      LoadSecretKeyFile(path);
      ADD_FAILURE() << "mode " << std::oct << mode << " was accepted";
    } catch (const KeyFileError& e) {
      EXPECT_THAT(e.what(), HasSubstr(path));
      EXPECT_THAT(e.what(), HasSubstr("chmod 600 " + path));
      EXPECT_THAT(e.what(), HasSubstr("group or others"));
      EXPECT_THAT(e.what(), Not(HasSubstr(payload)));
      EXPECT_THAT(e.what(), Not(HasSubstr(payload.substr(0, 16))));
    }
  }
  {
    ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
    ExpectRefused(path, {"has mode 0644"});
  }
  ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
  EXPECT_EQ(LoadSecretKeyFile(path).public_key(), key.public_key);
  ASSERT_EQ(::chmod(path.c_str(), 0400), 0);  // owner read-only is fine too
  EXPECT_EQ(LoadSecretKeyFile(path).public_key(), key.public_key);
}

TEST_F(KeyFileTest, AnExistingFileIsNotOverwritten) {
  KeyPair first = GenerateKeyPair();
  KeyPair second = GenerateKeyPair();
  const std::string path = Path("release.key");
  WriteSecretKeyFile(path, first.secret_key);
  const std::string before = ReadAll(path);
  try {
    WriteSecretKeyFile(path, second.secret_key);
    ADD_FAILURE() << "overwrote " << path;
  } catch (const KeyFileError& e) {
    EXPECT_THAT(e.what(), HasSubstr(path));
    EXPECT_THAT(e.what(), HasSubstr("already exists"));
  }
  EXPECT_EQ(ReadAll(path), before);
  EXPECT_EQ(LoadSecretKeyFile(path).public_key(), first.public_key);

  // Nor is any other file in the way (a symlink to one included).
  const std::string other = Path("notes.txt");
  std::ofstream(other) << "keep me\n";
  EXPECT_THROW(WriteSecretKeyFile(other, second.secret_key), KeyFileError);
  EXPECT_EQ(ReadAll(other), "keep me\n");
  const std::string link = Path("link.key");
  std::filesystem::create_symlink(other, link);
  EXPECT_THROW(WriteSecretKeyFile(link, second.secret_key), KeyFileError);
  EXPECT_EQ(ReadAll(other), "keep me\n");
}

TEST_F(KeyFileTest, TheModeIs0600WhateverTheUmask) {
  const mode_t previous = ::umask(0);
  KeyPair key = GenerateKeyPair();
  const std::string path = Path("release.key");
  WriteSecretKeyFile(path, key.secret_key);
  ::umask(previous);
  EXPECT_EQ(ModeOf(path), 0600u);
}

TEST_F(KeyFileTest, MalformedSecretKeyFilesAreRefused) {
  KeyPair key = GenerateKeyPair();
  WriteSecretKeyFile(Path("good.key"), key.secret_key);
  const std::string good = ReadAll(Path("good.key"));
  const std::string payload = good.substr(28, 88);
  std::string raw = Base64Decode(payload).value();
  std::string mismatched = raw;  // the public half of another key
  const std::string other_pk(
      reinterpret_cast<const char*>(GenerateKeyPair().public_key.bytes().data()), kPublicKeyBytes);
  mismatched.replace(32, 32, other_pk);

  const std::vector<std::pair<const char*, std::string>> cases = {
      {"empty", ""},
      {"no header", payload + "\n"},
      {"wrong header", "fleetwave-ed25519-secret-v2 " + payload + "\n"},
      {"public key file", "fleetwave-ed25519-public-v1 " + key.public_key.ToBase64() + "\n"},
      {"bad base64", "fleetwave-ed25519-secret-v1 " + payload.substr(0, 87) + "!\n"},
      {"short", "fleetwave-ed25519-secret-v1 " + Base64Encode(raw.substr(0, 32)) + "\n"},
      {"two lines", good + good},
      {"trailing space", "fleetwave-ed25519-secret-v1 " + payload + " \n"},
      {"CRLF", "fleetwave-ed25519-secret-v1 " + payload + "\r\n"},
      {"halves of two keys", "fleetwave-ed25519-secret-v1 " + Base64Encode(mismatched) + "\n"},
      {"huge", std::string(10000, 'A')},
  };
  int n = 0;
  for (const auto& [name, content] : cases) {
    const std::string path = Path(("bad" + std::to_string(n++) + ".key").c_str());
    {
      std::ofstream out(path, std::ios::binary);
      out << content;
    }
    ASSERT_EQ(::chmod(path.c_str(), 0600), 0);
    try {
      LoadSecretKeyFile(path);
      ADD_FAILURE() << name << " was accepted";
    } catch (const KeyFileError& e) {
      EXPECT_THAT(e.what(), HasSubstr(path)) << name;
      EXPECT_THAT(e.what(), Not(HasSubstr(payload.substr(0, 16)))) << name;
    }
  }
  // The file as written, without its final newline, is still the key.
  const std::string no_newline = Path("no-newline.key");
  {
    std::ofstream out(no_newline, std::ios::binary);
    out << good.substr(0, good.size() - 1);
  }
  ASSERT_EQ(::chmod(no_newline.c_str(), 0600), 0);
  EXPECT_EQ(LoadSecretKeyFile(no_newline).public_key(), key.public_key);
  ExpectRefused(Path("bad0.key"), {"not a fleetwave Ed25519 secret key file"});
  ExpectRefused(Path("bad9.key"), {"corrupt"});
}

TEST_F(KeyFileTest, MissingAndNonRegularFilesAreRefused) {
  ExpectRefused(Path("missing.key"), {Path("missing.key"), "No such file"});
  ExpectRefused(dir_.string(), {dir_.string(), "not a regular file"});
  const std::string fifo = Path("fifo.key");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  ExpectRefused(fifo, {fifo, "not a regular file"});  // and does not hang
}

TEST_F(KeyFileTest, PublicKeyFiles) {
  KeyPair key = GenerateKeyPair();
  const std::string path = Path("release.pub");
  WritePublicKeyFile(path, key.public_key);
  EXPECT_EQ(ReadAll(path), "fleetwave-ed25519-public-v1 " + key.public_key.ToBase64() + "\n");
  EXPECT_EQ(ModeOf(path), 0644u);
  EXPECT_EQ(LoadPublicKeyFile(path), key.public_key);
  ASSERT_EQ(::chmod(path.c_str(), 0666), 0);  // world-readable (even writable) is allowed
  EXPECT_EQ(LoadPublicKeyFile(path), key.public_key);
  EXPECT_THROW(WritePublicKeyFile(path, GenerateKeyPair().public_key), KeyFileError);
  EXPECT_EQ(LoadPublicKeyFile(path), key.public_key);

  // A secret key file is not a public key file (and the refusal does not echo it).
  const std::string secret = Path("release.key");
  WriteSecretKeyFile(secret, key.secret_key);
  try {
    LoadPublicKeyFile(secret);
    ADD_FAILURE() << "a secret key file loaded as a public key";
  } catch (const KeyFileError& e) {
    EXPECT_THAT(e.what(), HasSubstr("not a fleetwave Ed25519 public key file"));
    EXPECT_THAT(e.what(), Not(HasSubstr(ReadAll(secret).substr(28, 16))));
  }
}

}  // namespace
}  // namespace signing
