#include "db/migrator.h"

#include <map>

#include <pqxx/pqxx>

namespace db {
namespace {

// Arbitrary, fixed: every fleetwave migrator takes the same advisory lock.
constexpr long long kMigrationLock = 0x666c6565747761LL;  // "fleetwa"

struct Applied {
  std::string name;
  std::string checksum;
  std::string applied_at;
};

std::map<int, Applied> ReadApplied(pqxx::transaction_base& txn) {
  std::map<int, Applied> applied;
  if (txn.exec1("select to_regclass('fleetwave.schema_migrations') is not null")[0].as<bool>()) {
    for (const auto& row :
         txn.exec("select version, name, checksum, "
                  "to_char(applied_at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
                  "from fleetwave.schema_migrations order by version")) {
      applied[row[0].as<int>()] = {row[1].as<std::string>(), row[2].as<std::string>(),
                                   row[3].as<std::string>()};
    }
  }
  return applied;
}

void CheckHistory(const std::map<int, Applied>& applied, const std::vector<Migration>& known) {
  std::map<int, const Migration*> by_version;
  for (const Migration& m : known) by_version[m.version] = &m;
  for (const auto& [version, row] : applied) {
    auto it = by_version.find(version);
    if (it == by_version.end()) {
      throw MigrationMismatch("the database has migration " + row.name +
                              ", which this fleetwave binary does not know: run a newer fleetwave");
    }
    if (it->second->checksum != row.checksum) {
      throw MigrationMismatch(
          "migration " + row.name + " was changed after it was applied (applied checksum " +
          row.checksum.substr(0, 12) + "…, file checksum " + it->second->checksum.substr(0, 12) +
          "…): migrations are forward-only, so restore the file and add a new numbered one");
    }
  }
}

}  // namespace

Migrator::Migrator(pqxx::connection& conn, std::vector<Migration> migrations)
    : conn_(conn), migrations_(std::move(migrations)) {}

std::vector<std::string> Migrator::Apply() {
  std::vector<std::string> done;
  for (const Migration& m : migrations_) {
    bool in_file = false;  // refused by the file's SQL, not by the migrator's own bookkeeping
    try {
      if (ApplyOne(m, &in_file)) done.push_back(m.name);
    } catch (const pqxx::insufficient_privilege& e) {
      std::string why = e.what();
      while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
      std::string message = (in_file ? "cannot apply " + m.name : std::string("cannot migrate")) +
                            " as role " + conn_.username() + ": " + why;
      // 0005's own message already says what to do; a plain "permission denied" is a role
      // that does not own the schema, typically the application's.
      if (why.find("permission denied") != std::string::npos) {
        message +=
            " (migrations run as the role that owns the database and the schema fleetwave, not "
            "as the application's role: set FLEETWAVE_DB_OWNER or --db to the owner's "
            "connection)";
      }
      throw MigrationNotPermitted(message);
    }
  }
  return done;
}

bool Migrator::ApplyOne(const Migration& m, bool* in_file) {
  pqxx::work txn(conn_);
  txn.exec_params("select pg_advisory_xact_lock($1)", kMigrationLock);
  txn.exec("create schema if not exists fleetwave");
  txn.exec(
      "create table if not exists fleetwave.schema_migrations ("
      "  version integer primary key, name text not null, checksum text not null,"
      "  applied_at timestamptz not null default now())");
  // Read under the lock: another migrator may have applied some meanwhile.
  std::map<int, Applied> applied = ReadApplied(txn);
  CheckHistory(applied, migrations_);
  if (applied.count(m.version)) return false;  // the transaction rolls back: nothing to keep
  *in_file = true;
  txn.exec(m.sql);
  *in_file = false;
  txn.exec_params(
      "insert into fleetwave.schema_migrations (version, name, checksum) values ($1, $2, $3)",
      m.version, m.name, m.checksum);
  txn.commit();
  return true;
}

std::vector<MigrationStatus> Migrator::Status() {
  pqxx::read_transaction txn(conn_);
  std::map<int, Applied> applied = ReadApplied(txn);
  CheckHistory(applied, migrations_);
  std::vector<MigrationStatus> status;
  for (const Migration& m : migrations_) {
    auto it = applied.find(m.version);
    status.push_back({m, it == applied.end() ? std::nullopt
                                             : std::optional<std::string>(it->second.applied_at)});
  }
  return status;
}

}  // namespace db
