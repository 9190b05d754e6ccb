// How simulated devices behave: the profile (JSON) of `fleetwave simulate --profile`, and the
// deterministic random numbers that turn its probabilities into a repeatable run.
//
// A profile is a JSON object; every field is optional and defaults to the healthy fleet written
// beside it below, so `{}` is the default profile. Unknown fields, repeated fields and wrong types
// are errors naming the field path (as the rollout plan's are):
//
//   {
//     "requestTimeoutSeconds": 30,        // an unanswered request is sent again after this
//     "devices": {                        // every device, unless its model overrides it
//       "offlineFraction": 0,             // never connect nor answer, [0, 1]
//       "crashesPerHour": 0.01,           // base crash rate per device, >= 0
//       "lateJoin": {"fraction": 0,       // devices that come online later, [0, 1]
//                    "delaySeconds": {"min": 0, "max": 0}}
//     },
//     "update": {                         // installing any release, unless overridden
//       "rejectProbability": 0,           // declines a valid job (REJECTED "declined"), [0, 1]
//       "silentFraction": 0,              // silent bricks: start the job, never report again
//       "crashRateMultiplier": 1,         // crash rate x this once the release runs, >= 0
//       "reportSteps": true,              // IN_PROGRESS {"step"} before each step
//       "download": {"seconds": {"min": 1, "max": 5}, "failureProbability": 0},
//       "install":  {"seconds": {"min": 2, "max": 4}, "failureProbability": 0},
//       "reboot":   {"seconds": {"min": 1, "max": 3}, "failureProbability": 0}
//     },
//     "models": {                         // per model: overrides of the two objects above,
//       "sensor-b": {                     // and per target version of that model
//         "devices": {...}, "update": {...},
//         "releases": {"2.0.0": {<update fields>}}
//       }
//     },
//     "reconnectStorms": [                // at atSeconds, that share of the MQTT connections
//       {"atSeconds": 60, "connectionFraction": 0.5,  // drops; each reconnects after downSeconds
//        "downSeconds": {"min": 1, "max": 5}}]        // and its devices all ask start-next
//   }
//
// Overrides are layered field by field: profile "update" < model "update" < model release. A
// duration is a number of seconds (fixed) or {"min", "max"} (uniform). Seconds are in
// [0, 315360000]; probabilities and fractions in [0, 1].
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fleet/version.h"

namespace simulator {

// Seconds, uniformly distributed in [min, max] (fixed when min == max).
struct Distribution {
  double min = 0;
  double max = 0;
  friend bool operator==(const Distribution&, const Distribution&) = default;
};

struct StepBehaviour {
  Distribution seconds;
  double failure_probability = 0;  // "failureProbability"
  friend bool operator==(const StepBehaviour&, const StepBehaviour&) = default;
};

// What the download server hands a device for a release: the image the manifest declares, one
// larger than its declared size (a device stops reading at the size: "too-large"), or one of the
// right size with other bytes ("sha256-mismatch"). Tampered mirrors and endless-data attacks.
enum class ServedImage : uint8_t { kDeclared, kOversized, kCorrupt };

struct UpdateBehaviour {
  double reject_probability = 0;                      // "rejectProbability"
  double silent_fraction = 0;                         // "silentFraction"
  double crash_rate_multiplier = 1;                   // "crashRateMultiplier"
  bool report_steps = true;                           // "reportSteps"
  ServedImage served_image = ServedImage::kDeclared;  // "servedImage"
  StepBehaviour download{{1, 5}, 0};
  StepBehaviour install{{2, 4}, 0};
  StepBehaviour reboot{{1, 3}, 0};
  friend bool operator==(const UpdateBehaviour&, const UpdateBehaviour&) = default;
};

struct DeviceBehaviour {
  double offline_fraction = 0;     // "offlineFraction"
  double crashes_per_hour = 0.01;  // "crashesPerHour"
  double late_join_fraction = 0;   // "lateJoin.fraction"
  Distribution late_join_delay;    // "lateJoin.delaySeconds"
  friend bool operator==(const DeviceBehaviour&, const DeviceBehaviour&) = default;
};

struct ReconnectStorm {
  double at_seconds = 0;            // "atSeconds": after the simulation started
  double connection_fraction = 0;   // "connectionFraction": of the MQTT connections, [0, 1]
  Distribution down_seconds{1, 5};  // "downSeconds": until each reconnects
  friend bool operator==(const ReconnectStorm&, const ReconnectStorm&) = default;
};

struct Profile {
  struct Release {
    fleet::Version version;
    UpdateBehaviour update;  // already layered over its model's
  };
  struct Model {
    std::string name;
    DeviceBehaviour devices;  // already layered over the profile's
    UpdateBehaviour update;
    std::vector<Release> releases;
  };

  double request_timeout_seconds = 30;  // "requestTimeoutSeconds", (0, 3600]
  DeviceBehaviour devices;
  UpdateBehaviour update;
  std::vector<Model> models;
  std::vector<ReconnectStorm> reconnect_storms;

  // What devices of `model` do, and what installing `version` on one does.
  const DeviceBehaviour& Devices(std::string_view model) const;
  const UpdateBehaviour& Update(std::string_view model, const fleet::Version& version) const;
};

// Parses and validates a profile. On failure returns nullopt and sets `error` (when given) to one
// line naming the field path, the bad value and what is allowed, e.g.
//   models.sensor-b.update.install.failureProbability must be in [0, 1], got 2
std::optional<Profile> ParseProfile(std::string_view json, std::string* error = nullptr);

// ---- Deterministic randomness ----------------------------------------------------------------
//
// Every random decision of a device is a pure function of (seed, device index, what is decided):
// the same seed gives the same fleet behaviour however messages interleave on the network.

// A well-mixed 64-bit hash (SplitMix64's finaliser).
uint64_t Mix64(uint64_t x);
// FNV-1a of `s`, for keys made of text (a job id).
uint64_t HashText(std::string_view s);

// What a draw is for; part of the key so that decisions are independent of each other.
enum class Purpose : uint64_t {
  kOffline = 1,
  kLateJoin,
  kTelemetryPhase,
  kCrash,
  kReject,
  kSilent,
  kStepDuration,
  kStepFailure,
  kBackoff,
  kStorm,
  kStormDown,
};

class Rng {
 public:
  // A stream of draws for (seed, device, purpose, key); `key` distinguishes repeats of the same
  // purpose (a job and execution, a telemetry tick, a step).
  Rng(uint64_t seed, uint64_t device, Purpose purpose, uint64_t key = 0);

  uint64_t Next();
  double Uniform();       // [0, 1)
  bool Chance(double p);  // true with probability p
  double Seconds(const Distribution& d);
  // A Poisson-distributed count with the given mean (exact for small means, normal beyond 64).
  int64_t Poisson(double mean);

 private:
  uint64_t state_;
};

}  // namespace simulator
