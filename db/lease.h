// The leader lease: one row of fleetwave.leases per name, held by one holder at a time, with an
// epoch that grows every time leadership changes hands. Expiry is judged by the database clock
// only (clock_timestamp() at the moment a statement decides), never by this process's clock.
//
// A leader calls TryAcquire() until it wins, then Renew() well within the TTL (say every TTL/3).
// Renew() == false means leadership is lost: stop writing at once and go back to TryAcquire().
// Every leader write transaction calls Lease::Fence(txn, name, holder, epoch) before committing.
// Fence locks the lease row FOR KEY SHARE until the transaction ends and throws NotLeader unless
// the row still names this holder and epoch and has not expired. A takeover locks the row FOR
// UPDATE, which conflicts with that lock, so between a passed Fence and its commit no standby can
// take over: the takeover waits for the writer to commit (or gives up after the TTL and tries
// again). After a takeover has committed, every Fence with the old epoch throws. The leader's own
// Renew() and Release() are plain UPDATEs, which do not conflict with FOR KEY SHARE, so a long
// write transaction never holds up the heartbeat of its own leader.
//
// Nothing is kept in session state: libpqxx 6.4 silently reconnects a broken connection, so every
// call re-checks the row by holder and epoch. A changed backend pid is counted in reconnects().
// A call whose connection broke before COMMIT is tried once more on a new connection (nothing
// was committed); an in-doubt commit is never retried: the row is read back to learn the truth.
// Lease rows are never deleted (Release only expires them): epochs must never start over.
//
// REQUIRES: `holder` is unique per process (MakeHolderId()); one Lease object per holder; a Lease
// is used from one thread at a time (Fence is static and may be called from any thread).
// Liveness: a takeover waits for writers that passed Fence. Give writer sessions an
// idle_in_transaction_session_timeout (≈ TTL) so a frozen leader cannot hold a fence forever.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <pqxx/connection>
#include <pqxx/transaction_base>

#include "db/connection.h"

namespace db {

// A fenced write was attempted by a process that does not hold the lease with that epoch.
struct NotLeader : Error {
  using Error::Error;
};

class Lease {
 public:
  // Connects lazily, on the first call. Throws Error for a TTL under one second or an empty
  // name or holder (bad configuration fails fast).
  Lease(std::string conninfo, std::string name, std::string holder,
        std::chrono::seconds ttl = std::chrono::seconds(10));
  ~Lease();
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;

  // Takes the lease if the row is absent, expired, or already ours, in one transaction; returns
  // the epoch now held, or nullopt while another holder's lease is unexpired (or its fenced
  // writer did not commit within the TTL). The epoch grows when the row is created (1), when the
  // holder changes, and when our own lease had expired (someone may have led in between); it
  // stays when we still held it. Throws Unavailable / Error; then held() is false.
  std::optional<int64_t> TryAcquire();

  // Extends the lease by the TTL if the row still names us with our epoch and has not expired.
  // False: leadership is lost (or was never held); stop writing. Throws Unavailable when the
  // database cannot be reached: leadership is then unknown (held() is false, writes are fenced
  // anyway); the next Renew() re-checks the row and may return true again.
  bool Renew();

  // Expires our lease now, if we hold it, so a standby takes over at once. Not done by the
  // destructor: a process that did not shut down cleanly leaves the lease to expire.
  // Throws Unavailable / Error; held() is false afterwards in any case.
  void Release();

  // The epoch last held (0 before the first acquisition); meaningful while held().
  int64_t epoch() const { return epoch_; }
  // The last TryAcquire()/Renew() succeeded and nothing since said otherwise. Not a clock check.
  bool held() const { return held_; }
  const std::string& name() const { return name_; }
  const std::string& holder() const { return holder_; }
  std::chrono::seconds ttl() const { return ttl_; }
  // How often the lease connection was found broken or silently re-established.
  int64_t reconnects() const { return reconnects_; }

  // Inside a leader write transaction, anywhere before commit (first is cheapest): locks the lease
  // row until the transaction ends and throws NotLeader unless it names `holder` with `epoch`
  // and has not expired; the caller then aborts the transaction. One round trip.
  // Throws Unavailable when the connection broke, Error on other database errors.
  static void Fence(pqxx::transaction_base& txn, const std::string& name, const std::string& holder,
                    int64_t epoch);

  // "host:pid:random", unique per process start.
  static std::string MakeHolderId();

 private:
  pqxx::connection& Conn();
  void CheckBackend();
  void Drop();
  template <typename Body, typename Busy, typename Doubt>
  auto Run(const char* what, Body&& body, Busy&& busy, Doubt&& in_doubt);
  // After an in-doubt commit: what the row says now.
  std::optional<int64_t> ReadBack();

  std::string conninfo_;
  std::string name_;
  std::string holder_;
  std::chrono::seconds ttl_;
  std::unique_ptr<pqxx::connection> conn_;
  int backend_pid_ = 0;
  int64_t epoch_ = 0;
  bool held_ = false;
  int64_t reconnects_ = 0;
};

}  // namespace db
