// A fresh PostgreSQL database for one test, on the server scripts/test starts, dropped when the
// test ends. Tests never share data.
//
// Two roles, as in production (README "Database roles"): the owner (FLEETWAVE_DB_OWNER, or
// FLEETWAVE_DB when that is unset) creates, migrates and drops the database; the code under test
// connects as the application's role (FLEETWAVE_DB, when FLEETWAVE_DB_OWNER is set), so every
// integration test also proves that the application role's rights are enough.
#pragma once

#include <memory>
#include <string>

#include <pqxx/connection>

namespace testing_support {

class TestDatabase {
 public:
  // Creates the database as the owner; with `migrate`, applies the embedded migrations too.
  // Throws when FLEETWAVE_DB is not set or the server cannot be reached.
  explicit TestDatabase(bool migrate = true);
  ~TestDatabase();
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  // The application role's connection string (the owner's when no application role is
  // configured): what the controller and the CLI under test use.
  const std::string& conninfo() const { return conninfo_; }
  std::unique_ptr<pqxx::connection> Connect() const;

  // The owner's: for migrating, DDL, TRUNCATE and other setup the application may not do.
  const std::string& owner_conninfo() const { return owner_conninfo_; }
  std::unique_ptr<pqxx::connection> ConnectOwner() const;

  // True when conninfo() is a role other than the owner (scripts/test sets both).
  bool has_app_role() const { return conninfo_ != owner_conninfo_; }
  const std::string& name() const { return name_; }

 private:
  std::string admin_;
  std::string name_;
  std::string owner_conninfo_;
  std::string conninfo_;
};

// The server-level connection strings (database as named in the environment): the owner's,
// and the application role's (empty when FLEETWAVE_DB_OWNER is not set).
std::string OwnerServerConninfo();
std::string AppServerConninfo();

}  // namespace testing_support
