#include "tests/support/test_database.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#include <pqxx/pqxx>

#include "db/connection.h"
#include "db/migrator.h"

namespace testing_support {
namespace {

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

}  // namespace

std::string OwnerServerConninfo() {
  std::string owner = Env("FLEETWAVE_DB_OWNER");
  if (owner.empty()) owner = Env("FLEETWAVE_DB");
  if (owner.empty()) {
    throw std::runtime_error(
        "FLEETWAVE_DB is not set: integration tests need the PostgreSQL that scripts/test starts "
        "(run scripts/test, or `eval \"$(scripts/stack env)\"` after `scripts/stack up`)");
  }
  return owner;
}

std::string AppServerConninfo() {
  return Env("FLEETWAVE_DB_OWNER").empty() ? "" : Env("FLEETWAVE_DB");
}

TestDatabase::TestDatabase(bool migrate) {
  admin_ = OwnerServerConninfo();
  static std::atomic<int> counter{0};
  name_ = "fwtest_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
  owner_conninfo_ = db::RecreateDatabase(admin_, name_);
  std::string app = AppServerConninfo();
  conninfo_ = app.empty() ? owner_conninfo_ : db::WithDatabase(app, name_);
  if (migrate) {
    auto conn = ConnectOwner();
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

std::unique_ptr<pqxx::connection> TestDatabase::ConnectOwner() const {
  return db::Connect(owner_conninfo_);
}

}  // namespace testing_support
