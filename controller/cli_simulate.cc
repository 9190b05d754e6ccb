// `fleetwave simulate`: a fleet of virtual devices on the real broker (simulator/simulate.h),
// with live progress on a terminal and a summary at the end.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "controller/cli_common.h"
#include "db/connection.h"
#include "db/registry.h"
#include "fleet/registry.h"
#include "signing/signing.h"
#include "simulator/fleet_spec.h"
#include "simulator/profile.h"
#include "simulator/simulate.h"

namespace controller {
namespace {

using Json = nlohmann::json;
using simulator::Count;

std::atomic<bool> stop_requested{false};
void RequestStop(int) { stop_requested = true; }

// SIGINT/SIGTERM end the run with its summary; the previous handlers come back afterwards.
class StopOnSignals {
 public:
  StopOnSignals() {
    stop_requested = false;
    struct sigaction stop = {};
    stop.sa_handler = RequestStop;
    sigemptyset(&stop.sa_mask);
    sigaction(SIGINT, &stop, &old_int_);
    sigaction(SIGTERM, &stop, &old_term_);
  }
  ~StopOnSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ = {};
  struct sigaction old_term_ = {};
};

struct Flags {
  simulator::SimulateOptions o;
  std::string models = "sensor-a,sensor-b";
  std::string profile_file;
  bool register_devices = false;
  double duration_seconds = 0;
  double until_idle_seconds = 0;
  bool json = false;
  std::string tls_cert;  // the simulator's identity, when it is not the global --tls-cert's
  std::string tls_key;
  std::vector<std::string> release_keys;  // public key files
  std::vector<std::string> notice_keys;
};

void Validate(Flags& f) {
  simulator::FleetSpec& spec = f.o.fleet;
  if (spec.devices < 1 || spec.devices > 1000000)
    throw UsageError("--devices must be in [1, 1000000], got " + std::to_string(spec.devices));
  spec.models.clear();
  std::stringstream list(f.models);
  for (std::string model; std::getline(list, model, ',');) {
    if (auto problem = fleet::CheckModel(model)) throw UsageError("--models: " + *problem);
    for (const std::string& seen : spec.models)
      if (seen == model) throw UsageError("--models names " + model + " twice");
    spec.models.push_back(model);
  }
  if (spec.models.empty() || f.models.back() == ',')
    throw UsageError("--models must be a comma-separated list of models, got \"" + f.models + "\"");
  if (auto problem = fleet::CheckVersion("--firmware", spec.firmware)) throw UsageError(*problem);
  if (spec.canary_per_mille < 0 || spec.canary_per_mille > 1000)
    throw UsageError("--canary-per-mille must be in [0, 1000], got " +
                     std::to_string(spec.canary_per_mille));
  // The longest id is that of the last device of the longest model name.
  for (int64_t i = std::max<int64_t>(0, spec.devices - static_cast<int64_t>(spec.models.size()));
       i < spec.devices; ++i) {
    if (auto problem = fleet::CheckDeviceId(simulator::SimulatedDevice(spec, i).id))
      throw UsageError("--id-prefix \"" + spec.id_prefix + "\" makes bad device ids: " + *problem);
  }
  if (f.o.connections < 1 || f.o.connections > 1000)
    throw UsageError("--connections must be in [1, 1000], got " + std::to_string(f.o.connections));
  if (!(f.o.telemetry_interval_seconds >= 0) || f.o.telemetry_interval_seconds > 86400)
    throw UsageError("--telemetry-interval-seconds must be in [0, 86400] (0: no telemetry)");
  if (!(f.duration_seconds >= 0) || !(f.until_idle_seconds >= 0))
    throw UsageError("--duration-seconds and --until-idle-seconds must be at least 0 (0: off)");
  if (f.release_keys.empty() != f.notice_keys.empty())
    throw UsageError(
        "give both --trust-release-key and --trust-notice-key (a device checks both signatures: "
        "the release key's of the image and the controller's of the notice), or neither");
  for (auto [flag, files, keys] :
       {std::tuple{"--trust-release-key", &f.release_keys, &f.o.trust.release_keys},
        std::tuple{"--trust-notice-key", &f.notice_keys, &f.o.trust.notice_keys}}) {
    for (const std::string& file : *files) {
      try {
        keys->Add(signing::LoadPublicKeyFile(file));
      } catch (const std::exception& err) {  // KeyFileError, or a key id collision
        throw UsageError(std::string(flag) + ": " + err.what());
      }
    }
  }
  if (!f.profile_file.empty()) {
    std::ifstream in(f.profile_file);
    if (!in) throw UsageError("--profile " + f.profile_file + ": cannot read the file");
    std::stringstream text;
    text << in.rdbuf();
    std::string error;
    auto profile = simulator::ParseProfile(text.str(), &error);
    if (!profile) throw UsageError("--profile " + f.profile_file + ": " + error);
    f.o.profile = std::move(*profile);
  }
  if (auto problem = simulator::CheckOptions(f.o)) throw UsageError(*problem);
}

void Register(const Globals& g, const simulator::FleetSpec& spec) {
  auto conn = OpenDatabase(g);
  std::stringstream csv;
  simulator::WriteFleetCsv(spec, csv);
  const auto start = std::chrono::steady_clock::now();
  const bool tty = isatty(STDERR_FILENO);
  db::ImportReport report = db::Registry(*conn).ImportDevices(csv, [&](int64_t rows) {
    if (tty)
      std::fprintf(stderr, "\rregistering: %lld of %lld devices   ", static_cast<long long>(rows),
                   static_cast<long long>(spec.devices));
  });
  if (tty) std::fputc('\n', stderr);
  if (!report.ok()) {
    std::string message =
        "--register refused, nothing was registered: " + std::to_string(report.bad_rows) +
        " bad row(s)";
    for (const auto& p : report.problems)
      message += "\n  line " + std::to_string(p.line) + ": " + p.reason;
    message +=
        "\n(devices registered by an earlier run: run without --register to play them again)";
    throw db::Error(message);
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "registered %lld devices in %.1f s\n",
               static_cast<long long>(report.imported), s);
}

std::string ProgressLine(const simulator::Progress& p, double rate) {
  const simulator::Tally& t = p.tally;
  char line[512];
  std::snprintf(
      line, sizeof line,
      "%6.0fs  subscribed %lld/%lld, up %d/%d | started %lld, succeeded %lld, failed "
      "%lld, rejected %lld, silent %lld | notices %lld, requests %lld | %.0f msg/s",
      p.seconds, static_cast<long long>(p.subscribed),
      static_cast<long long>(p.devices - t[Count::kOffline]), p.connections_up, p.connections,
      static_cast<long long>(t[Count::kStarted]), static_cast<long long>(t[Count::kSucceeded]),
      static_cast<long long>(t[Count::kFailed]), static_cast<long long>(t[Count::kRejected]),
      static_cast<long long>(t[Count::kSilent]), static_cast<long long>(t[Count::kNotices]),
      static_cast<long long>(t[Count::kRequests]), rate);
  return line;
}

Json SummaryJson(const Flags& f, const simulator::Progress& p, int64_t rss_kb) {
  const simulator::Tally& t = p.tally;
  Json reasons = Json::object();
  for (int i = 0; i < simulator::kReasonCount; ++i)
    if (t.reasons[i] > 0)
      reasons[std::string(simulator::ToString(static_cast<simulator::Reason>(i)))] = t.reasons[i];
  const int64_t messages = p.messages_in + p.messages_out;
  return Json{{"devices", p.devices},
              {"connections", p.connections},
              {"seed", f.o.seed},
              {"seconds", std::round(p.seconds * 10) / 10},
              {"offline", t[Count::kOffline]},
              {"joined", t[Count::kJoined]},
              {"started", t[Count::kStarted]},
              {"succeeded", t[Count::kSucceeded]},
              {"failed", t[Count::kFailed]},
              {"rejected", t[Count::kRejected]},
              {"silent", t[Count::kSilent]},
              {"abandoned", t[Count::kAbandoned]},
              {"reasons", reasons},
              {"notices", t[Count::kNotices]},
              {"duplicateNotices", t[Count::kDuplicates]},
              {"requests", t[Count::kRequests]},
              {"resent", t[Count::kResent]},
              {"telemetry", t[Count::kTelemetry]},
              {"reconnects", p.reconnects},
              {"messagesIn", p.messages_in},
              {"messagesOut", p.messages_out},
              {"messagesPerSecond", std::round(messages / std::max(p.seconds, 1e-3))},
              {"peakRssKb", rss_kb}};
}

void PrintSummary(const Json& s) {
  auto n = [&](const char* key) { return static_cast<long long>(s[key].get<int64_t>()); };
  std::printf("simulated %lld devices over %lld connections for %.1f s (seed %llu)\n", n("devices"),
              n("connections"), s["seconds"].get<double>(),
              static_cast<unsigned long long>(s["seed"].get<uint64_t>()));
  std::printf(
      "  offline %lld, joined %lld; started %lld: succeeded %lld, failed %lld, rejected %lld, "
      "silent %lld, abandoned %lld\n",
      n("offline"), n("joined"), n("started"), n("succeeded"), n("failed"), n("rejected"),
      n("silent"), n("abandoned"));
  if (!s["reasons"].empty()) {
    std::string reasons;
    for (const auto& [reason, count] : s["reasons"].items())
      reasons +=
          (reasons.empty() ? "" : ", ") + reason + " " + std::to_string(count.get<int64_t>());
    std::printf("  reasons: %s\n", reasons.c_str());
  }
  std::printf(
      "  notices %lld (duplicates %lld), requests %lld (resent %lld), telemetry %lld, "
      "reconnects %lld\n",
      n("notices"), n("duplicateNotices"), n("requests"), n("resent"), n("telemetry"),
      n("reconnects"));
  std::printf("  messages %lld in, %lld out: %lld msg/s; peak RSS %.1f MB\n", n("messagesIn"),
              n("messagesOut"), n("messagesPerSecond"), n("peakRssKb") / 1024.0);
}

void Run(const Globals& global, Flags& f) {
  Globals g = global;
  if (!f.tls_cert.empty() || !f.tls_key.empty()) {
    g.tls_cert = f.tls_cert;
    g.tls_key = f.tls_key;
  }
  f.o.mqtt_uri = g.mqtt;
  f.o.tls_ca_file = g.tls_ca;
  f.o.tls_cert_file = g.tls_cert;
  f.o.tls_key_file = g.tls_key;
  Validate(f);
  CheckBrokerSecurity(g, "simulate");
  if (f.register_devices) Register(g, f.o.fleet);

  StopOnSignals signals;
  simulator::Simulator sim(f.o);
  sim.Start();
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const bool tty = isatty(STDERR_FILENO);
  auto last_print = start;
  int64_t last_messages = 0;
  std::optional<Clock::time_point> ready_at;
  std::string stopped_by = "a signal";
  while (!stop_requested) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - start).count();
    simulator::Progress p = sim.progress();
    if (!ready_at && sim.WaitReady(std::chrono::milliseconds(0))) ready_at = now;
    if (!ready_at && p.subscribed == 0 && p.connections_up == 0 && elapsed > 15) {
      sim.Stop();
      throw std::runtime_error("the broker at " + g.mqtt +
                               " accepted no subscription within 15 s: is it running? (set "
                               "--mqtt or FLEETWAVE_MQTT)");
    }
    if (f.duration_seconds > 0 && elapsed >= f.duration_seconds) {
      stopped_by = "--duration-seconds";
      break;
    }
    if (f.until_idle_seconds > 0 && ready_at &&
        std::min(p.idle_seconds, std::chrono::duration<double>(now - *ready_at).count()) >=
            f.until_idle_seconds) {
      stopped_by = "--until-idle-seconds";
      break;
    }
    const double since = std::chrono::duration<double>(now - last_print).count();
    if (since >= (tty ? 1.0 : 10.0)) {
      const int64_t messages = p.messages_in + p.messages_out;
      const std::string line = ProgressLine(p, (messages - last_messages) / since);
      if (tty)
        std::fprintf(stderr, "\r%s\033[K", line.c_str());
      else
        std::fprintf(stderr, "%s\n", line.c_str());
      last_print = now;
      last_messages = messages;
    }
  }
  sim.Stop();
  if (tty) std::fputc('\n', stderr);
  std::fprintf(stderr, "simulate: stopped by %s\n", stopped_by.c_str());
  Json summary = SummaryJson(f, sim.progress(), simulator::PeakRssKb());
  if (f.json)
    std::puts(summary.dump(2).c_str());
  else
    PrintSummary(summary);
}

}  // namespace

void AddSimulate(CLI::App& app, Globals& g) {
  auto* cmd = app.add_subcommand(
      "simulate", "Play a fleet of virtual devices speaking the device protocol over MQTT");
  cmd->footer(
      "Each device asks start-next on notify-next, checks the job document, reports its steps\n"
      "(downloading, installing, rebooting) and SUCCEEDED, FAILED or REJECTED with a reason, and\n"
      "publishes health telemetry. The profile (JSON, see README) sets durations, failure and\n"
      "reject probabilities, offline devices, silent bricks, crash rates, late joiners and\n"
      "reconnect storms, per model and target version. Ends on SIGINT/SIGTERM,\n"
      "--duration-seconds or --until-idle-seconds, with a summary.\n"
      "Example:\n  fleetwave simulate --devices 20000 --register --profile profile.json "
      "--until-idle-seconds 120");
  auto f = std::make_shared<Flags>();
  simulator::SimulateOptions& o = f->o;
  o.fleet.devices = 1000;
  cmd->add_option("--devices", o.fleet.devices, "Devices to play, 1 to 1000000")
      ->capture_default_str();
  cmd->add_option("--models", f->models, "Models, comma-separated; devices alternate between them")
      ->capture_default_str();
  cmd->add_option("--firmware", o.fleet.firmware, "Firmware every device runs at the start")
      ->capture_default_str();
  cmd->add_option("--canary-per-mille", o.fleet.canary_per_mille,
                  "Devices in the canary ring per thousand (with --register)")
      ->capture_default_str();
  cmd->add_option("--id-prefix", o.fleet.id_prefix,
                  "Device ids are <prefix>-<model>-<7-digit index>")
      ->capture_default_str();
  cmd->add_option("--connections", o.connections,
                  "MQTT connections the devices share; for big fleets about one per 15,000 "
                  "devices (Mosquitto's cost of a subscription grows with its client's count)")
      ->capture_default_str();
  cmd->add_option("--profile", f->profile_file, "Behaviour profile (JSON); default: healthy");
  cmd->add_option("--seed", o.seed, "Seed of every random decision: same seed, same behaviour")
      ->capture_default_str();
  cmd->add_flag("--register", f->register_devices,
                "Register the devices first (bulk import; needs --db)");
  cmd->add_option("--topic-root", o.topic_root, "Root of the jobs topics")->capture_default_str();
  cmd->add_option("--telemetry-root", o.telemetry_root, "Root of the telemetry topics")
      ->capture_default_str();
  cmd->add_option("--telemetry-interval-seconds", o.telemetry_interval_seconds,
                  "Seconds between a device's health reports (0: none)")
      ->capture_default_str();
  cmd->add_option("--max-inflight", o.max_inflight,
                  "Publishes awaiting acknowledgement per connection")
      ->capture_default_str();
  cmd->add_option("--duration-seconds", f->duration_seconds, "Stop after this long (0: never)");
  cmd->add_option("--until-idle-seconds", f->until_idle_seconds,
                  "Stop once no device sent or received a jobs message for this long (0: never)");
  // Its own flags and variables: a shell set up for the controller (scripts/stack env) holds the
  // controller's identity in FLEETWAVE_TLS_CERT, which may not play devices.
  cmd->add_option("--tls-cert", f->tls_cert,
                  "The simulator's client certificate (an identity the broker's ACL lets play "
                  "devices; default: the global --tls-cert)")
      ->envname("FLEETWAVE_SIM_TLS_CERT");
  cmd->add_option("--tls-key", f->tls_key, "Its key (PEM, mode 0600)")
      ->envname("FLEETWAVE_SIM_TLS_KEY");
  cmd->add_option("--trust-release-key", f->release_keys,
                  "Public release key file the devices trust (repeat it to trust several, e.g. "
                  "while rotating); with it devices refuse unsigned or badly signed notices")
      ->take_all();
  cmd->add_option("--trust-notice-key", f->notice_keys,
                  "Public notice key file the devices trust (the controller's --notice-key); "
                  "repeat it for several")
      ->take_all();
  cmd->add_flag("--json", f->json, "Print the summary as JSON");
  cmd->callback([&g, f] { Run(g, *f); });
}

}  // namespace controller
