// A fresh PostgreSQL database for one test, on the server FLEETWAVE_DB points at (scripts/test
// starts one), dropped when the test ends. Tests never share data.
#pragma once

#include <memory>
#include <string>

#include <pqxx/connection>

namespace testing_support {

class TestDatabase {
 public:
  // Creates the database; with `migrate`, applies the embedded migrations too.
  // Throws when FLEETWAVE_DB is not set or the server cannot be reached.
  explicit TestDatabase(bool migrate = true);
  ~TestDatabase();
  TestDatabase(const TestDatabase&) = delete;
  TestDatabase& operator=(const TestDatabase&) = delete;

  const std::string& conninfo() const { return conninfo_; }
  std::unique_ptr<pqxx::connection> Connect() const;

 private:
  std::string admin_;
  std::string name_;
  std::string conninfo_;
};

}  // namespace testing_support
