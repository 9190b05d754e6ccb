#include "db/connection.h"

#include <libpq-fe.h>

#include <pqxx/nontransaction>

namespace db {

std::string DescribeTarget(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &err);
  if (!options) {
    std::string why = err ? err : "unparseable connection string";
    PQfreemem(err);
    return "an invalid connection string (" + why.substr(0, why.find('\n')) + ")";
  }
  std::string host, port, dbname, user;
  for (PQconninfoOption* o = options; o->keyword; ++o) {
    std::string key = o->keyword;
    std::string value = o->val ? o->val : "";
    if (key == "host" || (key == "hostaddr" && host.empty())) host = value;
    if (key == "port") port = value;
    if (key == "dbname") dbname = value;
    if (key == "user") user = value;
  }
  PQconninfoFree(options);
  std::string target =
      (host.empty() ? std::string("the local socket") : host) + (port.empty() ? "" : ":" + port);
  if (!dbname.empty()) target += "/" + dbname;
  if (!user.empty()) target += " as " + user;
  return target;
}

std::string WithDatabase(const std::string& conninfo, const std::string& dbname) {
  char* err = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &err);
  if (!options) {
    std::string why = err ? err : "unparseable connection string";
    PQfreemem(err);
    throw Error("invalid connection string: " + why);
  }
  auto quote = [](const std::string& value) {
    std::string q = "'";
    for (char c : value) {
      if (c == '\\' || c == '\'') q += '\\';
      q += c;
    }
    return q + "'";
  };
  std::string out;
  for (PQconninfoOption* o = options; o->keyword; ++o) {
    std::string key = o->keyword;
    if (key == "dbname" || !o->val) continue;
    out += key + "=" + quote(o->val) + " ";
  }
  PQconninfoFree(options);
  return out + "dbname=" + quote(dbname);
}

std::unique_ptr<pqxx::connection> Connect(const std::string& conninfo) {
  try {
    return std::make_unique<pqxx::connection>(conninfo);
  } catch (const pqxx::broken_connection& e) {
    std::string why = e.what();
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    throw Unavailable("cannot connect to PostgreSQL at " + DescribeTarget(conninfo) + ": " + why);
  }
}

void DropDatabase(const std::string& admin, const std::string& name) {
  auto conn = Connect(admin);
  pqxx::nontransaction txn(*conn);
  txn.exec("drop database if exists " + txn.quote_name(name) + " with (force)");
}

std::string RecreateDatabase(const std::string& admin, const std::string& name) {
  DropDatabase(admin, name);
  auto conn = Connect(admin);
  pqxx::nontransaction txn(*conn);
  txn.exec("create database " + txn.quote_name(name));
  return WithDatabase(admin, name);
}

}  // namespace db
