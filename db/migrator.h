// Forward-only schema migrations. The SQL files of migrations/ are embedded into the binary at
// build time; Apply() runs the ones the database lacks, in order, each in its own transaction.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <pqxx/connection>

#include "db/connection.h"

namespace db {

struct Migration {
  int version;       // NNNN of NNNN_name.sql
  std::string name;  // the file name
  std::string sql;
  std::string checksum;  // SHA-256 of the file, hex
};

// The migrations built into this binary, in version order.
const std::vector<Migration>& EmbeddedMigrations();

// The migrations are not what the database recorded: an applied file was changed, or the
// database has one this binary does not know. Nothing is applied.
struct MigrationMismatch : Error {
  using Error::Error;
};

// The connected role may not do what a migration needs (it is not the schema's owner, or
// migration 0005 cannot create the group role fleetwave_app). Nothing of that migration is
// applied; the message says which role to use or what a superuser must run.
struct MigrationNotPermitted : Error {
  using Error::Error;
};

struct MigrationStatus {
  Migration migration;
  std::optional<std::string> applied_at;  // nullopt while pending
};

class Migrator {
 public:
  // REQUIRES: `migrations` sorted by version, versions unique; `conn` outlives the Migrator.
  explicit Migrator(pqxx::connection& conn,
                    std::vector<Migration> migrations = EmbeddedMigrations());

  // Applies every pending migration and returns their names (empty when up to date). Safe when
  // several processes run it at once: each step holds a transaction-level advisory lock.
  // Throws MigrationMismatch before applying anything when the recorded history disagrees, and
  // MigrationNotPermitted when the role lacks a right (migrations run as the schema's owner).
  std::vector<std::string> Apply();

  std::vector<MigrationStatus> Status();

 private:
  // Applies `m` in its own transaction unless it is recorded already; true when it applied it.
  // `*in_file` is true while the file's own SQL runs.
  bool ApplyOne(const Migration& m, bool* in_file);

  pqxx::connection& conn_;
  std::vector<Migration> migrations_;
};

}  // namespace db
