#include "db/lease.h"

#include <unistd.h>

#include <climits>
#include <cstdio>
#include <random>
#include <utility>

#include <pqxx/pqxx>

namespace db {
namespace {

// Time is always clock_timestamp(), not now(): now() is when the transaction began, and a
// statement that waited for a row lock must judge expiry at the moment it decides.
constexpr const char* kInsertSql =
    "insert into fleetwave.leases as l (name, holder, epoch, acquired_at, expires_at, "
    "  heartbeat_at) "
    "values ($1, $2, 1, clock_timestamp(), clock_timestamp() + make_interval(secs => $3), "
    "  clock_timestamp()) "
    "on conflict (name) do nothing returning epoch";
// ours: the row names this holder; valid: it has not expired.
constexpr const char* kPeekSql =
    "select holder = $2, epoch, expires_at > clock_timestamp() from fleetwave.leases "
    "where name = $1";
// FOR UPDATE conflicts with the FOR KEY SHARE of Fence: a takeover waits for fenced writers.
constexpr const char* kLockSql =
    "select holder = $2, epoch, expires_at > clock_timestamp() from fleetwave.leases "
    "where name = $1 for update";
constexpr const char* kExtendSql =
    "update fleetwave.leases set expires_at = clock_timestamp() + make_interval(secs => $4), "
    "  heartbeat_at = clock_timestamp() "
    "where name = $1 and holder = $2 and epoch = $3 and expires_at > clock_timestamp() "
    "returning epoch";
constexpr const char* kTakeOverSql =
    "update fleetwave.leases set holder = $2, epoch = epoch + 1, acquired_at = clock_timestamp(), "
    "  expires_at = clock_timestamp() + make_interval(secs => $3), "
    "  heartbeat_at = clock_timestamp() "
    "where name = $1 returning epoch";
constexpr const char* kReleaseSql =
    "update fleetwave.leases set expires_at = clock_timestamp() "
    "where name = $1 and holder = $2 and epoch = $3 and expires_at > clock_timestamp()";
// FOR KEY SHARE, not FOR SHARE: it blocks a takeover (FOR UPDATE) but not the leader's own
// renewals (plain UPDATEs of non-key columns), so long writes never starve the heartbeat.
constexpr const char* kFenceSql =
    "select holder, epoch, expires_at > clock_timestamp() from fleetwave.leases "
    "where name = $1 for key share";

bool IsLockTimeout(const pqxx::sql_error& e) { return e.sqlstate() == "55P03"; }

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

Lease::Lease(std::string conninfo, std::string name, std::string holder, std::chrono::seconds ttl)
    : conninfo_(std::move(conninfo)),
      name_(std::move(name)),
      holder_(std::move(holder)),
      ttl_(ttl) {
  if (ttl_ < std::chrono::seconds(1)) throw Error("lease TTL must be at least one second");
  if (name_.empty() || holder_.empty()) throw Error("lease name and holder must not be empty");
}

Lease::~Lease() = default;

pqxx::connection& Lease::Conn() {
  if (conn_ && !conn_->is_open()) Drop();
  if (!conn_) {
    conn_ = Connect(conninfo_);
    if (backend_pid_ != 0) ++reconnects_;
    backend_pid_ = conn_->backendpid();
  }
  return *conn_;
}

// libpqxx 6.4 re-runs a failed BEGIN on a fresh connection without telling anyone; the backend
// pid is how we notice. Nothing here lives in the session, so the call goes on, but what we
// believed about the lease is unknown until this call has read the row again.
void Lease::CheckBackend() {
  const int pid = conn_->backendpid();
  if (pid == backend_pid_) return;
  ++reconnects_;
  backend_pid_ = pid;
  held_ = false;
}

void Lease::Drop() {
  conn_.reset();
  held_ = false;
}

// One attempt of `body` in a transaction that waits at most the TTL for row locks (a lock that
// long means a lease that has expired meanwhile: `busy` is then the answer). A broken connection
// before commit rolled everything back, so the call is tried once more on a new connection; an
// in-doubt commit is never retried: `in_doubt` reads the row back instead.
template <typename Body, typename Busy, typename Doubt>
auto Lease::Run(const char* what, Body&& body, Busy&& busy, Doubt&& in_doubt) {
  for (int attempt = 1;; ++attempt) {
    try {
      pqxx::work txn(Conn());
      CheckBackend();
      txn.exec_params("select set_config('lock_timeout', $1, true)",
                      std::to_string(ttl_.count() * 1000) + "ms");
      return body(txn);
    } catch (const pqxx::in_doubt_error&) {
      Drop();
      return in_doubt();
    } catch (const pqxx::broken_connection& e) {
      Drop();
      if (attempt < 2) continue;
      throw Unavailable(std::string("lease ") + what +
                        ": lost the database connection: " + Trimmed(e.what()));
    } catch (const Unavailable&) {
      Drop();
      throw;
    } catch (const pqxx::sql_error& e) {
      if (IsLockTimeout(e)) return busy();
      throw Error(std::string("lease ") + what + " failed: " + Trimmed(e.what()));
    } catch (const pqxx::failure& e) {
      throw Error(std::string("lease ") + what + " failed: " + Trimmed(e.what()));
    } catch (const pqxx::pqxx_exception& e) {
      throw Error(std::string("lease ") + what + " failed: " + Trimmed(e.base().what()));
    }
  }
}

std::optional<int64_t> Lease::ReadBack() {
  try {
    pqxx::read_transaction txn(Conn());
    CheckBackend();
    auto r = txn.exec_params(kPeekSql, name_, holder_);
    if (r.empty() || !r[0][0].as<bool>() || !r[0][2].as<bool>()) return std::nullopt;
    return r[0][1].as<int64_t>();
  } catch (const pqxx::broken_connection& e) {
    Drop();
    throw Unavailable("lease commit in doubt and the database is unreachable: " +
                      Trimmed(e.what()));
  } catch (const pqxx::failure& e) {
    throw Error("lease commit in doubt; reading it back failed: " + Trimmed(e.what()));
  }
}

std::optional<int64_t> Lease::TryAcquire() {
  held_ = false;
  const int64_t ttl = ttl_.count();
  std::optional<int64_t> got = Run(
      "acquire",
      [&](pqxx::work& txn) -> std::optional<int64_t> {
        // A new row: the first leader ever, epoch 1. Concurrent inserts wait for each other on
        // the primary key, and all but one find the row taken.
        auto inserted = txn.exec_params(kInsertSql, name_, holder_, ttl);
        if (!inserted.empty()) {
          txn.commit();
          return inserted[0][0].as<int64_t>();
        }
        // Standbys poll: answer "taken" without locking anything while another holder is valid,
        // and renew without a lock while we still are.
        auto peek = txn.exec_params(kPeekSql, name_, holder_);
        if (peek.empty()) return std::nullopt;  // deleted by hand meanwhile; next call inserts
        const bool ours = peek[0][0].as<bool>(), valid = peek[0][2].as<bool>();
        if (valid && !ours) return std::nullopt;
        if (valid && ours) {
          auto r = txn.exec_params(kExtendSql, name_, holder_, peek[0][1].as<int64_t>(), ttl);
          if (!r.empty()) {
            txn.commit();
            return r[0][0].as<int64_t>();
          }
        }
        // Expired (ours or not): take over under FOR UPDATE, which waits for writers still
        // inside a Fence of the old epoch, then decide on the row as it is after them.
        auto locked = txn.exec_params(kLockSql, name_, holder_);
        if (locked.empty()) return std::nullopt;
        if (locked[0][2].as<bool>()) {
          if (!locked[0][0].as<bool>()) return std::nullopt;
          auto r = txn.exec_params(kExtendSql, name_, holder_, locked[0][1].as<int64_t>(), ttl);
          if (!r.empty()) {
            txn.commit();
            return r[0][0].as<int64_t>();
          }
          // Expired in the instant between the two statements: take it over as below.
        }
        auto r = txn.exec_params(kTakeOverSql, name_, holder_, ttl);
        txn.commit();
        return r[0][0].as<int64_t>();
      },
      []() -> std::optional<int64_t> { return std::nullopt; },
      [&]() -> std::optional<int64_t> { return ReadBack(); });
  if (got) {
    epoch_ = *got;
    held_ = true;
  }
  return got;
}

bool Lease::Renew() {
  if (epoch_ == 0) return false;
  held_ = false;
  held_ = Run(
      "renew",
      [&](pqxx::work& txn) {
        auto r = txn.exec_params(kExtendSql, name_, holder_, epoch_, ttl_.count());
        txn.commit();
        return !r.empty();
      },
      // Waiting the whole TTL for the row means a takeover holds it; our lease is over by now.
      [] { return false; },
      [&] {
        auto now = ReadBack();
        return now && *now == epoch_;
      });
  return held_;
}

void Lease::Release() {
  held_ = false;
  // Conditional on holder and epoch: harmless when someone else holds the lease by now.
  if (epoch_ == 0) return;
  Run(
      "release",
      [&](pqxx::work& txn) {
        txn.exec_params(kReleaseSql, name_, holder_, epoch_);
        txn.commit();
        return 0;
      },
      [] { return 0; },   // someone is taking over anyway
      [] { return 0; });  // either way the lease ends by its expiry at the latest
  held_ = false;
}

void Lease::Fence(pqxx::transaction_base& txn, const std::string& name, const std::string& holder,
                  int64_t epoch) {
  pqxx::result r;
  try {
    r = txn.exec_params(kFenceSql, name);
  } catch (const pqxx::broken_connection& e) {
    throw Unavailable("lease fence: lost the database connection: " + Trimmed(e.what()));
  } catch (const pqxx::failure& e) {
    throw Error("lease fence failed: " + Trimmed(e.what()));
  }
  const std::string me = holder + " (epoch " + std::to_string(epoch) + ")";
  if (r.empty()) throw NotLeader("not the leader: no lease '" + name + "' exists; " + me);
  const auto row_holder = r[0][0].as<std::string>();
  const auto row_epoch = r[0][1].as<int64_t>();
  if (row_holder != holder || row_epoch != epoch)
    throw NotLeader("not the leader: lease '" + name + "' is held by " + row_holder + " (epoch " +
                    std::to_string(row_epoch) + "), not by " + me);
  if (!r[0][2].as<bool>())
    throw NotLeader("not the leader: lease '" + name + "' of " + me + " has expired");
}

std::string Lease::MakeHolderId() {
  char host[HOST_NAME_MAX + 1] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::random_device rd;
  const uint64_t random = (uint64_t{rd()} << 32) | rd();
  char suffix[17];
  snprintf(suffix, sizeof suffix, "%016llx", static_cast<unsigned long long>(random));
  return std::string(*host ? host : "localhost") + ":" + std::to_string(getpid()) + ":" + suffix;
}

}  // namespace db
