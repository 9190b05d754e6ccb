// How a rollout's devices are split into waves, and the stable order that picks them.
//
// Sizes. With N target devices and cumulative wave percentages p_1 < ... < p_k = 100, wave i
// brings the rollout to
//   target_i = max(target_{i-1}, min(N, max(ceil(N * p_i / 100), minDevices_i))),  target_0 = 0
// devices, computed exactly in integers (p_i as parts per million, see PercentPpm). Targets never
// decrease and target_k = N; wave i holds target_i - target_{i-1} devices. A wave is empty only
// when N is small: N * (p_i - p_{i-1}) / 100 < 1 or an earlier wave's minDevices already reached
// target_i (with N = 3 and 1/10/50/100 the targets are 1, 1, 2, 3 and wave 2 is empty), or N = 0.
//
// Order. Canary-ring devices come first, then every device by StableRank, ties by id (bytes).
// The rank depends only on (device id, rollout id), never on the other devices, so a resumed
// rollout - or one whose device set grew - keeps the order of the devices it already had.
//
// StableRank is the first 8 bytes, big-endian, of MD5(rollout_id + "/" + device_id): neither id
// may contain '/', so the input is unambiguous. PostgreSQL computes the same order natively, so
// the controller may order in SQL instead of loading a million rows:
//
//   select id from fleetwave.devices where ...
//   order by (ring = 'canary') desc, left(md5($rollout_id || '/' || id), 16) collate "C",
//            id collate "C"
//
// (left(md5(...), 16) is StableRankHex; ordering those hex strings bytewise is ordering the
// uint64 ranks.) The position in that order (0-based, e.g. row_number() - 1) gives the wave
// through WaveOf().
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fleet/plan.h"

namespace fleet {

// target_1..target_k as above (index i-1 holds target_i). REQUIRES: n >= 0, `waves` valid
// (CheckPlan). Cost O(k).
std::vector<int64_t> CumulativeTargets(int64_t n, const std::vector<WaveSpec>& waves);

// Per-wave sizes: the differences of the cumulative targets.
std::vector<int64_t> WaveSizes(const std::vector<int64_t>& cumulative);

// The 1-based wave of the device at `position` (0-based) in the rollout's order: the first wave i
// with position < target_i. Returns 0 when position >= the last target (not in the rollout).
int WaveOf(int64_t position, const std::vector<int64_t>& cumulative);

// Lowercase hex MD5 of `data`, exactly what PostgreSQL's md5(text) returns for it.
std::string Md5Hex(std::string_view data);

// The rank of a device in a rollout, and its 16-hex-digit form (what SQL orders by).
uint64_t StableRank(std::string_view device_id, std::string_view rollout_id);
std::string StableRankHex(std::string_view device_id, std::string_view rollout_id);

struct Candidate {
  std::string id;
  std::string ring;  // kCanaryRing ("canary") goes first
};

// The candidates in rollout order: canary ring first, then by StableRank, ties by id.
// Cost: one hash per candidate and one sort (about a second for 1,000,000 devices).
std::vector<Candidate> OrderForRollout(std::vector<Candidate> candidates,
                                       std::string_view rollout_id);

// How many of `wanted` executions may be queued now when `queued_last_minute` were queued in the
// 60 seconds up to now and at most `max_per_minute` may be (0 = unlimited). Never negative.
int64_t QueueAllowance(int64_t max_per_minute, int64_t queued_last_minute, int64_t wanted);

}  // namespace fleet
