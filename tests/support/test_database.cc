#include "tests/support/test_database.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#include <pqxx/pqxx>

#include "db/connection.h"
#include "db/migrator.h"

namespace testing_support {

TestDatabase::TestDatabase(bool migrate) {
  const char* admin = std::getenv("FLEETWAVE_DB");
  if (!admin || !*admin) {
    throw std::runtime_error(
        "FLEETWAVE_DB is not set: integration tests need the PostgreSQL that scripts/test starts "
        "(run scripts/test, or `eval \"$(scripts/stack env)\"` after `scripts/stack up`)");
  }
  admin_ = admin;
  static std::atomic<int> counter{0};
  name_ = "fwtest_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
  conninfo_ = db::RecreateDatabase(admin_, name_);
  if (migrate) {
    auto conn = Connect();
    db::Migrator(*conn).Apply();
  }
}

TestDatabase::~TestDatabase() {
  try {
    db::DropDatabase(admin_, name_);
  } catch (...) {
    // A leftover test database is harmless; the stack is scratch.
  }
}

std::unique_ptr<pqxx::connection> TestDatabase::Connect() const { return db::Connect(conninfo_); }

}  // namespace testing_support
