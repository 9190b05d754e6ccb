#include "db/lease.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <future>
#include <latch>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <pqxx/pqxx>

#include "tests/support/test_database.h"

namespace db {
namespace {

using namespace std::chrono_literals;
using testing_support::TestDatabase;

constexpr const char* kName = "controller";

class LeaseTest : public ::testing::Test {
 protected:
  TestDatabase database_;
  // The application's role, as the leases: it sees their backends' wait events and may end
  // them (same role). DDL for the test's own scaffolding goes through owner_.
  std::unique_ptr<pqxx::connection> admin_ = database_.Connect();
  std::unique_ptr<pqxx::connection> owner_ = database_.ConnectOwner();

  // Each lease connection carries application_name "lease-<holder>", so the test can find its
  // backend in pg_stat_activity.
  std::unique_ptr<Lease> Make(const std::string& holder, std::chrono::seconds ttl = 10s) {
    return std::make_unique<Lease>(
        database_.conninfo() + " application_name='lease-" + holder + "'", kName, holder, ttl);
  }

  // Expires the lease by the database clock, instead of waiting for it.
  void Expire() {
    pqxx::work txn(*admin_);
    txn.exec_params(
        "update fleetwave.leases set expires_at = now() - interval '1 s' where name = $1", kName);
    txn.commit();
  }

  bool FencePasses(const std::string& holder, int64_t epoch) {
    auto conn = database_.Connect();
    pqxx::work txn(*conn);
    try {
      Lease::Fence(txn, kName, holder, epoch);
      return true;
    } catch (const NotLeader&) {
      return false;
    }
  }

  std::string Holder() {
    pqxx::read_transaction txn(*admin_);
    return txn.exec_params1("select holder from fleetwave.leases where name = $1", kName)[0]
        .as<std::string>();
  }

  // Backends of the lease of `holder` (0 or 1), and how many of them wait for a lock.
  int64_t Backends(const std::string& holder, bool waiting_for_lock = false) {
    pqxx::read_transaction txn(*admin_);
    return txn
        .exec_params1(
            "select count(*) from pg_stat_activity where application_name = $1 "
            "and (not $2 or wait_event_type = 'Lock')",
            "lease-" + holder, waiting_for_lock)[0]
        .as<int64_t>();
  }

  // Polls a condition until it holds or the deadline passes; never a blind sleep.
  template <typename Condition>
  static bool Eventually(Condition condition, std::chrono::milliseconds deadline = 5000ms) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (!condition()) {
      if (std::chrono::steady_clock::now() > until) return false;
      std::this_thread::sleep_for(10ms);
    }
    return true;
  }
};

TEST_F(LeaseTest, FirstAcquireGetsEpochOne) {
  auto a = Make("a");
  EXPECT_FALSE(a->held());
  EXPECT_EQ(a->epoch(), 0);
  EXPECT_EQ(a->TryAcquire(), 1);
  EXPECT_TRUE(a->held());
  EXPECT_EQ(a->epoch(), 1);
  EXPECT_EQ(Holder(), "a");
  pqxx::read_transaction txn(*admin_);
  auto r = txn.exec_params1(
      "select expires_at > now() + interval '8 s' and expires_at <= now() + interval '11 s', "
      "epoch from fleetwave.leases where name = $1",
      kName);
  EXPECT_TRUE(r[0].as<bool>()) << "expires_at is the database clock plus the TTL";
}

TEST_F(LeaseTest, SecondHolderCannotAcquireWhileValid) {
  auto a = Make("a"), b = Make("b");
  ASSERT_EQ(a->TryAcquire(), 1);
  EXPECT_EQ(b->TryAcquire(), std::nullopt);
  EXPECT_FALSE(b->held());
  EXPECT_FALSE(b->Renew());
  EXPECT_TRUE(a->Renew());
  EXPECT_EQ(a->epoch(), 1);
  EXPECT_EQ(Holder(), "a");
}

TEST_F(LeaseTest, TakeoverAfterExpiryFencesTheOldLeader) {
  auto a = Make("a"), b = Make("b");
  ASSERT_EQ(a->TryAcquire(), 1);
  EXPECT_TRUE(FencePasses("a", 1));
  Expire();
  EXPECT_FALSE(FencePasses("a", 1)) << "an expired lease fences its holder out";
  EXPECT_EQ(b->TryAcquire(), 2);
  EXPECT_EQ(Holder(), "b");
  EXPECT_FALSE(a->Renew());
  EXPECT_FALSE(a->held());
  EXPECT_FALSE(FencePasses("a", 1));
  EXPECT_TRUE(FencePasses("b", 2));
  EXPECT_FALSE(FencePasses("b", 1));
  EXPECT_EQ(a->TryAcquire(), std::nullopt);
  EXPECT_TRUE(b->Renew());
}

TEST_F(LeaseTest, ExpiresByTheDatabaseClock) {
  auto a = Make("a", 1s), b = Make("b", 1s);
  ASSERT_EQ(a->TryAcquire(), 1);
  std::optional<int64_t> got;
  EXPECT_TRUE(Eventually([&] { return (got = b->TryAcquire()).has_value(); }));
  EXPECT_EQ(got, 2);
  EXPECT_FALSE(a->Renew());
}

TEST_F(LeaseTest, ReleaseLetsAnotherAcquireAtOnce) {
  auto a = Make("a"), b = Make("b");
  ASSERT_EQ(a->TryAcquire(), 1);
  a->Release();
  EXPECT_FALSE(a->held());
  EXPECT_FALSE(FencePasses("a", 1));
  EXPECT_EQ(b->TryAcquire(), 2);
  EXPECT_FALSE(a->Renew());
  a->Release();  // not ours any more: changes nothing
  EXPECT_TRUE(b->Renew());
  EXPECT_TRUE(FencePasses("b", 2));
}

TEST_F(LeaseTest, ReleaseWithoutHoldingChangesNothing) {
  auto a = Make("a"), b = Make("b");
  a->Release();  // never held: no connection, no effect
  ASSERT_EQ(b->TryAcquire(), 1);
  EXPECT_EQ(a->TryAcquire(), std::nullopt);
  a->Release();
  EXPECT_TRUE(b->Renew());
  EXPECT_TRUE(FencePasses("b", 1));
}

TEST_F(LeaseTest, ReacquireBySameHolderKeepsHolding) {
  auto a = Make("a");
  ASSERT_EQ(a->TryAcquire(), 1);
  EXPECT_EQ(a->TryAcquire(), 1) << "still ours: same epoch";
  EXPECT_TRUE(a->Renew());
  EXPECT_TRUE(FencePasses("a", 1));
  // Our own lease expired: someone could have led in between, so leadership starts afresh.
  Expire();
  EXPECT_FALSE(a->Renew());
  EXPECT_EQ(a->TryAcquire(), 2);
  EXPECT_TRUE(a->Renew());
  EXPECT_FALSE(FencePasses("a", 1));
  EXPECT_TRUE(FencePasses("a", 2));
  // After a clean release the same process starts a new epoch too.
  a->Release();
  EXPECT_EQ(a->TryAcquire(), 3);
}

TEST_F(LeaseTest, FenceRejectsMissingLeaseOtherHolderOtherEpoch) {
  EXPECT_FALSE(FencePasses("a", 1)) << "no lease row at all";
  auto a = Make("a");
  ASSERT_EQ(a->TryAcquire(), 1);
  EXPECT_FALSE(FencePasses("b", 1));
  EXPECT_FALSE(FencePasses("a", 2));
  EXPECT_TRUE(FencePasses("a", 1));
  auto conn = database_.Connect();
  pqxx::work txn(*conn);
  try {
    Lease::Fence(txn, kName, "b", 1);
    FAIL() << "Fence passed for a holder that does not hold the lease";
  } catch (const NotLeader& e) {
    EXPECT_NE(std::string(e.what()).find("held by a (epoch 1)"), std::string::npos) << e.what();
  }
}

// The leader's writer is inside a Fence with an open transaction when the lease expires. A standby
// that tries to take over must wait for that writer to commit, and then takes over with the next
// epoch; the writer's work is committed before the new leader exists.
TEST_F(LeaseTest, FenceHoldsOffATakeoverUntilTheWriterCommits) {
  {
    pqxx::work txn(*owner_);
    txn.exec("create table public.fenced_writes (epoch bigint)");
    txn.exec("grant select, insert on public.fenced_writes to public");  // the writer is the app
    txn.commit();
  }
  auto a = Make("a"), b = Make("b");
  ASSERT_EQ(a->TryAcquire(), 1);
  auto writer_conn = database_.Connect();
  auto writer = std::make_unique<pqxx::work>(*writer_conn);
  Lease::Fence(*writer, kName, "a", 1);
  writer->exec("insert into public.fenced_writes values (1)");

  Expire();  // a plain update: not held up by the writer's fence (nor is the leader's Renew)
  auto takeover = std::async(std::launch::async, [&] { return b->TryAcquire(); });
  EXPECT_TRUE(Eventually([&] { return Backends("b", /*waiting_for_lock=*/true) == 1; }))
      << "the takeover should wait for the fenced writer";
  EXPECT_EQ(takeover.wait_for(0s), std::future_status::timeout);
  EXPECT_EQ(Holder(), "a");

  writer->commit();
  writer.reset();
  ASSERT_EQ(takeover.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(takeover.get(), 2);
  EXPECT_EQ(Holder(), "b");
  EXPECT_FALSE(FencePasses("a", 1));
  pqxx::read_transaction txn(*admin_);
  EXPECT_EQ(txn.exec("select count(*) from public.fenced_writes")[0][0].as<int>(), 1);
}

// A fenced writer that outlasts the standby's TTL makes the takeover give up (nullopt) instead of
// hanging; it succeeds once the writer is gone.
TEST_F(LeaseTest, TakeoverGivesUpWhenAFencedWriterOutlastsTheTtl) {
  auto a = Make("a"), b = Make("b", 1s);
  ASSERT_EQ(a->TryAcquire(), 1);
  auto writer_conn = database_.Connect();
  auto writer = std::make_unique<pqxx::work>(*writer_conn);
  Lease::Fence(*writer, kName, "a", 1);
  Expire();
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(b->TryAcquire(), std::nullopt);
  EXPECT_GE(std::chrono::steady_clock::now() - started, 900ms) << "it waited for the writer";
  EXPECT_EQ(Holder(), "a");
  writer->abort();
  writer.reset();
  EXPECT_EQ(b->TryAcquire(), 2);
}

// Renewals are plain updates, which FOR KEY SHARE does not block: a long write transaction of the
// leader never holds up its own heartbeat.
TEST_F(LeaseTest, LeaderRenewsWhileItsWriterHoldsTheFence) {
  auto a = Make("a");
  ASSERT_EQ(a->TryAcquire(), 1);
  auto writer_conn = database_.Connect();
  pqxx::work writer(*writer_conn);
  Lease::Fence(writer, kName, "a", 1);
  const auto started = std::chrono::steady_clock::now();
  EXPECT_TRUE(a->Renew());
  EXPECT_TRUE(a->Renew());
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
  Lease::Fence(writer, kName, "a", 1);  // the renewed row still fences the same writer in
  writer.commit();
}

// libpqxx 6.4 re-establishes a killed connection silently; the lease notices the new backend and
// re-checks the row instead of trusting what it believed.
TEST_F(LeaseTest, KilledConnectionIsRecheckedOnRenew) {
  auto a = Make("a"), b = Make("b");
  ASSERT_EQ(a->TryAcquire(), 1);
  auto kill = [&](const std::string& holder) {
    {
      pqxx::nontransaction txn(*admin_);
      txn.exec_params(
          "select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1",
          "lease-" + holder);
    }
    ASSERT_TRUE(Eventually([&] { return Backends(holder) == 0; }));
  };
  kill("a");
  EXPECT_TRUE(a->Renew()) << "still ours and unexpired";
  EXPECT_TRUE(a->held());
  EXPECT_EQ(a->epoch(), 1);
  EXPECT_GE(a->reconnects(), 1);
  EXPECT_EQ(Backends("a"), 1);

  // Killed again, and the lease changed hands meanwhile: the next Renew learns it.
  kill("a");
  Expire();
  ASSERT_EQ(b->TryAcquire(), 2);
  EXPECT_FALSE(a->Renew());
  EXPECT_FALSE(a->held());
  EXPECT_GE(a->reconnects(), 2);
}

// While the database cannot be reached, leadership is unknown: Renew throws Unavailable and the
// lease no longer claims to be held; once it is back, Renew re-checks the row and holds again.
TEST_F(LeaseTest, UnreachableDatabaseMakesLeadershipUnknownUntilRechecked) {
  auto a = Make("a");
  ASSERT_EQ(a->TryAcquire(), 1);
  // From the server's own database: one cannot lock out the database one is connected to. The
  // owner may change the database; ending the lease's backend takes its own role.
  auto server = Connect(testing_support::OwnerServerConninfo());
  std::string app = testing_support::AppServerConninfo();
  auto server_app = Connect(app.empty() ? testing_support::OwnerServerConninfo() : app);
  auto set_connections = [&](bool allowed) {
    pqxx::nontransaction txn(*server);
    txn.exec("alter database " + txn.quote_name(admin_->dbname()) + " allow_connections " +
             (allowed ? "true" : "false"));
    if (!allowed) {
      pqxx::nontransaction kill(*server_app);
      kill.exec_params(
          "select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1",
          "lease-a");
    }
  };
  set_connections(false);
  ASSERT_TRUE(Eventually([&] { return Backends("a") == 0; }));
  EXPECT_THROW(a->Renew(), Unavailable);
  EXPECT_FALSE(a->held());
  EXPECT_THROW(a->TryAcquire(), Unavailable);
  set_connections(true);
  EXPECT_TRUE(a->Renew());
  EXPECT_TRUE(a->held());
  EXPECT_EQ(a->epoch(), 1);
}

TEST(LeaseUnavailable, NamesTheAddressTried) {
  Lease lease("host=127.0.0.1 port=1 dbname=nowhere connect_timeout=2", kName, "a");
  try {
    lease.TryAcquire();
    FAIL() << "acquired a lease without a database";
  } catch (const Unavailable& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:1/nowhere"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(lease.held());
  EXPECT_FALSE(lease.Renew()) << "never held";
}

// A connection lost during COMMIT (here: a deferred trigger ends the lease's own backend at
// commit, so nothing commits) is an in-doubt commit: the lease reads the row back on a new
// connection and reports what it finds, never re-applying the change.
TEST_F(LeaseTest, InDoubtCommitIsReadBackNotRetried) {
  {
    pqxx::work txn(*owner_);
    txn.exec(
        "create function public.die_at_commit() returns trigger language plpgsql as $$ "
        "begin "
        "  if current_setting('application_name') = 'lease-doomed' then "
        "    perform pg_terminate_backend(pg_backend_pid()); "
        "  end if; "
        "  return null; "
        "end $$");
    txn.exec(
        "create constraint trigger die_at_commit after insert or update on fleetwave.leases "
        "deferrable initially deferred for each row execute function public.die_at_commit()");
    txn.commit();
  }
  auto set_trigger = [&](bool enabled) {
    pqxx::work txn(*owner_);
    txn.exec(std::string("alter table fleetwave.leases ") + (enabled ? "enable" : "disable") +
             " trigger die_at_commit");
    txn.commit();
  };
  auto doomed = Make("doomed"), b = Make("b");
  EXPECT_EQ(doomed->TryAcquire(), std::nullopt) << "the insert never committed";
  EXPECT_FALSE(doomed->held());
  EXPECT_GE(doomed->reconnects(), 1);

  set_trigger(false);
  ASSERT_EQ(doomed->TryAcquire(), 1);
  set_trigger(true);
  std::string expires_before;
  {
    pqxx::read_transaction txn(*admin_);
    expires_before =
        txn.exec1("select expires_at::text from fleetwave.leases")[0].as<std::string>();
  }
  EXPECT_TRUE(doomed->Renew()) << "the renewal was lost, but the lease is still ours and valid";
  {
    pqxx::read_transaction txn(*admin_);
    EXPECT_EQ(txn.exec1("select expires_at::text from fleetwave.leases")[0].as<std::string>(),
              expires_before)
        << "the in-doubt renewal was not re-applied";
  }
  Expire();
  EXPECT_FALSE(doomed->Renew());
  EXPECT_EQ(doomed->TryAcquire(), std::nullopt) << "the takeover never committed";
  EXPECT_EQ(b->TryAcquire(), 2);
}

TEST_F(LeaseTest, ConcurrentAcquireOfAnAbsentRowHasExactlyOneWinner) {
  constexpr int kContenders = 8;
  std::vector<std::unique_ptr<Lease>> leases;
  for (int i = 0; i < kContenders; ++i) leases.push_back(Make("h" + std::to_string(i)));
  std::latch start(kContenders);
  std::vector<std::optional<int64_t>> got(kContenders);
  std::vector<std::thread> threads;
  for (int i = 0; i < kContenders; ++i)
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      got[i] = leases[i]->TryAcquire();
    });
  for (auto& t : threads) t.join();
  int winners = 0;
  std::string winner;
  for (int i = 0; i < kContenders; ++i) {
    EXPECT_EQ(leases[i]->held(), got[i].has_value());
    if (!got[i]) continue;
    ++winners;
    winner = leases[i]->holder();
    EXPECT_EQ(got[i], 1);
  }
  EXPECT_EQ(winners, 1);
  EXPECT_EQ(Holder(), winner);
}

TEST(LeaseHolderId, IsUniquePerCall) {
  const auto a = Lease::MakeHolderId(), b = Lease::MakeHolderId();
  EXPECT_NE(a, b);
  EXPECT_NE(a.find(":" + std::to_string(getpid()) + ":"), std::string::npos) << a;
}

TEST(LeaseConfig, RejectsATtlUnderOneSecond) {
  EXPECT_THROW(Lease("dbname=x", kName, "a", 0s), Error);
  EXPECT_THROW(Lease("dbname=x", "", "a", 1s), Error);
}

}  // namespace
}  // namespace db
