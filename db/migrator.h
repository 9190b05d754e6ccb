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
  // Throws MigrationMismatch before applying anything when the recorded history disagrees.
  std::vector<std::string> Apply();

  std::vector<MigrationStatus> Status();

 private:
  pqxx::connection& conn_;
  std::vector<Migration> migrations_;
};

}  // namespace db
