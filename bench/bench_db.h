// The scratch database of a benchmark, with the roles of README "Database roles": the owner
// (FLEETWAVE_DB_OWNER, or FLEETWAVE_DB when unset) creates, migrates and drops it; the fleetwave
// processes and the store code being measured connect as the application's role (FLEETWAVE_DB).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "db/connection.h"
#include "db/migrator.h"

namespace bench {

struct ScratchDatabase {
  std::string admin;  // the owner's connection to its server (to drop it)
  std::string owner;  // the owner's connection to it
  std::string app;    // the application role's (the owner's when FLEETWAVE_DB_OWNER is unset)
};

// Drops and creates database `name` as the owner and migrates it. Returns nullopt, having said
// why on stderr, when FLEETWAVE_DB is not set (`script` is the bench/<name> to run instead).
inline std::optional<ScratchDatabase> MakeScratchDatabase(const std::string& name,
                                                          const char* script) {
  const char* app = std::getenv("FLEETWAVE_DB");
  const char* owner = std::getenv("FLEETWAVE_DB_OWNER");
  if (!app || !*app) {
    std::fprintf(stderr, "FLEETWAVE_DB is not set: run %s, which starts a stack\n", script);
    return std::nullopt;
  }
  const std::string admin = owner && *owner ? owner : app;
  ScratchDatabase scratch;
  scratch.admin = admin;
  scratch.owner = db::RecreateDatabase(admin, name);
  scratch.app = owner && *owner ? db::WithDatabase(app, name) : scratch.owner;
  auto conn = db::Connect(scratch.owner);
  db::Migrator(*conn).Apply();
  return scratch;
}

}  // namespace bench
