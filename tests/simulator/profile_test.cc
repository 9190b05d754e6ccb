#include "simulator/profile.h"

#include <cmath>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace simulator {
namespace {

using testing::HasSubstr;

std::string Error(const std::string& json) {
  std::string error;
  auto p = ParseProfile(json, &error);
  EXPECT_FALSE(p) << json;
  return error;
}

fleet::Version V(const char* text) { return *fleet::Version::Parse(text); }

TEST(Profile, EmptyObjectIsTheHealthyDefault) {
  std::string error;
  auto p = ParseProfile("{}", &error);
  ASSERT_TRUE(p) << error;
  EXPECT_EQ(p->devices, DeviceBehaviour{});
  EXPECT_EQ(p->update, UpdateBehaviour{});
  EXPECT_EQ(p->request_timeout_seconds, 30);
  EXPECT_TRUE(p->models.empty());
  EXPECT_TRUE(p->reconnect_storms.empty());
  // Healthy: nothing fails, rejects, goes silent or crashes more after an update.
  const UpdateBehaviour& u = p->update;
  EXPECT_EQ(u.reject_probability, 0);
  EXPECT_EQ(u.silent_fraction, 0);
  EXPECT_EQ(u.crash_rate_multiplier, 1);
  EXPECT_EQ(
      u.download.failure_probability + u.install.failure_probability + u.reboot.failure_probability,
      0);
  EXPECT_EQ(p->devices.offline_fraction, 0);
}

TEST(Profile, EveryFieldIsRead) {
  std::string error;
  auto p = ParseProfile(R"({
    "requestTimeoutSeconds": 5,
    "devices": {"offlineFraction": 0.01, "crashesPerHour": 0.5,
                "lateJoin": {"fraction": 0.1, "delaySeconds": {"min": 10, "max": 60}}},
    "update": {"rejectProbability": 0.02, "silentFraction": 0.03, "crashRateMultiplier": 2,
               "reportSteps": false, "servedImage": "corrupt",
               "download": {"seconds": {"min": 1, "max": 2}, "failureProbability": 0.1},
               "install": {"seconds": 3, "failureProbability": 0.2},
               "reboot": {"seconds": 0, "failureProbability": 0.3}},
    "reconnectStorms": [{"atSeconds": 60, "connectionFraction": 0.5,
                         "downSeconds": {"min": 1, "max": 2}},
                        {"atSeconds": 90, "connectionFraction": 1}]
  })",
                        &error);
  ASSERT_TRUE(p) << error;
  EXPECT_EQ(p->request_timeout_seconds, 5);
  EXPECT_EQ(p->devices.offline_fraction, 0.01);
  EXPECT_EQ(p->devices.crashes_per_hour, 0.5);
  EXPECT_EQ(p->devices.late_join_fraction, 0.1);
  EXPECT_EQ(p->devices.late_join_delay, (Distribution{10, 60}));
  EXPECT_EQ(p->update.reject_probability, 0.02);
  EXPECT_EQ(p->update.silent_fraction, 0.03);
  EXPECT_EQ(p->update.crash_rate_multiplier, 2);
  EXPECT_FALSE(p->update.report_steps);
  EXPECT_EQ(p->update.served_image, ServedImage::kCorrupt);
  EXPECT_EQ(p->update.download, (StepBehaviour{{1, 2}, 0.1}));
  EXPECT_EQ(p->update.install, (StepBehaviour{{3, 3}, 0.2}));
  EXPECT_EQ(p->update.reboot, (StepBehaviour{{0, 0}, 0.3}));
  ASSERT_EQ(p->reconnect_storms.size(), 2u);
  EXPECT_EQ(p->reconnect_storms[0], (ReconnectStorm{60, 0.5, {1, 2}}));
  EXPECT_EQ(p->reconnect_storms[1], (ReconnectStorm{90, 1, {1, 5}}));  // default downSeconds
}

TEST(Profile, ModelsAndReleasesLayerFieldByField) {
  std::string error;
  auto p = ParseProfile(R"({
    "models": {
      "sensor-b": {
        "devices": {"crashesPerHour": 2},
        "update": {"rejectProbability": 0.5},
        "releases": {"2.0.0": {"crashRateMultiplier": 40,
                               "install": {"failureProbability": 0.25}}}
      }
    },
    "devices": {"offlineFraction": 0.1},
    "update": {"silentFraction": 0.2}
  })",
                        &error);
  ASSERT_TRUE(p) << error;
  // Other models: the profile-wide layer (read first, whatever the order in the file).
  EXPECT_EQ(p->Devices("sensor-a").offline_fraction, 0.1);
  EXPECT_EQ(p->Update("sensor-a", V("2.0.0")).silent_fraction, 0.2);
  EXPECT_EQ(p->Update("sensor-a", V("2.0.0")).crash_rate_multiplier, 1);
  // The model inherits what it does not override.
  const DeviceBehaviour& b = p->Devices("sensor-b");
  EXPECT_EQ(b.offline_fraction, 0.1);
  EXPECT_EQ(b.crashes_per_hour, 2);
  const UpdateBehaviour& other = p->Update("sensor-b", V("1.5.0"));
  EXPECT_EQ(other.reject_probability, 0.5);
  EXPECT_EQ(other.silent_fraction, 0.2);
  EXPECT_EQ(other.crash_rate_multiplier, 1);
  // The release inherits from its model, step fields one by one.
  const UpdateBehaviour& bad = p->Update("sensor-b", V("2.0.0"));
  EXPECT_EQ(bad.reject_probability, 0.5);
  EXPECT_EQ(bad.silent_fraction, 0.2);
  EXPECT_EQ(bad.crash_rate_multiplier, 40);
  EXPECT_EQ(bad.install.failure_probability, 0.25);
  EXPECT_EQ(bad.install.seconds, (Distribution{2, 4}));
  // Versions match by precedence: build metadata is ignored.
  EXPECT_EQ(p->Update("sensor-b", V("2.0.0+build.7")).crash_rate_multiplier, 40);
}

TEST(Profile, ErrorsNameTheFieldPath) {
  EXPECT_THAT(Error("[1]"), HasSubstr("the profile must be an object"));
  EXPECT_THAT(Error("{"), HasSubstr("the profile is not valid JSON"));
  EXPECT_THAT(Error(R"({"devise": {}})"), HasSubstr("unknown field devise (allowed: "));
  EXPECT_THAT(Error(R"({"update": {"install": {"secs": 1}}})"),
              HasSubstr("unknown field update.install.secs (allowed in update.install: seconds, "
                        "failureProbability)"));
  EXPECT_EQ(Error(R"({"update": {"install": {"failureProbability": 2}}})"),
            "update.install.failureProbability must be in [0, 1], got 2");
  EXPECT_EQ(Error(R"({"update": {"rejectProbability": -0.1}})"),
            "update.rejectProbability must be in [0, 1], got -0.1");
  EXPECT_EQ(Error(R"({"update": {"silentFraction": "a lot"}})"),
            "update.silentFraction must be a number, got string \"a lot\"");
  EXPECT_EQ(Error(R"({"update": {"reportSteps": 1}})"),
            "update.reportSteps must be true or false, got 1");
  EXPECT_EQ(Error(R"({"update": {"servedImage": "evil"}})"),
            "update.servedImage must be \"declared\", \"oversized\" or \"corrupt\", got \"evil\"");
  EXPECT_EQ(Error(R"({"update": {"crashRateMultiplier": -1}})"),
            "update.crashRateMultiplier must be in [0, 1000000], got -1");
  EXPECT_EQ(Error(R"({"devices": {"crashesPerHour": -1}})"),
            "devices.crashesPerHour must be in [0, 10000000], got -1");
  EXPECT_EQ(Error(R"({"devices": {"offlineFraction": 1.5}})"),
            "devices.offlineFraction must be in [0, 1], got 1.5");
  EXPECT_EQ(Error(R"({"devices": {"lateJoin": {"fraction": 0.1, "delaySeconds": {"min": 5}}}})"),
            "devices.lateJoin.delaySeconds.max is required");
  EXPECT_EQ(Error(R"({"devices": {"lateJoin": {"delaySeconds": {"min": 5, "max": 1}}}})"),
            "devices.lateJoin.delaySeconds.max must be at least devices.lateJoin.delaySeconds.min "
            "(5), got 1");
  EXPECT_EQ(Error(R"({"update": {"download": {"seconds": -1}}})"),
            "update.download.seconds must be in [0, 315360000], got -1");
  EXPECT_EQ(Error(R"({"update": {"download": {"seconds": "3s"}}})"),
            "update.download.seconds must be seconds (a number) or {\"min\": s, \"max\": s}, got "
            "string \"3s\"");
  EXPECT_EQ(Error(R"({"update": {"download": {"seconds": {"min": 1, "max": 2, "p": 1}}}})"),
            "unknown field update.download.seconds.p (allowed in update.download.seconds: min, "
            "max)");
  EXPECT_EQ(Error(R"({"update": {"reboot": []}})"),
            "update.reboot must be an object, got array []");
  EXPECT_EQ(Error(R"({"requestTimeoutSeconds": 0})"),
            "requestTimeoutSeconds must be in (0, 3600], got 0");
  EXPECT_EQ(Error(R"({"update": {"silentFraction": 0.1, "silentFraction": 0.2}})"),
            "field \"silentFraction\" appears twice in one object");
}

TEST(Profile, ModelAndReleaseErrors) {
  EXPECT_THAT(Error(R"({"models": {"bad model": {}}})"),
              HasSubstr("models.bad model: the key must be a model name"));
  EXPECT_EQ(Error(R"({"models": []})"), "models must be an object, got array []");
  EXPECT_THAT(Error(R"({"models": {"m1": {"firmware": {}}}})"),
              HasSubstr("unknown field models.m1.firmware (allowed in models.m1: devices, update, "
                        "releases)"));
  EXPECT_EQ(Error(R"({"models": {"m1": {"devices": {"offlineFraction": 3}}}})"),
            "models.m1.devices.offlineFraction must be in [0, 1], got 3");
  EXPECT_EQ(Error(R"({"models": {"m1": {"update": {"install": {"failureProbability": 3}}}}})"),
            "models.m1.update.install.failureProbability must be in [0, 1], got 3");
  EXPECT_THAT(Error(R"({"models": {"m1": {"releases": {"v2": {}}}}})"),
              HasSubstr("models.m1.releases.v2: the key must be a semantic version"));
  EXPECT_EQ(Error(R"({"models": {"m1": {"releases": {"2.0.0": {"rejectProbability": 7}}}}})"),
            "models.m1.releases.2.0.0.rejectProbability must be in [0, 1], got 7");
  EXPECT_EQ(Error(R"({"models": {"m1": {"releases": {"2.0.0": {}, "2.0.0+b": {}}}}})"),
            "models.m1.releases.2.0.0+b names the same version as models.m1.releases.2.0.0");
}

TEST(Profile, StormErrors) {
  EXPECT_EQ(Error(R"({"reconnectStorms": {}})"), "reconnectStorms must be an array, got object {}");
  EXPECT_EQ(Error(R"({"reconnectStorms": [{"connectionFraction": 0.5}]})"),
            "reconnectStorms[0].atSeconds is required");
  EXPECT_EQ(Error(R"({"reconnectStorms": [{"atSeconds": 1, "connectionFraction": 0.5},
                                          {"atSeconds": 2, "connectionFraction": 2}]})"),
            "reconnectStorms[1].connectionFraction must be in [0, 1], got 2");
  EXPECT_THAT(Error(R"({"reconnectStorms": [{"atSeconds": 1, "connectionFraction": 1,
                                             "when": 3}]})"),
              HasSubstr("unknown field reconnectStorms[0].when"));
}

TEST(Rng, IsAPureFunctionOfItsKey) {
  Rng a(7, 42, Purpose::kCrash, 3), b(7, 42, Purpose::kCrash, 3);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.Next(), b.Next());
  // Any part of the key changes the stream.
  const uint64_t first = Rng(7, 42, Purpose::kCrash, 3).Next();
  EXPECT_NE(first, Rng(8, 42, Purpose::kCrash, 3).Next());
  EXPECT_NE(first, Rng(7, 43, Purpose::kCrash, 3).Next());
  EXPECT_NE(first, Rng(7, 42, Purpose::kSilent, 3).Next());
  EXPECT_NE(first, Rng(7, 42, Purpose::kCrash, 4).Next());
}

TEST(Rng, DistributionsHaveTheirShape) {
  int hits = 0;
  double sum = 0, poisson = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    Rng rng(1, static_cast<uint64_t>(i), Purpose::kStepDuration);
    double u = rng.Uniform();
    ASSERT_GE(u, 0);
    ASSERT_LT(u, 1);
    hits += rng.Chance(0.25);
    double s = rng.Seconds({2, 4});
    ASSERT_GE(s, 2);
    ASSERT_LE(s, 4);
    sum += s;
    poisson += static_cast<double>(rng.Poisson(3));
  }
  EXPECT_NEAR(hits / double(n), 0.25, 0.02);
  EXPECT_NEAR(sum / n, 3, 0.05);
  EXPECT_NEAR(poisson / n, 3, 0.1);
  Rng rng(1, 2, Purpose::kCrash);
  EXPECT_EQ(rng.Seconds({5, 5}), 5);
  EXPECT_FALSE(rng.Chance(0));
  EXPECT_EQ(rng.Poisson(0), 0);
  double large = 0;
  for (int i = 0; i < 1000; ++i) large += static_cast<double>(rng.Poisson(1000));
  EXPECT_NEAR(large / 1000, 1000, 10);
}

}  // namespace
}  // namespace simulator
