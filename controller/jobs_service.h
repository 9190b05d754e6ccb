// The device-facing jobs API: serves the AWS IoT Jobs MQTT requests from PostgreSQL with group
// commit, ingests health telemetry, and relays outbox notices to the broker.
//
// Notices are published as soon as their batch commits; the relay confirms the broker's
// acknowledgements and the next batch's transaction marks them sent. The relay also marks them
// when the service is idle, and sends what is left over after a crash or an outage.
//
// Backpressure: the requests connection queues up to 100,000 messages in memory. Paho delivers
// all clients' messages (the publisher's acknowledgements too) on one thread, which must never
// wait: what arrives while that queue is full (an overload, or a long database outage) is
// dropped and counted, and its devices ask again. While more than backlog_limit waits (a
// quarter of it by default), Backlogged() tells the engine to queue no new executions.
//
// Two MQTT connections: `requests` (stable client id, persistent session, QoS 1 subscriptions to
// the four request filters and telemetry) so requests sent while the controller is down are
// served when it is back; and `publisher` (clean session) for answers and notices. Paho
// acknowledges a request before we take it from the queue: on Stop() the serve loop first
// answers everything already received; after a crash, requests received but not yet committed
// are gone and their devices ask again (state lives in the database, so nothing is done twice).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "controller/metrics.h"
#include "controller/notice_signer.h"
#include "db/jobs_store.h"
#include "db/outbox.h"
#include "mqtt/client.h"
#include "mqtt/jobs_codec.h"
#include "mqtt/topics.h"

namespace controller {

struct JobsServiceOptions {
  std::string db;
  std::string mqtt_uri = "tcp://127.0.0.1:1883";
  // TLS for ssl:// (mqtt::ClientOptions): the fleet CA, and the controller's certificate and key,
  // whose identity the broker's ACL knows (fleetwave-controller by default).
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string client_id = "fleetwave-controller";
  std::string topic_root = "$aws/things";
  std::string telemetry_root = "fleetwave/things";
  size_t max_batch = 1000;  // requests per transaction
  // After the first request, gather this long. 0: a batch is what arrived while the previous
  // one committed, which under load is already large (measured: the best latency and throughput).
  std::chrono::milliseconds batch_window{0};
  std::chrono::milliseconds database_wait{30000};  // then answer InternalError
  size_t max_inflight =
      200;  // per connection; Paho scans its in-flight list per ack (bench/rollout)
  // Answers are not state (a device that misses one asks again, and a retried clientToken gets
  // the same answer), so by default they skip the PUBACK round trip; notices always use QoS 1.
  int answer_qos = 0;
  int64_t telemetry_retention_seconds = 7 * 86400;
  // Backlogged() above this many device messages waiting to be served; 0: a quarter of the
  // inbound queue's bound (25,000 by default, a few seconds of serving).
  size_t backlog_limit = 0;
  // Signs every job document sent; none: documents go out unsigned (see README "Security").
  std::shared_ptr<const NoticeSigner> notice_signer;
};

// The controller's changes to executions, applied like a batch of device requests: in one
// transaction, with notify-next/notify notices for each device whose next or pending executions
// changed, published at once after the commit.
struct ExecutionOps {
  std::vector<db::NewExecution> queue;  // new QUEUED executions
  enum class Kind { kTimeOut, kCancel, kRequeue };
  struct Op {
    Kind kind = Kind::kCancel;
    std::string job_id;
    std::string thing;
    std::optional<int64_t> deadline;  // kRequeue: the new execution's expiry
    std::string reason;               // kTimeOut: statusDetails.reason
  };
  std::vector<Op> ops;  // decided again on the loaded state: an op the device overtook is skipped
  // Runs first in the transaction: the leader's fence and bookkeeping that commits with it.
  std::function<void(pqxx::work&)> in_transaction;
};

// The jobs API's metrics (README "Metrics"), declared on a registry with every child resolved
// up front: counting a request is an array index and an atomic add. Declaring them again on the
// same registry (a new JobsService after a change of leader) yields the same children.
struct JobsMetrics {
  explicit JobsMetrics(MetricsRegistry& registry);

  static constexpr int kApis = 4;         // by mqtt::JobsRequest
  static constexpr int kResults = 1 + 9;  // accepted, then rejected:<fleet::JobsError>
  static int ResultIndex(std::optional<fleet::JobsError> rejection) {
    return rejection ? 1 + static_cast<int>(*rejection) : 0;
  }
  Counter* requests[kApis][kResults];  // fleetwave_jobs_requests_total{api,result}
  Histogram* batch_requests;           // fleetwave_jobs_batch_requests
  Histogram* commit_seconds;           // fleetwave_jobs_commit_seconds
  Histogram* publish_seconds;          // fleetwave_jobs_publish_seconds
  Counter* rows_written;               // fleetwave_jobs_rows_written_total
  Counter* notices_sent;               // fleetwave_notices_sent_total
  Counter* answers_dropped;            // fleetwave_answers_dropped_total
  Counter* inbound_dropped;            // fleetwave_inbound_dropped_total
  Counter* telemetry_ingested;         // fleetwave_telemetry_ingested_total
  Counter* telemetry_rejected;         // fleetwave_telemetry_rejected_total
  Counter* database_errors;            // fleetwave_database_errors_total
};

// A summary of the metrics above. With a shared registry (the Engine's) the counts are those of
// every JobsService on it, since the process started.
struct JobsServiceStats {
  uint64_t requests = 0;
  uint64_t accepted = 0;
  uint64_t rejected = 0;
  uint64_t telemetry = 0;
  uint64_t telemetry_rejected = 0;
  uint64_t batches = 0;
  uint64_t commits = 0;
  uint64_t rows_written = 0;
  uint64_t notices_sent = 0;
  uint64_t database_errors = 0;
  // Answers not published because the publisher stayed stuck for kHandWaitAtMost (overload);
  // their devices ask again, and the notices of those batches go out by the outbox relay.
  uint64_t answers_dropped = 0;
  // Requests and telemetry dropped on arrival because the inbound queue was full (overload);
  // devices ask again.
  uint64_t inbound_dropped = 0;
  double database_seconds = 0;  // in RunBatch: load, decide, write, commit
  double publish_seconds = 0;   // publishing answers (beside the serve loop)
};

class JobsService {
 public:
  // Connects in the background; Start() begins serving. Counts into `metrics` when given
  // (it must outlive the service), else into a registry of its own.
  explicit JobsService(JobsServiceOptions options, MetricsRegistry* metrics = nullptr);
  ~JobsService();  // Stop()
  JobsService(const JobsService&) = delete;
  JobsService& operator=(const JobsService&) = delete;

  void Start();
  // Stops serving; requests not yet taken stay with the broker (persistent session).
  void Stop();
  // True once both connections are up and subscribed; false after `timeout`.
  bool WaitReady(std::chrono::milliseconds timeout);

  // Queues executions (QUEUED) in one transaction together with the notices they cause
  // (notify-next, notify) in the outbox. Throws db::Unavailable / db::Error.
  void Queue(const std::vector<db::NewExecution>& executions);
  // Applies `ops` in one transaction; returns how many ops changed an execution. Throws
  // db::Unavailable / db::Error, or what `in_transaction` throws (nothing is then committed).
  int64_t Apply(const ExecutionOps& ops);

  // Whether more device messages than backlog_limit wait to be served. New executions bring
  // their devices' requests: queued now, they would lengthen the wait until requests are dropped
  // on arrival and asked again (measured at 1,000,000 devices), so the engine queues none then.
  bool Backlogged() const;

  JobsServiceStats stats() const;
  const MetricsRegistry& metrics() const { return *registry_; }

 private:
  struct Pending;
  void ServeLoop();
  void AnswerLoop();
  void RelayLoop();
  // Publishes notices with QoS 1; returns the ids handed to the broker connection.
  std::vector<int64_t> PublishNotices(const std::vector<db::OutboxEntry>& notices);
  // Waits until the broker acknowledged every publish so far; false if any failed.
  bool ConfirmPublished(const std::vector<int64_t>& ids);
  void ProcessBatch(std::vector<mqtt::Message>& messages);
  db::JobsWrites Decide(std::vector<Pending>& requests,
                        const std::vector<mqtt::Telemetry>& telemetry, db::JobsSnapshot& snapshot,
                        const std::vector<ExecutionOps::Op>& ops = {}, int64_t* applied = nullptr);

  JobsServiceOptions options_;
  mqtt::JobsTopics topics_;
  mqtt::DocumentSigner sign_;  // from options_.notice_signer; empty when there is none
  mqtt::Client requests_;
  mqtt::Client publisher_;
  db::JobsStore store_;
  db::Outbox outbox_;
  // Apply() and the serve loop share store_. Devices go first: while a batch of requests waits
  // for the store (serve_waiting_), Apply() lets it in before taking its turn (queuing a wave of
  // 50,000 must not stall the devices already updating).
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::atomic<bool> serve_waiting_{false};
  static constexpr std::chrono::seconds kServeFirstAtMost{2};

  std::atomic<bool> stop_{false};
  std::thread serve_;
  std::thread answerer_;
  std::thread relay_;
  // What committed batches publish: their answers, then their notices. answerer_ publishes in
  // order while the serve loop already works on the next batch; bounded, the serve loop waits
  // when it is full.
  struct Outgoing {
    std::vector<mqtt::Answer> answers;
    std::vector<db::OutboxEntry> notices;
  };
  void Hand(Outgoing outgoing);
  std::vector<int64_t> TakeAcked();
  void GiveBackAcked(std::vector<int64_t> ids);
  std::mutex answers_mu_;
  std::condition_variable answers_cv_;
  std::deque<Outgoing> answers_;
  bool serve_joined_ = false;  // guarded by answers_mu_; the answerer may end once it is set
  static constexpr size_t kMaxAnswerBatches = 4;
  // How long Hand() waits for room before it drops the batch's answers: kHandWaitAtMost once the
  // requests' inbound queue is nearly full (requests are about to be dropped on arrival), else
  // kHandWaitLongest. The serve loop must not wait on the publisher indefinitely: the requests
  // behind it would be dropped.
  static constexpr std::chrono::seconds kHandWaitAtMost{1};
  static constexpr std::chrono::seconds kHandWaitLongest{10};
  // Notices published but not yet confirmed (unconfirmed_), and confirmed ones to be marked sent
  // by the next batch or by the relay (acked_).
  std::mutex acked_mu_;
  std::vector<int64_t> unconfirmed_;
  std::vector<int64_t> acked_;
  std::mutex relay_mu_;
  std::condition_variable relay_cv_;

  std::unique_ptr<MetricsRegistry> own_registry_;  // when none was given
  MetricsRegistry* registry_;
  JobsMetrics m_;
  const size_t inbound_high_water_;    // 3/4 of the requests connection's max_inbound
  uint64_t inbound_dropped_seen_ = 0;  // the requests connection's dropped count, last looked at
  const size_t backlog_limit_;
};

}  // namespace controller
