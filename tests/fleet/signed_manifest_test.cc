#include "fleet/signed_manifest.h"

#include <functional>
#include <random>
#include <set>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace fleet {
namespace {

ReleaseManifest Sample() {
  ReleaseManifest m;
  m.model = "sensor-a";
  m.version = "2.0.0";
  m.counter = 42;
  m.url = "https://fw.example/sensor-a/2.0.0.bin";
  m.sha256 = std::string(64, 'a');
  m.size = 1048576;
  return m;
}

NoticeDocument SampleNotice() {
  NoticeDocument n;
  n.manifest = Sample();
  n.manifest_key_id = "0123456789abcdef";
  n.manifest_signature = "c2ln";
  n.rollout_id = "fw-sensor-a-2.0.0-c7";
  n.wave = 2;
  n.issued_at = 1700000000;
  n.expires_at = 1700086400;
  n.key_id = "fedcba9876543210";
  return n;
}

// Reads back what CanonicalBytes wrote: the proof that the encoding is injective (two inputs
// with the same bytes read back to the same fields, so they are the same input).
class Reader {
 public:
  explicit Reader(std::string_view bytes) : rest_(bytes) {}

  bool Domain(std::string_view domain) { return Take(domain); }

  std::optional<std::string> Field(std::string_view name) {
    if (!Take(name) || !Take(":")) return std::nullopt;
    const size_t colon = rest_.find(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    const std::string digits(rest_.substr(0, colon));
    if (digits.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    if (digits.size() > 1 && digits[0] == '0') return std::nullopt;
    const size_t length = std::stoul(digits);
    rest_.remove_prefix(colon + 1);
    if (rest_.size() < length + 1 || rest_[length] != '\n') return std::nullopt;
    std::string value(rest_.substr(0, length));
    rest_.remove_prefix(length + 1);
    return value;
  }

  std::optional<int64_t> Integer(std::string_view name) {
    auto text = Field(name);
    if (!text || text->empty()) return std::nullopt;
    const int64_t value = std::stoll(*text);
    if (std::to_string(value) != *text) return std::nullopt;  // only the canonical form
    return value;
  }

  bool AtEnd() const { return rest_.empty(); }

 private:
  bool Take(std::string_view prefix) {
    if (!rest_.starts_with(prefix)) return false;
    rest_.remove_prefix(prefix.size());
    return true;
  }
  std::string_view rest_;
};

std::optional<ReleaseManifest> ReadManifest(std::string_view bytes) {
  Reader r(bytes);
  if (!r.Domain(kReleaseDomain)) return std::nullopt;
  ReleaseManifest m;
  auto model = r.Field("model");
  auto version = r.Field("version");
  auto counter = r.Integer("counter");
  auto url = r.Field("url");
  auto sha256 = r.Field("sha256");
  auto size = r.Integer("size");
  if (!model || !version || !counter || !url || !sha256 || !size || !r.AtEnd()) return std::nullopt;
  return ReleaseManifest{*model, *version, *counter, *url, *sha256, *size};
}

std::optional<NoticeDocument> ReadNotice(std::string_view bytes) {
  Reader r(bytes);
  if (!r.Domain(kNoticeDomain)) return std::nullopt;
  auto manifest_bytes = r.Field("manifest");
  if (!manifest_bytes) return std::nullopt;
  auto manifest = ReadManifest(*manifest_bytes);
  auto manifest_key_id = r.Field("manifest_key_id");
  auto manifest_signature = r.Field("manifest_signature");
  auto rollout_id = r.Field("rollout_id");
  auto wave = r.Integer("wave");
  auto issued_at = r.Integer("issued_at");
  auto expires_at = r.Integer("expires_at");
  auto key_id = r.Field("key_id");
  if (!manifest || !manifest_key_id || !manifest_signature || !rollout_id || !wave || !issued_at ||
      !expires_at || !key_id || !r.AtEnd())
    return std::nullopt;
  return NoticeDocument{*manifest, *manifest_key_id, *manifest_signature, *rollout_id,
                        *wave,     *issued_at,       *expires_at,         *key_id};
}

bool Same(const ReleaseManifest& a, const ReleaseManifest& b) {
  return a.model == b.model && a.version == b.version && a.counter == b.counter && a.url == b.url &&
         a.sha256 == b.sha256 && a.size == b.size;
}

bool Same(const NoticeDocument& a, const NoticeDocument& b) {
  return Same(a.manifest, b.manifest) && a.manifest_key_id == b.manifest_key_id &&
         a.manifest_signature == b.manifest_signature && a.rollout_id == b.rollout_id &&
         a.wave == b.wave && a.issued_at == b.issued_at && a.expires_at == b.expires_at &&
         a.key_id == b.key_id;
}

TEST(SignedManifest, ReleaseKnownAnswer) {
  const std::string expected =
      "fleetwave-release-v1\n"
      "model:8:sensor-a\n"
      "version:5:2.0.0\n"
      "counter:2:42\n"
      "url:37:https://fw.example/sensor-a/2.0.0.bin\n"
      "sha256:64:" +
      std::string(64, 'a') +
      "\n"
      "size:7:1048576\n";
  EXPECT_EQ(CanonicalBytes(Sample()), expected);
}

TEST(SignedManifest, NoticeKnownAnswer) {
  const std::string manifest = CanonicalBytes(Sample());
  ASSERT_EQ(manifest.size(), 202u);
  const std::string expected =
      "fleetwave-notice-v1\n"
      "manifest:202:" +
      manifest +
      "\n"
      "manifest_key_id:16:0123456789abcdef\n"
      "manifest_signature:4:c2ln\n"
      "rollout_id:20:fw-sensor-a-2.0.0-c7\n"
      "wave:1:2\n"
      "issued_at:10:1700000000\n"
      "expires_at:10:1700086400\n"
      "key_id:16:fedcba9876543210\n";
  EXPECT_EQ(CanonicalBytes(SampleNotice()), expected);
}

TEST(SignedManifest, EmptyAndNegativeValuesHaveCanonicalForms) {
  ReleaseManifest m;
  m.counter = -1;
  EXPECT_EQ(CanonicalBytes(m),
            "fleetwave-release-v1\nmodel:0:\nversion:0:\ncounter:2:-1\nurl:0:\nsha256:0:\n"
            "size:1:0\n");
}

TEST(SignedManifest, EveryReleaseFieldChangesTheBytes) {
  const std::string base = CanonicalBytes(Sample());
  const std::vector<std::pair<const char*, std::function<void(ReleaseManifest&)>>> changes = {
      {"model", [](ReleaseManifest& m) { m.model = "sensor-b"; }},
      {"version", [](ReleaseManifest& m) { m.version = "2.0.1"; }},
      {"counter", [](ReleaseManifest& m) { m.counter = 43; }},
      {"url", [](ReleaseManifest& m) { m.url += "?"; }},
      {"sha256", [](ReleaseManifest& m) { m.sha256[63] = 'b'; }},
      {"size", [](ReleaseManifest& m) { m.size = 1048577; }},
  };
  std::set<std::string> seen = {base};
  for (const auto& [field, change] : changes) {
    ReleaseManifest m = Sample();
    change(m);
    EXPECT_TRUE(seen.insert(CanonicalBytes(m)).second) << field;
  }
}

TEST(SignedManifest, EveryNoticeFieldChangesTheBytes) {
  const std::string base = CanonicalBytes(SampleNotice());
  const std::vector<std::pair<const char*, std::function<void(NoticeDocument&)>>> changes = {
      {"manifest.model", [](NoticeDocument& n) { n.manifest.model = "sensor-b"; }},
      {"manifest.version", [](NoticeDocument& n) { n.manifest.version = "1.0.0"; }},
      {"manifest.counter", [](NoticeDocument& n) { n.manifest.counter = 41; }},
      {"manifest.url", [](NoticeDocument& n) { n.manifest.url = "https://evil.example/"; }},
      {"manifest.sha256", [](NoticeDocument& n) { n.manifest.sha256[0] = 'b'; }},
      {"manifest.size", [](NoticeDocument& n) { n.manifest.size = 1; }},
      {"manifest_key_id", [](NoticeDocument& n) { n.manifest_key_id = "0123456789abcdee"; }},
      {"manifest_signature", [](NoticeDocument& n) { n.manifest_signature = "c2lo"; }},
      {"rollout_id", [](NoticeDocument& n) { n.rollout_id = "fw-sensor-a-2.0.0-c8"; }},
      {"wave", [](NoticeDocument& n) { n.wave = 3; }},
      {"issued_at", [](NoticeDocument& n) { n.issued_at += 1; }},
      {"expires_at", [](NoticeDocument& n) { n.expires_at += 1; }},
      {"key_id", [](NoticeDocument& n) { n.key_id = "fedcba9876543211"; }},
  };
  std::set<std::string> seen = {base};
  for (const auto& [field, change] : changes) {
    NoticeDocument n = SampleNotice();
    change(n);
    EXPECT_TRUE(seen.insert(CanonicalBytes(n)).second) << field;
  }
}

// Inputs a plain concatenation (or a delimiter without escaping) would give the same bytes.
TEST(SignedManifest, ShiftingBytesBetweenFieldsChangesTheBytes) {
  ReleaseManifest a = Sample(), b = Sample();
  a.model = "ab";
  a.version = "c";
  b.model = "a";
  b.version = "bc";
  EXPECT_NE(CanonicalBytes(a), CanonicalBytes(b));

  // A value that contains what looks like the next field.
  ReleaseManifest c = Sample(), d = Sample();
  c.model = "x\nversion:5:2.0.0";
  c.version = "";
  d.model = "x";
  d.version = "2.0.0";
  EXPECT_NE(CanonicalBytes(c), CanonicalBytes(d));

  // Digits moving between an integer and a neighbouring string.
  ReleaseManifest e = Sample(), f = Sample();
  e.version = "2.0.0";
  e.counter = 142;
  f.version = "2.0.01";
  f.counter = 42;
  EXPECT_NE(CanonicalBytes(e), CanonicalBytes(f));

  NoticeDocument g = SampleNotice(), h = SampleNotice();
  g.rollout_id = "r1";
  g.key_id = "k";
  h.rollout_id = "r";
  h.key_id = "1k";
  EXPECT_NE(CanonicalBytes(g), CanonicalBytes(h));
}

TEST(SignedManifest, KindsAreDomainSeparated) {
  EXPECT_TRUE(CanonicalBytes(Sample()).starts_with("fleetwave-release-v1\n"));
  EXPECT_TRUE(CanonicalBytes(SampleNotice()).starts_with("fleetwave-notice-v1\n"));
  // Neither domain line is a prefix of the other, so no bytes of one kind are bytes of the other.
  EXPECT_FALSE(std::string_view(kReleaseDomain).starts_with(kNoticeDomain));
  EXPECT_FALSE(std::string_view(kNoticeDomain).starts_with(kReleaseDomain));
  EXPECT_FALSE(ReadManifest(CanonicalBytes(SampleNotice())));
  EXPECT_FALSE(ReadNotice(CanonicalBytes(Sample())));
}

// Random inputs full of the encoding's own punctuation read back exactly: the encoding is
// injective, so no two different inputs share bytes.
TEST(SignedManifest, RandomInputsReadBackExactly) {
  std::mt19937_64 rng(7);
  const std::string alphabet = "a1:\n0-";
  auto text = [&] {
    std::string s(rng() % 6, ' ');
    for (char& c : s) c = alphabet[rng() % alphabet.size()];
    return s;
  };
  auto number = [&] { return static_cast<int64_t>(rng() % 2001) - 1000; };
  for (int i = 0; i < 5000; ++i) {
    NoticeDocument n{{text(), text(), number(), text(), text(), number()},
                     text(),
                     text(),
                     text(),
                     number(),
                     number(),
                     number(),
                     text()};
    const std::string encoded = CanonicalBytes(n);
    auto back = ReadNotice(encoded);
    ASSERT_TRUE(back) << encoded;
    EXPECT_TRUE(Same(*back, n)) << encoded;
    const std::string release = CanonicalBytes(n.manifest);
    auto manifest = ReadManifest(release);
    ASSERT_TRUE(manifest) << release;
    EXPECT_TRUE(Same(*manifest, n.manifest)) << release;
  }
}

TEST(SignedManifest, CheckManifest) {
  EXPECT_EQ(CheckManifest(Sample()), std::nullopt);
  ReleaseManifest m = Sample();
  m.counter = -1;
  ASSERT_TRUE(CheckManifest(m));
  EXPECT_NE(CheckManifest(m)->find("counter"), std::string::npos);
  m = Sample();
  m.sha256 = "ABC";
  EXPECT_TRUE(CheckManifest(m));
  m = Sample();
  m.version = "2.0";
  EXPECT_TRUE(CheckManifest(m));
  m = Sample();
  m.size = -1;
  EXPECT_TRUE(CheckManifest(m));
}

// ---- In the job document

const std::string kKeyId = "0123456789abcdef";
const std::string kValue = std::string(86, 'A') + "==";

nlohmann::json SignedDocument() {
  return {{"operation", "firmware.update"},
          {"release",
           {{"model", "arm-v2"},
            {"version", "1.5.0"},
            {"counter", 15},
            {"url", "https://fw.example/a.bin"},
            {"sha256", std::string(64, 'a')},
            {"size", 1048576}}},
          {"releaseSignature", {{"alg", "ed25519"}, {"keyId", kKeyId}, {"value", kValue}}},
          {"rollout", {{"id", "arm-v2-1.5.0-c7"}, {"wave", 2}}},
          {"issuedAt", 1795600000},
          {"expiresAt", 1795686400},
          {"signature", {{"alg", "ed25519"}, {"keyId", "fedcba9876543210"}, {"value", kValue}}}};
}

TEST(NoticeFromDocument, ReadsEverySignedField) {
  std::string error;
  auto n = NoticeFromDocument(SignedDocument(), &error);
  ASSERT_TRUE(n) << error;
  EXPECT_EQ(n->manifest.model, "arm-v2");
  EXPECT_EQ(n->manifest.version, "1.5.0");
  EXPECT_EQ(n->manifest.counter, 15);
  EXPECT_EQ(n->manifest.url, "https://fw.example/a.bin");
  EXPECT_EQ(n->manifest.sha256, std::string(64, 'a'));
  EXPECT_EQ(n->manifest.size, 1048576);
  EXPECT_EQ(n->manifest_key_id, kKeyId);
  EXPECT_EQ(n->manifest_signature, kValue);
  EXPECT_EQ(n->rollout_id, "arm-v2-1.5.0-c7");
  EXPECT_EQ(n->wave, 2);
  EXPECT_EQ(n->issued_at, 1795600000);
  EXPECT_EQ(n->expires_at, 1795686400);
  EXPECT_EQ(n->key_id, "fedcba9876543210");

  nlohmann::json unsigned_doc = SignedDocument();
  unsigned_doc.erase("signature");
  unsigned_doc.erase("releaseSignature");
  n = NoticeFromDocument(unsigned_doc, &error);
  ASSERT_TRUE(n) << error;
  EXPECT_EQ(n->key_id, "");
  EXPECT_EQ(n->manifest_signature, "");
}

TEST(NoticeFromDocument, EachMissingOrMistypedFieldIsNamed) {
  std::vector<std::pair<std::function<void(nlohmann::json&)>, std::string>> cases = {
      {[](auto& d) { d.erase("release"); }, "release must be an object"},
      {[](auto& d) { d["release"].erase("model"); }, "release.model must be a string"},
      {[](auto& d) { d["release"]["url"] = 1; }, "release.url must be a string"},
      {[](auto& d) { d["release"].erase("counter"); }, "release.counter must be an integer"},
      {[](auto& d) { d["release"]["size"] = "1"; }, "release.size must be an integer"},
      {[](auto& d) { d["release"]["size"] = 1.5; }, "release.size must be an integer"},
      {[](auto& d) { d["rollout"].erase("wave"); }, "rollout must be an object with"},
      {[](auto& d) { d.erase("rollout"); }, "rollout must be an object with"},
      {[](auto& d) { d.erase("expiresAt"); }, "expiresAt must be an integer"},
      {[](auto& d) { d["issuedAt"] = nullptr; }, "issuedAt must be an integer"},
      {[](auto& d) { d["signature"] = "sig"; }, "signature must be an object"},
      {[](auto& d) { d["signature"]["alg"] = "rsa"; }, "signature.alg must be \"ed25519\""},
      {[](auto& d) { d["releaseSignature"]["keyId"] = "ABC"; },
       "releaseSignature.keyId must be 16 lowercase hex characters"},
      {[](auto& d) { d["releaseSignature"]["value"] = "abc"; },
       "releaseSignature.value must be a base64 Ed25519 signature"},
  };
  for (auto& [change, expected] : cases) {
    nlohmann::json doc = SignedDocument();
    change(doc);
    std::string error;
    EXPECT_FALSE(NoticeFromDocument(doc, &error)) << doc.dump();
    EXPECT_NE(error.find(expected), std::string::npos) << error << " / " << expected;
  }
  std::string error;
  EXPECT_FALSE(NoticeFromDocument(nlohmann::json::array(), &error));
  EXPECT_EQ(error, "the job document must be a JSON object");
}

TEST(SignatureText, RoundTripsAndNamesWhatIsWrong) {
  const Signature s{kKeyId, kValue};
  std::string error;
  EXPECT_EQ(ParseSignature(ToText(s), &error), s);
  EXPECT_EQ(ToJson(s), (nlohmann::json{{"alg", "ed25519"}, {"keyId", kKeyId}, {"value", kValue}}));
  EXPECT_FALSE(ParseSignature(kValue, &error));
  EXPECT_NE(error.find("KEYID:VALUE"), std::string::npos);
  EXPECT_FALSE(ParseSignature("0123:" + kValue, &error));
  EXPECT_NE(error.find("key id"), std::string::npos);
  EXPECT_FALSE(ParseSignature(kKeyId + ":" + kValue.substr(1), &error));
  EXPECT_NE(error.find("value"), std::string::npos);
  EXPECT_FALSE(ParseSignature(kKeyId + ":" + std::string(86, '-') + "==", &error));
}

}  // namespace
}  // namespace fleet
