// One simulated device as a pure state machine: inputs (a timer came, a message arrived, the
// connection came back) and the time go in; requests to publish come out. No I/O, no clock, no
// threads: simulator/simulate.cc feeds it from MQTT, the tests feed it directly.
//
// The device behaves as an AWS IoT Device SDK jobs client does (DESIGN §2): at start, on every
// new notify-next and after a reconnect it asks start-next with statusDetails {"step":
// "downloading"} (the first step, so the execution it starts says so without a report of its
// own); it checks the job document (CheckJobDocument) and reports REJECTED with the reason, or
// walks the steps downloading -> installing -> rebooting (each announced as IN_PROGRESS {"step"}
// when the profile says so, unless the execution already shows it) and reports SUCCEEDED
// {"firmware"} or FAILED {"reason"}. It awaits the answer to each request
// before the next (an unanswered one is sent again with the same clientToken after the
// profile's requestTimeoutSeconds, doubling up to 8 times that while unanswered), dedupes notices
// by (jobId, executionNumber), and publishes health telemetry every telemetry interval.
//
// Memory: a device is a DeviceState of 48 bytes. Its ids are computed from its index and the
// FleetSpec, job ids and versions are indexes into the machine's tables, so a million devices
// hold no strings of their own.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "fleet/version.h"
#include "signing/signing.h"
#include "simulator/fleet_spec.h"
#include "simulator/profile.h"

namespace simulator {

// Why a device refused or failed a job: the "reason" in its statusDetails.
enum class Reason : uint8_t {
  kBadOperation,         // "bad-operation": operation is not "firmware.update"
  kBadDocument,          // "bad-document": release fields missing or of the wrong type
  kWrongModel,           // "wrong-model": release.model is not the device's model
  kBadVersion,           // "bad-version": release.version is not a semantic version
  kNotNewer,             // "not-newer": not newer than the installed firmware (no downgrades)
  kBadSha256,            // "bad-sha256": not 64 lowercase hex characters
  kExpired,              // "expired": expiresAt has passed
  kDeclined,             // "declined": the profile's rejectProbability
  kDownloadFailed,       // "download-failed"
  kInstallFailed,        // "install-failed"
  kRebootFailed,         // "reboot-failed": the new firmware did not boot; the old one runs again
  kUnsigned,             // "unsigned": the notice has no signature (the device trusts keys)
  kUnknownKey,           // "unknown-key": signed by a notice key the device does not trust
  kBadSignature,         // "bad-signature": the notice signature does not verify
  kUnsignedRelease,      // "unsigned-release": the manifest has no release signature
  kUnknownReleaseKey,    // "unknown-release-key": signed by a release key it does not trust
  kBadReleaseSignature,  // "bad-release-signature": the release signature does not verify
  kTooLarge,             // "too-large": the download ran past the declared size
  kSha256Mismatch,       // "sha256-mismatch": the downloaded image's SHA-256 is not the declared
};
inline constexpr int kReasonCount = 19;
std::string_view ToString(Reason reason);

// The keys a device trusts (signing/signing.h): release keys vouch for images, notice keys for
// notices; never one for the other. Both empty: the device checks no signature (a fleet that does
// not sign). Otherwise both signatures are required.
struct Trust {
  signing::TrustedKeys release_keys;
  signing::TrustedKeys notice_keys;
  bool enabled() const { return release_keys.size() + notice_keys.size() > 0; }
};

// What a device runs: its version, and the counter of the signed manifest that brought it (0 for
// the firmware it shipped with).
struct Installed {
  fleet::Version version;
  int64_t counter = 0;
};

// The checks a device makes on a job document before installing anything; nullopt when it may
// go ahead. `now` is epoch seconds. In this order: the operation and fields; with trust enabled,
// the notice signature (with the notice keys) and the manifest's (with the release keys), so that
// nothing unauthenticated is acted on; expiry (a missing or null expiresAt never expires); model;
// version newer than the installed one and, with trust enabled, a counter above its counter
// (anti-rollback); a well-formed sha256.
std::optional<Reason> CheckJobDocument(const nlohmann::json& doc, std::string_view model,
                                       const Installed& installed, int64_t now,
                                       const Trust& trust = {});

// ---- Thing names ------------------------------------------------------------------------------

// Appends SimulatedDevice(spec, index).id to `out` without building a fleet::Device.
void AppendThing(const FleetSpec& spec, int64_t index, std::string* out);
// The index of the simulated device named `thing`, or -1 when no device of `spec` has that name.
int64_t ThingIndex(const FleetSpec& spec, std::string_view thing);

// What arrives for a device, under <root>/<thing>/jobs/.
enum class Inbound : uint8_t {
  kNotifyNext,         // notify-next
  kStartNextAccepted,  // start-next/accepted
  kStartNextRejected,  // start-next/rejected
  kUpdateAccepted,     // <jobId>/update/accepted
  kUpdateRejected,     // <jobId>/update/rejected
};
struct InboundTopic {
  std::string_view thing;
  Inbound kind;
};
// Recognises `topic` as one of the above under `root`; nullopt for anything else.
std::optional<InboundTopic> ParseInboundTopic(std::string_view topic, std::string_view root);

// ---- The state machine -------------------------------------------------------------------------

inline constexpr int64_t kNever = std::numeric_limits<int64_t>::max();

enum class Phase : uint8_t {
  kOffline,    // never connects (offlineFraction)
  kAsleep,     // not online yet: joins at action_at
  kIdle,       // online, no job; asks start-next at action_at when one is set
  kAsking,     // start-next sent, its answer awaited (sent again at action_at)
  kReporting,  // an update sent, its answer awaited (sent again at action_at)
  kWorking,    // a step runs until action_at
  kSilent,     // a silent brick: started a job and will never be heard of again
};
enum class Step : uint8_t { kDownload, kInstall, kReboot };
enum class Report : uint8_t { kProgress, kSucceeded, kFailed, kRejected };

struct DeviceState {
  int64_t action_at = kNever;     // ms: the next step, retry or join
  int64_t telemetry_at = kNever;  // ms: the next telemetry report
  uint32_t job = 0;               // the job worked on: an index into the machine's job table
  uint32_t noticed = 0;           // NoticeKey of the last execution seen, 0 for none
  uint32_t crashes = 0;
  uint32_t boot_at_s = 0;  // seconds (simulation time) of the last boot
  uint16_t installed = 0;  // running firmware: an index into the version table (0: the fleet's)
  uint16_t target = 0;     // the version the job installs
  uint16_t boots = 1;
  uint16_t token = 0;      // clientToken of the request awaited
  uint16_t execution = 0;  // executionNumber of the job (low bits: only keys random draws)
  Phase phase = Phase::kAsleep;
  Step step = Step::kDownload;
  Report report = Report::kProgress;  // what the update sent in kReporting says
  Reason reason = Reason::kBadOperation;
  bool notice_pending = false;  // a new notice came while busy: ask start-next when done
  uint8_t attempts = 0;         // resends of the request awaited: its timeout doubles each time
};
static_assert(sizeof(DeviceState) <= 48, "a million devices must stay small");

// Two clocks: `ms` orders everything (milliseconds since the simulation started), `epoch` (seconds)
// is what the device compares expiresAt with.
struct Now {
  int64_t ms = 0;
  int64_t epoch = 0;
};

// A message to publish: a jobs request on <root>/<thing>/<suffix> (QoS 1) or telemetry on
// <telemetry root>/<thing>/telemetry (QoS 0).
struct Publish {
  bool telemetry = false;
  std::string suffix;  // "jobs/start-next", "jobs/<jobId>/update"; empty for telemetry
  std::string payload;
};

enum class Count : int {
  kJoined,      // came online
  kOffline,     // never will (offlineFraction)
  kStarted,     // executions taken with start-next
  kSucceeded,   // SUCCEEDED accepted
  kFailed,      // FAILED accepted
  kRejected,    // REJECTED accepted
  kSilent,      // went silent after starting a job
  kAbandoned,   // an update refused for good (the controller ended the execution first)
  kNotices,     // notify-next received by online devices
  kDuplicates,  // notices of an execution already seen
  kRequests,    // start-next and update requests published, resent ones included
  kResent,      // requests sent again (no answer in time, or throttled)
  kTelemetry,   // telemetry reports published
  kAnswers,     // accepted/rejected answers matching the request awaited
  kCountSize,
};
inline constexpr int kCounts = static_cast<int>(Count::kCountSize);

// Plain counts, summed over the connections for progress and the summary.
struct Tally {
  std::array<int64_t, kCounts> n{};
  std::array<int64_t, kReasonCount> reasons{};  // terminal reports accepted, by reason
  int64_t operator[](Count c) const { return n[static_cast<int>(c)]; }
  Tally& operator+=(const Tally& other);
};

// Counters written by one connection's thread and read by another's for progress.
class Counters {
 public:
  void Add(Count c, int64_t v = 1) {
    n_[static_cast<int>(c)].fetch_add(v, std::memory_order_relaxed);
  }
  void AddReason(Reason r) {
    reasons_[static_cast<int>(r)].fetch_add(1, std::memory_order_relaxed);
  }
  Tally Read() const;
  // Simulation ms of the last jobs request or message (telemetry is not activity).
  std::atomic<int64_t> last_activity_ms{0};

 private:
  std::array<std::atomic<int64_t>, kCounts> n_{};
  std::array<std::atomic<int64_t>, kReasonCount> reasons_{};
};

// The logic shared by the devices of one connection, and its tables (job ids, versions). Not
// thread-safe: one per connection thread.
class DeviceMachine {
 public:
  // REQUIRES: spec.firmware is a semantic version; telemetry_interval_ms >= 0 (0: none).
  DeviceMachine(const FleetSpec& spec, const Profile& profile, uint64_t seed,
                int64_t telemetry_interval_ms, const Trust& trust = {});

  // Device `index` starts: offline for good, or asleep until it joins (now, or later when it
  // is a late joiner). Publishes nothing.
  void Init(DeviceState& d, int64_t index, const Now& now);
  // Acts on whichever of action_at and telemetry_at has come. Always moves a due timer on.
  void OnTimer(DeviceState& d, int64_t index, const Now& now, std::vector<Publish>* out);
  // A message for the device (ignored unless it is online).
  void OnMessage(DeviceState& d, int64_t index, Inbound kind, std::string_view payload,
                 const Now& now, std::vector<Publish>* out);
  // Its connection is back, subscribed: an idle device asks start-next (it may have missed
  // notices), an awaited request is sent again. Scheduled through action_at (now).
  void OnReconnected(DeviceState& d, const Now& now);

  static int64_t NextWake(const DeviceState& d) { return std::min(d.action_at, d.telemetry_at); }

  const std::string& Version(uint16_t index) const { return versions_[index]; }
  const std::string& Job(uint32_t index) const { return jobs_[index]; }
  Counters& counters() { return counters_; }
  const FleetSpec& spec() const { return spec_; }

  // The dedupe key of an execution: a non-zero hash of (jobId, executionNumber).
  static uint32_t NoticeKey(std::string_view job_id, int64_t execution_number);

 private:
  const std::string& Model(int64_t index) const;
  const UpdateBehaviour& Update(int64_t index, uint16_t version) const;
  uint16_t InternVersion(const std::string& text, const fleet::Version& parsed, int64_t counter);
  uint32_t InternJob(const std::string& job_id);
  uint64_t JobKey(const DeviceState& d) const;
  int64_t Timeout(const DeviceState& d, int64_t index) const;
  void Activity(const Now& now);

  void Join(DeviceState& d, int64_t index, const Now& now, std::vector<Publish>* out);
  void Ask(DeviceState& d, int64_t index, const Now& now, std::vector<Publish>* out);
  void SendUpdate(DeviceState& d, int64_t index, const Now& now, std::vector<Publish>* out);
  void Resend(DeviceState& d, int64_t index, const Now& now, std::vector<Publish>* out);
  void GoIdle(DeviceState& d, int64_t index, const Now& now, std::vector<Publish>* out);
  void StartJob(DeviceState& d, int64_t index, const nlohmann::json& execution, const Now& now,
                std::vector<Publish>* out);
  // `reported`: the execution already shows this step (no IN_PROGRESS report is sent for it).
  void BeginStep(DeviceState& d, int64_t index, const Now& now, std::vector<Publish>* out,
                 bool reported = false);
  void FinishStep(DeviceState& d, int64_t index, const Now& now, std::vector<Publish>* out);
  void Refuse(DeviceState& d, int64_t index, Report report, Reason reason, const Now& now,
              std::vector<Publish>* out);
  void SendTelemetry(DeviceState& d, int64_t index, const Now& now, std::vector<Publish>* out);
  // A rejected answer: retry later when the code says the controller was busy, else give up.
  static bool Retryable(const nlohmann::json& answer);

  FleetSpec spec_;
  const Profile& profile_;
  uint64_t seed_;
  int64_t telemetry_interval_ms_;
  int64_t request_timeout_ms_;
  std::vector<const DeviceBehaviour*> model_devices_;  // by model index
  std::vector<std::string> versions_;                  // [0] = spec.firmware
  std::vector<fleet::Version> parsed_versions_;
  std::vector<int64_t> version_counters_;  // the counter of the manifest that brought each version
  Trust trust_;
  std::vector<std::string> jobs_;
  std::unordered_map<std::string, uint32_t> job_index_;
  Counters counters_;
};

}  // namespace simulator
