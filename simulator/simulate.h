// The simulated fleet on a real broker: `fleetwave simulate` and the end-to-end tests.
//
// Device i is served by MQTT connection i % connections, one thread per connection. A connection
// subscribes, for each of its devices, to exactly that device's topics under the topic root R:
//   R/<thing>/jobs/notify-next, R/<thing>/jobs/start-next/+, R/<thing>/jobs/+/update/+
// (never R/<thing>/jobs/#, which would echo the device's own requests back), so no device sees
// another's messages and the broker holds three subscriptions per device. Incoming messages are
// routed by the thing name in the topic, parsed back to the device index (no map of names).
// Each connection runs one timer heap for all its devices and keeps at most `max_inflight`
// publishes unacknowledged: when the window is full, timers wait (answers are still handled),
// so memory stays bounded however slow the broker or controller is.
//
// The MQTT client is libmosquitto, not Paho: the simulator is load, and libmosquitto costs a
// fraction of Paho's CPU per message (DESIGN §2) on a machine shared with the controller.
// Sessions are clean; after a dropped connection (or a reconnect storm of the profile) the
// connection reconnects with backoff, subscribes again, and then its devices resend what they
// awaited and idle ones ask start-next, as SDK clients do.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "simulator/device.h"
#include "simulator/fleet_spec.h"
#include "simulator/profile.h"

namespace simulator {

struct SimulateOptions {
  FleetSpec fleet;
  Profile profile;
  uint64_t seed = 1;
  // tcp:// or mqtt://, or ssl:// or mqtts:// for TLS; host and optional port
  std::string mqtt_uri = "tcp://127.0.0.1:1883";
  // TLS (ssl:// only): the CA that signed the broker's certificate (required), and the client
  // certificate and key (PEM, both or neither) whose identity the broker's ACL knows.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  int connections = 8;  // clamped to the number of devices
  std::string topic_root = "$aws/things";
  std::string telemetry_root = "fleetwave/things";
  double telemetry_interval_seconds = 30;  // 0: no telemetry
  int max_inflight = 1000;                 // per connection: publishes awaiting PUBACK or the wire
  std::string client_id_prefix;            // default "<id prefix>-sim-<pid>"; "-<n>" appended
  Trust trust;  // the keys every device trusts; none: devices check no signature
};

// The first problem with `options` (a bad URI, root, count), naming the setting; nullopt if none.
std::optional<std::string> CheckOptions(const SimulateOptions& options);

struct Progress {
  Tally tally;
  int64_t devices = 0;
  int64_t subscribed = 0;  // devices whose topics are subscribed on their current connection
  int connections = 0;
  int connections_up = 0;
  int64_t reconnects = 0;
  int64_t messages_in = 0;
  int64_t messages_out = 0;
  double seconds = 0;       // since Start()
  double idle_seconds = 0;  // since the last jobs request or message of any device (or Start())
};

class Simulator {
 public:
  // REQUIRES: CheckOptions(options) is nullopt.
  explicit Simulator(SimulateOptions options);
  ~Simulator();  // Stop()
  Simulator(const Simulator&) = delete;
  Simulator& operator=(const Simulator&) = delete;

  // Starts the connection threads: each connects, subscribes its devices, then boots them.
  void Start();
  // True once every connection has subscribed its devices (and the devices started booting);
  // false when `timeout` passes first (e.g. the broker is unreachable: connections keep trying).
  bool WaitReady(std::chrono::milliseconds timeout);
  // Disconnects and joins the threads; idempotent.
  void Stop();
  Progress progress() const;

 private:
  class Connection;
  SimulateOptions options_;
  std::chrono::steady_clock::time_point start_;
  std::atomic<bool> stop_{false};
  std::vector<std::unique_ptr<Connection>> connections_;
  std::vector<std::thread> threads_;
};

// Peak resident memory of this process (VmHWM), in KiB; 0 when unknown.
int64_t PeakRssKb();

}  // namespace simulator
