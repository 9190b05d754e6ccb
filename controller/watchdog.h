// The watchdog (`fleetwave watchdog`): a separate process that checks, on a schedule, that
// exactly one cycle runs and that its heartbeat is fresh.
//   - No running cycle: it starts one (db::StartCycle; the unique index means it never starts a
//     second, however many watchdogs and controllers race).
//   - A running cycle whose heartbeat is older than `stale_after` (by the database clock): it
//     records one "heartbeat_stale" event per staleness episode and, when it supervises the
//     controller, restarts it (SIGTERM, `stop_grace`, SIGKILL, start again).
// When supervising, it also restarts the command whenever it exits by itself, with backoff.
// An unreachable database is reported and retried at the next interval, never fatal.
//
// The decision is the pure function DecideWatchdog(); Watchdog does the I/O around it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <pqxx/connection>

#include "db/rollouts.h"

namespace controller {

// ---- The decision (pure) ------------------------------------------------------------------

enum class CycleVerdict {
  kUnknown,    // the database could not be read
  kNone,       // no running cycle
  kFresh,      // one running cycle, heartbeat at most stale_after old
  kStale,      // one running cycle, heartbeat older than stale_after
  kNotJudged,  // stale, but the supervised controller was (re)started less than stale_after ago
  kSeveral,    // more than one running cycle: the unique index forbids it; nothing is done
};
const char* ToString(CycleVerdict verdict);

struct ChildState {
  bool supervising = false;
  bool running = false;   // the supervised command runs (not waiting for a restart)
  bool in_grace = false;  // it was (re)started less than stale_after ago
};

struct WatchdogDecision {
  CycleVerdict verdict = CycleVerdict::kUnknown;
  bool start_cycle = false;
  bool record_stale = false;   // write a heartbeat_stale event
  bool restart_child = false;  // stop and start the supervised command
  // The cycle whose staleness episode has been recorded, to pass to the next decision. An
  // episode ends when that cycle's heartbeat is fresh again or another cycle runs.
  std::optional<int64_t> stale_recorded_for;
};

// What to do given what was read. `stale_recorded_for` is the previous decision's.
WatchdogDecision DecideWatchdog(const db::CycleHealth& health, double stale_after_seconds,
                                const ChildState& child, std::optional<int64_t> stale_recorded_for);

// ---- The watchdog -------------------------------------------------------------------------

struct WatchdogOptions {
  std::string db;  // libpq connection string or URI
  std::chrono::milliseconds interval{5000};
  std::chrono::milliseconds stale_after{30000};
  std::vector<std::string> supervise;           // argv of the controller to supervise; empty: none
  std::chrono::milliseconds stop_grace{10000};  // SIGTERM, then SIGKILL after this
  // Restarts of a command that exited by itself wait backoff_initial, doubling up to
  // backoff_max; a command that ran backoff_reset_after or longer starts again from initial.
  std::chrono::milliseconds backoff_initial{1000};
  std::chrono::milliseconds backoff_max{30000};
  std::chrono::milliseconds backoff_reset_after{60000};
};

// What one check saw and did.
struct WatchdogReport {
  std::optional<std::string> error;  // why the database could not be checked
  db::CycleHealth health;
  double stale_after_seconds = 0;
  CycleVerdict verdict = CycleVerdict::kUnknown;
  std::optional<int64_t> started_cycle;  // the cycle this check started
  bool stale_recorded = false;           // this check wrote a heartbeat_stale event
  bool restarted = false;                // this check restarted the supervised command
  // One line for people, e.g. "cycle 7 running, heartbeat 0.8 s old: fresh (stale after 30 s)".
  std::string Describe() const;
};

// The supervised command could not be executed at all (e.g. no such file).
struct CommandError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Watchdog {
 public:
  explicit Watchdog(WatchdogOptions options);
  // Stops the supervised command if one runs.
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // One check: reads the cycle health, starts a cycle or records staleness as decided, and
  // restarts the supervised command when decided (which blocks up to stop_grace). Database
  // errors are returned in the report, never thrown.
  WatchdogReport CheckOnce();

  // Starts the supervised command (if any) and checks every `interval` until Stop(), then
  // stops the command. Throws CommandError when the command cannot be executed at the start;
  // later failures to start it are logged and retried with backoff.
  // REQUIRES: called from one thread at a time; that thread must outlive the command (the
  // command gets SIGTERM if the thread that started it exits).
  void Run();

  // Makes Run() return soon. Any thread; async-signal-safe (one write to a pipe).
  void Stop();

  // The supervised command's pid, 0 when none runs; how many times it was started; how many
  // checks Run() has made.
  pid_t child_pid() const { return child_pid_.load(); }
  int child_starts() const { return child_starts_.load(); }
  int checks() const { return checks_.load(); }

 private:
  using Clock = std::chrono::steady_clock;
  ChildState Child() const;
  // Starts the command; throws CommandError when it cannot be executed.
  void StartChild();
  // SIGTERM to its process group, stop_grace, then SIGKILL; reaps it.
  void StopChild();
  // Reaps a command that exited by itself and schedules its restart.
  void ReapExitedChild();
  void StartChildOrScheduleRetry();
  // Kills what is left of the command's process group, reaps the command, closes its pidfd;
  // returns its wait status.
  int Reap();

  const WatchdogOptions options_;
  std::unique_ptr<pqxx::connection> conn_;
  std::optional<int64_t> stale_recorded_for_;

  int wake_[2] = {-1, -1};  // Stop() writes to wake_[1]
  int pidfd_ = -1;          // readable when the command exits
  std::atomic<pid_t> child_pid_{0};
  std::atomic<int> child_starts_{0};
  std::atomic<int> checks_{0};
  Clock::time_point child_started_at_;
  std::optional<Clock::time_point> restart_at_;  // a restart is scheduled
  std::chrono::milliseconds backoff_;
};

}  // namespace controller
