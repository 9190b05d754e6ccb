#include "simulator/simulate.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <fstream>
#include <functional>
#include <mutex>
#include <numeric>

#include <mosquitto.h>

namespace simulator {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kKeepAliveSeconds = 60;
constexpr int kDevicesPerSubscribe = 100;  // 300 filters in one SUBSCRIBE packet
constexpr int kSubscribesInFlight = 8;     // SUBSCRIBE packets awaiting their SUBACK
constexpr int kLoopWaitMs = 50;            // longest wait in the network loop
// Shortest turn of the network loop once up: what arrives meanwhile is read, and what the
// devices send is written, in one turn. A turn per message cost more syscalls and context
// switches than the devices' own work (bench/rollout); 2 ms is nothing next to a real
// device's network and its seconds-long steps.
constexpr auto kMinLoopTurn = std::chrono::milliseconds(2);
constexpr int64_t kMaxBackoffMs = 10000;  // between reconnect attempts
constexpr int kTimeBits = 40;             // heap entries: time in ms (34 years) ...
constexpr int kIndexBits = 24;            // ... and the connection-local device (16M)

struct Endpoint {
  std::string host;
  int port = 1883;
  bool tls = false;
};

std::optional<Endpoint> ParseUri(const std::string& uri, std::string* error) {
  std::string rest;
  Endpoint e;
  for (const char* scheme : {"tcp://", "mqtt://", "ssl://", "mqtts://"})
    if (uri.starts_with(scheme)) {
      rest = uri.substr(std::string_view(scheme).size());
      e.tls = scheme[0] == 's' || std::string_view(scheme) == "mqtts://";
      e.port = e.tls ? 8883 : 1883;
    }
  if (rest.empty()) {
    *error = "broker URI \"" + uri +
             "\" is not supported by the simulator: use tcp://HOST[:PORT] or ssl://HOST[:PORT] "
             "(mqtt:// and mqtts:// also)";
    return std::nullopt;
  }
  if (auto colon = rest.rfind(':'); colon != std::string::npos) {
    const std::string port = rest.substr(colon + 1);
    e.host = rest.substr(0, colon);
    if (port.empty() || port.size() > 5 ||
        port.find_first_not_of("0123456789") != std::string::npos || std::stoi(port) < 1 ||
        std::stoi(port) > 65535) {
      *error = "broker URI \"" + uri + "\" has a bad port: use 1 to 65535";
      return std::nullopt;
    }
    e.port = std::stoi(port);
  } else {
    e.host = rest;
  }
  if (e.host.empty() || e.host.find('/') != std::string::npos) {
    *error = "broker URI \"" + uri + "\" has no host: use tcp://HOST[:PORT]";
    return std::nullopt;
  }
  return e;
}

// The TLS settings against the URI: the same rules as mqtt::ClientOptions.
std::optional<std::string> CheckTls(const SimulateOptions& o, const Endpoint& e) {
  const bool any = !o.tls_ca_file.empty() || !o.tls_cert_file.empty() || !o.tls_key_file.empty();
  if (!e.tls) {
    if (any)
      return "TLS files are given but the broker URI \"" + o.mqtt_uri +
             "\" is plain TCP: use ssl://HOST:PORT";
    return std::nullopt;
  }
  if (o.tls_ca_file.empty())
    return "the broker URI \"" + o.mqtt_uri +
           "\" is TLS: give the CA certificate that signed the broker's (--tls-ca)";
  if (o.tls_cert_file.empty() != o.tls_key_file.empty())
    return "give both the client certificate and its key (--tls-cert and --tls-key), or neither";
  for (const std::string* file : {&o.tls_ca_file, &o.tls_cert_file, &o.tls_key_file})
    if (!file->empty() && access(file->c_str(), R_OK) != 0) return "cannot read TLS file " + *file;
  return std::nullopt;
}

bool BadRoot(const std::string& root) {
  return root.empty() || root.find_first_of("+#") != std::string::npos || root.back() == '/' ||
         root.front() == '/';
}

void InitLibrary() {
  static std::once_flag once;
  std::call_once(once, [] { mosquitto_lib_init(); });
}

}  // namespace

std::optional<std::string> CheckOptions(const SimulateOptions& o) {
  std::string error;
  auto endpoint = ParseUri(o.mqtt_uri, &error);
  if (!endpoint) return error;
  if (auto problem = CheckTls(o, *endpoint)) return problem;
  if (o.fleet.devices < 1 || o.fleet.devices > 1000000)
    return "devices must be in [1, 1000000], got " + std::to_string(o.fleet.devices);
  if (o.fleet.models.empty()) return "models must name at least one model";
  if (o.connections < 1 || o.connections > 1000)
    return "connections must be in [1, 1000], got " + std::to_string(o.connections);
  if (BadRoot(o.topic_root))
    return "topic root \"" + o.topic_root +
           "\" is invalid: use a topic without wildcards or a leading or trailing /";
  if (BadRoot(o.telemetry_root))
    return "telemetry root \"" + o.telemetry_root +
           "\" is invalid: use a topic without wildcards or a leading or trailing /";
  if (!(o.telemetry_interval_seconds >= 0) || o.telemetry_interval_seconds > 86400)
    return "telemetry interval must be in [0, 86400] seconds";
  if (o.max_inflight < 1 || o.max_inflight > 65535)
    return "max in-flight must be in [1, 65535], got " + std::to_string(o.max_inflight);
  if (!fleet::Version::Parse(o.fleet.firmware))
    return "firmware \"" + o.fleet.firmware + "\" is not a semantic version";
  return std::nullopt;
}

// One MQTT connection, its devices (global index = id + k * connections for local k), their
// timer heap and their state machine, all owned by one thread: no locks on the device path.
class Simulator::Connection {
 public:
  Connection(const SimulateOptions& o, int id, Clock::time_point start)
      : o_(o),
        id_(id),
        count_(o.connections),
        start_(start),
        machine_(o.fleet, o.profile, o.seed,
                 static_cast<int64_t>(std::llround(o.telemetry_interval_seconds * 1000)), o.trust) {
    std::string error;
    endpoint_ = *ParseUri(o.mqtt_uri, &error);
    client_id_ =
        (o.client_id_prefix.empty() ? o.fleet.id_prefix + "-sim-" + std::to_string(getpid())
                                    : o.client_id_prefix) +
        "-" + std::to_string(id);
    const int64_t n = (o.fleet.devices - id + count_ - 1) / count_;
    devices_.resize(static_cast<size_t>(n));
    // Decided up front (offline, late joiners) so that offline devices are never subscribed.
    for (int64_t k = 0; k < n; ++k) machine_.Init(devices_[k], Global(k), Now{0, 0});
    // Reconnect storms of the profile: this connection drops in storm s when it ranks among the
    // first fraction * connections by a hash of (seed, s, connection).
    for (size_t s = 0; s < o.profile.reconnect_storms.size(); ++s) {
      const ReconnectStorm& storm = o.profile.reconnect_storms[s];
      const int64_t chosen = std::llround(storm.connection_fraction * count_);
      auto rank = [&](int c) { return Mix64(o.seed ^ Mix64(s * 1000003 + c)); };
      int better = 0;
      for (int c = 0; c < count_; ++c) better += rank(c) < rank(id);
      if (better >= chosen) continue;
      Rng down(o.seed, static_cast<uint64_t>(id), Purpose::kStormDown, s);
      storms_.push_back({static_cast<int64_t>(storm.at_seconds * 1000),
                         static_cast<int64_t>(down.Seconds(storm.down_seconds) * 1000)});
    }
    std::sort(storms_.begin(), storms_.end());
    heap_.reserve(static_cast<size_t>(n) + 1024);
  }

  ~Connection() { Drop(); }

  void Run(const std::atomic<bool>& stop) {
    while (!stop.load(std::memory_order_relaxed)) {
      const Now now = NowTime();
      if (next_storm_ < storms_.size() && storms_[next_storm_].first <= now.ms) {
        retry_at_ = now.ms + storms_[next_storm_].second;
        ++next_storm_;
        if (mosq_) {
          mosquitto_disconnect(mosq_);
          Drop();
        }
        continue;
      }
      if (!mosq_) {
        if (now.ms < retry_at_) {
          std::this_thread::sleep_for(
              std::chrono::milliseconds(std::min<int64_t>(kLoopWaitMs, retry_at_ - now.ms)));
          continue;
        }
        if (!Connect()) {
          Backoff(now);
          continue;
        }
      }
      if (state_ == State::kSubscribing) SubscribeMore();
      int wait = kLoopWaitMs;
      if (state_ == State::kUp) {
        const auto turn_end = turn_start_ + kMinLoopTurn;
        if (Clock::now() < turn_end) std::this_thread::sleep_until(turn_end);
        turn_start_ = Clock::now();
        wait = RunTimers(NowTime());
      }
      int rc = mosquitto_loop(mosq_, wait, 1);
      if (rc != MOSQ_ERR_SUCCESS || state_ == State::kRefused) {
        Drop();
        Backoff(NowTime());
      }
    }
    if (mosq_) {
      mosquitto_disconnect(mosq_);
      Drop();
    }
  }

  bool ready() const { return ready_.load(); }
  bool up() const { return up_.load(); }
  int64_t subscribed() const { return subscribed_.load(); }
  int64_t devices() const { return static_cast<int64_t>(devices_.size()); }
  int64_t reconnects() const { return reconnects_.load(); }
  int64_t messages_in() const { return messages_in_.load(); }
  int64_t messages_out() const { return messages_out_.load(); }
  Counters& counters() { return machine_.counters(); }

 private:
  enum class State { kConnecting, kRefused, kSubscribing, kUp };

  int64_t Global(int64_t local) const { return id_ + local * count_; }

  Now NowTime() const {
    return Now{std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start_).count(),
               std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count()};
  }

  void Backoff(const Now& now) {
    backoff_ms_ = std::min(kMaxBackoffMs, std::max<int64_t>(250, backoff_ms_ * 2));
    retry_at_ = now.ms + backoff_ms_;
  }

  bool Connect() {
    InitLibrary();
    mosq_ = mosquitto_new(client_id_.c_str(), true, this);
    if (!mosq_) return false;
    mosquitto_int_option(mosq_, MOSQ_OPT_SEND_MAXIMUM, o_.max_inflight);
    mosquitto_int_option(mosq_, MOSQ_OPT_TCP_NODELAY, 1);
    if (endpoint_.tls) {
      auto file = [](const std::string& f) { return f.empty() ? nullptr : f.c_str(); };
      // Verifies the broker's certificate against the CA and its name against the host.
      if (mosquitto_tls_set(mosq_, o_.tls_ca_file.c_str(), nullptr, file(o_.tls_cert_file),
                            file(o_.tls_key_file), nullptr) != MOSQ_ERR_SUCCESS) {
        Drop();
        return false;
      }
    }
    mosquitto_connect_callback_set(mosq_, [](mosquitto*, void* self, int rc) {
      static_cast<Connection*>(self)->OnConnect(rc);
    });
    mosquitto_subscribe_callback_set(mosq_, [](mosquitto*, void* self, int, int, const int*) {
      static_cast<Connection*>(self)->OnSubscribed();
    });
    mosquitto_publish_callback_set(
        mosq_, [](mosquitto*, void* self, int) { --static_cast<Connection*>(self)->outstanding_; });
    mosquitto_message_callback_set(mosq_, [](mosquitto*, void* self, const mosquitto_message* m) {
      static_cast<Connection*>(self)->OnMessage(m);
    });
    state_ = State::kConnecting;
    outstanding_ = 0;
    if (mosquitto_connect(mosq_, endpoint_.host.c_str(), endpoint_.port, kKeepAliveSeconds) !=
        MOSQ_ERR_SUCCESS) {
      Drop();
      return false;
    }
    return true;
  }

  // Forgets the client and what it had in flight; the devices resend what they await once the
  // next connection is subscribed.
  void Drop() {
    if (mosq_) {
      mosquitto_destroy(mosq_);
      mosq_ = nullptr;
    }
    up_ = false;
    subscribed_ = 0;
    outstanding_ = 0;
  }

  void OnConnect(int rc) {
    if (rc != 0) {
      state_ = State::kRefused;
      return;
    }
    state_ = State::kSubscribing;
    next_subscribe_ = 0;
    subscribes_in_flight_ = 0;
    subscribed_ = 0;
    pending_subscribed_.clear();
  }

  // Sends the next SUBSCRIBE packets, a bounded number at a time.
  void SubscribeMore() {
    const int64_t n = devices();
    while (subscribes_in_flight_ < kSubscribesInFlight && next_subscribe_ < n) {
      filters_.clear();
      int64_t batch = 0;  // devices in this SUBSCRIBE (offline ones never subscribe)
      for (; next_subscribe_ < n && batch < kDevicesPerSubscribe; ++next_subscribe_) {
        if (devices_[next_subscribe_].phase == Phase::kOffline) continue;
        ++batch;
        for (const char* suffix : {"/jobs/notify-next", "/jobs/start-next/+", "/jobs/+/update/+"}) {
          std::string& f = filters_.emplace_back(o_.topic_root);
          f.push_back('/');
          AppendThing(o_.fleet, Global(next_subscribe_), &f);
          f += suffix;
        }
      }
      if (filters_.empty()) continue;
      pointers_.clear();
      for (std::string& f : filters_) pointers_.push_back(f.data());
      if (mosquitto_subscribe_multiple(mosq_, nullptr, static_cast<int>(pointers_.size()),
                                       pointers_.data(), 1, 0, nullptr) != MOSQ_ERR_SUCCESS) {
        state_ = State::kRefused;  // dropped and retried by the loop
        return;
      }
      ++subscribes_in_flight_;
      pending_subscribed_.push_back(batch);
    }
    if (subscribes_in_flight_ == 0 && next_subscribe_ >= n) BecomeUp();
  }

  void OnSubscribed() {
    --subscribes_in_flight_;
    if (!pending_subscribed_.empty()) {
      subscribed_ += pending_subscribed_.front();
      pending_subscribed_.pop_front();
    }
  }

  // Every device is subscribed: start them (first time) or let them catch up (reconnect).
  void BecomeUp() {
    state_ = State::kUp;
    up_ = true;
    backoff_ms_ = 0;
    const Now now = NowTime();
    if (!booted_) {
      booted_ = true;
      for (size_t k = 0; k < devices_.size(); ++k)
        Schedule(k, DeviceMachine::NextWake(devices_[k]));
      ready_ = true;
      return;
    }
    ++reconnects_;
    for (size_t k = 0; k < devices_.size(); ++k) {
      const int64_t before = DeviceMachine::NextWake(devices_[k]);
      machine_.OnReconnected(devices_[k], now);
      const int64_t after = DeviceMachine::NextWake(devices_[k]);
      if (after != before) Schedule(k, after);
    }
  }

  void Schedule(size_t local, int64_t at) {
    if (at == kNever) return;
    const uint64_t t = static_cast<uint64_t>(std::max<int64_t>(0, at));
    heap_.push_back((std::min<uint64_t>(t, (1ULL << kTimeBits) - 1) << kIndexBits) | local);
    std::push_heap(heap_.begin(), heap_.end(), std::greater<uint64_t>());
  }

  // Fires the timers that are due while the publish window has room; returns how long the
  // network loop may wait for the next one.
  int RunTimers(const Now& now) {
    while (!heap_.empty()) {
      if (outstanding_ >= o_.max_inflight) return 5;  // until acknowledgements make room
      const uint64_t top = heap_.front();
      const int64_t at = static_cast<int64_t>(top >> kIndexBits);
      if (at > now.ms) return static_cast<int>(std::min<int64_t>(kLoopWaitMs, at - now.ms));
      std::pop_heap(heap_.begin(), heap_.end(), std::greater<uint64_t>());
      heap_.pop_back();
      const size_t local = static_cast<size_t>(top & ((1ULL << kIndexBits) - 1));
      DeviceState& d = devices_[local];
      if (std::min<int64_t>(DeviceMachine::NextWake(d), (1LL << kTimeBits) - 1) != at)
        continue;  // stale: the device's timers moved since
      out_.clear();
      machine_.OnTimer(d, Global(static_cast<int64_t>(local)), now, &out_);
      PublishAll(static_cast<int64_t>(local));
      Schedule(local, DeviceMachine::NextWake(d));
    }
    return kLoopWaitMs;
  }

  void OnMessage(const mosquitto_message* m) {
    ++messages_in_;
    auto topic = ParseInboundTopic(m->topic, o_.topic_root);
    if (!topic) return;
    const int64_t index = ThingIndex(o_.fleet, topic->thing);
    if (index < 0 || index % count_ != id_) return;
    const size_t local = static_cast<size_t>(index / count_);
    DeviceState& d = devices_[local];
    const int64_t before = DeviceMachine::NextWake(d);
    out_.clear();
    machine_.OnMessage(
        d, index, topic->kind,
        std::string_view(static_cast<const char*>(m->payload), static_cast<size_t>(m->payloadlen)),
        NowTime(), &out_);
    PublishAll(static_cast<int64_t>(local));
    const int64_t after = DeviceMachine::NextWake(d);
    if (after != before) Schedule(local, after);
  }

  void PublishAll(int64_t local) {
    for (const Publish& p : out_) {
      topic_.clear();
      topic_ += p.telemetry ? o_.telemetry_root : o_.topic_root;
      topic_.push_back('/');
      AppendThing(o_.fleet, Global(local), &topic_);
      topic_ += p.telemetry ? std::string_view("/telemetry") : std::string_view("/");
      if (!p.telemetry) topic_ += p.suffix;
      // A publish refused here (connection just lost) is like one lost on the wire: the device
      // sends its request again after the timeout or the reconnect.
      if (mosquitto_publish(mosq_, nullptr, topic_.c_str(), static_cast<int>(p.payload.size()),
                            p.payload.data(), p.telemetry ? 0 : 1, false) == MOSQ_ERR_SUCCESS) {
        ++outstanding_;
        ++messages_out_;
      }
    }
  }

  Clock::time_point turn_start_{};  // of the network loop's current turn
  const SimulateOptions& o_;
  const int id_;
  const int count_;
  const Clock::time_point start_;
  DeviceMachine machine_;
  Endpoint endpoint_;
  std::string client_id_;
  std::vector<DeviceState> devices_;
  std::vector<uint64_t> heap_;                       // min-heap of (time ms << 24 | local index)
  std::vector<std::pair<int64_t, int64_t>> storms_;  // (at ms, down ms)
  size_t next_storm_ = 0;

  mosquitto* mosq_ = nullptr;
  State state_ = State::kConnecting;
  int64_t retry_at_ = 0;
  int64_t backoff_ms_ = 0;
  int outstanding_ = 0;  // publishes not yet acknowledged (QoS 1) or written (QoS 0)
  bool booted_ = false;
  int64_t next_subscribe_ = 0;
  int subscribes_in_flight_ = 0;
  std::deque<int64_t> pending_subscribed_;  // devices covered by each SUBSCRIBE in flight
  std::vector<std::string> filters_;
  std::vector<char*> pointers_;
  std::vector<Publish> out_;
  std::string topic_;

  std::atomic<bool> ready_{false};
  std::atomic<bool> up_{false};
  std::atomic<int64_t> subscribed_{0};
  std::atomic<int64_t> reconnects_{0};
  std::atomic<int64_t> messages_in_{0};
  std::atomic<int64_t> messages_out_{0};
};

Simulator::Simulator(SimulateOptions options) : options_(std::move(options)) {
  options_.connections =
      static_cast<int>(std::min<int64_t>(options_.connections, options_.fleet.devices));
  start_ = Clock::now();
  for (int c = 0; c < options_.connections; ++c)
    connections_.push_back(std::make_unique<Connection>(options_, c, start_));
}

Simulator::~Simulator() { Stop(); }

void Simulator::Start() {
  start_ = Clock::now();
  for (auto& c : connections_) {
    Connection* conn = c.get();
    threads_.emplace_back([this, conn] { conn->Run(stop_); });
  }
}

bool Simulator::WaitReady(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    bool all = std::all_of(connections_.begin(), connections_.end(),
                           [](const auto& c) { return c->ready(); });
    if (all) return true;
    if (Clock::now() >= deadline || stop_) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void Simulator::Stop() {
  stop_ = true;
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

Progress Simulator::progress() const {
  Progress p;
  p.connections = static_cast<int>(connections_.size());
  p.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
  int64_t last_activity = 0;
  for (const auto& c : connections_) {
    p.tally += c->counters().Read();
    p.devices += c->devices();
    p.subscribed += c->subscribed();
    p.connections_up += c->up();
    p.reconnects += c->reconnects();
    p.messages_in += c->messages_in();
    p.messages_out += c->messages_out();
    last_activity = std::max(last_activity, c->counters().last_activity_ms.load());
  }
  p.idle_seconds = std::max(0.0, p.seconds - last_activity / 1000.0);
  return p;
}

int64_t PeakRssKb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("VmHWM:")) return std::stoll(line.substr(6));
  return 0;
}

}  // namespace simulator
