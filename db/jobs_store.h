// Job executions in PostgreSQL, read and written a batch at a time (group commit).
//
// RunBatch() is one transaction: queue new executions, load every execution the batch needs with
// one query, let the caller decide (purely) what changes, write all changes with set-based SQL
// (executions, installed firmware, notices into the outbox, telemetry), commit once. A change is
// written only if the execution still has the version that was loaded; if another writer got
// there first, or the commit was in doubt, the batch is re-read and decided again (never
// re-applied blindly), so `decide` must depend on the snapshot alone.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <pqxx/connection>
#include <pqxx/transaction>

#include "db/connection.h"
#include "db/outbox.h"
#include "fleet/jobs.h"

namespace db {

struct NewExecution {
  std::string job_id;
  std::string thing;
  int wave = 1;
  std::optional<int64_t> deadline;  // epoch seconds; when it turns TIMED_OUT if still pending
};

struct JobsBatch {
  std::set<std::string> things;                         // load their pending executions
  std::set<std::pair<std::string, std::string>> named;  // (job id, thing) to load as well
  std::vector<NewExecution> queue;                      // insert first (QUEUED)
  std::vector<int64_t> mark_sent;  // outbox notices the broker acknowledged since the last batch
  // Runs first in the batch's transaction (and again if it is re-read): the leader's fence and
  // any bookkeeping that must commit with the batch. May throw to abort the batch.
  std::function<void(pqxx::work&)> in_transaction;
};

struct JobsSnapshot {
  int64_t now = 0;  // the database clock, epoch seconds
  std::set<std::string> known_things;
  std::map<std::string, std::vector<fleet::Execution>> executions;  // by thing
};

struct TelemetryRow {
  std::string thing;
  std::optional<std::string> firmware;
  std::string payload;  // JSON object
};

struct Notice {
  std::string topic;
  std::string payload;
};

struct JobsWrites {
  std::vector<fleet::Execution> changed;  // executions whose `dirty` was set
  // Executions that ended SUCCEEDED: the device now runs the job's release. `reported` is the
  // device's statusDetails.firmware, if any; a disagreeing one is recorded and the device flagged.
  struct Installed {
    std::string thing;
    std::string job_id;
    std::optional<std::string> reported;
  };
  std::vector<Installed> installed;
  std::vector<Notice> notices;
  std::vector<TelemetryRow> telemetry;
};

struct BatchResult {
  int attempts = 0;  // 1 unless a conflict or in-doubt commit forced a re-read
  int64_t rows_written = 0;
  int64_t telemetry_dropped = 0;  // reports from unregistered things
  // The notices the batch wrote to the outbox, with their ids: the caller publishes them at once
  // and marks them sent (JobsBatch::mark_sent) once acknowledged; the relay sends any left over.
  std::vector<OutboxEntry> notices;
};

class JobsStore {
 public:
  explicit JobsStore(std::string conninfo);

  // Throws Unavailable when the database cannot be reached, Error on other failures; nothing of
  // the batch is then committed (or, for an in-doubt commit that cannot be read back, the batch
  // is reported as failed and its requests may be retried safely).
  BatchResult RunBatch(const JobsBatch& batch,
                       const std::function<JobsWrites(JobsSnapshot&)>& decide);

  // Deletes telemetry older than `max_age_seconds`, at most `limit` rows. Returns rows deleted.
  int64_t PruneTelemetry(int64_t max_age_seconds, int64_t limit);

 private:
  pqxx::connection& Conn();
  void PrepareAgain();  // after queuing executions, so that the statements' plans follow the table

  std::string conninfo_;
  std::unique_ptr<pqxx::connection> conn_;
  bool prepare_again_ = false;  // executions were queued since the statements were prepared
  // Rollout id -> its job document (jsonb text). A rollout's document never changes, so each is
  // read once instead of once per execution loaded (building it in SQL for every row was half
  // the load's time).
  std::map<std::string, std::string> documents_;
};

}  // namespace db
