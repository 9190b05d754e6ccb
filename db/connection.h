// Opening PostgreSQL connections, and the errors the db layer throws. Exceptions from libpqxx
// stop in db/: callers see only these types.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include <pqxx/connection>

namespace db {

// Something went wrong talking to the database; the message is meant for the operator.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// The database could not be reached; the message names the address that was tried.
struct Unavailable : Error {
  using Error::Error;
};
// The record already exists.
struct Conflict : Error {
  using Error::Error;
};
// The record does not exist.
struct NotFound : Error {
  using Error::Error;
};

// "host:port/dbname as user" for a libpq connection string or URI, without the password.
std::string DescribeTarget(const std::string& conninfo);

// The same connection string (as key=value pairs) pointed at database `dbname`.
std::string WithDatabase(const std::string& conninfo, const std::string& dbname);

// Drops database `name` if it exists (closing its sessions), creates it empty, and returns the
// connection string for it. For tests and benchmarks; `admin` needs CREATEDB.
std::string RecreateDatabase(const std::string& admin, const std::string& name);
// Drops database `name` if it exists (closing its sessions).
void DropDatabase(const std::string& admin, const std::string& name);

// Connects, or throws Unavailable naming DescribeTarget(conninfo).
std::unique_ptr<pqxx::connection> Connect(const std::string& conninfo);

}  // namespace db
