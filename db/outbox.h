// The outbox: notices written in the same transaction as the change that caused them, read
// back in order by the relay, and deleted ("marked sent") once the broker has acknowledged them:
// it holds only what is still to be delivered.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <pqxx/connection>

#include "db/connection.h"

namespace db {

struct OutboxEntry {
  int64_t id = 0;
  std::string topic;
  std::string payload;
};

class Outbox {
 public:
  explicit Outbox(std::string conninfo);

  // Of the `limit` oldest unsent notices, those written at least `min_age_seconds` ago.
  // Throws Unavailable when the database is down.
  std::vector<OutboxEntry> Unsent(int64_t limit, int64_t min_age_seconds = 0);
  // Deletes notices the broker acknowledged (idempotent).
  void MarkSent(const std::vector<int64_t>& ids);
  int64_t Depth();

 private:
  pqxx::connection& Conn();
  template <typename F>
  auto Guarded(F&& f);

  std::string conninfo_;
  std::unique_ptr<pqxx::connection> conn_;
};

}  // namespace db
