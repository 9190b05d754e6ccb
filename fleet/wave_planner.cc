#include "fleet/wave_planner.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "fleet/registry.h"

namespace fleet {
namespace {

// MD5 (RFC 1321). Chosen over a faster non-cryptographic hash because PostgreSQL has it built in
// (md5(text), implemented in C): the controller can order a million devices in one query and get
// byte-for-byte the order this file computes. Its cryptographic weakness does not matter here: the
// rank only has to be uniform and stable.
class Md5 {
 public:
  std::array<uint8_t, 16> Digest(std::string_view data) {
    uint32_t state[4] = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476};
    size_t full = data.size() / 64;
    for (size_t i = 0; i < full; ++i)
      Block(state, reinterpret_cast<const uint8_t*>(data.data()) + 64 * i);
    // Padding: 0x80, zeros, then the bit length little-endian, to a multiple of 64 bytes.
    uint8_t tail[128] = {};
    size_t rest = data.size() - 64 * full;
    if (rest) std::memcpy(tail, data.data() + 64 * full, rest);
    tail[rest] = 0x80;
    size_t tail_len = rest + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = static_cast<uint64_t>(data.size()) * 8;
    for (int i = 0; i < 8; ++i) tail[tail_len - 8 + i] = static_cast<uint8_t>(bits >> (8 * i));
    for (size_t off = 0; off < tail_len; off += 64) Block(state, tail + off);
    std::array<uint8_t, 16> out;
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) out[4 * i + j] = static_cast<uint8_t>(state[i] >> (8 * j));
    return out;
  }

 private:
  static uint32_t Rotl(uint32_t x, int c) { return (x << c) | (x >> (32 - c)); }

  static void Block(uint32_t state[4], const uint8_t* p) {
    static constexpr int kShift[64] = {7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
                                       5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20, 5, 9,  14, 20,
                                       4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
                                       6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21};
    static constexpr uint32_t kK[64] = {
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
        0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
        0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
        0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
        0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
        0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
        0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
        0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
        0xeb86d391};
    uint32_t m[16];
    for (int i = 0; i < 16; ++i)
      m[i] = uint32_t{p[4 * i]} | uint32_t{p[4 * i + 1]} << 8 | uint32_t{p[4 * i + 2]} << 16 |
             uint32_t{p[4 * i + 3]} << 24;
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    for (int i = 0; i < 64; ++i) {
      uint32_t f;
      int g;
      if (i < 16) {
        f = (b & c) | (~b & d);
        g = i;
      } else if (i < 32) {
        f = (d & b) | (~d & c);
        g = (5 * i + 1) % 16;
      } else if (i < 48) {
        f = b ^ c ^ d;
        g = (3 * i + 5) % 16;
      } else {
        f = c ^ (b | ~d);
        g = (7 * i) % 16;
      }
      uint32_t next = b + Rotl(a + f + kK[i] + m[g], kShift[i]);
      a = d;
      d = c;
      c = b;
      b = next;
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
  }
};

std::string RankInput(std::string_view device_id, std::string_view rollout_id) {
  std::string input;
  input.reserve(rollout_id.size() + 1 + device_id.size());
  input.append(rollout_id).append("/").append(device_id);
  return input;
}

}  // namespace

std::vector<int64_t> CumulativeTargets(int64_t n, const std::vector<WaveSpec>& waves) {
  std::vector<int64_t> targets;
  targets.reserve(waves.size());
  int64_t previous = 0;
  for (const WaveSpec& w : waves) {
    int64_t ppm = PercentPpm(w.percent);
    // ceil(n * ppm / 10^6) without overflow for any n: split n into whole millions and the rest.
    constexpr int64_t kM = kPpmPerHundredPercent;
    int64_t share = (n / kM) * ppm + ((n % kM) * ppm + kM - 1) / kM;
    int64_t target = std::min(n, std::max(share, w.min_devices));
    previous = std::max(previous, target);
    targets.push_back(previous);
  }
  return targets;
}

std::vector<int64_t> WaveSizes(const std::vector<int64_t>& cumulative) {
  std::vector<int64_t> sizes;
  sizes.reserve(cumulative.size());
  int64_t previous = 0;
  for (int64_t t : cumulative) {
    sizes.push_back(t - previous);
    previous = t;
  }
  return sizes;
}

int WaveOf(int64_t position, const std::vector<int64_t>& cumulative) {
  auto it = std::upper_bound(cumulative.begin(), cumulative.end(), position);
  if (position < 0 || it == cumulative.end()) return 0;
  return static_cast<int>(it - cumulative.begin()) + 1;
}

std::string Md5Hex(std::string_view data) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint8_t byte : Md5().Digest(data)) {
    out += kHex[byte >> 4];
    out += kHex[byte & 15];
  }
  return out;
}

uint64_t StableRank(std::string_view device_id, std::string_view rollout_id) {
  std::array<uint8_t, 16> digest = Md5().Digest(RankInput(device_id, rollout_id));
  uint64_t rank = 0;
  for (int i = 0; i < 8; ++i) rank = rank << 8 | digest[i];
  return rank;
}

std::string StableRankHex(std::string_view device_id, std::string_view rollout_id) {
  return Md5Hex(RankInput(device_id, rollout_id)).substr(0, 16);
}

std::vector<Candidate> OrderForRollout(std::vector<Candidate> candidates,
                                       std::string_view rollout_id) {
  // Hash each device once (decorate), sort the small keys, then move the records into place.
  struct Key {
    bool canary;
    uint64_t rank;
    uint32_t index;
  };
  std::vector<Key> keys;
  keys.reserve(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i)
    keys.push_back({candidates[i].ring == kCanaryRing, StableRank(candidates[i].id, rollout_id),
                    static_cast<uint32_t>(i)});
  std::sort(keys.begin(), keys.end(), [&](const Key& a, const Key& b) {
    if (a.canary != b.canary) return a.canary;
    if (a.rank != b.rank) return a.rank < b.rank;
    return candidates[a.index].id < candidates[b.index].id;
  });
  std::vector<Candidate> ordered;
  ordered.reserve(candidates.size());
  for (const Key& k : keys) ordered.push_back(std::move(candidates[k.index]));
  return ordered;
}

int64_t QueueAllowance(int64_t max_per_minute, int64_t queued_last_minute, int64_t wanted) {
  wanted = std::max<int64_t>(wanted, 0);
  if (max_per_minute <= 0) return wanted;
  return std::clamp<int64_t>(max_per_minute - queued_last_minute, 0, wanted);
}

}  // namespace fleet
