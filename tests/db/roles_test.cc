// The database roles of README "Database roles" (migration 0005): the owner migrates and owns
// everything; the application's role (FLEETWAVE_DB in scripts/test, fleetwave_controller in the
// stack) does the controller's and the CLI's work and nothing else. Every other integration test
// also runs the code under test as the application's role (tests/support/test_database.h); these
// tests pin the rights themselves.
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "db/jobs_store.h"
#include "db/lease.h"
#include "db/migrator.h"
#include "db/outbox.h"
#include "db/registry.h"
#include "db/rollouts.h"
#include "fleet/plan.h"
#include "tests/support/test_database.h"

namespace db {
namespace {

using testing_support::TestDatabase;

// What the application's role may do with each table and view of the schema: exactly this,
// nothing more (no TRUNCATE, REFERENCES or TRIGGER anywhere). A new table that 0005's default
// privileges cover gets SELECT, INSERT, UPDATE, DELETE: add it here, narrower where it can be.
const std::map<std::string, std::set<std::string>>& ExpectedRights() {
  static const auto* rights = new std::map<std::string, std::set<std::string>>{
      {"devices", {"SELECT", "INSERT", "UPDATE"}},
      {"releases", {"SELECT", "INSERT", "UPDATE"}},
      {"cycles", {"SELECT", "INSERT", "UPDATE"}},
      {"rollouts", {"SELECT", "INSERT", "UPDATE"}},
      {"waves", {"SELECT", "INSERT", "UPDATE"}},
      {"job_executions", {"SELECT", "INSERT", "UPDATE"}},
      {"outbox", {"SELECT", "INSERT", "UPDATE", "DELETE"}},
      {"leases", {"SELECT", "INSERT", "UPDATE"}},
      {"approvals", {"SELECT", "INSERT", "UPDATE"}},
      {"events", {"SELECT", "INSERT"}},
      {"quarantines", {"SELECT", "INSERT"}},
      {"secrets", {"SELECT", "INSERT"}},
      {"telemetry", {"SELECT", "INSERT", "DELETE"}},
      {"rollout_order", {"SELECT", "INSERT", "DELETE"}},
      {"schema_migrations", {"SELECT"}},
      {"rollout_status", {"SELECT"}},
      {"wave_status", {"SELECT"}},
      {"fleet_versions", {"SELECT"}},
      {"rollout_targets", {"SELECT"}},
  };
  return *rights;
}

class RolesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!database_.has_app_role()) {
      GTEST_SKIP()
          << "FLEETWAVE_DB_OWNER is not set, so the tests have one role only (scripts/test "
             "sets FLEETWAVE_DB_OWNER to the owner and FLEETWAVE_DB to the application)";
    }
  }

  // Runs `sql` as the application's role in a transaction of its own; returns the SQLSTATE
  // class of what it threw ("" when it succeeded, which is rolled back all the same).
  std::string AsApp(const std::string& sql) {
    auto conn = database_.Connect();
    pqxx::work txn(*conn);
    try {
      txn.exec(sql);
      return "";
    } catch (const pqxx::insufficient_privilege&) {
      return "insufficient_privilege";
    } catch (const pqxx::sql_error& e) {
      return "other error " + e.sqlstate() + ": " + e.what();
    }
  }

  TestDatabase database_;
};

TEST_F(RolesTest, TheApplicationRoleIsNeitherOwnerNorPrivileged) {
  auto conn = database_.Connect();
  pqxx::read_transaction txn(*conn);
  auto me = txn.exec1(
      "select current_user, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, "
      "  pg_has_role(current_user, 'fleetwave_app', 'USAGE') "
      "from pg_roles where rolname = current_user");
  EXPECT_NE(me[0].as<std::string>(), database_.ConnectOwner()->username())
      << "the application must not connect as the owner";
  EXPECT_FALSE(me[1].as<bool>()) << "superuser";
  EXPECT_FALSE(me[2].as<bool>()) << "CREATEROLE";
  EXPECT_FALSE(me[3].as<bool>()) << "CREATEDB";
  EXPECT_FALSE(me[4].as<bool>()) << "BYPASSRLS";
  EXPECT_TRUE(me[5].as<bool>()) << "not a member of fleetwave_app";
  EXPECT_EQ(
      txn.exec1("select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = 'fleetwave' and pg_has_role(c.relowner, 'USAGE')")[0]
          .as<int>(),
      0)
      << "owns (or inherits the owner of) an object of the schema";
  EXPECT_FALSE(txn.exec1("select pg_has_role(nspowner, 'USAGE') from pg_namespace "
                         "where nspname = 'fleetwave'")[0]
                   .as<bool>());
  EXPECT_FALSE(txn.exec1("select has_schema_privilege('fleetwave', 'CREATE')")[0].as<bool>());
  EXPECT_FALSE(
      txn.exec1("select has_database_privilege(current_database(), 'CREATE')")[0].as<bool>());
}

// The rights of every table and view, exactly: has_table_privilege per privilege.
TEST_F(RolesTest, EveryTableHasExactlyTheExpectedRights) {
  auto conn = database_.Connect();
  pqxx::read_transaction txn(*conn);
  std::map<std::string, std::set<std::string>> actual;
  for (const auto& row :
       txn.exec("select c.relname, p.priv, has_table_privilege(c.oid, p.priv) from pg_class c "
                "join pg_namespace n on n.oid = c.relnamespace "
                "cross join unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', "
                "  'REFERENCES', 'TRIGGER']) p(priv) "
                "where n.nspname = 'fleetwave' and c.relkind in ('r', 'v', 'm', 'p')")) {
    auto& rights = actual[row[0].as<std::string>()];
    if (row[2].as<bool>()) rights.insert(row[1].as<std::string>());
  }
  EXPECT_EQ(actual, ExpectedRights());
  // Sequences: draw values (identity columns), never set them.
  for (const auto& row : txn.exec("select c.relname, has_sequence_privilege(c.oid, 'USAGE'), "
                                  "  has_sequence_privilege(c.oid, 'UPDATE') from pg_class c "
                                  "join pg_namespace n on n.oid = c.relnamespace "
                                  "where n.nspname = 'fleetwave' and c.relkind = 'S'")) {
    EXPECT_TRUE(row[1].as<bool>()) << row[0].as<std::string>();
    EXPECT_FALSE(row[2].as<bool>()) << row[0].as<std::string>();
  }
}

TEST_F(RolesTest, TheApplicationRoleIsRefusedDdl) {
  for (const char* sql : {
           "create table fleetwave.intruder (x int)",
           "create table public.intruder (x int)",
           "create view fleetwave.intruder as select 1",
           "create schema intruder",
           "create function fleetwave.intruder() returns int language sql as 'select 1'",
           "create index intruder_idx on fleetwave.devices (model)",
           "drop table fleetwave.devices",
           "drop table fleetwave.events",
           "drop view fleetwave.rollout_status",
           "drop schema fleetwave cascade",
           "alter table fleetwave.devices add column intruder int",
           "alter table fleetwave.events disable trigger events_append_only",
           "alter table fleetwave.devices owner to current_user",
           "comment on table fleetwave.devices is 'mine'",
           "create trigger intruder before insert on fleetwave.devices "
           "  for each row execute function fleetwave.events_append_only()",
           "create role intruder",
           "alter sequence fleetwave.outbox_id_seq restart with 1",
       }) {
    EXPECT_EQ(AsApp(sql), "insufficient_privilege") << sql;
  }
}

TEST_F(RolesTest, TheApplicationRoleMayNotTruncateAnything) {
  for (const auto& [table, rights] : ExpectedRights()) {
    if (table.find("_status") != std::string::npos || table == "fleet_versions" ||
        table == "rollout_targets")
      continue;  // views: TRUNCATE does not apply
    EXPECT_EQ(AsApp("truncate fleetwave." + table), "insufficient_privilege") << table;
    EXPECT_EQ(AsApp("truncate fleetwave." + table + " cascade"), "insufficient_privilege") << table;
  }
}

// Writes the application never makes are refused by the privilege system, before any trigger
// or constraint sees them.
TEST_F(RolesTest, TheApplicationRoleMayNotWriteWhereItHasNoRight) {
  for (const char* sql : {
           "update fleetwave.events set kind = 'rewritten'",
           "delete from fleetwave.events",
           "update fleetwave.telemetry set payload = '{}'",
           "update fleetwave.rollout_order set chunk = 0",
           "update fleetwave.quarantines set reason = 'x'",
           "delete from fleetwave.quarantines",
           "update fleetwave.secrets set value = 'x'",
           "delete from fleetwave.secrets",
           "delete from fleetwave.devices",
           "delete from fleetwave.releases",
           "delete from fleetwave.cycles",
           "delete from fleetwave.rollouts",
           "delete from fleetwave.waves",
           "delete from fleetwave.job_executions",
           "delete from fleetwave.leases",
           "delete from fleetwave.approvals",
           "insert into fleetwave.schema_migrations (version, name, checksum) "
           "  values (9999, '9999_x.sql', 'x')",
           "update fleetwave.schema_migrations set checksum = 'x'",
           "delete from fleetwave.schema_migrations",
           "select setval('fleetwave.outbox_id_seq', 1)",
       }) {
    EXPECT_EQ(AsApp(sql), "insufficient_privilege") << sql;
  }
  // ... while what it does need works (rolled back by AsApp).
  for (const char* sql : {
           "insert into fleetwave.events (kind) values ('test')", "delete from fleetwave.telemetry",
           "delete from fleetwave.rollout_order", "select * from fleetwave.schema_migrations",
           "select nextval('fleetwave.outbox_id_seq')",
           "create temp table staging (x int)",  // device import stages its rows so
       }) {
    EXPECT_EQ(AsApp(sql), "") << sql;
  }
}

// The controller's, the watchdog's and the CLI's work through the real db/ code, as the
// application's role: register and import devices, publish, halt and resume a release, hold the
// lease, start and plan a cycle, queue and update executions with notices and telemetry, relay
// the outbox, heartbeat, prune telemetry, complete the cycle. (The engine, jobs service, CLI and
// watchdog tests run the rest of it, also as this role.)
TEST_F(RolesTest, TheApplicationRoleDoesTheWholeJob) {
  const std::string conninfo = database_.conninfo();
  auto conn = database_.Connect();
  Registry registry(*conn);
  registry.AddDevice({"r0", "arm", "1.0.0", "canary", {{"site", "lyon"}}});  // ring canary: first
  std::istringstream csv("id,model,firmware\nr1,arm,1.0.0\nr2,arm,1.0.0\n");
  ASSERT_TRUE(registry.ImportDevices(csv).ok());
  registry.AddRelease({"arm", "2.0.0", "https://fw.example/arm-2.0.0.bin", std::string(64, 'a'),
                       100, fleet::ReleaseState::kActive});
  registry.SetReleaseState("arm", "2.0.0", fleet::ReleaseState::kHalted);
  registry.SetReleaseState("arm", "2.0.0", fleet::ReleaseState::kActive);

  Lease lease(conninfo, "controller", "roles-test");
  ASSERT_TRUE(lease.TryAcquire());
  ASSERT_TRUE(lease.Renew());

  std::string error;
  auto plan = fleet::ParsePlan(R"({"waves": [{"percent": 100}]})", &error);
  ASSERT_TRUE(plan) << error;
  int64_t cycle = 0;
  std::vector<std::string> rollouts;
  {
    pqxx::work txn(*conn);
    Lease::Fence(txn, "controller", "roles-test", lease.epoch());
    auto started = StartCycle(txn, "controller");
    ASSERT_TRUE(started);
    cycle = *started;
    rollouts = PlanCycle(txn, cycle, *plan);
    Heartbeat(txn, cycle, lease.epoch());
    LoadOrCreateSecret(txn, kApprovalSecret, std::string(64, '0'));
    txn.commit();
  }
  ASSERT_EQ(rollouts.size(), 1u);

  JobsStore store(conninfo);
  JobsBatch batch;
  batch.things = {"r1"};
  batch.queue.push_back({rollouts[0], "r1", 1, std::nullopt});
  batch.in_transaction = [&](pqxx::work& txn) {
    Lease::Fence(txn, "controller", "roles-test", lease.epoch());
  };
  BatchResult result = store.RunBatch(batch, [&](JobsSnapshot& snapshot) {
    JobsWrites writes;
    // (Device updates of executions, as this role, are the jobs service and engine tests'.)
    EXPECT_EQ(snapshot.executions["r1"].size(), 1u);
    writes.notices.push_back({"$aws/things/r1/jobs/notify-next", "{}"});
    writes.telemetry.push_back({"r1", "2.0.0", R"({"crashCount": 0})"});
    return writes;
  });
  EXPECT_GE(result.rows_written, 1);
  ASSERT_EQ(result.notices.size(), 1u);

  Outbox outbox(conninfo);
  EXPECT_EQ(outbox.Depth(), 1);
  outbox.MarkSent({result.notices[0].id});
  EXPECT_EQ(outbox.Depth(), 0);
  EXPECT_EQ(store.PruneTelemetry(0, 100), 1);

  {
    pqxx::work txn(*conn);
    EXPECT_GT(CompleteCycle(txn, cycle, 0), cycle);
    txn.commit();
  }
  lease.Release();
}

// Tables a later migration creates (as the same owner) get the application's rights by the
// default privileges of 0005, not more: no TRUNCATE, no ownership.
TEST_F(RolesTest, LaterTablesGetTheDefaultRights) {
  {
    auto owner = database_.ConnectOwner();
    pqxx::work txn(*owner);
    txn.exec("create table fleetwave.later (id bigint generated always as identity, x int)");
    txn.commit();
  }
  EXPECT_EQ(AsApp("insert into fleetwave.later (x) values (1); "
                  "update fleetwave.later set x = 2; delete from fleetwave.later; "
                  "select * from fleetwave.later"),
            "");
  EXPECT_EQ(AsApp("truncate fleetwave.later"), "insufficient_privilege");
  EXPECT_EQ(AsApp("drop table fleetwave.later"), "insufficient_privilege");
}

TEST_F(RolesTest, TheOwnerMigratesAndOwnsEverything) {
  TestDatabase fresh(/*migrate=*/false);
  auto owner = fresh.ConnectOwner();
  EXPECT_EQ(Migrator(*owner).Apply().size(), EmbeddedMigrations().size());
  pqxx::read_transaction txn(*owner);
  EXPECT_EQ(
      txn.exec1("select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = 'fleetwave' and c.relowner <> "
                "(select oid from pg_roles where rolname = current_user)")[0]
          .as<int>(),
      0);
  EXPECT_EQ(txn.exec1("select nspowner::regrole::text from pg_namespace "
                      "where nspname = 'fleetwave'")[0]
                .as<std::string>(),
            owner->username());
}

// 0005 on a server where fleetwave_app is missing and the owner may not create roles: it stops
// with the one line a superuser must run, and nothing of it is applied. (The role name is
// replaced by one that does not exist: fleetwave_app itself is shared by the whole server.)
TEST_F(RolesTest, AMissingGroupRoleStopsMigrationWithTheLineToRun) {
  TestDatabase fresh(/*migrate=*/false);
  auto owner = fresh.ConnectOwner();
  {
    pqxx::read_transaction txn(*owner);
    if (txn.exec1("select rolsuper or rolcreaterole from pg_roles where rolname = current_user")[0]
            .as<bool>()) {
      GTEST_SKIP() << "the owner may create roles here, so 0005 would create the missing one";
    }
  }
  const std::string missing = "fwtest_missing_" + fresh.name();
  std::vector<Migration> migrations;
  for (Migration m : EmbeddedMigrations()) {
    if (m.name == "0005_roles.sql") {
      for (size_t at; (at = m.sql.find("fleetwave_app")) != std::string::npos;)
        m.sql.replace(at, std::string("fleetwave_app").size(), missing);
    }
    migrations.push_back(std::move(m));
  }
  try {
    Migrator(*owner, migrations).Apply();
    FAIL() << "0005 applied without its group role";
  } catch (const MigrationNotPermitted& e) {
    EXPECT_NE(std::string(e.what()).find("cannot apply 0005_roles.sql"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("as a superuser run  CREATE ROLE " + missing +
                                         " NOLOGIN;  then run fleetwave migrate again"),
              std::string::npos)
        << e.what();
  }
  pqxx::read_transaction txn(*owner);
  EXPECT_EQ(
      txn.exec1("select count(*) from fleetwave.schema_migrations where version >= 5")[0].as<int>(),
      0)
      << "0005 is not recorded";
  EXPECT_FALSE(
      txn.exec_params1("select exists (select from pg_roles where rolname = $1)", missing)[0]
          .as<bool>());
}

}  // namespace
}  // namespace db
