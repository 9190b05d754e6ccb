#include "fleet/registry.h"

#include <gtest/gtest.h>

namespace fleet {
namespace {

void ExpectError(const std::optional<std::string>& error,
                 std::initializer_list<const char*> parts) {
  ASSERT_TRUE(error) << "expected an error";
  for (const char* part : parts) EXPECT_NE(error->find(part), std::string::npos) << *error;
}

TEST(CheckDeviceId, AcceptsTopicSafeIds) {
  for (const char* id : {"a", "robot-0001", "arm_v2.sn:42", "A.B-C_D:E"})
    EXPECT_FALSE(CheckDeviceId(id)) << id;
  EXPECT_FALSE(CheckDeviceId(std::string(128, 'x')));
}

TEST(CheckDeviceId, RefusesWithFieldValueAndRule) {
  for (const char* id : {"a/b", "a+b", "a#b", "$sys", "has space", "", "é"})
    ExpectError(CheckDeviceId(id), {"device id", "\"", "A-Z a-z 0-9 _ . - :"});
  ExpectError(CheckDeviceId(std::string(129, 'x')), {"device id", "1 to 128"});
  ExpectError(CheckDeviceId("a/b"), {"\"a/b\""});
  ExpectError(CheckDeviceId(std::string("a\0b", 3)), {"\\x00"});
}

TEST(CheckModelAndRing, RefuseColonsAndSlashes) {
  EXPECT_FALSE(CheckModel("arm-v2"));
  ExpectError(CheckModel("arm:v2"), {"model \"arm:v2\"", "1 to 64"});
  ExpectError(CheckModel(""), {"model"});
  EXPECT_FALSE(CheckRing("canary"));
  ExpectError(CheckRing("ring/1"), {"ring \"ring/1\""});
}

TEST(CheckVersion, NamesTheField) {
  EXPECT_FALSE(CheckVersion("firmware", "1.2.3"));
  ExpectError(CheckVersion("firmware", "1.2"), {"firmware \"1.2\"", "semantic version"});
  ExpectError(CheckVersion("version", "x"), {"version \"x\""});
}

TEST(CheckUrl, OnlyHttpWithHost) {
  EXPECT_FALSE(CheckUrl("https://fw.example.com/a.bin"));
  EXPECT_FALSE(CheckUrl("http://10.0.0.1:8080/a.bin"));
  for (const char* url : {"ftp://x/a", "https://", "https:///a", "file:///etc/passwd",
                          "https://a b/c", "fw.example.com/a.bin"})
    ExpectError(CheckUrl(url), {"url", "http:// or https://"});
}

TEST(CheckSha256, ExactlySixtyFourLowercaseHex) {
  EXPECT_FALSE(CheckSha256(std::string(64, 'a')));
  ExpectError(CheckSha256(std::string(63, 'a')), {"sha256", "64 lowercase hex"});
  ExpectError(CheckSha256(std::string(64, 'A')), {"sha256"});
  ExpectError(CheckSha256(std::string(64, 'g')), {"sha256"});
}

TEST(CheckSize, Positive) {
  EXPECT_FALSE(CheckSize(1));
  ExpectError(CheckSize(0), {"size 0", "above 0"});
  ExpectError(CheckSize(-5), {"size -5"});
}

TEST(CheckAttribute, KeyRulesAndValueLength) {
  EXPECT_FALSE(CheckAttribute("site", "lyon"));
  ExpectError(CheckAttribute("si te", "x"), {"attribute key \"si te\""});
  ExpectError(CheckAttribute("site", std::string(257, 'v')), {"site", "257 bytes", "256"});
}

TEST(CheckRecords, ReportTheFirstProblem) {
  Device d{"robot-1", "arm", "1.0.0", "canary", {{"site", "lyon"}}};
  EXPECT_FALSE(CheckDevice(d));
  d.firmware = "1.0";
  ExpectError(CheckDevice(d), {"firmware"});
  d.ring = "bad ring";
  ExpectError(CheckDevice(d), {"firmware"});  // the first problem wins

  Release r{"arm", "1.1.0", "https://fw/a.bin", std::string(64, '0'), 10, ReleaseState::kActive};
  EXPECT_FALSE(CheckRelease(r));
  r.size = 0;
  ExpectError(CheckRelease(r), {"size"});
}

TEST(ReleaseState, RoundTrips) {
  for (auto s : {ReleaseState::kActive, ReleaseState::kHalted, ReleaseState::kRetired})
    EXPECT_EQ(ParseReleaseState(ToString(s)), s);
  EXPECT_FALSE(ParseReleaseState("paused"));
}

}  // namespace
}  // namespace fleet
