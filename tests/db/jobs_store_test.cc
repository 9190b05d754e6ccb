#include "db/jobs_store.h"

#include "db/outbox.h"

#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>
#include <thread>

#include "tests/support/test_database.h"

namespace db {
namespace {

using testing_support::TestDatabase;

class JobsStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Sql("insert into fleetwave.devices (id, model, firmware, firmware_key) values "
        "('t1','arm','1.0.0','k');"
        "insert into fleetwave.releases (model, version, version_key, url, sha256, size) values "
        "('arm','2.0.0','k2','https://fw/a', repeat('a',64), 1);"
        "insert into fleetwave.cycles default values;"
        "insert into fleetwave.rollouts (id, cycle_id, release_id) "
        "select 'job-1', c.id, r.id from fleetwave.cycles c, fleetwave.releases r");
  }
  pqxx::result Sql(const std::string& sql) {
    auto conn = database_.Connect();
    pqxx::work txn(*conn);
    auto r = txn.exec(sql);
    txn.commit();
    return r;
  }
  TestDatabase database_;
  JobsStore store_{database_.conninfo()};
};

TEST_F(JobsStoreTest, QueuesAndLoadsWithTheJobDocument) {
  JobsBatch batch;
  batch.queue = {{"job-1", "t1", 2, 2000000000}};
  int64_t loaded = 0;
  store_.RunBatch(batch, [&](JobsSnapshot& s) {
    EXPECT_TRUE(s.known_things.count("t1"));
    EXPECT_GT(s.now, 1700000000);
    const auto& e = s.executions.at("t1").at(0);
    EXPECT_TRUE(e.queued_in_batch);
    EXPECT_EQ(e.release_version, "2.0.0");
    EXPECT_NE(e.job_document.find("\"wave\": 2"), std::string::npos) << e.job_document;
    EXPECT_NE(e.job_document.find("\"expiresAt\": 2000000000"), std::string::npos);
    loaded = static_cast<int64_t>(s.executions.at("t1").size());
    return JobsWrites{};
  });
  EXPECT_EQ(loaded, 1);
}

// Registered things are known whether or not they have executions (the head query asks only
// about those without), unregistered ones are not, and the clock comes either way.
TEST_F(JobsStoreTest, KnowsRegisteredThingsWithAndWithoutExecutions) {
  Sql("insert into fleetwave.devices (id, model, firmware, firmware_key) values "
      "('t2','arm','1.0.0','k')");
  store_.RunBatch({.queue = {{"job-1", "t1", 1, std::nullopt}}},
                  [](JobsSnapshot&) { return JobsWrites{}; });
  for (const std::set<std::string>& things :
       {std::set<std::string>{"t1"}, std::set<std::string>{"t1", "t2", "ghost"},
        std::set<std::string>{"ghost"}}) {
    JobsBatch batch;
    batch.things = things;
    store_.RunBatch(batch, [&](JobsSnapshot& s) {
      EXPECT_GT(s.now, 1700000000);
      std::set<std::string> expected;
      for (const auto& t : things)
        if (t != "ghost") expected.insert(t);
      EXPECT_EQ(s.known_things, expected);
      return JobsWrites{};
    });
  }
}

// The rollout's document, read once per rollout, with each execution's own fields added.
TEST_F(JobsStoreTest, EachExecutionGetsItsRolloutsDocumentWithItsOwnFields) {
  Sql("insert into fleetwave.releases (model, version, version_key, url, sha256, size) values "
      "('arm','3.0.0','k3','https://fw/b', repeat('b',64), 1);"
      "insert into fleetwave.rollouts (id, cycle_id, release_id, job_document) "
      "select 'job-2', min(c.id), max(r.id), "
      "'{\"operation\": \"firmware.update\", \"release\": {\"version\": \"2.0.0\"}}' "
      "from fleetwave.cycles c, fleetwave.releases r");
  for (int round = 0; round < 2; ++round) {  // the second from the store's cache
    JobsBatch batch;
    if (round == 0)
      batch.queue = {{"job-1", "t1", 3, 2000000000}, {"job-2", "t1", 1, std::nullopt}};
    batch.things = {"t1"};
    std::map<std::string, nlohmann::json> documents;
    store_.RunBatch(batch, [&](JobsSnapshot& s) {
      for (const auto& e : s.executions.at("t1"))
        documents[e.job_id] = nlohmann::json::parse(e.job_document);
      return JobsWrites{};
    });
    const auto queued_at = documents.at("job-1").at("issuedAt").get<int64_t>();
    EXPECT_GT(queued_at, 1700000000);
    EXPECT_EQ(documents.at("job-1"),
              nlohmann::json::parse(R"({"rollout": {"id": "job-1", "wave": 3}, "issuedAt": )" +
                                    std::to_string(queued_at) + R"(, "expiresAt": 2000000000})"));
    EXPECT_EQ(documents.at("job-2"), nlohmann::json::parse(R"({"operation": "firmware.update",
                                        "release": {"version": "2.0.0"},
                                        "rollout": {"id": "job-2", "wave": 1}, "issuedAt": )" +
                                                           std::to_string(queued_at) + "}"));
  }
}

// A fleet at rest gives the store many batches while job_executions is empty, and PostgreSQL
// then settles on one plan for its prepared statements, made for an empty table. Once a wave's
// executions are queued the statements are planned again, so a batch looks its rows up by key
// instead of reading the whole table (a sequential scan per batch, 100,000 rows in a rollout).
TEST_F(JobsStoreTest, BatchesAfterAWaveIsQueuedReadExecutionsByKey) {
  constexpr int kThings = 20000;
  Sql("insert into fleetwave.devices (id, model, firmware, firmware_key) "
      "select 'd' || i, 'arm', '1.0.0', 'k' from generate_series(1, " +
      std::to_string(kThings) + ") i");
  auto some_things = [](int from) {
    JobsBatch batch;
    for (int i = from; i < from + 100; ++i) batch.named.insert({"job-1", "d" + std::to_string(i)});
    return batch;
  };
  auto nothing = [](JobsSnapshot&) { return JobsWrites{}; };
  for (int i = 0; i < 8; ++i) store_.RunBatch(some_things(1 + 100 * i), nothing);  // at rest
  JobsBatch wave;
  for (int i = 1; i <= kThings; ++i)
    wave.queue.push_back({"job-1", "d" + std::to_string(i), 1, {}});
  store_.RunBatch(wave, nothing);

  // An idle session hands its statistics to the cumulative views within PostgreSQL's idle
  // interval (10 s): wait until they show the wave's inserts, then count one more batch's scans.
  auto scans = [&] {
    auto r =
        Sql("select n_tup_ins, seq_scan, idx_scan from pg_stat_user_tables "
            "where relid = 'fleetwave.job_executions'::regclass")[0];
    return std::array<int64_t, 3>{r[0].as<int64_t>(), r[1].as<int64_t>(), r[2].as<int64_t>()};
  };
  auto wait_for = [&](auto holds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!holds()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  };
  ASSERT_TRUE(wait_for([&] { return scans()[0] >= kThings; }));
  const auto before = scans();
  size_t loaded = 0;
  store_.RunBatch(some_things(5001), [&](JobsSnapshot& s) {
    loaded = s.executions.size();
    return JobsWrites{};
  });
  EXPECT_EQ(loaded, 100u);
  ASSERT_TRUE(wait_for([&] {
    auto now = scans();
    return now[1] + now[2] > before[1] + before[2];
  }));
  EXPECT_EQ(scans()[1], before[1]) << "the batch read job_executions with a sequential scan";
}

TEST_F(JobsStoreTest, AConcurrentChangeMakesTheBatchDecideAgain) {
  store_.RunBatch({.queue = {{"job-1", "t1", 1, std::nullopt}}},
                  [](JobsSnapshot&) { return JobsWrites{}; });
  JobsBatch batch;
  batch.things = {"t1"};
  int calls = 0;
  BatchResult result = store_.RunBatch(batch, [&](JobsSnapshot& s) {
    if (++calls == 1) {
      // Another writer bumps the version between our read and our write.
      Sql("update fleetwave.job_executions set version_number = version_number + 1");
    }
    fleet::Execution e = s.executions.at("t1").at(0);
    e.loaded_version = e.version_number;
    e.version_number += 1;
    e.status = fleet::JobStatus::kInProgress;
    JobsWrites w;
    w.changed.push_back(e);
    return w;
  });
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(result.attempts, 2);
  auto row = Sql("select version_number, status from fleetwave.job_executions")[0];
  EXPECT_EQ(row[0].as<int>(), 3);  // 1, bumped to 2 by the other writer, then ours: 3
  EXPECT_EQ(row[1].as<std::string>(), "IN_PROGRESS");
}

TEST_F(JobsStoreTest, NoticesComeBackWithTheirOutboxIdsAndAreMarkedSentLater) {
  JobsBatch batch;
  batch.things = {"t1"};
  BatchResult result = store_.RunBatch(batch, [](JobsSnapshot&) {
    JobsWrites w;
    w.notices = {{"a/notify-next", "{}"}, {"a/notify", "{}"}};
    return w;
  });
  ASSERT_EQ(result.notices.size(), 2u);
  EXPECT_EQ(result.notices[0].topic, "a/notify-next");
  batch.mark_sent = {result.notices[0].id, result.notices[1].id};
  store_.RunBatch(batch, [](JobsSnapshot&) { return JobsWrites{}; });
  EXPECT_EQ(Sql("select count(*) from fleetwave.outbox")[0][0].as<int>(), 0);
}

// A notice is stored byte for byte (after a crash the relay sends again exactly what was
// published, signature included); an answer, spliced into the statement as JSON rather than
// passed as a string, comes back as the same JSON to replay.
TEST_F(JobsStoreTest, NoticesAreStoredByteForByteAndAnswersAsTheSameJson) {
  store_.RunBatch({.queue = {{"job-1", "t1", 1, std::nullopt}}},
                  [](JobsSnapshot&) { return JobsWrites{}; });
  const std::string payload =
      R"({"z" :  1, "a":[1, 2 ], "s":"caf\u00e9 \"q\" \\ \n", "é":"€", "n":null})";
  const std::string answer = R"({"clientToken":"c\"1","execution":{"jobId":"job-1"},"x":"é"})";
  JobsBatch batch;
  batch.things = {"t1"};
  BatchResult result = store_.RunBatch(batch, [&](JobsSnapshot& s) {
    fleet::Execution e = s.executions.at("t1").at(0);
    e.loaded_version = e.version_number;
    e.version_number += 1;
    e.status = fleet::JobStatus::kInProgress;
    e.last_client_token = "c\"1";
    e.last_answer = answer;
    JobsWrites w;
    w.changed.push_back(e);
    w.notices = {{"$aws/things/t1/jobs/notify-next", payload}};
    return w;
  });
  ASSERT_EQ(result.notices.size(), 1u);
  EXPECT_EQ(Sql("select payload from fleetwave.outbox")[0][0].as<std::string>(), payload);
  store_.RunBatch(batch, [&](JobsSnapshot& s) {
    const fleet::Execution& e = s.executions.at("t1").at(0);
    EXPECT_EQ(e.last_client_token, "c\"1");
    EXPECT_EQ(nlohmann::json::parse(e.last_answer.value_or("null")), nlohmann::json::parse(answer));
    return JobsWrites{};
  });
}

// The relay's view of the outbox: of the oldest `limit` notices, those old enough, in id order;
// delivered ones are deleted and never come back.
TEST_F(JobsStoreTest, TheRelayGetsTheOldUnsentNoticesAndDeliveredOnesLeave) {
  Sql("insert into fleetwave.outbox (topic, payload, created_at) values "
      "('a', '1', now() - interval '1 minute'), ('b', '2', now() - interval '1 minute'), "
      "('c', '3', now()), ('d', '4', now() - interval '1 minute')");
  Outbox outbox(database_.conninfo());
  auto topics = [](const std::vector<OutboxEntry>& entries) {
    std::vector<std::string> t;
    for (const auto& e : entries) t.push_back(e.topic);
    return t;
  };
  EXPECT_EQ(topics(outbox.Unsent(10, 10)), (std::vector<std::string>{"a", "b", "d"}));
  EXPECT_EQ(topics(outbox.Unsent(10, 0)), (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(topics(outbox.Unsent(2, 10)), (std::vector<std::string>{"a", "b"}));
  // Only the oldest `limit` are looked at: a young one among them hides what follows it.
  const auto all = outbox.Unsent(10, 0);
  outbox.MarkSent({all[0].id, all[1].id});
  EXPECT_EQ(topics(outbox.Unsent(1, 10)), std::vector<std::string>{});
  EXPECT_EQ(topics(outbox.Unsent(2, 10)), (std::vector<std::string>{"d"}));
  EXPECT_EQ(outbox.Depth(), 2);
  outbox.MarkSent({all[0].id, all[2].id, all[3].id});  // idempotent
  EXPECT_EQ(outbox.Depth(), 0);
  EXPECT_EQ(Sql("select count(*) from fleetwave.outbox")[0][0].as<int>(), 0);
}

TEST_F(JobsStoreTest, PruneTelemetryDeletesOnlyOldRowsAndAtMostTheLimit) {
  Sql("insert into fleetwave.telemetry (thing_name, payload, received_at) "
      "select 't1', '{}', now() - interval '10 days' from generate_series(1, 5);"
      "insert into fleetwave.telemetry (thing_name, payload) values ('t1', '{}')");
  EXPECT_EQ(store_.PruneTelemetry(7 * 86400, 3), 3);
  EXPECT_EQ(store_.PruneTelemetry(7 * 86400, 3), 2);
  EXPECT_EQ(store_.PruneTelemetry(7 * 86400, 3), 0);
  EXPECT_EQ(Sql("select count(*) from fleetwave.telemetry")[0][0].as<int>(), 1);
}

}  // namespace
}  // namespace db
