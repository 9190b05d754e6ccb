#include "simulator/device.h"

#include <functional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "fleet/signed_manifest.h"
#include "signing/signing.h"

namespace simulator {
namespace {

using Json = nlohmann::json;

constexpr int64_t kEpoch = 1795600000;

fleet::Version V(const char* text) { return *fleet::Version::Parse(text); }

Json Document(const std::string& model = "m1", const std::string& version = "2.0.0") {
  return Json{{"operation", "firmware.update"},
              {"release",
               {{"model", model},
                {"version", version},
                {"url", "https://fw.example/" + model + ".bin"},
                {"sha256", std::string(64, 'a')},
                {"size", 1000}}},
              {"rollout", {{"id", "fw-" + model}, {"wave", 1}}},
              {"issuedAt", kEpoch},
              {"expiresAt", kEpoch + 3600}};
}

// ---- CheckJobDocument: each refusal
// --------------------------------------------------------------

std::optional<Reason> Check(const Json& doc, const char* installed = "1.0.0",
                            int64_t now = kEpoch) {
  return CheckJobDocument(doc, "m1", Installed{V(installed)}, now);
}

TEST(CheckJobDocument, AcceptsAGoodDocument) {
  EXPECT_EQ(Check(Document()), std::nullopt);
  Json no_expiry = Document();
  no_expiry.erase("expiresAt");
  EXPECT_EQ(Check(no_expiry), std::nullopt);  // the controller omits it when nothing expires
  no_expiry["expiresAt"] = nullptr;
  EXPECT_EQ(Check(no_expiry), std::nullopt);
  EXPECT_EQ(Check(Document("m1", "1.0.1")), std::nullopt);
  EXPECT_EQ(Check(Document("m1", "1.0.0"), "1.0.0-rc.1"), std::nullopt);
}

TEST(CheckJobDocument, EachRefusalHasItsReason) {
  Json doc = Document();
  doc["operation"] = "reboot";
  EXPECT_EQ(Check(doc), Reason::kBadOperation);
  doc.erase("operation");
  EXPECT_EQ(Check(doc), Reason::kBadOperation);
  EXPECT_EQ(Check(Json::array()), Reason::kBadOperation);

  doc = Document();
  doc.erase("release");
  EXPECT_EQ(Check(doc), Reason::kBadDocument);
  doc = Document();
  doc["release"].erase("sha256");
  EXPECT_EQ(Check(doc), Reason::kBadDocument);
  doc = Document();
  doc["release"]["version"] = 2;
  EXPECT_EQ(Check(doc), Reason::kBadDocument);
  doc = Document();
  doc["expiresAt"] = "tomorrow";
  EXPECT_EQ(Check(doc), Reason::kBadDocument);

  EXPECT_EQ(Check(Document("m2")), Reason::kWrongModel);
  EXPECT_EQ(Check(Document("m1", "2.0")), Reason::kBadVersion);
  EXPECT_EQ(Check(Document("m1", "1.0.0")), Reason::kNotNewer);                // the same
  EXPECT_EQ(Check(Document("m1", "1.0.0+build.2")), Reason::kNotNewer);        // the same
  EXPECT_EQ(Check(Document("m1", "0.9.0")), Reason::kNotNewer);                // a downgrade
  EXPECT_EQ(Check(Document("m1", "2.0.0-rc.1"), "2.0.0"), Reason::kNotNewer);  // a downgrade

  doc = Document();
  doc["release"]["sha256"] = std::string(64, 'A');
  EXPECT_EQ(Check(doc), Reason::kBadSha256);
  doc["release"]["sha256"] = std::string(63, 'a');
  EXPECT_EQ(Check(doc), Reason::kBadSha256);
  doc["release"]["sha256"] = std::string(63, 'a') + "g";
  EXPECT_EQ(Check(doc), Reason::kBadSha256);

  EXPECT_EQ(Check(Document(), "1.0.0", kEpoch + 3600), Reason::kExpired);
  EXPECT_EQ(Check(Document(), "1.0.0", kEpoch + 3599), std::nullopt);
}

TEST(CheckJobDocument, ReasonsAreSpelledForStatusDetails) {
  EXPECT_EQ(ToString(Reason::kWrongModel), "wrong-model");
  EXPECT_EQ(ToString(Reason::kNotNewer), "not-newer");
  EXPECT_EQ(ToString(Reason::kBadSha256), "bad-sha256");
  EXPECT_EQ(ToString(Reason::kExpired), "expired");
  EXPECT_EQ(ToString(Reason::kBadOperation), "bad-operation");
  EXPECT_EQ(ToString(Reason::kDownloadFailed), "download-failed");
  EXPECT_EQ(ToString(Reason::kRebootFailed), "reboot-failed");
}

// ---- Thing names and topics
// ------------------------------------------------------------------------

TEST(ThingNames, RoundTripWithoutAMap) {
  FleetSpec spec;
  spec.devices = 3000;
  spec.models = {"m1", "model-two"};
  spec.id_prefix = "sim-x";
  for (int64_t i = 0; i < spec.devices; ++i) {
    std::string thing;
    AppendThing(spec, i, &thing);
    ASSERT_EQ(thing, SimulatedDevice(spec, i).id);
    ASSERT_EQ(ThingIndex(spec, thing), i) << thing;
  }
  EXPECT_EQ(ThingIndex(spec, "sim-x-m1-0000002"), 2);
  EXPECT_EQ(ThingIndex(spec, "sim-x-m1-0000001"), -1);   // device 1 is a model-two
  EXPECT_EQ(ThingIndex(spec, "sim-y-m1-0000002"), -1);   // another prefix
  EXPECT_EQ(ThingIndex(spec, "sim-x-m1-0003000"), -1);   // beyond the fleet
  EXPECT_EQ(ThingIndex(spec, "sim-x-m1-000002"), -1);    // too short
  EXPECT_EQ(ThingIndex(spec, "sim-x-m1-00000002"), -1);  // a leading zero too many
  EXPECT_EQ(ThingIndex(spec, "sim-x-m1-00000a2"), -1);
  EXPECT_EQ(ThingIndex(spec, "x-sim-x-m1-0000002"), -1);
  EXPECT_EQ(ThingIndex(spec, "0000002"), -1);
  spec.devices = 20000000;
  EXPECT_EQ(ThingIndex(spec, "sim-x-m1-12345678"), 12345678);
}

TEST(InboundTopics, OnlyTheDevicesOwnAnswersAndNotices) {
  const std::string root = "$aws/things";
  auto kind = [&](const std::string& topic) -> std::optional<Inbound> {
    auto t = ParseInboundTopic(topic, root);
    if (!t) return std::nullopt;
    EXPECT_EQ(t->thing, "sim-m1-0000001");
    return t->kind;
  };
  EXPECT_EQ(kind("$aws/things/sim-m1-0000001/jobs/notify-next"), Inbound::kNotifyNext);
  EXPECT_EQ(kind("$aws/things/sim-m1-0000001/jobs/start-next/accepted"),
            Inbound::kStartNextAccepted);
  EXPECT_EQ(kind("$aws/things/sim-m1-0000001/jobs/start-next/rejected"),
            Inbound::kStartNextRejected);
  EXPECT_EQ(kind("$aws/things/sim-m1-0000001/jobs/fw-m1-2.0.0-c1/update/accepted"),
            Inbound::kUpdateAccepted);
  EXPECT_EQ(kind("$aws/things/sim-m1-0000001/jobs/fw-m1-2.0.0-c1/update/rejected"),
            Inbound::kUpdateRejected);
  EXPECT_EQ(kind("$aws/things/sim-m1-0000001/jobs/start-next"), std::nullopt);  // a request
  EXPECT_EQ(kind("$aws/things/sim-m1-0000001/jobs/fw-1/update"), std::nullopt);
  EXPECT_EQ(kind("$aws/things/sim-m1-0000001/jobs/notify"), std::nullopt);
  EXPECT_EQ(kind("$aws/things/sim-m1-0000001/jobs//update/accepted"), std::nullopt);
  EXPECT_EQ(kind("$aws/thingsX/sim-m1-0000001/jobs/notify-next"), std::nullopt);
  EXPECT_EQ(kind("other/sim-m1-0000001/jobs/notify-next"), std::nullopt);
}

// ---- CheckJobDocument with trusted keys: every signature refusal
// --------------------------------------------------------------

// A release key, a notice key and a device trusting both; documents signed as the controller
// signs them (fleet::NoticeFromDocument, then signing::SignNotice).
struct Signed {
  signing::KeyPair release = signing::GenerateKeyPair();
  signing::KeyPair notice = signing::GenerateKeyPair();
  Trust trust;
  Signed() {
    trust.release_keys.Add(release.public_key);
    trust.notice_keys.Add(notice.public_key);
  }

  // `doc` with its manifest signed by `release_key` and the notice by `notice_key`.
  static Json Sign(Json doc, const signing::SecretKey& release_key,
                   const signing::SecretKey& notice_key) {
    std::string error;
    auto n = fleet::NoticeFromDocument(doc, &error);
    EXPECT_TRUE(n) << error;
    doc["releaseSignature"] =
        fleet::ToJson({release_key.KeyId(), signing::SignRelease(release_key, n->manifest)});
    n = fleet::NoticeFromDocument(doc, &error);
    n->key_id = notice_key.KeyId();
    doc["signature"] = fleet::ToJson({notice_key.KeyId(), signing::SignNotice(notice_key, *n)});
    return doc;
  }
  Json Sign(Json doc) const { return Sign(std::move(doc), release.secret_key, notice.secret_key); }

  std::optional<Reason> Check(const Json& doc, int64_t installed_counter = 0,
                              int64_t now = kEpoch) const {
    return CheckJobDocument(doc, "m1", Installed{V("1.0.0"), installed_counter}, now, trust);
  }
};

Json CountedDocument(int64_t counter = 5, const std::string& version = "2.0.0") {
  Json doc = Document("m1", version);
  doc["release"]["counter"] = counter;
  return doc;
}

TEST(CheckSignedDocument, AcceptsADocumentSignedByTrustedKeys) {
  Signed s;
  EXPECT_EQ(s.Check(s.Sign(CountedDocument())), std::nullopt);
  // Fields outside the notice may change (AWS adds none today, but a device must not care).
  Json doc = s.Sign(CountedDocument());
  doc["comment"] = "not signed, not read";
  EXPECT_EQ(s.Check(doc), std::nullopt);
}

TEST(CheckSignedDocument, EachSignatureRefusalHasItsReason) {
  Signed s;
  Json doc = s.Sign(CountedDocument());

  Json unsigned_doc = doc;
  unsigned_doc.erase("signature");
  EXPECT_EQ(s.Check(unsigned_doc), Reason::kUnsigned);
  EXPECT_EQ(s.Check(CountedDocument()), Reason::kUnsigned);

  Json malformed = doc;
  malformed["signature"]["value"] = "not base64";
  EXPECT_EQ(s.Check(malformed), Reason::kBadSignature);
  malformed = doc;
  malformed["signature"]["alg"] = "rsa";
  EXPECT_EQ(s.Check(malformed), Reason::kBadSignature);

  // Any signed field changed after signing: the notice signature no longer verifies.
  for (auto change : std::vector<std::function<void(Json&)>>{
           [](Json& d) { d["release"]["url"] = "https://evil.example/fw.bin"; },
           [](Json& d) { d["release"]["sha256"] = std::string(64, 'b'); },
           [](Json& d) { d["release"]["size"] = 999999; },
           [](Json& d) { d["expiresAt"] = kEpoch + 999999; },
           [](Json& d) { d["rollout"]["wave"] = 3; }}) {
    Json tampered = doc;
    change(tampered);
    EXPECT_EQ(s.Check(tampered), Reason::kBadSignature) << tampered.dump();
  }

  // A notice key the device does not trust.
  signing::KeyPair stranger = signing::GenerateKeyPair();
  EXPECT_EQ(s.Check(Signed::Sign(CountedDocument(), s.release.secret_key, stranger.secret_key)),
            Reason::kUnknownKey);

  // The manifest: unsigned, by an unknown release key, or a signature that does not verify.
  Json no_release = CountedDocument();
  {
    std::string error;
    auto n = fleet::NoticeFromDocument(no_release, &error);
    n->key_id = s.notice.secret_key.KeyId();
    no_release["signature"] =
        fleet::ToJson({s.notice.secret_key.KeyId(), signing::SignNotice(s.notice.secret_key, *n)});
  }
  EXPECT_EQ(s.Check(no_release), Reason::kUnsignedRelease);
  EXPECT_EQ(s.Check(Signed::Sign(CountedDocument(), stranger.secret_key, s.notice.secret_key)),
            Reason::kUnknownReleaseKey);
  // The controller's own key is not a release key: a compromised controller that signs a
  // manifest with the key it holds is refused.
  EXPECT_EQ(s.Check(Signed::Sign(CountedDocument(), s.notice.secret_key, s.notice.secret_key)),
            Reason::kUnknownReleaseKey);
  // A release signature of another manifest, re-signed into a valid notice by the controller.
  Json swapped = CountedDocument(5, "3.0.0");
  swapped["releaseSignature"] = doc["releaseSignature"];
  {
    std::string error;
    auto n = fleet::NoticeFromDocument(swapped, &error);
    n->key_id = s.notice.secret_key.KeyId();
    swapped["signature"] =
        fleet::ToJson({s.notice.secret_key.KeyId(), signing::SignNotice(s.notice.secret_key, *n)});
  }
  EXPECT_EQ(s.Check(swapped), Reason::kBadReleaseSignature);

  // Signed and trusted, but expired, or not above the installed counter (anti-rollback).
  EXPECT_EQ(s.Check(doc, 0, kEpoch + 3600), Reason::kExpired);
  EXPECT_EQ(s.Check(doc, 5), Reason::kNotNewer);
  EXPECT_EQ(s.Check(doc, 6), Reason::kNotNewer);
  EXPECT_EQ(s.Check(doc, 4), std::nullopt);
  // A newer version text does not make an old counter newer.
  EXPECT_EQ(s.Check(s.Sign(CountedDocument(3, "9.0.0")), 4), Reason::kNotNewer);
  // A missing counter is a malformed notice.
  Json no_counter = doc;
  no_counter["release"].erase("counter");
  EXPECT_EQ(s.Check(no_counter), Reason::kBadDocument);
}

TEST(CheckSignedDocument, RotationTrustsOldAndNewKeysUntilTheOldIsRemoved) {
  Signed s;
  signing::KeyPair next = signing::GenerateKeyPair();
  Json by_old = s.Sign(CountedDocument());
  Json by_new = Signed::Sign(CountedDocument(), s.release.secret_key, next.secret_key);
  EXPECT_EQ(s.Check(by_new), Reason::kUnknownKey);
  s.trust.notice_keys.Add(next.public_key);
  EXPECT_EQ(s.Check(by_old), std::nullopt);
  EXPECT_EQ(s.Check(by_new), std::nullopt);
  s.trust.notice_keys.Remove(s.notice.public_key.KeyId());
  EXPECT_EQ(s.Check(by_old), Reason::kUnknownKey);
  EXPECT_EQ(s.Check(by_new), std::nullopt);
}

TEST(CheckSignedDocument, WithoutTrustedKeysSignaturesAreNotChecked) {
  Json doc = CountedDocument();
  doc["signature"] = {{"alg", "ed25519"}, {"keyId", "0000000000000000"}, {"value", "x"}};
  EXPECT_EQ(CheckJobDocument(doc, "m1", Installed{V("1.0.0"), 99}, kEpoch), std::nullopt);
}

TEST(CheckJobDocument, NewReasonsAreSpelledForStatusDetails) {
  EXPECT_EQ(ToString(Reason::kUnsigned), "unsigned");
  EXPECT_EQ(ToString(Reason::kUnknownKey), "unknown-key");
  EXPECT_EQ(ToString(Reason::kBadSignature), "bad-signature");
  EXPECT_EQ(ToString(Reason::kUnsignedRelease), "unsigned-release");
  EXPECT_EQ(ToString(Reason::kUnknownReleaseKey), "unknown-release-key");
  EXPECT_EQ(ToString(Reason::kBadReleaseSignature), "bad-release-signature");
  EXPECT_EQ(ToString(Reason::kTooLarge), "too-large");
  EXPECT_EQ(ToString(Reason::kSha256Mismatch), "sha256-mismatch");
}

// ---- The state machine
// ---------------------------------------------------------------------------

// One device (index 0, model m1) driven step by step, its publishes kept for inspection.
class DeviceTest : public ::testing::Test {
 protected:
  DeviceTest() {
    spec_.devices = 10;
    spec_.models = {"m1", "m2"};
    spec_.firmware = "1.0.0";
    profile_.request_timeout_seconds = 10;
    profile_.devices.crashes_per_hour = 0;
    profile_.update.download = {{2, 2}, 0};
    profile_.update.install = {{3, 3}, 0};
    profile_.update.reboot = {{1, 1}, 0};
  }

  DeviceMachine& Machine(int64_t telemetry_ms = 0) {
    if (!machine_) machine_.emplace(spec_, profile_, 7, telemetry_ms, trust_);
    return *machine_;
  }

  Now At(int64_t ms) { return Now{ms, kEpoch + ms / 1000}; }

  void Boot() {
    Machine().Init(d_, 0, At(0));
    Timer(0);
  }
  void Timer(int64_t ms) {
    now_ = ms;
    Machine().OnTimer(d_, 0, At(ms), &out_);
  }
  // Fires the device's next action timer.
  void Next() {
    ASSERT_NE(d_.action_at, kNever);
    Timer(d_.action_at);
  }
  void Message(Inbound kind, const Json& payload) {
    Machine().OnMessage(d_, 0, kind, payload.dump(), At(now_), &out_);
  }
  void Notice(const std::string& job = "fw-1", int execution = 1) {
    Json e = {{"jobId", job},
              {"executionNumber", execution},
              {"status", "QUEUED"},
              {"jobDocument", Document()}};
    Message(Inbound::kNotifyNext, {{"timestamp", kEpoch}, {"execution", e}});
  }
  std::string Token() { return std::to_string(d_.token); }
  // `details`: the execution's statusDetails in the answer (none: one resumed, or a controller
  // that did not apply the request's).
  void StartNextAnswer(const Json& doc, const std::string& job = "fw-1", int execution = 1,
                       const Json& details = nullptr) {
    Json e = {{"jobId", job},
              {"executionNumber", execution},
              {"status", "IN_PROGRESS"},
              {"versionNumber", 2},
              {"jobDocument", doc}};
    if (!details.is_null()) e["statusDetails"] = details;
    Message(Inbound::kStartNextAccepted,
            {{"clientToken", Token()}, {"timestamp", kEpoch}, {"execution", e}});
  }
  void Accepted() { Message(Inbound::kUpdateAccepted, {{"clientToken", Token()}}); }

  // The publishes since the last call, as "suffix payload" lines.
  std::vector<std::string> Take() {
    std::vector<std::string> lines;
    for (const Publish& p : out_)
      lines.push_back((p.telemetry ? std::string("telemetry") : p.suffix) + " " + p.payload);
    out_.clear();
    return lines;
  }
  int64_t Counted(simulator::Count c) { return Machine().counters().Read()[c]; }

  FleetSpec spec_;
  Profile profile_;
  Trust trust_;
  std::optional<DeviceMachine> machine_;
  DeviceState d_;
  std::vector<Publish> out_;
  int64_t now_ = 0;
};

TEST_F(DeviceTest, BootsAsksStartNextAndWalksTheStepsToSucceeded) {
  Boot();
  EXPECT_EQ(d_.phase, Phase::kAsking);
  EXPECT_THAT(Take(),
              testing::ElementsAre(
                  R"(jobs/start-next {"statusDetails":{"step":"downloading"},"clientToken":"1"})"));
  StartNextAnswer(Document());
  EXPECT_THAT(
      Take(),
      testing::ElementsAre(
          R"(jobs/fw-1/update {"status":"IN_PROGRESS","statusDetails":{"step":"downloading"},"clientToken":"2"})"));
  Accepted();
  EXPECT_EQ(d_.phase, Phase::kWorking);
  EXPECT_EQ(d_.action_at, 2000);  // download takes 2 s
  Next();
  EXPECT_THAT(
      Take(),
      testing::ElementsAre(
          R"(jobs/fw-1/update {"status":"IN_PROGRESS","statusDetails":{"step":"installing"},"clientToken":"3"})"));
  Accepted();
  EXPECT_EQ(d_.action_at, 5000);
  Next();
  EXPECT_THAT(
      Take(),
      testing::ElementsAre(
          R"(jobs/fw-1/update {"status":"IN_PROGRESS","statusDetails":{"step":"rebooting"},"clientToken":"4"})"));
  Accepted();
  Next();
  EXPECT_THAT(
      Take(),
      testing::ElementsAre(
          R"(jobs/fw-1/update {"status":"SUCCEEDED","statusDetails":{"firmware":"2.0.0"},"clientToken":"5"})"));
  EXPECT_EQ(Machine().Version(d_.installed), "2.0.0");  // runs it since the reboot
  EXPECT_EQ(d_.boots, 2);
  Accepted();
  EXPECT_EQ(d_.phase, Phase::kIdle);
  EXPECT_EQ(d_.action_at, kNever);
  EXPECT_EQ(Counted(Count::kStarted), 1);
  EXPECT_EQ(Counted(Count::kSucceeded), 1);
  EXPECT_EQ(Counted(Count::kRequests), 5);
  EXPECT_THAT(Take(), testing::IsEmpty());
}

// The usual case: the start-next that started the execution carried {"step": "downloading"},
// so the first report is the next step's (four requests in all, not five).
TEST_F(DeviceTest, TheDownloadStepItsStartNextReportedIsNotReportedAgain) {
  Boot();
  Take();
  StartNextAnswer(Document(), "fw-1", 1, {{"step", "downloading"}});
  EXPECT_THAT(Take(), testing::IsEmpty());
  EXPECT_EQ(d_.phase, Phase::kWorking);
  EXPECT_EQ(d_.action_at, 2000);  // download takes 2 s
  Next();
  EXPECT_THAT(
      Take(),
      testing::ElementsAre(
          R"(jobs/fw-1/update {"status":"IN_PROGRESS","statusDetails":{"step":"installing"},"clientToken":"2"})"));
  Accepted();
  Next();
  Take();  // rebooting
  Accepted();
  Next();
  EXPECT_THAT(Take(), testing::ElementsAre(testing::HasSubstr(R"("status":"SUCCEEDED")")));
  Accepted();
  EXPECT_EQ(Counted(Count::kSucceeded), 1);
  EXPECT_EQ(Counted(Count::kRequests), 4);
}

// An execution resumed IN_PROGRESS shows the step of its last report: downloading starts again
// and is reported again.
TEST_F(DeviceTest, AResumedExecutionGetsItsDownloadReportedAgain) {
  Boot();
  Take();
  StartNextAnswer(Document(), "fw-1", 1, {{"step", "installing"}});
  EXPECT_THAT(
      Take(),
      testing::ElementsAre(
          R"(jobs/fw-1/update {"status":"IN_PROGRESS","statusDetails":{"step":"downloading"},"clientToken":"2"})"));
}

TEST_F(DeviceTest, WithoutStepReportsItGoesStraightToTheResult) {
  profile_.update.report_steps = false;
  Boot();
  Take();
  StartNextAnswer(Document());
  EXPECT_THAT(Take(), testing::IsEmpty());
  EXPECT_EQ(d_.phase, Phase::kWorking);
  Next();
  Next();
  EXPECT_EQ(d_.action_at, 6000);
  Next();
  EXPECT_THAT(Take(), testing::ElementsAre(testing::HasSubstr("\"status\":\"SUCCEEDED\"")));
}

TEST_F(DeviceTest, RefusesABadDocumentWithItsReason) {
  Boot();
  Take();
  StartNextAnswer(Document("m2"));
  EXPECT_THAT(
      Take(),
      testing::ElementsAre(
          R"(jobs/fw-1/update {"status":"REJECTED","statusDetails":{"reason":"wrong-model"},"clientToken":"2"})"));
  Accepted();
  EXPECT_EQ(d_.phase, Phase::kIdle);
  EXPECT_EQ(Counted(Count::kRejected), 1);
  EXPECT_EQ(Machine().counters().Read().reasons[static_cast<int>(Reason::kWrongModel)], 1);
  EXPECT_EQ(Machine().Version(d_.installed), "1.0.0");
}

TEST_F(DeviceTest, AnExpiredDocumentIsRefusedByTheDeviceClock) {
  Boot();
  Take();
  Json doc = Document();
  doc["expiresAt"] = kEpoch;
  StartNextAnswer(doc);
  EXPECT_THAT(Take(), testing::ElementsAre(testing::HasSubstr(R"("reason":"expired")")));
}

TEST_F(DeviceTest, NoJobMeansIdleUntilANotice) {
  Boot();
  Take();
  Message(Inbound::kStartNextAccepted, {{"clientToken", Token()}, {"timestamp", kEpoch}});
  EXPECT_EQ(d_.phase, Phase::kIdle);
  EXPECT_EQ(d_.action_at, kNever);
  Message(Inbound::kNotifyNext, {{"timestamp", kEpoch}});  // nothing pending: nothing to do
  EXPECT_THAT(Take(), testing::IsEmpty());
  Notice();
  EXPECT_THAT(Take(),
              testing::ElementsAre(
                  R"(jobs/start-next {"statusDetails":{"step":"downloading"},"clientToken":"2"})"));
}

TEST_F(DeviceTest, DedupesNoticesByJobAndExecutionNumber) {
  Boot();
  Take();
  Message(Inbound::kStartNextAccepted, {{"clientToken", Token()}, {"timestamp", kEpoch}});
  Notice("fw-1", 1);
  EXPECT_EQ(Take().size(), 1u);
  Notice("fw-1", 1);  // the outbox sent it again
  EXPECT_THAT(Take(), testing::IsEmpty());
  EXPECT_EQ(Counted(Count::kDuplicates), 1);
  StartNextAnswer(Document(), "fw-1", 1);
  Take();
  Notice("fw-1", 1);  // while working on it
  EXPECT_THAT(Take(), testing::IsEmpty());
  EXPECT_FALSE(d_.notice_pending);
  // Walk the steps to SUCCEEDED.
  for (int i = 0; i < 3; ++i) {
    Accepted();
    Next();
  }
  Accepted();
  EXPECT_EQ(d_.phase, Phase::kIdle);
  EXPECT_EQ(Take().size(), 3u);
  Notice("fw-1", 1);  // after it finished
  EXPECT_THAT(Take(), testing::IsEmpty());
  EXPECT_EQ(Counted(Count::kDuplicates), 3);
  Notice("fw-1", 2);  // a retry is a new execution
  EXPECT_THAT(Take(), testing::ElementsAre(testing::HasSubstr("jobs/start-next")));
}

TEST_F(DeviceTest, ANewNoticeWhileBusyIsServedWhenTheJobEnds) {
  Boot();
  Take();
  StartNextAnswer(Document(), "fw-1", 1);
  Take();
  Notice("fw-2", 1);
  EXPECT_TRUE(d_.notice_pending);
  EXPECT_THAT(Take(), testing::IsEmpty());
  for (int i = 0; i < 3; ++i) {
    Accepted();
    Next();
  }
  Take();
  Accepted();  // SUCCEEDED accepted: now it asks for the next one
  EXPECT_THAT(Take(), testing::ElementsAre(testing::HasSubstr("jobs/start-next")));
  EXPECT_EQ(d_.phase, Phase::kAsking);
}

TEST_F(DeviceTest, ANoticeWhileAskingAsksAgainAndTheOldAnswerIsIgnored) {
  Boot();
  const std::string first = Token();
  Take();
  Notice();
  EXPECT_THAT(Take(),
              testing::ElementsAre(
                  R"(jobs/start-next {"statusDetails":{"step":"downloading"},"clientToken":"2"})"));
  // The answer to the first request (it may predate the execution) no longer counts.
  Message(Inbound::kStartNextAccepted, {{"clientToken", first}, {"timestamp", kEpoch}});
  EXPECT_EQ(d_.phase, Phase::kAsking);
  StartNextAnswer(Document());
  EXPECT_EQ(Counted(Count::kStarted), 1);
}

TEST_F(DeviceTest, StepFailuresReportFailedWithTheStep) {
  profile_.update.install.failure_probability = 1;
  Boot();
  Take();
  StartNextAnswer(Document());
  Accepted();
  Next();  // download done
  Accepted();
  Next();  // install failed
  EXPECT_THAT(
      Take().back(),
      testing::HasSubstr(R"({"status":"FAILED","statusDetails":{"reason":"install-failed"})"));
  Accepted();
  EXPECT_EQ(Counted(Count::kFailed), 1);
  EXPECT_EQ(Machine().counters().Read().reasons[static_cast<int>(Reason::kInstallFailed)], 1);
  EXPECT_EQ(Machine().Version(d_.installed), "1.0.0");
}

TEST_F(DeviceTest, ADownloadThatDoesNotMatchTheManifestFailsBeforeInstalling) {
  for (auto [served, reason] : {std::pair{ServedImage::kOversized, "too-large"},
                                std::pair{ServedImage::kCorrupt, "sha256-mismatch"}}) {
    profile_.update.served_image = served;
    machine_.reset();
    d_ = DeviceState();
    Boot();
    Take();
    StartNextAnswer(Document());
    Accepted();
    Next();  // the download ends: checked against size and sha256
    EXPECT_THAT(
        Take().back(),
        testing::HasSubstr(std::string(R"({"status":"FAILED","statusDetails":{"reason":")") +
                           reason + "\"}"));
    Accepted();
    EXPECT_EQ(Machine().Version(d_.installed), "1.0.0");
    EXPECT_EQ(d_.boots, 1);  // nothing was installed or rebooted
  }
}

TEST_F(DeviceTest, ASignedNoticeIsInstalledAndItsCounterGuardsAgainstRollback) {
  Signed keys;
  trust_ = keys.trust;
  Boot();
  Take();
  StartNextAnswer(keys.Sign(CountedDocument(5, "2.0.0")));
  for (int i = 0; i < 3; ++i) {
    Accepted();
    Next();
  }
  EXPECT_THAT(Take().back(), testing::HasSubstr(R"("status":"SUCCEEDED")"));
  Accepted();
  EXPECT_EQ(Machine().Version(d_.installed), "2.0.0");
  // A later version whose manifest carries an older counter (a replayed old signature) is refused.
  Notice("fw-2", 1);
  EXPECT_THAT(Take(), testing::ElementsAre(testing::HasSubstr("jobs/start-next")));
  StartNextAnswer(keys.Sign(CountedDocument(4, "2.1.0")), "fw-2", 1);
  EXPECT_THAT(Take(), testing::ElementsAre(testing::HasSubstr(R"("reason":"not-newer")")));
  Accepted();
  EXPECT_EQ(Machine().Version(d_.installed), "2.0.0");
}

TEST_F(DeviceTest, AnUnsignedNoticeIsRejectedWhenTheDeviceTrustsKeys) {
  trust_ = Signed().trust;
  Boot();
  Take();
  StartNextAnswer(CountedDocument());
  EXPECT_THAT(
      Take(),
      testing::ElementsAre(
          R"(jobs/fw-1/update {"status":"REJECTED","statusDetails":{"reason":"unsigned"},"clientToken":"2"})"));
  Accepted();
  EXPECT_EQ(Machine().Version(d_.installed), "1.0.0");
  EXPECT_EQ(Machine().counters().Read().reasons[static_cast<int>(Reason::kUnsigned)], 1);
}

TEST_F(DeviceTest, AFailedRebootRollsBack) {
  profile_.update.reboot.failure_probability = 1;
  Boot();
  Take();
  StartNextAnswer(Document());
  for (int i = 0; i < 3; ++i) {
    Accepted();
    Next();
  }
  EXPECT_THAT(Take().back(), testing::HasSubstr(R"("reason":"reboot-failed")"));
  EXPECT_EQ(Machine().Version(d_.installed), "1.0.0");
  EXPECT_EQ(d_.boots, 2);
}

TEST_F(DeviceTest, RejectProbabilityDeclines) {
  profile_.update.reject_probability = 1;
  Boot();
  Take();
  StartNextAnswer(Document());
  EXPECT_THAT(Take(), testing::ElementsAre(testing::HasSubstr(
                          R"({"status":"REJECTED","statusDetails":{"reason":"declined"})")));
}

TEST_F(DeviceTest, PerReleaseBehaviourApplies) {
  Profile::Model m1{"m1", profile_.devices, profile_.update, {}};
  Profile::Release bad{V("2.0.0"), profile_.update};
  bad.update.download.failure_probability = 1;
  m1.releases.push_back(bad);
  profile_.models.push_back(m1);
  Boot();
  Take();
  StartNextAnswer(Document("m1", "2.0.1"));  // another release of the model: fine
  Accepted();
  Next();
  EXPECT_THAT(Take().back(), testing::HasSubstr("installing"));
  machine_.reset();
  d_ = DeviceState();
  Boot();
  Take();
  StartNextAnswer(Document("m1", "2.0.0"));
  Accepted();
  Next();
  EXPECT_THAT(Take().back(), testing::HasSubstr("download-failed"));
}

TEST_F(DeviceTest, SilentBricksNeverReportAgain) {
  profile_.update.silent_fraction = 1;
  Boot();
  Take();
  StartNextAnswer(Document());
  EXPECT_EQ(d_.phase, Phase::kSilent);
  EXPECT_EQ(DeviceMachine::NextWake(d_), kNever);
  Notice("fw-2", 1);
  Message(Inbound::kUpdateAccepted, {{"clientToken", Token()}});
  EXPECT_THAT(Take(), testing::IsEmpty());
  EXPECT_EQ(Counted(Count::kSilent), 1);
}

TEST_F(DeviceTest, OfflineDevicesNeverConnect) {
  profile_.devices.offline_fraction = 1;
  Machine().Init(d_, 0, At(0));
  EXPECT_EQ(d_.phase, Phase::kOffline);
  EXPECT_EQ(DeviceMachine::NextWake(d_), kNever);
  Notice();
  EXPECT_THAT(Take(), testing::IsEmpty());
  EXPECT_EQ(Counted(Count::kOffline), 1);
  EXPECT_EQ(Counted(Count::kNotices), 0);
}

TEST_F(DeviceTest, LateJoinersSleepFirst) {
  profile_.devices.late_join_fraction = 1;
  profile_.devices.late_join_delay = {10, 10};
  Machine().Init(d_, 0, At(0));
  EXPECT_EQ(d_.phase, Phase::kAsleep);
  EXPECT_EQ(d_.action_at, 10000);
  Notice();  // not online yet: missed
  EXPECT_THAT(Take(), testing::IsEmpty());
  Timer(10000);
  EXPECT_THAT(Take(), testing::ElementsAre(testing::HasSubstr("jobs/start-next")));
  EXPECT_EQ(Counted(Count::kJoined), 1);
}

TEST_F(DeviceTest, UnansweredRequestsAreSentAgainWithTheSameToken) {
  Boot();
  const auto first = Take();
  EXPECT_GE(d_.action_at, 10000);  // the timeout, stretched by up to half
  EXPECT_LE(d_.action_at, 15000);
  Next();
  EXPECT_EQ(Take(), first);
  EXPECT_EQ(Counted(Count::kResent), 1);
  EXPECT_GE(d_.action_at - now_, 20000);  // the timeout doubles while unanswered
  EXPECT_LE(d_.action_at - now_, 30000);
  for (int i = 0; i < 5; ++i) Next();
  EXPECT_GE(d_.action_at - now_, 80000);  // ... up to 8 times
  EXPECT_LE(d_.action_at - now_, 120000);
  Take();
  StartNextAnswer(Document());
  const auto update = Take();
  Next();  // its answer was lost too
  EXPECT_EQ(Take(), update);
  // A late copy of an answer to an older request changes nothing.
  Message(Inbound::kUpdateAccepted, {{"clientToken", "1"}});
  EXPECT_EQ(d_.phase, Phase::kReporting);
}

TEST_F(DeviceTest, RejectedUpdatesAreRetriedOrAbandonedByCode) {
  Boot();
  Take();
  StartNextAnswer(Document());
  const auto update = Take();
  Message(Inbound::kUpdateRejected, {{"clientToken", Token()}, {"code", "RequestThrottled"}});
  EXPECT_EQ(d_.phase, Phase::kReporting);
  EXPECT_THAT(Take(), testing::IsEmpty());
  Next();
  EXPECT_EQ(Take(), update);
  Message(Inbound::kUpdateRejected, {{"clientToken", Token()}, {"code", "TerminalStateReached"}});
  EXPECT_EQ(d_.phase, Phase::kIdle);
  EXPECT_EQ(Counted(Count::kAbandoned), 1);
}

TEST_F(DeviceTest, AfterAReconnectItCatchesUp) {
  Boot();
  Take();
  Machine().OnReconnected(d_, At(500));
  EXPECT_EQ(d_.action_at, 500);  // the start-next it awaited goes out again
  Timer(500);
  EXPECT_THAT(Take(),
              testing::ElementsAre(
                  R"(jobs/start-next {"statusDetails":{"step":"downloading"},"clientToken":"1"})"));
  StartNextAnswer(Document());
  Accepted();
  const int64_t step_end = d_.action_at;
  Machine().OnReconnected(d_, At(600));
  EXPECT_EQ(d_.action_at, step_end);  // a step runs on whatever the network does
  for (int i = 0; i < 3; ++i) {
    Next();
    Accepted();
  }
  EXPECT_EQ(d_.phase, Phase::kIdle);
  Machine().OnReconnected(d_, At(9000));
  Timer(9000);  // idle: it may have missed notices, so it asks
  EXPECT_THAT(Take().back(), testing::HasSubstr("jobs/start-next"));
}

TEST_F(DeviceTest, TelemetryBeforeAndAfterTheUpdateWithTheCrashMultiplier) {
  profile_.devices.crashes_per_hour = 3600;  // one a second
  Profile::Model m1{"m1", profile_.devices, profile_.update, {}};
  Profile::Release crashy{V("2.0.0"), profile_.update};
  crashy.update.crash_rate_multiplier = 10;
  m1.releases.push_back(crashy);
  profile_.models.push_back(m1);
  Machine(1000).Init(d_, 0, At(0));
  Timer(0);
  Take();
  Message(Inbound::kStartNextAccepted, {{"clientToken", Token()}, {"timestamp", kEpoch}});
  EXPECT_LT(d_.telemetry_at, 1000);  // the first report is somewhere in the first interval
  // Before: about one crash per report.
  int64_t reports = 0;
  for (int64_t t = 1000; t <= 100000; t += 1000) {
    Timer(t);
    for (const std::string& line : Take()) {
      ASSERT_TRUE(line.starts_with("telemetry ")) << line;
      Json report = Json::parse(line.substr(10));
      EXPECT_EQ(report["firmware"], "1.0.0");
      ++reports;
    }
  }
  EXPECT_EQ(reports, 100);
  const uint32_t before = d_.crashes;
  EXPECT_GT(before, 70u);
  EXPECT_LT(before, 130u);
  EXPECT_EQ(d_.boots, 1 + before);
  // Update (timers for steps and telemetry interleave).
  Notice();
  StartNextAnswer(Document());
  while (d_.phase != Phase::kIdle) {
    if (d_.phase == Phase::kReporting) {
      Accepted();
      continue;
    }
    Timer(DeviceMachine::NextWake(d_));
  }
  Take();
  // After: ten times as many.
  const int64_t start = now_;
  Json last;
  for (int64_t t = start + 1000; t <= start + 100000; t += 1000) {
    Timer(t);
    for (const std::string& line : Take()) last = Json::parse(line.substr(10));
  }
  EXPECT_EQ(last["firmware"], "2.0.0");
  const int64_t after = last["crashCount"].get<int64_t>() - before;
  EXPECT_GT(after, 800);
  EXPECT_LT(after, 1200);
  EXPECT_EQ(last["bootCount"], d_.boots);
  EXPECT_GE(last["uptimeSeconds"].get<int64_t>(), 0);
  EXPECT_LE(last["uptimeSeconds"].get<int64_t>(), 1);
}

TEST_F(DeviceTest, TheSameSeedMakesTheSameDecisions) {
  profile_.update.download = {{1, 9}, 0.5};
  profile_.update.install.failure_probability = 0.5;
  auto run = [&](uint64_t seed) {
    std::vector<std::string> trace;
    for (int64_t index = 0; index < 40; ++index) {
      DeviceMachine m(spec_, profile_, seed, 0);
      DeviceState d;
      std::vector<Publish> out;
      m.Init(d, index, At(0));
      m.OnTimer(d, index, At(0), &out);
      Json e = {{"jobId", "fw-1"},
                {"executionNumber", 1},
                {"jobDocument", Document(spec_.models[index % 2])}};
      m.OnMessage(d, index, Inbound::kStartNextAccepted,
                  Json{{"clientToken", std::to_string(d.token)}, {"execution", e}}.dump(), At(0),
                  &out);
      for (int step = 0; step < 8 && d.phase != Phase::kIdle; ++step) {
        if (d.phase == Phase::kReporting)
          m.OnMessage(d, index, Inbound::kUpdateAccepted,
                      Json{{"clientToken", std::to_string(d.token)}}.dump(), At(0), &out);
        else
          m.OnTimer(d, index, At(d.action_at), &out);
        trace.push_back(std::to_string(d.action_at));
      }
      for (const Publish& p : out) trace.push_back(p.payload);
    }
    return trace;
  };
  EXPECT_EQ(run(1), run(1));
  EXPECT_NE(run(1), run(2));
}

}  // namespace
}  // namespace simulator
