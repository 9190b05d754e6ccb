#include "fleet/version.h"

#include <algorithm>
#include <random>

#include <gtest/gtest.h>

namespace fleet {
namespace {

Version V(const char* text) {
  std::string error;
  auto v = Version::Parse(text, &error);
  EXPECT_TRUE(v) << text << ": " << error;
  return v.value_or(Version());
}

TEST(Version, ParsesFields) {
  Version v = V("1.22.333-rc.1+build.7");
  EXPECT_EQ(v.major(), 1u);
  EXPECT_EQ(v.minor(), 22u);
  EXPECT_EQ(v.patch(), 333u);
  EXPECT_EQ(v.prerelease(), (std::vector<std::string>{"rc", "1"}));
  EXPECT_EQ(v.build(), "build.7");
  EXPECT_EQ(v.ToString(), "1.22.333-rc.1+build.7");
}

TEST(Version, RejectsMalformedWithReason) {
  struct Case {
    const char* text;
    const char* reason;
  } cases[] = {
      {"", "empty"},
      {"1.0", "three numbers"},
      {"1", "three numbers"},
      {"1.0.0.0", "more than three"},
      {"01.0.0", "leading zero"},
      {"1.00.0", "leading zero"},
      {"a.b.c", "MAJOR must be a number"},
      {"1.0.x", "PATCH must be a number"},
      {"1.0.0-", "empty identifier"},
      {"1.0.0-rc..1", "empty identifier"},
      {"1.0.0-01", "leading zero"},
      {"1.0.0-r c", "pre-release may use only"},
      {"1.0.0+", "empty identifier"},
      {"1.0.0+a_b", "build metadata may use only"},
      {"v1.0.0", "MAJOR must be a number"},
      {"1.0.0 ", "PATCH must be a number"},
      {"1234567890123456789.0.0", "more than 18 digits"},
      {"-1.0.0", "three numbers"},
  };
  for (const Case& c : cases) {
    std::string error;
    EXPECT_FALSE(Version::Parse(c.text, &error)) << c.text;
    EXPECT_NE(error.find(c.reason), std::string::npos) << c.text << " -> " << error;
    EXPECT_NE(error.find("MAJOR.MINOR.PATCH"), std::string::npos) << error;
  }
  std::string error;
  EXPECT_FALSE(Version::Parse(std::string(200, '1'), &error));
  EXPECT_NE(error.find("longer than 128"), std::string::npos);
}

// The precedence example of semver.org §11, in ascending order, plus numeric-field cases.
const std::vector<const char*> kAscending = {"0.0.0",
                                             "0.9.9",
                                             "1.0.0-0",
                                             "1.0.0-2",
                                             "1.0.0-10",
                                             "1.0.0-alpha",
                                             "1.0.0-alpha.1",
                                             "1.0.0-alpha.beta",
                                             "1.0.0-alphabet",
                                             "1.0.0-beta",
                                             "1.0.0-beta.2",
                                             "1.0.0-beta.11",
                                             "1.0.0-rc.1",
                                             "1.0.0",
                                             "1.0.1",
                                             "1.9.0",
                                             "1.10.0",
                                             "1.10.1-rc-1",
                                             "1.10.1",
                                             "2.0.0-rc.1",
                                             "2.0.0",
                                             "10.0.0",
                                             "100000000000000000.0.0"};

TEST(Version, OrdersBySemverPrecedence) {
  for (size_t i = 0; i < kAscending.size(); ++i) {
    for (size_t j = 0; j < kAscending.size(); ++j) {
      auto a = V(kAscending[i]), b = V(kAscending[j]);
      EXPECT_EQ(a < b, i < j) << kAscending[i] << " vs " << kAscending[j];
      EXPECT_EQ(a == b, i == j) << kAscending[i] << " vs " << kAscending[j];
    }
  }
}

TEST(Version, SortKeyByteOrderMatchesPrecedence) {
  for (size_t i = 0; i < kAscending.size(); ++i) {
    for (size_t j = 0; j < kAscending.size(); ++j) {
      std::string a = V(kAscending[i]).SortKey(), b = V(kAscending[j]).SortKey();
      EXPECT_EQ(a < b, i < j) << kAscending[i] << " vs " << kAscending[j];
    }
  }
}

TEST(Version, SortKeyAgreesWithCompareOnRandomVersions) {
  std::mt19937 rng(42);
  const char* ids[] = {"0", "1", "2", "10", "alpha", "beta", "a-b", "rc", "x1", "11"};
  auto random_version = [&] {
    std::string s = std::to_string(rng() % 3) + "." + std::to_string(rng() % 12) + "." +
                    std::to_string(rng() % 3);
    for (int n = rng() % 4, i = 0; i < n; ++i)
      s += (i == 0 ? "-" : ".") + std::string(ids[rng() % 10]);
    return V(s.c_str());
  };
  for (int i = 0; i < 20000; ++i) {
    Version a = random_version(), b = random_version();
    EXPECT_EQ(a < b, a.SortKey() < b.SortKey()) << a.ToString() << " vs " << b.ToString();
    EXPECT_EQ(a == b, a.SortKey() == b.SortKey()) << a.ToString() << " vs " << b.ToString();
  }
}

TEST(Version, BuildMetadataDoesNotAffectPrecedence) {
  EXPECT_EQ(V("1.0.0+a"), V("1.0.0+b"));
  EXPECT_EQ(V("1.0.0+a").SortKey(), V("1.0.0").SortKey());
}

}  // namespace
}  // namespace fleet
