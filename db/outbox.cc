#include "db/outbox.h"

#include <pqxx/pqxx>

namespace db {

Outbox::Outbox(std::string conninfo) : conninfo_(std::move(conninfo)) {}

pqxx::connection& Outbox::Conn() {
  if (!conn_ || !conn_->is_open()) conn_ = Connect(conninfo_);
  return *conn_;
}

template <typename F>
auto Outbox::Guarded(F&& f) {
  try {
    return f(Conn());
  } catch (const pqxx::broken_connection& e) {
    conn_.reset();
    throw Unavailable(std::string("lost the database connection: ") + e.what());
  } catch (const pqxx::in_doubt_error& e) {
    // Only MarkSent writes; if its commit is in doubt the notices go out again, which devices
    // tolerate (they dedupe by jobId and executionNumber).
    conn_.reset();
    throw Unavailable(std::string("commit in doubt: ") + e.what());
  }
}

std::vector<OutboxEntry> Outbox::Unsent(int64_t limit, int64_t min_age_seconds) {
  return Guarded([&](pqxx::connection& conn) {
    pqxx::read_transaction txn(conn);
    // The oldest `limit` rows by id, through the primary key (which skips the deleted rows a
    // scan has seen), then their age. The outbox churns (delivered notices are deleted): a
    // sequential scan, which the planner picks for a table of few live rows, read every dead
    // row left since the last vacuum (60-75 ms a call under load, 40,000 dead rows). Ids grow
    // with time, so the old ones are among the first.
    txn.exec("set local enable_seqscan = off");
    std::vector<OutboxEntry> entries;
    for (const auto& row :
         txn.exec_params("select id, topic, payload from (select id, topic, payload, created_at "
                         "  from fleetwave.outbox where sent_at is null order by id limit $1) o "
                         "where created_at <= now() - make_interval(secs => $2) order by id",
                         limit, min_age_seconds))
      entries.push_back({row[0].as<int64_t>(), row[1].as<std::string>(), row[2].as<std::string>()});
    return entries;
  });
}

void Outbox::MarkSent(const std::vector<int64_t>& ids) {
  if (ids.empty()) return;
  std::string list = "{";
  for (size_t i = 0; i < ids.size(); ++i) list += (i ? "," : "") + std::to_string(ids[i]);
  list += "}";
  Guarded([&](pqxx::connection& conn) {
    pqxx::work txn(conn);
    txn.exec_params("delete from fleetwave.outbox where id = any($1::bigint[])", list);
    txn.commit();
    return 0;
  });
}

int64_t Outbox::Depth() {
  return Guarded([&](pqxx::connection& conn) {
    pqxx::read_transaction txn(conn);
    return txn.exec1("select count(*) from fleetwave.outbox where sent_at is null")[0]
        .as<int64_t>();
  });
}

}  // namespace db
