// One MQTT connection (Paho C++ 1.2) behind a small, bounded interface.
//
// - Paho callbacks only enqueue: received messages go to a bounded inbound queue that Receive()
//   drains; when it is full the Paho receive thread waits, so Paho stops reading the socket and
//   the broker queues for us (up to its max_queued_messages) instead of messages being lost.
//   Except QoS 0 messages, and every message with drop_when_full: when the queue is full they
//   are dropped (stats().dropped), and nothing waits.
//   Paho acknowledges a QoS 1 message before handing it over: messages still in the queue when
//   the Client is destroyed are gone.
// - Publish() keeps at most `max_inflight` QoS 1 messages unacknowledged; beyond that it waits.
//   While disconnected it waits for the reconnect, up to its deadline. Memory stays bounded when
//   the broker is slow or gone.
// - Reconnects automatically and re-subscribes on every (re)connect.
//
// Paho C runs the callbacks of ALL clients in the process on one thread while holding its global
// mutex. So while ANY Client's inbound queue is full, Paho is held for every Client: none
// receives messages or PUBACKs, Publish() on every Client waits (until its timeout or Stop())
// instead of calling into Paho, and a destructor waits until the queue is drained. A thread
// that drains a queue must therefore not need a publish (on any Client) to get back to
// Receive(): such a thread waits out its publish timeout and the publish fails. Size
// max_inbound so that it is reached only under overload, and drain promptly. (To avoid a
// deadlock the bound yields by a message when a Paho call of ours is under way just as the queue
// is full, so `inbound` can exceed max_inbound slightly while others publish.)
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace mqtt {

struct Message {
  std::string topic;
  std::string payload;
  int qos = 0;
};

struct ClientOptions {
  std::string server_uri = "tcp://127.0.0.1:1883";
  // Stable across restarts so that, with clean_session = false, the broker keeps the session's
  // subscriptions and queues QoS 1 messages while the process is down.
  std::string client_id;
  bool clean_session = true;
  std::vector<std::string> subscriptions;  // topic filters, subscribed on every (re)connect
  int subscription_qos = 1;
  size_t max_inflight = 1000;  // QoS 1 publishes awaiting PUBACK
  size_t max_inbound = 50000;  // received messages waiting for Receive()
  // When the inbound queue is full, drop QoS 1 messages too (counted in stats().dropped) rather
  // than hold Paho's receive thread (see above): for a process whose drainer waits on its own
  // publishes, whose PUBACKs that thread would no longer read. Their senders must ask again.
  bool drop_when_full = false;
  int keep_alive_seconds = 20;
  std::chrono::milliseconds connect_timeout{5000};

  // TLS, for ssl:// and mqtts:// URIs only (Paho's ssl_options). The broker's certificate must
  // chain to tls_ca_file (required) and name the host (verified). With tls_cert_file and
  // tls_key_file (both or neither, PEM) the client authenticates itself: mutual TLS, where the
  // certificate's CN is its identity on the broker (pki/pki.h).
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // Told why a connect attempt failed, when Paho says (a TLS handshake refused, a CONNACK
  // refusal, ...); once per reason in a row, not on every retry. Runs on the client's own
  // connector thread, never inside a Paho callback. Unset: see Client::last_connect_error().
  std::function<void(const std::string& reason)> on_connect_error;
};

struct ClientStats {
  uint64_t received = 0;
  uint64_t published = 0;         // publishes acknowledged (QoS 1) or handed over (QoS 0)
  uint64_t publish_failures = 0;  // publishes the broker never acknowledged
  uint64_t connects = 0;          // successful connects, including reconnects
  uint64_t dropped = 0;           // messages dropped because the inbound queue was full
  size_t inflight = 0;
  size_t inbound = 0;
};

class Client {
 public:
  // Starts connecting in the background; see WaitConnected. Throws std::invalid_argument on a
  // malformed server URI or unusable options (max_inflight or max_inbound 0, clean_session false
  // without a client_id, TLS files with a tcp:// URI, an ssl:// URI without tls_ca_file, only
  // one of tls_cert_file and tls_key_file, a TLS file that cannot be read); the message names
  // the field.
  explicit Client(ClientOptions options);
  // Disconnects (waiting briefly for in-flight publishes) and releases Paho's resources.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // True once connected and subscribed; false when `timeout` passes first (a broker refusing
  // the connection, e.g. our certificate, looks like that: see last_connect_error()).
  bool WaitConnected(std::chrono::milliseconds timeout);
  bool connected() const;
  // Why the latest connect attempt failed, as far as Paho and OpenSSL tell; empty when it did
  // not fail (or none was made yet).
  std::string last_connect_error() const;

  // Queues a publish. Waits while the in-flight window is full or the client is disconnected;
  // returns false (nothing sent) if that lasts beyond `timeout`, or after Stop(). Throws
  // std::invalid_argument for a qos outside 0..2 or a topic that is empty or has a wildcard
  // (the broker would drop the connection).
  bool Publish(const std::string& topic, const std::string& payload, int qos = 1,
               std::chrono::milliseconds timeout = std::chrono::seconds(30));

  // Moves up to `max` received messages into `out` (appending), waiting up to `wait` for the
  // first one. Returns how many were moved.
  size_t Receive(std::vector<Message>* out, size_t max, std::chrono::milliseconds wait);

  // Waits until every QoS 1 publish so far is acknowledged or failed; false on timeout.
  bool Flush(std::chrono::milliseconds timeout);

  // Makes every waiting and future Publish/Receive return at once; idempotent.
  void Stop();

  ClientStats stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mqtt
