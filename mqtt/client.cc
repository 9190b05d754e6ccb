#include "mqtt/client.h"

#include <mqtt/async_client.h>

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <limits>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <utility>

namespace mqtt {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Back-off between connect attempts (see ConnectorLoop).
constexpr milliseconds kMinRetry{100};
constexpr milliseconds kMaxRetry{5000};
// A failed or refused subscribe on a live connection is retried after this pause.
constexpr milliseconds kResubscribePause{1000};
// After Paho refused a publish (usually: the connection dropped between our check and the call,
// before the connection-lost callback told us), wait this long for news before trying again.
constexpr milliseconds kPublishRetryPause{50};
// The destructor gives in-flight publishes this long, then closes the socket regardless.
constexpr milliseconds kDisconnectTimeout{1000};
// MQTT packet ids are 16 bits; Paho runs out of them beyond this many unacknowledged messages.
constexpr size_t kMaxWindow = 65535;
// Room in Paho's command queue beyond the QoS 1 window, for QoS 0 publishes not yet written.
constexpr size_t kQos0Queue = 1000;
// Paho's queue was full: it drains at socket speed, so look again soon.
constexpr milliseconds kQueueFullPause{1};

std::string RandomClientId() {
  std::random_device rd;
  std::mt19937_64 gen((uint64_t{rd()} << 32) ^ rd());
  char buf[32];
  std::snprintf(buf, sizeof buf, "fw-%016llx", static_cast<unsigned long long>(gen()));
  return buf;
}

void ValidateServerUri(const std::string& uri) {
  static const char* const kSchemes[] = {"tcp://",   "mqtt://", "ssl://",
                                         "mqtts://", "ws://",   "wss://"};
  for (const char* scheme : kSchemes) {
    std::string_view s(scheme);
    if (uri.starts_with(s)) {
      std::string_view rest = std::string_view(uri).substr(s.size());
      if (!rest.empty() && rest.front() != ':' && rest.front() != '/') return;
      break;
    }
  }
  throw std::invalid_argument("mqtt: malformed server URI '" + uri +
                              "' (expected e.g. tcp://host:1883)");
}

bool IsTlsUri(const std::string& uri) {
  return uri.starts_with("ssl://") || uri.starts_with("mqtts://") || uri.starts_with("wss://");
}

// TLS settings that cannot work are configuration errors: said at once, naming the field, rather
// than as a connection that never comes up.
void ValidateTls(const ClientOptions& o) {
  const bool tls = IsTlsUri(o.server_uri);
  for (auto [field, value] :
       {std::pair{"tls_ca_file", &o.tls_ca_file}, std::pair{"tls_cert_file", &o.tls_cert_file},
        std::pair{"tls_key_file", &o.tls_key_file}}) {
    if (value->empty()) continue;
    if (!tls)
      throw std::invalid_argument(std::string("mqtt: ") + field + " is set but server URI '" +
                                  o.server_uri +
                                  "' is not TLS: use ssl://host:port, or leave the TLS files out");
    if (::access(value->c_str(), R_OK) != 0)
      throw std::invalid_argument(std::string("mqtt: ") + field + " '" + *value +
                                  "' cannot be read: " + std::strerror(errno));
  }
  if (!tls) return;
  if (o.tls_ca_file.empty())
    throw std::invalid_argument("mqtt: server URI '" + o.server_uri +
                                "' is TLS but tls_ca_file is empty: give the CA certificate "
                                "that signed the broker's (e.g. the fleet CA's ca.crt)");
  if (o.tls_cert_file.empty() != o.tls_key_file.empty())
    throw std::invalid_argument(std::string("mqtt: ") +
                                (o.tls_cert_file.empty() ? "tls_cert_file" : "tls_key_file") +
                                " is empty but the other is set: a client certificate needs "
                                "its key, and a key its certificate");
}

// What a connect failure's return code means, in words.
std::string DescribeConnectFailure(int rc) {
  switch (rc) {
    case 1:
      return "the broker refused the connection: unacceptable protocol version (CONNACK 1)";
    case 2:
      return "the broker refused the connection: client id rejected (CONNACK 2)";
    case 3:
      return "the broker refused the connection: server unavailable (CONNACK 3)";
    case 4:
      return "the broker refused the connection: bad user name or password (CONNACK 4)";
    case 5:
      return "the broker refused the connection: not authorized (CONNACK 5)";
    case MQTTASYNC_SSL_NOT_SUPPORTED:
      return "this Paho library has no TLS support";
    default:
      return "connect failed (Paho rc " + std::to_string(rc) +
             "): no broker answered, or the connection was closed during the TLS handshake or "
             "before CONNACK";
  }
}

// Return codes of MQTTAsync_sendMessage that mean "this publish can never work", as opposed to
// "not now" (disconnected, out of packet ids, queue full).
bool IsPermanentPublishError(int rc) {
  return rc == MQTTASYNC_BAD_UTF8_STRING || rc == MQTTASYNC_NULL_PARAMETER ||
         rc == MQTTASYNC_TOPICNAME_TRUNCATED || rc == MQTTASYNC_BAD_STRUCTURE ||
         rc == MQTTASYNC_BAD_QOS;
}

// Paho C runs the callbacks of every client in the process on ONE receive thread, holding the
// library's global mutex. While a message callback waits for room in its inbound queue, any
// Paho call of any client would block inside Paho, deaf to our timeouts and to Stop(). This
// process-wide gate keeps the two apart: our threads enter Paho only while no callback is
// blocked (otherwise they wait here, where deadlines and Stop() work), and a callback blocks only
// while none of our threads is inside Paho (one may be waiting for the very mutex the callback
// thread holds; then the callback queues its message beyond the bound instead of deadlocking).
struct PahoGate {
  std::mutex mu;
  std::condition_variable cv;
  int blocked_callbacks = 0;  // message callbacks waiting for room
  int callers = 0;            // our threads inside a Paho call
};

PahoGate& Gate() {
  static PahoGate* gate = new PahoGate;  // never destroyed: Paho threads may outlive main
  return *gate;
}

// Holds the gate open for one Paho call of ours.
class PahoCall {
 public:
  // Waits until no callback is blocked; false (and no entry) if `deadline` passes or `stop`
  // becomes true first.
  bool Enter(Clock::time_point deadline, const std::atomic<bool>& stop) {
    PahoGate& gate = Gate();
    std::unique_lock g(gate.mu);
    gate.cv.wait_until(g, deadline, [&] { return gate.blocked_callbacks == 0 || stop.load(); });
    if (gate.blocked_callbacks != 0 || stop.load()) return false;
    ++gate.callers;
    entered_ = true;
    return true;
  }
  ~PahoCall() { Leave(); }
  void Leave() {
    if (!entered_) return;
    entered_ = false;
    PahoGate& gate = Gate();
    std::lock_guard g(gate.mu);
    --gate.callers;  // nobody waits for this to drop: a callback never waits for callers
  }

 private:
  bool entered_ = false;
};

}  // namespace

class Client::Impl {
 public:
  explicit Impl(ClientOptions options);
  ~Impl();

  bool WaitConnected(milliseconds timeout);
  bool connected() const;
  std::string last_connect_error() const;
  bool Publish(const std::string& topic, const std::string& payload, int qos, milliseconds timeout);
  size_t Receive(std::vector<Message>* out, size_t max, milliseconds wait);
  bool Flush(milliseconds timeout);
  void Stop();
  ClientStats stats() const;

 private:
  // Paho calls the listeners on its own threads; they hold no state of their own.
  class DeliveryListener : public iaction_listener {
   public:
    explicit DeliveryListener(Impl* impl) : impl_(impl) {}
    void on_success(const token&) override { impl_->OnDelivered(true); }
    void on_failure(const token&) override { impl_->OnDelivered(false); }

   private:
    Impl* impl_;
  };
  class SubscribeListener : public iaction_listener {
   public:
    explicit SubscribeListener(Impl* impl) : impl_(impl) {}
    void on_success(const token& t) override { impl_->OnSubscribed(t, true); }
    void on_failure(const token& t) override { impl_->OnSubscribed(t, false); }

   private:
    Impl* impl_;
  };
  class ConnectListener : public iaction_listener {
   public:
    explicit ConnectListener(Impl* impl) : impl_(impl) {}
    void on_success(const token&) override { impl_->OnConnected(); }
    void on_failure(const token& t) override { impl_->OnConnectFailed(t.get_return_code()); }

   private:
    Impl* impl_;
  };

  // Every Paho callback runs inside one of these. Once the destructor has switched callbacks off
  // and waited for `active_callbacks_` to drain, no callback touches anything but these atomics.
  class CallbackScope {
   public:
    explicit CallbackScope(Impl* impl) : impl_(impl) {
      impl_->active_callbacks_.fetch_add(1);
      enabled_ = impl_->callbacks_enabled_.load();
    }
    ~CallbackScope() { impl_->active_callbacks_.fetch_sub(1); }
    explicit operator bool() const { return enabled_; }

   private:
    Impl* impl_;
    bool enabled_;
  };

  // Paho callbacks: they take our mutex briefly, never call blocking Paho functions, and only
  // OnMessage waits (for room in the inbound queue: the back-pressure).
  void OnConnected();
  void OnConnectionLost();
  void OnMessage(const const_message_ptr& msg);
  void OnDelivered(bool ok);
  void OnSubscribed(const token& t, bool ok);
  void OnConnectFailed(int rc);
  void OnTlsError(const std::string& message);

  void SendSubscribe(uint64_t epoch);
  void ConnectorLoop();

  const ClientOptions options_;
  const size_t max_inflight_;
  connect_options connect_options_;
  const_string_collection_ptr filters_;
  iasync_client::qos_collection filter_qos_;

  DeliveryListener delivery_listener_{this};
  SubscribeListener subscribe_listener_{this};
  ConnectListener connect_listener_{this};
  std::atomic<bool> callbacks_enabled_{true};
  std::atomic<int> active_callbacks_{0};
  std::atomic<bool> stop_requested_{false};  // stopping_, readable without mu_

  mutable std::mutex mu_;
  std::condition_variable state_cv_;  // connection state, window, stop: Publish, Wait*, Flush
  // The connector's own: woken by changes of the connection, not by every acknowledgement (it
  // waits for the whole life of the client; a wake-up per PUBACK cost a context switch each).
  std::condition_variable connector_cv_;
  void NotifyState() {
    state_cv_.notify_all();
    connector_cv_.notify_all();
  }
  std::condition_variable inbound_cv_;  // a message arrived: Receive
  std::condition_variable space_cv_;    // room in the inbound queue: OnMessage
  bool stopping_ = false;
  bool connected_ = false;
  bool subscribed_ = false;
  bool connect_pending_ = false;     // a connect attempt is under way
  bool resubscribe_needed_ = false;  // a subscribe failed on the current connection
  uint64_t epoch_ = 0;               // bumped on every connect; tags subscribe requests
  std::deque<Message> inbound_;
  size_t inflight_ = 0;
  uint64_t handed_over_ = 0;  // QoS >= 1 publishes accepted by Paho
  uint64_t completed_ = 0;    // ... of which acknowledged or failed
  // Who waits for an acknowledgement, so that OnDelivered wakes no one in vain (the relay's
  // Flush would otherwise wake up for every PUBACK of a 200-message window).
  size_t window_waiters_ = 0;              // Publish calls waiting (for room, or a connection)
  std::multiset<uint64_t> flush_targets_;  // completed_ each waiting Flush needs
  ClientStats counters_;                   // received, published, publish_failures, connects
  std::string tls_error_;                  // OpenSSL's words during the current connect attempt
  std::string last_connect_error_;         // why the latest attempt failed; empty after a success
  bool connect_error_new_ = false;         // ... and it is not reported yet (on_connect_error)

  std::thread connector_;
  // Last member: destroyed first, while everything its callbacks may touch is still alive.
  std::unique_ptr<async_client> cli_;
};

Client::Impl::Impl(ClientOptions options)
    : options_(std::move(options)), max_inflight_(std::min(options_.max_inflight, kMaxWindow)) {
  ValidateServerUri(options_.server_uri);
  ValidateTls(options_);
  if (options_.max_inflight == 0) throw std::invalid_argument("mqtt: max_inflight must be > 0");
  if (options_.max_inbound == 0) throw std::invalid_argument("mqtt: max_inbound must be > 0");
  if (options_.subscription_qos < 0 || options_.subscription_qos > 2) {
    throw std::invalid_argument("mqtt: subscription_qos must be 0, 1 or 2");
  }
  // A persistent session under a random name could never be resumed, and the broker would keep
  // it (and queue for it) until it expires.
  if (options_.client_id.empty() && !options_.clean_session) {
    throw std::invalid_argument("mqtt: clean_session=false needs a fixed client_id");
  }
  std::string client_id = options_.client_id.empty() ? RandomClientId() : options_.client_id;

  auto connect_timeout = std::chrono::ceil<std::chrono::seconds>(options_.connect_timeout);
  connect_options_ = connect_options_builder()
                         .mqtt_version(MQTTVERSION_3_1_1)
                         .clean_session(options_.clean_session)
                         .keep_alive_interval(std::chrono::seconds(options_.keep_alive_seconds))
                         .connect_timeout(std::max(connect_timeout, std::chrono::seconds(1)))
                         .automatic_reconnect(false)  // ConnectorLoop does it
                         .max_inflight(static_cast<int>(max_inflight_))
                         .finalize();
  if (IsTlsUri(options_.server_uri)) {
    ssl_options_builder tls;
    tls.trust_store(options_.tls_ca_file)
        .enable_server_cert_auth(true)
        .verify(true)  // the broker's certificate must name the host of the URI
        .ssl_version(MQTT_SSL_VERSION_TLS_1_2)  // 1.2 or later
        // Called on Paho's thread with OpenSSL's error text: kept for the failure report.
        .error_handler([this](const std::string& message) { OnTlsError(message); });
    if (!options_.tls_cert_file.empty()) {
      tls.key_store(options_.tls_cert_file).private_key(options_.tls_key_file);
    }
    connect_options_.set_ssl(tls.finalize());
  }
  if (!options_.subscriptions.empty()) {
    filters_ = string_collection::create(options_.subscriptions);
    filter_qos_.assign(options_.subscriptions.size(), options_.subscription_qos);
  }

  // Paho refuses a publish (MQTTASYNC_MAX_BUFFERED_MESSAGES) once this many are queued inside it
  // but not yet written, connected or not; the default is 100, far below our window.
  create_options create(MQTTVERSION_3_1_1);
  create.set_send_while_disconnected(false);
  create.set_max_buffered_messages(static_cast<int>(max_inflight_ + kQos0Queue));
  try {
    cli_ = std::make_unique<async_client>(options_.server_uri, client_id, create);
  } catch (const mqtt::exception& e) {
    throw std::invalid_argument("mqtt: cannot use server URI '" + options_.server_uri +
                                "': " + e.what());
  }
  cli_->set_connection_lost_handler([this](const std::string&) { OnConnectionLost(); });
  cli_->set_message_callback([this](const_message_ptr msg) { OnMessage(msg); });
  connector_ = std::thread([this] { ConnectorLoop(); });
}

Client::Impl::~Impl() {
  Stop();
  if (connector_.joinable()) connector_.join();

  // Callbacks off first: from here on nothing Paho calls touches our state, so Paho may fire
  // whatever it likes while it winds down.
  callbacks_enabled_.store(false);
  while (active_callbacks_.load() != 0) std::this_thread::yield();

  // Paho's calls need its global mutex: wait for any blocked callback (of another Client) first.
  static const std::atomic<bool> kNever{false};
  PahoCall call;
  call.Enter(Clock::time_point::max(), kNever);
  // Paho waits up to the timeout for in-flight publishes; bound our wait too, in case the broker
  // is gone without the socket noticing.
  try {
    auto tok = cli_->disconnect(static_cast<int>(kDisconnectTimeout.count()));
    tok->wait_for(kDisconnectTimeout + milliseconds(1000));
  } catch (const std::exception&) {
    // Not connected (or never was): nothing to close.
  }
  cli_.reset();
}

// ------------------------------------------------------------------------------ callbacks

namespace {

// Paho C 1.3 never sets TCP_NODELAY, and has no option for it. With Nagle's algorithm on, a
// small publish waits for the TCP acknowledgement of the previous one, which the broker delays
// up to 40 ms when it has nothing to send back (QoS 0 answers): measured, it put a 50 ms tail on
// request-to-answer latency. So once connected, we switch it off on every socket of this
// process that talks to the broker's port (other clients' sockets to it want the same).
void DisableNagleTowards(int port) {
  DIR* fds = opendir("/proc/self/fd");
  if (!fds) return;
  while (dirent* entry = readdir(fds)) {
    int fd = std::atoi(entry->d_name);
    struct stat st {};
    if (fd <= 2 || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) continue;
    int peer_port =
        peer.ss_family == AF_INET    ? ntohs(reinterpret_cast<sockaddr_in*>(&peer)->sin_port)
        : peer.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&peer)->sin6_port)
                                     : -1;
    if (peer_port != port) continue;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  closedir(fds);
}

int PortOf(const std::string& uri) {
  size_t colon = uri.rfind(':');
  if (colon == std::string::npos || uri.find("://") == colon)
    return uri.starts_with("ssl") ? 8883 : 1883;
  return std::atoi(uri.c_str() + colon + 1);
}

}  // namespace

// Every connect is ours (ConnectorLoop), so the success of its token is the "connected" event;
// Paho's separate connected handler would only report the same thing a second time.
void Client::Impl::OnConnected() {
  CallbackScope scope(this);
  if (!scope) return;
  DisableNagleTowards(PortOf(options_.server_uri));
  uint64_t epoch;
  {
    std::lock_guard lk(mu_);
    connected_ = true;
    connect_pending_ = false;
    ++counters_.connects;
    last_connect_error_.clear();
    tls_error_.clear();
    connect_error_new_ = false;
    epoch = ++epoch_;
    subscribed_ = !filters_;
    resubscribe_needed_ = false;
  }
  NotifyState();
  // With a clean session the broker forgot our subscriptions; with a persistent one repeating
  // them is harmless. Non-blocking: the SUBACK arrives on this very thread later.
  if (filters_) SendSubscribe(epoch);
}

void Client::Impl::SendSubscribe(uint64_t epoch) {
  try {
    cli_->subscribe(filters_, filter_qos_, reinterpret_cast<void*>(static_cast<uintptr_t>(epoch)),
                    subscribe_listener_);
  } catch (const std::exception&) {
    {
      std::lock_guard lk(mu_);
      if (epoch == epoch_ && connected_) resubscribe_needed_ = true;
    }
    NotifyState();
  }
}

void Client::Impl::OnSubscribed(const token& t, bool ok) {
  CallbackScope scope(this);
  if (!scope) return;
  auto epoch = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(t.get_user_context()));
  if (ok) {
    // In MQTT 3.1.1 a SUBACK may refuse some filters (0x80, e.g. an ACL) and still "succeed".
    // The token is complete, so reading its response does not wait.
    try {
      const subscribe_response response = t.get_subscribe_response();
      for (ReasonCode rc : response.get_reason_codes()) {
        if (static_cast<int>(rc) >= 0x80) ok = false;
      }
    } catch (const std::exception&) {
      ok = false;
    }
  }
  {
    std::lock_guard lk(mu_);
    if (epoch != epoch_ || !connected_) return;  // an answer for an earlier connection
    if (ok) {
      subscribed_ = true;
    } else {
      resubscribe_needed_ = true;  // the connector thread retries after a pause
    }
  }
  NotifyState();
}

void Client::Impl::OnConnectionLost() {
  CallbackScope scope(this);
  if (!scope) return;
  {
    std::lock_guard lk(mu_);
    connected_ = false;
    subscribed_ = false;
    resubscribe_needed_ = false;
  }
  NotifyState();
}

void Client::Impl::OnConnectFailed(int rc) {
  CallbackScope scope(this);
  if (!scope) return;
  {
    std::lock_guard lk(mu_);
    connect_pending_ = false;
    std::string reason = DescribeConnectFailure(rc);
    if (!tls_error_.empty()) reason += "; TLS: " + tls_error_;
    tls_error_.clear();
    if (reason != last_connect_error_) {
      last_connect_error_ = std::move(reason);
      connect_error_new_ = true;
    }
  }
  NotifyState();
}

void Client::Impl::OnTlsError(const std::string& message) {
  CallbackScope scope(this);
  if (!scope) return;
  std::lock_guard lk(mu_);
  // OpenSSL may report several lines for one failure; keep them, bounded.
  if (tls_error_.size() > 1000) return;
  std::string line = message;
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (!tls_error_.empty()) tls_error_ += "; ";
  tls_error_ += line;
}

void Client::Impl::OnMessage(const const_message_ptr& msg) {
  CallbackScope scope(this);
  if (!scope || !msg) return;
  Message m{msg->get_topic(), msg->to_string(), msg->get_qos()};
  {
    std::unique_lock lk(mu_);
    // Back-pressure: hold Paho's receive thread until Receive() makes room. That stalls all of
    // Paho in the process, so it happens only when the gate allows (see PahoGate).
    auto room = [&] { return stopping_ || inbound_.size() < options_.max_inbound; };
    if (!room() && (m.qos == 0 || options_.drop_when_full)) {
      // A QoS 0 message (telemetry) may be lost on the wire anyway: under overload it is the one
      // to lose, rather than stalling Paho (and the requests behind it) to keep it. With
      // drop_when_full, so is any message: its sender asks again.
      ++counters_.dropped;
      return;
    }
    if (!room()) {
      PahoGate& gate = Gate();
      bool block;
      {
        std::lock_guard g(gate.mu);
        block = gate.callers == 0;
        if (block) ++gate.blocked_callbacks;
      }
      if (block) {
        space_cv_.wait(lk, room);
        {
          std::lock_guard g(gate.mu);
          --gate.blocked_callbacks;
        }
        gate.cv.notify_all();
      }
    }
    // After Stop() nothing waits any more: what fits is still queued for a last Receive(), the
    // rest is dropped (Paho has acknowledged it already).
    if (stopping_ && inbound_.size() >= options_.max_inbound) return;
    inbound_.push_back(std::move(m));
    ++counters_.received;
  }
  inbound_cv_.notify_one();
}

void Client::Impl::OnDelivered(bool ok) {
  CallbackScope scope(this);
  if (!scope) return;
  bool wake;
  {
    std::lock_guard lk(mu_);
    --inflight_;
    ++completed_;
    if (ok) {
      ++counters_.published;
    } else {
      ++counters_.publish_failures;
    }
    wake = window_waiters_ > 0 ||
           (!flush_targets_.empty() && (inflight_ == 0 || completed_ >= *flush_targets_.begin()));
  }
  if (wake) state_cv_.notify_all();  // the window and Flush; the connector does not care
}

// ------------------------------------------------------------------------------ connector

// All (re)connecting happens here rather than in Paho's automatic reconnect: Paho only retries
// after a first successful connect, and its retry interval has a granularity of whole seconds.
// One path for the first connect and every later one, 100 ms .. 5 s back-off with jitter.
void Client::Impl::ConnectorLoop() {
  std::minstd_rand jitter(std::random_device{}());
  milliseconds backoff{0};  // none before the very first attempt
  uint64_t seen_connects = 0;
  std::unique_lock lk(mu_);
  while (!stopping_) {
    connector_cv_.wait(lk, [&] {
      return stopping_ || (!connected_ && !connect_pending_) || (connected_ && resubscribe_needed_);
    });
    if (stopping_) break;

    if (connected_) {  // a subscribe failed on this connection: try again after a pause
      const uint64_t epoch = epoch_;
      if (connector_cv_.wait_for(lk, kResubscribePause, [&] { return stopping_; })) break;
      if (!resubscribe_needed_ || epoch != epoch_ || !connected_) continue;
      resubscribe_needed_ = false;
      lk.unlock();
      SendSubscribe(epoch);
      lk.lock();
      continue;
    }

    if (connect_error_new_ && options_.on_connect_error) {
      // Reported from this thread, not Paho's: the callback may log, block, or call us.
      connect_error_new_ = false;
      const std::string reason = last_connect_error_;
      lk.unlock();
      options_.on_connect_error(reason);
      lk.lock();
      continue;
    }
    if (counters_.connects != seen_connects) {  // we were connected: start the back-off afresh
      seen_connects = counters_.connects;
      backoff = kMinRetry;
    }
    if (backoff.count() > 0) {
      // Up to a quarter off, so that clients dropped together do not come back in lockstep.
      auto pause = backoff - milliseconds(jitter() % (backoff.count() / 4 + 1));
      if (connector_cv_.wait_for(lk, pause, [&] { return stopping_; })) break;
    }
    backoff = std::clamp(backoff * 2, kMinRetry, kMaxRetry);

    connect_pending_ = true;
    lk.unlock();
    PahoCall call;
    bool started = call.Enter(Clock::time_point::max(), stop_requested_);
    if (started) {
      try {
        cli_->connect(connect_options_, nullptr, connect_listener_);
      } catch (const std::exception&) {
        started = false;
      }
    }
    call.Leave();
    lk.lock();
    if (!started) connect_pending_ = false;
  }
}

// ------------------------------------------------------------------------------ API

bool Client::Impl::WaitConnected(milliseconds timeout) {
  std::unique_lock lk(mu_);
  return state_cv_.wait_for(lk, timeout, [&] { return connected_ && subscribed_; });
}

bool Client::Impl::connected() const {
  std::lock_guard lk(mu_);
  return connected_;
}

std::string Client::Impl::last_connect_error() const {
  std::lock_guard lk(mu_);
  return last_connect_error_;
}

bool Client::Impl::Publish(const std::string& topic, const std::string& payload, int qos,
                           milliseconds timeout) {
  if (qos < 0 || qos > 2) throw std::invalid_argument("mqtt: qos must be 0, 1 or 2");
  if (topic.empty() || topic.find_first_of("+#") != std::string::npos ||
      topic.find('\0') != std::string::npos) {
    // The broker would drop the connection over it.
    throw std::invalid_argument("mqtt: cannot publish to topic '" + topic + "'");
  }
  const auto deadline = Clock::now() + timeout;
  // One message object for all attempts; Paho copies what it sends.
  const_message_ptr msg = make_message(topic, payload, qos, false);

  std::unique_lock lk(mu_);
  for (;;) {
    ++window_waiters_;
    bool ready = state_cv_.wait_until(lk, deadline, [&] {
      return stopping_ || (connected_ && (qos == 0 || inflight_ < max_inflight_));
    });
    --window_waiters_;
    if (!ready || stopping_) return false;
    if (qos > 0) ++inflight_;
    const uint64_t epoch = epoch_;
    lk.unlock();

    int rc = MQTTASYNC_SUCCESS;
    PahoCall call;
    if (!call.Enter(deadline, stop_requested_)) {
      lk.lock();
      if (qos > 0) --inflight_;
      NotifyState();
      return false;
    }
    try {
      if (qos > 0) {
        // The returned token is dropped at once: the listener does the accounting, and Paho
        // releases its own reference when the publish completes.
        cli_->publish(msg, nullptr, delivery_listener_);
      } else {
        cli_->publish(msg);
      }
    } catch (const mqtt::exception& e) {
      rc = e.get_return_code();
      if (rc == MQTTASYNC_SUCCESS) rc = MQTTASYNC_FAILURE;
    }
    call.Leave();

    lk.lock();
    if (rc == MQTTASYNC_SUCCESS) {
      if (qos > 0) {
        ++handed_over_;
      } else {
        ++counters_.published;
      }
      return true;
    }
    // Not sent (Paho removed its token, the listener will not run): undo and maybe retry.
    if (qos > 0) --inflight_;
    NotifyState();
    if (IsPermanentPublishError(rc)) {
      throw std::invalid_argument("mqtt: Paho refused a publish to '" + topic + "' (rc " +
                                  std::to_string(rc) + ")");
    }
    const milliseconds wait =
        rc == MQTTASYNC_MAX_BUFFERED_MESSAGES ? kQueueFullPause : kPublishRetryPause;
    auto pause = std::min<Clock::time_point>(deadline, Clock::now() + wait);
    state_cv_.wait_until(lk, pause, [&] { return stopping_ || epoch_ != epoch; });
  }
}

size_t Client::Impl::Receive(std::vector<Message>* out, size_t max, milliseconds wait) {
  if (max == 0) return 0;
  std::unique_lock lk(mu_);
  inbound_cv_.wait_for(lk, wait, [&] { return stopping_ || !inbound_.empty(); });
  size_t n = std::min(max, inbound_.size());
  const bool was_full = inbound_.size() >= options_.max_inbound;
  for (size_t i = 0; i < n; ++i) {
    out->push_back(std::move(inbound_.front()));
    inbound_.pop_front();
  }
  lk.unlock();
  if (n > 0 && was_full) space_cv_.notify_all();
  return n;
}

// Waits until the QoS >= 1 publishes handed over before the call are done. Completions can
// come out of order only around reconnects, so "as many completed as were handed over" is the
// practical test; an empty window ends the wait too. Stop() does not end it: Stop(), then
// Flush() is how a caller drains before destruction.
bool Client::Impl::Flush(milliseconds timeout) {
  std::unique_lock lk(mu_);
  const uint64_t target = handed_over_;
  auto waiting = flush_targets_.insert(target);
  const bool done =
      state_cv_.wait_for(lk, timeout, [&] { return inflight_ == 0 || completed_ >= target; });
  flush_targets_.erase(waiting);
  return done;
}

void Client::Impl::Stop() {
  {
    std::lock_guard lk(mu_);
    if (stopping_) return;
    stopping_ = true;
    stop_requested_ = true;
  }
  NotifyState();
  inbound_cv_.notify_all();
  space_cv_.notify_all();
  {
    std::lock_guard g(Gate().mu);  // so that a waiter cannot miss the flag
  }
  Gate().cv.notify_all();
}

ClientStats Client::Impl::stats() const {
  std::lock_guard lk(mu_);
  ClientStats s = counters_;
  s.inflight = inflight_;
  s.inbound = inbound_.size();
  return s;
}

// ------------------------------------------------------------------------------ Client

Client::Client(ClientOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Client::~Client() = default;

bool Client::WaitConnected(std::chrono::milliseconds timeout) {
  return impl_->WaitConnected(timeout);
}
bool Client::connected() const { return impl_->connected(); }
std::string Client::last_connect_error() const { return impl_->last_connect_error(); }
bool Client::Publish(const std::string& topic, const std::string& payload, int qos,
                     std::chrono::milliseconds timeout) {
  return impl_->Publish(topic, payload, qos, timeout);
}
size_t Client::Receive(std::vector<Message>* out, size_t max, std::chrono::milliseconds wait) {
  return impl_->Receive(out, max, wait);
}
bool Client::Flush(std::chrono::milliseconds timeout) { return impl_->Flush(timeout); }
void Client::Stop() { impl_->Stop(); }
ClientStats Client::stats() const { return impl_->stats(); }

}  // namespace mqtt
