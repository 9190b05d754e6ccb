#include "fleet/wave_planner.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include <gtest/gtest.h>

namespace fleet {
namespace {

std::vector<int64_t> Targets(int64_t n) { return CumulativeTargets(n, Plan{}.waves); }

TEST(CumulativeTargets, DefaultPlanSizes) {
  // Default waves: 1% (minDevices 1), 10%, 50%, 100%.
  EXPECT_EQ(Targets(0), (std::vector<int64_t>{0, 0, 0, 0}));
  EXPECT_EQ(Targets(1), (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_EQ(Targets(3), (std::vector<int64_t>{1, 1, 2, 3}));
  EXPECT_EQ(Targets(10), (std::vector<int64_t>{1, 1, 5, 10}));
  EXPECT_EQ(Targets(101), (std::vector<int64_t>{2, 11, 51, 101}));
  EXPECT_EQ(Targets(1000), (std::vector<int64_t>{10, 100, 500, 1000}));
  EXPECT_EQ(Targets(1000000), (std::vector<int64_t>{10000, 100000, 500000, 1000000}));
  EXPECT_EQ(WaveSizes(Targets(3)), (std::vector<int64_t>{1, 0, 1, 1}));
  EXPECT_EQ(WaveSizes(Targets(10)), (std::vector<int64_t>{1, 0, 4, 5}));
  EXPECT_EQ(WaveSizes(Targets(1000)), (std::vector<int64_t>{10, 90, 400, 500}));
}

TEST(CumulativeTargets, MinDevicesLiftsButNeverBeyondN) {
  std::vector<WaveSpec> waves = {{1, 5}, {100, 0}};
  EXPECT_EQ(CumulativeTargets(10, waves), (std::vector<int64_t>{5, 10}));
  EXPECT_EQ(CumulativeTargets(3, waves), (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(CumulativeTargets(1000, waves), (std::vector<int64_t>{10, 1000}));
  // A later wave's minDevices lifts it; an earlier one's can cover later waves (empty waves).
  EXPECT_EQ(CumulativeTargets(100, {{10, 0}, {20, 50}, {100, 0}}),
            (std::vector<int64_t>{10, 50, 100}));
  EXPECT_EQ(CumulativeTargets(100, {{1, 60}, {50, 0}, {100, 0}}),
            (std::vector<int64_t>{60, 60, 100}));
  EXPECT_EQ(CumulativeTargets(0, {{1, 60}, {100, 0}}), (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(CumulativeTargets(5, {{100, 10}}), (std::vector<int64_t>{5}));
}

TEST(CumulativeTargets, ExactIntegerCeiling) {
  // 33.3333% of 3 is 0.999999 devices: ceil gives 1, with no floating-point drift.
  EXPECT_EQ(CumulativeTargets(3, {{33.3333, 0}, {100, 0}}), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(CumulativeTargets(1000000, {{0.0001, 0}, {100, 0}}),
            (std::vector<int64_t>{1, 1000000}));
  EXPECT_EQ(CumulativeTargets(1000001, {{0.0001, 0}, {100, 0}}),
            (std::vector<int64_t>{2, 1000001}));
  EXPECT_EQ(CumulativeTargets(300, {{0.1, 0}, {100, 0}}), (std::vector<int64_t>{1, 300}));
  EXPECT_EQ(CumulativeTargets(1000, {{0.1, 0}, {100, 0}}), (std::vector<int64_t>{1, 1000}));
  // No overflow for a huge N.
  EXPECT_EQ(CumulativeTargets(int64_t{10000000000000}, {{1, 0}, {100, 0}}),
            (std::vector<int64_t>{100000000000, 10000000000000}));
  EXPECT_EQ(CumulativeTargets(int64_t{10000000000001}, {{33.3333, 0}, {100, 0}})[0],
            int64_t{3333330000001});
}

// Properties over many random plans and sizes.
TEST(CumulativeTargets, Properties) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 2000; ++round) {
    int k = 1 + static_cast<int>(rng() % 6);
    std::set<int64_t> ppms;
    while (static_cast<int>(ppms.size()) < k - 1) ppms.insert(1 + rng() % 999999);
    ppms.insert(1000000);
    std::vector<WaveSpec> waves;
    for (int64_t ppm : ppms)
      waves.push_back({static_cast<double>(ppm) / 10000.0,
                       static_cast<int64_t>(rng() % 4 == 0 ? rng() % 50 : 0)});
    int64_t n = static_cast<int64_t>(round < 1000 ? rng() % 40 : rng() % 2000000);
    std::vector<int64_t> t = CumulativeTargets(n, waves);
    ASSERT_EQ(t.size(), waves.size());
    EXPECT_EQ(t.back(), n);
    std::vector<int64_t> sizes = WaveSizes(t);
    EXPECT_EQ(std::accumulate(sizes.begin(), sizes.end(), int64_t{0}), n);
    int64_t previous = 0;
    int64_t previous_ppm = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      int64_t ppm = PercentPpm(waves[i].percent);
      int64_t share = (n * ppm + 999999) / 1000000;  // exact for these n
      EXPECT_GE(t[i], previous);
      EXPECT_LE(t[i], n);
      EXPECT_GE(t[i], std::min(n, std::max(share, waves[i].min_devices)));
      if (t[i] == previous && n > 0) {
        // Empty wave: only when the step is under one device or an earlier minDevices covered it.
        bool small_step = n * (ppm - previous_ppm) < 1000000;
        bool covered = false;
        for (size_t j = 0; j < i; ++j) covered = covered || waves[j].min_devices >= t[i];
        EXPECT_TRUE(small_step || covered) << "n=" << n << " wave " << i;
      }
      previous = t[i];
      previous_ppm = ppm;
    }
  }
}

TEST(WaveOf, PositionsMapToWaves) {
  std::vector<int64_t> t = {1, 1, 2, 3};  // wave 2 is empty
  EXPECT_EQ(WaveOf(0, t), 1);
  EXPECT_EQ(WaveOf(1, t), 3);
  EXPECT_EQ(WaveOf(2, t), 4);
  EXPECT_EQ(WaveOf(3, t), 0);
  EXPECT_EQ(WaveOf(-1, t), 0);
  EXPECT_EQ(WaveOf(0, {}), 0);
  EXPECT_EQ(WaveOf(0, {0, 0}), 0);
  std::vector<int64_t> big = Targets(1000000);
  EXPECT_EQ(WaveOf(0, big), 1);
  EXPECT_EQ(WaveOf(9999, big), 1);
  EXPECT_EQ(WaveOf(10000, big), 2);
  EXPECT_EQ(WaveOf(99999, big), 2);
  EXPECT_EQ(WaveOf(100000, big), 3);
  EXPECT_EQ(WaveOf(999999, big), 4);
  EXPECT_EQ(WaveOf(1000000, big), 0);
  // Every position of every wave.
  std::vector<int64_t> sizes = WaveSizes(Targets(1000));
  int64_t pos = 0;
  for (size_t w = 0; w < sizes.size(); ++w)
    for (int64_t i = 0; i < sizes[w]; ++i) ASSERT_EQ(WaveOf(pos++, Targets(1000)), int(w) + 1);
}

TEST(Md5, Rfc1321Vectors) {
  EXPECT_EQ(Md5Hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(Md5Hex("a"), "0cc175b9c0f1b6a831c399e269772661");
  EXPECT_EQ(Md5Hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(Md5Hex("message digest"), "f96b697d7cb7938d525a2f31aaf161d0");
  EXPECT_EQ(Md5Hex("abcdefghijklmnopqrstuvwxyz"), "c3fcd3d76192e4007dfb496cca67e13b");
  EXPECT_EQ(Md5Hex("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"),
            "d174ab98d277d9f5a5611c2c9f419d9f");
  EXPECT_EQ(Md5Hex("1234567890123456789012345678901234567890123456789012345678901234567890123456"
                   "7890"),
            "57edf4a22be3c955ac49da2e2107b67a");
}

TEST(Md5, PaddingBoundaries) {
  const std::map<size_t, const char*> expected = {
      {55, "ef1772b6dff9a122358552954ad0df65"},  {56, "3b0c8ac703f828b04c6c197006d17218"},
      {63, "b06521f39153d618550606be297466d5"},  {64, "014842d480b571495a4a0363793f7367"},
      {65, "c743a45e0d2e6a95cb859adae0248435"},  {119, "8a7bd0732ed6a28ce75f6dabc90e1613"},
      {120, "5f61c0ccad4cac44c75ff505e1f1e537"}, {128, "e510683b3f5ffe4093d021808bc6ff70"}};
  for (const auto& [length, digest] : expected)
    EXPECT_EQ(Md5Hex(std::string(length, 'a')), digest) << length;
}

TEST(StableRank, IsTheFirstEightBytesOfTheMd5OfRolloutSlashDevice) {
  // md5('fw-arm-2.0.0-c1/robot-0001') = 87bdde32892be142bd13a41b56ced91a, as PostgreSQL's md5().
  EXPECT_EQ(StableRankHex("robot-0001", "fw-arm-2.0.0-c1"), "87bdde32892be142");
  EXPECT_EQ(StableRank("robot-0001", "fw-arm-2.0.0-c1"), 0x87bdde32892be142u);
  for (int i = 0; i < 1000; ++i) {
    std::string id = "dev-" + std::to_string(i);
    EXPECT_EQ(StableRank(id, "r"), std::stoull(StableRankHex(id, "r"), nullptr, 16));
  }
}

TEST(StableRank, DependsOnDeviceAndRollout) {
  EXPECT_EQ(StableRank("d1", "r1"), StableRank("d1", "r1"));
  EXPECT_NE(StableRank("d1", "r1"), StableRank("d2", "r1"));
  EXPECT_NE(StableRank("d1", "r1"), StableRank("d1", "r2"));
  // The separator keeps ("ab", "c") apart from ("b", "ca") and friends.
  EXPECT_NE(StableRank("b", "a"), StableRank("", "ab"));
}

TEST(StableRank, IsRoughlyUniform) {
  // 100,000 devices into 10 buckets of the rank space: each near 10,000 (sd ~95).
  std::vector<int> buckets(10);
  for (int i = 0; i < 100000; ++i) {
    uint64_t rank = StableRank("robot-" + std::to_string(i), "fw-x-1.0.0-c7");
    ++buckets[static_cast<size_t>(rank / (UINT64_MAX / 10 + 1))];
  }
  for (int b : buckets) EXPECT_NEAR(b, 10000, 500);
}

std::vector<Candidate> Fleet(int n, int canaries) {
  std::vector<Candidate> fleet;
  for (int i = 0; i < n; ++i)
    fleet.push_back({"robot-" + std::to_string(i), i < canaries ? "canary" : "default"});
  return fleet;
}

std::vector<std::string> Ids(const std::vector<Candidate>& candidates) {
  std::vector<std::string> ids;
  for (const Candidate& c : candidates) ids.push_back(c.id);
  return ids;
}

TEST(OrderForRollout, CanaryFirstThenRankThenId) {
  std::vector<Candidate> fleet = Fleet(200, 0);
  for (int i : {17, 99, 150}) fleet[i].ring = "canary";
  std::vector<Candidate> ordered = OrderForRollout(fleet, "fw-a-1.0.0-c1");
  ASSERT_EQ(ordered.size(), 200u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ordered[i].ring, "canary");
  for (size_t i = 3; i < ordered.size(); ++i) EXPECT_NE(ordered[i].ring, "canary");
  for (size_t i = 1; i < ordered.size(); ++i) {
    if (ordered[i - 1].ring != ordered[i].ring) continue;
    uint64_t a = StableRank(ordered[i - 1].id, "fw-a-1.0.0-c1");
    uint64_t b = StableRank(ordered[i].id, "fw-a-1.0.0-c1");
    EXPECT_TRUE(a < b || (a == b && ordered[i - 1].id <= ordered[i].id));
  }
  // Other rings are not special.
  std::vector<Candidate> rings = {{"x", "beta"}, {"y", "default"}, {"z", "canary"}};
  EXPECT_EQ(OrderForRollout(rings, "r")[0].id, "z");
}

TEST(OrderForRollout, StableWhateverTheInputOrder) {
  std::vector<Candidate> fleet = Fleet(1000, 20);
  std::vector<std::string> first = Ids(OrderForRollout(fleet, "fw-a-2.0.0-c3"));
  std::mt19937 rng(1);
  for (int round = 0; round < 5; ++round) {
    std::shuffle(fleet.begin(), fleet.end(), rng);
    EXPECT_EQ(Ids(OrderForRollout(fleet, "fw-a-2.0.0-c3")), first);
  }
  // Another rollout of the same fleet picks a different order.
  EXPECT_NE(Ids(OrderForRollout(fleet, "fw-a-2.0.0-c4")), first);
}

TEST(OrderForRollout, ADeviceRankIsIndependentOfTheOthers) {
  // A grown fleet keeps the relative order of the devices it had: a resumed rollout that sees
  // new devices still picks the same old ones first.
  std::vector<std::string> small = Ids(OrderForRollout(Fleet(500, 0), "r"));
  std::vector<std::string> grown = Ids(OrderForRollout(Fleet(2000, 0), "r"));
  std::set<std::string> members(small.begin(), small.end());
  std::vector<std::string> filtered;
  for (const std::string& id : grown)
    if (members.count(id)) filtered.push_back(id);
  EXPECT_EQ(filtered, small);
}

TEST(OrderForRollout, EmptyAndDuplicates) {
  EXPECT_TRUE(OrderForRollout({}, "r").empty());
  std::vector<Candidate> twice = {{"a", "default"}, {"a", "default"}, {"b", "canary"}};
  EXPECT_EQ(Ids(OrderForRollout(twice, "r")), (std::vector<std::string>{"b", "a", "a"}));
}

TEST(OrderForRollout, MillionDevicesIsCheap) {
  std::vector<Candidate> fleet = Fleet(1000000, 100);
  auto start = std::chrono::steady_clock::now();
  std::vector<Candidate> ordered = OrderForRollout(std::move(fleet), "fw-big-1.0.0-c1");
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(ordered.size(), 1000000u);
  EXPECT_EQ(ordered[99].ring, "canary");
  EXPECT_EQ(ordered[100].ring, "default");
  EXPECT_LT(seconds, 10.0);
  std::printf("ordered 1,000,000 devices in %.3f s\n", seconds);
}

TEST(QueueAllowance, RespectsTheRate) {
  EXPECT_EQ(QueueAllowance(0, 5000, 1000), 1000);  // unlimited
  EXPECT_EQ(QueueAllowance(100, 30, 1000), 70);
  EXPECT_EQ(QueueAllowance(100, 30, 10), 10);
  EXPECT_EQ(QueueAllowance(100, 100, 10), 0);
  EXPECT_EQ(QueueAllowance(100, 150, 10), 0);
  EXPECT_EQ(QueueAllowance(100, 0, -3), 0);
  EXPECT_EQ(QueueAllowance(0, 0, -3), 0);
}

}  // namespace
}  // namespace fleet
