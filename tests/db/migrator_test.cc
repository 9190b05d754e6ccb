#include "db/migrator.h"

#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "tests/support/test_database.h"

namespace db {
namespace {

using testing_support::TestDatabase;

std::vector<std::string> AllNames() {
  std::vector<std::string> names;
  for (const auto& m : EmbeddedMigrations()) names.push_back(m.name);
  return names;
}

TEST(EmbeddedMigrations, AreNumberedInOrderWithChecksums) {
  const auto& all = EmbeddedMigrations();
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all[0].name, "0001_init.sql");
  for (size_t i = 0; i < all.size(); ++i) {
    // Strictly increasing; a gap is a number another branch has taken (0004 while 0005 was
    // written): the migrator applies whatever is missing, in order.
    if (i > 0) {
      EXPECT_GT(all[i].version, all[i - 1].version);
    }
    EXPECT_EQ(all[i].checksum.size(), 64u);
    EXPECT_FALSE(all[i].sql.empty());
  }
}

TEST(Migrator, FreshDatabaseGetsEveryMigrationRecorded) {
  TestDatabase database(/*migrate=*/false);
  auto conn = database.ConnectOwner();
  Migrator migrator(*conn);
  for (const auto& s : migrator.Status()) EXPECT_FALSE(s.applied_at) << s.migration.name;
  EXPECT_EQ(migrator.Apply(), AllNames());
  pqxx::read_transaction txn(*conn);
  auto rows = txn.exec("select name, checksum from fleetwave.schema_migrations order by version");
  ASSERT_EQ(rows.size(), EmbeddedMigrations().size());
  EXPECT_EQ(rows[0][1].as<std::string>(), EmbeddedMigrations()[0].checksum);
  txn.commit();
  for (const auto& s : migrator.Status()) EXPECT_TRUE(s.applied_at) << s.migration.name;
}

TEST(Migrator, RerunIsANoOp) {
  TestDatabase database;
  auto conn = database.ConnectOwner();
  EXPECT_TRUE(Migrator(*conn).Apply().empty());
  EXPECT_TRUE(Migrator(*conn).Apply().empty());
}

TEST(Migrator, RefusesAChangedAppliedMigration) {
  TestDatabase database;
  auto conn = database.ConnectOwner();
  std::vector<Migration> changed = EmbeddedMigrations();
  changed[0].sql += "\n-- edited after release\n";
  changed[0].checksum = std::string(64, 'f');
  changed.push_back({static_cast<int>(changed.size() + 1), "9999_new.sql",
                     "create table fleetwave.should_not_exist (x int)", std::string(64, 'e')});
  try {
    Migrator(*conn, changed).Apply();
    FAIL() << "a changed migration was accepted";
  } catch (const MigrationMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("0001_init.sql was changed after it was applied"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(Migrator(*conn, changed).Status(), MigrationMismatch);
  pqxx::read_transaction txn(*conn);
  EXPECT_FALSE(
      txn.exec1("select to_regclass('fleetwave.should_not_exist') is not null")[0].as<bool>());
}

TEST(Migrator, RefusesADatabaseFromANewerBinary) {
  TestDatabase database;
  auto conn = database.ConnectOwner();
  {
    pqxx::work txn(*conn);
    txn.exec(
        "insert into fleetwave.schema_migrations (version, name, checksum) "
        "values (9000, '9000_future.sql', 'x')");
    txn.commit();
  }
  try {
    Migrator(*conn).Apply();
    FAIL() << "an unknown applied migration was accepted";
  } catch (const MigrationMismatch& e) {
    EXPECT_NE(std::string(e.what()).find("9000_future.sql"), std::string::npos) << e.what();
  }
}

TEST(Migrator, ConcurrentRunsApplyEachMigrationOnce) {
  TestDatabase database(/*migrate=*/false);
  std::vector<std::string> applied[4];
  std::string errors[4];
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      try {
        auto conn = database.ConnectOwner();
        applied[i] = Migrator(*conn).Apply();
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  std::multiset<std::string> all;
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(errors[i], "");
    all.insert(applied[i].begin(), applied[i].end());
  }
  std::vector<std::string> expected = AllNames();
  EXPECT_EQ(all, std::multiset<std::string>(expected.begin(), expected.end()));
}

std::vector<std::string> Columns(pqxx::connection& conn, const std::string& relation) {
  pqxx::read_transaction txn(conn);
  std::vector<std::string> cols;
  for (const auto& row : txn.exec_params(
           "select column_name from information_schema.columns where table_schema = 'fleetwave' "
           "and table_name = $1 order by ordinal_position",
           relation))
    cols.push_back(row[0].as<std::string>());
  return cols;
}

TEST(Schema, ViewsHaveTheDocumentedColumns) {
  TestDatabase database;
  auto conn = database.ConnectOwner();
  EXPECT_EQ(Columns(*conn, "rollout_status"),
            (std::vector<std::string>{"rollout_id", "cycle_id", "model", "version", "state",
                                      "current_wave", "total", "queued", "in_progress", "succeeded",
                                      "failed", "rejected", "timed_out", "canceled"}));
  EXPECT_EQ(Columns(*conn, "wave_status"),
            (std::vector<std::string>{"rollout_id", "wave", "planned", "state", "queued",
                                      "in_progress", "succeeded", "failed", "rejected", "timed_out",
                                      "canceled", "started_at", "finished_at", "verdict"}));
  EXPECT_EQ(Columns(*conn, "fleet_versions"),
            (std::vector<std::string>{"model", "firmware", "devices"}));
}

TEST(Schema, EveryDesignTableExists) {
  TestDatabase database;
  auto conn = database.ConnectOwner();
  for (const char* table :
       {"devices", "releases", "cycles", "rollouts", "waves", "job_executions", "outbox",
        "telemetry", "events", "leases", "approvals", "schema_migrations"})
    EXPECT_FALSE(Columns(*conn, table).empty()) << table;
}

TEST(Schema, AtMostOneRunningCycle) {
  TestDatabase database;
  auto conn = database.ConnectOwner();
  {
    pqxx::work txn(*conn);
    txn.exec("insert into fleetwave.cycles default values");
    txn.commit();
  }
  pqxx::work txn(*conn);
  EXPECT_THROW(txn.exec("insert into fleetwave.cycles default values"), pqxx::unique_violation);
}

TEST(Schema, StatesAreChecked) {
  TestDatabase database;
  auto conn = database.ConnectOwner();
  pqxx::work txn(*conn);
  EXPECT_THROW(txn.exec("insert into fleetwave.cycles (state) values ('sleeping')"),
               pqxx::check_violation);
}

TEST(Schema, EventsAreAppendOnly) {
  TestDatabase database;
  auto conn = database.ConnectOwner();
  {
    pqxx::work txn(*conn);
    txn.exec("insert into fleetwave.events (kind) values ('test')");
    txn.commit();
  }
  pqxx::work txn(*conn);
  EXPECT_THROW(txn.exec("delete from fleetwave.events"), pqxx::sql_error);
}

TEST(Schema, ViewsCountExecutionsByStatus) {
  TestDatabase database;
  auto conn = database.ConnectOwner();
  pqxx::work txn(*conn);
  txn.exec(
      "insert into fleetwave.devices (id, model, firmware, firmware_key) values "
      "('d1','m','1.0.0','k'),('d2','m','1.0.0','k'),('d3','m','1.0.0','k');"
      "insert into fleetwave.releases (model, version, version_key, url, sha256, size) values "
      "('m','2.0.0','k2','https://x/y', repeat('a',64), 1);"
      "insert into fleetwave.cycles default values;"
      "insert into fleetwave.rollouts (id, cycle_id, release_id, total) "
      "  select 'fw-m-2.0.0-c1', c.id, r.id, 3 from fleetwave.cycles c, fleetwave.releases r;"
      "insert into fleetwave.waves (rollout_id, wave, planned) values "
      "  ('fw-m-2.0.0-c1', 1, 1), ('fw-m-2.0.0-c1', 2, 2);"
      "insert into fleetwave.job_executions (job_id, thing_name, status, wave) values "
      "  ('fw-m-2.0.0-c1','d1','SUCCEEDED',1), ('fw-m-2.0.0-c1','d2','FAILED',2),"
      "  ('fw-m-2.0.0-c1','d3','QUEUED',2)");
  auto r = txn.exec1(
      "select total, queued, succeeded, failed, in_progress "
      "from fleetwave.rollout_status");
  EXPECT_EQ(r[0].as<int>(), 3);
  EXPECT_EQ(r[1].as<int>(), 1);
  EXPECT_EQ(r[2].as<int>(), 1);
  EXPECT_EQ(r[3].as<int>(), 1);
  EXPECT_EQ(r[4].as<int>(), 0);
  auto w = txn.exec(
      "select wave, planned, queued, failed, succeeded from fleetwave.wave_status "
      "order by wave");
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0][4].as<int>(), 1);
  EXPECT_EQ(w[1][2].as<int>(), 1);
  EXPECT_EQ(w[1][3].as<int>(), 1);
  auto f = txn.exec1("select model, firmware, devices from fleetwave.fleet_versions");
  EXPECT_EQ(f[2].as<int>(), 3);
}

}  // namespace
}  // namespace db
