#include "simulator/device.h"

#include <cstdio>

#include <nlohmann/json.hpp>

#include "fleet/signed_manifest.h"

namespace simulator {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kReasonNames[kReasonCount] = {
    "bad-operation",
    "bad-document",
    "wrong-model",
    "bad-version",
    "not-newer",
    "bad-sha256",
    "expired",
    "declined",
    "download-failed",
    "install-failed",
    "reboot-failed",
    "unsigned",
    "unknown-key",
    "bad-signature",
    "unsigned-release",
    "unknown-release-key",
    "bad-release-signature",
    "too-large",
    "sha256-mismatch",
};

constexpr std::string_view kStepNames[] = {"downloading", "installing", "rebooting"};

bool IsSha256(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

const Json* Field(const Json& object, const char* key) {
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

const std::string* StringField(const Json& object, const char* key) {
  const Json* v = Field(object, key);
  return v && v->is_string() ? v->get_ptr<const std::string*>() : nullptr;
}

void AppendNumber(std::string* out, int64_t n) {
  char buf[24];
  int len = std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(n));
  out->append(buf, static_cast<size_t>(len));
}

int64_t Ms(double seconds) { return static_cast<int64_t>(seconds * 1000.0 + 0.5); }

}  // namespace

std::string_view ToString(Reason reason) { return kReasonNames[static_cast<int>(reason)]; }

std::optional<Reason> CheckJobDocument(const nlohmann::json& doc, std::string_view model,
                                       const Installed& installed, int64_t now,
                                       const Trust& trust) {
  if (!doc.is_object()) return Reason::kBadOperation;
  const std::string* operation = StringField(doc, "operation");
  if (!operation || *operation != "firmware.update") return Reason::kBadOperation;
  const Json* release = Field(doc, "release");
  if (!release || !release->is_object()) return Reason::kBadDocument;
  const std::string* release_model = StringField(*release, "model");
  const std::string* version = StringField(*release, "version");
  const std::string* sha256 = StringField(*release, "sha256");
  const std::string* url = StringField(*release, "url");
  if (!release_model || !version || !sha256 || !url || url->empty()) return Reason::kBadDocument;

  std::optional<fleet::NoticeDocument> notice;
  if (trust.enabled()) {
    std::string error;
    std::optional<fleet::Signature> signature = fleet::ReadSignature(doc, "signature", &error);
    if (!signature) return error.empty() ? Reason::kUnsigned : Reason::kBadSignature;
    notice = fleet::NoticeFromDocument(doc, &error);
    if (!notice) return Reason::kBadDocument;
    switch (trust.notice_keys.VerifyNotice(*notice, signature->value)) {
      case signing::TrustedKeys::Result::kOk:
        break;
      case signing::TrustedKeys::Result::kUnknownKey:
        return Reason::kUnknownKey;
      case signing::TrustedKeys::Result::kBadSignature:
        return Reason::kBadSignature;
    }
    if (notice->manifest_signature.empty()) return Reason::kUnsignedRelease;
    switch (trust.release_keys.VerifyRelease(notice->manifest_key_id, notice->manifest,
                                             notice->manifest_signature)) {
      case signing::TrustedKeys::Result::kOk:
        break;
      case signing::TrustedKeys::Result::kUnknownKey:
        return Reason::kUnknownReleaseKey;
      case signing::TrustedKeys::Result::kBadSignature:
        return Reason::kBadReleaseSignature;
    }
  }

  if (const Json* expires = Field(doc, "expiresAt"); expires && !expires->is_null()) {
    if (!expires->is_number()) return Reason::kBadDocument;
    if (static_cast<double>(now) >= expires->get<double>()) return Reason::kExpired;
  }
  if (*release_model != model) return Reason::kWrongModel;
  auto parsed = fleet::Version::Parse(*version);
  if (!parsed) return Reason::kBadVersion;
  if (*parsed <= installed.version) return Reason::kNotNewer;
  if (notice && notice->manifest.counter <= installed.counter) return Reason::kNotNewer;
  if (!IsSha256(*sha256)) return Reason::kBadSha256;
  return std::nullopt;
}

// ---- Thing names ------------------------------------------------------------------------------

void AppendThing(const FleetSpec& spec, int64_t index, std::string* out) {
  out->append(spec.id_prefix);
  out->push_back('-');
  out->append(spec.models[static_cast<size_t>(index) % spec.models.size()]);
  out->push_back('-');
  char number[24];
  int len = std::snprintf(number, sizeof number, "%07lld", static_cast<long long>(index));
  out->append(number, static_cast<size_t>(len));
}

int64_t ThingIndex(const FleetSpec& spec, std::string_view thing) {
  const size_t dash = thing.rfind('-');
  if (dash == std::string_view::npos) return -1;
  std::string_view digits = thing.substr(dash + 1);
  // "%07lld": at least 7 digits, and no leading zero beyond that width.
  if (digits.size() < 7 || digits.size() > 18 || (digits.size() > 7 && digits[0] == '0')) return -1;
  int64_t index = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return -1;
    index = index * 10 + (c - '0');
  }
  if (index >= spec.devices || spec.models.empty()) return -1;
  const std::string& model = spec.models[static_cast<size_t>(index) % spec.models.size()];
  const size_t prefix = spec.id_prefix.size();
  if (thing.size() != prefix + 1 + model.size() + 1 + digits.size() ||
      thing.substr(0, prefix) != spec.id_prefix || thing[prefix] != '-' ||
      thing.substr(prefix + 1, model.size()) != model || thing[prefix + 1 + model.size()] != '-')
    return -1;
  return index;
}

std::optional<InboundTopic> ParseInboundTopic(std::string_view topic, std::string_view root) {
  if (topic.size() <= root.size() + 1 || topic.substr(0, root.size()) != root ||
      topic[root.size()] != '/')
    return std::nullopt;
  std::string_view rest = topic.substr(root.size() + 1);
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos || slash == 0) return std::nullopt;
  std::string_view thing = rest.substr(0, slash);
  rest = rest.substr(slash + 1);
  if (!rest.starts_with("jobs/")) return std::nullopt;
  rest.remove_prefix(5);
  if (rest == "notify-next") return InboundTopic{thing, Inbound::kNotifyNext};
  if (rest == "start-next/accepted") return InboundTopic{thing, Inbound::kStartNextAccepted};
  if (rest == "start-next/rejected") return InboundTopic{thing, Inbound::kStartNextRejected};
  const size_t job_end = rest.find('/');
  if (job_end == std::string_view::npos || job_end == 0) return std::nullopt;
  std::string_view tail = rest.substr(job_end);
  if (tail == "/update/accepted") return InboundTopic{thing, Inbound::kUpdateAccepted};
  if (tail == "/update/rejected") return InboundTopic{thing, Inbound::kUpdateRejected};
  return std::nullopt;
}

// ---- Counters ----------------------------------------------------------------------------------

Tally& Tally::operator+=(const Tally& other) {
  for (int i = 0; i < kCounts; ++i) n[i] += other.n[i];
  for (int i = 0; i < kReasonCount; ++i) reasons[i] += other.reasons[i];
  return *this;
}

Tally Counters::Read() const {
  Tally t;
  for (int i = 0; i < kCounts; ++i) t.n[i] = n_[i].load(std::memory_order_relaxed);
  for (int i = 0; i < kReasonCount; ++i) t.reasons[i] = reasons_[i].load(std::memory_order_relaxed);
  return t;
}

// ---- The state machine -------------------------------------------------------------------------

DeviceMachine::DeviceMachine(const FleetSpec& spec, const Profile& profile, uint64_t seed,
                             int64_t telemetry_interval_ms, const Trust& trust)
    : spec_(spec),
      profile_(profile),
      seed_(seed),
      telemetry_interval_ms_(telemetry_interval_ms),
      request_timeout_ms_(std::max<int64_t>(1, Ms(profile.request_timeout_seconds))) {
  for (const std::string& model : spec_.models) model_devices_.push_back(&profile_.Devices(model));
  auto firmware = fleet::Version::Parse(spec_.firmware);
  versions_.push_back(spec_.firmware);
  parsed_versions_.push_back(firmware ? *firmware : fleet::Version());
  version_counters_.push_back(0);
  trust_ = trust;
}

uint32_t DeviceMachine::NoticeKey(std::string_view job_id, int64_t execution_number) {
  uint32_t key = static_cast<uint32_t>(
      Mix64(HashText(job_id) ^ static_cast<uint64_t>(execution_number) * 0x9e3779b97f4a7c15ULL));
  return key == 0 ? 1 : key;
}

const std::string& DeviceMachine::Model(int64_t index) const {
  return spec_.models[static_cast<size_t>(index) % spec_.models.size()];
}

const UpdateBehaviour& DeviceMachine::Update(int64_t index, uint16_t version) const {
  return profile_.Update(Model(index), parsed_versions_[version]);
}

uint16_t DeviceMachine::InternVersion(const std::string& text, const fleet::Version& parsed,
                                      int64_t counter) {
  for (size_t i = 0; i < parsed_versions_.size(); ++i)
    if (versions_[i] == text) return static_cast<uint16_t>(i);
  // Versions are a handful per run; a table that fills up reuses its last slot rather than
  // growing without bound on a misbehaving controller.
  if (versions_.size() >= std::numeric_limits<uint16_t>::max()) return 0;
  versions_.push_back(text);
  parsed_versions_.push_back(parsed);
  version_counters_.push_back(counter);
  return static_cast<uint16_t>(versions_.size() - 1);
}

uint32_t DeviceMachine::InternJob(const std::string& job_id) {
  auto [it, inserted] = job_index_.try_emplace(job_id, static_cast<uint32_t>(jobs_.size()));
  if (inserted) jobs_.push_back(job_id);
  return it->second;
}

uint64_t DeviceMachine::JobKey(const DeviceState& d) const {
  return HashText(jobs_[d.job]) ^ (static_cast<uint64_t>(d.execution) << 48);
}

// The request timeout, doubled for each resend (up to 8 times: a slow controller must not be
// buried under its own backlog asked again) and stretched by up to half at random so that
// devices that lost their answers together do not all ask again in the same instant.
int64_t DeviceMachine::Timeout(const DeviceState& d, int64_t index) const {
  Rng rng(seed_, static_cast<uint64_t>(index), Purpose::kBackoff,
          d.token + (static_cast<uint64_t>(d.attempts) << 16));
  const int64_t base = request_timeout_ms_ << std::min<int>(d.attempts, 3);
  return base + static_cast<int64_t>(rng.Uniform() * static_cast<double>(base) / 2);
}

void DeviceMachine::Activity(const Now& now) {
  counters_.last_activity_ms.store(now.ms, std::memory_order_relaxed);
}

void DeviceMachine::Init(DeviceState& d, int64_t index, const Now& now) {
  d = DeviceState();
  const DeviceBehaviour& b = *model_devices_[static_cast<size_t>(index) % model_devices_.size()];
  if (Rng(seed_, static_cast<uint64_t>(index), Purpose::kOffline).Chance(b.offline_fraction)) {
    d.phase = Phase::kOffline;
    counters_.Add(Count::kOffline);
    return;
  }
  Rng late(seed_, static_cast<uint64_t>(index), Purpose::kLateJoin);
  d.phase = Phase::kAsleep;
  d.action_at = now.ms;
  if (late.Chance(b.late_join_fraction)) d.action_at += Ms(late.Seconds(b.late_join_delay));
}

void DeviceMachine::OnTimer(DeviceState& d, int64_t index, const Now& now,
                            std::vector<Publish>* out) {
  if (d.phase == Phase::kOffline || d.phase == Phase::kSilent) {
    d.action_at = d.telemetry_at = kNever;
    return;
  }
  if (d.telemetry_at <= now.ms) {
    SendTelemetry(d, index, now, out);
    d.telemetry_at += telemetry_interval_ms_;
    if (d.telemetry_at <= now.ms) d.telemetry_at = now.ms + telemetry_interval_ms_;
  }
  if (d.action_at > now.ms) return;
  d.action_at = kNever;
  switch (d.phase) {
    case Phase::kAsleep:
      Join(d, index, now, out);
      break;
    case Phase::kIdle:
      Ask(d, index, now, out);
      break;
    case Phase::kAsking:
    case Phase::kReporting:
      counters_.Add(Count::kResent);
      if (d.attempts < 255) ++d.attempts;
      Resend(d, index, now, out);
      break;
    case Phase::kWorking:
      FinishStep(d, index, now, out);
      break;
    case Phase::kOffline:
    case Phase::kSilent:
      break;
  }
}

void DeviceMachine::Join(DeviceState& d, int64_t index, const Now& now, std::vector<Publish>* out) {
  counters_.Add(Count::kJoined);
  d.boot_at_s = static_cast<uint32_t>(now.ms / 1000);
  if (telemetry_interval_ms_ > 0) {
    // Spread the reports over the interval so they do not all arrive in one burst.
    Rng phase(seed_, static_cast<uint64_t>(index), Purpose::kTelemetryPhase);
    d.telemetry_at = now.ms + static_cast<int64_t>(phase.Uniform() * telemetry_interval_ms_);
  }
  Ask(d, index, now, out);
}

void DeviceMachine::Ask(DeviceState& d, int64_t index, const Now& now, std::vector<Publish>* out) {
  d.phase = Phase::kAsking;
  d.notice_pending = false;
  d.attempts = 0;
  ++d.token;
  Resend(d, index, now, out);
}

void DeviceMachine::SendUpdate(DeviceState& d, int64_t index, const Now& now,
                               std::vector<Publish>* out) {
  d.phase = Phase::kReporting;
  d.attempts = 0;
  ++d.token;
  Resend(d, index, now, out);
}

// Publishes the request the device awaits an answer to (again), with its clientToken.
void DeviceMachine::Resend(DeviceState& d, int64_t index, const Now& now,
                           std::vector<Publish>* out) {
  Publish& p = out->emplace_back();
  if (d.phase == Phase::kAsking) {
    // The step it starts with goes with the request: the execution it starts is IN_PROGRESS
    // "downloading" from then on, and that step needs no report of its own (StartJob).
    p.suffix = "jobs/start-next";
    p.payload = R"({"statusDetails":{"step":"downloading"},"clientToken":")";
    AppendNumber(&p.payload, d.token);
    p.payload += "\"}";
  } else {
    p.suffix.reserve(jobs_[d.job].size() + 12);
    p.suffix = "jobs/";
    p.suffix += jobs_[d.job];
    p.suffix += "/update";
    switch (d.report) {
      case Report::kProgress:
        p.payload = R"({"status":"IN_PROGRESS","statusDetails":{"step":")";
        p.payload += kStepNames[static_cast<int>(d.step)];
        break;
      case Report::kSucceeded:
        p.payload = R"({"status":"SUCCEEDED","statusDetails":{"firmware":")";
        p.payload += versions_[d.target];
        break;
      case Report::kFailed:
        p.payload = R"({"status":"FAILED","statusDetails":{"reason":")";
        p.payload += ToString(d.reason);
        break;
      case Report::kRejected:
        p.payload = R"({"status":"REJECTED","statusDetails":{"reason":")";
        p.payload += ToString(d.reason);
        break;
    }
    p.payload += "\"},\"clientToken\":\"";
    AppendNumber(&p.payload, d.token);
    p.payload += "\"}";
  }
  counters_.Add(Count::kRequests);
  Activity(now);
  d.action_at = now.ms + Timeout(d, index);
}

void DeviceMachine::GoIdle(DeviceState& d, int64_t index, const Now& now,
                           std::vector<Publish>* out) {
  d.phase = Phase::kIdle;
  d.action_at = kNever;
  if (d.notice_pending) Ask(d, index, now, out);
}

void DeviceMachine::OnReconnected(DeviceState& d, const Now& now) {
  switch (d.phase) {
    case Phase::kIdle:
    case Phase::kAsking:
    case Phase::kReporting:
      d.action_at = now.ms;
      break;
    default:  // asleep, working, offline, silent: nothing was awaited
      break;
  }
}

bool DeviceMachine::Retryable(const nlohmann::json& answer) {
  const std::string* code = StringField(answer, "code");
  return code && (*code == "RequestThrottled" || *code == "InternalError");
}

void DeviceMachine::OnMessage(DeviceState& d, int64_t index, Inbound kind, std::string_view payload,
                              const Now& now, std::vector<Publish>* out) {
  if (d.phase == Phase::kOffline || d.phase == Phase::kAsleep || d.phase == Phase::kSilent) return;
  Activity(now);
  if (kind == Inbound::kNotifyNext) {
    counters_.Add(Count::kNotices);
    auto notice = Json::parse(payload, nullptr, false);
    const Json* e = notice.is_object() ? Field(notice, "execution") : nullptr;
    if (!e || !e->is_object()) return;  // {"timestamp"}: nothing pending
    const std::string* job = StringField(*e, "jobId");
    const Json* number = Field(*e, "executionNumber");
    if (!job || !number || !number->is_number_integer()) return;
    const uint32_t key = NoticeKey(*job, number->get<int64_t>());
    if (key == d.noticed) {
      counters_.Add(Count::kDuplicates);
      return;
    }
    d.noticed = key;
    // A new execution: ask for it now when idle, and also when a start-next is awaited (its
    // answer may predate the execution, or be lost: the notice is the newer news). Busy with a
    // job, ask when it is done.
    if (d.phase == Phase::kIdle || d.phase == Phase::kAsking)
      Ask(d, index, now, out);
    else
      d.notice_pending = true;
    return;
  }

  // An answer: only the one to the request awaited counts; late copies are dropped.
  const bool start_next =
      kind == Inbound::kStartNextAccepted || kind == Inbound::kStartNextRejected;
  if (d.phase != (start_next ? Phase::kAsking : Phase::kReporting)) return;
  auto answer = Json::parse(payload, nullptr, false);
  if (!answer.is_object()) return;
  const std::string* token = StringField(answer, "clientToken");
  if (!token || *token != std::to_string(d.token)) return;
  counters_.Add(Count::kAnswers);

  if (kind == Inbound::kStartNextRejected || kind == Inbound::kUpdateRejected) {
    if (Retryable(answer)) {
      Rng rng(seed_, static_cast<uint64_t>(index), Purpose::kBackoff, d.token + 0x10000u);
      d.action_at = now.ms + std::min(request_timeout_ms_, Ms(rng.Seconds(Distribution{1, 5})));
      return;
    }
    if (kind == Inbound::kUpdateRejected) counters_.Add(Count::kAbandoned);
    GoIdle(d, index, now, out);
    return;
  }

  if (kind == Inbound::kStartNextAccepted) {
    const Json* e = Field(answer, "execution");
    if (!e || !e->is_object()) {
      GoIdle(d, index, now, out);
      return;
    }
    StartJob(d, index, *e, now, out);
    return;
  }

  // Update accepted.
  switch (d.report) {
    case Report::kProgress: {
      d.phase = Phase::kWorking;
      const UpdateBehaviour& u = Update(index, d.target);
      const StepBehaviour& s = d.step == Step::kDownload  ? u.download
                               : d.step == Step::kInstall ? u.install
                                                          : u.reboot;
      Rng rng(seed_, static_cast<uint64_t>(index), Purpose::kStepDuration,
              JobKey(d) + static_cast<uint64_t>(d.step));
      d.action_at = now.ms + Ms(rng.Seconds(s.seconds));
      return;
    }
    case Report::kSucceeded:
      counters_.Add(Count::kSucceeded);
      break;
    case Report::kFailed:
      counters_.Add(Count::kFailed);
      counters_.AddReason(d.reason);
      break;
    case Report::kRejected:
      counters_.Add(Count::kRejected);
      counters_.AddReason(d.reason);
      break;
  }
  GoIdle(d, index, now, out);
}

void DeviceMachine::StartJob(DeviceState& d, int64_t index, const nlohmann::json& e, const Now& now,
                             std::vector<Publish>* out) {
  const std::string* job = StringField(e, "jobId");
  const Json* number = Field(e, "executionNumber");
  if (!job || job->empty() || !number || !number->is_number_integer()) {
    GoIdle(d, index, now, out);
    return;
  }
  const int64_t execution = number->get<int64_t>();
  const uint32_t key = NoticeKey(*job, execution);
  if (key == d.noticed) d.notice_pending = false;  // the notice that made it ask is served
  d.noticed = key;
  d.job = InternJob(*job);
  d.execution = static_cast<uint16_t>(execution);
  counters_.Add(Count::kStarted);

  static const Json kNoDocument;
  const Json* doc = Field(e, "jobDocument");
  if (auto reason =
          CheckJobDocument(doc ? *doc : kNoDocument, Model(index),
                           Installed{parsed_versions_[d.installed], version_counters_[d.installed]},
                           now.epoch, trust_)) {
    Refuse(d, index, Report::kRejected, *reason, now, out);
    return;
  }
  const std::string& version = (*doc)["release"]["version"].get_ref<const std::string&>();
  const Json* counter = Field((*doc)["release"], "counter");
  d.target = InternVersion(version, *fleet::Version::Parse(version),
                           counter && counter->is_number_integer() ? counter->get<int64_t>() : 0);
  const UpdateBehaviour& u = Update(index, d.target);
  const uint64_t job_key = JobKey(d);
  if (Rng(seed_, static_cast<uint64_t>(index), Purpose::kReject, job_key)
          .Chance(u.reject_probability)) {
    Refuse(d, index, Report::kRejected, Reason::kDeclined, now, out);
    return;
  }
  if (Rng(seed_, static_cast<uint64_t>(index), Purpose::kSilent, job_key)
          .Chance(u.silent_fraction)) {
    d.phase = Phase::kSilent;
    d.action_at = d.telemetry_at = kNever;
    counters_.Add(Count::kSilent);
    return;
  }
  d.step = Step::kDownload;
  // Started by this start-next, the execution already says "downloading" (an execution resumed
  // IN_PROGRESS keeps the details of its last report, and gets the report again).
  const Json* details = Field(e, "statusDetails");
  const std::string* step =
      details && details->is_object() ? StringField(*details, "step") : nullptr;
  BeginStep(d, index, now, out, /*reported=*/step && *step == kStepNames[0]);
}

void DeviceMachine::BeginStep(DeviceState& d, int64_t index, const Now& now,
                              std::vector<Publish>* out, bool reported) {
  const UpdateBehaviour& u = Update(index, d.target);
  if (u.report_steps && !reported) {
    d.report = Report::kProgress;
    SendUpdate(d, index, now, out);
    return;
  }
  const StepBehaviour& s = d.step == Step::kDownload  ? u.download
                           : d.step == Step::kInstall ? u.install
                                                      : u.reboot;
  Rng rng(seed_, static_cast<uint64_t>(index), Purpose::kStepDuration,
          JobKey(d) + static_cast<uint64_t>(d.step));
  d.phase = Phase::kWorking;
  d.action_at = now.ms + Ms(rng.Seconds(s.seconds));
}

void DeviceMachine::FinishStep(DeviceState& d, int64_t index, const Now& now,
                               std::vector<Publish>* out) {
  const UpdateBehaviour& u = Update(index, d.target);
  const StepBehaviour& s = d.step == Step::kDownload  ? u.download
                           : d.step == Step::kInstall ? u.install
                                                      : u.reboot;
  const bool failed = Rng(seed_, static_cast<uint64_t>(index), Purpose::kStepFailure,
                          JobKey(d) + static_cast<uint64_t>(d.step))
                          .Chance(s.failure_probability);
  if (d.step == Step::kReboot) {
    // It rebooted either way; only a good boot runs the new firmware (else it rolls back).
    ++d.boots;
    d.boot_at_s = static_cast<uint32_t>(now.ms / 1000);
    if (!failed) d.installed = d.target;
  }
  if (failed) {
    Refuse(d, index, Report::kFailed,
           d.step == Step::kDownload  ? Reason::kDownloadFailed
           : d.step == Step::kInstall ? Reason::kInstallFailed
                                      : Reason::kRebootFailed,
           now, out);
    return;
  }
  // The downloaded image is checked against the manifest before anything is installed.
  if (d.step == Step::kDownload && u.served_image != ServedImage::kDeclared) {
    Refuse(d, index, Report::kFailed,
           u.served_image == ServedImage::kOversized ? Reason::kTooLarge : Reason::kSha256Mismatch,
           now, out);
    return;
  }
  if (d.step != Step::kReboot) {
    d.step = static_cast<Step>(static_cast<int>(d.step) + 1);
    BeginStep(d, index, now, out);
    return;
  }
  d.report = Report::kSucceeded;
  SendUpdate(d, index, now, out);
}

void DeviceMachine::Refuse(DeviceState& d, int64_t index, Report report, Reason reason,
                           const Now& now, std::vector<Publish>* out) {
  d.report = report;
  d.reason = reason;
  SendUpdate(d, index, now, out);
}

void DeviceMachine::SendTelemetry(DeviceState& d, int64_t index, const Now& now,
                                  std::vector<Publish>* out) {
  // Crashes since the last report: Poisson at the model's base rate, multiplied once the device
  // runs a release it was updated to.
  const DeviceBehaviour& b = *model_devices_[static_cast<size_t>(index) % model_devices_.size()];
  double rate = b.crashes_per_hour;
  if (d.installed != 0) rate *= Update(index, d.installed).crash_rate_multiplier;
  Rng rng(seed_, static_cast<uint64_t>(index), Purpose::kCrash,
          static_cast<uint64_t>(d.telemetry_at));
  const int64_t crashes = rng.Poisson(rate * static_cast<double>(telemetry_interval_ms_) / 3.6e6);
  const int64_t now_s = now.ms / 1000;
  if (crashes > 0) {
    d.crashes += static_cast<uint32_t>(crashes);
    d.boots += static_cast<uint16_t>(crashes);
    // The last crash rebooted it somewhere in the interval.
    d.boot_at_s = static_cast<uint32_t>(std::max<int64_t>(
        d.boot_at_s, now_s - static_cast<int64_t>(rng.Uniform() * telemetry_interval_ms_ / 1000)));
  }
  Publish& p = out->emplace_back();
  p.telemetry = true;
  p.payload = "{\"firmware\":\"";
  p.payload += versions_[d.installed];
  p.payload += "\",\"uptimeSeconds\":";
  AppendNumber(&p.payload, std::max<int64_t>(0, now_s - d.boot_at_s));
  p.payload += ",\"bootCount\":";
  AppendNumber(&p.payload, d.boots);
  p.payload += ",\"crashCount\":";
  AppendNumber(&p.payload, d.crashes);
  p.payload += "}";
  counters_.Add(Count::kTelemetry);
}

}  // namespace simulator
