#include "controller/jobs_service.h"

#include <algorithm>
#include <map>

#include <spdlog/spdlog.h>

namespace controller {
namespace {

using Clock = std::chrono::steady_clock;

// At most `burst` log lines per window; the rest are counted and summarised, so a flood of bad
// messages cannot flood the log.
class RateLimitedLog {
 public:
  explicit RateLimitedLog(int burst) : burst_(burst) {}
  void Warn(const std::string& message) {
    std::lock_guard<std::mutex> lock(mu_);
    auto now = Clock::now();
    if (now - window_start_ > std::chrono::seconds(10)) {
      if (suppressed_ > 0) spdlog::warn("{} similar messages suppressed", suppressed_);
      window_start_ = now;
      logged_ = suppressed_ = 0;
    }
    if (logged_++ < burst_) {
      spdlog::warn("{}", message);
    } else {
      ++suppressed_;
    }
  }

 private:
  const int burst_;
  std::mutex mu_;
  Clock::time_point window_start_ = Clock::now();
  int logged_ = 0;
  uint64_t suppressed_ = 0;
};

// Answers carry the wall clock in epoch seconds (the database clock when a batch ran).
int64_t EpochSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

RateLimitedLog& BadInputLog() {
  static RateLimitedLog log(20);
  return log;
}

mqtt::ClientOptions BrokerClient(const JobsServiceOptions& o) {
  mqtt::ClientOptions c;
  c.server_uri = o.mqtt_uri;
  c.tls_ca_file = o.tls_ca_file;
  c.tls_cert_file = o.tls_cert_file;
  c.tls_key_file = o.tls_key_file;
  c.max_inflight = o.max_inflight;
  return c;
}

// Room for many batches: requests are dropped on arrival only in an overload or a database
// outage.
size_t RequestsMaxInbound(const JobsServiceOptions& o) {
  return std::max<size_t>(100000, 20 * o.max_batch);
}

mqtt::ClientOptions RequestsClient(const JobsServiceOptions& o, const mqtt::JobsTopics& topics) {
  mqtt::ClientOptions c = BrokerClient(o);
  c.client_id = o.client_id;
  c.clean_session = false;  // the broker keeps requests for us while we are down
  c.subscriptions = topics.RequestFilters();
  c.subscriptions.push_back(topics.TelemetryFilter());
  c.max_inbound = RequestsMaxInbound(o);
  // Paho reads every client's messages on one thread. Held by a full queue, it would read no
  // PUBACK for the publisher either, whose answers the serve loop waits for before it drains
  // the queue: measured at 1,000,000 devices, that cycle served 1,000 requests a second and
  // dropped all their answers. A request dropped on arrival costs its device one ask again.
  c.drop_when_full = true;
  return c;
}

mqtt::ClientOptions PublisherClient(const JobsServiceOptions& o) {
  mqtt::ClientOptions c = BrokerClient(o);
  c.client_id = o.client_id + "-pub";
  c.clean_session = true;
  return c;
}

}  // namespace

struct JobsService::Pending {
  mqtt::JobsRequestMessage message;
  mqtt::Answer answer;
  std::optional<fleet::JobsError> rejection;  // the answer's code when it is a rejection
};

JobsMetrics::JobsMetrics(MetricsRegistry& r) {
  auto& requests_family = r.AddCounter(
      "fleetwave_jobs_requests_total",
      "Jobs API requests answered, by API and result (accepted, or rejected:<AWS IoT Jobs code>).",
      {"api", "result"});
  static constexpr std::string_view kApiNames[kApis] = {"get", "start-next", "describe", "update"};
  static_assert(static_cast<int>(mqtt::JobsRequest::kGetPending) == 0 &&
                static_cast<int>(mqtt::JobsRequest::kStartNext) == 1 &&
                static_cast<int>(mqtt::JobsRequest::kDescribe) == 2 &&
                static_cast<int>(mqtt::JobsRequest::kUpdate) == 3);
  static_assert(static_cast<int>(fleet::JobsError::kTerminalStateReached) == kResults - 2);
  for (int a = 0; a < kApis; ++a) {
    for (int k = 0; k < kResults; ++k) {
      const std::string result =
          k == 0 ? "accepted"
                 : "rejected:" + std::string(fleet::ToString(static_cast<fleet::JobsError>(k - 1)));
      requests[a][k] = &requests_family.With({std::string(kApiNames[a]), result});
    }
  }
  batch_requests = &r.AddHistogram("fleetwave_jobs_batch_requests",
                                   "Device requests per database transaction (group commit).", {},
                                   {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000})
                        .Get();
  commit_seconds = &r.AddHistogram("fleetwave_jobs_commit_seconds",
                                   "Time to run a batch of device requests in the database: "
                                   "load, decide, write, commit (retries included).",
                                   {}, LatencyBuckets())
                        .Get();
  publish_seconds = &r.AddHistogram("fleetwave_jobs_publish_seconds",
                                    "Time to hand a committed batch's answers and notices to "
                                    "the broker connection.",
                                    {}, LatencyBuckets())
                         .Get();
  rows_written = &r.AddCounter("fleetwave_jobs_rows_written_total",
                               "Rows written by batches of device requests.")
                      .Get();
  notices_sent = &r.AddCounter("fleetwave_notices_sent_total",
                               "notify-next and notify notices the broker acknowledged (QoS 1).")
                      .Get();
  answers_dropped = &r.AddCounter("fleetwave_answers_dropped_total",
                                  "Answers not published because the publisher was overloaded; "
                                  "their devices ask again.")
                         .Get();
  inbound_dropped = &r.AddCounter("fleetwave_inbound_dropped_total",
                                  "Device requests and telemetry dropped on arrival because the "
                                  "inbound queue was full (an overload); devices ask again.")
                         .Get();
  telemetry_ingested =
      &r.AddCounter("fleetwave_telemetry_ingested_total", "Health telemetry reports stored.").Get();
  telemetry_rejected = &r.AddCounter("fleetwave_telemetry_rejected_total",
                                     "Health telemetry reports dropped: malformed, too large, or "
                                     "from an unknown thing.")
                            .Get();
  database_errors = &r.AddCounter("fleetwave_database_errors_total",
                                  "Failed database transactions of the jobs API (each retry "
                                  "counts).")
                         .Get();
}

JobsService::JobsService(JobsServiceOptions options, MetricsRegistry* metrics)
    : options_(std::move(options)),
      topics_(options_.topic_root, options_.telemetry_root),
      sign_(options_.notice_signer
                ? mqtt::DocumentSigner(
                      [signer = options_.notice_signer](nlohmann::json& doc) { signer->Sign(doc); })
                : mqtt::DocumentSigner()),
      requests_(RequestsClient(options_, topics_)),
      publisher_(PublisherClient(options_)),
      store_(options_.db),
      outbox_(options_.db),
      own_registry_(metrics ? nullptr : std::make_unique<MetricsRegistry>()),
      registry_(metrics ? metrics : own_registry_.get()),
      m_(*registry_),
      inbound_high_water_(RequestsMaxInbound(options_) / 4 * 3),
      backlog_limit_(options_.backlog_limit > 0 ? options_.backlog_limit
                                                : RequestsMaxInbound(options_) / 4) {}

JobsService::~JobsService() { Stop(); }

void JobsService::Start() {
  serve_ = std::thread([this] { ServeLoop(); });
  answerer_ = std::thread([this] { AnswerLoop(); });
  relay_ = std::thread([this] { RelayLoop(); });
}

void JobsService::Stop() {
  if (stop_.exchange(true)) return;
  requests_.Stop();
  relay_cv_.notify_all();
  if (serve_.joinable()) serve_.join();
  {
    std::lock_guard<std::mutex> lock(answers_mu_);
    serve_joined_ = true;
  }
  answers_cv_.notify_all();
  if (answerer_.joinable()) answerer_.join();  // publishes what the serve loop handed over
  if (relay_.joinable()) relay_.join();
  publisher_.Flush(std::chrono::seconds(5));
  publisher_.Stop();
}

bool JobsService::WaitReady(std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  return requests_.WaitConnected(timeout) &&
         publisher_.WaitConnected(std::chrono::duration_cast<std::chrono::milliseconds>(
             std::max(deadline - Clock::now(), Clock::duration::zero())));
}

bool JobsService::Backlogged() const { return requests_.stats().inbound > backlog_limit_; }

JobsServiceStats JobsService::stats() const {
  JobsServiceStats s;
  for (const auto& api : m_.requests) {
    s.accepted += api[0]->Value();
    for (int k = 1; k < JobsMetrics::kResults; ++k) s.rejected += api[k]->Value();
  }
  s.requests = s.accepted + s.rejected;
  s.telemetry = m_.telemetry_ingested->Value();
  s.telemetry_rejected = m_.telemetry_rejected->Value();
  s.batches = m_.batch_requests->Count();
  s.commits = m_.commit_seconds->Count();
  s.rows_written = m_.rows_written->Value();
  s.notices_sent = m_.notices_sent->Value();
  s.database_errors = m_.database_errors->Value();
  s.answers_dropped = m_.answers_dropped->Value();
  s.inbound_dropped = m_.inbound_dropped->Value();
  s.database_seconds = m_.commit_seconds->Sum();
  s.publish_seconds = m_.publish_seconds->Sum();
  return s;
}

void JobsService::Hand(Outgoing outgoing) {
  {
    std::unique_lock<std::mutex> lock(answers_mu_);
    const auto start = Clock::now();
    while (!answers_cv_.wait_for(lock, std::chrono::milliseconds(100),
                                 [this] { return answers_.size() < kMaxAnswerBatches; })) {
      // A slow publisher (a burst of notices awaiting PUBACKs) holds new requests back: they
      // wait in the inbound queue. Dropped answers would cost their devices a request timeout
      // each (a tail of seconds). But once that queue is nearly full, requests are about to be
      // dropped on arrival: then, or when it lasts, drop these answers and serve on.
      const auto waited = Clock::now() - start;
      if (waited < kHandWaitAtMost ||
          (waited < kHandWaitLongest && !stop_ && requests_.stats().inbound < inbound_high_water_))
        continue;
      // Overloaded. Answers are not state (a device asks again); the notices are in the outbox,
      // unsent, and the relay publishes them once they are older than a fresh batch's.
      lock.unlock();
      static RateLimitedLog overload_log(10);
      overload_log.Warn("publisher overloaded: " + std::to_string(outgoing.answers.size()) +
                        " answer(s) dropped (their devices ask again), " +
                        std::to_string(outgoing.notices.size()) +
                        " notice(s) left to the outbox relay");
      m_.answers_dropped->Inc(outgoing.answers.size());
      return;
    }
    answers_.push_back(std::move(outgoing));
  }
  answers_cv_.notify_all();
}

std::vector<int64_t> JobsService::TakeAcked() {
  std::lock_guard<std::mutex> lock(acked_mu_);
  return std::exchange(acked_, {});
}

void JobsService::GiveBackAcked(std::vector<int64_t> ids) {
  std::lock_guard<std::mutex> lock(acked_mu_);
  acked_.insert(acked_.end(), ids.begin(), ids.end());
}

void JobsService::Queue(const std::vector<db::NewExecution>& executions) {
  if (executions.empty()) return;
  Apply({.queue = executions});
}

int64_t JobsService::Apply(const ExecutionOps& ops) {
  if (ops.queue.empty() && ops.ops.empty() && !ops.in_transaction) return 0;
  db::JobsBatch batch;
  batch.queue = ops.queue;
  for (const auto& op : ops.ops) {
    batch.things.insert(op.thing);  // its pending executions decide what it is told
    batch.named.insert({op.job_id, op.thing});
  }
  batch.in_transaction = ops.in_transaction;
  std::vector<Pending> none;
  db::BatchResult result;
  int64_t applied = 0;
  {
    std::unique_lock<std::mutex> lock(queue_mu_);
    // Bounded, so that a serve loop that always has a batch waiting cannot starve the engine.
    queue_cv_.wait_for(lock, kServeFirstAtMost, [this] { return !serve_waiting_ || stop_; });
    result = store_.RunBatch(
        batch, [&](db::JobsSnapshot& s) { return Decide(none, {}, s, ops.ops, &applied); });
  }
  Hand({{}, std::move(result.notices)});
  return applied;
}

void JobsService::ServeLoop() {
  std::vector<mqtt::Message> messages;
  while (!stop_) {
    messages.clear();
    if (requests_.Receive(&messages, options_.max_batch, std::chrono::milliseconds(200)) == 0)
      continue;
    // Group commit: whatever else arrives within the window joins this transaction.
    auto window_end = Clock::now() + options_.batch_window;
    while (messages.size() < options_.max_batch && Clock::now() < window_end && !stop_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(window_end - Clock::now());
      if (requests_.Receive(&messages, options_.max_batch - messages.size(),
                            std::max(left, std::chrono::milliseconds(1))) == 0)
        break;
    }
    ProcessBatch(messages);
  }
  // Stopping: answer what was already received (Paho acknowledged it to the broker).
  messages.clear();
  while (requests_.Receive(&messages, options_.max_batch, std::chrono::milliseconds(0)) > 0) {
    ProcessBatch(messages);
    messages.clear();
  }
}

void JobsService::ProcessBatch(std::vector<mqtt::Message>& messages) {
  if (const uint64_t dropped = requests_.stats().dropped; dropped != inbound_dropped_seen_) {
    static RateLimitedLog drop_log(10);
    drop_log.Warn("inbound queue full: " + std::to_string(dropped - inbound_dropped_seen_) +
                  " request(s) and telemetry report(s) dropped on arrival (devices ask again)");
    m_.inbound_dropped->Inc(dropped - inbound_dropped_seen_);
    inbound_dropped_seen_ = dropped;
  }
  std::vector<Pending> requests;
  std::vector<mqtt::Telemetry> telemetry;
  uint64_t telemetry_rejected = 0;
  for (mqtt::Message& m : messages) {
    if (auto thing = topics_.ParseTelemetry(m.topic)) {
      std::string error;
      if (auto t = mqtt::ParseTelemetry(*thing, m.payload, &error)) {
        telemetry.push_back(std::move(*t));
      } else {
        ++telemetry_rejected;
        BadInputLog().Warn("telemetry from " + *thing + " dropped: " + error);
      }
      continue;
    }
    auto topic = topics_.ParseRequest(m.topic);
    if (!topic) {
      BadInputLog().Warn("message on unexpected topic " + m.topic.substr(0, 200) + " ignored");
      continue;
    }
    requests.push_back({mqtt::ParseJobsRequest(*topic, m.topic, m.payload), {}});
  }

  db::JobsBatch batch;
  batch.mark_sent = TakeAcked();
  for (const Pending& p : requests) {
    if (p.message.rejection) continue;
    batch.things.insert(p.message.topic.thing);
    if (!p.message.topic.job_id.empty() && p.message.topic.job_id != "$next")
      batch.named.insert({p.message.topic.job_id, p.message.topic.thing});
  }

  db::BatchResult result;
  bool committed = false;  // the answers are final
  bool written = false;    // the transaction ran, batch.mark_sent included
  if (batch.things.empty() && telemetry.empty()) {
    // Only malformed requests: their answers need no database.
    db::JobsSnapshot none;
    none.now = EpochSeconds();
    Decide(requests, {}, none);
    committed = true;
  }
  const auto db_start = Clock::now();
  auto give_up_at = db_start + options_.database_wait;
  auto backoff = std::chrono::milliseconds(50);
  while (!committed) {
    try {
      serve_waiting_ = true;
      {
        std::lock_guard<std::mutex> lock(queue_mu_);
        serve_waiting_ = false;
        queue_cv_.notify_all();  // a waiting Apply() goes next, once this batch frees the lock
        result = store_.RunBatch(
            batch, [&](db::JobsSnapshot& s) { return Decide(requests, telemetry, s); });
      }
      committed = written = true;
      break;
    } catch (const db::Unavailable& e) {
      m_.database_errors->Inc();
      if (Clock::now() + backoff > give_up_at || stop_) {
        spdlog::error("database unavailable, answering {} requests InternalError: {}",
                      requests.size(), e.what());
        break;
      }
      spdlog::warn("database unavailable, retrying in {} ms: {}", backoff.count(), e.what());
      std::this_thread::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
    } catch (const db::Error& e) {
      m_.database_errors->Inc();
      spdlog::error("job batch failed, answering InternalError: {}", e.what());
      break;
    }
  }

  const auto publish_start = Clock::now();
  const int64_t now = EpochSeconds();  // after any wait for the database
  std::vector<mqtt::Answer> answers;
  answers.reserve(requests.size());
  for (Pending& p : requests) {
    if (!committed) {
      // Answered without the database: malformed requests keep their own rejection.
      fleet::Rejection internal{fleet::JobsError::kInternalError,
                                "the controller cannot reach its database; retry later",
                                std::nullopt};
      const fleet::Rejection& r = p.message.rejection ? *p.message.rejection : internal;
      p.answer = mqtt::EncodeRejection(p.message, r, now);
      p.rejection = r.code;
    }
    m_.requests[static_cast<int>(p.message.topic.kind)][JobsMetrics::ResultIndex(p.rejection)]
        ->Inc();
    if (p.rejection) {
      BadInputLog().Warn("rejected " + p.message.topic_name.substr(0, 200) + ": " +
                         p.answer.payload.substr(0, 300));
    }
    answers.push_back(std::move(p.answer));
  }
  if (!written) GiveBackAcked(std::move(batch.mark_sent));  // the next batch marks them
  // Counted before the answers go out: whoever has an answer sees its batch in the metrics.
  if (!requests.empty()) m_.batch_requests->Observe(static_cast<double>(requests.size()));
  if (written) {
    m_.commit_seconds->Observe(std::chrono::duration<double>(publish_start - db_start).count());
    m_.telemetry_ingested->Inc(telemetry.size() - result.telemetry_dropped);
  }
  m_.telemetry_rejected->Inc(telemetry_rejected + (written ? result.telemetry_dropped : 0));
  m_.rows_written->Inc(result.rows_written);
  Hand({std::move(answers), std::move(result.notices)});
}

void JobsService::AnswerLoop() {
  while (true) {
    Outgoing out;
    {
      std::unique_lock<std::mutex> lock(answers_mu_);
      answers_cv_.wait(lock, [this] { return !answers_.empty() || serve_joined_; });
      // Only once the serve loop has been joined (it may still be handing over its last batch
      // after stop_ is set): drain what it handed over, then end.
      if (answers_.empty()) return;
      out = std::move(answers_.front());
      answers_.pop_front();
    }
    answers_cv_.notify_all();
    const auto start = Clock::now();
    for (const mqtt::Answer& a : out.answers) {
      if (!publisher_.Publish(a.topic, a.payload, options_.answer_qos))
        spdlog::warn("answer on {} not sent: broker unavailable", a.topic);
    }
    // Not waiting for their acknowledgements here keeps the next answers moving; the relay
    // confirms them (Flush) and they are then marked sent.
    std::vector<int64_t> published = PublishNotices(out.notices);
    {
      std::lock_guard<std::mutex> lock(acked_mu_);
      unconfirmed_.insert(unconfirmed_.end(), published.begin(), published.end());
    }
    m_.publish_seconds->Observe(std::chrono::duration<double>(Clock::now() - start).count());
  }
}

std::vector<int64_t> JobsService::PublishNotices(const std::vector<db::OutboxEntry>& notices) {
  std::vector<int64_t> published;
  for (const auto& n : notices) {
    if (!publisher_.Publish(n.topic, n.payload, 1)) break;
    published.push_back(n.id);
  }
  return published;
}

bool JobsService::ConfirmPublished(const std::vector<int64_t>& ids) {
  if (ids.empty()) return true;
  uint64_t failures_before = publisher_.stats().publish_failures;
  // Flush covers every publish so far, these included. A failure anywhere sends them again
  // later (devices dedupe repeated notices).
  if (!publisher_.Flush(std::chrono::seconds(30)) ||
      publisher_.stats().publish_failures != failures_before)
    return false;
  m_.notices_sent->Inc(ids.size());
  return true;
}

db::JobsWrites JobsService::Decide(std::vector<Pending>& requests,
                                   const std::vector<mqtt::Telemetry>& telemetry,
                                   db::JobsSnapshot& snapshot,
                                   const std::vector<ExecutionOps::Op>& ops, int64_t* applied) {
  db::JobsWrites writes;
  const int64_t now = snapshot.now;
  std::map<std::string, fleet::ThingJobs> things;
  for (auto& [thing, executions] : snapshot.executions)
    things.emplace(thing, fleet::ThingJobs(thing, std::move(executions)));
  auto jobs_of = [&](const std::string& thing) -> fleet::ThingJobs& {
    auto it = things.find(thing);
    if (it == things.end()) it = things.emplace(thing, fleet::ThingJobs(thing, {})).first;
    return it->second;
  };

  for (Pending& p : requests) {
    const mqtt::JobsRequestMessage& m = p.message;
    if (m.rejection) {
      p.answer = mqtt::EncodeRejection(m, *m.rejection, now);
      p.rejection = m.rejection->code;
      continue;
    }
    const std::string& thing = m.topic.thing;
    if (!snapshot.known_things.count(thing)) {
      p.answer = mqtt::EncodeRejection(m,
                                       {fleet::JobsError::kResourceNotFound,
                                        "thing " + thing + " is not registered", std::nullopt},
                                       now);
      p.rejection = fleet::JobsError::kResourceNotFound;
      continue;
    }
    fleet::ThingJobs& jobs = jobs_of(thing);
    fleet::Outcome outcome;
    switch (m.topic.kind) {
      case mqtt::JobsRequest::kGetPending:
        outcome = jobs.GetPending();
        break;
      case mqtt::JobsRequest::kStartNext:
        outcome = jobs.StartNext(std::get<fleet::StartNextRequest>(m.body), now);
        break;
      case mqtt::JobsRequest::kDescribe:
        outcome = jobs.Describe(m.topic.job_id, std::get<fleet::DescribeRequest>(m.body));
        break;
      case mqtt::JobsRequest::kUpdate: {
        std::optional<fleet::JobStatus> before;
        for (const auto& e : jobs.executions())
          if (e.job_id == m.topic.job_id) before = e.status;
        const auto& update = std::get<fleet::UpdateRequest>(m.body);
        outcome = jobs.Update(m.topic.job_id, update, m.client_token, now);
        if (!outcome.rejection && !outcome.replay && outcome.execution &&
            before != fleet::JobStatus::kSucceeded &&
            outcome.execution->status == fleet::JobStatus::kSucceeded) {
          auto reported = outcome.execution->status_details.find("firmware");
          writes.installed.push_back({thing, m.topic.job_id,
                                      reported == outcome.execution->status_details.end()
                                          ? std::nullopt
                                          : std::optional<std::string>(reported->second)});
        }
        break;
      }
    }
    p.answer = mqtt::EncodeAnswer(m, outcome, now, sign_);
    p.rejection = outcome.rejection ? std::optional(outcome.rejection->code) : std::nullopt;
    if (m.topic.kind == mqtt::JobsRequest::kUpdate && m.client_token && !outcome.rejection &&
        !outcome.replay)
      jobs.RememberAnswer(m.topic.job_id, *m.client_token, p.answer.payload);
  }

  if (applied) *applied = 0;
  for (const ExecutionOps::Op& op : ops) {
    fleet::ThingJobs& jobs = jobs_of(op.thing);
    bool changed = false;
    switch (op.kind) {
      case ExecutionOps::Kind::kTimeOut:
        changed = jobs.TimeOut(op.job_id, now, op.reason);
        break;
      case ExecutionOps::Kind::kCancel:
        changed = jobs.Cancel(op.job_id, now);
        break;
      case ExecutionOps::Kind::kRequeue:
        changed = jobs.Requeue(op.job_id, now, op.deadline);
        break;
    }
    if (changed && applied) ++*applied;
  }

  for (auto& [thing, jobs] : things) {
    if (jobs.NextChanged())
      writes.notices.push_back(
          {topics_.NotifyNext(thing), mqtt::EncodeNotifyNext(jobs.Next(), now, sign_)});
    if (jobs.PendingChanged())
      writes.notices.push_back({topics_.Notify(thing), mqtt::EncodeNotify(jobs, now)});
    for (const fleet::Execution& e : jobs.executions())
      if (e.dirty) writes.changed.push_back(e);
  }
  for (const mqtt::Telemetry& t : telemetry)
    writes.telemetry.push_back({t.thing, t.firmware, t.payload});
  return writes;
}

// The relay: acknowledgements the idle serve loop did not write, and notices left unsent (a
// crash before the broker acknowledged them, an outage) once they are older than a fresh batch's.
void JobsService::RelayLoop() {
  RateLimitedLog relay_log(2);
  auto next_sweep = Clock::now();
  auto next_prune = Clock::now();
  while (!stop_) {
    {
      std::unique_lock<std::mutex> lock(relay_mu_);
      relay_cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return stop_.load(); });
    }
    std::vector<int64_t> published;
    {
      std::lock_guard<std::mutex> lock(acked_mu_);
      published.swap(unconfirmed_);
    }
    if (ConfirmPublished(published)) GiveBackAcked(std::move(published));
    if (Clock::now() < next_sweep) continue;
    next_sweep = Clock::now() + std::chrono::seconds(2);
    std::vector<int64_t> acked = TakeAcked();
    try {
      outbox_.MarkSent(acked);  // acknowledged while the serve loop was idle
      acked.clear();
      while (!stop_) {
        std::vector<db::OutboxEntry> left = outbox_.Unsent(1000, /*min_age_seconds=*/10);
        if (left.empty()) break;
        std::vector<int64_t> sent = PublishNotices(left);
        if (sent.empty() || !ConfirmPublished(sent)) break;
        outbox_.MarkSent(sent);
      }
      if (Clock::now() >= next_prune) {
        next_prune = Clock::now() + std::chrono::minutes(10);
        db::JobsStore pruner(options_.db);
        while (pruner.PruneTelemetry(options_.telemetry_retention_seconds, 10000) == 10000) {
        }
      }
    } catch (const db::Error& e) {
      GiveBackAcked(std::move(acked));
      relay_log.Warn(std::string("outbox relay: ") + e.what());
    }
  }
}

}  // namespace controller
